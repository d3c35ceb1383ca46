"""The twin's OS0-128: per-column ray casting along a pose function, sensor effects, real OSF output.

One frame = H x W rays in the staggered layout of :mod:`zedd_capture.sim.os0`; column ``c`` is fired
at ``t0 + c / (W * f)`` from the pose ``pose_fn(t)``, so a moving sensor's frame is motion-distorted
exactly like a real one (XYZLut of the frame, each column mapped with its own pose, gives the
surface back; mapped with one pose per frame it does not).

Sensor effects (:class:`LidarNoise`): Gaussian range noise (sigma grows up to 3x at low signal),
near blind zone, reflectivity-dependent far limit, dropouts on reflective (mirror-like) surfaces,
transparent surfaces that mostly pass the beam to what lies behind (or drop it), mixed pixels
at horizontal depth gaps (not on continuous surfaces at grazing incidence), grazing-angle dropouts, and SIGNAL / REFLECTIVITY / NEAR_IR fields
from albedo, incidence and range.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import open3d as o3d
from ouster.sdk import core, osf

from ..devices.protocols import ProgressCallback, RecordingSummary
from ..geometry import write_tum
from ..layout import atomic_save_txt, atomic_write_text
from .os0 import OS0Model
from .trajectory import SweepTrajectory, handheld_sweep

PoseFn = Callable[[np.ndarray], np.ndarray]  # times (N,) s -> T_world_lidar (N, 4, 4)

STATIC_T0_S = 1.0  #: sensor-clock time of the static (tripod) frame
SWEEP_T0_S = 10.0  #: sensor-clock time of the first sweep frame
DENSE_TRUTH_HZ = 200.0  #: sample rate of truth/trajectory_dense.tum
DIFFUSE, REFLECTIVE, TRANSPARENT = 0, 1, 2

# Fixed perturbation of the nominal extrinsic that makes the twin's true lidar->camera transform.
_TRUE_DROT_AXIS = np.array([0.62, -0.48, 0.55])
_TRUE_DROT_DEG = 0.55
_TRUE_DT_M = np.array([0.004, -0.003, 0.0035])


class RayHits(NamedTuple):
    """Ray-cast result (same field names as scene.RayHits): t = inf for a miss."""

    t: np.ndarray
    geometry_id: np.ndarray
    normal: np.ndarray
    point: np.ndarray


class RaycastScene:
    """Adapter giving a bare open3d RaycastingScene the SimScene interface the lidar needs.

    ``materials``: geometry id -> 0 diffuse / 1 reflective / 2 transparent (default diffuse);
    ``albedo``: geometry id -> grey albedo in [0, 1] (default ``default_albedo``).
    """

    def __init__(self, raycasting: o3d.t.geometry.RaycastingScene, tripod_camera_pose: np.ndarray | None = None,
                 materials: dict[int, int] | None = None, albedo: dict[int, float] | None = None,
                 default_albedo: float = 0.5, name: str = "raycast", seed: int = 0):
        self.raycasting = raycasting
        self.tripod_camera_pose = np.eye(4) if tripod_camera_pose is None else np.asarray(tripod_camera_pose, float)
        self.materials = dict(materials or {})
        self.albedo = dict(albedo or {})
        self.default_albedo = float(default_albedo)
        self.name = name
        self.seed = seed

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> RayHits:
        return cast_raycasting(self.raycasting, origins, directions)

    def material_of(self, geometry_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(geometry_ids)
        out = np.zeros(ids.shape, dtype=np.int8)
        for gid, mat in self.materials.items():
            out[ids == gid] = mat
        return out

    def albedo_at(self, geometry_ids: np.ndarray, points_world: np.ndarray, normals: np.ndarray) -> np.ndarray:
        ids = np.asarray(geometry_ids)
        a = np.full(ids.shape, self.default_albedo)
        for gid, val in self.albedo.items():
            a[ids == gid] = val
        return np.repeat(a[:, None], 3, axis=1)


def cast_raycasting(rc: o3d.t.geometry.RaycastingScene, origins: np.ndarray, directions: np.ndarray) -> RayHits:
    """Cast (N, 3) rays (unit directions) in one open3d call; t = inf and id = -1 for misses."""
    rays = np.concatenate([origins, directions], axis=1).astype(np.float32)
    r = rc.cast_rays(o3d.core.Tensor(rays))
    t = r["t_hit"].numpy().astype(np.float64)
    gid = r["geometry_ids"].numpy().astype(np.int64)
    gid[~np.isfinite(t)] = -1
    return RayHits(t, gid, r["primitive_normals"].numpy().astype(np.float64), origins + directions * t[:, None])


def _cast(scene, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(scene, o3d.t.geometry.RaycastingScene):
        hits = cast_raycasting(scene, origins, directions)
    else:
        hits = scene.cast(origins, directions)
    t = np.asarray(hits.t, dtype=np.float64).reshape(-1)
    gid = np.asarray(hits.geometry_id).astype(np.int64).reshape(-1)
    hit = np.isfinite(t)
    gid = np.where(hit, gid, -1)
    return t, gid, np.asarray(hits.normal, dtype=np.float64).reshape(-1, 3)


def _materials(scene, gid: np.ndarray) -> np.ndarray:
    out = np.zeros(gid.shape, dtype=np.int8)
    fn = getattr(scene, "material_of", None)
    hit = gid >= 0
    if fn is not None and hit.any():
        out[hit] = np.asarray(fn(gid[hit])).astype(np.int8).reshape(-1)
    return out


def _albedo(scene, gid: np.ndarray, points: np.ndarray, normals: np.ndarray, textured: bool = False) -> np.ndarray:
    """Grey NIR albedo in [0.02, 1] of each hit: mean of the scene's RGB albedo (0.5 without albedo_at).

    Unless ``textured``, parts with a procedural 'noise' texture use their base colour (the full
    texture costs ~0.5 s per frame); boards, steps and constants are evaluated exactly.
    """
    a = np.full(gid.shape, 0.5)
    fn = getattr(scene, "albedo_at", None)
    hit = gid >= 0
    if fn is None or not hit.any():
        return a
    exact = hit.copy()
    parts = getattr(scene, "parts", None)
    if parts is not None and not textured:
        base = np.array([np.mean(p.texture.base_rgb) if getattr(p.texture, "kind", "") == "noise" else np.nan
                         for p in parts] + [np.nan])
        b = base[np.where(hit, gid, len(parts))]
        cheap = hit & np.isfinite(b)
        a[cheap] = b[cheap]
        exact &= ~cheap
    if exact.any():
        rgb = np.asarray(fn(gid[exact], points[exact], normals[exact]), dtype=float)
        a[exact] = rgb.reshape(exact.sum(), -1).mean(axis=1)
    return np.clip(a, 0.02, 1.0)


@dataclass(frozen=True)
class LidarNoise:
    """Sensor effects of the twin (all switchable; :meth:`exact` turns every one off).

    range_sigma_m: 1-sigma range noise at high signal (grows as sqrt(signal_ref / signal), at most 3x).
    min_range_m / max_range_m: blind zone and far limit (the far limit is for 80 % albedo and
    scales with sqrt(albedo / 0.8)). dropout_reflective: chance a reflective surface gives no return.
    transparent_drop / transparent_surface: chance a transparent surface gives no return / a weak
    return at the surface; otherwise the beam passes to the next surface. mixed_pixel_prob: chance a
    horizontal depth gap larger than mixed_edge_m gives a mixed pixel (range between the two): two adjacent
    columns that hit surfaces not joined between them (see :func:`_continuous_surface`). Two columns on one
    continuous surface at grazing incidence (a corridor wall: 0.8 m apart in range at 12 m) give no mixed pixel:
    the echo is one pulse around the beam's own range, not a value toward the next column's.
    grazing_cos: below this incidence cosine returns drop out with rising probability.
    textured_albedo: evaluate the full procedural texture for SIGNAL/REFLECTIVITY (slow).
    """

    range_sigma_m: float = 0.01
    min_range_m: float = 0.3
    max_range_m: float = 50.0
    dropout_reflective: float = 0.8
    transparent_drop: float = 0.3
    transparent_surface: float = 0.15
    mixed_pixel_prob: float = 0.5
    mixed_edge_m: float = 0.15
    grazing_cos: float = 0.08
    signal_ref: float = 300.0
    textured_albedo: bool = False

    @classmethod
    def exact(cls, min_range_m: float = 0.0) -> "LidarNoise":
        """No noise, no dropouts, no mixed pixels (ranges exact up to 1 mm quantisation)."""
        return cls(range_sigma_m=0.0, min_range_m=min_range_m, max_range_m=1e6, dropout_reflective=0.0,
                   transparent_drop=0.0, transparent_surface=1.0, mixed_pixel_prob=0.0, grazing_cos=0.0)

    @classmethod
    def from_rig(cls, rig) -> "LidarNoise":
        return cls(range_sigma_m=float(rig.sim.range_noise_m))


@dataclass
class FrameCast:
    """Noise-free geometry of one frame (staggered H x W layout; world = scene frame).

    t_beam: distance (m) from each pixel's beam origin to the first surface (inf: miss).
    geometry_id: -1 for a miss. t_behind / id_behind / normal_behind: next surface behind a
    transparent first hit (inf / -1 elsewhere). col_times (W,) s; col_poses (W, 4, 4) T_world_lidar.
    """

    t_beam: np.ndarray
    geometry_id: np.ndarray
    normal: np.ndarray
    material: np.ndarray
    t_behind: np.ndarray
    id_behind: np.ndarray
    normal_behind: np.ndarray
    origins_world: np.ndarray
    dirs_world: np.ndarray
    col_times: np.ndarray
    col_poses: np.ndarray

    def hit_points_world(self) -> np.ndarray:
        """(H, W, 3) world points of the first surfaces (nan for misses)."""
        t = np.where(np.isfinite(self.t_beam), self.t_beam, np.nan)
        return self.origins_world + self.dirs_world * t[..., None]


def column_poses(pose_fn: PoseFn, model: OS0Model, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """(times (W,) s, T_world_lidar (W, 4, 4)) of the columns of a frame starting at ``t0``."""
    times = t0 + model.column_times()
    poses = np.asarray(pose_fn(times), dtype=float)
    if poses.shape == (4, 4):
        poses = np.broadcast_to(poses, (times.size, 4, 4))
    if poses.shape != (times.size, 4, 4):
        raise ValueError(f"pose_fn returned shape {poses.shape}, expected ({times.size}, 4, 4)")
    return times, poses


def cast_frame(scene, model: OS0Model, pose_fn: PoseFn, t0: float) -> FrameCast:
    """Cast all H x W rays of the frame starting at ``t0`` (s) in one scene call (+1 for glass)."""
    times, poses = column_poses(pose_fn, model, t0)
    R, p = poses[:, :3, :3], poses[:, :3, 3]
    dirs = np.einsum("wij,hwj->hwi", R, model.directions)
    origins = np.einsum("wij,hwj->hwi", R, model.beam_origins) + p[None]
    shape = dirs.shape[:2]
    t, gid, nrm = _cast(scene, origins.reshape(-1, 3), dirs.reshape(-1, 3))
    mat = _materials(scene, gid)
    t_b = np.full_like(t, np.inf)
    id_b = np.full_like(gid, -1)
    n_b = np.zeros_like(nrm)
    glass = (mat == TRANSPARENT) & np.isfinite(t)
    if glass.any():
        o2 = origins.reshape(-1, 3)[glass] + dirs.reshape(-1, 3)[glass] * (t[glass] + 1e-3)[:, None]
        t2, g2, n2 = _cast(scene, o2, dirs.reshape(-1, 3)[glass])
        t_b[glass] = t[glass] + 1e-3 + t2
        id_b[glass] = g2
        n_b[glass] = n2
    return FrameCast(t.reshape(shape), gid.reshape(shape), nrm.reshape(*shape, 3), mat.reshape(shape),
                     t_b.reshape(shape), id_b.reshape(shape), n_b.reshape(*shape, 3), origins, dirs, times, poses)


def _continuous_surface(scene, cast: FrameCast, pairs: np.ndarray, steps: int = 8) -> np.ndarray:
    """(H, W-1) bool: of the adjacent-column pairs ``pairs`` (H, W-1), those whose two beams hit one continuous
    surface (a wall at grazing incidence, a crease): ``steps - 1`` rays cast evenly between them see inverse range
    change in steps of which none holds half the change between the two (on a plane 1/range is linear in the sine of
    the angle to it, so the steps are even however grazing; a crease splits them between its two faces). Across a
    gap one step holds nearly all of it."""
    out = np.zeros(pairs.shape, bool)
    rows, cols = np.nonzero(pairs)
    if not len(rows):
        return out
    o_a, o_b = cast.origins_world[rows, cols], cast.origins_world[rows, cols + 1]
    d_a, d_b = cast.dirs_world[rows, cols], cast.dirs_world[rows, cols + 1]
    f = np.arange(1, steps)[:, None, None] / steps  # (steps-1, 1, 1)
    d = (1 - f) * d_a + f * d_b
    d /= np.linalg.norm(d, axis=2, keepdims=True)
    t_mid = _cast(scene, ((1 - f) * o_a + f * o_b).reshape(-1, 3), d.reshape(-1, 3))[0].reshape(steps - 1, -1)
    w = np.vstack([1.0 / cast.t_beam[rows, cols], 1.0 / t_mid, 1.0 / cast.t_beam[rows, cols + 1]])  # 1/inf = 0: a miss
    out[rows, cols] = np.abs(np.diff(w, axis=0)).max(axis=0) < 0.5 * np.abs(w[-1] - w[0])
    return out


def frame_from_cast(scene, model: OS0Model, cast: FrameCast, frame_id: int, rng: np.random.Generator,
                    noise: LidarNoise) -> core.LidarFrame:
    """Apply the sensor effects to a cast and fill an ouster LidarFrame (RANGE mm, staggered)."""
    H, W = cast.t_beam.shape
    t = cast.t_beam.copy()
    gid = cast.geometry_id.copy()
    nrm = cast.normal.copy()
    mat = cast.material
    hit = np.isfinite(t)
    u = rng.random((H, W))
    # transparent: drop / weak surface return / pass through to the surface behind
    glass = hit & (mat == TRANSPARENT)
    pass_through = glass & (u >= noise.transparent_drop + noise.transparent_surface)
    t[pass_through] = cast.t_behind[pass_through]
    gid[pass_through] = cast.id_behind[pass_through]
    nrm[pass_through] = cast.normal_behind[pass_through]
    glass_surface = glass & (u >= noise.transparent_drop) & ~pass_through
    drop = glass & (u < noise.transparent_drop)
    refl = hit & (mat == REFLECTIVE)
    drop |= refl & (u < noise.dropout_reflective)
    hit = np.isfinite(t) & (gid >= 0) & ~drop

    pts = cast.origins_world + cast.dirs_world * np.where(hit, t, 0.0)[..., None]
    albedo = _albedo(scene, np.where(hit, gid, -1).reshape(-1), pts.reshape(-1, 3), nrm.reshape(-1, 3),
                     noise.textured_albedo).reshape(H, W)
    cos_inc = np.abs(np.einsum("hwi,hwi->hw", nrm, cast.dirs_world))
    rng_m = t + model.beam_origin_m  # the RANGE the sensor reports (origin offset included)
    r_eff = np.maximum(np.where(hit, rng_m, 1.0), 0.5)
    eff_albedo = np.where(glass_surface, 0.05, albedo)
    signal = 600.0 * 9.0 / 0.5 * eff_albedo * np.maximum(cos_inc, 0.02) / r_eff**2
    signal = np.where(refl & hit, signal * 4.0, signal)
    signal = rng.poisson(np.clip(signal, 0, 6e4)).astype(float) if noise.range_sigma_m > 0 else signal
    # range limits and grazing dropouts
    r_max = noise.max_range_m * np.sqrt(eff_albedo / 0.8)
    hit &= (rng_m >= noise.min_range_m) & (rng_m <= r_max)
    if noise.grazing_cos > 0:
        hit &= ~((cos_inc < noise.grazing_cos) & (rng.random((H, W)) < 1.0 - cos_inc / noise.grazing_cos))
    # mixed pixels at horizontal depth gaps (same beam, adjacent columns; not on one continuous surface)
    rng_true = np.where(hit, rng_m, np.inf)
    if noise.mixed_pixel_prob > 0:
        fin = np.isfinite(rng_true)
        both = fin[:, :-1] & fin[:, 1:]
        a = np.where(both, rng_true[:, :-1], 0.0)
        b = np.where(both, rng_true[:, 1:], 0.0)
        edge = both & (np.abs(a - b) > noise.mixed_edge_m)
        edge &= rng.random(edge.shape) < noise.mixed_pixel_prob
        edge &= ~_continuous_surface(scene, cast, edge)  # after the draw: only the pairs that would mix are cast
        frac = rng.uniform(0.1, 0.9, edge.shape)
        mixed = np.minimum(a, b) + frac * np.abs(a - b)
        far_is_b = b > a
        rows, cols = np.nonzero(edge)
        tgt_cols = np.where(far_is_b[rows, cols], cols + 1, cols)
        rng_m = rng_m.copy()
        rng_m[rows, tgt_cols] = mixed[rows, cols]
    sigma = noise.range_sigma_m * np.clip(np.sqrt(noise.signal_ref / np.maximum(signal, 1.0)), 1.0, 3.0)
    if noise.range_sigma_m > 0:
        rng_m = rng_m + rng.standard_normal((H, W)) * sigma
    range_mm = np.where(hit, np.round(rng_m * 1000.0), 0)
    range_mm = np.clip(range_mm, 0, 2**19 - 1).astype(np.uint32)  # RNG19 field width (mm)
    valid = range_mm > 0

    reflectivity = np.where(refl, 100 + 100 * albedo, 100 * eff_albedo)
    ambient = 60.0 + 350.0 * np.where(np.isfinite(cast.t_beam), albedo, 0.1)
    if noise.range_sigma_m > 0:
        ambient = rng.poisson(ambient).astype(float)

    frame = core.LidarFrame(model.info)
    frame.field("RANGE")[:] = range_mm
    frame.field("SIGNAL")[:] = np.where(valid, np.clip(signal, 1, 65535), 0).astype(np.uint16)
    frame.field("REFLECTIVITY")[:] = np.where(valid, np.clip(reflectivity, 1, 255), 0).astype(np.uint8)
    frame.field("NEAR_IR")[:] = np.clip(ambient, 0, 65535).astype(np.uint16)
    frame.timestamp[:] = np.round(cast.col_times * 1e9).astype(np.uint64)
    frame.measurement_id[:] = np.arange(W, dtype=np.uint16)
    frame.status[:] = 1
    frame.frame_id = int(frame_id) & 0xFFFF
    return frame


def simulate_frame(scene, model: OS0Model, pose_fn: PoseFn, t0: float, frame_id: int,
                   rng: np.random.Generator, noise: LidarNoise) -> core.LidarFrame:
    """One ouster LidarFrame of the frame starting at ``t0`` (s) seen along ``pose_fn`` (T_world_lidar(t))."""
    return frame_from_cast(scene, model, cast_frame(scene, model, pose_fn, t0), frame_id, rng, noise)


def constant_pose(T: np.ndarray) -> PoseFn:
    """A pose function that always returns ``T`` (the tripod)."""
    T = np.asarray(T, dtype=float)
    return lambda times: np.broadcast_to(T, (np.size(times), 4, 4)).copy()


def true_extrinsic(rig) -> np.ndarray:
    """The twin's true T_camera_lidar: ``rig.extrinsic`` perturbed by a fixed 0.55 deg rotation and ~6 mm."""
    from scipy.spatial.transform import Rotation

    d = np.eye(4)
    d[:3, :3] = Rotation.from_rotvec(np.radians(_TRUE_DROT_DEG) * _TRUE_DROT_AXIS / np.linalg.norm(_TRUE_DROT_AXIS)).as_matrix()
    d[:3, 3] = _TRUE_DT_M
    return rig.extrinsic @ d


def write_osf(path: Path, model: OS0Model, frames, pcap_path: Path | None = None) -> int:
    """Write frames (an iterable of LidarFrame) to an OSF file atomically; returns the count.

    With ``pcap_path`` the same frames also go, as lidar UDP packets, to a pcap file with the
    sensor metadata beside it (``pcap_path`` with suffix .json), readable by
    ``open_source(pcap, meta=[json])``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    writer = osf.Writer(str(tmp), model.info)
    n = 0
    try:
        if pcap_path is None:
            for frame in frames:
                writer.save(0, frame)
                n += 1
        else:
            from ouster.sdk import pcap

            pcap_path = Path(pcap_path)
            ptmp = pcap_path.with_name(f".{pcap_path.name}.partial")
            fmt = core.PacketFormat(model.info)
            sn = int(model.info.sn) if str(model.info.sn).isdigit() else 0

            def packets():
                nonlocal n
                for frame in frames:
                    writer.save(0, frame)
                    n += 1
                    for i, p in enumerate(core.frame_to_packets(frame, fmt, model.info.init_id, sn)):
                        p.host_timestamp = int(frame.timestamp[0]) + 1000 * i
                        yield p

            pcap.record(packets(), str(ptmp))
            atomic_write_text(pcap_path.with_suffix(".json"), model.info.to_json_string())
            os.replace(ptmp, pcap_path)
    finally:
        writer.close()
    os.replace(tmp, path)
    return n


def read_frames(path: str | Path, meta: str | Path | None = None) -> tuple[core.SensorInfo, list[core.LidarFrame]]:
    """Read every frame of an OSF (or pcap + metadata JSON) with ouster-sdk's open_source (test helper)."""
    from ouster.sdk import open_source

    kw = {"meta": [str(meta)]} if meta is not None else {}
    src = open_source(str(path), **kw)
    frames = [fs[0] for fs in src if fs[0] is not None]
    info = src.sensor_info[0]
    src.close()
    return info, frames


class SimLidar:
    """The twin's Lidar backend (``devices.protocols.Lidar``): renders OSF recordings of a scene.

    ``SimLidar(twin_rig)`` (anything with ``.scene`` and ``.rig``; its current scene and, if it has
    one, ``.camera_pose`` are used at each recording) or ``SimLidar(scene, rig)``.
    The static pose is ``T_world_camera @ true_extrinsic(rig)``; the sweep is
    :func:`handheld_sweep` seeded by the scene seed. ``rig.sim.frames_per_sweep`` overrides the
    sweep length. After recording, ``.sweep`` holds the trajectory actually used.
    """

    def __init__(self, source, rig=None, *, noise: LidarNoise | None = None, seed: int | None = None,
                 also_pcap: bool = False):
        if rig is None:
            if not (hasattr(source, "scene") and hasattr(source, "rig")):
                raise TypeError("SimLidar(twin_rig) needs .scene and .rig, or call SimLidar(scene, rig)")
            self._twin, self._scene, rig = source, None, source.rig
        else:
            self._twin, self._scene = None, source
        self.rig = rig
        self.model = OS0Model.from_metadata(_metadata_path(rig), mode=rig.lidar.mode)
        self.noise = noise if noise is not None else LidarNoise.from_rig(rig)
        self.seed = int(seed if seed is not None else getattr(self.scene, "seed", 0) or 0)
        self.extrinsic = true_extrinsic(rig)
        self.sweep: SweepTrajectory | None = None
        self.also_pcap = also_pcap  # also write <path>.pcap + <path>.json beside each OSF

    def _pcap_for(self, path: Path) -> Path | None:
        return Path(path).with_suffix(".pcap") if self.also_pcap else None

    @property
    def scene(self):
        """The scene now (a twin rig's scene changes when a calibration board is placed)."""
        return self._twin.scene if self._twin is not None else self._scene

    @property
    def tripod_pose(self) -> np.ndarray:
        """T_world_lidar of the rig now: the twin's camera pose (moved for calibration) or the
        scene's tripod camera pose, times the true extrinsic."""
        cam = getattr(self._twin, "camera_pose", None)
        if cam is None:
            cam = self.scene.tripod_camera_pose
        return np.asarray(cam, dtype=float) @ self.extrinsic

    def sweep_trajectory(self, n_frames: int) -> SweepTrajectory:
        rate = float(self.rig.lidar.frequency_hz)
        return handheld_sweep(self.scene, self.seed, seconds=n_frames / rate, rate_hz=rate,
                              start_pose=self.tripod_pose, t0=SWEEP_T0_S)

    def sweep_frames(self, seconds: float) -> int:
        override = self.rig.sim.frames_per_sweep
        return int(override) if override else max(1, int(round(seconds * self.rig.lidar.frequency_hz)))

    def record_static(self, path: Path) -> RecordingSummary:
        rng = np.random.default_rng([self.seed, 1, 0])
        frame = simulate_frame(self.scene, self.model, constant_pose(self.tripod_pose), STATIC_T0_S, 0, rng, self.noise)
        n = write_osf(path, self.model, [frame], self._pcap_for(path))
        return RecordingSummary(Path(path), n, 1, info={"backend": "sim", "mode": self.model.mode})

    def record_sweep(self, path: Path, seconds: float, progress: ProgressCallback | None = None) -> RecordingSummary:
        n = self.sweep_frames(seconds)
        traj = self.sweep_trajectory(n)
        self.sweep = traj
        scene = self.scene

        def frames():
            for k, t0 in enumerate(traj.frame_times):
                rng = np.random.default_rng([self.seed, 2, k])
                yield simulate_frame(scene, self.model, traj, float(t0), k, rng, self.noise)
                if progress is not None:
                    progress(k + 1, n)

        done = write_osf(path, self.model, frames(), self._pcap_for(path))
        return RecordingSummary(Path(path), done, n, info={"backend": "sim", "mode": self.model.mode,
                                                           "motion": traj.speed_stats()})


def _metadata_path(rig) -> Path:
    rel = rig.lidar.metadata_json
    if not rel:
        raise ValueError(f"{rig.source or rig.name}: lidar.metadata_json is required by the simulated lidar")
    p = Path(rel)
    if not p.is_absolute():
        from ..rig import RIGS_DIR

        p = RIGS_DIR.parent / p
    return p


def write_lidar_truth(truth_dir: Path, twin_rig) -> None:
    """Write the lidar truth: extrinsic.txt (true T_camera_lidar), static.tum (tripod T_world_lidar at the
    static frame time), trajectory.tum (T_world_lidar at each sweep frame's first-column time) and
    trajectory_dense.tum (200 Hz over the sweep; per-column poses = interpolation, error < 0.01 mm)."""
    truth_dir = Path(truth_dir)
    truth_dir.mkdir(parents=True, exist_ok=True)
    lidar = getattr(twin_rig, "lidar", None)
    if not isinstance(lidar, SimLidar):
        lidar = SimLidar(twin_rig)
    traj = lidar.sweep or lidar.sweep_trajectory(lidar.sweep_frames(lidar.rig.capture.sweep_seconds))
    atomic_save_txt(truth_dir / "extrinsic.txt", lidar.extrinsic,
                    header="true T_camera_lidar (lidar = Ouster sensor frame), metres")
    write_tum(truth_dir / "static.tum", np.array([STATIC_T0_S]), lidar.tripod_pose[None],
              header="T_world_lidar of the static (tripod) frame; time = first column timestamp (s)")
    write_tum(truth_dir / "trajectory.tum", traj.frame_times, traj(traj.frame_times),
              header="T_world_lidar of each sweep frame at its first column timestamp (s); "
                     f"column c of a frame is fired at t + c / ({lidar.model.w} * {lidar.rig.lidar.frequency_hz})")
    dense_t = np.arange(traj.t0, traj.end_time + 1e-9, 1.0 / DENSE_TRUTH_HZ)
    write_tum(truth_dir / "trajectory_dense.tum", dense_t, traj(dense_t),
              header=f"T_world_lidar every {1000 / DENSE_TRUTH_HZ:g} ms over the sweep (interpolate for per-column poses)")
