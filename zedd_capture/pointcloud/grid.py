"""Image-grid helpers shared by the projection stages: shifted copies of a map, disc-shaped windows."""

from __future__ import annotations

import numpy as np


def shift_fill(img: np.ndarray, dy: int, dx: int, fill: float) -> np.ndarray:
    """img shifted so out[y, x] = img[y + dy, x + dx] (``fill`` outside), same dtype."""
    h, w = img.shape
    out = np.full_like(img, fill)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[yd, xd] = img[ys, xs]
    return out


def window_offsets(radius: int) -> list[tuple[int, int]]:
    """(dy, dx) of the pixels within ``radius`` px of the centre (a disc), row by row."""
    span = range(-radius, radius + 1)
    return [(dy, dx) for dy in span for dx in span if dy * dy + dx * dx <= radius * radius + 1e-9]
