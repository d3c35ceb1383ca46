"""Focus calibration procedures: the automatic sharp-hexcode search and the paper's board procedure.

Sharp search ("go beyond the paper"): drive the focus motor over a window, measure a
contrast-normalised gradient-energy focus measure on the board region of each image, zoom in
around the peak, then bisect both edges of the peak's (flat) top and take their midpoint.
Positions are the ones the motor reports back (the motor's repeatability does not bias the
estimate). The midpoint is symmetric in the motor axis, which is not linear in diopters: where the
motor curve bends, the estimate is off by ~h''(P) delta^2 / 2 (delta = half depth of field).

Board distance (the LUT value) for a sharp hexcode h: the board stays where it is, image I0 at h.

* ``"paper"``: I0 plus images I1..In of the board moved to other poses with the motor fixed;
  all co-calibrated with ``cv2.calibrateCamera``; focus distance = mean camera-frame depth of the
  board's corners in I0.
* ``"breathing"`` (default when canonical intrinsics exist): a second image Ic of the same board
  pose at the canonical hexcode; the affine map of the corners I0 -> Ic is the lens breathing
  between the two focus states, so K_h = A^-1 K_canonical; solvePnP on I0 with K_h; focus distance =
  mean camera-frame corner depth. At far distances the paper's co-calibration cannot separate focal
  length from distance for a board that is small in the image (f and z trade off); this variant
  takes the focal length from the canonical calibration and the measured breathing instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import cv2
import numpy as np

from .charuco import (CalibrationError, Detection, make_detector, board_pose, calibrate, detect,
                      mean_corner_depth, to_gray)

CaptureFn = Callable[[], np.ndarray]


# --- focus measure ----------------------------------------------------------------------------
def focus_measure(image: np.ndarray, roi: tuple[int, int, int, int] | None = None) -> float:
    """Mean squared Sobel gradient / intensity variance in ``roi`` (x0, y0, x1, y1): contrast invariant."""
    g = to_gray(image).astype(np.float32) if np.asarray(image).dtype == np.uint8 or np.asarray(image).ndim == 3 else np.asarray(image, np.float32)
    if roi is not None:
        x0, y0, x1, y1 = roi
        g = g[max(0, y0) : y1, max(0, x0) : x1]
    if g.size < 64:
        raise CalibrationError("focus-measure region is empty")
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    var = float(g.var()) + 1e-6
    return float(np.mean(gx[1:-1, 1:-1] ** 2 + gy[1:-1, 1:-1] ** 2) / var)


def board_roi(image: np.ndarray, board, name: str = "<image>", shrink: float = 0.1) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the detected ArUco markers, shrunk by ``shrink`` of its size."""
    gray = to_gray(image)
    _, _, mc, mi = make_detector(board).detectBoard(gray)
    if mi is None or len(mi) < 2:
        raise CalibrationError(f"{name}: board not found (no ArUco markers detected) - cannot place the focus region")
    pts = np.concatenate([m.reshape(-1, 2) for m in mc])
    (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
    dx, dy = shrink * (x1 - x0), shrink * (y1 - y0)
    return int(x0 + dx), int(y0 + dy), int(np.ceil(x1 - dx)), int(np.ceil(y1 - dy))


# --- sharp search --------------------------------------------------------------------------------
@dataclass
class SharpSearch:
    """Result of :func:`find_sharp_hexcode`: estimated sharp position (fractional and integer), samples."""

    hexcode_float: float
    hexcode: int
    achieved: int  # position read back after the final move to ``hexcode``
    samples: list[tuple[int, float]] = field(default_factory=list)  # (achieved position, focus measure)
    half_width: float = float("nan")  # half width at half height of the focus peak (counts)

    @property
    def captures(self) -> int:
        return len(self.samples)


def _curve(samples: Sequence[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    hs = np.array([s[0] for s in samples], float)
    ms = np.array([s[1] for s in samples], float)
    u, inv = np.unique(hs, return_inverse=True)
    m = np.bincount(inv, ms) / np.bincount(inv)
    return u, m


def _half_width(h: np.ndarray, m: np.ndarray) -> tuple[float, float]:
    """(centre, half width) at half height between the peak and the lowest sample."""
    i = int(np.argmax(m))
    level = 0.5 * (m[i] + m.min())
    left, right = h[0], h[-1]
    for j in range(i, 0, -1):
        if m[j - 1] < level <= m[j]:
            left = h[j - 1] + (level - m[j - 1]) / (m[j] - m[j - 1]) * (h[j] - h[j - 1])
            break
    for j in range(i, len(h) - 1):
        if m[j + 1] < level <= m[j]:
            right = h[j] + (m[j] - level) / (m[j] - m[j + 1]) * (h[j + 1] - h[j])
            break
    return 0.5 * (left + right), max(0.5 * (right - left), 1.0)


def find_sharp_hexcode(
    capture: CaptureFn,
    move_to: Callable[[int], int],
    lo: int,
    hi: int,
    roi: tuple[int, int, int, int] | None = None,
    coarse_points: int = 17,
    level_frac: float = 0.004,
    tol_counts: float = 2.0,
    centre: float | None = None,
    window: float | None = None,
    progress: Callable[[str], None] | None = None,
    precise: bool = True,
) -> SharpSearch:
    """Find the motor position where the board region is sharpest.

    Coarse sweep over [lo, hi] (or ``centre`` +- ``window``), shifting the window when the peak
    sits at its edge; zoom to the peak's flanks;
    the estimate is the midpoint of the two edges of the peak's top (bisected crossings of a level
    ``level_frac`` below the maximum). ``precise=False`` stops after the zoom (half-width centre).
    """
    samples: list[tuple[int, float]] = []
    lo, hi = int(lo), int(hi)

    def take(h: float) -> None:
        a = int(move_to(int(np.clip(round(h), 0, 0xFFFF))))
        samples.append((a, focus_measure(capture(), roi)))

    if centre is None:
        a, b = lo, hi
    else:
        a, b = max(lo, centre - window), min(hi, centre + window)
    for _ in range(8):
        for h in np.linspace(a, b, coarse_points):
            take(h)
        hs, ms = _curve([s for s in samples if a - 1 <= s[0] <= b + 1])
        i = int(np.argmax(ms))
        if 0 < i < len(hs) - 1 or (i == 0 and a <= lo) or (i == len(hs) - 1 and b >= hi):
            break
        span = b - a
        a, b = (max(lo, a - 0.8 * span), a + 0.2 * span) if i == 0 else (b - 0.2 * span, min(hi, b + 0.8 * span))
    # zoom: resample around the peak until the flanks are sampled densely
    for _ in range(4):
        hs, ms = _curve(samples)
        c, hw = _half_width(hs, ms)
        step = np.min(np.diff(hs[np.abs(hs - c) < 2 * hw])) if np.sum(np.abs(hs - c) < 2 * hw) > 1 else 2 * hw
        if step <= hw / 3:
            break
        for h in np.linspace(c - 2 * hw, c + 2 * hw, 9):
            take(h)
        if progress:
            progress(f"zoom: peak near {c:.0f}, half width {hw:.0f} counts")
    hs, ms = _curve(samples)
    c, hw = _half_width(hs, ms)
    if not precise:
        return SharpSearch(c, int(round(c)), int(samples[-1][0]), samples, hw)
    # edges of the top of the peak: bisect the crossings of a level just below the maximum on both sides
    near = np.abs(hs - c) <= 2.5 * hw
    top = float(np.median(np.sort(ms[near])[-3:]))
    level = top * (1.0 - level_frac)
    peak_h = float(hs[near][np.argmax(ms[near])])
    # make sure the top is sampled: a few positions across the central part of the peak
    for h in np.linspace(c - 0.4 * hw, c + 0.4 * hw, 5):
        take(h)
    hs, ms = _curve(samples)
    near = np.abs(hs - c) <= 2.5 * hw
    top = float(np.median(np.sort(ms[near])[-3:]))
    level = top * (1.0 - level_frac)
    peak_h = float(np.median(hs[near][np.argsort(ms[near])[-3:]]))
    crossings = []
    for side in (-1, 1):
        hs, ms = _curve(samples)
        inside = [h for h, m in zip(hs, ms) if m >= level and side * (h - peak_h) >= 0]
        outside = [h for h, m in zip(hs, ms) if m < level and side * (h - peak_h) > 0]
        if not outside:
            raise CalibrationError("sharp search: focus peak not bracketed (the board never blurs on one side)")
        h_out = min(outside, key=lambda h: abs(h - peak_h))
        h_in = max([h for h in inside if side * (h_out - h) > 0], key=lambda h: side * h)
        for _ in range(16):
            if abs(h_out - h_in) <= tol_counts:
                break
            mid = 0.5 * (h_in + h_out)
            take(mid)
            a_pos, m = samples[-1]
            if side * (a_pos - h_in) <= 0 or side * (h_out - a_pos) <= 0:
                continue  # the motor landed outside the bracket (repeatability); retry
            if m >= level:
                h_in = a_pos
            else:
                h_out = a_pos
        crossings.append(0.5 * (h_in + h_out))
    est = 0.5 * (crossings[0] + crossings[1])
    final = int(round(est))
    achieved = int(move_to(final))
    if progress:
        progress(f"sharp at {est:.1f} (top of the peak {crossings[0]:.0f}..{crossings[1]:.0f})")
    return SharpSearch(est, final, achieved, samples, hw)


# --- board distance at a sharp hexcode ------------------------------------------------------------
@dataclass
class FocusEntryMeasurement:
    """Board distance measured for one sharp hexcode."""

    focus_distance_m: float
    uncertainty_m: float
    residual_px: float
    method: str
    T_camera_board: np.ndarray
    K: np.ndarray
    scale_to_canonical: float = float("nan")
    detail: dict = field(default_factory=dict)


def breathing_between(det_run: Detection, det_canon: Detection) -> tuple[np.ndarray, float]:
    """Affine A (2x3) mapping the corners of the run image to the same corners in the canonical image + RMS (px)."""
    common, ia, ib = np.intersect1d(det_run.ids, det_canon.ids, return_indices=True)
    if len(common) < 6:
        raise CalibrationError(f"{det_run.name} / {det_canon.name}: only {len(common)} common corners (need >= 6)")
    src, dst = det_run.corners[ia], det_canon.corners[ib]
    X = np.column_stack([src, np.ones(len(src))])
    A = np.linalg.lstsq(X, dst, rcond=None)[0].T
    rms = float(np.sqrt(np.mean(np.sum((X @ A.T - dst) ** 2, axis=1))))
    return A, rms


def _depth_uncertainty(board, det: Detection, K: np.ndarray, dist, T: np.ndarray, rms_px: float) -> float:
    """1-sigma of the mean corner depth from the PnP Jacobian and the reprojection RMS (m)."""
    rvec = cv2.Rodrigues(T[:3, :3])[0]
    _, J = cv2.projectPoints(det.object_points, rvec, T[:3, 3], K, np.zeros(5) if dist is None else dist)
    Jp = J[:, :6]
    try:
        cov = np.linalg.inv(Jp.T @ Jp) * max(rms_px, 0.02) ** 2
    except np.linalg.LinAlgError:
        return float("nan")
    eps = 1e-6
    z0 = mean_corner_depth(board, T)
    g = np.zeros(6)
    for k in range(6):
        d = np.zeros(6)
        d[k] = eps
        Tk = np.eye(4)
        Tk[:3, :3] = cv2.Rodrigues(rvec + d[:3, None])[0]
        Tk[:3, 3] = T[:3, 3] + d[3:]
        g[k] = (mean_corner_depth(board, Tk) - z0) / eps
    return float(np.sqrt(max(g @ cov @ g, 0.0)))


def distance_breathing(board, img_run: np.ndarray, img_canon: np.ndarray, K_canonical: np.ndarray,
                       dist_canonical: np.ndarray | None, names: tuple[str, str] = ("I0", "Ic"),
                       K_rel_std: float = 0.0) -> FocusEntryMeasurement:
    """Board distance in I0 with the intrinsics of its focus state derived from the canonical ones."""
    d0 = detect(img_run, board, names[0])
    dc = detect(img_canon, board, names[1], max_edge_width_px=None)  # may be defocused; corners still unbiased
    if d0.image_size != dc.image_size:
        raise CalibrationError(f"{names[1]}: image size {dc.image_size} differs from {names[0]} {d0.image_size}")
    A, rms_a = breathing_between(d0, dc)
    K_h = np.linalg.inv(np.vstack([A, [0, 0, 1]])) @ np.asarray(K_canonical, float)
    pose = board_pose(d0, K_h, dist_canonical)
    z = mean_corner_depth(board, pose.T_camera_board)
    sd = _depth_uncertainty(board, d0, K_h, dist_canonical, pose.T_camera_board, pose.rms_px)
    sd = float(np.hypot(sd, z * K_rel_std))
    return FocusEntryMeasurement(z, sd, pose.rms_px, "breathing", pose.T_camera_board, K_h,
                                 float(np.sqrt(abs(np.linalg.det(A[:, :2])))),
                                 {"breathing_fit_rms_px": rms_a, "corners": len(d0)})


def distance_paper(board, img0: np.ndarray, others: Sequence[np.ndarray], names: Sequence[str] | None = None,
                   K_init: np.ndarray | None = None, dist_init: np.ndarray | None = None,
                   fix_distortion: bool = False) -> FocusEntryMeasurement:
    """The paper: co-calibrate I0..In (motor fixed) with OpenCV; focus distance = mean corner depth in I0."""
    names = list(names) if names else ["I0"] + [f"I{i + 1}" for i in range(len(others))]
    dets = [detect(img0, board, names[0])] + [detect(im, board, n) for im, n in zip(others, names[1:])]
    flags = cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST
    if fix_distortion:
        flags |= cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2
    cal = calibrate(dets, K_init=K_init, dist_init=dist_init, flags=flags)
    T0 = cal.poses[0]
    z = mean_corner_depth(board, T0)
    sd = _depth_uncertainty(board, dets[0], cal.K, cal.dist, T0, float(cal.per_view_rms_px[0]))
    # focal-length uncertainty propagates ~1:1 into the distance
    if len(cal.std_intrinsics) and np.isfinite(cal.std_intrinsics[0]):
        sd = float(np.hypot(sd, z * cal.std_intrinsics[0] / cal.K[0, 0]))
    return FocusEntryMeasurement(z, sd, float(cal.rms_px), "paper", T0, cal.K, detail={"views": len(dets)})
