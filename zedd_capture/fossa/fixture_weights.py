"""Deterministic FOSSA weights (the shared fixture rule), to test without the published files.

rng = numpy.random.default_rng([seed, crc32(key)]); z = standard normal of the key's shape;
0-d -> 1 + 0.1 z; '.gamma' -> 0.1 (1 + 0.2 z); 'bias' -> 0.02 z; other 1-d -> 1 + 0.05 z;
pos_embed / cls_token / mask_token -> 0.02 z; else z / sqrt(prod(shape[1:])).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


def fixture_array(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float32 array for one checkpoint key (name without ``module.``)."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode("utf-8"))])
    z = rng.standard_normal(int(np.prod(shape, dtype=np.int64))).reshape(shape)
    if len(shape) == 0:
        a = 1.0 + 0.1 * z
    elif key.endswith(".gamma"):
        a = 0.1 * (1.0 + 0.2 * z)
    elif key.rsplit(".", 1)[-1] == "bias":
        a = 0.02 * z
    elif len(shape) == 1:
        a = 1.0 + 0.05 * z
    elif key.endswith(("pos_embed", "cls_token", "mask_token")):
        a = 0.02 * z
    else:
        a = z / np.sqrt(max(int(np.prod(shape[1:])), 1))
    return np.array(a, dtype=np.float32, order="C")


def read_keys(path: str | Path) -> Iterator[tuple[str, tuple[int, ...]]]:
    """(key, shape) pairs of a key list file: tab-separated key, shape, dtype."""
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: expected 'key<TAB>shape<TAB>dtype', got {line!r}")
        key, shape, _dtype = parts
        yield key, tuple(int(s) for s in shape.strip("()").split(",") if s.strip())


def fixture_state_dict(keyfile: str | Path, seed: int = 1234) -> dict[str, torch.Tensor]:
    """The fixture weights for every key in ``keyfile`` (names without ``module.``)."""
    return {k: torch.from_numpy(fixture_array(k, s, seed)) for k, s in read_keys(keyfile)}


def write_fixture_checkpoint(keyfile: str | Path, out: str | Path, seed: int = 1234) -> Path:
    """Write ``{'model': {'module.<key>': tensor}}`` as the published files are laid out."""
    state = {"module." + k: v for k, v in fixture_state_dict(keyfile, seed).items()}
    out = Path(out)
    torch.save({"model": state}, out)
    return out


def fixture_state_for_model(model: torch.nn.Module, seed: int = 1234) -> dict[str, torch.Tensor]:
    """Fixture weights for every entry of ``model.state_dict()`` (same rule, no key file needed)."""
    return {k: torch.from_numpy(fixture_array(k, tuple(v.shape), seed)) for k, v in model.state_dict().items()}
