"""Aggregate sweep frames into one world cloud (frame-to-map ICP) with the density filter.

Two modes (``AggregateConfig.mode``):

* ``"paper"``: the paper's algorithm, literally. G0 = P0; for each frame i, ICP (Open3D legacy,
  point-to-plane) aligns the whole map G(i-1) to P(i), G is transformed by that estimate and
  unioned with P(i). After a warm-up of T = 50 iterations, every M = 10 iterations points with
  fewer than k = 7 neighbours within alpha * range (range from the current lidar centre) are
  removed. Costs O(|G|) per frame (reference only; see bench/aggregate.py).
* ``"fast"`` (default): each frame (every ``reg_stride``-th point) is deskewed and registered
  from a constant-velocity prediction against a local map prepared once per map update, not per
  frame: small_gicp VGICP on a Gaussian voxel map (default) or GICP on a keyframe cloud with a
  prebuilt KdTree; Open3D point-to-plane ICP when small_gicp is not installed. The velocity is
  then re-estimated from the new pose, the frame re-deskewed and the pose refined (the deskew
  velocity dominates the error: 2.2 -> 0.75 mm ATE on the twin). Only keyframes (moved
  ``keyframe_m`` or turned ``keyframe_deg``) update the map. Poses are then smoothed into
  central velocities, every (n-th) frame is re-deskewed and its full-resolution points stored
  once in the fixed world frame (the first frame's lidar frame), and the same exact density
  filter runs once on the whole cloud. Before that (``refine_global``) every frame is registered once
  more to one map of the whole sweep, which averages the local map's drift. Once all poses are
  known, frames are deskewed with constant acceleration (``deskew_acceleration``) from them.

Poses are T_world_lidar at each frame's ``t_ref`` (see io.LidarFrameData).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal

import numpy as np

from ..geometry import rotation_angle_deg
from .deskew import central_accelerations, central_velocities, deskew_points, motion, relative_velocity
from .density import ALPHA, K_NEIGHBOURS, density_filter
from .io import LidarFrameData

log = logging.getLogger(__name__)


class AggregationError(RuntimeError):
    """Aggregation failed (empty sweep, lost tracking); the message names the frame."""


@dataclass
class AggregateConfig:
    mode: Literal["fast", "paper"] = "fast"
    alpha: float = ALPHA
    k: int = K_NEIGHBOURS
    density_filter: bool = True
    warmup: int = 50  # paper: T
    interval: int = 10  # paper: M
    # paper mode (Open3D ICP)
    paper_max_corr_m: float = 0.25
    paper_max_iter: int = 30
    # fast mode
    deskew: bool = True
    reg_stride: int = 4  # register on every n-th point of a frame (all points are accumulated)
    downsample_m: float = 0.08  # source voxel for registration
    map_voxel_m: float = 0.05  # local-map (target) voxel
    keyframe_m: float = 0.1  # a frame that moved this far / turned this much becomes a keyframe
    keyframe_deg: float = 5.0
    map_keyframes: int = 20  # the local map holds the last keyframes
    refine_deskew: bool = True  # per frame: register, re-estimate the velocity, re-deskew, refine
    # after tracking, re-register every frame once to one map of the whole sweep (every 2nd frame, re-deskewed):
    # the local keyframe map drifts, the whole-sweep map averages it. Twin, kitchen01: ATE 0.52 -> 0.43 mm, +23 s
    refine_global: bool = True
    refine_map_every: int = 2
    refine_voxel_m: float = 0.15  # its Gaussian voxels, finer than tracking's: twin hallway02 ATE 0.46 -> 0.43 mm
    # deskew the refinement's and the world cloud's frames with the poses' accelerations (linear and angular),
    # not only their velocities. Twin, 600 frames, ATE: kitchen01 0.43 -> 0.34 mm, hallway02 0.52 -> 0.46 mm
    deskew_acceleration: bool = True
    refine_min_skew_m: float = 0.0005  # ... when the new velocity moves frame points by more than this
    registration: Literal["vgicp", "gicp"] = "vgicp"  # small_gicp: VGICP on a Gaussian voxel map or GICP + KdTree
    vgicp_voxel_m: float = 0.25
    max_corr_m: float = 0.3
    max_iter: int = 30
    max_points: int = 20_000_000  # accumulate every n-th frame so the world cloud stays below this
    accumulate_every: int | None = None  # None: chosen from max_points
    min_range_m: float = 0.3
    max_translation_step_m: float = 0.5  # per frame, beyond this the tracking is lost
    backend: Literal["auto", "small_gicp", "open3d"] = "auto"
    threads: int = 2


@dataclass
class WorldCloud:
    """Aggregated cloud in the world frame (= lidar frame of the first sweep frame).

    points: (N, 3) float32 m. ranges: (N,) float32 m from the measuring sensor position.
    poses: (F, 4, 4) T_world_lidar at ``times`` (F,) s (sensor clock). stats: timings and counts.
    frame_index: (N,) uint16 (uint32 beyond 65535 frames) index into ``poses`` of the frame that
    measured each point (its sensor origin is ``poses[frame_index, :3, 3]``, see :meth:`origins`);
    None when unknown. Every filter of ``points`` must apply to it too (see :meth:`select`).
    """

    points: np.ndarray
    ranges: np.ndarray
    poses: np.ndarray
    times: np.ndarray
    stats: dict = field(default_factory=dict)
    frame_index: np.ndarray | None = None

    def select(self, keep: np.ndarray) -> None:
        """Keep only ``points[keep]`` (boolean mask or indices), with their ranges and frame indices."""
        self.points = self.points[keep]
        self.ranges = self.ranges[keep]
        if self.frame_index is not None:
            self.frame_index = self.frame_index[keep]

    def origins(self) -> np.ndarray:
        """(N, 3) float32 world position of the sensor that measured each point (its frame's pose translation)."""
        if self.frame_index is None:
            raise ValueError("WorldCloud.origins: the cloud has no frame_index")
        return self.poses[:, :3, 3].astype(np.float32)[self.frame_index]


def frame_index_dtype(n_frames: int) -> type:
    """Smallest unsigned dtype that holds frame indices 0 .. n_frames - 1 (uint16 up to 65536 frames)."""
    return np.uint16 if n_frames <= np.iinfo(np.uint16).max + 1 else np.uint32


Progress = Callable[[int, int], None]


def aggregate(frames: Iterable[LidarFrameData], config: AggregateConfig | None = None, progress: Progress | None = None) -> WorldCloud:
    """Aggregate sweep frames into a :class:`WorldCloud` (see module doc for the two modes)."""
    config = config or AggregateConfig()
    frames = [f for f in frames if len(f) > 0]
    if not frames:
        raise AggregationError("aggregate: empty sweep (no frames with valid returns)")
    if config.mode == "paper":
        return _aggregate_paper(frames, config, progress)
    if config.mode == "fast":
        return _aggregate_fast(frames, config, progress)
    raise ValueError(f"aggregate: unknown mode {config.mode!r} (fast|paper)")


# --- paper mode -------------------------------------------------------------------------------
def _o3d_cloud(points: np.ndarray, normals: bool = False, radius: float = 0.15):
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if normals:
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=20))
    return pc


def _aggregate_paper(frames: list[LidarFrameData], cfg: AggregateConfig, progress: Progress | None) -> WorldCloud:
    import open3d as o3d

    t0 = time.perf_counter()
    G = np.asarray(frames[0].points, dtype=np.float64)
    fdt = frame_index_dtype(len(frames))
    fidx = np.zeros(len(G), dtype=fdt)
    T_cur_0 = np.eye(4)  # maps frame-0 coordinates into the current frame
    poses = [np.eye(4)]
    removed = 0
    est = o3d.pipelines.registration.TransformationEstimationPointToPlane()
    crit = o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=cfg.paper_max_iter)
    fitness = []
    for i in range(1, len(frames)):
        P = np.asarray(frames[i].points, dtype=np.float64)
        src = _o3d_cloud(G)
        tgt = _o3d_cloud(P, normals=True)
        res = o3d.pipelines.registration.registration_icp(src, tgt, cfg.paper_max_corr_m, np.eye(4), est, crit)
        if res.fitness < 0.05:
            raise AggregationError(f"aggregate(paper): ICP lost track at frame {i} (fitness {res.fitness:.3f})")
        fitness.append(res.fitness)
        T = np.asarray(res.transformation)
        G = G @ T[:3, :3].T + T[:3, 3]
        G = np.vstack([G, P])
        fidx = np.concatenate([fidx, np.full(len(P), i, dtype=fdt)])
        T_cur_0 = T @ T_cur_0
        poses.append(np.linalg.inv(T_cur_0))
        if cfg.density_filter and i >= cfg.warmup and (i - cfg.warmup) % cfg.interval == 0:
            keep = density_filter(G, np.linalg.norm(G, axis=1), cfg.alpha, cfg.k)
            removed += int((~keep).sum())
            G = G[keep]
            fidx = fidx[keep]
        if progress:
            progress(i + 1, len(frames))
    # back to the fixed world frame (frame 0)
    T_0_cur = np.linalg.inv(T_cur_0)
    pts = (G @ T_0_cur[:3, :3].T + T_0_cur[:3, 3]).astype(np.float32)
    # ranges: from the sensor position of the last frame (the paper has no per-point origin)
    ranges = np.linalg.norm(G, axis=1).astype(np.float32)
    return WorldCloud(
        points=pts,
        ranges=ranges,
        poses=np.array(poses),
        times=np.array([f.t_ref for f in frames]),
        frame_index=fidx,
        stats={
            "mode": "paper",
            "frames": len(frames),
            "points": len(pts),
            "density_removed": removed,
            "mean_fitness": float(np.mean(fitness)) if fitness else 1.0,
            "seconds": time.perf_counter() - t0,
        },
    )


# --- fast mode --------------------------------------------------------------------------------
class _Registrar:
    """Frame-to-local-map registration against a map prepared once per update (see module doc).

    "vgicp": small_gicp GaussianVoxelMap (``vgicp_voxel_m``), keyframes inserted incrementally.
    "gicp": the union of the last ``map_keyframes`` keyframes on a ``map_voxel_m`` grid with
    covariances and a KdTree rebuilt at each keyframe. Open3D: the same keyframe cloud, normals.
    """

    def __init__(self, cfg: AggregateConfig):
        self.cfg = cfg
        backend = cfg.backend
        if backend == "auto":
            try:
                import small_gicp  # noqa: F401

                backend = "small_gicp"
            except ImportError:
                backend = "open3d"
        self.backend = backend
        if backend == "small_gicp":
            import small_gicp

            self.sg = small_gicp
            if cfg.registration == "vgicp":
                self.voxelmap = small_gicp.GaussianVoxelMap(cfg.vgicp_voxel_m)
                self.voxelmap.set_lru(horizon=10**6, clear_cycle=10**6)
        self.keyframes: list[np.ndarray] = []  # world-frame downsampled points of each keyframe
        self.last_key: np.ndarray | None = None
        self.target = None
        self.tree = None
        self.map_updates = 0

    def prepare(self, pts: np.ndarray):
        """Downsampled source (with covariances for small_gicp) of (N, 3) sensor-frame points."""
        pts = np.asarray(pts, dtype=np.float64)
        if self.backend == "small_gicp":
            pc, _ = self.sg.preprocess_points(pts, downsampling_resolution=self.cfg.downsample_m, num_neighbors=10, num_threads=self.cfg.threads)
            return pc
        return _o3d_cloud(pts).voxel_down_sample(self.cfg.downsample_m)

    def _points_of(self, src) -> np.ndarray:
        return np.asarray(src.points()[:, :3] if self.backend == "small_gicp" else src.points)

    def align(self, src, T_init: np.ndarray) -> tuple[np.ndarray, float]:
        """-> (T_world_lidar, inlier fraction)."""
        cfg = self.cfg
        if self.backend == "small_gicp":
            opts = dict(max_correspondence_distance=cfg.max_corr_m, num_threads=cfg.threads, max_iterations=cfg.max_iter,
                        rotation_epsilon=1e-5, translation_epsilon=1e-5)
            if cfg.registration == "vgicp":
                r = self.sg.align(self.voxelmap, src, T_init, **opts)
            else:
                r = self.sg.align(self.target, src, self.tree, T_init, registration_type="GICP", **opts)
            return np.asarray(r.T_target_source), r.num_inliers / max(src.size(), 1)
        import open3d as o3d

        res = o3d.pipelines.registration.registration_icp(
            src,
            self.target,
            cfg.max_corr_m,
            T_init,
            o3d.pipelines.registration.TransformationEstimationPointToPlane(),
            o3d.pipelines.registration.ICPConvergenceCriteria(1e-7, 1e-7, cfg.max_iter),
        )
        return np.asarray(res.transformation), res.fitness

    def maybe_insert(self, src, T: np.ndarray) -> bool:
        """Add the frame as a keyframe when it moved enough (always the first); rebuild the target."""
        cfg = self.cfg
        if self.last_key is not None:
            d = np.linalg.inv(self.last_key) @ T
            if np.linalg.norm(d[:3, 3]) < cfg.keyframe_m and rotation_angle_deg(d[:3, :3]) < cfg.keyframe_deg:
                return False
        self.last_key = T.copy()
        self.map_updates += 1
        if self.backend == "small_gicp" and cfg.registration == "vgicp":
            self.voxelmap.insert(src, T)
            return True
        p = self._points_of(src)
        self.keyframes.append(p @ T[:3, :3].T + T[:3, 3])
        self.keyframes = self.keyframes[-cfg.map_keyframes :]
        pts = np.vstack(self.keyframes)
        if self.backend == "small_gicp":
            pc = self.sg.voxelgrid_sampling(self.sg.PointCloud(pts), cfg.map_voxel_m, num_threads=cfg.threads)
            self.tree = self.sg.KdTree(pc, num_threads=cfg.threads)
            self.sg.estimate_covariances(pc, self.tree, num_neighbors=10, num_threads=cfg.threads)
            self.target = pc
        else:
            import open3d as o3d

            tgt = _o3d_cloud(pts).voxel_down_sample(cfg.map_voxel_m)
            tgt.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=3 * cfg.map_voxel_m, max_nn=20))
            self.target = tgt
        return True


def _velocity_at_frame(seg: np.ndarray, seg_prev: np.ndarray | None) -> np.ndarray:
    """Velocity at frame i: the mean over [t(i-1), t(i)] extrapolated half a frame with the previous segment's."""
    return seg if seg_prev is None else 1.5 * seg - 0.5 * seg_prev


def _registration_points(fr: LidarFrameData, cfg: AggregateConfig) -> tuple[np.ndarray, np.ndarray]:
    """(points (M, 3), dt (M,)) of a frame used for registration: every ``reg_stride``-th return beyond ``min_range_m``."""
    stride = max(1, cfg.reg_stride)
    keep = np.flatnonzero(fr.ranges[::stride] > cfg.min_range_m) * stride
    return fr.points[keep], fr.dt[keep]


def _register_frames(frames, times, cfg: AggregateConfig, vel0: np.ndarray, progress: Progress | None):
    """Frame-to-map registration of every frame -> (poses (F, 4, 4), inlier fractions (F,), the registrar, refined frames)."""
    reg = _Registrar(cfg)
    F = len(frames)
    poses = np.tile(np.eye(4), (F, 1, 1))
    fitness = np.ones(F)
    vel = np.asarray(vel0, dtype=float)
    seg_prev = None  # velocity over the previous inter-frame segment
    refined = 0
    for i, fr in enumerate(frames):
        p_raw, dt_raw = _registration_points(fr, cfg)
        src = reg.prepare(deskew_points(p_raw, dt_raw, vel) if cfg.deskew else p_raw)
        if i > 0:
            dt = times[i] - times[i - 1]
            T_pred = poses[i - 1] @ motion(vel, dt)  # constant-velocity prior
            T, fit = reg.align(src, T_pred)
            seg = relative_velocity(poses[i - 1], T, dt)  # mean velocity over [t(i-1), t(i)]
            vel_used = vel
            vel = _velocity_at_frame(seg, seg_prev)
            # skew change the new velocity makes at the frame's ends (half a frame, 10 m range)
            half = float(np.abs(dt_raw).max()) if len(dt_raw) else 0.0
            skew = half * (np.linalg.norm(vel[3:] - vel_used[3:]) + 10.0 * np.linalg.norm(vel[:3] - vel_used[:3]))
            if cfg.deskew and cfg.refine_deskew and skew > cfg.refine_min_skew_m:  # re-deskew, refine from T
                src = reg.prepare(deskew_points(p_raw, dt_raw, vel))
                T, fit = reg.align(src, T)
                refined += 1
                seg = relative_velocity(poses[i - 1], T, dt)
                vel = _velocity_at_frame(seg, seg_prev)
            step = np.linalg.norm(T[:3, 3] - poses[i - 1][:3, 3])
            if fit < 0.2 or step > cfg.max_translation_step_m:
                raise AggregationError(
                    f"aggregate(fast): registration lost track at frame {i} (id {fr.frame_id}): inliers {fit:.2f}, step {step:.3f} m"
                )
            poses[i] = T
            fitness[i] = fit
            seg_prev = seg
        reg.maybe_insert(src, poses[i])
        if progress:
            progress(i + 1, F)
    return poses, fitness, reg, refined


def frame_motion(times: np.ndarray, poses: np.ndarray, cfg: AggregateConfig) -> tuple[np.ndarray, np.ndarray]:
    """(velocities (F, 6), accelerations (F, 6)) for deskewing frames once all poses are known (zeros when off)."""
    F = len(poses)
    if not cfg.deskew:
        return np.zeros((F, 6)), np.zeros((F, 6))
    vels = central_velocities(times, poses)
    accs = central_accelerations(times, poses, vels) if cfg.deskew_acceleration else np.zeros((F, 6))
    return vels, accs


def accumulate(frames: list[LidarFrameData], times: np.ndarray, poses: np.ndarray, cfg: AggregateConfig,
               every: int = 1, select: Callable[[np.ndarray], np.ndarray] | None = None,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points (N, 3) float32 world m, ranges (N,) float32 m, frame_index (N,)): the returns beyond
    ``cfg.min_range_m`` of every ``every``-th frame, deskewed with the motion of ``poses`` (T_world_lidar (F, 4, 4)
    at ``times`` (F,) s, :func:`frame_motion`) and moved into the world frame; ``select(world_points)`` (a bool
    mask per frame) keeps a subset (e.g. a camera's view)."""
    vels, accs = frame_motion(times, poses, cfg)
    fdt = frame_index_dtype(len(frames))
    chunks, rchunks, fchunks = [], [], []
    for i in range(0, len(frames), max(1, every)):
        fr = frames[i]
        keep = fr.ranges > cfg.min_range_m
        p = deskew_points(fr.points[keep], fr.dt[keep], vels[i], accs[i])
        T = poses[i].astype(np.float32)
        p = p @ T[:3, :3].T + T[:3, 3]
        r = fr.ranges[keep]
        if select is not None:
            inside = select(p)
            p, r = p[inside], r[inside]
        chunks.append(p)
        rchunks.append(r)
        fchunks.append(np.full(len(p), i, dtype=fdt))
    if not chunks:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.float32), np.zeros(0, fdt)
    return np.concatenate(chunks), np.concatenate(rchunks), np.concatenate(fchunks)


def density_filtered(points: np.ndarray, ranges: np.ndarray, frame_index: np.ndarray, cfg: AggregateConfig,
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(points, ranges, frame_index, number removed): those that pass the density filter (``cfg.alpha``,
    ``cfg.k``), all of them when ``cfg.density_filter`` is off."""
    if not cfg.density_filter:
        return points, ranges, frame_index, 0
    keep = density_filter(points, ranges, cfg.alpha, cfg.k, workers=cfg.threads)
    return points[keep], ranges[keep], frame_index[keep], int(len(keep) - np.count_nonzero(keep))


def _refine_global(frames, times, poses: np.ndarray, cfg: AggregateConfig, reg: _Registrar) -> np.ndarray:
    """Poses (F, 4, 4) re-registered once (small_gicp VGICP, ``refine_voxel_m``) to a Gaussian voxel map of the
    whole sweep built from every ``refine_map_every``-th frame, each deskewed with the motion of the tracked poses
    (:func:`frame_motion`); re-anchored so that the first frame stays the world frame. ``reg`` (small_gicp
    backend) prepares the sources."""
    import small_gicp as sg

    vels, accs = frame_motion(times, poses, cfg)

    def source(i: int):
        p, dt = _registration_points(frames[i], cfg)
        return reg.prepare(deskew_points(p, dt, vels[i], accs[i]))

    voxelmap = sg.GaussianVoxelMap(cfg.refine_voxel_m)
    voxelmap.set_lru(horizon=10**6, clear_cycle=10**6)
    for i in range(0, len(frames), max(1, cfg.refine_map_every)):
        voxelmap.insert(source(i), poses[i])
    out = poses.copy()
    for i in range(len(frames)):  # sources made again, not held: ~2 MB each
        r = sg.align(voxelmap, source(i), poses[i], max_correspondence_distance=cfg.max_corr_m, num_threads=cfg.threads,
                     max_iterations=cfg.max_iter, rotation_epsilon=1e-5, translation_epsilon=1e-5)
        out[i] = np.asarray(r.T_target_source)
    return np.linalg.inv(out[0]) @ out


def _aggregate_fast(frames: list[LidarFrameData], cfg: AggregateConfig, progress: Progress | None) -> WorldCloud:
    t0 = time.perf_counter()
    F = len(frames)
    times = np.array([f.t_ref for f in frames])
    vel0 = np.zeros(6)
    # bootstrap: the map is anchored on frame 0, so frame 0 must be deskewed too; register the
    # first frames once to learn its velocity, then start over with it
    n_boot = min(F, 4) if cfg.deskew and F > 1 else 0
    if n_boot:
        boot_poses, *_ = _register_frames(frames[:n_boot], times[:n_boot], cfg, np.zeros(6), None)
        vel0 = central_velocities(times[:n_boot], boot_poses)[0]
    poses, fitness, reg, refined = _register_frames(frames, times, cfg, vel0, progress)
    backend, map_updates = reg.backend, reg.map_updates
    refined_global = cfg.refine_global and backend == "small_gicp" and F > 2
    if refined_global:
        poses = _refine_global(frames, times, poses, cfg, reg)
    t_reg = time.perf_counter() - t0
    # accumulate full-resolution, re-deskewed points once in the world frame
    n_valid = sum(len(f) for f in frames)
    every = cfg.accumulate_every or max(1, int(np.ceil(n_valid / cfg.max_points)))
    points, ranges, frame_index = accumulate(frames, times, poses, cfg, every=every)
    t_acc = time.perf_counter() - t0 - t_reg
    t_den = time.perf_counter()
    points, ranges, frame_index, removed = density_filtered(points, ranges, frame_index, cfg)
    t_den = time.perf_counter() - t_den
    return WorldCloud(
        points=points,
        ranges=ranges,
        poses=poses,
        times=times,
        frame_index=frame_index,
        stats={
            "mode": "fast",
            "backend": backend,
            "frames": F,
            "accumulate_every": every,
            "map_updates": map_updates,
            "refined_frames": refined,
            "refined_global": refined_global,
            "points": len(points),
            "density_removed": removed,
            "mean_fitness": float(fitness.mean()),
            "min_fitness": float(fitness.min()),
            "seconds_registration": t_reg,
            "seconds_accumulate": t_acc,
            "seconds_density": t_den,
            "seconds": time.perf_counter() - t0,
        },
    )
