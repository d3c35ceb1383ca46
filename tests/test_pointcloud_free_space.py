"""Free-space test of near-side edge pixels: rays of an OS0-128 (the twin's beam model) cast against a board
in front of a wall, and the sweep's column poses checked against the deskew of the aggregation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zedd_capture.pointcloud.deskew import deskew_points
from zedd_capture.pointcloud.edge_snap import near_edge_pixels
from zedd_capture.pointcloud.free_space import SweepRays, free_space_violations, sweep_rays
from zedd_capture.pointcloud.io import LidarFrameData
from zedd_capture.sim.os0 import OS0Model

RIG_JSON = Path(__file__).parents[1] / "rigs" / "os0-128-1024x10.json"
# camera = world: x right, y down, z forward; 200 x 100 px, f = 500 px
K = np.array([[500.0, 0, 100], [0, 500, 50], [0, 0, 1]])
BOARD_Z, WALL_Z = 2.0, 5.0
EDGE_X = 0.0021  # the board covers x < EDGE_X: its edge 0.525 px right of the centre of pixel column 100
# a lidar in world axes: its x (forward) along the camera's z, its y (left) along -x, its z (up) along -y
R_WORLD_SENSOR = np.array([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]])


def _truth_depth():
    D = np.full((100, 200), WALL_Z, np.float32)
    D[:, :101] = BOARD_Z  # pixel centres x = (u - 100) * z / 500 < EDGE_X up to u = 100
    return D


def _cast(o: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Distance along unit rays (origins ``o``, directions ``u``, (..., 3) world) to the first hit of a 10 cm
    thick board (x < EDGE_X, BOARD_Z <= z <= BOARD_Z + 0.1) or the wall z = WALL_Z; 0 beyond 30 m."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z1, z2 = (BOARD_Z - o[..., 2]) / u[..., 2], (BOARD_Z + 0.1 - o[..., 2]) / u[..., 2]
        sx = (EDGE_X - o[..., 0]) / u[..., 0]
        inside = o[..., 0] < EDGE_X  # for rays parallel to the edge plane
        x_lo = np.where(u[..., 0] < 0, sx, np.where((u[..., 0] > 0) | inside, -np.inf, np.inf))
        x_hi = np.where(u[..., 0] > 0, sx, np.where((u[..., 0] < 0) | inside, np.inf, -np.inf))
        enter = np.maximum(np.minimum(z1, z2), x_lo)
        leave = np.minimum(np.maximum(z1, z2), x_hi)
        s_wall = (WALL_Z - o[..., 2]) / u[..., 2]
    s = np.where((enter < leave) & (enter > 0), enter, np.where(s_wall > 0, s_wall, 0))
    return np.where(s < 30, s, 0)


@pytest.fixture(scope="module")
def rays():
    """Static frames from 96 sensor positions on both sides of the board's edge, cast against board + wall."""
    model = OS0Model.from_metadata(RIG_JSON)
    dirs, offs = model.directions, model.offsets
    H, W = dirs.shape[:2]
    positions = [(x, y, z) for x in np.linspace(-1.5, 1.5, 12) for y in (-0.2, 0.0, 0.2, 0.4) for z in (0.2, 0.5)]
    F = len(positions)
    ranges = np.zeros((F, H, W), np.float32)
    poses = np.zeros((F, W, 3, 4), np.float32)
    for f, p in enumerate(positions):
        ranges[f] = _cast(offs @ R_WORLD_SENSOR.T + p, dirs @ R_WORLD_SENSOR.T)
        poses[f, :, :, :3] = R_WORLD_SENSOR
        poses[f, :, :, 3] = p
    return SweepRays(ranges=ranges, column_poses=poses, directions=dirs, offsets=offs)


def test_rays_through_a_spread_edge_are_found_and_none_through_the_board(rays):
    truth = _truth_depth()
    spread = truth.copy()
    spread[:, 101:103] = BOARD_Z  # the board's points spread 2 px past its edge (range noise seen from the side)
    rows = slice(30, 70)
    counts = free_space_violations(spread, K, np.eye(4), near_edge_pixels(spread), rays)
    # the spread pixel next to the wall: the sweep saw through it (96 frames: about one ray per pixel each)
    assert np.mean(counts[rows, 102] >= 1) > 0.6 and counts[rows, 102].sum() >= 30
    assert np.all(counts[:, :102] == 0) and np.all(counts[:, 103:] == 0)  # only the pixels asked about
    # asked about every spread pixel and the board's own last pixel: the spread ones are seen through, the
    # board's not (its centre lies 0.525 px inside the board; rays passing just outside its edge do not count)
    asked = np.zeros_like(truth, bool)
    asked[:, 98:103] = True
    counts = free_space_violations(spread, K, np.eye(4), asked, rays)
    # (pixel 101's centre lies 0.475 px past the board's edge: only rays between the two count, fewer)
    assert np.mean(counts[rows, 101] >= 1) > 0.3 and counts[rows, 101].sum() >= 12
    assert np.all(counts[:, 98:101] == 0)


def test_true_edge_is_left_alone(rays):
    truth = _truth_depth()
    counts = free_space_violations(truth, K, np.eye(4), near_edge_pixels(truth), rays)
    assert near_edge_pixels(truth)[:, 100].all()
    assert counts.max() == 0


def test_the_band_follows_the_maps_depth(rays):
    # the band starts just behind the depth the map gives: a board read 2 % too near has free space there (in
    # front of the real board), which is why build-depth asks for more rays where the far side is twice as far
    truth = _truth_depth()
    far = truth.copy()
    far[:, :101] = BOARD_Z * 0.98
    counts = free_space_violations(far, K, np.eye(4), near_edge_pixels(far), rays)
    assert np.mean(counts[30:70, 100] >= 1) > 0.6  # free space at 1.96 m + 4-12 mm: in front of the board


def test_column_poses_reproduce_the_deskewed_world_points():
    # sweep_rays' pose of each column at its firing time must put a return where aggregate's deskew does
    model = OS0Model.from_metadata(RIG_JSON)
    H, W = model.directions.shape[:2]
    rng = np.random.default_rng(3)
    pixel = np.sort(rng.choice(H * W, 5000, replace=False)).astype(np.int32)
    row, col = np.divmod(pixel, W)
    ranges = rng.uniform(0.5, 8, len(pixel)).astype(np.float32)
    points = (model.directions[row, col] * ranges[:, None] + model.offsets[row, col]).astype(np.float32)
    dt = ((col - (W - 1) / 2) * 0.1 / W).astype(np.float32)
    frame = LidarFrameData(points=points, dt=dt, ranges=ranges, t_ref=0.0, frame_id=0, pixel=pixel)
    vel = np.array([0.3, -0.2, 0.5, 0.4, -0.1, 0.2])
    acc = np.array([0.5, 0.1, -0.3, 0.2, 0.3, -0.1])
    T = np.eye(4)
    T[:3, :3] = R_WORLD_SENSOR
    T[:3, 3] = (1.0, 2.0, 3.0)
    rays = sweep_rays([frame], np.zeros(1), T[None], vel[None], acc[None], model.directions, model.offsets)
    expect = deskew_points(points, dt, vel, acc) @ T[:3, :3].T + T[:3, 3]
    P = rays.column_poses[0, col].astype(np.float64)
    got = np.einsum("nij,nj->ni", P[:, :, :3], points.astype(np.float64)) + P[:, :, 3]
    np.testing.assert_allclose(got, expect, atol=2e-5)
    np.testing.assert_array_equal(rays.ranges[0, row, col], ranges)
    assert np.count_nonzero(rays.ranges) == len(pixel)


def test_frames_without_pixels_are_refused():
    model = OS0Model.from_metadata(RIG_JSON)
    frame = LidarFrameData(points=np.zeros((1, 3), np.float32), dt=np.zeros(1, np.float32),
                           ranges=np.ones(1, np.float32), t_ref=0.0, frame_id=0)
    with pytest.raises(ValueError, match="pixel index"):
        sweep_rays([frame], np.zeros(1), np.eye(4)[None], np.zeros((1, 6)), np.zeros((1, 6)),
                   model.directions, model.offsets)


def test_projection_with_rays_needs_the_camera_pose(rays):
    from zedd_capture.pointcloud.config import BuildConfig
    from zedd_capture.pointcloud.depth_map import project_depth

    pts = np.array([[0.0, 0.0, 2.0]], np.float32)
    with pytest.raises(ValueError, match="T_world_camera"):
        project_depth(pts, np.zeros((1, 3), np.float32), np.zeros(1, np.int32), K, 200, 100, 2, BuildConfig(),
                      rays=rays)
