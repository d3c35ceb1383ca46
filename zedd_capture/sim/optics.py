"""Thin-lens optics of the twin: circle of confusion, lens breathing, the twin's true intrinsics.

Conventions: pixel centres at integer coordinates (as zedd_capture.geometry), distances in metres,
focal length and pixel pitch in millimetres. The twin lens has no distortion.

Breathing model (rig.lens.breathing): an image shot with the lens focused at distance d is the
canonical image (focused at rig.capture.canonical_focus_distance_m, intrinsics ``true_K``) scaled by
``s(d) = 1 + k * (1/d - 1/d_canon)`` about the true principal point and shifted by the decentre
``decentre_px_per_diopter * (1/d - 1/d_canon)`` (px at the camera resolution, scaled with the image).
"""

from __future__ import annotations

import numpy as np

from ..geometry import scale_intrinsics
from ..rig import Rig

# The twin lens differs slightly from the nominal pinhole model (what calibration must find).
TRUE_FOCAL_SCALE = 1.003  # focal length 0.3 % longer than nominal
TRUE_PP_OFFSET_FRACTION = (0.0030, -0.0025)  # principal-point offset as a fraction of (width, height)


def coc_diameter_mm(depth_m, focus_distance_m: float, f_number: float, focal_length_mm: float):
    """Thin-lens circle-of-confusion diameter on the sensor (mm): f^2 |D - d| / (N D (d - f)).

    ``depth_m`` (D) may be an array; D = inf gives the limit f^2 / (N (d - f)).
    """
    f = focal_length_mm
    d = focus_distance_m * 1000.0
    if d <= f:
        raise ValueError(f"focus distance {focus_distance_m} m must exceed the focal length {f} mm")
    inv_D = _inverse_depth_mm(depth_m)
    # |D - d| / D = d |1/d - 1/D|
    return f * f * d * np.abs(1.0 / d - inv_D) / (f_number * (d - f))


def signed_coc_px(depth_m, focus_distance_m: float, f_number: float, focal_length_mm: float, pixel_pitch_mm: float):
    """CoC diameter in px, negative in front of the focus plane (D < d), positive behind it."""
    f = focal_length_mm
    d = focus_distance_m * 1000.0
    inv_D = _inverse_depth_mm(depth_m)
    return f * f * d * (1.0 / d - inv_D) / (f_number * (d - f)) / pixel_pitch_mm


def coc_diameter_px(depth_m, focus_distance_m: float, f_number: float, focal_length_mm: float, pixel_pitch_mm: float):
    """Circle-of-confusion diameter in pixels (``pixel_pitch_mm`` = sensor width / image width)."""
    return coc_diameter_mm(depth_m, focus_distance_m, f_number, focal_length_mm) / pixel_pitch_mm


def pixel_pitch_mm(rig: Rig, width_px: int) -> float:
    """Pixel pitch (mm) of an image of ``width_px`` columns covering the full sensor width."""
    return rig.camera.sensor_width_mm / width_px


def _inverse_depth_mm(depth_m):
    D = np.asarray(depth_m, dtype=np.float64)
    with np.errstate(divide="ignore"):
        inv = np.where(np.isfinite(D) & (D > 0), 1.0 / np.maximum(D, 1e-9), 0.0) / 1000.0
    return inv if inv.ndim else float(inv)


def breathing_scale(rig: Rig, focus_distance_m: float) -> float:
    """Image scale about the principal point at focus distance d relative to the canonical image."""
    k = rig.lens.breathing.k_per_diopter
    return 1.0 + k * (1.0 / focus_distance_m - 1.0 / rig.capture.canonical_focus_distance_m)


def breathing_shift_px(rig: Rig, focus_distance_m: float, width: int) -> np.ndarray:
    """Decentre (dx, dy) in px at an image of ``width`` columns."""
    dpt = 1.0 / focus_distance_m - 1.0 / rig.capture.canonical_focus_distance_m
    per = np.asarray(rig.lens.breathing.decentre_px_per_diopter, dtype=float)
    return per * dpt * (width / rig.camera.width_px)


def true_K(rig: Rig, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The twin's true canonical intrinsics (focus at the canonical distance) at (width, height) px."""
    W, H = rig.camera.width_px, rig.camera.height_px
    K = rig.nominal_K(W, H)
    K[0, 0] *= TRUE_FOCAL_SCALE
    K[1, 1] *= TRUE_FOCAL_SCALE
    K[0, 2] += TRUE_PP_OFFSET_FRACTION[0] * W
    K[1, 2] += TRUE_PP_OFFSET_FRACTION[1] * H
    w = width or W
    h = height or H
    return K if (w, h) == (W, H) else scale_intrinsics(K, (W, H), (w, h))


def K_at_focus(rig: Rig, focus_distance_m: float, width: int | None = None, height: int | None = None) -> np.ndarray:
    """Intrinsics of an image shot at ``focus_distance_m`` (breathing applied to ``true_K``)."""
    K = true_K(rig, width, height).copy()
    w = width or rig.camera.width_px
    s = breathing_scale(rig, focus_distance_m)
    dx, dy = breathing_shift_px(rig, focus_distance_m, w)
    K[0, 0] *= s
    K[1, 1] *= s
    K[0, 2] += dx
    K[1, 2] += dy
    return K


def breathing_warp_to_canonical(rig: Rig, focus_distance_m: float, width: int | None = None,
                                height: int | None = None) -> np.ndarray:
    """2x3 affine mapping pixel coords of an image shot at ``focus_distance_m`` to the canonical image.

    x_canon = cx + (x_run - cx - dx) / s, same for y (cx, cy: true principal point at that size).
    """
    Kc = true_K(rig, width, height)
    Kd = K_at_focus(rig, focus_distance_m, width, height)
    s = Kd[0, 0] / Kc[0, 0]
    # x_run = s (x_c - cx) + cx_d  ->  x_c = x_run / s + cx - cx_d / s
    return np.array([
        [1.0 / s, 0.0, Kc[0, 2] - Kd[0, 2] / s],
        [0.0, 1.0 / s, Kc[1, 2] - Kd[1, 2] / s],
    ])
