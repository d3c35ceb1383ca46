"""Depth metrics as in the published FOSSA evaluation: per image on valid pixels, then the mean."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

MIN_DEPTH_M = 0.01
MAX_DEPTH_M = 1000.0
METRIC_KEYS: tuple[str, ...] = (
    "d1_05", "d1_15", "d1", "d2", "d3", "abs_rel", "sq_rel", "mse", "rmse", "rmse_log", "log10", "silog",
)


def valid_mask(gt: np.ndarray) -> np.ndarray:
    """Ground-truth pixels that count: finite and 0.01 <= depth <= 1000 m."""
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        return np.isfinite(gt) & (gt >= MIN_DEPTH_M) & (gt <= MAX_DEPTH_M)


def depth_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Metrics of one depth map (metres) against ground truth (metres), without alignment.

    Keys: d1_05, d1_15, d1, d2, d3 (fraction of valid pixels with max(p/t, t/p) below 1.05, 1.15,
    1.25, 1.25^2, 1.25^3), abs_rel, sq_rel, mse (m^2), rmse (m), rmse_log, log10, silog.
    Raises ValueError for mismatched shapes, no valid pixel, or a non-finite / non-positive
    prediction on a valid pixel.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} does not match ground truth shape {gt.shape}")
    valid = valid_mask(gt)
    if not valid.any():
        raise ValueError(f"ground truth has no valid pixel ({MIN_DEPTH_M} <= depth <= {MAX_DEPTH_M} m, finite)")
    p = pred[valid].astype(np.float64)
    t = gt[valid].astype(np.float64)
    bad = ~np.isfinite(p)
    if bad.any():
        raise ValueError(f"prediction has {int(bad.sum())} NaN/inf values on valid ground-truth pixels "
                         f"(of {p.size}); predictions must be finite")
    if (p <= 0).any():
        raise ValueError(f"prediction has {int((p <= 0).sum())} non-positive depths on valid ground-truth "
                         f"pixels; depths must be > 0 m")
    ratio = np.maximum(t / p, p / t)
    g = np.log(p) - np.log(t)
    diff = p - t
    mse = float(np.mean(diff**2))
    return {
        "d1_05": float(np.mean(ratio < 1.05)),
        "d1_15": float(np.mean(ratio < 1.15)),
        "d1": float(np.mean(ratio < 1.25)),
        "d2": float(np.mean(ratio < 1.25**2)),
        "d3": float(np.mean(ratio < 1.25**3)),
        "abs_rel": float(np.mean(np.abs(diff) / t)),
        "sq_rel": float(np.mean(diff**2 / t)),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "rmse_log": float(np.sqrt(np.mean(g**2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(t)))),
        "silog": float(np.sqrt(max(np.mean(g**2) - 0.5 * np.mean(g) ** 2, 0.0))),
    }


def mean_metrics(per_image: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Arithmetic mean of each metric over images (all dicts must have the same keys)."""
    if not per_image:
        raise ValueError("mean_metrics needs at least one image's metrics")
    keys = list(per_image[0])
    for i, m in enumerate(per_image):
        if set(m) != set(keys):
            raise ValueError(f"metrics of image {i} have keys {sorted(m)}, expected {sorted(keys)}")
    return {k: float(np.mean([m[k] for m in per_image])) for k in keys}
