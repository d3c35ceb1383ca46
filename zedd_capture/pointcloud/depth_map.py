"""Build-depth's projection stage: the camera-frame cloud -> the depth map (z-buffer passes with the points at depth
edges snapped, slid and dropped between them, the free-space test, the plane-read upsampling, the edge mask).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy.ndimage import binary_dilation

from ..geometry import scale_intrinsics
from .config import BuildConfig
from .edge_snap import near_edge_pixels, near_speckle_points, partial_edge_points, slide_along_rays, snap_edge_points
from .free_space import SweepRays, far_side_depth, free_space_violations
from .planes import upsample_depth
from .project import depth_edge_band, view_weights, zbuffer


def project_depth(points_cam: np.ndarray, sensor_positions_cam: np.ndarray, frame_index: np.ndarray | None,
                  K: np.ndarray, width: int, height: int, splat_radius_px: int, cfg: BuildConfig,
                  progress: Callable[[int, int], None] | None = None, rays: SweepRays | None = None,
                  T_world_camera: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(depth (height, width) float32 m, 0 = invalid; stats) from the camera-frame cloud ``points_cam`` (N, 3).

    1. z-buffer projection with intrinsics ``K`` at the working size (``cfg.projection_width_px``);
    2. the points near depth edges snapped and the others slid along their sensor rays onto the surface
       (``cfg.edge_snap_*``, ``cfg.slide_*``; needs ``frame_index`` (N,) into ``sensor_positions_cam`` (F, 3)),
       projected again;
    3. the near surface's points dropped from the edge pixels it covers less than ``cfg.edge_coverage_ratio`` of,
       and those of near speckles (``cfg.speckle_max_px``), projected a third time;
    4. with the sweep's ``rays`` (free_space.SweepRays, world frame; camera pose ``T_world_camera``): the near-side
       edge pixels that ``cfg.free_space_min_rays`` rays went through take the surface behind
       (``cfg.free_space_rounds`` times);
    5. read at (width, height) from each working pixel's plane (planes.upsample_depth); edge bands
       (``cfg.edge_band_width_px`` wide) zeroed if ``cfg.mask_edge_band``.
    """
    report = progress or (lambda *a: None)
    if rays is not None and T_world_camera is None:
        raise ValueError("project_depth: the free-space test needs the camera pose (T_world_camera)")
    factor = working_factor(width, height, cfg.projection_width_px)
    Ww, Hw = width // factor, height // factor
    # the splat radius in working pixels: rounded up, and at least 2 (the sim rig's, where the fill was tuned at
    # 456 x 304) unless the rig asks for less. Twin, kitchen01 at 1824 x 1216 (r = 3): working radius 1 left
    # holes of 6.3 px, 2 leaves 2.8 px
    radius_w = max(-(-splat_radius_px // factor), min(splat_radius_px, 2))
    K_w = scale_intrinsics(K, (width, height), (Ww, Hw))
    report(0, 2)
    pc = np.asarray(points_cam, dtype=np.float32)
    zcfg = cfg.zbuffer_config()
    depth = zbuffer(pc, K_w, Ww, Hw, radius_w, zcfg, point_view_weights(pc, sensor_positions_cam, frame_index, cfg))
    snapped = dropped = slid = partial = speckle_px = speckle_points = carved_px = 0
    if cfg.edge_snap_radius_px > 0 and frame_index is not None:
        report(1, 2)
        snapped_pc, keep = snap_edge_points(pc, sensor_positions_cam, frame_index, depth, K_w,
                                            zone_px=cfg.edge_snap_zone_px, radius_px=cfg.edge_snap_radius_px,
                                            max_move_m=cfg.edge_snap_max_m, jump_rel=cfg.edge_band_jump_rel,
                                            land_px=cfg.edge_snap_land_px)
        snapped = int(np.count_nonzero(np.any(snapped_pc != pc, axis=1)))
        if cfg.slide_max_m > 0:
            slid_pc = slide_along_rays(snapped_pc, sensor_positions_cam, frame_index, depth, K_w,
                                       zone_px=cfg.slide_zone_px, max_move_m=cfg.slide_max_m,
                                       jump_rel=cfg.edge_band_jump_rel)
            slid = int(np.count_nonzero(np.any(slid_pc != snapped_pc, axis=1)))
            snapped_pc = slid_pc
        dropped = int(len(pc) - np.count_nonzero(keep))
        pc, kept_frames = snapped_pc[keep], frame_index[keep]
        del snapped_pc, keep
        weights = point_view_weights(pc, sensor_positions_cam, kept_frames, cfg)
        second = zbuffer(pc, K_w, Ww, Hw, radius_w, zcfg, weights)
        depth = np.where(second > 0, second, depth)  # a pixel whose points were all dropped keeps its first value
        drop = np.zeros(len(pc), bool)
        if cfg.edge_coverage_ratio > 0:
            drop = partial_edge_points(pc, weights, depth, K_w, ratio=cfg.edge_coverage_ratio,
                                       jump_rel=cfg.edge_band_jump_rel)
            partial = int(np.count_nonzero(drop))
        if cfg.speckle_max_px > 0:
            speckle_drop, speckle_px = near_speckle_points(pc, depth, K_w, max_size_px=cfg.speckle_max_px)
            speckle_points = int(np.count_nonzero(speckle_drop & ~drop))
            drop |= speckle_drop
            del speckle_drop
        if drop.any():
            keep = ~drop
            third = zbuffer(pc[keep], K_w, Ww, Hw, radius_w, zcfg, None if weights is None else weights[keep])
            depth = np.where(third > 0, third, depth)
            del third, keep
        del drop
        del second, weights
    del pc
    if rays is not None and cfg.free_space_min_rays > 0:
        for _ in range(cfg.free_space_rounds):
            counts = free_space_violations(depth, K_w, T_world_camera, near_edge_pixels(depth, cfg.edge_band_jump_rel),
                                           rays, eps_px=cfg.free_space_eps_px, eps_out_px=cfg.free_space_eps_out_px,
                                           jump_rel=cfg.edge_band_jump_rel)
            # where the far side is more than twice as far, a wrong carve costs more than 100 % relative error
            # and a right one gains less: ask for more rays there
            deep = near_edge_pixels(depth, 1.0)
            carved = counts >= np.where(deep, cfg.free_space_deep_min_rays, cfg.free_space_min_rays)
            if not carved.any():
                break
            carved_px += int(carved.sum())
            depth = np.where(carved, far_side_depth(depth, cfg.edge_band_jump_rel), depth)
    depth = upsample_depth(depth, K_w, factor, K)
    band = depth_edge_band(depth, cfg.edge_band_jump_rel)
    if cfg.mask_edge_band:
        wide = binary_dilation(band, np.ones((3, 3), bool), iterations=cfg.edge_band_width_px - 1) \
            if cfg.edge_band_width_px > 1 else band
        depth = np.where(wide, np.float32(0), depth)
    report(2, 2)
    return depth, {"projection_size": [Ww, Hw], "projection_splat_radius_px": radius_w,
                   "edge_band_fraction": float(band.mean()),
                   "edge_snap": {"radius_px": cfg.edge_snap_radius_px, "zone_px": cfg.edge_snap_zone_px,
                                 "max_m": cfg.edge_snap_max_m, "snapped": snapped, "dropped": dropped},
                   "slide": {"max_m": cfg.slide_max_m, "zone_px": cfg.slide_zone_px, "moved": slid},
                   "edge_coverage": {"ratio": cfg.edge_coverage_ratio, "dropped": partial},
                   "speckles": {"max_px": cfg.speckle_max_px, "pixels": speckle_px, "dropped": speckle_points},
                   "free_space": {"min_rays": cfg.free_space_min_rays, "carved_pixels": carved_px}}


def working_factor(width: int, height: int, working_width: int | None) -> int:
    """The integer the depth map's (width, height) is divided by for the projection: about width /
    working_width, lowered until it divides both; 1 when working_width is None or not smaller."""
    if working_width is None or width <= working_width:
        return 1
    f = max(1, round(width / working_width))
    while f > 1 and (width % f or height % f):
        f -= 1
    return f


def point_view_weights(pc: np.ndarray, origins_c: np.ndarray, frames: np.ndarray | None,
                       cfg: BuildConfig) -> np.ndarray | None:
    """project.view_weights of every point (camera frame) from its frame's sensor position, or None (off / no
    frame index)."""
    if cfg.view_weight_power is None or frames is None:
        return None
    weights = np.empty(len(pc), dtype=np.float32)
    for a in range(0, len(pc), 1 << 21):  # chunks: no (N, 3) origins array
        b = a + (1 << 21)
        weights[a:b] = view_weights(pc[a:b], origins_c[frames[a:b]], cfg.view_weight_power, cfg.view_weight_floor)
    return weights
