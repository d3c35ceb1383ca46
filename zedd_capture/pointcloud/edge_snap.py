"""Points near depth edges moved onto the surfaces around them, along their sensor rays.

Range noise (1-3 cm on the OS0-128) moves a point along the ray of the sensor that measured it. Seen
from the camera, a ray of a sweep position off to the side turns that into a sideways shift: the points
of a near surface spill past its silhouette into the pixels of the surface behind, mixed returns sit
between the two, and the first projection puts the edge in the wrong place.

:func:`snap_edge_points` takes the first depth map, keeps its pixels away from depth edges as local
planes (depth and its gradient per pixel), and moves every point within ``zone_px`` of an edge along its
sensor ray onto the nearest of the planes within ``radius_px`` of its pixel: a spilled point goes back
onto its own surface, where the ray meets it. A point that no plane explains within ``max_move_m`` is
dropped (a mixed return, a far noise tail). The projection is then run again on the result.
"""

from __future__ import annotations

import cv2
import numpy as np

from .planes import pixel_planes
from .project import depth_edge_band, project_points


def snap_edge_points(points_cam: np.ndarray, sensor_positions_cam: np.ndarray, frame_index: np.ndarray,
                     depth: np.ndarray, K: np.ndarray, zone_px: int = 3, radius_px: int = 4,
                     max_move_m: float = 0.03, jump_rel: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 3) float32, keep (N,) bool): ``points_cam`` (camera frame, m) with the points that project
    within ``zone_px`` of a depth edge of ``depth`` (m, 0 = invalid; project.depth_edge_band) moved along
    their rays from their sensor positions (``sensor_positions_cam[frame_index]``, (F, 3) and (N,)) onto the
    nearest plane of a non-edge pixel within ``radius_px`` (the intersection must land within 1 px of that
    pixel); ``keep`` is False for those that no plane explains within ``max_move_m``. All other points are
    returned unchanged and kept."""
    P = np.asarray(points_cam, dtype=np.float32)
    frame_index = np.asarray(frame_index)
    if P.ndim != 2 or P.shape[1] != 3 or frame_index.shape != (len(P),):
        raise ValueError(f"points {P.shape} must be (N, 3) and frame_index {frame_index.shape} (N,)")
    H, W = depth.shape
    band = depth_edge_band(depth, jump_rel)
    size = 2 * zone_px + 1
    zone = cv2.dilate(band.astype(np.uint8), np.ones((size, size), np.uint8)) > 0
    plane_pt, plane_n = pixel_planes(depth, K, jump_rel)
    plane_pt[band] = np.nan  # edge pixels: which surface they show is what is in question
    fx, fy, cx, cy = (np.float32(x) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    lin, _, idx = project_points(P, K, W, H, index=True)  # the pixels the z-buffer put the points in
    in_zone = zone.ravel()[lin]
    lin, idx = lin[in_zone], idx[in_zone]
    out = P.copy()
    keep = np.ones(len(P), bool)
    if idx.size == 0:
        return out, keep
    p = P[idx]
    ray = p - np.asarray(sensor_positions_cam, dtype=np.float32)[frame_index[idx]]
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    pu, pv = (lin % W).astype(np.intp), (lin // W).astype(np.intp)
    best = np.full(len(idx), np.inf, dtype=np.float32)
    r2 = radius_px * radius_px
    for dy in range(-radius_px, radius_px + 1):
        for dx in range(-radius_px, radius_px + 1):
            if dx * dx + dy * dy > r2:
                continue
            qu, qv = pu + dx, pv + dy
            ok = (qu >= 0) & (qu < W) & (qv >= 0) & (qv < H)
            qu, qv = np.clip(qu, 0, W - 1), np.clip(qv, 0, H - 1)
            n, x0 = plane_n[qv, qu], plane_pt[qv, qu]
            with np.errstate(divide="ignore", invalid="ignore"):
                s = np.einsum("ij,ij->i", n, x0 - p) / np.einsum("ij,ij->i", n, ray)
                hit = p + s[:, None] * ray
                lu = hit[:, 0] / hit[:, 2] * fx + cx
                lv = hit[:, 1] / hit[:, 2] * fy + cy
                ok &= np.isfinite(s) & (hit[:, 2] > 0) & (np.abs(lu - qu) <= 1.0) & (np.abs(lv - qv) <= 1.0)
            s = np.where(ok, s, np.inf)
            best = np.where(np.abs(s) < np.abs(best), s, best)
    moved = np.abs(best) <= max_move_m
    out[idx[moved]] = p[moved] + best[moved, None] * ray[moved]
    keep[idx[~moved]] = False
    return out, keep
