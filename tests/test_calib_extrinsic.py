"""Plane-to-plane lidar -> camera extrinsic on synthetic boards with noisy lidar points."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
from test_calib_synth import look_at_board

from zedd_capture.calibration.charuco import BoardSpec, CalibrationError
from zedd_capture.calibration.extrinsic import calibrate_extrinsic, read_extrinsic, write_extrinsic
from zedd_capture.geometry import invert, rotation_angle_deg, transform_points

B = BoardSpec(7, 5, 0.15, 0.11)
T_NOM = np.array([[0, -1, 0, 0], [0, 0, -1, -0.12], [1, 0, 0, -0.02], [0, 0, 0, 1.0]])
POSES = [(2, (0, 25, 0), (0, 0)), (2.2, (25, 0, 0), (0.2, 0)), (1.8, (-20, -20, 0), (-0.2, 0.1)),
         (2.5, (15, -25, 10), (0, -0.1)), (2.0, (-25, 15, 0), (0.1, 0.1))]


def truth():
    axis = np.array([0.62, -0.48, 0.55])
    T = T_NOM.copy()
    T[:3, :3] = Rotation.from_rotvec(np.radians(0.55) * axis / np.linalg.norm(axis)).as_matrix() @ T_NOM[:3, :3]
    T[:3, 3] += [0.004, -0.003, 0.0035]
    return T


def scan(T_cb, T_cl, rng, n=20000, noise=0.01):
    """Lidar points (sensor frame) of the board plus a background 2 m behind it, range noise along the ray."""
    u, v = rng.uniform(-0.3, 1.35, n), rng.uniform(-0.3, 1.05, n)
    on = (u > 0) & (u < 1.05) & (v > 0) & (v < 0.75)
    P = np.column_stack([u, v, np.zeros(n)]) @ T_cb[:3, :3].T + T_cb[:3, 3]
    P[~on] += 2 * T_cb[:3, 2]
    Pl = transform_points(invert(T_cl), P)
    r = np.linalg.norm(Pl, axis=1, keepdims=True)
    return Pl + Pl / r * rng.normal(0, noise, (n, 1))


def test_recovers_extrinsic_from_noisy_planes(tmp_path):
    rng = np.random.default_rng(0)
    Tt = truth()
    poses = [look_at_board(B, d, t, o) for d, t, o in POSES]
    res = calibrate_extrinsic(poses, [scan(T, Tt, rng) for T in poses], (1.05, 0.75), T_NOM)
    E = res.T_camera_lidar
    assert np.linalg.norm(E[:3, 3] - Tt[:3, 3]) < 0.002
    assert rotation_angle_deg(E[:3, :3] @ Tt[:3, :3].T) < 0.03
    assert all(0.008 < r < 0.012 for r in res.per_pose_rms_m)  # residuals = the range noise
    assert np.all(res.std_translation_m < 0.002) and np.all(res.std_rotation_deg < 0.05)
    p = tmp_path / "extrinsic.txt"
    write_extrinsic(p, E, {"rig": "test"})
    assert np.allclose(read_extrinsic(p), E) and np.allclose(np.loadtxt(p), E)


def test_too_few_or_parallel_poses_are_clear_errors():
    rng = np.random.default_rng(1)
    Tt = truth()
    poses = [look_at_board(B, d, t, o) for d, t, o in POSES]
    pts = [scan(T, Tt, rng, n=3000) for T in poses]
    with pytest.raises(CalibrationError, match=">= 3 board poses with non-parallel normals, got 2"):
        calibrate_extrinsic(poses[:2], pts[:2], (1.05, 0.75), T_NOM)
    par = [look_at_board(B, d, (0, 0, 0), (o, 0)) for d, o in [(1.8, 0), (2.2, 0.2), (2.6, -0.2)]]
    with pytest.raises(CalibrationError, match=r"\(nearly\) parallel"):
        calibrate_extrinsic(par, [scan(T, Tt, rng, n=3000) for T in par], (1.05, 0.75), T_NOM)
