"""``zedd build-depth --reproject``: run only the projection of a finished build again.

The projection's inputs are rebuilt from the build's own files in work/ (view_cloud.ply, or world_cloud.ply in
paper mode; trajectory.tum; build_depth.json) and, for the free-space test, the sweep recording; the cleanup
regions of work/cleanup.yaml are applied again. Reading, aggregating and registering the sweep are skipped
(twin kitchen01: ~30 s instead of ~2 min), so projection settings and cleanup regions can be tried quickly.
The settings of the stages before the projection (:data:`UPSTREAM`) must be those of the build.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..geometry import invert, read_tum, scale_intrinsics
from ..layout import CalibrationLayout, SceneLayout
from .aggregate import AggregateConfig
from .cleanup import cleanup_mask, load_regions
from .free_space import SweepRays
from .io import read_lidar
from .config import BuildConfig, BuildDepthError, checked
from .depth_map import project_depth
from .pipeline import (BuildSummary, StageProgress, _json_default, free_space_rays, frames_with_returns,
                       lidar_expectations, load_camera_calibration, read_ply, sensor_origins, splat_radius, to_camera)

# BuildConfig fields that act before the projection: a reprojection keeps the build's
UPSTREAM = ("aggregate", "register", "max_frames", "edge_jump_m", "view_cloud", "view_margin_frac", "include_static")


@dataclass
class ProjectionInputs:
    """The arguments build-depth's projection stage gave :func:`depth_map.project_depth`."""

    points_cam: np.ndarray  # (N, 3) float32 m: the projected cloud (after cleanup) in the camera frame
    sensor_positions_cam: np.ndarray  # (F + 1, 3) float32 m: each sweep frame's lidar position, then the static's
    frame_index: np.ndarray  # (N,) int: each point's row of sensor_positions_cam
    K: np.ndarray  # 3x3 intrinsics of the depth map
    width: int
    height: int
    T_world_camera: np.ndarray  # 4x4
    rays: SweepRays | None  # the sweep's returns (world frame) for the free-space test; None when not asked for
    build_log: dict  # the build's build_depth.json
    cleanup_removed: dict  # points removed now by region name (regions of work/cleanup.yaml; the build's clouds are
    # already clean of those it had)


def read_build_log(root: Path, scene: str) -> dict:
    """work/build_depth.json of ``scene``'s last build; :class:`BuildDepthError` naming the file when it is missing,
    not JSON, or lacks what a reprojection needs."""
    path = SceneLayout(Path(root), scene).build_log_path
    try:
        build_log = json.loads(path.read_text())
    except FileNotFoundError:
        raise BuildDepthError(f"{path}: missing: run zedd build-depth --scene {scene} before --reproject") from None
    except (OSError, ValueError) as e:
        raise BuildDepthError(f"{path}: not a build-depth log ({e})") from None
    try:
        for key in ("T_camera_world", "T_world_static", "K", "frames", "points", "fitness", "rmse_m"):
            build_log[key]
        build_log["stats"]["config"]["aggregate"]
        build_log["stats"]["view"]
    except (KeyError, TypeError) as e:
        raise BuildDepthError(f"{path}: lacks {e} (written by an older build-depth? build again)") from None
    return build_log


def load_projection_inputs(rig, root: Path, scene: str, with_rays: bool = True,
                           build_log: dict | None = None) -> ProjectionInputs:
    """:class:`ProjectionInputs` of the last build of ``scene`` under ``root`` (rig: a loaded Rig; ``build_log``: its
    :func:`read_build_log`, read when None). Raises :class:`BuildDepthError` naming the file that is missing,
    unreadable or does not match the others."""
    layout = SceneLayout(Path(root), scene)
    log_path = layout.build_log_path
    build_log = read_build_log(root, scene) if build_log is None else build_log
    T_camera_world = np.asarray(build_log["T_camera_world"], dtype=np.float64).reshape(4, 4)
    T_world_static = np.asarray(build_log["T_world_static"], dtype=np.float64).reshape(4, 4)
    K = np.asarray(build_log["K"], dtype=np.float64).reshape(3, 3)
    logged = build_log["stats"]["config"]
    projected_view = build_log["stats"]["view"] is not None
    cloud_path = layout.view_cloud_path if projected_view else layout.world_cloud_path
    if not cloud_path.is_file():
        raise BuildDepthError(f"{cloud_path}: missing: --reproject needs the build's clouds (build with "
                              "write_cloud on, the default)")
    ply = read_ply(cloud_path)
    if "frame" not in ply:
        raise BuildDepthError(f"{cloud_path}: no per-point frame index (written by an older build-depth? build again)")
    try:
        times, poses = read_tum(layout.trajectory_path)
    except (OSError, ValueError) as e:
        raise BuildDepthError(f"{layout.trajectory_path}: {e}") from None
    frame_index = ply["frame"].astype(np.int64)
    if len(frame_index) and (frame_index.min() < 0 or frame_index.max() > len(poses)):
        raise BuildDepthError(f"{cloud_path}: frame indices up to {frame_index.max()}, but {layout.trajectory_path} "
                              f"holds {len(poses)} poses (files of different builds?)")
    points_w = np.stack([ply["x"], ply["y"], ply["z"]], axis=1)
    W, H = rig.depth_map.width_px, rig.depth_map.height_px
    regions = load_regions(layout.cleanup_path)
    removed = {}
    if regions:  # the build's clouds are already cleaned; regions added since then act now
        keep, removed = cleanup_mask(points_w, regions, T_camera_world, K, (W, H), invert(T_world_static))
        points_w, frame_index = points_w[keep], frame_index[keep]
    rays = None
    if with_rays:
        sweep = read_lidar(layout.lidar_sweep_path, max_frames=logged.get("max_frames"), min_frames=2,
                           **lidar_expectations(rig, logged.get("edge_jump_m")))
        frames = frames_with_returns(sweep.frames)
        if len(frames) != len(poses):
            raise BuildDepthError(f"{layout.lidar_sweep_path}: {len(frames)} frames with returns, but "
                                  f"{layout.trajectory_path} holds {len(poses)} poses (recording changed since the build?)")
        try:
            agg_cfg = AggregateConfig(**logged["aggregate"])
        except TypeError as e:
            raise BuildDepthError(f"{log_path}: stats.config.aggregate: {e} (build again)") from None
        rays = free_space_rays(frames, times, poses, agg_cfg, sweep)
    return ProjectionInputs(points_cam=to_camera(points_w, T_camera_world),
                            sensor_positions_cam=to_camera(sensor_origins(poses, T_world_static), T_camera_world),
                            frame_index=frame_index, K=K, width=W, height=H, T_world_camera=invert(T_camera_world),
                            rays=rays, build_log=build_log, cleanup_removed=removed)


def _differences(now: dict, logged: dict, keys, prefix: str = ""):
    """(dotted name, value now, value logged) of the ``keys`` whose values differ; nested configs field by field."""
    for k in keys:
        a, b = now.get(k), logged.get(k) if isinstance(logged, dict) else None
        if isinstance(a, dict) and isinstance(b, dict):
            yield from _differences(a, b, sorted(set(a) | set(b)), f"{prefix}{k}.")
        elif a != b:
            yield f"{prefix}{k}", a, b


KEEPS_BUILD_CALIBRATION = "--reproject keeps the build's; build again without --reproject to use the new calibration"


def calibration_changes(rig, root: Path, build_log: dict) -> list[str]:
    """Warnings when calibration/<rig>/ no longer gives the camera the build used (``build_log``'s K and
    lidar->camera transform, T_camera_world @ T_world_static): a reprojection keeps the build's camera."""
    try:
        T_cl, K_canon, K_size, _ = load_camera_calibration(rig, root)
    except (OSError, ValueError, RuntimeError) as e:
        return [f"the calibration cannot be read now ({e}); {KEEPS_BUILD_CALIBRATION}"]
    K_now = scale_intrinsics(K_canon, K_size, (rig.depth_map.width_px, rig.depth_map.height_px))
    K_built = np.asarray(build_log["K"], dtype=np.float64).reshape(3, 3)
    T_built = (np.asarray(build_log["T_camera_world"], dtype=np.float64).reshape(4, 4)
               @ np.asarray(build_log["T_world_static"], dtype=np.float64).reshape(4, 4))
    changed = []
    if not np.allclose(K_now, K_built, rtol=1e-6, atol=1e-6):
        changed.append("intrinsics")
    if not np.allclose(T_cl, T_built, atol=1e-6):
        changed.append("lidar->camera extrinsic")
    cal_dir = CalibrationLayout(Path(root), rig.name).dir
    return [f"{cal_dir}: the {' and the '.join(changed)} changed since the build; {KEEPS_BUILD_CALIBRATION}"] if changed else []


def reproject(rig, root: Path, scene: str, config: BuildConfig | None = None, mode: str = "fast",
              progress: StageProgress | None = None) -> BuildSummary:
    """Project the last build of ``scene`` again with ``config`` (default :class:`BuildConfig`; its
    :data:`UPSTREAM` fields and ``mode`` must be the build's) and rewrite work/build_depth.json; returns the
    summary (depth map and K as :func:`pipeline.build_depth` returns them). Raises :class:`BuildDepthError`."""
    cfg = checked(config or BuildConfig())
    report = progress or (lambda *a: None)
    layout = SceneLayout(Path(root), scene)
    t0 = time.perf_counter()
    report("read", 0, 1)
    build_log = read_build_log(root, scene)
    logged = build_log["stats"]["config"]
    now = json.loads(json.dumps(asdict(cfg), default=_json_default))
    differ = [f"{name} = {a!r} (the build's: {b!r})" for name, a, b in _differences(now, logged, UPSTREAM)]
    if build_log.get("mode", "fast") != mode:
        differ.append(f"mode = {mode!r} (the build's: {build_log.get('mode')!r})")
    if differ:
        raise BuildDepthError(f"build-depth --reproject: settings of the stages before the projection differ from "
                              f"the build's ({layout.build_log_path}): {'; '.join(differ)}. Build again without "
                              "--reproject, or set them as the build did")
    inputs = load_projection_inputs(rig, root, scene, with_rays=cfg.free_space_min_rays > 0, build_log=build_log)
    report("read", 1, 1)
    timings = {"read": time.perf_counter() - t0}
    radius = splat_radius(rig, cfg)
    t1 = time.perf_counter()
    depth, project_stats = project_depth(inputs.points_cam, inputs.sensor_positions_cam, inputs.frame_index, inputs.K,
                                         inputs.width, inputs.height, radius, cfg,
                                         progress=lambda d, n: report("project", d, n), rays=inputs.rays,
                                         T_world_camera=inputs.T_world_camera)
    timings["project"] = time.perf_counter() - t1
    counts = dict(frames=int(build_log["frames"]), points=int(build_log["points"]),
                  fitness=float(build_log["fitness"]), rmse_m=float(build_log["rmse_m"]))
    earlier = build_log["stats"].get("reprojected") or {}
    stats = {**build_log["stats"], **project_stats, "splat_radius_px": radius,
             "config": {**asdict(cfg), "splat_radius_px": radius},
             "reprojected": {"build_timings_s": earlier.get("build_timings_s", build_log.get("timings_s", {})),
                             # the code that built the cloud (the log's own tool_version: the reprojection's)
                             "build_tool_version": earlier.get("build_tool_version", build_log.get("tool_version")),
                             "cleanup_removed": inputs.cleanup_removed}}
    if stats.get("view"):
        stats["view"] = {**stats["view"], "points": int(len(inputs.points_cam))}
    summary = BuildSummary(scene=scene, mode=mode, depth=depth, K=inputs.K,
                           **counts, coverage=float((depth > 0).mean()), timings_s=timings,
                           T_camera_world=np.asarray(build_log["T_camera_world"]),
                           T_world_static=np.asarray(build_log["T_world_static"]),
                           warnings=[w for w in build_log.get("warnings", []) if KEEPS_BUILD_CALIBRATION not in w]
                           + calibration_changes(rig, root, build_log),
                           stats=stats)
    report("write", 0, 1)
    summary.write_log(layout.build_log_path)
    report("write", 1, 1)
    return summary
