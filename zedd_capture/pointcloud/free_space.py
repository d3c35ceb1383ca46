"""Free space seen by the sweep: a near surface that a lidar ray went through is not there.

Edge pixels of a near object are decided from its points' density (:mod:`edge_snap`), and where the near
surface covers about half of a pixel that density decides by chance: range noise along rays from the side
spreads the near surface into pixels whose centre rays see the wall behind. The sweep holds a second,
independent witness. Every return is a ray from the sensor to the surface it hit, and the space along it is
empty: a ray of the sweep that crosses a pixel's centre ray just behind the depth the map gives it, and goes on
to hit something farther, went through where the map puts a surface. The hand-held sweep passes the near
objects on every side, so such rays graze their silhouettes from many directions.

:func:`sweep_rays` keeps every frame's returns as a range image with the sensor pose of each column at its
firing time (the deskew motion of :mod:`aggregate`), and :func:`free_space_violations` counts, for chosen
pixels of a depth map, the rays that cross the pixel's centre ray within ``eps_px`` (in the image) at a depth
between ``depth (1 + band_near_rel) + band_near_m`` and ``depth (1 + band_far_rel) + band_far_m`` and end more
than ``margin_m`` beyond the crossing. The rays near a world point are found per frame from the lidar's own
geometry: the beam rows by altitude, then the column by azimuth from the beam's origin, refined with the
pose of that column. Only rays within ``eps_out_px`` of the centre toward the far side count (a ray just outside
the silhouette proves nothing about a centre inside it). :func:`far_side_depth` gives the depth a carved pixel
takes: the mean of its farther 8-neighbours (``depth_map.project_depth``).

Near a thin curved object's rim the map reads the surface a little too near (its plane fit extrapolates the
front), and the space just in front of the real rim is free: the test cannot tell that from a spread edge, so
the pipeline asks for more rays where the far side is more than twice as far.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from .edge_snap import farther_neighbours


@dataclass
class SweepRays:
    """Every return of a sweep as a ray from its beam.

    ranges: (F, H, W) float32 m (0: no return). column_poses: (F, W, 3, 4) float32 world <- sensor pose of each
    column at its firing time. directions, offsets: (H, W, 3) unit ray direction and offset (m) in the sensor
    frame (xyz = direction * range + offset).
    """

    ranges: np.ndarray
    column_poses: np.ndarray
    directions: np.ndarray
    offsets: np.ndarray

    def __post_init__(self):
        d = self.directions
        self.altitude = np.arcsin(np.clip(d[:, 0, 2], -1.0, 1.0))  # (H,) rad; the rows fire at fixed altitudes
        az = np.unwrap(np.arctan2(d[..., 1], d[..., 0]), axis=1)  # (H, W)
        self.azimuth0 = az[:, 0]
        self.azimuth_step = (az[:, -1] - az[:, 0]) / (d.shape[1] - 1)  # rad per column (about -2 pi / W)
        self.rows_by_altitude = np.argsort(self.altitude)
        self.altitude_sorted = self.altitude[self.rows_by_altitude]


def sweep_rays(frames: list, times: np.ndarray, poses: np.ndarray, velocities: np.ndarray,
               accelerations: np.ndarray, directions: np.ndarray, offsets: np.ndarray) -> SweepRays:
    """:class:`SweepRays` of ``frames`` (io.LidarFrameData with ``pixel``; poses T_world_lidar (F, 4, 4) at
    ``times``, body ``velocities`` and ``accelerations`` (F, 6) as :func:`deskew.deskew_points` takes them) and
    the lidar's ray tables ``directions``, ``offsets`` (H, W, 3)."""
    H, W = directions.shape[:2]
    F = len(frames)
    ranges = np.zeros((F, H * W), np.float32)
    column_poses = np.zeros((F, W, 3, 4), np.float32)
    for i, fr in enumerate(frames):
        if fr.pixel is None:
            raise ValueError("free space: the frames carry no pixel index (read them with io.read_lidar)")
        ranges[i, fr.pixel] = fr.ranges
        col = fr.pixel % W
        col_dt = np.zeros(W)
        col_dt[col] = fr.dt
        seen = np.zeros(W, bool)
        seen[col] = True
        if seen.any() and not seen.all():  # columns without a return: their firing time between their neighbours'
            c = np.flatnonzero(seen)
            col_dt = np.interp(np.arange(W), c, col_dt[c])
        v, a = velocities[i], accelerations[i]
        rot = Rotation.from_rotvec(col_dt[:, None] * v[:3] + 0.5 * col_dt[:, None] ** 2 * a[:3]).as_matrix()
        shift = col_dt[:, None] * v[3:] + 0.5 * col_dt[:, None] ** 2 * a[3:]
        T = poses[i]
        column_poses[i, :, :, :3] = np.einsum("ij,cjk->cik", T[:3, :3], rot)
        column_poses[i, :, :, 3] = shift @ T[:3, :3].T + T[:3, 3]
    return SweepRays(ranges=ranges.reshape(F, H, W), column_poses=column_poses,
                     directions=np.asarray(directions, np.float64), offsets=np.asarray(offsets, np.float64))


def free_space_violations(depth: np.ndarray, K: np.ndarray, T_world_camera: np.ndarray, pixels: np.ndarray,
                          rays: SweepRays, eps_px: float = 0.7, band_near_rel: float = 0.002,
                          band_near_m: float = 0.001, band_far_rel: float = 0.002, band_far_m: float = 0.008,
                          margin_m: float = 0.05, window_cols: int = 2, eps_out_px: float = 0.1,
                          jump_rel: float = 0.05) -> np.ndarray:
    """(H, W) int32: for each ``pixels`` (H, W) bool pixel of ``depth`` (m; intrinsics ``K``; camera pose
    ``T_world_camera``), the number of ``rays`` that cross its centre ray within ``eps_px`` at a depth in the
    band behind its depth (module doc) and end more than ``margin_m`` beyond; 0 elsewhere."""
    H, W = depth.shape
    out = np.zeros((H, W), np.int32)
    py, px = np.nonzero(pixels & (depth > 0))
    if not len(py):
        return out
    d = depth[py, px].astype(np.float64)
    t1 = d * (1 + band_near_rel) + band_near_m
    t2 = d * (1 + band_far_rel) + band_far_m
    ray_cam = np.stack([(px - K[0, 2]) / K[0, 0], (py - K[1, 2]) / K[1, 1], np.ones(len(px))], 1)  # per metre depth
    Rwc, centre = np.asarray(T_world_camera, np.float64)[:3, :3], np.asarray(T_world_camera, np.float64)[:3, 3]
    ray_w = ray_cam @ Rwc.T
    far_dir = np.zeros((H, W, 2))  # toward the far side: the mean image direction of the farther 8-neighbours
    for dy, dx, _, far in farther_neighbours(depth, jump_rel):
        far_dir[far] += np.array([dx, dy]) / np.hypot(dx, dy)
    far_dir = far_dir[py, px]
    far_dir /= np.maximum(np.linalg.norm(far_dir, axis=1, keepdims=True), 1e-9)
    mid = centre + (0.5 * (t1 + t2))[:, None] * ray_w  # (C, 3) world
    eps_per_m = eps_px / K[0, 0]
    counts = np.zeros(len(py), np.int32)
    Wl = rays.directions.shape[1]
    order, alt_sorted = rays.rows_by_altitude, rays.altitude_sorted
    for f in range(len(rays.ranges)):
        cp = rays.column_poses[f].astype(np.float64)  # (W, 3, 4)
        el, az, k = _beam_toward(rays, cp, mid)
        inside = (el > alt_sorted[0] - 0.02) & (el < alt_sorted[-1] + 0.02)
        ci = np.flatnonzero(inside)
        if not len(ci):
            continue
        for rows in (order[k[ci] - 1], order[k[ci]]):  # the beams just above and below
            col_row = np.round((az[ci] - rays.azimuth0[rows]) / rays.azimuth_step[rows]).astype(np.int64)
            for dc in range(-window_cols, window_cols + 1):
                cc = (col_row + dc) % Wl
                rng = rays.ranges[f, rows, cc]
                has = rng > 0
                if not has.any():
                    continue
                c, r_, c_, L = ci[has], rows[has], cc[has], rng[has].astype(np.float64)
                R, t = cp[c_, :, :3], cp[c_, :, 3]
                o = np.einsum("cij,cj->ci", R, rays.offsets[r_, c_]) + t
                u = np.einsum("cij,cj->ci", R, rays.directions[r_, c_])
                w = ray_w[c]
                s, tc, ok = _closest_approach(o, u, centre, w)
                off = (o + s[:, None] * u - centre - tc[:, None] * w) @ Rwc  # camera frame (m)
                off_px = off[:, :2] * (K[0, 0] / np.maximum(tc, 1e-9))[:, None]
                outward = (off_px * far_dir[c]).sum(1)  # px toward the far side
                hit = (ok & (tc >= t1[c]) & (tc <= t2[c]) & (np.linalg.norm(off, axis=1) < eps_per_m * tc)
                       & (outward < eps_out_px) & (s > 0) & (s < L - margin_m))
                np.add.at(counts, c[hit], 1)
    out[py, px] = counts
    return out


def _beam_toward(rays: SweepRays, column_poses: np.ndarray, points: np.ndarray, iterations: int = 3):
    """(elevation, azimuth (rad), k) of world ``points`` (N, 3) seen by one frame (``column_poses`` (W, 3, 4)
    float64) from a point of the ray of the beam that points at them; the beams just below and above are rows
    ``rays.rows_by_altitude[k - 1]`` and ``[k]``. The column and beam are refined ``iterations`` times, with the
    pose of that column (its firing time) and a point of that beam's ray (the beam origins lie on a circle)."""
    H, W = rays.directions.shape[:2]
    order, alt_sorted = rays.rows_by_altitude, rays.altitude_sorted
    col = np.full(len(points), W // 2)
    row = np.full(len(points), H // 2)
    for _ in range(iterations):
        R, t = column_poses[col, :, :3], column_poses[col, :, 3]
        rel = np.einsum("cji,cj->ci", R, points - t) - rays.offsets[row, col]  # sensor frame at the column's time
        el = np.arcsin(np.clip(rel[:, 2] / np.linalg.norm(rel, axis=1), -1, 1))
        k = np.searchsorted(alt_sorted, el).clip(1, H - 1)
        row = np.where(np.abs(alt_sorted[k - 1] - el) < np.abs(alt_sorted[k] - el), order[k - 1], order[k])
        az = np.arctan2(rel[:, 1], rel[:, 0])
        col = np.round((az - rays.azimuth0[row]) / rays.azimuth_step[row]).astype(np.int64) % W
    return el, az, k


def _closest_approach(o: np.ndarray, u: np.ndarray, centre: np.ndarray, w: np.ndarray):
    """(s, t, ok): the parameters of the closest points of the lines ``o + s u`` (unit ``u``; s in m) and
    ``centre + t w`` (w per metre of depth: t is the depth), each (N,); ok False where they are parallel."""
    p0 = o - centre
    b = (u * w).sum(1)
    cw = (w * w).sum(1)
    du = (u * p0).sum(1)
    dw = (w * p0).sum(1)
    den = cw - b * b
    ok = den > 1e-12
    den = np.where(ok, den, 1.0)
    return np.where(ok, (b * dw - cw * du) / den, 0.0), np.where(ok, (dw - b * du) / den, 0.0), ok


def far_side_depth(depth: np.ndarray, jump_rel: float = 0.05) -> np.ndarray:
    """(H, W) float32: per pixel of ``depth`` (m, 0 = invalid) the mean depth of its 8-neighbours farther than it
    by more than ``jump_rel`` (the surface behind a near-side edge pixel), 0 where none is."""
    D = np.asarray(depth, dtype=np.float32)
    total = np.zeros(D.shape, np.float64)
    count = np.zeros(D.shape, np.int32)
    for _, _, q, far in farther_neighbours(D, jump_rel):
        total += np.where(far, q, 0)
        count += far
    return np.where(count > 0, total / np.maximum(count, 1), 0).astype(np.float32)
