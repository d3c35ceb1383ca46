"""Lens-breathing warps: per focus run, the 2x3 affine map from that run's image to the canonical image.

Estimated from the F/16 (all-in-focus) images with ECC (``cv2.findTransformECC``, affine; OpenCV
has no similarity mode, the scale is read as sqrt(det A)) on an image pyramid, coarse to fine,
after a photometric normalisation (grey, local mean removed and local contrast equalised, so
exposure and vignetting differences do not matter). Runs are processed outwards from the
canonical run; a run whose direct alignment fails (low correlation or an implausible warp) is
chained through its already-aligned neighbour towards the canonical run. The same warp is reused
for the wider apertures of that run.

A smooth breathing model s(d) = 1 + k (1/d - 1/d_canonical) is fitted to the per-run scales as
a check; per-run residuals (model misfit and ECC correlation) are reported.

``breathing.json``: ``{"run_<k>": [[a, b, c], [d, e, f]], ...}`` (pixel coordinates of run k's
image -> canonical image), plus the extra keys ``provenance``, ``model`` and ``residuals``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from ..layout import LayoutError, atomic_write_json, parse_image_name, read_json_file


class BreathingError(ValueError):
    """Breathing estimation failed or a breathing file is malformed; the message names run/file."""


# --- warps --------------------------------------------------------------------------------
def to3(W: np.ndarray) -> np.ndarray:
    M = np.eye(3)
    M[:2] = np.asarray(W, float).reshape(2, 3)
    return M


def compose(W_b_from_a: np.ndarray, W_c_from_b: np.ndarray) -> np.ndarray:
    """2x3 warp a -> c from a -> b and b -> c."""
    return (to3(W_c_from_b) @ to3(W_b_from_a))[:2]


def invert_warp(W: np.ndarray) -> np.ndarray:
    return np.linalg.inv(to3(W))[:2]


def warp_scale(W: np.ndarray) -> float:
    """Isotropic scale of an affine warp: sqrt(|det A|)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(W, float)[:2, :2]))))


def max_displacement_px(W1: np.ndarray, W2: np.ndarray, width: int, height: int) -> float:
    """Largest distance (px) between where two warps send the pixels of a width x height image."""
    pts = np.array([[0, 0], [width - 1, 0], [0, height - 1], [width - 1, height - 1]], float)
    ph = np.column_stack([pts, np.ones(4)])
    d = ph @ (np.asarray(W1, float) - np.asarray(W2, float)).T
    return float(np.max(np.linalg.norm(d, axis=1)))  # affine difference: max at a corner


def apply(image: np.ndarray, warp: np.ndarray, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """Warp an image of a run into the canonical image space; ``out_size`` (w, h) defaults to the input size.

    A warp estimated at another resolution must be rescaled first (:func:`rescale_warp`).
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    size = (w, h) if out_size is None else (int(out_size[0]), int(out_size[1]))
    return cv2.warpAffine(img, np.asarray(warp, np.float64).reshape(2, 3), size,
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def rescale_warp(W: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """The same warp for images resized from ``src_size`` to ``dst_size`` (w, h; pixel-centre convention)."""
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return (S @ to3(W) @ np.linalg.inv(S))[:2]


# --- photometric normalisation and ECC ----------------------------------------------------------
NORMALISE_SIGMA_PX = 8.0
BORDER_PX = 3 * NORMALISE_SIGMA_PX + 2  # normalisation is not shift-invariant this close to the image border


def normalise(image: np.ndarray, sigma: float = NORMALISE_SIGMA_PX) -> np.ndarray:
    """Grey float32 with the local mean removed and local contrast equalised (exposure/vignetting invariant)."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img.astype(np.float32), cv2.COLOR_BGR2GRAY)
    g = img.astype(np.float32)
    mean = cv2.GaussianBlur(g, (0, 0), sigma)
    hp = g - mean
    sd = np.sqrt(cv2.GaussianBlur(hp * hp, (0, 0), sigma)) + 1e-3 * (float(np.abs(hp).mean()) + 1e-6)
    out = hp / sd
    return np.clip(out, -4, 4).astype(np.float32)


def _level_matrix(level: int) -> np.ndarray:
    s = 0.5**level
    return np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1.0]])


def _pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    pyr = [img]
    for _ in range(levels - 1):
        pyr.append(cv2.pyrDown(pyr[-1]))
    return pyr


def ecc_align(
    image: np.ndarray,
    reference: np.ndarray,
    init: np.ndarray | None = None,
    levels: int = 4,
    iterations: int = 100,
    eps: float = 1e-5,
    border_frac: float = 0.04,
    normalised: bool = False,
    refine: bool = True,
) -> tuple[np.ndarray, float]:
    """Affine warp (2x3) mapping pixels of ``image`` to ``reference``, coarse-to-fine; returns (warp, correlation).

    Raises BreathingError when ECC does not converge at the finest level.
    """
    a = image if normalised else normalise(image)
    b = reference if normalised else normalise(reference)
    if a.shape != b.shape:
        raise BreathingError(f"image {a.shape[::-1]} and reference {b.shape[::-1]} differ in size")
    levels = max(1, min(levels, int(np.log2(min(a.shape) / 32)) + 1))
    pa, pb = _pyramid(a, levels), _pyramid(b, levels)
    W = np.eye(3)[:2] if init is None else np.asarray(init, float).reshape(2, 3)
    cc = float("nan")
    for lv in range(levels - 1, -1, -1):
        S = _level_matrix(lv)
        Wl = (S @ to3(W) @ np.linalg.inv(S))[:2].astype(np.float32)
        ta, tb = pa[lv], pb[lv]
        h, w = ta.shape
        m = int(round(max(border_frac * min(h, w), BORDER_PX / 2**lv)))
        mask = np.zeros((h, w), np.uint8)
        mask[m : h - m, m : w - m] = 255
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations if lv else 2 * iterations, eps)
        try:
            cc, Wl = cv2.findTransformECC(ta, tb, Wl, cv2.MOTION_AFFINE, crit, mask, 5)
        except cv2.error as e:
            if lv == 0:
                raise BreathingError(f"ECC did not converge: {str(e).strip().splitlines()[-1]}") from None
            continue  # keep the coarser estimate
        W = (np.linalg.inv(S) @ to3(Wl.astype(np.float64)) @ S)[:2]
    if refine:
        W, cc = refine_affine(a, b, W, border_frac=border_frac)
    return W, float(cc)


def refine_affine(
    image: np.ndarray, reference: np.ndarray, W: np.ndarray, iterations: int = 30, tol_px: float = 1e-4,
    border_frac: float = 0.04, smooth_sigma: float = 1.0,
) -> tuple[np.ndarray, float]:
    """Gauss-Newton refinement of an affine warp (image -> reference) with bicubic resampling.

    ECC resamples bilinearly, which biases small warps by a few hundredths of a pixel (the
    interpolation error varies with the sub-pixel phase); this final stage resamples the
    reference bicubically and solves for the warp plus a gain/offset jointly.
    """
    T = cv2.GaussianBlur(image.astype(np.float32), (0, 0), smooth_sigma)
    I = cv2.GaussianBlur(reference.astype(np.float32), (0, 0), smooth_sigma)
    h, w = T.shape
    m = int(round(max(border_frac * min(h, w), BORDER_PX)))
    ys, xs = np.mgrid[m : h - m, m : w - m].astype(np.float32)
    t = T[m : h - m, m : w - m].ravel().astype(np.float64)
    x, y = xs.ravel().astype(np.float64), ys.ravel().astype(np.float64)
    W = np.asarray(W, float).copy()
    alpha, beta = 1.0, 0.0
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float)
    # exact cubic B-spline interpolation at float64 positions (cv2.remap quantises positions to 1/32 px,
    # which biases small warps); the spline coefficients are computed once
    from scipy import ndimage

    coef = ndimage.spline_filter(I.astype(np.float64), order=3, mode="mirror")
    xs64, ys64 = xs.ravel().astype(np.float64), ys.ravel().astype(np.float64)
    for _ in range(iterations):
        mx = W[0, 0] * xs64 + W[0, 1] * ys64 + W[0, 2]
        my = W[1, 0] * xs64 + W[1, 1] * ys64 + W[1, 2]
        inside = (mx >= 1) & (mx <= w - 2) & (my >= 1) & (my <= h - 2)
        coords = np.vstack([my, mx])
        iw = ndimage.map_coordinates(coef, coords, order=3, prefilter=False, mode="mirror")
        # derivatives of the interpolating spline itself (central differences of the interpolant, 0.25 px)
        e = 0.25
        gx = (ndimage.map_coordinates(coef, np.vstack([my, mx + e]), order=3, prefilter=False, mode="mirror")
              - ndimage.map_coordinates(coef, np.vstack([my, mx - e]), order=3, prefilter=False, mode="mirror")) / (2 * e)
        gy = (ndimage.map_coordinates(coef, np.vstack([my + e, mx]), order=3, prefilter=False, mode="mirror")
              - ndimage.map_coordinates(coef, np.vstack([my - e, mx]), order=3, prefilter=False, mode="mirror")) / (2 * e)
        ok = inside
        if ok.sum() < 1000:
            raise BreathingError("refinement left the image (warp too large)")
        iw_, gx_, gy_, x_, y_ = (v[ok].astype(np.float64) for v in (iw, gx, gy, x, y))
        r = t[ok] - alpha * iw_ - beta
        J = np.column_stack([alpha * gx_ * x_, alpha * gx_ * y_, alpha * gx_, alpha * gy_ * x_, alpha * gy_ * y_,
                             alpha * gy_, iw_, np.ones_like(iw_)])
        delta = np.linalg.lstsq(J.T @ J, J.T @ r, rcond=None)[0]
        dW = delta[:6].reshape(2, 3)
        W = W + dW
        alpha += delta[6]
        beta += delta[7]
        if np.max(np.abs(corners @ dW.T)) < tol_px:
            break
    tc, ic = t[ok] - t[ok].mean(), iw_ - iw_.mean()
    cc = float(tc @ ic / (np.linalg.norm(tc) * np.linalg.norm(ic) + 1e-12))
    return W, cc


# --- per-run estimation ----------------------------------------------------------------------
@dataclass
class BreathingResult:
    warps: dict[int, np.ndarray]
    correlation: dict[int, float] = field(default_factory=dict)
    method: dict[int, str] = field(default_factory=dict)
    scale: dict[int, float] = field(default_factory=dict)
    model_k_per_diopter: float = float("nan")
    model_residual: dict[int, float] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)


def _plausible(W: np.ndarray, ref: np.ndarray, size: tuple[int, int], max_shift_frac: float) -> bool:
    return max_displacement_px(W, ref, *size) <= max_shift_frac * max(size)


def estimate_breathing(
    images: Mapping[int, np.ndarray],
    canonical_run: int,
    prior: Mapping[int, np.ndarray] | None = None,
    focus_distances_m: Mapping[int, float] | None = None,
    canonical_distance_m: float | None = None,
    min_correlation: float = 0.75,
    max_shift_frac: float = 0.03,
    levels: int = 4,
) -> BreathingResult:
    """Per run, the warp of its (F/16) image into the canonical run's image.

    ``prior`` (run -> 2x3) initialises ECC and bounds what is plausible; without it identity is
    used. Runs are processed outwards from the canonical run; failed direct alignments chain
    through the neighbour towards the canonical run.
    """
    if canonical_run not in images:
        raise BreathingError(f"no image of the canonical run {canonical_run}")
    sizes = {k: im.shape[:2] for k, im in images.items()}
    ref_shape = sizes[canonical_run]
    for k, s in sizes.items():
        if s != ref_shape:
            raise BreathingError(f"run {k}: image size {s[1]}x{s[0]} differs from the canonical run's {ref_shape[1]}x{ref_shape[0]}")
    size = (ref_shape[1], ref_shape[0])
    norm = {k: normalise(im) for k, im in images.items()}
    res = BreathingResult({canonical_run: np.eye(3)[:2]}, {canonical_run: 1.0}, {canonical_run: "canonical"}, image_size=size)
    order = sorted((k for k in images if k != canonical_run), key=lambda k: (abs(k - canonical_run), k))
    for k in order:
        init = None if prior is None or k not in prior else np.asarray(prior[k], float)
        ref_guess = init if init is not None else np.eye(3)[:2]
        W, cc, method = None, float("nan"), ""
        try:
            Wd, ccd = ecc_align(norm[k], norm[canonical_run], init, levels=levels, normalised=True)
            if ccd >= min_correlation and _plausible(Wd, ref_guess, size, max_shift_frac):
                W, cc, method = Wd, ccd, "direct"
        except BreathingError:
            pass
        if W is None:
            step = 1 if k < canonical_run else -1
            nb = k + step
            while nb not in res.warps and nb != canonical_run:
                nb += step
            if nb not in res.warps:
                raise BreathingError(f"run {k}: direct alignment failed and no aligned neighbour to chain through")
            # warp k -> nb initialised from the prior (or identity)
            init_nb = None
            if prior is not None and k in prior and nb in prior:
                init_nb = compose(np.asarray(prior[k], float), invert_warp(np.asarray(prior[nb], float)))
            try:
                Wkn, cc = ecc_align(norm[k], norm[nb], init_nb, levels=levels, normalised=True)
            except BreathingError as e:
                raise BreathingError(f"run {k}: direct and chained (via run {nb}) alignment failed: {e}") from None
            if cc < min_correlation:
                raise BreathingError(f"run {k}: alignment failed (correlation {cc:.2f} direct and via run {nb})")
            W, method = compose(Wkn, res.warps[nb]), f"chained via run {nb}"
        res.warps[k], res.correlation[k], res.method[k] = W, cc, method
    res.warps = dict(sorted(res.warps.items()))
    res.scale = {k: warp_scale(W) for k, W in res.warps.items()}
    if focus_distances_m and canonical_distance_m:
        fit_breathing_model(res, focus_distances_m, canonical_distance_m)
    return res


def fit_breathing_model(res: BreathingResult, focus_distances_m: Mapping[int, float], canonical_distance_m: float) -> None:
    """Least-squares k of s_canonical_from_run = 1 / (1 + k (1/d - 1/d_c)); fills model_k and per-run residuals.

    The warp maps the run's image into the canonical one, so its scale is the inverse of the
    run's magnification relative to the canonical image.
    """
    ks = [k for k in res.warps if k in focus_distances_m]
    if len(ks) < 2:
        return
    x = np.array([1.0 / focus_distances_m[k] - 1.0 / canonical_distance_m for k in ks])
    y = np.array([1.0 / res.scale[k] - 1.0 for k in ks])
    kfit = float(x @ y / (x @ x)) if x @ x > 0 else float("nan")
    res.model_k_per_diopter = kfit
    res.model_residual = {k: float(res.scale[k] - 1.0 / (1.0 + kfit * xi)) for k, xi in zip(ks, x)}


def model_warp(k_per_diopter: float, focus_distance_m: float, canonical_distance_m: float, K: np.ndarray,
               decentre_px_per_diopter: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A prior warp (run -> canonical) from a breathing model: scale about the principal point + decentre."""
    dd = 1.0 / focus_distance_m - 1.0 / canonical_distance_m
    s = 1.0 / (1.0 + k_per_diopter * dd)
    cx, cy = K[0, 2], K[1, 2]
    return np.array([[s, 0, (1 - s) * cx - decentre_px_per_diopter[0] * dd * s],
                     [0, s, (1 - s) * cy - decentre_px_per_diopter[1] * dd * s]])


# --- scene-level entry -----------------------------------------------------------------------
def read_gray_images(paths: Mapping[int, Path]) -> dict[int, np.ndarray]:
    """run -> grey image of each path (:func:`find_all_in_focus_images`); an unreadable one raises BreathingError
    naming it."""
    return {k: _load(p) for k, p in paths.items()}


def _load(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise BreathingError(f"{path}: cannot read image")
    return img


def find_all_in_focus_images(raw_focus_stack_dir: Path, f_number: float = 16.0) -> dict[int, Path]:
    """run -> path of that run's image at ``f_number`` in a raw focus_stack folder (which must exist)."""
    if not Path(raw_focus_stack_dir).is_dir():
        raise BreathingError(f"{raw_focus_stack_dir}: folder does not exist")
    out: dict[int, Path] = {}
    for p in sorted(Path(raw_focus_stack_dir).glob("*.jpg")):
        try:
            name = parse_image_name(p.name)
        except LayoutError:
            continue
        if abs(name.f_number - f_number) < 1e-6:
            if name.run in out:
                raise BreathingError(f"{p}: a second F{f_number:.1f} image of run {name.run} (also {out[name.run].name})")
            out[name.run] = p
    return out


# --- file I/O ---------------------------------------------------------------------------------
def warps_to_json(warps: Mapping[int, np.ndarray]) -> dict[str, list[list[float]]]:
    return {f"run_{k}": [[float(v) for v in row] for row in np.asarray(W, float).reshape(2, 3)] for k, W in sorted(warps.items())}


class WarpTable(dict):
    """run -> 2x3 warp, with the image size the warps were estimated at (if recorded)."""

    image_size: tuple[int, int] | None = None


def write_breathing(path: Path, warps: Mapping[int, np.ndarray], provenance: dict | None = None,
                    result: BreathingResult | None = None) -> None:
    """Write breathing.json atomically: run_<k> warps + provenance/model/residual extras."""
    data: dict = warps_to_json(warps)
    if provenance:
        data["provenance"] = dict(provenance)
    if result is not None:
        data["image_size"] = list(result.image_size)
        data["model"] = {"scale_vs_diopter": "s = 1/(1 + k (1/d - 1/d_canonical))",
                         "k_per_diopter": result.model_k_per_diopter}
        data["residuals"] = {
            f"run_{k}": {"method": result.method.get(k, ""), "correlation": result.correlation.get(k),
                         "scale": result.scale.get(k), "model_residual": result.model_residual.get(k)}
            for k in sorted(result.warps)
        }
    atomic_write_json(Path(path), data)


def read_breathing(path: Path) -> WarpTable:
    """Read breathing.json -> {run: 2x3 array} (extra keys ignored); errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise BreathingError(f"{path}: breathing warps not found (run `zedd calibrate-breathing`)")
    data = read_json_file(path, "breathing warps JSON", BreathingError)
    out = WarpTable()
    for key, val in data.items():
        if not key.startswith("run_"):
            continue
        try:
            k = int(key[4:])
            W = np.asarray(val, float)
        except (ValueError, TypeError):
            raise BreathingError(f"{path}: {key}: not a run_<k> 2x3 matrix") from None
        if W.shape != (2, 3) or not np.all(np.isfinite(W)):
            raise BreathingError(f"{path}: {key}: expected a finite 2x3 matrix, got shape {W.shape}")
        out[k] = W
    if not out:
        raise BreathingError(f"{path}: no run_<k> warps")
    size = data.get("image_size")
    if isinstance(size, list) and len(size) == 2:
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
            raise BreathingError(f"{path}: image_size: expected [width, height] in pixels, got {size!r}")
        out.image_size = (size[0], size[1])
    return out
