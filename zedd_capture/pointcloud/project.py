"""Z-buffer projection of a point cloud (camera frame) into a depth map.

Splatting every point as a disc of radius r px with the nearest depth winning equals a
1-pixel nearest-depth buffer followed by a grey erosion (min filter) with a disc kernel. On top
of the paper's splat, each pixel that holds points of its own gets the mean depth of its
front-surface points (those within ``band_m`` behind the nearest one), which averages the
lidar range noise instead of keeping the most negative noise sample; the disc splat then fills
only the pixels without points of their own (``mode="fill"``, default) or, paper-literal, every
pixel takes the nearest splatted depth (``mode="splat"``).
All vectorised: no per-point Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import cv2
import numpy as np

from .grid import shift_fill, window_offsets
from .local_planes import fit_local_planes, fit_planes_multiscale

try:  # one fused pass for the projection (numpy's version makes ~10 temporaries of N floats)
    import numba as _nb
except ImportError:  # pragma: no cover - numba is a dependency; the numpy path stays as the fallback
    _nb = None


def disc_kernel(radius_px: int) -> np.ndarray:
    """(2r+1)^2 uint8 disc: pixels whose centre is within ``radius_px`` of the centre."""
    r = int(radius_px)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (x * x + y * y <= r * r + 1e-9).astype(np.uint8)


def project_points(points_cam: np.ndarray, K: np.ndarray, width: int, height: int, near_m: float = 0.05,
                   subpixel: bool = False, weights: np.ndarray | None = None, index: bool = False):
    """Pixel index (flat, v * width + u) and depth z (m) of the points that land in the image.

    subpixel=True also returns (du, dv): each point's offset (px, in [-0.5, 0.5]) from its pixel's centre.
    weights (N,): also returns the weights of the points that land in the image.
    index=True also returns (last) the index into ``points_cam`` of each point that lands in the image.
    """
    p = np.asarray(points_cam)
    if _nb is not None and p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 3 and len(p):
        k = np.array([K[0, 0], K[0, 2], K[0, 1], K[1, 1], K[1, 2]], dtype=np.float32)
        lin, z, du, dv, idx = _project_nb(np.ascontiguousarray(p), k, int(width), int(height), np.float32(near_m),
                                          bool(subpixel), weights is not None or index)
        # views with numpy's own dtype objects: numba's equal-but-distinct dtypes put ufunc.at
        # (np.minimum.at on these arrays) on a slow path, 30x slower on 20M points
        lin, z, du, dv, idx = (a.view(np.dtype(a.dtype.str)) for a in (lin, z, du, dv, idx))
        out = (lin, z)
        if subpixel:
            out += (du, dv)
        if weights is not None:
            out += (np.asarray(weights, dtype=np.float32)[idx],)
        if index:
            out += (idx,)
        return out
    z = p[:, 2]
    front = z > near_m
    front_idx = np.flatnonzero(front) if index else None
    p = p[front]
    z = z[front].astype(np.float32)
    w = None if weights is None else np.asarray(weights, dtype=np.float32)[front]
    inv = np.float32(1.0) / z
    uf = p[:, 0] * inv * np.float32(K[0, 0]) + np.float32(K[0, 2]) + np.float32(K[0, 1]) * p[:, 1] * inv
    vf = p[:, 1] * inv * np.float32(K[1, 1]) + np.float32(K[1, 2])
    u, v = np.rint(uf), np.rint(vf)
    inside = (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)
    lin = v[inside].astype(np.int64) * width + u[inside].astype(np.int64)
    out = (lin, z[inside])
    if subpixel:
        out += ((uf - u)[inside].astype(np.float32), (vf - v)[inside].astype(np.float32))
    if w is not None:
        out += (w[inside],)
    if index:
        out += (front_idx[inside],)
    return out


if _nb is not None:

    @_nb.njit(cache=True)
    def _project_nb(p, k, width, height, near, want_sub, want_idx):  # pragma: no cover - compiled
        """project_points in one pass, with the same float32 arithmetic and point order."""
        n = p.shape[0]
        lin = np.empty(n, np.int64)
        z = np.empty(n, np.float32)
        du = np.empty(n if want_sub else 0, np.float32)
        dv = np.empty(n if want_sub else 0, np.float32)
        idx = np.empty(n if want_idx else 0, np.int64)
        fx, cx, skew, fy, cy = k[0], k[1], k[2], k[3], k[4]
        one = np.float32(1.0)
        m = 0
        for i in range(n):
            zi = p[i, 2]
            if not zi > near:
                continue
            inv = one / zi
            uf = p[i, 0] * inv * fx + cx + skew * p[i, 1] * inv
            vf = p[i, 1] * inv * fy + cy
            u = np.rint(uf)
            v = np.rint(vf)
            if u >= 0 and u <= width - 1 and v >= 0 and v <= height - 1:
                lin[m] = np.int64(v) * width + np.int64(u)
                z[m] = zi
                if want_sub:
                    du[m] = uf - u
                    dv[m] = vf - v
                if want_idx:
                    idx[m] = i
                m += 1
        return lin[:m], z[:m], du[: m if want_sub else 0], dv[: m if want_sub else 0], idx[: m if want_idx else 0]


def view_weights(points_cam: np.ndarray, origins_cam: np.ndarray, power: float = 2.0, floor: float = 0.05) -> np.ndarray:
    """(N,) float32 weight of each point for the camera at the origin: cos(angle between the directions
    from the point to the sensor that measured it and to the camera) ** ``power``, at least ``floor``.

    A point seen from the far side (angle near or beyond 90 deg) is likely on the back or the hidden
    flank of a thin object, which projects inside its silhouette behind the visible surface; it keeps
    the ``floor`` weight so that it still holds a surface no other point sees (a weight of 0 would
    drop it and let the background show through).
    """
    p = np.asarray(points_cam, dtype=np.float32)
    a = np.asarray(origins_cam, dtype=np.float32) - p
    num = -np.einsum("ij,ij->i", a, p)
    den = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", p, p)) + np.float32(1e-12)
    w = np.clip(num / den, 0.0, 1.0) ** np.float32(power)
    return np.maximum(w, np.float32(floor)).astype(np.float32)


@dataclass(frozen=True)
class ZbufferConfig:
    """Settings of :func:`zbuffer` (lengths in metres, radii in pixels of the map it writes).

    Front surface: each pixel's depth comes from its front cluster, the points within ``band_m`` +
    ``band_rel`` x depth behind its nearest point (``band_m`` None: plain nearest depth per pixel, the paper's
    z-buffer), averaged in shrinking symmetric bands (``refine_halfwidths_m``). A front cluster needs
    ``max(min_support, support_frac * points in the pixel)`` points, else it is dropped as an outlier and the next
    cluster behind is tried (``outlier_rounds`` times). ``thin_ratio`` > 0: a front cluster with at least
    ``thin_ratio`` x as many points just behind it (within ``thin_depth_rel`` x its depth) is a thin layer of mixed
    returns in front of a surface (they lie between the two footprints, so always in front): dropped like an
    outlier, unless it is the edge of a surface before a step (:func:`_front_clusters`).

    Spill: ``spill_ratio`` > 0: front clusters whose point support (summed over the same-surface pixels within
    ``spill_radius_px``) is below ``spill_ratio`` x that surface's typical support within ``spill_window_px``
    are dropped and the cluster behind them taken (:func:`spill_mask`; pixels with nothing behind keep theirs),
    ``spill_rounds`` times: the sideways-scattered fringe of near objects; only where that surface has at least
    ``spill_min_support`` points (counts) within the radius.

    Depth per pixel: ``plane_radius_px`` > 0: read at the pixel's centre ray from a local plane fitted to the
    front-surface points of the pixels within that radius on the same surface
    (:func:`.local_planes.fit_local_planes`, ``noise_m`` = lidar range noise, m; ``adaptive_noise``: measured per
    pixel; ``plane_*``: its passes, gates and weights): unbiased on tilted and curved surfaces and free of points
    behind the visible surface. A tuple of radii (and of ``plane_sigma_px``) fits at each and keeps, per pixel, the
    widest fit that agrees with all narrower ones (:func:`.local_planes.fit_planes_multiscale`, ``plane_ici_k``),
    each corrected for the surface's curvature (``plane_curvature``). Else ``smooth_radius_px`` > 0: the mean of the
    front-surface points of the pixels within that radius whose depth is within ``smooth_tol_m + smooth_tol_rel *
    depth`` of its own.

    ``occlusion_radius_px`` > 0: screen-space visibility: a pixel surrounded in all 8 directions (within that
    radius) by pixels nearer by ``occlusion_rel`` is a background point seen through a gap of a sparse
    foreground; it is replaced by the foreground.

    Splat: ``mode`` "fill": pixels without points of their own take the nearest of the splatted depths (with the
    plane fit: the nearest of the neighbours' planes read at their own centre ray); "splat", paper-literal: every
    pixel takes the nearest splatted depth. ``near_m``: points nearer than this are dropped.
    """

    mode: Literal["fill", "splat"] = "fill"
    near_m: float = 0.05
    band_m: float | None = 0.05
    band_rel: float = 0.0
    refine_halfwidths_m: tuple[float, ...] = ()
    min_support: int = 1
    support_frac: float = 0.0
    outlier_rounds: int = 3
    thin_ratio: float = 0.0
    thin_depth_rel: float = 0.1
    spill_ratio: float = 0.0
    spill_radius_px: int = 2
    spill_window_px: int = 8
    spill_gate_rel: float = 0.02
    spill_rounds: int = 2
    spill_min_support: float = 0.0
    plane_radius_px: int | tuple[int, ...] = 0
    plane_sigma_px: float | None | tuple[float | None, ...] = None
    noise_m: float = 0.01
    adaptive_noise: bool = False
    plane_iterations: int = 5
    plane_init: Literal["mean", "near"] = "mean"
    plane_select_k: float = 2.0
    plane_select_hi_k: float | None = None
    plane_gate_k: float = 2.5
    plane_gate_rel: float = 0.005
    plane_ici_k: float = 3.0
    plane_curvature: bool = True
    smooth_radius_px: int = 0
    smooth_tol_m: float = 0.02
    smooth_tol_rel: float = 0.01
    occlusion_radius_px: int = 0
    occlusion_rel: float = 0.05

    def __post_init__(self):
        def bad(name, why):
            raise ValueError(f"ZbufferConfig.{name} = {getattr(self, name)!r}: {why}")

        if self.mode not in ("fill", "splat"):
            bad("mode", "must be 'fill' or 'splat'")
        if self.plane_init not in ("mean", "near"):
            bad("plane_init", "must be 'mean' or 'near'")
        if self.band_m is not None and not self.band_m >= 0:
            bad("band_m", "must be >= 0 (or None for the plain nearest depth)")
        for name in ("near_m", "band_rel", "support_frac", "thin_ratio", "thin_depth_rel", "spill_ratio",
                     "spill_gate_rel", "spill_min_support", "noise_m", "smooth_tol_m", "smooth_tol_rel", "occlusion_rel"):
            if not getattr(self, name) >= 0:  # also catches NaN
                bad(name, "must be >= 0")
        for name in ("spill_radius_px", "spill_window_px", "smooth_radius_px", "occlusion_radius_px", "outlier_rounds",
                     "spill_rounds", "plane_iterations"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) < 0:
                bad(name, "must be a whole number >= 0")
        if isinstance(self.plane_sigma_px, tuple) and len(self.plane_sigma_px) != len(self.plane_radii):
            bad("plane_sigma_px", f"needs one value per radius of plane_radius_px {self.plane_radii}")

    @property
    def plane_radii(self) -> tuple[int, ...]:
        """The plane fit's radii (px) > 0; empty: no plane fit."""
        return tuple(int(r) for r in np.atleast_1d(self.plane_radius_px) if r > 0)


def zbuffer(points_cam: np.ndarray, K: np.ndarray, width: int, height: int, splat_radius_px: int = 3,
            config: ZbufferConfig | None = None, point_weights: np.ndarray | None = None, **settings) -> np.ndarray:
    """Depth map (height, width) float32 metres, 0 where no point lands (after splatting).

    points_cam: (N, 3) metres in the OpenCV camera frame. K: 3x3 intrinsics of the depth map. ``config`` (default
    :class:`ZbufferConfig`) with ``settings`` (its field names) replacing its fields. point_weights (N,): per-point
    weights (e.g. :func:`view_weights`); 0 drops the point, the front-band means and the plane fit weight their sums
    (only the ratios matter: multiplying all weights by a constant changes nothing).
    """
    cfg = replace(config or ZbufferConfig(), **settings)
    radii = cfg.plane_radii
    lin, z, du, dv, wts = _project_for_zbuffer(points_cam, K, width, height, cfg.near_m, bool(radii), point_weights)
    planes = None  # per-pixel inverse-depth planes (A, Gx, Gy) of the plane fit
    if cfg.band_m is None or not len(z):
        own = np.full(width * height, np.inf, dtype=np.float32)
        np.minimum.at(own, lin, z)
    else:
        own, near, cnt2, alive = _front_surface(lin, z, wts, width, height, cfg)
        if radii:
            init = np.where(np.isfinite(own), near, np.inf) if cfg.plane_init == "near" else own
            fit_kw = dict(noise_m=cfg.noise_m, select_k=cfg.plane_select_k, gate_k=cfg.plane_gate_k,
                          gate_rel=cfg.plane_gate_rel, iterations=cfg.plane_iterations,
                          select_hi_k=cfg.plane_select_hi_k, adaptive_noise=cfg.adaptive_noise,
                          weights=None if wts is None else wts[alive])
            sigmas = cfg.plane_sigma_px if isinstance(cfg.plane_sigma_px, tuple) else (cfg.plane_sigma_px,) * len(radii)
            if len(radii) == 1:
                own, planes = fit_local_planes(lin[alive], z[alive], du[alive], dv[alive], init, width, height,
                                               radii[0], weight_sigma_px=sigmas[0], return_planes=True, **fit_kw)
            else:
                own, planes = fit_planes_multiscale(lin[alive], z[alive], du[alive], dv[alive], init, width, height,
                                                    radii, sigmas, cfg.plane_ici_k, cfg.plane_curvature, **fit_kw)
        elif cfg.smooth_radius_px > 0:
            sums = np.where(np.isfinite(own), own, 0) * cnt2
            own = _smooth(own.reshape(height, width), sums.reshape(height, width), cnt2.reshape(height, width),
                          cfg.smooth_radius_px, cfg.smooth_tol_m, cfg.smooth_tol_rel).ravel()
    own = own.reshape(height, width)
    if cfg.occlusion_radius_px > 0:
        fitted = own
        own = remove_occluded(own, cfg.occlusion_radius_px, cfg.occlusion_rel)
        if planes is not None:  # a replaced pixel takes a fronto-parallel plane at its new depth
            changed = (own != fitted).ravel()
            A, Gx, Gy = (a.copy() for a in planes)
            A[changed] = 1.0 / own.ravel()[changed]
            Gx[changed] = Gy[changed] = 0.0
            planes = (A, Gx, Gy)
    if splat_radius_px > 0 and cfg.mode == "fill" and planes is not None:
        # pixels without points of their own: the nearest of the neighbours' planes read at this
        # pixel's centre ray (a neighbour's depth itself is one pixel off on a slanted surface)
        out = np.where(np.isfinite(own), own, _fill_from_planes(planes, width, height, splat_radius_px))
    elif splat_radius_px > 0:
        splat = cv2.erode(own, disc_kernel(splat_radius_px), borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
        out = splat if cfg.mode == "splat" else np.where(np.isfinite(own), own, splat)
    else:
        out = own
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32)


def _project_for_zbuffer(points_cam, K, width, height, near_m, subpixel, point_weights):
    """(lin, z, du, dv, weights) of :func:`project_points` for :func:`zbuffer`: points of zero weight left out,
    the sub-pixel offsets (``subpixel``, else None) and the weights (None without ``point_weights``); with
    ``subpixel``, in pixel order (the plane fit's per-pixel sums then read and write memory in sequence)."""
    wts = du = dv = None
    if point_weights is not None:  # zero weight: the point is not used at all
        keep = np.asarray(point_weights) > 0
        points_cam = np.asarray(points_cam)[keep]
        wts = np.asarray(point_weights, dtype=np.float32)[keep]
    if subpixel and wts is not None:
        lin, z, du, dv, wts = project_points(points_cam, K, width, height, near_m, subpixel=True, weights=wts)
    elif wts is not None:
        lin, z, wts = project_points(points_cam, K, width, height, near_m, weights=wts)
    elif subpixel:
        lin, z, du, dv = project_points(points_cam, K, width, height, near_m, subpixel=True)
    else:
        lin, z = project_points(points_cam, K, width, height, near_m)
    if subpixel:
        order = np.argsort(lin, kind="stable")
        lin, z, du, dv = lin[order], z[order], du[order], dv[order]
        wts = None if wts is None else wts[order]
    return lin, z, du, dv, wts


def _weighted_mean(lin, z, wts, sel, n_px, fallback, counts):
    """(n_px,) per-pixel mean depth of the points ``sel`` (weighted by ``wts`` unless None; ``counts``: their
    number per pixel), ``fallback`` where they hold no point (no weight)."""
    if wts is None:
        return np.where(counts > 0, np.bincount(lin[sel], weights=z[sel], minlength=n_px) / np.maximum(counts, 1),
                        fallback)
    s = np.bincount(lin[sel], weights=(z * wts)[sel], minlength=n_px)
    sw = np.bincount(lin[sel], weights=wts[sel], minlength=n_px)
    return np.where(sw > 0, s / np.maximum(sw, 1e-12), fallback)


def _front_surface(lin, z, wts, width, height, cfg: ZbufferConfig):
    """(depth, nearest, count, alive): each pixel's front-surface depth (flat, inf = none; the weighted mean of its
    front cluster, refined in shrinking symmetric bands), its nearest alive point's depth, the count of points in
    the last band, and which points are left after the outlier, thin-layer and spill tests (see
    :class:`ZbufferConfig`)."""
    n_px = width * height
    near = np.full(n_px, np.inf, dtype=np.float32)
    need = np.maximum(cfg.min_support, np.ceil(cfg.support_frac * np.bincount(lin, minlength=n_px)))
    alive = np.ones(len(z), dtype=bool)
    clusters = lambda: _front_clusters(lin, z, alive, need, near, width, cfg.band_m, cfg.band_rel, cfg.outlier_rounds,
                                       cfg.thin_ratio, cfg.thin_depth_rel)
    sel, cnt = clusters()
    for _ in range(cfg.spill_rounds if cfg.spill_ratio > 0 else 0):
        # a front cluster whose point density is well below that of the same surface nearby is
        # the spill of a nearer surface's laterally scattered points over its silhouette
        m1 = np.bincount(lin[sel], weights=z[sel], minlength=n_px) / np.maximum(cnt, 1)
        sup = cnt if wts is None else np.bincount(lin[sel], weights=wts[sel], minlength=n_px)
        spill = spill_mask(np.where(cnt > 0, m1, np.inf).reshape(height, width), sup.reshape(height, width),
                           cfg.spill_radius_px, cfg.spill_window_px, cfg.spill_ratio, cfg.spill_gate_rel,
                           cfg.spill_min_support, cnt.reshape(height, width)).ravel()
        # ... unless nothing lies behind it: a sparse surface is better than a hole
        spill &= np.bincount(lin[alive], minlength=n_px) > cnt
        if not spill.any():
            break
        alive &= ~(sel & spill[lin])
        sel, cnt = clusters()
    # weighted means (view weights): the far side's points do not drag the band's centre back
    own = _weighted_mean(lin, z, wts, sel, n_px, np.inf, cnt)
    # then symmetric, shrinking bands around the running mean: removes the bias of the min
    # and of points behind the visible surface (flanks seen only from other lidar positions)
    cnt2 = cnt
    for hw in (0.5 * cfg.band_m,) + tuple(cfg.refine_halfwidths_m):
        ml = own[lin].astype(np.float32)
        half = np.float32(hw) + np.where(np.isfinite(ml), ml, 0) * np.float32(0.5 * cfg.band_rel)
        sel = alive & (np.abs(z - ml) <= half)
        c = np.bincount(lin[sel], minlength=n_px)
        own = _weighted_mean(lin, z, wts, sel, n_px, own, c)
        cnt2 = np.where(c > 0, c, cnt2)
    return np.where(cnt >= need, own, np.inf).astype(np.float32), near, cnt2, alive


def depth_edge_band(depth: np.ndarray, jump_rel: float = 0.05) -> np.ndarray:
    """(H, W) bool: pixels next to a depth edge of ``depth`` (m, 0 = invalid): a 4-neighbour's depth differs by
    more than ``jump_rel`` (log ratio), both sides of the edge. Which surface the centre ray of such a pixel
    meets is decided by the points' sub-pixel positions and is the least certain part of the map."""
    d = np.asarray(depth, dtype=np.float32)
    ld = np.log(np.where(d > 0, d, 1.0))
    ok = d > 0
    band = np.zeros(d.shape, bool)
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(1, None), slice(None, -1)
        jump = ok[tuple(a)] & ok[tuple(b)] & (np.abs(ld[tuple(a)] - ld[tuple(b)]) > np.float32(jump_rel))
        band[tuple(a)] |= jump
        band[tuple(b)] |= jump
    return band


def _front_clusters(lin, z, alive, need, near, width, band_m, band_rel, rounds, thin_ratio=0.0, thin_depth_rel=0.1,
                    edge_continue_rel: float = 0.01, edge_step_rel: float = 0.06):
    """(sel, cnt): the points of each pixel's front cluster (within the band behind its nearest alive point)
    and their number per pixel (flat index of an image ``width`` px wide). A front cluster with fewer than
    ``need`` points, or (thin_ratio > 0) with
    ``thin_ratio`` x as many points within ``thin_depth_rel`` x its depth behind it, is an outlier (mixed
    pixels, stray points): it is dropped (``alive`` updated in place) and the next one behind tried.

    Except a thin cluster that is the edge of a surface:
    one of its 8 neighbours holds a cluster that passes both tests within ``edge_continue_rel`` of its depth, and the
    points behind it lie on average more than ``edge_step_rel`` x its depth behind (a depth step; mixed returns lie
    close in front of the surface they came from). The outermost pixel column of a panel at grazing incidence 7 %
    in front of a wall that the sweep saw behind it held 2.6x as many wall points as panel points and read the wall
    (kitchen01: 56 of 160 pixels right, 115 with the exception). Twin, within 0.5 % / AbsRel: kitchen01 97.99 ->
    98.08 % / 1.19 -> 1.19 %, kitchen02 97.37 -> 97.51 / 1.63 -> 1.62, office03 97.34 -> 97.32 / 2.50 -> 2.51,
    hallway02 96.84 -> 96.85 / 1.34 -> 1.34; exempting every thin cluster next to a solid one of its depth,
    whatever lies behind: kitchen01 97.91 % (the far corridor's grazing walls lose their mixed layers' test)."""
    n_px = len(near)
    for _ in range(max(1, rounds)):
        near[:] = np.inf
        np.minimum.at(near, lin[alive], z[alive])
        limit = near[lin] * np.float32(1.0 + band_rel) + np.float32(band_m)
        sel = alive & (z <= limit)
        cnt = np.bincount(lin[sel], minlength=n_px)
        weak = (cnt < need) & (cnt > 0)
        if thin_ratio > 0:  # a thin layer in front of a surface with many more points just behind it
            behind = alive & ~sel & (z <= near[lin] * np.float32(1.0 + thin_depth_rel))
            n_behind = np.bincount(lin[behind], minlength=n_px)
            thin = (cnt > 0) & (n_behind >= thin_ratio * cnt)
            if thin.any():
                thin &= ~_surface_edge(near, (cnt > 0) & ~weak & ~thin, width, edge_continue_rel, edge_step_rel,
                                       np.bincount(lin[behind], weights=z[behind], minlength=n_px), n_behind)
            weak |= thin
        if not weak.any():
            break
        alive &= ~(sel & weak[lin])
    return sel, cnt


def _surface_edge(near, solid, width, continue_rel, step_rel, behind_sum, behind_count) -> np.ndarray:
    """(n_px,) bool: pixels with a solid 8-neighbour (``solid``) within ``continue_rel`` x their nearest depth
    ``near`` of it, whose points behind (sum and count of their depths) lie on average more than ``step_rel`` x
    that depth behind it: see :func:`_front_clusters`."""
    height = len(near) // width
    d, ok = near.reshape(height, width), solid.reshape(height, width)
    continues = np.zeros((height, width), bool)
    with np.errstate(invalid="ignore", divide="ignore"):  # inf - inf: pixels without points
        for dy, dx in window_offsets(1):
            if dy or dx:
                continues |= shift_fill(ok, dy, dx, False) & (np.abs(shift_fill(d, dy, dx, np.inf) - d) <= continue_rel * d)
        step = behind_sum / np.maximum(behind_count, 1) / np.where(np.isfinite(near), near, 1.0) - 1.0
    return continues.ravel() & (behind_count > 0) & (step > step_rel)


def spill_mask(front: np.ndarray, support: np.ndarray, radius: int, window: int, ratio: float,
               gate_rel: float = 0.02, min_support: float = 0.0, counts: np.ndarray | None = None) -> np.ndarray:
    """(H, W) bool: pixels whose front surface (depth ``front``, inf = none) holds too few points to be
    that surface's interior: the support summed over the same-surface pixels within ``radius`` is below
    ``ratio`` x the typical such sum of the same surface within ``window`` (the support-weighted mean,
    dominated by its interior). Range noise of a point seen at an angle to the camera scatters it
    sideways in the image; on a straight edge the scattered density falls to half the interior's
    right at the edge, so ``ratio`` = 0.5 keeps the silhouette where it is. ``counts`` (point counts per
    pixel, when ``support`` is weighted) and ``min_support``: surfaces whose typical count within
    ``radius`` is below it are left alone (too few points for the test)."""
    f = np.where(np.isfinite(front), front, np.float32(0)).astype(np.float32)
    sup = np.where(f > 0, support, 0).astype(np.float32)
    tol = np.float32(gate_rel) * f

    def gated_sum(val, r):
        out = np.zeros_like(f)
        for dy, dx in window_offsets(r):
            fn = shift_fill(f, dy, dx, 0.0)
            out += np.where((fn > 0) & (np.abs(fn - f) <= tol), shift_fill(val, dy, dx, 0.0), 0)
        return out

    S = gated_sum(sup, radius)
    S2 = gated_sum(S * S, window)
    S1 = gated_sum(S, window)
    ref = S2 / np.maximum(S1, 1e-12)
    out = (f > 0) & (S < np.float32(ratio) * ref)
    if min_support > 0:  # too few points on the surface for the test: a sparse object, not a fringe
        c = gated_sum(np.where(f > 0, support if counts is None else counts, 0).astype(np.float32), radius)
        out &= gated_sum(c * c, window) / np.maximum(gated_sum(c, window), 1e-12) >= np.float32(min_support)
    return out


def _fill_from_planes(planes: tuple, width: int, height: int, radius: int, tol_rel: float = 0.02) -> np.ndarray:
    """(H, W) float32 depth: per pixel, the planes of the pixels within ``radius`` (inverse depth
    A + Gx du + Gy dv about each pixel's centre) read at this pixel's centre ray; the nearest surface
    wins (as in the splat) and its readings (those within ``tol_rel`` of the nearest one) are averaged,
    weighted by 1 / distance^2. inf: no plane within the radius."""
    A, Gx, Gy = (np.asarray(a, dtype=np.float32).reshape(height, width) for a in planes)
    A = np.where(np.isfinite(A) & (A > 0), A, np.float32(0))
    offs = [(dy, dx) for dy, dx in window_offsets(radius) if dy or dx]

    def read(dy: int, dx: int) -> np.ndarray:
        a = shift_fill(A, dy, dx, 0.0)
        inv = a - shift_fill(Gx, dy, dx, 0.0) * np.float32(dx) - shift_fill(Gy, dy, dx, 0.0) * np.float32(dy)
        # a plane read where it is no longer positive / beyond a factor 2 of its own depth is not trusted
        return np.where((a > 0) & (inv > 0.5 * a) & (inv < 2 * a), inv, np.float32(0))

    best = np.zeros((height, width), np.float32)
    for dy, dx in offs:
        np.maximum(best, read(dy, dx), out=best)
    s = np.zeros_like(best)
    w = np.zeros_like(best)
    lim = best * np.float32(1.0 - tol_rel)
    for dy, dx in offs:  # read again rather than hold every read (memory at 1824 x 1216)
        inv = read(dy, dx)
        wk = np.float32(1.0 / (dy * dy + dx * dx))
        use = (inv > 0) & (inv >= lim)
        s += np.where(use, inv * wk, 0)
        w += np.where(use, wk, 0)
    return np.where(w > 0, w / np.maximum(s, np.float32(1e-12)), np.float32(np.inf))




def _smooth(own: np.ndarray, sums: np.ndarray, counts: np.ndarray, radius: int, tol_m: float, tol_rel: float) -> np.ndarray:
    """Edge-preserving mean over a disc of pixels: sum of point depths / number of points, counting only
    neighbours whose own depth is within the tolerance of the centre pixel's."""
    ok = np.isfinite(own)
    d = np.where(ok, own, np.float32(1e9)).astype(np.float32)
    S = np.zeros(own.shape, np.float64)
    C = np.zeros(own.shape, np.float64)
    tol = np.float32(tol_m) + np.float32(tol_rel) * d
    sums32, counts32 = sums.astype(np.float32), counts.astype(np.float32)
    for dy, dx in window_offsets(radius):
        use = np.abs(shift_fill(d, dy, dx, np.inf) - d) <= tol
        S += np.where(use, shift_fill(sums32, dy, dx, 0.0), 0)
        C += np.where(use, shift_fill(counts32, dy, dx, 0.0), 0)
    out = np.where(ok & (C > 0), S / np.maximum(C, 1), own)
    return out.astype(np.float32)


_DIRS = ((1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))


def remove_occluded(depth: np.ndarray, radius_px: int, rel: float = 0.05) -> np.ndarray:
    """Depth (inf = empty) with background pixels that show through gaps of a nearer surface set to
    the nearer surface's depth (nearest of the 8 directional minima), vectorised over the image."""
    d = np.asarray(depth, dtype=np.float32)
    occluded = np.isfinite(d)
    minima = np.empty((len(_DIRS),) + d.shape, dtype=np.float32)
    for i, (dy, dx) in enumerate(_DIRS):
        m = minima[i]
        m[:] = np.inf
        for k in range(1, radius_px + 1):
            np.minimum(m, shift_fill(d, dy * k, dx * k, np.inf), out=m)
        occluded &= m < d * np.float32(1.0 - rel)
    if not occluded.any():
        return d
    out = d.copy()
    # the occluding surface's depth: median of the 8 directional nearest depths
    out[occluded] = np.median(minima[:, occluded], axis=0)
    return out


def zbuffer_bruteforce(points_cam: np.ndarray, K: np.ndarray, width: int, height: int, splat_radius_px: int) -> np.ndarray:
    """Paper-literal reference: every point drawn as a disc, nearest wins (slow; tests only)."""
    lin, z = project_points(points_cam, K, width, height)
    out = np.full((height, width), np.inf, dtype=np.float32)
    r = splat_radius_px
    ker = disc_kernel(r)
    for p, d in zip(lin, z):
        v, u = divmod(int(p), width)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                if ker[dy + r, dx + r] and 0 <= v + dy < height and 0 <= u + dx < width:
                    out[v + dy, u + dx] = min(out[v + dy, u + dx], d)
    return np.where(np.isfinite(out), out, 0.0).astype(np.float32)
