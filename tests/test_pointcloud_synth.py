"""Synthetic lidar frames for the point-cloud tests (independent of the twin): a small room with
boxes ray-cast by open3d along a smooth hand-held trajectory, with per-column timestamps.

Also imported by the other tests/test_pointcloud_*.py files and by bench/ as a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
from scipy.spatial.transform import Rotation

from zedd_capture.pointcloud.io import LidarFrameData


def room_scene(seed: int = 0):
    """RaycastingScene: 7 x 5 x 3 m room (inside faces) with a few boxes; returns (scene, meshes)."""
    rng = np.random.default_rng(seed)
    meshes = []
    room = o3d.geometry.TriangleMesh.create_box(7.0, 5.0, 3.0)
    room.translate((-3.5, -2.5, -1.2))
    meshes.append(room)
    for _ in range(6):
        s = rng.uniform(0.3, 1.0, 3)
        b = o3d.geometry.TriangleMesh.create_box(*s)
        c = np.array([rng.uniform(-3, 3) - s[0] / 2, rng.uniform(-2.2, 2.2) - s[1] / 2, -1.2])
        if np.linalg.norm(c[:2]) < 1.2:
            c[0] += 1.5
        b.translate(c)
        b.rotate(Rotation.from_euler("z", rng.uniform(0, 90), degrees=True).as_matrix(), center=b.get_center())
        meshes.append(b)
    sphere = o3d.geometry.TriangleMesh.create_sphere(0.4, resolution=40)
    sphere.translate((2.0, -1.5, 0.3))
    meshes.append(sphere)
    scene = o3d.t.geometry.RaycastingScene()
    for m in meshes:
        scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))
    return scene, meshes


def pose_at(t: np.ndarray, seed: int = 0, amplitude: float = 1.0) -> np.ndarray:
    """Smooth hand-held-like T_world_lidar(t) (..., 4, 4): slow walk plus wobble (units m, rad)."""
    t = np.atleast_1d(np.asarray(t, dtype=float))
    rng = np.random.default_rng(1000 + seed)
    ph = rng.uniform(0, 2 * np.pi, 6)
    a = amplitude
    x = a * (0.25 * np.sin(0.5 * t + ph[0]) + 0.02 * np.sin(3.1 * t + ph[1]))
    y = a * (0.20 * np.sin(0.37 * t + ph[2]) + 0.02 * np.sin(2.3 * t + ph[3]))
    z = a * 0.05 * np.sin(0.9 * t + ph[4])
    yaw = a * (0.6 * np.sin(0.3 * t + ph[5]) + 0.05 * np.sin(2.7 * t))
    pitch = a * 0.08 * np.sin(1.3 * t + ph[1])
    roll = a * 0.06 * np.sin(1.7 * t + ph[2])
    T = np.tile(np.eye(4), (len(t), 1, 1))
    T[:, :3, :3] = Rotation.from_euler("zyx", np.stack([yaw, pitch, roll], 1)).as_matrix()
    T[:, :3, 3] = np.stack([x, y, z], 1)
    return T


@dataclass
class SynthSweep:
    frames: list[LidarFrameData]
    poses: np.ndarray  # true T_world_lidar at each frame's t_ref (world = room frame)
    times: np.ndarray
    scene: object


def beam_layout(n_beams: int = 64):
    return np.radians(np.linspace(45.0, -45.0, n_beams))


def simulate_frame(scene, pose_fn, t0: float, n_beams=64, n_cols=512, rate_hz=10.0, noise=0.0, rng=None, frame_id=0):
    """One frame: columns at t0 + j/(n_cols*rate) with the pose of their own time; sensor-frame points."""
    alt = beam_layout(n_beams)
    col_t = t0 + np.arange(n_cols) / (n_cols * rate_hz)
    az = 2 * np.pi * np.arange(n_cols) / n_cols
    poses = pose_fn(col_t)  # (W, 4, 4)
    d = np.stack(
        [np.cos(alt)[:, None] * np.cos(az)[None, :], np.cos(alt)[:, None] * np.sin(az)[None, :], np.sin(alt)[:, None] * np.ones(n_cols)],
        -1,
    )  # (H, W, 3) sensor frame
    dw = np.einsum("wij,hwj->hwi", poses[:, :3, :3], d)
    ow = np.broadcast_to(poses[None, :, :3, 3], dw.shape)
    rays = np.concatenate([ow, dw], -1).reshape(-1, 6).astype(np.float32)
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    t = hit["t_hit"].numpy().reshape(n_beams, n_cols).astype(np.float64)
    if noise and rng is not None:
        t = t + rng.normal(0, noise, t.shape)
    valid = np.isfinite(t) & (t > 0.3) & (t < 50)
    pts = d * np.where(valid, t, 0)[..., None]
    t_ref = 0.5 * (col_t[0] + col_t[-1])
    cols = np.broadcast_to(np.arange(n_cols), (n_beams, n_cols))[valid]
    return LidarFrameData(
        points=pts[valid].astype(np.float32),
        dt=(col_t - t_ref)[cols].astype(np.float32),
        ranges=t[valid].astype(np.float32),
        t_ref=float(t_ref),
        frame_id=frame_id,
    )


def make_sweep(n_frames=20, seed=0, n_beams=64, n_cols=512, noise=0.0, amplitude=1.0, rate_hz=10.0, t_start=0.0, scene=None):
    if scene is None:
        scene, _ = room_scene(seed)
    rng = np.random.default_rng(seed)
    fn = lambda t: pose_at(t, seed, amplitude)  # noqa: E731
    frames = [
        simulate_frame(scene, fn, t_start + i / rate_hz, n_beams, n_cols, rate_hz, noise, rng, frame_id=i) for i in range(n_frames)
    ]
    times = np.array([f.t_ref for f in frames])
    return SynthSweep(frames, fn(times), times, scene)


def surface_distance_m(scene, points: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Distance (m) of sensor-frame ``points`` placed with pose ``T`` to the nearest surface of ``scene``."""
    pw = (points @ T[:3, :3].T + T[:3, 3]).astype(np.float32)
    return scene.compute_distance(o3d.core.Tensor(pw)).numpy()


def test_synthetic_frame_points_lie_on_the_scene():
    scene, _ = room_scene(0)
    sw = make_sweep(2, n_beams=16, n_cols=128)
    f = sw.frames[0]
    assert len(f) > 1500
    # static check: points at dt = 0 columns transformed by the t_ref pose hit surfaces (distance ~ 0)
    T = sw.poses[0]
    near0 = np.abs(f.dt) < 0.006
    d = surface_distance_m(scene, f.points[near0], T)
    assert np.median(d) < 0.01
