"""The FOSSA network and its metric-depth inference (`FossaModel.predict`)."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .config import INPUT_SHORT_EDGE, PATCH_SIZE, FossaConfig, get_config
from .dpt import DPTHead
from .vit import StackViT


def network_size(height: int, width: int) -> tuple[int, int]:
    """Network input size for an H x W stack (pixels).

    Short edge -> 518, long edge -> int(long * 518 / short), both rounded up to a multiple of
    14 (480x640 -> 518x700, 1216x1824 -> 518x784).
    """
    short, long = min(height, width), max(height, width)
    s, l_ = INPUT_SHORT_EDGE, int(long * INPUT_SHORT_EDGE / short)
    s, l_ = (math.ceil(v / PATCH_SIZE) * PATCH_SIZE for v in (s, l_))
    return (s, l_) if height <= width else (l_, s)


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """Full fp32 (no TF32) for cuDNN convolutions and CUDA matmuls inside the block; restored after.

    torch lets cuDNN convolutions use TF32 by default: on an H100, FOSSA-vits then misses the
    published fixture by 2.7 mm (5e-6 m in fp32) and is no faster (FOSSA-vits at 518 x 784, 5
    slices: 0.031 s against 0.032 s). No effect on the CPU.
    """
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision") and hasattr(cudnn, "conv"):  # torch >= 2.9: its new API only
        flags = [(cudnn.conv, "fp32_precision", "ieee"), (matmul, "fp32_precision", "ieee")]  # (mixing raises)
    else:
        flags = [(cudnn, "allow_tf32", False), (matmul, "allow_tf32", False)]
    saved = [getattr(obj, name) for obj, name, _ in flags]
    for obj, name, value in flags:
        setattr(obj, name, value)
    try:
        yield
    finally:
        for (obj, name, _), value in zip(flags, saved):
            setattr(obj, name, value)


class FossaModel(nn.Module):
    """FOSSA: DINOv2 encoder with stack attention + DPT head.

    Parameter names match the published checkpoints after stripping ``module.``
    (``pretrained.*``, ``depth_head.*``).
    """

    def __init__(self, cfg: FossaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.pretrained = StackViT(cfg)
        self.depth_head = DPTHead(cfg.embed_dim, cfg.features, cfg.out_channels)

    def forward(self, stack: torch.Tensor, fd_canonical: torch.Tensor) -> torch.Tensor:
        """Raw canonical output at the network resolution.

        stack: (B, N, 3, H, W), H and W multiples of 14; fd_canonical: (B, N) focus distances in
        canonical units (metres * W / f). Returns (B, 1, H, W).
        """
        h, w = stack.shape[-2] // PATCH_SIZE, stack.shape[-1] // PATCH_SIZE
        feats = self.pretrained(stack, fd_canonical)
        return self.depth_head(feats, h, w) * self.cfg.max_depth

    @torch.no_grad()
    def predict(self, stack: torch.Tensor, focus_distances_m: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        """Metric depth (B, 1, H, W) in metres for an ImageNet-normalised stack.

        stack: (B, N, 3, H, W) float, N >= 2; focus_distances_m: (B, N) metres;
        K: (B, 3, 3) intrinsics in pixels at the stack's resolution. Resizes to the network size,
        feeds fd * W / max(fx, fy), resizes the output back and scales it by max(fx, fy) / W.
        On CUDA the network runs in full fp32 (ieee_fp32): TF32 was no faster on an H100.
        """
        if stack.ndim != 5 or stack.shape[2] != 3:
            raise ValueError(f"stack must be (B, N, 3, H, W), got {tuple(stack.shape)}")
        b, n, _, height, width = stack.shape
        if n < 2:
            raise ValueError(f"a focus stack needs N >= 2 slices, got N = {n}")
        p = next(self.parameters())
        stack = stack.to(device=p.device, dtype=p.dtype)
        fd = torch.as_tensor(focus_distances_m).to(device=p.device, dtype=p.dtype)
        K = torch.as_tensor(K).to(device=p.device, dtype=p.dtype)
        if fd.shape != (b, n):
            raise ValueError(f"focus_distances_m must be (B, N) = {(b, n)}, got {tuple(fd.shape)}")
        if K.shape != (b, 3, 3):
            raise ValueError(f"K must be (B, 3, 3) = {(b, 3, 3)}, got {tuple(K.shape)}")
        f = torch.maximum(K[:, 0, 0], K[:, 1, 1])  # (B,) pixels
        fd_canonical = fd * width / f[:, None]
        net_h, net_w = network_size(height, width)
        x = F.interpolate(stack.flatten(0, 1), size=(net_h, net_w), mode="bilinear", align_corners=True)
        with ieee_fp32():
            out = self(x.view(b, n, 3, net_h, net_w), fd_canonical)
        out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=True)
        return out * (f / width)[:, None, None, None]


def build_fossa(encoder: str = "vits") -> FossaModel:
    """An untrained FOSSA of the released architecture ('vits' or 'vitb')."""
    return FossaModel(get_config(encoder))
