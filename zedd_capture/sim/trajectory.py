"""Lidar poses of the twin: the tripod pose and a smooth, seeded hand-held sweep.

Poses are ``T_world_lidar`` 4x4 (metres), where "lidar" is the Ouster *sensor* frame (x forward,
y left, z up) in which ``core.XYZLut`` reports points. Times are seconds on the sensor clock
(the OSF column timestamps divided by 1e9).

The sweep's position is a C2 cubic spline (starting at rest at the tripod) through waypoints of a
seeded random walk in the free space of the scene: each straight leg keeps ``clearance_m`` from
every surface and stays within ``max_radius_m`` of the tripod, legs are walked at 0.35-0.8 m/s
and the time axis is stretched until the peak speed is at most ``max_speed_mps``. The orientation
is the start orientation turned by a sum of sinusoids (yaw about world up, pitch and roll about the
sensor's own axes, each zero at the start), scaled to a peak angular rate of ``max_rate_dps``.
The plan covers a fixed horizon, so a shorter sweep is a prefix of a longer one (same seed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import open3d as o3d
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation

# Start of every sweep: offsets (m, tripod camera frame: x right, y down, z forward) visited around the
# tripod viewpoint before the walk (see handheld_sweep's ``dwell_legs``).
_DWELL_OFFSETS_CAM = ((0.3, -0.05, -0.1), (-0.3, 0.15, -0.15), (0.2, 0.2, -0.25), (-0.2, -0.1, -0.2))

# Fixed horizon over which the clearance of a sweep is checked (s); sweeps are prefixes of it.
PLAN_HORIZON_S = 90.0


def tripod_lidar_pose(scene, extrinsic: np.ndarray) -> np.ndarray:
    """T_world_lidar of the tripod: ``scene.tripod_camera_pose @ T_camera_lidar`` (extrinsic = T_camera_lidar)."""
    return np.asarray(scene.tripod_camera_pose, dtype=float) @ np.asarray(extrinsic, dtype=float)


def world_up(scene) -> np.ndarray:
    """World up vector: minus the tripod camera's y axis (OpenCV y points down), snapped to an axis if within 20 deg."""
    R = np.asarray(scene.tripod_camera_pose, dtype=float)[:3, :3]
    up = -R[:, 1] / np.linalg.norm(R[:, 1])
    k = int(np.argmax(np.abs(up)))
    if abs(up[k]) > np.cos(np.radians(20)):
        snapped = np.zeros(3)
        snapped[k] = np.sign(up[k])
        return snapped
    return up


@dataclass(frozen=True)
class SweepTrajectory:
    """A smooth pose function ``T_world_lidar(t)`` and the frame start times of one sweep.

    Attributes:
        start_pose: T_world_lidar at ``t0``; up: (3,) world up.
        t0: time of the first frame start (s); frames start at ``t0 + k / rate_hz``.
        n_frames: number of frames; rate_hz: frame rate.
        knot_times (M,) s and waypoints (M, 3) world metres of the position spline.
        ang_amp (K, 3): (yaw, pitch, roll) amplitudes in radians; ang_omega (K, 3) rad/s; ang_phase (K, 3).
    """

    start_pose: np.ndarray
    up: np.ndarray
    t0: float
    n_frames: int
    rate_hz: float
    knot_times: np.ndarray
    waypoints: np.ndarray
    ang_amp: np.ndarray
    ang_omega: np.ndarray
    ang_phase: np.ndarray

    @property
    def frame_times(self) -> np.ndarray:
        """(n_frames,) start time of each frame (s)."""
        return self.t0 + np.arange(self.n_frames) / self.rate_hz

    @property
    def end_time(self) -> float:
        return self.t0 + self.n_frames / self.rate_hz

    def with_frames(self, n_frames: int) -> "SweepTrajectory":
        return replace(self, n_frames=int(n_frames))

    @property
    def spline(self) -> CubicSpline:
        sp = self.__dict__.get("_spline")
        if sp is None:
            sp = CubicSpline(self.knot_times, self.waypoints, bc_type=((1, np.zeros(3)), (1, np.zeros(3))))
            object.__setattr__(self, "_spline", sp)
        return sp

    def positions(self, t: np.ndarray) -> np.ndarray:
        t = np.clip(np.asarray(t, dtype=float).reshape(-1), self.knot_times[0], self.knot_times[-1])
        return self.spline(t)

    def rotations(self, t: np.ndarray) -> np.ndarray:
        s = np.asarray(t, dtype=float).reshape(-1)[:, None, None] - self.t0
        a = np.sum(self.ang_amp * (np.sin(self.ang_omega * s + self.ang_phase) - np.sin(self.ang_phase)), axis=1)
        yaw = Rotation.from_rotvec(a[:, :1] * self.up)
        local = Rotation.from_euler("YX", a[:, 1:3])  # pitch about sensor y, then roll about sensor x
        R0 = Rotation.from_matrix(self.start_pose[:3, :3])
        return (yaw * R0 * local).as_matrix()

    def __call__(self, t: np.ndarray | float) -> np.ndarray:
        """Poses (N, 4, 4) at times ``t`` (s); a scalar gives (1, 4, 4)."""
        t = np.atleast_1d(np.asarray(t, dtype=float))
        T = np.tile(np.eye(4), (t.size, 1, 1))
        T[:, :3, :3] = self.rotations(t)
        T[:, :3, 3] = self.positions(t)
        return T

    def speed_stats(self, dt: float = 0.02) -> dict:
        """Linear speed (m/s) and angular rate (deg/s) statistics over the sweep."""
        t = np.arange(self.t0, self.end_time + dt / 2, dt)
        return motion_stats(self(t), dt)


def motion_stats(poses: np.ndarray, dt: float) -> dict:
    """mean/min/max speed (m/s) and mean/max angular rate (deg/s) of poses sampled every ``dt`` s."""
    v = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1) / dt
    rel = np.einsum("nji,njk->nik", poses[:-1, :3, :3], poses[1:, :3, :3])
    w = np.degrees(Rotation.from_matrix(rel).magnitude()) / dt
    return {"speed_mean": float(v.mean()), "speed_min": float(v.min()), "speed_max": float(v.max()),
            "speed_p10": float(np.percentile(v, 10)), "rate_mean_dps": float(w.mean()), "rate_max_dps": float(w.max())}


def _raycasting(scene) -> o3d.t.geometry.RaycastingScene:
    if isinstance(scene, o3d.t.geometry.RaycastingScene):
        return scene
    rc = getattr(scene, "raycasting", None)
    if rc is None:
        raise TypeError(f"{type(scene).__name__}: needs a .raycasting open3d RaycastingScene for clearance checks")
    return rc


def path_clearance(scene, points: np.ndarray, up: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """(N,) distance (m) from each point to the nearest surface; -1 where the point is not enclosed
    (a ray along +-e1, +-e2 or down escapes the scene; up may see the sky)."""
    rc = _raycasting(scene)
    pts = np.asarray(points, dtype=np.float32)
    dist = rc.compute_distance(o3d.core.Tensor(pts)).numpy().astype(float)
    dirs = np.stack([e1, -e1, e2, -e2, -up]).astype(np.float32)
    rays = np.concatenate([np.hstack([pts, np.broadcast_to(d, pts.shape)]) for d in dirs]).astype(np.float32)
    t = rc.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy().reshape(len(dirs), -1)
    dist[~np.all(np.isfinite(t), axis=0)] = -1.0
    return dist


def handheld_sweep(
    scene,
    seed: int,
    seconds: float = 60.0,
    rate_hz: float = 10.0,
    start_pose: np.ndarray | None = None,
    t0: float = 0.0,
    *,
    clearance_m: float = 0.45,
    max_radius_m: float = 3.5,
    max_speed_mps: float = 1.0,
    max_rate_dps: float = 55.0,
    dwell_legs: int = 4,
) -> SweepTrajectory:
    """A seeded hand-held sweep starting (at rest) at ``start_pose`` (default: the tripod camera pose
    with nominal lidar axes) that wanders through the free space of ``scene`` (see module doc).
    The first ``dwell_legs`` legs (0.2-0.3 m/s) visit offsets around the camera's viewpoint (skipped
    where they would hit a surface), so that near objects are seen from the camera's side.

    Raises ValueError when no leg can leave the start keeping clearance from the surfaces.
    """
    if start_pose is None:
        cam_from_lidar = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=float)
        start_pose = tripod_lidar_pose(scene, cam_from_lidar)
    start_pose = np.asarray(start_pose, dtype=float)
    up = world_up(scene)
    e1 = np.cross(up, [0.0, 1.0, 0.0]) if abs(up[1]) < 0.9 else np.cross(up, [0.0, 0.0, 1.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    rng = np.random.default_rng([int(seed), 4004])
    horizon = max(PLAN_HORIZON_S, float(seconds)) + 5.0
    p0 = start_pose[:3, 3]
    start_clear = path_clearance(scene, p0[None], up, e1, e2)[0]
    need = clearance_m if start_clear <= 0 else min(clearance_m, 0.8 * start_clear)

    def leg_ok(a: np.ndarray, b: np.ndarray) -> bool:
        n = max(2, int(np.ceil(np.linalg.norm(b - a) / 0.05)) + 1)
        pts = a + (b - a) * np.linspace(0, 1, n)[:, None]
        c = path_clearance(scene, pts, up, e1, e2)
        # leaving the start the clearance may be as small as the start's own
        return bool(np.all(c >= np.minimum(clearance_m, need + np.linalg.norm(pts - p0, axis=1))))

    points, times = [p0], [0.0]
    # sweep protocol: the operator first moves the bar slowly around the camera's viewpoint (lateral,
    # vertical and a little backwards, in the tripod camera's axes), so near objects in the camera's
    # view are sampled from its side before the walk through the scene
    R_cam = np.asarray(scene.tripod_camera_pose, dtype=float)[:3, :3]
    for off in _DWELL_OFFSETS_CAM[: int(round(dwell_legs))]:
        cand = p0 + R_cam @ (np.asarray(off) * rng.uniform(0.8, 1.2))
        if leg_ok(points[-1], cand):
            times.append(times[-1] + np.linalg.norm(cand - points[-1]) / rng.uniform(0.2, 0.3))
            points.append(cand)
    heading = rng.uniform(0, 2 * np.pi)
    while times[-1] < horizon:
        cur = points[-1]
        for attempt in range(60):
            length = rng.uniform(0.8, 2.2) if attempt < 40 else rng.uniform(0.3, 0.8)
            heading_try = heading + rng.normal(0, 0.9 if attempt < 20 else 2.5)
            step = length * (np.cos(heading_try) * e1 + np.sin(heading_try) * e2)
            dz = np.clip(np.dot(cur - p0, up) + rng.uniform(-0.15, 0.15), -0.3, 0.15) - np.dot(cur - p0, up)
            cand = cur + step + dz * up
            if np.linalg.norm((cand - p0) - np.dot(cand - p0, up) * up) > max_radius_m:
                continue
            if leg_ok(cur, cand):
                heading = heading_try
                break
        else:
            if len(points) == 1:
                raise ValueError(f"handheld_sweep: no free leg leaves the start pose (seed {seed}, clearance {need:.2f} m)")
            cand = points[-2]  # stuck: walk back the way we came
            heading += np.pi
        points.append(cand)
        times.append(times[-1] + np.linalg.norm(cand - cur) / rng.uniform(0.35, 0.8))
    knots = np.asarray(times)
    wps = np.asarray(points)
    no_turn = (np.zeros((1, 3)), np.ones((1, 3)), np.zeros((1, 3)))
    # the spline may cut corners or overshoot: add the midpoints of the (clear) straight legs near
    # any spot that comes closer than 0.75 clearance until the whole curve is clear
    for _ in range(40):
        traj = SweepTrajectory(start_pose, up, float(t0), int(round(horizon * rate_hz)), float(rate_hz),
                               float(t0) + knots, wps, *no_turn)
        ts = np.arange(knots[0], knots[-1], 0.05)
        P = traj.positions(float(t0) + ts)
        c = path_clearance(scene, P, up, e1, e2)
        bad = c < np.minimum(0.75 * clearance_m, need + np.linalg.norm(P - p0, axis=1))
        if not bad.any():
            break
        legs = np.unique(np.clip(np.searchsorted(knots, ts[bad], side="right") - 1, 0, len(knots) - 2))
        knots = np.insert(knots, legs + 1, (knots[legs] + knots[legs + 1]) / 2)
        wps = np.insert(wps, legs + 1, (wps[legs] + wps[legs + 1]) / 2, axis=0)
    else:
        raise ValueError(f"handheld_sweep: the smoothed path keeps hitting surfaces (seed {seed})")
    vmax = traj.speed_stats(dt=0.02)["speed_max"]
    if vmax > max_speed_mps:
        traj = replace(traj, knot_times=float(t0) + knots * (vmax / (0.98 * max_speed_mps)))
    # orientation: yaw sweeps, pitch and roll wobble, scaled to the peak angular rate
    K = 3
    ang_amp = np.stack([rng.uniform(0.4, 0.9, K), rng.uniform(0.05, 0.15, K), rng.uniform(0.03, 0.08, K)], 1)
    ang_omega = 2 * np.pi / np.stack([rng.uniform(5.0, 15.0, K), rng.uniform(3.0, 9.0, K), rng.uniform(3.0, 9.0, K)], 1)
    ang_phase = rng.uniform(0, 2 * np.pi, (K, 3))
    traj = replace(traj, ang_amp=ang_amp, ang_omega=ang_omega, ang_phase=ang_phase)
    f_ang = max_rate_dps / max(traj.speed_stats(dt=0.02)["rate_max_dps"], 1e-9)
    return replace(traj, ang_omega=ang_omega * f_ang).with_frames(max(1, int(round(seconds * rate_hz))))
