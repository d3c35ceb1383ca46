"""Deskew and aggregation (fast and paper modes) on synthetic sweeps ray-cast with open3d."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from test_pointcloud_synth import make_sweep, pose_at, surface_distance_m

from zedd_capture.pointcloud.aggregate import AggregateConfig, AggregationError, aggregate
from zedd_capture.pointcloud.deskew import central_accelerations, central_velocities, deskew_points, relative_velocity


def ate_mm(est: np.ndarray, true: np.ndarray) -> float:
    rel = np.linalg.inv(true[0]) @ true
    return 1000 * float(np.sqrt(np.mean(np.sum((est[:, :3, 3] - rel[:, :3, 3]) ** 2, axis=1))))


@pytest.fixture(scope="module")
def sweep():
    return make_sweep(24, seed=3, n_beams=64, n_cols=512, noise=0.01)


def test_deskew_with_true_velocity_puts_points_on_surfaces():
    sw = make_sweep(1, seed=4, n_beams=32, n_cols=512, amplitude=3.0, t_start=2.0)
    f, T = sw.frames[0], sw.poses[0]
    dt = 1e-3
    vel = relative_velocity(pose_at(f.t_ref - dt, 4, 3.0)[0], pose_at(f.t_ref + dt, 4, 3.0)[0], 2 * dt)
    raw = surface_distance_m(sw.scene, f.points, T)
    fixed = surface_distance_m(sw.scene, deskew_points(f.points, f.dt, vel), T)
    assert np.percentile(raw, 90) > 0.02  # the motion skews the frame by centimetres
    assert np.percentile(fixed, 90) < 0.002


def test_deskew_with_constant_acceleration_is_exact_for_translation():
    # a sensor accelerating without turning: points of a static scene measured along the frame
    rng = np.random.default_rng(0)
    world = rng.uniform(-5, 5, (2000, 3))
    dt = np.repeat(np.linspace(-0.05, 0.05, 200), 10)
    v, a = np.array([0.4, -0.2, 0.1]), np.array([2.0, 1.0, -3.0])
    measured = world - (v * dt[:, None] + 0.5 * a * dt[:, None] ** 2)
    vel, acc = np.r_[0, 0, 0, v], np.r_[0, 0, 0, a]
    np.testing.assert_allclose(deskew_points(measured, dt, vel, acc), world, atol=1e-5)
    assert np.abs(deskew_points(measured, dt, vel) - world).max() > 2e-3  # 0.5 a dt^2 = 3.75 mm at the ends


def test_deskew_with_the_poses_accelerations_beats_constant_velocity():
    # velocities and accelerations from the poses of neighbouring frames (10 Hz, as after registration);
    # hand-held wobble accelerates within a frame, so the second-order deskew lies closer to the surfaces
    sw = make_sweep(3, seed=4, n_beams=32, n_cols=512, amplitude=3.0, t_start=2.0)
    vel = central_velocities(sw.times, sw.poses)
    acc = central_accelerations(sw.times, sw.poses, vel)
    # the accelerations match the trajectory's (second differences at 1 ms), in the frame's sensor frame
    h = 1e-3
    P = pose_at(sw.times[1] + np.array([-h, 0.0, h]), 4, 3.0)
    a_true = P[1, :3, :3].T @ (P[2, :3, 3] - 2 * P[1, :3, 3] + P[0, :3, 3]) / h**2
    np.testing.assert_allclose(acc[1, 3:], a_true, atol=0.05 * np.linalg.norm(a_true))
    f, T = sw.frames[1], sw.poses[1]
    first = surface_distance_m(sw.scene, deskew_points(f.points, f.dt, vel[1]), T)
    second = surface_distance_m(sw.scene, deskew_points(f.points, f.dt, vel[1], acc[1]), T)
    # mean 0.33 -> 0.21 mm, 90th percentile 0.86 -> 0.53 mm (the exact velocity alone: 0.24 / 0.65 mm)
    assert np.mean(second) < 0.75 * np.mean(first), (np.mean(second), np.mean(first))
    assert np.percentile(second, 90) < 0.75 * np.percentile(first, 90)


def test_fast_mode_trajectory(sweep):
    wc = aggregate(sweep.frames, AggregateConfig(max_points=2_000_000))
    assert wc.stats["mode"] == "fast" and wc.poses.shape == (24, 4, 4)
    assert ate_mm(wc.poses, sweep.poses) < 2.5
    # the world cloud lies on the scene: transform it into the room frame with the first true pose
    d = surface_distance_m(sweep.scene, wc.points, sweep.poses[0])
    assert np.median(d) < 0.01 and wc.stats["density_removed"] > 0


def test_refined_deskew_velocity_beats_lagging_prior():
    # fast, accelerating hand-held motion: deskewing with the previous frame's velocity leaves the
    # frames skewed; re-estimating the velocity after registration (refine_deskew) fixes it
    sw = make_sweep(12, seed=5, n_beams=32, n_cols=512, amplitude=3.0, t_start=1.0)
    cfg = dict(density_filter=False, reg_stride=1, keyframe_m=0.0, keyframe_deg=0.0, refine_global=False)
    lag = ate_mm(aggregate(sw.frames, AggregateConfig(refine_deskew=False, **cfg)).poses, sw.poses)
    ref = ate_mm(aggregate(sw.frames, AggregateConfig(refine_deskew=True, **cfg)).poses, sw.poses)
    assert ref < 0.8 * lag and ref < 3.0, (ref, lag)


@pytest.mark.parametrize("registration", ["gicp"])
def test_fast_mode_gicp_keyframe_map(sweep, registration):
    wc = aggregate(sweep.frames[:12], AggregateConfig(registration=registration, density_filter=False))
    assert 0 < wc.stats["map_updates"] < 12  # keyframes only, not every frame
    assert ate_mm(wc.poses, sweep.poses[:12]) < 2.5


def test_fast_at_least_as_accurate_as_paper(sweep):
    frames, poses = sweep.frames[:8], sweep.poses[:8]
    # alpha scaled up: these 64-beam frames are ~4x sparser than an OS0-128 sweep
    paper = aggregate(frames, AggregateConfig(mode="paper", warmup=3, interval=2, alpha=0.05))
    fast = aggregate(frames, AggregateConfig(alpha=0.05))
    assert paper.stats["density_removed"] > 0  # the periodic filter ran on the growing map
    assert ate_mm(fast.poses, poses) <= ate_mm(paper.poses, poses) + 0.3
    assert ate_mm(paper.poses, poses) < 10


def test_empty_sweep_and_lost_tracking(sweep):
    with pytest.raises(AggregationError, match="empty sweep"):
        aggregate([])
    junk = copy.deepcopy(sweep.frames[3])  # a frame of garbage returns: nothing matches the map
    junk.points = np.random.default_rng(0).uniform(-20, 20, junk.points.shape).astype(np.float32)
    frames = sweep.frames[:3] + [junk]
    with pytest.raises(AggregationError, match="frame 3"):
        aggregate(frames, AggregateConfig(density_filter=False))


@pytest.mark.parametrize("mode", ["fast", "paper"])
def test_frame_index_survives_the_density_filter(sweep, mode):
    # every point records the frame that measured it; the density filter (here removing a good share of
    # the points) must keep the indices aligned: each point's range is its distance to its frame's
    # sensor origin (up to the motion within one frame), which a shifted index breaks by decimetres
    frames = sweep.frames[:8]
    cfg = AggregateConfig(mode=mode, alpha=0.02, k=12, warmup=3, interval=2, accumulate_every=1)
    wc = aggregate(frames, cfg)
    assert wc.stats["density_removed"] > 5000  # fast ~9k of 262k, paper ~116k of 262k
    assert wc.frame_index is not None and wc.frame_index.dtype == np.uint16 and len(wc.frame_index) == len(wc.points)
    assert set(np.unique(wc.frame_index)) == set(range(8))  # every frame contributes
    if mode == "fast":
        d = np.linalg.norm(wc.points - wc.origins(), axis=1)
        err = np.abs(d - wc.ranges)
        assert np.percentile(err, 99) < 0.05, np.percentile(err, [50, 99])
    # the same through select() (cleanup), and the origins are the poses' translations
    keep = np.random.default_rng(0).random(len(wc.points)) < 0.5
    pts, fidx = wc.points[keep], wc.frame_index[keep]
    wc.select(keep)
    np.testing.assert_array_equal(wc.points, pts)
    np.testing.assert_array_equal(wc.frame_index, fidx)
    np.testing.assert_allclose(wc.origins(), wc.poses[fidx, :3, 3], atol=1e-5)


def test_global_refinement_reduces_drift(sweep):
    # every frame registered once more to one map of the whole sweep: less drift than the keyframe map alone
    cfg = dict(max_points=2_000_000, density_filter=False)
    tracked = aggregate(sweep.frames, AggregateConfig(refine_global=False, **cfg))
    refined = aggregate(sweep.frames, AggregateConfig(refine_global=True, **cfg))
    a0, a1 = ate_mm(tracked.poses, sweep.poses), ate_mm(refined.poses, sweep.poses)
    assert refined.stats["refined_global"] and not tracked.stats["refined_global"]
    assert a1 < a0
    np.testing.assert_allclose(refined.poses[0], np.eye(4), atol=1e-12)  # the first frame stays the world frame
