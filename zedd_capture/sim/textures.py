"""Procedural surface textures of the twin: deterministic functions of 3-D position and geometry id.

Every texture is band-limited to the pixel footprint when the caller gives one (analytic
pre-filtering: each sinusoid is attenuated by the Gaussian transfer of an anisotropic footprint on
the surface, the step edge is an erf ramp, the board is sampled from a mip pyramid), so renders
do not alias; without a footprint (lidar reflectivity) the unfiltered value is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.special import erf

N_WAVES = 16
_rng = np.random.default_rng(20260114)
_dirs = _rng.normal(size=(N_WAVES, 3))
_dirs /= np.linalg.norm(_dirs, axis=1, keepdims=True)
# log-uniform spatial frequencies 3-300 cycles/m (periods 0.33 m - 3.3 mm), shared by all surfaces
_mags = np.exp(np.linspace(np.log(3.0), np.log(300.0), N_WAVES))
WAVE_VECTORS = (_dirs * _mags[:, None] * 2 * np.pi).astype(np.float64)  # rad / m, (K, 3)
WAVE_VECTORS32 = WAVE_VECTORS.astype(np.float32)
WAVE_K2_32 = np.sum(WAVE_VECTORS**2, axis=1).astype(np.float32)
FOOTPRINT_SIGMA = 0.45  # Gaussian sigma of the pixel pre-filter, in footprints


@dataclass
class Texture:
    """Texture of one geometry. kind: 'noise' | 'step' | 'constant' | 'board'."""

    kind: str = "noise"
    base_rgb: tuple[float, float, float] = (0.5, 0.5, 0.5)
    contrast: float = 0.4
    seed: int = 0
    # step: albedo lo/hi either side of the plane through step_point with in-surface normal step_dir
    step_point: tuple[float, float, float] = (0.0, 0.0, 0.0)
    step_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)
    lo: float = 0.1
    hi: float = 0.9
    # board: printed image (uint8 grey), px per metre, world->board transform, margin (m)
    board_image: np.ndarray | None = None
    px_per_m: float = 2000.0
    T_board_world: np.ndarray | None = None
    margin_m: float = 0.0
    _phases: np.ndarray = field(init=False, repr=False)
    _weights: np.ndarray = field(init=False, repr=False)
    _pyramid: list = field(init=False, repr=False, default_factory=list)

    def __post_init__(self):
        rng = np.random.default_rng([int(self.seed), 7])
        self._phases = rng.uniform(0, 2 * np.pi, N_WAVES)
        amp = rng.uniform(0.3, 1.0, N_WAVES) * (_mags / _mags[0]) ** -0.25
        amp[rng.random(N_WAVES) < 0.25] *= 0.2  # each surface its own spectrum
        chroma = 1.0 + 0.35 * rng.normal(size=(N_WAVES, 3))
        w = amp[:, None] * chroma
        # std of the luminance texture (unfiltered) = contrast / 2
        w *= (self.contrast / 2) / np.sqrt(0.5 * np.sum(amp**2))
        self._weights = w
        self._weights32 = w.astype(np.float32)
        self._phases32 = self._phases.astype(np.float32)
        if self.kind == "board":
            if self.board_image is None or self.T_board_world is None:
                raise ValueError("board texture needs board_image and T_board_world")
            pyr = [self.board_image.astype(np.float32) / 255.0]
            while min(pyr[-1].shape) > 8:
                pyr.append(cv2.pyrDown(pyr[-1]))
            self._pyramid = pyr

    def albedo(self, points: np.ndarray, normals: np.ndarray, ray_dirs: np.ndarray | None,
               footprint_m: np.ndarray | None) -> np.ndarray:
        """(N, 3) albedo in [0, 1] at world ``points`` (m) with surface ``normals``."""
        n = len(points)
        base = np.asarray(self.base_rgb, dtype=np.float32)
        if self.kind == "constant" or n == 0:
            return np.broadcast_to(base, (n, 3)).astype(np.float32)
        sig_u, sig_v, u = _footprint_axes(normals, ray_dirs, footprint_m)
        if self.kind == "noise":
            kv = WAVE_VECTORS32
            s = _dot(points.astype(np.float32), kv) + self._phases32  # (n, K) rad
            np.sin(s, out=s)
            if sig_u is not None:
                nf = normals.astype(np.float32)
                kn = _dot(nf, kv)
                ku = _dot(u.astype(np.float32), kv)
                sv2 = (0.5 * sig_v**2).astype(np.float32)[:, None]
                du2 = (0.5 * (sig_u**2 - sig_v**2)).astype(np.float32)[:, None]
                # exponent: -(sv^2 |k_t|^2 + (su^2 - sv^2) k_u^2) / 2, |k_t|^2 = |k|^2 - k_n^2
                kn *= kn
                np.subtract(WAVE_K2_32, kn, out=kn)
                kn *= sv2
                ku *= ku
                ku *= du2
                kn += ku
                np.negative(kn, out=kn)
                np.exp(kn, out=kn)
                s *= kn
            lum = s @ self._weights32
            return np.clip(base * (1.0 + lum), 0.0, 1.0).astype(np.float32)
        if self.kind == "step":
            g = np.asarray(self.step_dir, dtype=np.float64)
            x = (points - np.asarray(self.step_point)) @ g
            if sig_u is None:
                frac = (x > 0).astype(np.float64)
            else:
                gt = g[None, :] - (normals @ g)[:, None] * normals  # in-surface part
                gu = np.sum(gt * u, axis=1)
                gv2 = np.maximum(np.sum(gt * gt, axis=1) - gu**2, 0)
                sig = np.sqrt(sig_u**2 * gu**2 + sig_v**2 * gv2) + 1e-12
                frac = 0.5 * (1 + erf(x / (np.sqrt(2) * sig)))
            a = self.lo + (self.hi - self.lo) * frac
            return np.clip(a[:, None] * (base / max(base.max(), 1e-6)), 0, 1).astype(np.float32)
        if self.kind == "board":
            T = np.asarray(self.T_board_world)
            pb = points @ T[:3, :3].T + T[:3, 3]
            tu = (pb[:, 0] + self.margin_m) * self.px_per_m - 0.5
            tv = (pb[:, 1] + self.margin_m) * self.px_per_m - 0.5
            if sig_u is None:
                lev = np.zeros(n)
            else:
                lev = np.log2(np.maximum(np.maximum(sig_u, sig_v) / FOOTPRINT_SIGMA * self.px_per_m, 1.0))
            lev = np.clip(lev, 0, len(self._pyramid) - 1)
            l0 = np.floor(lev).astype(int)
            fr = (lev - l0).astype(np.float32)
            g = np.empty(n, np.float32)
            for lv in np.unique(l0):
                sel = l0 == lv
                a0 = _sample(self._pyramid[lv], tu[sel], tv[sel], lv)
                a1 = _sample(self._pyramid[min(lv + 1, len(self._pyramid) - 1)], tu[sel], tv[sel], lv + 1)
                g[sel] = a0 * (1 - fr[sel]) + a1 * fr[sel]
            g = 0.05 + 0.85 * g  # printed black is not black, white not 1
            return np.repeat(g[:, None], 3, axis=1).astype(np.float32)
        raise ValueError(f"unknown texture kind {self.kind!r}")


def _dot(p: np.ndarray, kv: np.ndarray) -> np.ndarray:
    """(n, 3) x (K, 3) -> (n, K) dot products (broadcast; faster than BLAS for an inner size of 3)."""
    out = p[:, 0:1] * kv[:, 0]
    out += p[:, 1:2] * kv[:, 1]
    out += p[:, 2:3] * kv[:, 2]
    return out


def _sample(img: np.ndarray, tu: np.ndarray, tv: np.ndarray, level: int) -> np.ndarray:
    sc = 2.0**level  # cv2.pyrDown keeps every other sample: level-l texel i sits at level-0 texel i * 2^l
    n = len(tu)
    cols = 4096
    rows = max(1, -(-n // cols))
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n] = tu / sc
    my[:n] = tv / sc
    out = cv2.remap(img, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)  # remap needs maps < 32767 in each dimension
    return out.reshape(-1)[:n]


def _footprint_axes(normals, ray_dirs, footprint_m):
    """Anisotropic pre-filter sigmas (m) on the surface: along u (the tilt direction) and across."""
    if footprint_m is None or ray_dirs is None:
        return None, None, None
    d = ray_dirs / np.linalg.norm(ray_dirs, axis=1, keepdims=True)
    cos = np.abs(np.sum(d * normals, axis=1))
    u = d - np.sum(d * normals, axis=1, keepdims=True) * normals
    un = np.linalg.norm(u, axis=1, keepdims=True)
    u = np.where(un > 1e-9, u / np.maximum(un, 1e-12), 0.0)
    sig_v = FOOTPRINT_SIGMA * footprint_m
    sig_u = sig_v / np.maximum(cos, 0.1)
    return sig_u, sig_v, u
