"""The twin's OS0-128: beam model vs ouster-sdk, OSF round trip, noise, sensor effects, motion, truth."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import open3d as o3d
import pytest
from ouster.sdk import core
from scipy.spatial.transform import Rotation, Slerp

from zedd_capture.devices.protocols import Lidar
from zedd_capture.geometry import read_tum, rotation_angle_deg, transform_points
from zedd_capture.rig import load_rig
from zedd_capture.sim.lidar import (
    REFLECTIVE, TRANSPARENT, LidarNoise, RaycastScene, SimLidar, cast_frame, constant_pose, frame_from_cast,
    read_frames, true_extrinsic, write_lidar_truth, write_osf,
)
from zedd_capture.sim.os0 import OS0Model
from zedd_capture.sim.trajectory import handheld_sweep, path_clearance, tripod_lidar_pose, world_up

DATA = Path(__file__).parent / "data" / "ouster"
REAL_JSON = DATA / "OS-0-128-U1_v2.3.0_1024x10.json"
REAL_PCAP = DATA / "OS-0-128-U1_v2.3.0_1024x10.pcap"


# --- a small scene: 8 x 6 x 3 m room, two boxes, a glass pane, a mirror --------------------------
def _room_scene() -> RaycastScene:
    rc = o3d.t.geometry.RaycastingScene()

    def box(size, at):
        m = o3d.geometry.TriangleMesh.create_box(*size).translate(at)
        return rc.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))

    room = box((8, 6, 3), (-4, -3, 0))
    table = box((0.8, 0.6, 1.0), (1.5, 1.0, 0))
    box((0.5, 0.5, 1.8), (-2.5, 1.5, 0))
    glass = box((0.02, 1.5, 1.5), (2.8, -2.0, 0.5))
    mirror = box((1.0, 0.02, 1.2), (-1.0, 2.95, 0.8))
    T = np.eye(4)
    T[:3, :3] = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # camera looking along +x, z up
    T[:3, 3] = [-1.0, 0.0, 1.4]
    scene = RaycastScene(rc, T, materials={glass: TRANSPARENT, mirror: REFLECTIVE}, albedo={room: 0.6, table: 0.3},
                         name="box_room", seed=3)
    scene.ids = {"room": room, "table": table, "glass": glass, "mirror": mirror}
    return scene


@pytest.fixture(scope="module")
def scene():
    return _room_scene()


@pytest.fixture(scope="module")
def rig():
    r = load_rig()
    return r.model_copy(update={"sim": r.sim.model_copy(update={"frames_per_sweep": 4})})


@pytest.fixture(scope="module")
def model():
    return OS0Model.from_metadata(REAL_JSON)


def _pose(xyz, euler_deg) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("xyz", euler_deg, degrees=True).as_matrix()
    T[:3, 3] = xyz
    return T


def _world_points(frame, info, col_poses):
    """XYZLut points of a frame mapped to the world with one pose per column; (H, W, 3), valid mask."""
    xyz = core.XYZLut(info)(frame)
    valid = frame.field("RANGE") > 0
    world = np.einsum("wij,hwj->hwi", col_poses[:, :3, :3], xyz) + col_poses[None, :, :3, 3]
    return world, valid


# --- beam model ----------------------------------------------------------------------------------
def test_beam_angles_equal_real_metadata(model):
    meta = json.loads(REAL_JSON.read_text())
    np.testing.assert_array_equal(model.altitude_deg, meta["beam_altitude_angles"])
    np.testing.assert_array_equal(model.azimuth_deg, meta["beam_azimuth_angles"])
    assert model.h == 128 and model.w == 1024
    assert model.beam_origin_m == pytest.approx(meta["lidar_origin_to_beam_origin_mm"] * 1e-3)
    np.testing.assert_allclose(model.lidar_to_sensor[:3, 3], np.array(meta["lidar_to_sensor_transform"])[[3, 7, 11]] * 1e-3)
    assert model.altitude_deg.max() == pytest.approx(45.75) and model.altitude_deg.min() == pytest.approx(-46.26)


@pytest.mark.parametrize("mode", ["512x10", "1024x10", "2048x10"])
def test_ray_model_equals_ouster_xyzlut(mode):
    m = OS0Model.from_metadata(REAL_JSON, mode=mode)
    assert m.info.w == int(mode.split("x")[0]) and m.info.h == 128
    assert m.info.format.udp_profile_lidar == core.UDPProfileLidar.RNG19_RFL8_SIG16_NIR16
    lut = core.XYZLut(m.info)
    # XYZLut: xyz = direction * range_mm + offset  (direction per mm)
    np.testing.assert_allclose(lut.direction.reshape(m.h, m.w, 3) * 1000.0, m.directions, atol=1e-12)
    np.testing.assert_allclose(lut.offset.reshape(m.h, m.w, 3), m.offsets, atol=1e-12)
    # the offset is the beam origin pulled back along the ray by n: RANGE = |hit - beam origin| + n
    np.testing.assert_allclose(m.beam_origins - m.beam_origin_m * m.directions, m.offsets, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(m.directions, axis=-1), 1.0, atol=1e-12)
    assert m.frame_period_s == pytest.approx(0.1)


# --- OSF round trip ------------------------------------------------------------------------------
def test_static_frame_osf_roundtrip_exact(tmp_path, scene, model):
    """Noise off: XYZLut of the OSF read back with ouster-sdk reproduces the ray-cast hits to < 1 mm."""
    T = _pose([-0.8, 0.2, 1.3], [5.0, -8.0, 30.0])
    cast = cast_frame(scene, model, constant_pose(T), 1.0)
    frame = frame_from_cast(scene, model, cast, 7, np.random.default_rng(0), LidarNoise.exact())
    path = tmp_path / "static.osf"
    assert write_osf(path, model, [frame]) == 1
    info, frames = read_frames(path)
    assert len(frames) == 1
    f = frames[0]
    assert f.frame_id == 7
    assert set(f.fields) >= {"RANGE", "SIGNAL", "REFLECTIVITY", "NEAR_IR"}
    assert f.field("RANGE").dtype == np.uint32
    world, valid = _world_points(f, info, cast.col_poses)
    truth = cast.hit_points_world()
    hit = np.isfinite(cast.t_beam) & (cast.material == 0)
    assert valid[hit].mean() > 0.999
    err = np.linalg.norm(world - truth, axis=-1)[valid & hit]
    assert err.max() < 1.0e-3, err.max()  # 0.5 mm range quantisation + float32 ray casting
    # column timestamps: 1024 evenly spaced columns in 100 ms from the frame start
    ts = f.timestamp.astype(np.int64)
    assert ts[0] == 1_000_000_000
    np.testing.assert_allclose(np.diff(ts), 1e8 / 1024, atol=1)
    np.testing.assert_array_equal(f.measurement_id, np.arange(1024))
    assert np.all(f.status == 1)


def test_range_noise_matches_configuration(scene, model):
    sigma = 0.01
    noise = LidarNoise(range_sigma_m=sigma, min_range_m=0.0, max_range_m=1e6, dropout_reflective=0.0,
                       transparent_drop=0.0, transparent_surface=1.0, mixed_pixel_prob=0.0, grazing_cos=0.0)
    T = _pose([0.5, -0.5, 1.5], [0.0, 10.0, -20.0])
    cast = cast_frame(scene, model, constant_pose(T), 1.0)
    f = frame_from_cast(scene, model, cast, 0, np.random.default_rng(1), noise)
    r = f.field("RANGE").astype(float) * 1e-3
    true_r = cast.t_beam + model.beam_origin_m
    ok = (r > 0) & np.isfinite(true_r)
    px_sigma = sigma * np.clip(np.sqrt(noise.signal_ref / np.maximum(f.field("SIGNAL").astype(float), 1)), 1, 3)
    z = ((r - true_r) / px_sigma)[ok]
    assert ok.mean() > 0.98
    assert 0.95 < z.std() < 1.05 and abs(z.mean()) < 0.03
    assert np.abs(z).max() < 6.5
    assert 0.95 * sigma < np.std((r - true_r)[ok]) < 3 * sigma


def test_mixed_pixels_come_from_depth_gaps_not_from_walls_at_grazing_incidence(scene, model):
    # every gap of > 15 cm between adjacent columns mixes (probability 1, no noise): the boxes and the glass pane
    # before the room's walls do; the room itself (one closed box, seen from inside: no gaps) never does, though
    # its walls at grazing incidence put adjacent columns up to metres apart in range
    noise = LidarNoise(range_sigma_m=0.0, dropout_reflective=0.0, transparent_drop=0.0, transparent_surface=1.0,
                       mixed_pixel_prob=1.0, grazing_cos=0.0)
    T = np.eye(4)
    T[:3, 3] = [3.5, 2.6, 1.3]  # 0.4 m from the wall at y = 3, which runs 7.5 m away at grazing incidence
    cast = cast_frame(scene, model, constant_pose(T), 1.0)
    r = frame_from_cast(scene, model, cast, 0, np.random.default_rng(2), noise).field("RANGE").astype(float) * 1e-3
    true_r = cast.t_beam + model.beam_origin_m
    room = cast.geometry_id == scene.ids["room"]
    pair_room = room[:, :-1] & room[:, 1:]
    far_apart = pair_room & (np.abs(true_r[:, :-1] - true_r[:, 1:]) > 0.15)
    assert far_apart.sum() > 100  # grazing walls: many room-room pairs beyond the mixing threshold
    off = (r > 0) & (np.abs(r - true_r) > 5e-3)
    assert off.sum() > 20  # the gaps at the objects still mix
    # an off pixel between two room columns would be a mixed pixel of a continuous wall
    lone = np.zeros_like(off)
    lone[:, 1:-1] = room[:, 1:-1] & room[:, :-2] & room[:, 2:]
    assert np.count_nonzero(off & lone) == 0


def test_sensor_effects(scene, model):
    """Blind zone, reflective dropouts, glass pass-through, mixed pixels at edges, plausible fields."""
    noise = LidarNoise(range_sigma_m=0.0)
    T = np.eye(4)
    T[:3, 3] = [2.1, 0.0, 1.3]  # the glass pane (x = 2.8) 0.7 m ahead-right, the mirror ~4 m left
    cast = cast_frame(scene, model, constant_pose(T), 1.0)
    f = frame_from_cast(scene, model, cast, 0, np.random.default_rng(2), noise)
    r = f.field("RANGE").astype(float) * 1e-3
    true_r = cast.t_beam + model.beam_origin_m
    hit = np.isfinite(true_r)
    mirror = cast.geometry_id == scene.ids["mirror"]
    glass = cast.geometry_id == scene.ids["glass"]
    assert mirror.sum() > 50 and glass.sum() > 500
    drop_mirror = (r[mirror] == 0).mean()
    assert 0.7 < drop_mirror < 0.9  # configured 0.8
    behind = glass & (r > 0) & (np.abs(r - (cast.t_behind + model.beam_origin_m)) < 2e-3)
    at_glass = glass & (r > 0) & (np.abs(r - true_r) < 2e-3)
    assert 0.45 < behind.sum() / glass.sum() < 0.65  # 1 - 0.3 drop - 0.15 surface
    assert 0.08 < at_glass.sum() / glass.sum() < 0.22
    # mixed pixels: off both the true range and its neighbours', but between them
    diffuse = hit & ~mirror & ~glass & (r > 0)
    off = diffuse & (np.abs(r - true_r) > 5e-3)
    assert off.sum() > 20
    rows, cols = np.nonzero(off)
    lo = np.minimum(true_r[rows, np.maximum(cols - 1, 0)], true_r[rows, np.minimum(cols + 1, model.w - 1)])
    assert np.all((r[rows, cols] > lo - 1e-3) & (r[rows, cols] < true_r[rows, cols] + 1e-3))
    assert off.sum() < 0.01 * diffuse.sum()
    # fields: reflectivity ~ 100 x albedo on the room walls, signal falls with range
    room = (cast.geometry_id == scene.ids["room"]) & (r > 0)
    assert np.median(f.field("REFLECTIVITY")[room]) == pytest.approx(60, abs=2)
    sig = f.field("SIGNAL").astype(float)
    near, far = room & (r < 2.0), room & (r > 4.0)
    assert np.median(sig[near]) > 2 * np.median(sig[far])
    assert np.all(f.field("NEAR_IR") > 0)
    # blind zone: nothing under 0.3 m ever comes back
    T2 = T.copy()
    T2[:3, 3] = [1.5 - 0.15, 1.3, 0.8]  # 0.15 m in front of the table's side face, 0.2 m below its top
    c2 = cast_frame(scene, model, constant_pose(T2), 1.0)
    f2 = frame_from_cast(scene, model, c2, 0, np.random.default_rng(3), noise)
    r2 = f2.field("RANGE")
    assert np.sum((c2.t_beam + model.beam_origin_m) < 0.3) > 100
    assert r2[r2 > 0].min() >= 300


# --- moving sensor ---------------------------------------------------------------------------------
def _interp_poses(times, poses, t):
    slerp = Slerp(times, Rotation.from_matrix(poses[:, :3, :3]))
    out = np.tile(np.eye(4), (len(t), 1, 1))
    out[:, :3, :3] = slerp(t).as_matrix()
    for k in range(3):
        out[:, k, 3] = np.interp(t, times, poses[:, k, 3])
    return out


def test_sweep_recording_ids_timestamps_and_truth(tmp_path, scene, rig):
    """A short sweep: frame ids, contiguous column timestamps, truth frame times = first column
    timestamps, and per-column poses interpolated from trajectory_dense.tum = the true pose function.
    The pcap written beside the OSF holds the same frames."""
    lidar = SimLidar(scene, rig, noise=LidarNoise.exact(min_range_m=0.3), also_pcap=True)
    assert isinstance(lidar, Lidar)
    calls = []
    summary = lidar.record_sweep(tmp_path / "sweep.osf", 60.0, progress=lambda d, n: calls.append((d, n)))
    assert summary.frames == summary.frames_expected == 4
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    truth = tmp_path / "truth"
    write_lidar_truth(truth, SimpleNamespace(scene=scene, rig=rig, lidar=lidar))
    info, frames = read_frames(tmp_path / "sweep.osf")
    assert [f.frame_id for f in frames] == [0, 1, 2, 3]
    pinfo, pframes = read_frames(tmp_path / "sweep.pcap", meta=tmp_path / "sweep.json")
    assert [f.frame_id for f in pframes] == [0, 1, 2, 3]
    for a, b in zip(frames, pframes):
        for name in ("RANGE", "SIGNAL", "REFLECTIVITY", "NEAR_IR"):
            np.testing.assert_array_equal(a.field(name), b.field(name))
        np.testing.assert_array_equal(a.timestamp, b.timestamp)
    ft, _ = read_tum(truth / "trajectory.tum")
    np.testing.assert_allclose(ft, [f.timestamp[0] * 1e-9 for f in frames], atol=1e-6)
    np.testing.assert_allclose(np.diff(ft), 0.1, atol=1e-6)
    all_ts = np.concatenate([f.timestamp.astype(np.int64) for f in frames])
    assert np.all(np.diff(all_ts) > 0) and np.diff(all_ts).max() <= 1e8 / 1024 + 1
    dt, dposes = read_tum(truth / "trajectory_dense.tum")
    assert dt[0] <= all_ts[0] * 1e-9 and dt[-1] >= all_ts[-1] * 1e-9
    col_t = all_ts * 1e-9
    interp, exact = _interp_poses(dt, dposes, col_t), lidar.sweep(col_t)
    assert np.abs(interp[:, :3, 3] - exact[:, :3, 3]).max() < 1e-4
    assert max(rotation_angle_deg(a[:3, :3].T @ b[:3, :3]) for a, b in zip(interp[::64], exact[::64])) < 0.01


def test_moving_frames_distorted_and_undistorted_by_truth(tmp_path, scene, rig):
    """The fastest frames of a 60 s sweep: mapped with one pose per frame the points leave the
    surfaces by centimetres; mapped with the true per-column poses they lie on them (< 1.5 mm)."""
    from zedd_capture.sim.lidar import simulate_frame

    lidar = SimLidar(scene, rig, noise=LidarNoise.exact(min_range_m=0.3))
    traj = lidar.sweep_trajectory(600)
    ends = traj(traj.frame_times + 0.1)
    starts = traj(traj.frame_times)
    rot = np.array([rotation_angle_deg(a[:3, :3].T @ b[:3, :3]) for a, b in zip(starts, ends)]) / 0.1
    speed = np.linalg.norm(ends[:, :3, 3] - starts[:, :3, 3], axis=1) / 0.1
    picks = [int(np.argmax(rot)), int(np.argmax(speed))]
    frames = [simulate_frame(scene, lidar.model, traj, float(traj.frame_times[k]), k, np.random.default_rng(k),
                             lidar.noise) for k in picks]
    write_osf(tmp_path / "fast.osf", lidar.model, frames)
    info, frames = read_frames(tmp_path / "fast.osf")
    rc = scene.raycasting
    for k, f in zip(picks, frames):
        col_t = f.timestamp.astype(np.int64) * 1e-9
        per_col = traj(col_t)
        one = np.broadcast_to(per_col[0], per_col.shape)
        d = []
        for poses in (per_col, one):
            world, valid = _world_points(f, info, poses)
            d.append(rc.compute_distance(o3d.core.Tensor(world[valid].astype(np.float32))).numpy())
        print(f"frame {k}: {speed[k]:.2f} m/s {rot[k]:.1f} deg/s; distance to surfaces: per-column poses "
              f"p99 {1e3 * np.percentile(d[0], 99):.2f} mm; one pose median {1e3 * np.median(d[1]):.1f} mm "
              f"p95 {1e3 * np.percentile(d[1], 95):.1f} mm")
        assert np.percentile(d[0], 99) < 1.5e-3
        assert np.percentile(d[1], 95) > 0.02
        assert np.percentile(d[1], 95) > 20 * np.percentile(d[0], 95)
    assert rot[picks[0]] > 30 and speed[picks[1]] > 0.6


def test_static_recording_and_truth_files(tmp_path, scene, rig):
    lidar = SimLidar(SimpleNamespace(scene=scene, rig=rig))
    s = lidar.record_static(tmp_path / "lidar_static.osf")
    assert s.frames == s.frames_expected == 1
    info, frames = read_frames(tmp_path / "lidar_static.osf")
    assert len(frames) == 1 and info.w == 1024 and info.h == 128
    r = frames[0].field("RANGE")
    assert 0.9 < (r > 0).mean() < 1.0
    truth = tmp_path / "truth"
    write_lidar_truth(truth, SimpleNamespace(scene=scene, rig=rig, lidar=lidar))
    E = np.loadtxt(truth / "extrinsic.txt")
    assert E.shape == (4, 4)
    np.testing.assert_allclose(E, true_extrinsic(rig), atol=1e-9)
    dR = rotation_angle_deg(rig.extrinsic[:3, :3].T @ E[:3, :3])
    dt = np.linalg.norm(np.linalg.inv(rig.extrinsic) @ E - np.eye(4), axis=0)[3]
    assert 0.3 < dR < 0.8 and 0.003 < dt < 0.008
    st, sp = read_tum(truth / "static.tum")
    np.testing.assert_allclose(st, [frames[0].timestamp[0] * 1e-9], atol=1e-6)
    np.testing.assert_allclose(sp[0], scene.tripod_camera_pose @ E, atol=1e-6)
    # the static frame seen from the true pose lies on the scene surfaces (noise: 1 cm at 1 sigma)
    world, valid = _world_points(frames[0], info, np.broadcast_to(sp[0], (1024, 4, 4)))
    d = scene.raycasting.compute_distance(o3d.core.Tensor(world[valid].astype(np.float32))).numpy()
    assert np.median(d) < 0.01
    tt, tp = read_tum(truth / "trajectory.tum")
    assert len(tt) == rig.sim.frames_per_sweep
    np.testing.assert_allclose(tp[0], sp[0], atol=1e-6)  # the sweep starts at the tripod


# --- trajectories --------------------------------------------------------------------------------
def test_handheld_sweep_is_smooth_seeded_and_inside(scene):
    start = tripod_lidar_pose(scene, load_rig().extrinsic)
    a = handheld_sweep(scene, seed=5, seconds=60.0, rate_hz=10.0, start_pose=start, t0=10.0)
    b = handheld_sweep(scene, seed=5, seconds=6.0, rate_hz=10.0, start_pose=start, t0=10.0)
    c = handheld_sweep(scene, seed=6, seconds=60.0, rate_hz=10.0, start_pose=start, t0=10.0)
    assert len(a.frame_times) == 600 and len(b.frame_times) == 60
    np.testing.assert_allclose(a(b.frame_times), b(b.frame_times), atol=1e-12)  # prefix
    assert np.abs(a(a.frame_times)[:, :3, 3] - c(a.frame_times)[:, :3, 3]).max() > 0.3
    np.testing.assert_allclose(a(10.0)[0], start, atol=1e-12)
    st = a.speed_stats(dt=0.02)
    assert 0.3 < st["speed_mean"] < 0.9 and st["speed_max"] <= 1.0 + 1e-6
    assert 15 < st["rate_mean_dps"] and st["rate_max_dps"] <= 60.0
    t = np.arange(10.0, a.end_time, 0.02)
    P = a(t)
    acc = np.linalg.norm(np.diff(P[:, :3, 3], 2, axis=0), axis=1) / 0.02**2
    assert acc.max() < 3.0  # m/s^2: smooth hand motion, no jumps
    up = world_up(scene)
    e1 = np.array([1.0, 0, 0])
    clear = path_clearance(scene, P[::5, :3, 3], up, e1, np.cross(up, e1))
    assert clear.min() > 0.3
    ext = P[:, :3, 3].max(0) - P[:, :3, 3].min(0)
    assert ext[:2].max() > 1.5  # it really wanders


def test_build_scene_sweeps_stay_inside():
    """The camera twin's scenes: sweeps keep clear of every surface."""
    import zedd_capture.sim.scene as scene_mod
    rig = load_rig()
    for name in ("kitchen01", "hallway02", "garden04"):
        scene = scene_mod.build_scene(name)
        lidar = SimLidar(scene, rig)
        traj = lidar.sweep_trajectory(600)
        P = traj(np.arange(traj.t0, traj.end_time, 0.1))[:, :3, 3]
        up = world_up(scene)
        e1 = np.cross(up, [0.0, 1.0, 0.0])
        assert path_clearance(scene, P, up, e1, np.cross(up, e1)).min() > 0.3, name
        st = traj.speed_stats()
        assert st["speed_max"] <= 1.0 + 1e-6 and st["rate_max_dps"] <= 60.0, name


def test_build_scene_static_frame():
    import zedd_capture.sim.scene as scene_mod
    scene = scene_mod.build_scene("office07")
    rig = load_rig()
    lidar = SimLidar(scene, rig)
    cast = cast_frame(scene, lidar.model, constant_pose(lidar.tripod_pose), 1.0)
    f = frame_from_cast(scene, lidar.model, cast, 0, np.random.default_rng(0), lidar.noise)
    r = f.field("RANGE")
    assert (r > 0).mean() > 0.9
    refl = cast.material == REFLECTIVE
    if refl.sum() > 100:
        assert (r[refl] == 0).mean() > 0.5


def test_twin_rig_lidar_and_truth(tmp_path):
    """The camera twin's TwinRig builds SimLidar(self); its truth writer calls write_lidar_truth."""
    import zedd_capture.sim.devices as devices
    import zedd_capture.sim.truth as truth_mod
    from zedd_capture.layout import SceneLayout

    r = load_rig()
    rig = r.model_copy(update={"sim": r.sim.model_copy(update={"frames_per_sweep": 2})})
    twin = devices.TwinRig(rig, "kitchen01", render_size=(64, 48))
    layout = SceneLayout(tmp_path, "kitchen01")
    assert isinstance(twin.lidar, Lidar)
    s = twin.lidar.record_sweep(layout.lidar_sweep_path, rig.capture.sweep_seconds)
    assert s.frames == 2 and layout.lidar_sweep_path.is_file()
    for run in rig.capture.runs:
        twin.focus_motor.move_to(run.hexcode)
    truth_mod.write_truth(layout, twin)
    E = np.loadtxt(layout.truth_dir / "extrinsic.txt")
    _, sp = read_tum(layout.truth_dir / "static.tum")
    np.testing.assert_allclose(sp[0], twin.camera_pose @ E, atol=1e-6)
    tt, _ = read_tum(layout.truth_dir / "trajectory.tum")
    info, frames = read_frames(layout.lidar_sweep_path)
    np.testing.assert_allclose(tt, [f.timestamp[0] * 1e-9 for f in frames], atol=1e-6)


# --- the real recording through the same reader ----------------------------------------------------
def test_real_os0_recording_reads_through_same_path(model):
    info, frames = read_frames(REAL_PCAP, meta=REAL_JSON)
    assert len(frames) == 1
    f = frames[0]
    assert (f.h, f.w) == (128, 1024)
    assert f.field("RANGE").dtype == np.uint32 and (f.field("RANGE") > 0).mean() > 0.5
    np.testing.assert_array_equal(info.beam_altitude_angles, model.altitude_deg)
    np.testing.assert_array_equal(info.beam_azimuth_angles, model.azimuth_deg)
    # same XYZ model: the twin's directions reproduce XYZLut of the real frame
    xyz = core.XYZLut(info)(f)
    r = f.field("RANGE").astype(float) * 1e-3
    mine = model.directions * r[..., None] + model.offsets
    valid = r > 0
    np.testing.assert_allclose(mine[valid], xyz[valid], atol=1e-9)
    # real column timestamps: 1024 columns over ~100 ms, like the twin's
    span = (int(f.timestamp[-1]) - int(f.timestamp[0])) * 1e-9
    assert 0.095 < span < 0.1
