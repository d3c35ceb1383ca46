"""Constructor settings of the released FOSSA models (see FOSSA_SPEC.md)."""
from __future__ import annotations

from dataclasses import dataclass

PATCH_SIZE = 14
POS_GRID = 37  # pos_embed was trained for a 37x37 patch grid (518x518 input)
INPUT_SHORT_EDGE = 518  # pixels; the network input's short edge after resizing
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class FossaConfig:
    """Architecture of one released model size."""

    encoder: str
    embed_dim: int
    num_heads: int
    features: int
    out_channels: tuple[int, int, int, int]
    depth: int = 12
    mlp_ratio: int = 4
    stack_layers: int = 4  # stack-attention after blocks 0..3
    collapse_after: int = 4  # slices averaged after this block
    feature_blocks: tuple[int, int, int, int] = (2, 5, 8, 11)
    stack_heads: int = 8
    max_depth: float = 1.0


CONFIGS: dict[str, FossaConfig] = {
    "vits": FossaConfig("vits", 384, 6, 64, (48, 96, 192, 384)),
    "vitb": FossaConfig("vitb", 768, 12, 128, (96, 192, 384, 768)),
}


def get_config(encoder: str) -> FossaConfig:
    """Return the config for ``encoder`` ('vits' or 'vitb'); ValueError otherwise."""
    try:
        return CONFIGS[encoder]
    except KeyError:
        raise ValueError(f"unknown FOSSA encoder {encoder!r}; expected one of {sorted(CONFIGS)}") from None
