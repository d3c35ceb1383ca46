"""Camera rendering of the twin: ray-cast all-in-focus view, occlusion-aware thin-lens defocus, sensor, JPEG.

Pipeline of one shot: ``render_view`` (radiance + exact z-depth by ray casting, with the breathing
intrinsics of the current focus) -> ``render_defocused`` (layered thin-lens blur) -> ``expose``
(aperture / shutter / ISO, shot + read noise, sRGB) -> ``encode_jpeg``. ``render_shot`` wires them
and reuses one ray cast per (scene, pose, focus state) through a small cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from ..rig import Rig
from .optics import K_at_focus, signed_coc_px
from .scene import SimScene

AMBIENT = 0.45
DIFFUSE = 0.55
# depth layers: bins of 0.5 px signed CoC up to 4 px, then 10 % steps
_BIN_STEP_PX = 0.5
_BIN_LINEAR_UNTIL_PX = 4.0
_BIN_RATIO = 1.10
_MAX_KERNEL_PX = 16.0  # larger blurs run on a downsampled layer (diameter >= 16 px there)


# --- all-in-focus view ------------------------------------------------------------------------
def camera_rays(K: np.ndarray, width: int, height: int, T_world_camera: np.ndarray):
    """Origins (3,) and world directions (H*W, 3) with camera-z component 1 (so ray t = z-depth)."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    dc = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], axis=-1).reshape(-1, 3)
    T = np.asarray(T_world_camera, dtype=np.float64)
    return T[:3, 3], dc @ T[:3, :3].T


def _shade(scene: SimScene, o: np.ndarray, d: np.ndarray, footprint_per_m: float):
    """Cast rays and shade the hits: (radiance (n, 3) float32, t (n,), geometry id (n,))."""
    hits = scene.cast(np.broadcast_to(o, d.shape), d)
    t = hits.t.astype(np.float64)
    hit = hits.hit
    n = hits.normal.astype(np.float64)
    n *= -np.sign(np.sum(n * d, axis=1, keepdims=True) + 1e-30)  # face the camera
    fp = np.where(hit, t, 0.0) * footprint_per_m  # pixel footprint at the hit (m)
    pts = np.where(hit[:, None], hits.point, 0.0)
    alb = scene.albedo_at(hits.geometry_id, pts, n, d, fp)
    shade = AMBIENT + DIFFUSE * np.clip(n @ scene.light_dir, 0.0, None)
    shade = np.where(hit, shade, 1.0).astype(np.float32)
    return alb * shade[:, None], t, hits.geometry_id


# rotated-grid 4x supersampling of pixels on geometry / depth edges
_AA_OFFSETS = tuple(((i + 0.5) / 4 - 0.5 + (j - 1.5) / 16, (j + 0.5) / 4 - 0.5 + (i - 1.5) / 16) for i in range(4) for j in range(4))


def _edge_pixels(gid: np.ndarray, depth: np.ndarray, rel_jump: float = 0.03) -> np.ndarray:
    """Pixels whose 4-neighbourhood changes geometry id or jumps in depth by more than ``rel_jump``."""
    z = np.where(np.isfinite(depth), depth, 1e6)
    e = np.zeros(gid.shape, bool)
    for ax in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        diff = (gid[tuple(a)] != gid[tuple(b)]) | (np.abs(z[tuple(a)] - z[tuple(b)]) > rel_jump * np.minimum(
            z[tuple(a)], z[tuple(b)]))
        e[tuple(a)] |= diff
        e[tuple(b)] |= diff
    return e


def render_view(scene: SimScene, K: np.ndarray, width: int, height: int,
                T_world_camera: np.ndarray | None = None, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """All-in-focus linear radiance (H, W, 3 float32, white Lambertian under full light = ~1) and exact
    z-depth at pixel centres (H, W float32 m, inf where a ray leaves the scene) through intrinsics ``K``.

    Textures are pre-filtered to the pixel footprint; pixels on geometry/depth edges are
    supersampled 4x (rotated grid) so occlusion edges do not alias.
    """
    T = np.asarray(scene.tripod_camera_pose if T_world_camera is None else T_world_camera, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    o, d = camera_rays(K, width, height, T)
    rad, t, gid = _shade(scene, o, d, 1.0 / K[0, 0])
    depth = np.where(np.isfinite(t), t, np.inf).reshape(height, width)
    if antialias:
        idx = np.flatnonzero(_edge_pixels(gid.reshape(height, width), depth))
        if len(idx):
            vs, us = np.divmod(idx, width)
            acc = np.zeros((len(idx), 3), np.float32)
            for ox, oy in _AA_OFFSETS:
                dc = np.stack([(us + ox - K[0, 2]) / K[0, 0], (vs + oy - K[1, 2]) / K[1, 1], np.ones(len(idx))], axis=1)
                r, _, _ = _shade(scene, o, dc @ T[:3, :3].T, 0.25 / K[0, 0])
                acc += r
            rad[idx] = acc / len(_AA_OFFSETS)
    return rad.reshape(height, width, 3).astype(np.float32), depth.astype(np.float32)


# --- thin-lens defocus ------------------------------------------------------------------------
@lru_cache(maxsize=1024)
def _tent_disk(diameter_px: float, supersample: int = 8) -> np.ndarray:
    """Uniform disk of ``diameter_px`` sampled with linear (tent) weights onto the pixel grid."""
    r = max(diameter_px, 0.0) / 2
    half = int(np.ceil(r)) + 1
    ss = supersample
    n_fine = (2 * half) * ss
    xf = (np.arange(n_fine) + 0.5) / ss - half  # fine sample positions covering [-half, half]
    inside = ((xf[:, None] ** 2 + xf[None, :] ** 2) <= r * r).astype(np.float64)
    if inside.sum() == 0:
        k = np.zeros((2 * half + 1, 2 * half + 1))
        k[half, half] = 1.0
        return k
    pix = np.arange(-half, half + 1)
    Wt = np.clip(1.0 - np.abs(pix[None, :] - xf[:, None]), 0.0, None)  # (n_fine, n_pix)
    k = Wt.T @ inside @ Wt
    return k / k.sum()


def _marginal_variance(k: np.ndarray) -> float:
    m = k.sum(axis=0)
    x = np.arange(len(m)) - len(m) // 2
    return float(np.sum(m * x * x))


@lru_cache(maxsize=1024)
def disk_kernel(diameter_px: float) -> np.ndarray:
    """Discrete PSF of a uniform disk (pillbox) of ``diameter_px``, normalised to sum 1.

    The disk is sampled onto the pixel grid with linear weights and its drawn diameter is adjusted
    so that the kernel's second moment equals the continuous disk's (R^2 / 4 per axis): edge
    spreads then match the thin-lens CoC at every size (a plain pixel-coverage disk is off by up
    to ~6 % around 2-3 px because its edge aliases).
    """
    target = diameter_px**2 / 16.0
    if target <= 0:
        return _tent_disk(0.0).astype(np.float32)
    d = diameter_px
    for _ in range(8):
        v = _marginal_variance(_tent_disk(round(d, 4)))
        d_new = float(np.sqrt(max(d * d + 16.0 * (target - v), 0.0)))
        if abs(d_new - d) < 1e-3:
            break
        d = d_new
    k = _tent_disk(round(d, 4))
    if abs(_marginal_variance(k) - target) > 0.02 * target + 1e-3:  # tiny disks: blend with a delta
        delta = np.zeros_like(k)
        delta[len(k) // 2, len(k) // 2] = 1.0
        v = _marginal_variance(k)
        a = min(target / v, 1.0) if v > 0 else 0.0
        k = a * k + (1 - a) * delta
    return k.astype(np.float32)


def _bin_index(c: np.ndarray) -> np.ndarray:
    a = np.abs(c)
    lin = a / _BIN_STEP_PX
    log = _BIN_LINEAR_UNTIL_PX / _BIN_STEP_PX + np.log(np.maximum(a, 1e-9) / _BIN_LINEAR_UNTIL_PX) / np.log(_BIN_RATIO)
    g = np.where(a <= _BIN_LINEAR_UNTIL_PX, lin, log)
    return (np.sign(c) * np.round(g)).astype(np.int32)


def _quantise(d: float) -> float:
    """Kernel diameters are cached on a grid: 1/64 px below 4 px, 0.25 % steps above."""
    if d < 4.0:
        return round(d * 64) / 64
    return float(np.exp(np.round(np.log(d) / 0.0025) * 0.0025))


_SMALL_DISK_PX = 0.35  # below this the pixel-sampled disk degenerates; use a 3-tap kernel of the same variance
_GRID_PX = 1.0 / 64  # linear kernel grid below _BIN_LINEAR_UNTIL_PX


@lru_cache(maxsize=1024)
def _small_blur_kernel(diameter_px: float) -> np.ndarray:
    """3x3 separable kernel [v/2, 1 - v, v/2]^2 with per-axis variance v = d^2 / 16 (a uniform disk's)."""
    v = diameter_px**2 / 16.0
    t = np.array([v / 2, 1.0 - v, v / 2])
    return np.outer(t, t)


def _grid_kernel(q: float) -> np.ndarray:
    return _small_blur_kernel(q) if q < _SMALL_DISK_PX else disk_kernel(q).astype(np.float64)


def _pad_to(k: np.ndarray, n: int) -> np.ndarray:
    p = (n - len(k)) // 2
    return np.pad(k, p) if p > 0 else k


def small_defocus_kernel(diameter_px: float) -> np.ndarray:
    """PSF of a small defocus (``diameter_px`` < 4 px), continuous in the diameter.

    Blends the kernels of the two neighbouring 1/64 px grid diameters with the weight that makes the
    per-axis second moment exactly ``d^2 / 16`` (the uniform disk's), so image sharpness changes
    smoothly with focus down to d = 0 (3-tap kernels below 0.35 px, sampled disks above).
    """
    d = max(float(diameter_px), 0.0)
    i = int(np.floor(d / _GRID_PX))
    q0, q1 = i * _GRID_PX, (i + 1) * _GRID_PX
    t = (d * d - q0 * q0) / (q1 * q1 - q0 * q0)
    k0, k1 = _grid_kernel(q0), _grid_kernel(q1)
    n = max(len(k0), len(k1))
    k = (1.0 - t) * _pad_to(k0, n) + t * _pad_to(k1, n)
    return k.astype(np.float32)


def _blur(img: np.ndarray, diameter: float) -> np.ndarray:
    """Blur (h, w, C) float32 with a disk of ``diameter`` px; large disks run on a downsampled copy.

    Diameters below 4 px use :func:`small_defocus_kernel` (continuous in d, exact second moment; only
    d == 0 leaves the image untouched)."""
    if diameter <= 0.0:
        return img
    if diameter < _BIN_LINEAR_UNTIL_PX:
        return cv2.filter2D(img, -1, small_defocus_kernel(diameter), borderType=cv2.BORDER_CONSTANT)
    s = int(diameter // _MAX_KERNEL_PX)
    h, w = img.shape[:2]
    if s >= 2 and min(h, w) >= 4 * s:
        small = cv2.resize(img, (max(1, round(w / s)), max(1, round(h / s))), interpolation=cv2.INTER_AREA)
        sx = w / small.shape[1]
        k = disk_kernel(_quantise(diameter / sx))
        b = cv2.filter2D(small, -1, k, borderType=cv2.BORDER_CONSTANT)
        return cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    k = disk_kernel(_quantise(diameter))
    return cv2.filter2D(img, -1, k, borderType=cv2.BORDER_CONSTANT)


def _fill_hidden_background(out: np.ndarray, acc: np.ndarray, a: np.ndarray, diam: float) -> None:
    """Where a blurred layer is partly transparent (0 < a < 1) over background that nearer geometry hid
    (acc < 1), extend the visible background into the hole (normalised box filter of the layer's
    CoC size), so a defocused occluder spreads symmetrically over what lies behind it. In place."""
    need = (a > 1e-4) & (a < 1 - 1e-4) & (acc < 1 - 1e-4)
    if not need.any():
        return
    size = 2 * int(np.ceil(diam / 2)) + 3
    num = cv2.blur(out, (size, size), borderType=cv2.BORDER_CONSTANT)
    den = cv2.blur(acc, (size, size), borderType=cv2.BORDER_CONSTANT)
    ok = need & (den > 1e-3)
    fill = num[ok] / den[ok][:, None]
    missing = (1.0 - acc[ok])[:, None]
    out[ok] += missing * fill
    acc[ok] = 1.0


def render_defocused(radiance: np.ndarray, depth: np.ndarray, focus_distance_m: float, f_number: float,
                     rig: Rig, K: np.ndarray | None = None, pixel_pitch_mm: float | None = None) -> np.ndarray:
    """Occlusion-aware thin-lens defocus of an all-in-focus render (linear radiance, z-depth in m).

    Pixels go to depth layers by signed CoC (0.5 px bins up to 4 px, then 10 % bins); each layer's
    premultiplied colour and alpha are blurred with the pixel-integrated disk of the layer's mean CoC
    (f^2 |D - d| / (N D (d - f)) over the pixel pitch sensor_width / image width) and composited
    back to front; the result is normalised by the accumulated alpha (fills what occluders hid).
    ``K`` is not needed (the pitch follows the image width); accepted for symmetry with render_view.
    ``pixel_pitch_mm`` overrides that pitch (mm) for a window (crop) of a larger image.
    """
    H, W = depth.shape
    pitch = rig.camera.sensor_width_mm / W if pixel_pitch_mm is None else float(pixel_pitch_mm)
    c = signed_coc_px(depth, focus_distance_m, f_number, rig.lens.focal_length_mm, pitch).astype(np.float32)
    bins = _bin_index(c)
    out = np.zeros((H, W, 3), np.float32)
    acc = np.zeros((H, W), np.float32)
    flat_bins = bins.ravel()
    order = np.argsort(flat_bins, kind="stable")
    sb = flat_bins[order]
    starts = np.flatnonzero(np.r_[True, sb[1:] != sb[:-1]])
    ends = np.r_[starts[1:], len(sb)]
    cflat = c.ravel()
    for s, e in reversed(list(zip(starts, ends))):  # largest signed CoC (farthest) first
        idx = order[s:e]
        diam = float(np.abs(cflat[idx].mean()))
        ys, xs = np.divmod(idx, W)
        pad = int(np.ceil(diam / 2)) + 2
        y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, H)
        x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, W)
        layer = np.zeros((y1 - y0, x1 - x0, 4), np.float32)
        layer[ys - y0, xs - x0, :3] = radiance[ys, xs]
        layer[ys - y0, xs - x0, 3] = 1.0
        b = _blur(layer, diam)
        a = np.clip(b[..., 3], 0.0, 1.0)
        sub = out[y0:y1, x0:x1]
        subacc = acc[y0:y1, x0:x1]
        if diam >= 1.0:
            _fill_hidden_background(sub, subacc, a, diam)
        sub *= (1.0 - a)[..., None]
        sub += b[..., :3]
        subacc *= 1.0 - a
        subacc += a
    return out / np.maximum(acc, 1e-6)[..., None]


# --- sensor -------------------------------------------------------------------------------
def exposure_gain(rig: Rig, f_number: float, shutter_s: float, iso: int) -> float:
    """Relative brightness t / N^2 * ISO / 100, 1.0 at the rig's base exposure (base N, base t, ISO 100)."""
    e = rig.exposure
    return (shutter_s / e.base_shutter_s) * (e.base_f_number / f_number) ** 2 * (iso / 100.0)


def expose(radiance: np.ndarray, f_number: float, shutter_s: float, iso: int, rig: Rig,
           rng: np.random.Generator) -> np.ndarray:
    """Sensor + processing: photo-electrons (Poisson approximated as Gaussian) + read noise, ISO gain,
    sRGB encoding -> uint8 RGB. At the base exposure linear radiance 1.0 gives
    ``rig.sim.photons_at_white`` electrons and maps to 255."""
    e = rig.exposure
    phot = rig.sim.photons_at_white
    light = (shutter_s / e.base_shutter_s) * (e.base_f_number / f_number) ** 2
    electrons = radiance.astype(np.float32) * np.float32(phot * light)
    noise = rng.standard_normal(electrons.shape, dtype=np.float32)
    electrons += noise * np.sqrt(np.maximum(electrons, 0.0))
    if rig.sim.read_noise > 0:
        electrons += rng.standard_normal(electrons.shape, dtype=np.float32) * np.float32(rig.sim.read_noise * phot)
    lin = np.clip(electrons * np.float32(iso / 100.0 / phot), 0.0, 1.0)
    return linear_to_srgb8(lin)


def linear_to_srgb8(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    s = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    return np.round(s * 255.0).astype(np.uint8)


def srgb8_to_linear(img: np.ndarray) -> np.ndarray:
    s = img.astype(np.float32) / 255.0
    return np.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4).astype(np.float32)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


# --- one shot -----------------------------------------------------------------------------
@dataclass
class ViewCache:
    """Keeps the last all-in-focus ray cast (one per focus state: the apertures of a run share it)."""

    key: tuple | None = None
    scene: SimScene | None = None
    value: tuple | None = None
    casts: int = 0
    hits: int = 0

    def get(self, scene: SimScene, K: np.ndarray, w: int, h: int, T: np.ndarray):
        key = (np.round(K, 9).tobytes(), w, h, np.asarray(T, float).tobytes())
        if key != self.key or scene is not self.scene:
            self.value = render_view(scene, K, w, h, T)
            self.key = key
            self.scene = scene
            self.casts += 1
        else:
            self.hits += 1
        return self.value


@dataclass
class ShotResult:
    rgb: np.ndarray  # uint8 (H, W, 3)
    radiance: np.ndarray  # defocused linear radiance before the sensor
    depth: np.ndarray  # z-depth of the view (m) in this shot's (breathing) camera
    K: np.ndarray
    info: dict = field(default_factory=dict)


def render_shot(scene: SimScene, rig: Rig, focus_distance_m: float, f_number: float, shutter_s: float, iso: int,
                rng: np.random.Generator, T_world_camera: np.ndarray | None = None, width: int | None = None,
                height: int | None = None, cache: ViewCache | None = None,
                region: tuple[int, int, int, int] | None = None) -> ShotResult:
    """Render one photograph as shot at ``focus_distance_m`` (breathing + defocus + exposure + noise).

    ``region`` (x0, y0, x1, y1; px of the ``width`` x ``height`` image, end exclusive) renders only that
    window of the image, at the same pixel pitch (sensor width / ``width``) and optics: what cropping a
    full-size photograph gives. ``K`` of the result is the window's intrinsics.
    """
    w = width or rig.camera.width_px
    h = height or rig.camera.height_px
    T = scene.tripod_camera_pose if T_world_camera is None else np.asarray(T_world_camera, float)
    K = K_at_focus(rig, focus_distance_m, w, h)
    pitch = rig.camera.sensor_width_mm / w
    if region is not None:
        x0, y0, x1, y1 = (int(v) for v in region)
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ValueError(f"region {region} outside the {w}x{h} image")
        K = K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        w, h = x1 - x0, y1 - y0
    if cache is None:
        rad, depth = render_view(scene, K, w, h, T)
    else:
        rad, depth = cache.get(scene, K, w, h, T)
    blurred = render_defocused(rad, depth, focus_distance_m, f_number, rig, K, pixel_pitch_mm=pitch)
    rgb = expose(blurred, f_number, shutter_s, iso, rig, rng)
    return ShotResult(rgb, blurred, depth, K, {"focus_distance_m": focus_distance_m, "f_number": f_number,
                                               "shutter_s": shutter_s, "iso": iso})
