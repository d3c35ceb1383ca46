"""A weight-free depth-from-focus baseline ('dfd-classic').

1. Focus measure per slice: modified Laplacian |2I - I(x-1) - I(x+1)| + |2I - I(y-1) - I(y+1)|,
   averaged over a window, on brightness-normalised grey images.
2. Per pixel, the sharpest slice; the peak is refined by a Gaussian (parabola in log focus
   measure) fitted through the best slice and its two neighbours in diopters (1/m).
3. Confidence from how peaked and how strong the focus curve is; unconfident pixels are filled
   by confidence-weighted push-pull interpolation, then the diopter map is smoothed with a
   guided filter steered by the all-in-focus image (edge-aware).
Depth never leaves the focus range of the stack (no extrapolation).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

EPS = 1e-6


@dataclass(frozen=True)
class DfdConfig:
    """Tuning of the baseline; window sizes in pixels scale with the image's short edge."""

    window_frac: float = 1 / 60  # focus-measure window / short edge
    min_window: int = 7
    min_peakiness: float = 0.1  # max/mean - 1 of the focus curve below which a pixel is unsure
    texture_quantile: float = 0.3  # pixels whose peak focus is below this quantile's 0.5x are unsure
    guide_radius_frac: float = 1 / 80
    guide_eps: float = 1e-3


def to_gray(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) RGB or (N, H, W) -> (N, H, W) float32 grey, each slice scaled to mean 1."""
    images = np.asarray(images, dtype=np.float32)
    gray = images @ np.array([0.299, 0.587, 0.114], np.float32) if images.ndim == 4 else images
    return gray / np.maximum(gray.mean(axis=(1, 2), keepdims=True), EPS)


def focus_measure(gray: np.ndarray, window: int) -> np.ndarray:
    """Window-averaged modified Laplacian of each (H, W) slice of ``gray`` (N, H, W)."""
    kx = np.array([[-1.0, 2.0, -1.0]], np.float32)
    out = np.empty_like(gray)
    for i, g in enumerate(gray):
        ml = np.abs(cv2.filter2D(g, -1, kx, borderType=cv2.BORDER_REFLECT)) + \
            np.abs(cv2.filter2D(g, -1, kx.T, borderType=cv2.BORDER_REFLECT))
        out[i] = cv2.blur(ml, (window, window), borderType=cv2.BORDER_REFLECT)
    return out


def peak_diopters(fm: np.ndarray, diopters: np.ndarray) -> np.ndarray:
    """Sub-slice focus peak (diopters) per pixel; ``diopters`` strictly increasing, fm (N, H, W).

    A parabola in log focus measure (a Gaussian focus curve) through the best slice and its two
    neighbours (the two nearest slices at either end of the stack); its vertex, clamped to
    those slices' range, is the peak. Curves without a maximum keep the best slice.
    """
    n = len(diopters)
    k = np.argmax(fm, axis=0)
    kc = np.clip(k, 1, n - 2)
    y = np.log(fm + EPS)
    y0, y1, y2 = (np.take_along_axis(y, (kc + o)[None], 0)[0] for o in (-1, 0, 1))
    x0, x1, x2 = diopters[kc - 1], diopters[kc], diopters[kc + 1]
    denom = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denom
    b = (x2**2 * (y0 - y1) + x1**2 * (y2 - y0) + x0**2 * (y1 - y2)) / denom
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.where(a < 0, -b / (2 * a), diopters[k])
    vertex = np.where(np.isfinite(vertex), vertex, diopters[k])
    return np.clip(vertex, x0, x2).astype(np.float32)  # within the stack: no extrapolation


def push_pull_fill(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fill low-weight pixels from weighted averages over ever coarser levels (weights in [0, 1])."""
    w = np.clip(weights, 0.0, 1.0).astype(np.float32)
    v = np.where(w > 0, values, 0.0).astype(np.float32)
    if min(v.shape) <= 1 or w.sum() == 0:
        return v if w.sum() == 0 else np.full_like(v, float((v * w).sum() / w.sum()))
    h, wd = v.shape
    small = (max(1, (wd + 1) // 2), max(1, (h + 1) // 2))
    w_c = cv2.resize(w, small, interpolation=cv2.INTER_AREA)
    vw_c = cv2.resize(v * w, small, interpolation=cv2.INTER_AREA)
    v_c = np.where(w_c > 0, vw_c / np.maximum(w_c, EPS), 0.0).astype(np.float32)
    coarse = push_pull_fill(v_c, np.clip(4.0 * w_c, 0.0, 1.0))
    up = cv2.resize(coarse, (wd, h), interpolation=cv2.INTER_LINEAR)
    return w * v + (1.0 - w) * up


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al. guided filter (grey guide), box windows of side 2*radius + 1."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.blur(x, size, borderType=cv2.BORDER_REFLECT)

    mean_i, mean_p = box(guide), box(src)
    cov = box(guide * src) - mean_i * mean_p
    var = box(guide * guide) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def dfd_classic(images: np.ndarray, focus_distances_m: np.ndarray, config: DfdConfig = DfdConfig()) -> np.ndarray:
    """Metric depth (H, W) float32 in metres from a focus stack.

    images: (N, H, W, 3) RGB (any scale) or (N, H, W) grey, N >= 2; focus_distances_m: (N,) metres.
    The result lies between the nearest and the farthest focus distance.
    """
    images = np.asarray(images)
    fds = np.asarray(focus_distances_m, dtype=np.float64).reshape(-1)
    if images.ndim not in (3, 4) or images.shape[0] != fds.size or fds.size < 2:
        raise ValueError(f"need (N, H, W[, 3]) images with N >= 2 matching {fds.size} focus distances, "
                         f"got images {images.shape}")
    if not (np.isfinite(fds).all() and (fds > 0).all()):
        raise ValueError(f"focus distances must be positive finite metres, got {fds.tolist()}")
    diopters, first = np.unique(1.0 / fds, return_index=True)
    if diopters.size < 2:
        raise ValueError(f"need at least 2 distinct focus distances, got {fds.tolist()}")
    gray = to_gray(images)[first]  # one slice per distinct distance, sorted by diopter
    h, w = gray.shape[1:]
    win = max(config.min_window, int(round(min(h, w) * config.window_frac)) | 1)
    fm = focus_measure(gray, win)
    peak = peak_diopters(fm, diopters)

    fm_max = fm.max(axis=0)
    peakiness = fm_max / np.maximum(fm.mean(axis=0), EPS) - 1.0
    floor = 0.5 * np.quantile(fm_max, config.texture_quantile)
    conf = np.clip(peakiness / (2 * config.min_peakiness) - 0.5, 0, 1) * np.clip(fm_max / max(floor, EPS) - 1, 0, 1)
    peak = cv2.medianBlur(peak, 5)
    if conf.max() <= 0:  # nothing textured: the middle of the focus range
        return np.full((h, w), 1.0 / float(np.median(diopters)), np.float32)
    filled = push_pull_fill(peak, conf)

    sharpest = np.take_along_axis(gray, np.argmax(fm, axis=0)[None], 0)[0]
    guide = sharpest / max(float(sharpest.max()), EPS)
    radius = max(2, int(round(min(h, w) * config.guide_radius_frac)))
    smooth = guided_filter(guide.astype(np.float32), filled.astype(np.float32), radius, config.guide_eps)
    smooth = np.clip(smooth, diopters[0], diopters[-1])
    return (1.0 / smooth).astype(np.float32)
