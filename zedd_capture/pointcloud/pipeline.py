"""``zedd build-depth``: raw lidar recordings of one scene -> metric depth map in the canonical camera.

Stages: read -> deskew + aggregate (+ density filter) -> register static frame -> view cloud (fast
mode: every frame's points in the camera's view, density-filtered) -> cleanup -> transform into the
camera frame -> z-buffer projection (:func:`.depth_map.project_depth`); every setting is a field of
:class:`.config.BuildConfig`. Cleanup regions are defined in the camera (or static lidar)
frame, the only frames stable across rebuilds, so cleanup runs right after the static frame is
registered. Writes work/trajectory.tum, work/world_cloud.ply, work/view_cloud.ply and
work/build_depth.json; the ZEDD export is :func:`zedd_capture.pointcloud.export.export_zedd`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..geometry import invert, scale_intrinsics, write_tum
from ..layout import CalibrationLayout, SceneLayout, atomic_open, atomic_write_json
from ..version import tool_version
from .aggregate import (AggregateConfig, WorldCloud, accumulate, aggregate, density_filtered, frame_index_dtype,
                        frame_motion)
from .cleanup import cleanup_mask, load_regions
from .config import BuildConfig, BuildDepthError, checked
from .depth_map import project_depth
from .free_space import SweepRays, sweep_rays
from .io import read_lidar, read_static_frame
from .project import project_points
from .register import RegisterConfig, register_static

log = logging.getLogger(__name__)

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)

STAGES = ("read", "aggregate", "register", "view", "cleanup", "project", "write")


@dataclass
class BuildSummary:
    scene: str
    mode: str
    depth: np.ndarray  # (H, W) float32 metres, 0 = invalid, canonical camera at rig.depth_map resolution
    K: np.ndarray  # 3x3 intrinsics of ``depth``
    frames: int
    points: int
    fitness: float
    rmse_m: float
    coverage: float  # fraction of depth pixels with a value
    timings_s: dict
    T_camera_world: np.ndarray
    T_world_static: np.ndarray
    warnings: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def log_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("depth",)}
        d["tool_version"] = tool_version()
        for k in ("K", "T_camera_world", "T_world_static"):
            d[k] = np.asarray(d[k]).tolist()
        return d

    def write_log(self, path: Path) -> None:
        """Write :meth:`log_dict` as JSON (work/build_depth.json), atomically."""
        atomic_write_json(path, json.loads(json.dumps(self.log_dict(), default=_json_default)))


def load_camera_calibration(rig, root: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int], list[str]]:
    """(T_camera_lidar, canonical K, K image size (w, h), warnings) from calibration/<rig>/ (or the rig's nominal values)."""
    from ..calibration.extrinsic import read_extrinsic
    from ..calibration.intrinsics import read_intrinsics

    cal = CalibrationLayout(root, rig.name)
    warnings = []
    if cal.extrinsic_path.is_file():
        T_cl = read_extrinsic(cal.extrinsic_path)
    else:
        T_cl = rig.extrinsic
        warnings.append(f"{cal.extrinsic_path} missing: using the rig's nominal lidar->camera extrinsic")
    if cal.intrinsics_path.is_file():
        intr = read_intrinsics(cal.intrinsics_path)
        K, size = intr.K, (intr.width, intr.height)
    else:
        size = (rig.camera.width_px, rig.camera.height_px)
        K = rig.nominal_K(*size)
        warnings.append(f"{cal.intrinsics_path} missing: using the rig's nominal intrinsics")
    for w in warnings:
        log.warning(w)
    return T_cl, K, size, warnings


def write_ply(path: Path, points: np.ndarray, ranges: np.ndarray | None = None, frames: np.ndarray | None = None) -> None:
    """Binary little-endian PLY (float32 x y z [range] [frame]) written atomically.

    frames: per-point index of the measuring sensor frame (WorldCloud.frame_index), stored as float32 (exact
    below 2**24) so that readers of all-float32 vertices keep working."""
    pts = np.asarray(points, dtype=np.float32)
    cols = [("x", pts[:, 0]), ("y", pts[:, 1]), ("z", pts[:, 2])]
    if ranges is not None:
        cols.append(("range", np.asarray(ranges, dtype=np.float32)))
    if frames is not None:
        cols.append(("frame", np.asarray(frames, dtype=np.float32)))
    rec = np.empty(len(pts), dtype=[(n, "<f4") for n, _ in cols])
    for n, c in cols:
        rec[n] = c
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {len(pts)}\n"
    header += "".join(f"property float {n}\n" for n, _ in cols) + "end_header\n"
    with atomic_open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())


def read_ply(path: Path) -> dict[str, np.ndarray]:
    """The vertex properties of a PLY that :func:`write_ply` wrote (binary little-endian, all float32), by name.
    Raises :class:`BuildDepthError` naming the file when it is missing, not such a PLY, or cut short."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = []
            while True:
                line = f.readline()
                if not line or len(header) > 64:
                    raise BuildDepthError(f"{path}: not a PLY written by build-depth (no end_header)")
                text = line.decode("ascii", "replace").strip()
                header.append(text)
                if text == "end_header":
                    break
            data = f.read()
    except OSError as e:
        raise BuildDepthError(f"{path}: cannot read the point cloud ({e.strerror or e})") from None
    if header[0] != "ply" or "format binary_little_endian 1.0" not in header:
        raise BuildDepthError(f"{path}: not a binary little-endian PLY written by build-depth")
    count = next((int(h.split()[2]) for h in header if h.startswith("element vertex")), None)
    props = [h.split() for h in header if h.startswith("property")]
    if count is None or not props or any(p[1] != "float" for p in props):
        raise BuildDepthError(f"{path}: build-depth's PLYs hold float32 vertex properties only")
    dtype = np.dtype([(p[2], "<f4") for p in props])
    if len(data) != count * dtype.itemsize:
        raise BuildDepthError(f"{path}: {len(data)} bytes of vertex data, {count} vertices need "
                              f"{count * dtype.itemsize} (file cut short?)")
    rec = np.frombuffer(data, dtype=dtype)
    return {name: rec[name] for name in dtype.names}


def _stage(name: str):
    class _Ctx:
        def __enter__(self):
            self.t = time.perf_counter()
            return self

        def __exit__(self, et, e, tb):
            self.dt = time.perf_counter() - self.t
            if e is not None and not isinstance(e, BuildDepthError):
                raise BuildDepthError(f"build-depth [{name}]: {e}") from e
            return False

    return _Ctx()


def splat_radius(rig, cfg: BuildConfig) -> int:
    """The splat radius (px at the depth map's size): ``cfg.splat_radius_px``, else the rig's."""
    return rig.depth_map.splat_radius_px if cfg.splat_radius_px is None else cfg.splat_radius_px


def lidar_expectations(rig, edge_jump_m: float | None) -> dict:
    """read_lidar / read_static_frame keywords: the rig's lidar (columns, product line) and the mixed-pixel jump."""
    return {"expect_columns": rig.lidar.columns, "expect_prod_line": rig.lidar.model, "edge_jump_m": edge_jump_m}


def frames_with_returns(frames: list) -> list:
    """The frames that hold returns, as aggregate() indexes them (its poses, the clouds' frame indices)."""
    return [f for f in frames if len(f) > 0]


def free_space_rays(frames: list, times: np.ndarray, poses: np.ndarray, agg_cfg: AggregateConfig, sweep) -> SweepRays:
    """Every return of ``frames`` (:func:`frames_with_returns` of ``sweep``, posed by ``poses`` at ``times`` and
    deskewed as ``agg_cfg`` says) as a ray, for the free-space test of the projection."""
    return sweep_rays(frames, times, poses, *frame_motion(times, poses, agg_cfg), sweep.ray_directions,
                      sweep.ray_offsets)


def sensor_origins(poses: np.ndarray, T_world_static: np.ndarray) -> np.ndarray:
    """(F + 1, 3) float32 world positions of the lidar: each sweep frame's (``poses`` (F, 4, 4)), then the static
    frame's, whose points carry frame index F."""
    return np.vstack([poses[:, :3, 3], T_world_static[None, :3, 3]]).astype(np.float32)


def to_camera(points: np.ndarray, T_camera_world: np.ndarray) -> np.ndarray:
    """(N, 3) float32: world ``points`` in the camera frame."""
    R, t = T_camera_world[:3, :3].astype(np.float32), T_camera_world[:3, 3].astype(np.float32)
    return np.asarray(points, dtype=np.float32) @ R.T + t


def build_depth(rig, root: Path, scene: str, mode: str = "fast", progress: StageProgress | None = None,
                config: BuildConfig | None = None) -> BuildSummary:
    """Run every build-depth stage for ``scene`` under ``root``; returns the depth map and K (see module doc).

    rig: a loaded :class:`zedd_capture.rig.Rig`; mode: "fast" (default) or "paper".
    progress(stage, done, total) is called as stages advance. Raises :class:`BuildDepthError`.
    """
    cfg = checked(config or BuildConfig())
    if mode not in ("fast", "paper"):
        raise BuildDepthError(f"build-depth: unknown mode {mode!r} (fast|paper)")
    agg_cfg = AggregateConfig(**{**asdict(cfg.aggregate), "mode": mode})
    layout = SceneLayout(Path(root), scene)
    timings: dict[str, float] = {}
    report = progress or (lambda *a: None)
    W, H = rig.depth_map.width_px, rig.depth_map.height_px
    radius = splat_radius(rig, cfg)

    with _stage("calibration") as st:
        T_cl, K_canon, K_size, warnings = load_camera_calibration(rig, root)
        K = scale_intrinsics(K_canon, K_size, (W, H))
        regions = load_regions(layout.cleanup_path)  # read now: a broken cleanup.yaml fails before the build
    with _stage("read") as st:
        report("read", 0, 2)
        expect = lidar_expectations(rig, cfg.edge_jump_m)
        sweep = read_lidar(layout.lidar_sweep_path, max_frames=cfg.max_frames, min_frames=2, **expect)
        report("read", 1, 2)
        static = read_static_frame(layout.lidar_static_path, **expect)
        report("read", 2, 2)
    timings["read"] = st.dt
    with _stage("aggregate") as st:
        cloud: WorldCloud = aggregate(sweep.frames, agg_cfg, progress=lambda d, n: report("aggregate", d, n))
    timings["aggregate"] = st.dt
    n_frames = len(sweep.frames)
    frames = frames_with_returns(sweep.frames)
    rays = None
    if cfg.free_space_min_rays > 0:  # every return as a ray, for the free-space test of the projection
        with _stage("rays") as st:
            rays = free_space_rays(frames, cloud.times, cloud.poses, agg_cfg, sweep)
        timings["rays"] = st.dt
    del sweep
    with _stage("register") as st:
        report("register", 0, 1)
        rcfg = RegisterConfig(**{**asdict(cfg.register), "candidates": list(cfg.register.candidates) + [np.eye(4)]})
        reg = register_static(static.points, cloud.points, rcfg)
        report("register", 1, 1)
    timings["register"] = st.dt
    if reg.info.get("rival"):
        rival = reg.info["rival"]
        warnings.append(f"static registration is ambiguous: a pose {rival['offset_m']:.2f} m, {rival['angle_deg']:.0f} deg "
                        f"from the chosen one fits almost as well (coarse fitness {rival['fitness']:.3f}); check "
                        "overlay.jpg (a symmetric room? start the sweep at the tripod)")
        log.warning(warnings[-1])
    T_world_static = reg.T_world_static
    T_camera_world = T_cl @ invert(T_world_static)
    # sensor position of each point: its frame's pose translation (estimated trajectory); the static
    # frame's points get index F, the static lidar's position
    origins_w = sensor_origins(cloud.poses, T_world_static)
    view = None
    if mode == "fast" and cfg.view_cloud:
        with _stage("view") as st:
            report("view", 0, 1)
            select = in_view(T_camera_world, K, W, H, cfg.view_margin_frac)
            view = view_cloud(frames, cloud, select, agg_cfg)
            report("view", 1, 1)
        timings["view"] = st.dt
    del frames
    if cfg.include_static:
        # the tripod frame sees exactly what the camera sees: add it to the world cloud (and the view's)
        _add_static_frame(cloud, static, T_world_static, agg_cfg.min_range_m)
        if view is not None:
            _add_static_frame(view, static, T_world_static, agg_cfg.min_range_m, select)
    with _stage("cleanup") as st:
        keep, removed = cleanup_mask(cloud.points, regions, T_camera_world, K, (W, H), invert(T_world_static))
        if regions:
            cloud.select(keep)
            if view is not None:
                view.select(cleanup_mask(view.points, regions, T_camera_world, K, (W, H), invert(T_world_static))[0])
        projected = cloud if view is None else view
        points, frames = projected.points, projected.frame_index
        if view is not None:
            view.stats["points"] = len(view.points)  # with the static frame's, after cleanup: what is projected
    timings["cleanup"] = st.dt
    with _stage("project") as st:
        depth, project_stats = project_depth(to_camera(points, T_camera_world), to_camera(origins_w, T_camera_world),
                                             frames, K, W, H, radius,
                                             cfg, progress=lambda d, n: report("project", d, n), rays=rays,
                                             T_world_camera=invert(T_camera_world))
        del rays
    timings["project"] = st.dt
    summary = BuildSummary(
        scene=scene,
        mode=mode,
        depth=depth,
        K=K,
        frames=n_frames,
        points=int(len(cloud.points)),  # the world cloud (world_cloud.ply); the projected view cloud: stats["view"]
        fitness=reg.fitness,
        rmse_m=reg.rmse_m,
        coverage=float((depth > 0).mean()),
        timings_s=timings,
        T_camera_world=T_camera_world,
        T_world_static=T_world_static,
        warnings=warnings,
        # every setting of the build (not a hand-picked few), so that build_depth.json records how the map was made
        stats={"aggregate": cloud.stats, "view": None if view is None else view.stats, "cleanup_removed": removed,
               "register": {"ransac_fitness": reg.ransac_fitness, **reg.info}, "splat_radius_px": radius, **project_stats,
               "config": {**asdict(cfg), "splat_radius_px": radius}},
    )
    with _stage("write") as st:
        report("write", 0, 1)
        write_tum(layout.trajectory_path, cloud.times, cloud.poses,
                  header=f"build-depth ({mode}) T_world_lidar per sweep frame at its mid-frame time (s); world = first sweep frame")
        if cfg.write_cloud:
            write_ply(layout.world_cloud_path, cloud.points, cloud.ranges, cloud.frame_index)
            if view is not None:
                write_ply(layout.view_cloud_path, view.points, view.ranges, view.frame_index)
        timings["write"] = time.perf_counter() - st.t
        summary.write_log(layout.build_log_path)
        report("write", 1, 1)
    return summary


def in_view(T_camera_world: np.ndarray, K: np.ndarray, width: int, height: int,
            margin_frac: float = 0.1) -> Callable[[np.ndarray], np.ndarray]:
    """A function world points (N, 3) -> (N,) bool: in front of the camera (``T_camera_world``, intrinsics ``K``)
    and inside its ``width`` x ``height`` px image widened by ``margin_frac`` of its size on each side."""
    mu, mv = margin_frac * width, margin_frac * height
    Kw = np.array(K, dtype=np.float64)
    Kw[0, 2] += mu
    Kw[1, 2] += mv
    Ww, Hw = int(np.ceil(width + 2 * mu)), int(np.ceil(height + 2 * mv))
    def select(world_points: np.ndarray) -> np.ndarray:
        inside = np.zeros(len(world_points), bool)
        inside[project_points(to_camera(world_points, T_camera_world), Kw, Ww, Hw, index=True)[-1]] = True
        return inside

    return select


def view_cloud(frames: list, cloud: WorldCloud, select: Callable[[np.ndarray], np.ndarray],
               cfg: AggregateConfig) -> WorldCloud:
    """The points of every frame (world frame, deskewed with ``cloud``'s poses, :func:`aggregate.accumulate`) that
    ``select`` keeps (:func:`in_view`), density-filtered like the world cloud."""
    t0 = time.perf_counter()
    points, ranges, frame_index = accumulate(frames, cloud.times, cloud.poses, cfg, select=select)
    t_acc = time.perf_counter() - t0
    points, ranges, frame_index, removed = density_filtered(points, ranges, frame_index, cfg)
    return WorldCloud(points=points, ranges=ranges, poses=cloud.poses, times=cloud.times, frame_index=frame_index,
                      stats={"points": len(points), "density_removed": removed,
                             "seconds_accumulate": t_acc, "seconds": time.perf_counter() - t0})


def _add_static_frame(cloud: WorldCloud, static, T_world_static: np.ndarray, min_range_m: float,
                      select: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    """Append the static frame's returns beyond ``min_range_m`` (moved into the world; those ``select`` keeps) to
    ``cloud``, with frame index len(cloud.poses) (the static lidar's position follows the sweep's in the sensor
    origins)."""
    Ts = T_world_static.astype(np.float32)
    near = static.ranges > min_range_m
    points, ranges = static.points[near] @ Ts[:3, :3].T + Ts[:3, 3], static.ranges[near]
    if select is not None:
        inside = select(points)
        points, ranges = points[inside], ranges[inside]
    cloud.points = np.concatenate([cloud.points, points])
    cloud.ranges = np.concatenate([cloud.ranges, ranges])
    if cloud.frame_index is not None:
        fdt = frame_index_dtype(len(cloud.poses) + 1)
        cloud.frame_index = np.concatenate([cloud.frame_index.astype(fdt, copy=False),
                                            np.full(len(points), len(cloud.poses), dtype=fdt)])


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
