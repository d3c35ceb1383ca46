"""Static-frame registration: FPFH + RANSAC global guess then ICP recovers the tripod pose;
a frame that does not belong to the cloud fails with RegistrationError."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
from scipy.spatial.transform import Rotation
from test_pointcloud_synth import make_sweep, pose_at, room_scene, simulate_frame

from zedd_capture.geometry import rotation_angle_deg
from zedd_capture.pointcloud.deskew import deskew_points, relative_velocity
from zedd_capture.pointcloud.register import RegisterConfig, RegistrationError, register_static


@pytest.fixture(scope="module")
def world():
    scene, _ = room_scene(5)
    sw = make_sweep(6, seed=5, n_beams=64, n_cols=512, noise=0.005, scene=scene)
    dt = 1e-3  # world cloud = frames deskewed with the true motion, placed at their true poses
    vel = [relative_velocity(pose_at(f.t_ref - dt, 5)[0], pose_at(f.t_ref + dt, 5)[0], 2 * dt) for f in sw.frames]
    pts = np.vstack([deskew_points(f.points, f.dt, v) @ T[:3, :3].T + T[:3, 3] for f, T, v in zip(sw.frames, sw.poses, vel)])
    return scene, pts


@pytest.mark.parametrize("noise_seed", range(4))
def test_register_recovers_tripod_pose(world, noise_seed):
    # a box room is nearly symmetric: with one RANSAC run, static frames of noise seeds 1, 7 and 9 landed 180 deg off
    # (fitness 0.72, which passes the 0.6 check) and seed 5 failed; ransac_runs=3 (the default): 10 of 10 right
    scene, pts = world
    T_true = np.eye(4)
    T_true[:3, :3] = Rotation.from_euler("zyx", [70, 3, -2], degrees=True).as_matrix()
    T_true[:3, 3] = [0.8, -0.5, 0.2]
    static = simulate_frame(scene, lambda t: np.broadcast_to(T_true, (np.size(t), 4, 4)), 0.0, 64, 1024, noise=0.005,
                            rng=np.random.default_rng(noise_seed))
    res = register_static(static.points, pts)
    # 0.2-0.4 mm and 0.006 deg off here (5 mm range noise, a 6-frame 64-beam map)
    assert np.linalg.norm(res.T_world_static[:3, 3] - T_true[:3, 3]) < 0.001
    assert rotation_angle_deg(res.T_world_static[:3, :3].T @ T_true[:3, :3]) < 0.02
    assert res.fitness > 0.85 and res.rmse_m < 0.025  # nearest-voxel-mean RMSE of a sparse 64-beam map


def test_register_reports_no_rival_in_a_furnished_room(world):
    scene, pts = world
    T_true = np.eye(4)
    T_true[:3, 3] = [0.5, 0.3, 0.1]
    static = simulate_frame(scene, lambda t: np.broadcast_to(T_true, (np.size(t), 4, 4)), 0.0, 64, 1024, noise=0.005,
                            rng=np.random.default_rng(7))
    assert register_static(static.points, pts).info["rival"] is None


def test_an_empty_box_room_is_reported_as_ambiguous():
    # a 7 x 5 x 3 m box and nothing in it: rotated 180 deg about a vertical (or horizontal) axis through its centre it
    # is the same box, so a scan fits the mirror poses as well as its own
    room = o3d.geometry.TriangleMesh.create_box(7.0, 5.0, 3.0)
    room.translate((-3.5, -2.5, -1.2))
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(room))
    rng = np.random.default_rng(8)

    def scan(x, y, yaw_deg):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("z", yaw_deg, degrees=True).as_matrix()
        T[:3, 3] = [x, y, 0.2]
        return T, simulate_frame(scene, lambda t: np.broadcast_to(T, (np.size(t), 4, 4)), 0.0, 64, 1024, noise=0.005, rng=rng)

    world = np.vstack([f.points @ T[:3, :3].T + T[:3, 3] for T, f in (scan(-1.5, 0.5, 0), scan(1.5, -0.5, 90), scan(0.0, 1.0, 45))])
    T_true, static = scan(0.8, -0.5, 70)
    # the true pose as an extra guess, as build-depth passes the sweep's first pose; RANSAC lands on a mirror pose
    res = register_static(static.points, world, RegisterConfig(candidates=[T_true]))
    rival = res.info["rival"]
    assert rival is not None, res.info
    assert rival["offset_m"] > 0.2 or rival["angle_deg"] > 10
    assert rival["fitness"] > 0.95  # coarse level: both poses fit the box
    # without the true pose among the guesses every RANSAC run may land on one pose: its turned poses are tried
    res = register_static(static.points, world, RegisterConfig(ransac_runs=1))
    assert res.info["rival"] is not None, res.info
    assert res.info["rival"]["fitness"] > 0.95


def test_register_fails_clearly_on_foreign_frame(world):
    _, pts = world
    rng = np.random.default_rng(1)
    foreign = rng.normal(0, 3.0, (5000, 3))  # no structure in common with the room
    with pytest.raises(RegistrationError, match="fitness"):
        register_static(foreign, pts, RegisterConfig(ransac_iterations=5000))
