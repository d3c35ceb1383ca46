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

:func:`slide_along_rays` does the same for the points away from the edges, without losing their noise: each slides
along its sensor ray to where the ray meets the first map's surface (where it was measured, up to the noise along
the surface) and then along the camera ray through that point by its distance from the surface. A plane fit to the
points then sees each one at the right pixel: on a curved surface such as the near pole (0.8 mm pixels at 0.5 m,
sweep rays 20-40 deg off the camera's) the sideways shift of 1 cm range noise is 4-8 px.

:func:`partial_edge_points` then finds the pixels on the near side of a depth edge that the near surface covers
less than half of: their centre rays see the surface behind. A straight edge through a pixel's centre splits the
pixel into two equal halves, so a near surface covers the centre exactly when it covers more than half of the
pixel, measured as its points' (view-weighted) density in the pixel against that of its pixels away from the edge.
The near surface's points in those pixels are dropped and the projection is run a third time.

:func:`near_speckle_points` also drops, before that third projection, the points of small isolated patches that
read much nearer than everything around them: single noisy returns of a near object scattered a few pixels to
its side (range noise along a sensor ray seen from the side: 1-3 cm at 0.5 m is 5-20 px there) that win their
pixels over the surface behind.
"""

from __future__ import annotations

import cv2
import numpy as np

from .planes import pixel_planes
from .grid import shift_fill, window_offsets
from .project import depth_edge_band, project_points

_NO_DEPTH = -32768  # int16 code of an empty pixel for cv2.filterSpeckles


def _points_with_frames(points_cam: np.ndarray, frame_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 3) float32, frame index (N,)), or a ValueError naming both shapes."""
    P = np.asarray(points_cam, dtype=np.float32)
    frame_index = np.asarray(frame_index)
    if P.ndim != 2 or P.shape[1] != 3 or frame_index.shape != (len(P),):
        raise ValueError(f"points {P.shape} must be (N, 3) and frame_index {frame_index.shape} (N,)")
    return P, frame_index


def _sensor_rays(points: np.ndarray, sensor_positions_cam: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """(N, 3) float32 unit directions from each point's sensor position (``sensor_positions_cam[frames]``) to it."""
    ray = points - np.asarray(sensor_positions_cam, dtype=np.float32)[frames]
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    return ray


def _within(mask: np.ndarray, px: int) -> np.ndarray:
    """(H, W) bool: the pixels within ``px`` (square neighbourhood) of a True pixel of ``mask``."""
    size = 2 * px + 1
    return cv2.dilate(mask.astype(np.uint8), np.ones((size, size), np.uint8)) > 0


def snap_edge_points(points_cam: np.ndarray, sensor_positions_cam: np.ndarray, frame_index: np.ndarray,
                     depth: np.ndarray, K: np.ndarray, zone_px: int = 3, radius_px: int = 4,
                     max_move_m: float = 0.03, jump_rel: float = 0.05, land_px: float = 2.5,
                     front_gate_rel: float = 0.01, front_gate_m: float = 0.01, front_same_rel: float = 0.02,
                     front_min_similar: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """(points (N, 3) float32, keep (N,) bool): ``points_cam`` (camera frame, m) with the points that project
    within ``zone_px`` of a depth edge of ``depth`` (m, 0 = invalid; project.depth_edge_band) moved along
    their rays from their sensor positions (``sensor_positions_cam[frame_index]``, (F, 3) and (N,)) onto the
    nearest plane of a non-edge pixel within ``radius_px`` (the intersection must land within ``land_px`` of that
    pixel: the edge band is 1 px wide on each side, so a background point in a pixel that the first map gave to
    the near surface needs the plane of a pixel 2 px away. A near surface's spilled point may then land up to
    ``land_px`` past its silhouette: :func:`partial_edge_points` takes those pixels back). Twin, within 0.5 %,
    1 -> 2.5 px (with the view cloud and partial_edge_points): kitchen01 96.6 -> 97.6 %, office03 95.8 -> 96.9 %.
    ``keep`` is False for those that no plane explains within ``max_move_m``, unless the point is the front
    surface ``depth`` shows at its own pixel (within ``front_gate_rel`` x depth + ``front_gate_m``) and that
    pixel continues a surface (``front_min_similar`` of its 8 neighbours within ``front_same_rel`` of its depth;
    mixed returns between two surfaces, which can be a pixel's front too, scatter in range and continue
    nothing): it then stays where it is. That is the rim of a curved near surface, a pole seen by the sweep from
    far to the side (lidar and camera rays 65 deg apart on kitchen01's): along those rays no plane of the
    pixels inside lands near it, and without it the rim pixels read the wall behind. Twin, within 0.5 % /
    AbsRel: kitchen01 97.78 -> 97.89 % / 1.25 -> 1.05 %, office03 97.00 -> 97.08 % / 2.94 -> 2.47 %. All
    other points are returned unchanged and kept."""
    P, frame_index = _points_with_frames(points_cam, frame_index)
    H, W = depth.shape
    band = depth_edge_band(depth, jump_rel)
    zone = _within(band, zone_px)
    plane_pt, plane_n = pixel_planes(depth, K, jump_rel)
    plane_pt[band] = np.nan  # edge pixels: which surface they show is what is in question
    fx, fy, cx, cy = (np.float32(x) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2]))
    lin, z, idx = project_points(P, K, W, H, index=True)  # the pixels the z-buffer put the points in
    in_zone = zone.ravel()[lin]
    lin, z, idx = lin[in_zone], z[in_zone], idx[in_zone]
    out = P.copy()
    keep = np.ones(len(P), bool)
    if idx.size == 0:
        return out, keep
    p = P[idx]
    ray = _sensor_rays(p, sensor_positions_cam, frame_index[idx])
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
                ok &= np.isfinite(s) & (hit[:, 2] > 0) & (np.abs(lu - qu) <= land_px) & (np.abs(lv - qv) <= land_px)
            s = np.where(ok, s, np.inf)
            best = np.where(np.abs(s) < np.abs(best), s, best)
    moved = np.abs(best) <= max_move_m
    out[idx[moved]] = p[moved] + best[moved, None] * ray[moved]
    shown = depth.ravel()[lin]
    similar = np.zeros((H, W), np.int32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                q = shift_fill(depth, dy, dx, 0.0)
                similar += (q > 0) & (np.abs(q - depth) < front_same_rel * depth)
    front = ((shown > 0) & (np.abs(z - shown) <= front_gate_rel * shown + front_gate_m)
             & (similar.ravel()[lin] >= front_min_similar))
    keep[idx[~moved & ~front]] = False
    return out, keep


def slide_along_rays(points_cam: np.ndarray, sensor_positions_cam: np.ndarray, frame_index: np.ndarray,
                     depth: np.ndarray, K: np.ndarray, zone_px: int = 1, max_move_m: float = 0.03,
                     jump_rel: float = 0.05, front_gate_rel: float = 0.02, iterations: int = 3) -> np.ndarray:
    """(N, 3) float32: ``points_cam`` (camera frame, m) with each point of a pixel of ``depth`` (m, 0 = invalid)
    farther than ``zone_px`` from its depth edges (project.depth_edge_band) and within ``front_gate_rel`` x depth
    of it moved to where its ray from its sensor position (``sensor_positions_cam[frame_index]``) meets the map's
    surface, then along the camera ray through that point by the point's distance from the surface (its offset
    along the surface normal is kept; for a plane the move only undoes the sideways shift of its range noise).
    The surface is the tangent plane of the pixel the intersection lands in (``iterations`` times from the point's
    own pixel; planes.pixel_planes); points whose ray meets it more than ``max_move_m`` away, or lands on an edge
    pixel, or more than 1 px from the last plane's pixel, stay where they are. Twin, after edge snapping, within
    0.5 % / AbsRel of the best 99 %: kitchen01 98.42 -> 98.49 % / 0.048 -> 0.047 %, kitchen02 97.87 -> 97.90 /
    0.056 -> 0.054, office03 97.49 -> 97.56 / 0.136 -> 0.133, hallway02 97.83 -> 97.89 / 0.081 -> 0.079."""
    P, frame_index = _points_with_frames(points_cam, frame_index)
    H, W = depth.shape
    edge = _within(depth_edge_band(depth, jump_rel), zone_px)
    plane_pt, plane_n = (a.reshape(-1, 3) for a in pixel_planes(depth, K, jump_rel))
    usable = (~edge & (depth > 0)).ravel() & np.isfinite(plane_pt[:, 0])
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    lin, z, idx = project_points(P, K, W, H, index=True)
    shown = depth.ravel()[lin]
    sel = usable[lin] & (np.abs(z - shown) <= front_gate_rel * shown)
    lin, idx = lin[sel], idx[sel]
    out = P.copy()
    if idx.size == 0:
        return out
    p = P[idx]
    ray = _sensor_rays(p, sensor_positions_cam, frame_index[idx])

    def meet(pix):  # (distance along the ray to the tangent plane of pixel pix, the point there, its u, v)
        n = plane_n[pix]
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.einsum("ij,ij->i", n, plane_pt[pix] - p) / np.einsum("ij,ij->i", n, ray)
            q = p + s[:, None] * ray
            return s, q, q[:, 0] / q[:, 2] * fx + cx, q[:, 1] / q[:, 2] * fy + cy

    pix = lin
    for _ in range(iterations):
        s, q, qu, qv = meet(pix)
        ok = (q[:, 2] > 0) & (qu > -0.5) & (qu < W - 0.5) & (qv > -0.5) & (qv < H - 0.5)  # False where nan
        landed = np.where(ok, np.rint(np.where(ok, qv, 0)).astype(np.intp) * W
                          + np.rint(np.where(ok, qu, 0)).astype(np.intp), pix)
        pix = np.where(ok & usable[landed], landed, pix)
    s, q, qu, qv = meet(pix)
    n = plane_n[pix]
    with np.errstate(divide="ignore", invalid="ignore"):
        cam_ray = q / np.linalg.norm(q, axis=1, keepdims=True)
        along = -s * np.einsum("ij,ij->i", n, ray) / np.einsum("ij,ij->i", n, cam_ray)  # the point's normal offset
        moved = q + along[:, None] * cam_ray
    move = (np.isfinite(moved).all(axis=1) & (np.abs(s) <= max_move_m) & (np.abs(qu - pix % W) <= 1.0)
            & (np.abs(qv - pix // W) <= 1.0))
    out[idx[move]] = moved[move]
    return out


def partial_edge_points(points_cam: np.ndarray, weights: np.ndarray | None, depth: np.ndarray, K: np.ndarray,
                        ratio: float = 0.5, radius_px: int = 4, jump_rel: float = 0.05, gate_rel: float = 0.01,
                        gate_m: float = 0.02, same_rel: float = 0.02, min_pixels: int = 3) -> np.ndarray:
    """(N,) bool: the points of ``points_cam`` (camera frame, m; ``weights`` (N,) or None) on the near surface of
    pixels that it covers less than ``ratio`` of. Such a pixel of ``depth`` (m, 0 = invalid; intrinsics ``K``)
    has an 8-neighbour farther by more than ``jump_rel``, holds points behind it, and its points within
    ``gate_rel`` x depth + ``gate_m`` of its depth weigh less than ``ratio`` x the mean of the same surface's pixels
    (depth within ``same_rel``) within ``radius_px`` that are not at such an edge (at least ``min_pixels`` of
    them)."""
    H, W = depth.shape
    D = np.asarray(depth, dtype=np.float32)
    lin, z, idx, Dz, near = _points_on_map(points_cam, D, K, gate_rel, gate_m)
    w = np.ones(len(z), np.float32) if weights is None else np.asarray(weights, dtype=np.float32)[idx]
    support = np.bincount(lin[near], weights=w[near], minlength=H * W).reshape(H, W)
    behind = np.bincount(lin[(Dz > 0) & (z > Dz * (1 + jump_rel))], minlength=H * W).reshape(H, W)
    edge = near_edge_pixels(D, jump_rel)
    total = np.zeros((H, W), np.float32)
    count = np.zeros((H, W), np.float32)
    for dy, dx in window_offsets(radius_px):
        q = shift_fill(D, dy, dx, 0.0)
        same = (q > 0) & (np.abs(q - D) <= same_rel * D) & ~shift_fill(edge, dy, dx, True)
        total += np.where(same, shift_fill(support, dy, dx, 0.0), 0)
        count += same
    partial = edge & (count >= min_pixels) & (behind > 0) & (support < ratio * total / np.maximum(count, 1))
    out = np.zeros(len(points_cam), bool)
    out[idx[near & partial.ravel()[lin]]] = True
    return out


def near_edge_pixels(depth: np.ndarray, jump_rel: float = 0.05) -> np.ndarray:
    """(H, W) bool: the valid pixels of ``depth`` (m, 0 = invalid) with an 8-neighbour farther by more than
    ``jump_rel``: the near side of depth edges."""
    edge = np.zeros(np.shape(depth), bool)
    for _, _, _, far in farther_neighbours(depth, jump_rel):
        edge |= far
    return edge


def farther_neighbours(depth: np.ndarray, jump_rel: float = 0.05):
    """Yields (dy, dx, neighbour depth (H, W), mask (H, W) bool) for each of the 8 neighbour offsets: the
    depth at (y + dy, x + dx) (0 outside the map) and the valid pixels of ``depth`` it is farther than by more
    than ``jump_rel``."""
    D = np.asarray(depth, dtype=np.float32)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                q = shift_fill(D, dy, dx, 0.0)
                yield dy, dx, q, (D > 0) & (q > D * (1 + jump_rel))


def speckle_pixels(depth: np.ndarray, max_size_px: int = 8, diff_rel: float = 0.02, near_rel: float = 0.05,
                   keep_radius_px: int = 2) -> np.ndarray:
    """(H, W) bool: the pixels of ``depth`` (m, 0 = invalid) in connected patches of at most ``max_size_px``
    pixels (neighbours within ``diff_rel`` of each other's depth; cv2.filterSpeckles on log depth) that read
    more than ``near_rel`` nearer than the mean of the other pixels in their 5 x 5 window, and have no pixel of
    a larger patch within 5 % of their depth within ``keep_radius_px`` (a fragment of a sparsely sampled near
    object, next to the rest of it, stays)."""
    D = np.asarray(depth, dtype=np.float32)
    valid = D > 0
    code = np.full(D.shape, _NO_DEPTH, np.int16)
    code[valid] = np.clip(np.round(np.log(D[valid]) * 1000.0), -32000, 32000).astype(np.int16)  # 1 unit = 0.1 %
    patches = code.copy()
    cv2.filterSpeckles(patches, _NO_DEPTH + 1, int(max_size_px), int(round(diff_rel * 1000.0)))
    speckle = valid & (patches == _NO_DEPTH + 1)
    others = np.where(speckle | ~valid, np.float32(0), D)
    around = cv2.boxFilter(others, -1, (5, 5), normalize=False, borderType=cv2.BORDER_CONSTANT)
    count = cv2.boxFilter((others > 0).astype(np.float32), -1, (5, 5), normalize=False, borderType=cv2.BORDER_CONSTANT)
    speckle &= (count > 0) & (D < (1.0 - near_rel) * around / np.maximum(count, 1))
    for dy, dx in window_offsets(keep_radius_px):
        q = shift_fill(others, dy, dx, 0.0)
        speckle &= ~((q > 0) & (np.abs(q - D) <= 0.05 * D))
    return speckle


def near_speckle_points(points_cam: np.ndarray, depth: np.ndarray, K: np.ndarray, gate_rel: float = 0.01,
                        gate_m: float = 0.02, **speckle_kw) -> tuple[np.ndarray, int]:
    """((N,) bool, pixels): the points of ``points_cam`` (camera frame, m) within ``gate_rel`` x depth + ``gate_m``
    of the depth of the :func:`speckle_pixels` of ``depth`` (intrinsics ``K``) they project into, and how many
    such pixels there are."""
    H, W = depth.shape
    speckle = speckle_pixels(depth, **speckle_kw)
    out = np.zeros(len(points_cam), bool)
    if not speckle.any():
        return out, 0
    lin, _, idx, _, near = _points_on_map(points_cam, np.asarray(depth, dtype=np.float32), K, gate_rel, gate_m)
    out[idx[speckle.ravel()[lin] & near]] = True
    return out, int(speckle.sum())


def _points_on_map(points_cam: np.ndarray, depth: np.ndarray, K: np.ndarray, gate_rel: float, gate_m: float):
    """(lin, z, idx, map depth at lin, near): project.project_points of ``points_cam`` into ``depth`` (float32)
    and which of them lie within ``gate_rel`` x depth + ``gate_m`` of the map's (valid) depth of their pixel."""
    H, W = depth.shape
    lin, z, idx = project_points(points_cam, K, W, H, index=True)
    Dz = depth.ravel()[lin]
    return lin, z, idx, Dz, (Dz > 0) & (np.abs(z - Dz) <= gate_rel * Dz + gate_m)
