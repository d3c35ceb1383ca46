"""Focus calibration procedures: the automatic sharp-hexcode search and the paper's board procedure.

Sharp search ("go beyond the paper"): drive the focus motor over a window, measure a
contrast-normalised gradient-energy focus measure on the board region of each image, zoom in
around the peak, then step the motor across the top of the peak and fit it: a quartic in motor
counts over the positions whose sharpness is within a few per cent of the top; the estimate is the
fit's stationary point. Sharpness is an even function of the defocus in diopters, and the motor is
locally a smooth curve in diopters, so the odd (cubic) term absorbs the motor curve's local bend
that biases a symmetric parabola fit by ~0.3 (h''/h') W^2. With a reference capture (same motor
position, small aperture: F/16) the measure is the ratio wide / reference, which cancels the lens
breathing (the board's magnification changes with focus and tilts a plain measure by ~10 counts).
Positions are the ones the motor reports back (the motor's repeatability does not bias the estimate).

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
    std_counts: float = float("nan")  # 1-sigma of ``hexcode_float`` from the peak fit's residuals
    fit_window: tuple[float, float] = (float("nan"), float("nan"))  # motor range of the peak fit (counts)
    fine_samples: list[tuple[int, float]] = field(default_factory=list)  # fine stage on ``capture_fine`` only
    reference_captures: int = 0  # small-aperture reference shots

    @property
    def captures(self) -> int:
        """Wide-aperture captures (preview + fine stage)."""
        return len(self.samples) + len(self.fine_samples)


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


def fit_peak(h: np.ndarray, m: np.ndarray, degree: int = 4) -> tuple[float, float, np.ndarray]:
    """Stationary point of a least-squares polynomial (``degree``) through (h, m) nearest the best sample.

    Returns (peak position, its 1-sigma from the residuals (delta method), coefficients over the
    normalised abscissa (h - centre) / scale). Raises CalibrationError when the fit has no maximum there.
    """
    h = np.asarray(h, float)
    m = np.asarray(m, float)
    if len(h) < degree + 3:
        raise CalibrationError(f"sharp search: {len(h)} samples on the focus peak, need >= {degree + 3}")
    c0, sc = 0.5 * (h.min() + h.max()), 0.5 * (h.max() - h.min()) or 1.0
    x = (h - c0) / sc
    V = np.vander(x, degree + 1)
    coef, *_ = np.linalg.lstsq(V, m, rcond=None)
    dcoef = np.polyder(coef)
    roots = np.roots(dcoef)
    roots = roots[(np.abs(roots.imag) < 1e-9) & (np.abs(roots.real) <= 1.0)].real
    roots = roots[np.polyval(np.polyder(dcoef), roots) < 0]  # maxima only
    if len(roots) == 0:
        raise CalibrationError("sharp search: the focus measure has no maximum inside the fitted window")
    x_best = x[np.argmax(m)]
    xr = float(roots[np.argmin(np.abs(roots - x_best))])
    # delta method: d(root)/d(coef) = -(d p'(xr)/d coef) / p''(xr)
    res = m - V @ coef
    dof = max(len(m) - degree - 1, 1)
    cov = np.linalg.pinv(V.T @ V) * float(res @ res) / dof
    n = degree + 1
    g = np.array([(n - 1 - k) * xr ** (n - 2 - k) if k < n - 1 else 0.0 for k in range(n)])
    g = -g / np.polyval(np.polyder(dcoef), xr)
    sd = float(np.sqrt(max(g @ cov @ g, 0.0)))
    return c0 + sc * xr, sc * sd, coef


def find_sharp_hexcode(
    capture: CaptureFn,
    move_to: Callable[[int], int],
    lo: int,
    hi: int,
    roi: tuple[int, int, int, int] | None = None,
    coarse_points: int = 17,
    centre: float | None = None,
    window: float | None = None,
    progress: Callable[[str], None] | None = None,
    precise: bool = True,
    capture_reference: CaptureFn | None = None,
    fit_drop: float = 0.05,
    fit_points: int = 25,
    reference_every: int = 3,
    capture_fine: CaptureFn | None = None,
    capture_fine_reference: CaptureFn | None = None,
    roi_fine: tuple[int, int, int, int] | None = None,
) -> SharpSearch:
    """Find the motor position where the board region is sharpest.

    Coarse sweep over [lo, hi] (or ``centre`` +- ``window``), shifting the window when the peak
    sits at its edge; zoom to the peak's flanks (``precise=False`` stops here: half-width centre).
    Fine stage: a parabola through the top samples gives the peak's curvature, from which the window
    whose sharpness drops by at most ``fit_drop`` (relative) is sampled at ``fit_points`` positions
    (re-centred once on the first estimate); the estimate is the maximum of a quartic fitted there.
    ``capture_reference`` (same motor position, small aperture: its sharpness hardly changes over the
    window) is shot at every ``reference_every``-th fine position; the wide measure is divided by a
    quadratic fitted to it, which removes the lens-breathing magnification tilt (~10 counts) without
    adding the reference's own noise.

    ``capture_fine`` (with ``capture_fine_reference`` and ``roi_fine``) runs the fine stage on other
    images than the coarse/zoom stages, e.g. a crop of the board at the sensor's native pixel pitch:
    the peak is then narrower in counts (CoC per count grows with 1 / pitch), so the fit window is
    narrower and the motor curve's local bend biases the quartic much less. Its samples are kept apart
    (``fine_samples``: a different image has a different measure scale); the first fine samples span
    +- half the preview's half width and are re-taken narrower until they span ~2 fit windows.
    """
    samples: list[tuple[int, float]] = []
    lo, hi = int(lo), int(hi)
    separate = capture_fine is not None
    fine: list[tuple[int, float]] = [] if separate else samples
    cap_f = capture_fine if separate else capture
    ref_f = capture_fine_reference if separate else capture_reference
    roi_f = roi_fine if separate else roi
    n_refs = 0

    refs: list[tuple[int, float]] = []  # (position, reference measure) in the fine stage

    def take(h: float) -> None:
        a = int(move_to(int(np.clip(round(h), 0, 0xFFFF))))
        samples.append((a, focus_measure(capture(), roi)))

    def take_fine(h: float, reference: bool = False) -> None:
        nonlocal n_refs
        a = int(move_to(int(np.clip(round(h), 0, 0xFFFF))))
        fine.append((a, focus_measure(cap_f(), roi_f)))
        if reference and ref_f is not None:
            refs.append((a, focus_measure(ref_f(), roi_f)))
            n_refs += 1

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
    # fine: curvature of the top from a parabola over the central part of the peak
    span = 0.5 * hw
    for _ in range(4 if separate else 1):
        for h in np.linspace(c - span, c + span, 7):
            take_fine(h)
        hs, ms = _curve(fine)
        near = np.abs(hs - c) <= 1.2 * span
        if near.sum() < 5:
            raise CalibrationError("sharp search: too few samples on the focus peak")
        q = np.polyfit(hs[near] - c, ms[near], 2)
        if q[0] >= 0:
            raise CalibrationError("sharp search: the focus measure has no peak (is the board in view and lit?)")
        centre_est = float(np.clip(c - q[1] / (2 * q[0]), c - span, c + span))
        top = float(np.polyval(q, centre_est - c))
        w_fit = float(np.clip(np.sqrt(fit_drop * top / -q[0]), 4.0, 0.8 * hw))
        if w_fit >= 0.45 * span:  # the parabola spans about the fit window: its curvature is the top's
            break
        c, span = centre_est, 1.5 * w_fit  # much sharper peak (fine images): look closer
    est = sd = float("nan")
    for it in range(2):
        n_fit = fit_points if it == 0 else fit_points // 2
        for j, h in enumerate(np.linspace(centre_est - w_fit, centre_est + w_fit, n_fit)):
            take_fine(h, reference=j % reference_every == 0 or j == n_fit - 1)
        hs, ms = _curve(fine)
        sel = np.abs(hs - centre_est) <= w_fit + 0.5
        mf = ms[sel]
        if len(refs) >= 3:  # divide by the smoothed small-aperture measure: cancels the breathing tilt
            rh, rm = _curve(refs)
            rc = np.polyfit(rh - centre_est, rm, min(2, len(rh) - 2))
            mf = mf / np.polyval(rc, hs[sel] - centre_est)
        est, sd, _ = fit_peak(hs[sel], mf)
        if progress:
            progress(f"peak fit: {est:.1f} +- {sd:.1f} counts over {centre_est - w_fit:.0f}..{centre_est + w_fit:.0f}")
        if abs(est - centre_est) <= 0.1 * w_fit:
            break
        centre_est = est  # re-centre (the fit window should be symmetric about the peak)
        refs.clear()
    final = int(round(est))
    achieved = int(move_to(final))
    if progress:
        progress(f"sharp at {est:.1f} +- {sd:.1f} counts ({len(samples) + (len(fine) if separate else 0)} positions)")
    return SharpSearch(est, final, achieved, samples, hw, sd, (centre_est - w_fit, centre_est + w_fit),
                       fine if separate else [], n_refs)


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
