"""build-depth end to end on the twin (short 512x10 sweep) + ZEDD export + bad input.

Calibration products are the twin's truth copied into calibration/<rig>/; truth/ is moved out of
the scene before the pipeline runs, so nothing can read it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp
from typer.testing import CliRunner

from zedd_capture.cli import app
from zedd_capture.geometry import read_tum
from zedd_capture.layout import CalibrationLayout, SceneLayout, default_mode, format_image_name
from zedd_capture.pointcloud.export import ExportError, export_zedd
from zedd_capture.pointcloud.config import BuildDepthError
from zedd_capture.pointcloud.pipeline import build_depth, read_ply
from zedd_capture.rig import load_rig
from zedd_capture.validate import validate_zedd_root
from zedd_capture.version import tool_version

SCENE = "kitchen01"
N_FRAMES = 24


def _rig():
    rig = load_rig()
    return rig.model_copy(update={"sim": rig.sim.model_copy(update={"frames_per_sweep": N_FRAMES}),
                                  "lidar": rig.lidar.model_copy(update={"mode": "512x10"})})


def _record(root: Path, scene: str, rig, static_scene: str | None = None) -> Path:
    from zedd_capture.sim.devices import TwinRig
    from zedd_capture.sim.truth import write_truth

    twin = TwinRig(rig, scene, root=root)
    L = SceneLayout(root, scene)
    if static_scene:
        TwinRig(rig, static_scene, root=root).lidar.record_static(L.lidar_static_path)
    else:
        twin.lidar.record_static(L.lidar_static_path)
    twin.lidar.record_sweep(L.lidar_sweep_path, rig.capture.sweep_seconds)
    write_truth(L, twin)
    # calibration products = truth; per-scene breathing warps; fake focus-stack images
    cal = CalibrationLayout(root, rig.name)
    cal.dir.mkdir(parents=True, exist_ok=True)
    for f in ("extrinsic.txt", "intrinsics.yaml", "focus_lut.tsv"):
        shutil.copy(L.truth_dir / f, cal.dir / f)
    L.work_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(L.truth_dir / "breathing.json", L.breathing_path)
    L.raw_focus_stack_dir.mkdir(parents=True, exist_ok=True)
    img = np.full((rig.camera.height_px, rig.camera.width_px, 3), 128, np.uint8)
    cv2.putText(img, scene, (100, 300), cv2.FONT_HERSHEY_SIMPLEX, 5, (0, 0, 255), 8)
    for r in rig.capture.runs:
        for n in rig.capture.apertures:
            cv2.imwrite(str(L.raw_image_path(r.run, r.hexcode, n)), img)
    hidden = root.parent / f"hidden_truth_{scene}"
    shutil.move(str(L.truth_dir), hidden)
    return hidden


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("twin")
    rig = _rig()
    truth = _record(root, SCENE, rig)
    stages = []
    summary = build_depth(rig, root, SCENE, progress=lambda s, d, n: stages.append(s))
    # the default build's work files, before tests rebuild with other settings into the same folder
    shutil.copytree(SceneLayout(root, SCENE).work_dir, root.parent / f"{root.name}_default_work")
    return root, rig, truth, summary, stages


def test_build_depth_matches_twin_truth(built):
    root, rig, truth, s, stages = built
    L = SceneLayout(root, SCENE)
    assert not L.truth_dir.exists()
    assert {"read", "aggregate", "register", "project", "write"} <= set(stages)
    assert s.depth.shape == (rig.depth_map.height_px, rig.depth_map.width_px) and s.depth.dtype == np.float32
    np.testing.assert_allclose(s.K, np.loadtxt(truth / "K.txt"), atol=1e-6)
    assert s.frames == N_FRAMES and s.fitness > 0.9
    gt = np.load(truth / "depth.npy")
    v = (gt > 0) & (s.depth > 0)
    rel = np.abs(s.depth[v] - gt[v]) / gt[v]
    # a 2.4 s, 512-column sweep: accuracy of the bulk; the full-sweep numbers are in bench/aggregate.py.
    # Measured (the twin is seeded): coverage 82.0 %, median error 0.056 %, 92.1 % within 1 %
    assert v.sum() > 0.78 * (gt > 0).sum()
    assert np.median(rel) < 0.001
    assert np.mean(rel <= 0.01) > 0.88
    for p in (L.trajectory_path, L.world_cloud_path, L.build_log_path):
        assert p.is_file()
    assert json.loads(L.build_log_path.read_text())["tool_version"] == tool_version()  # which code built it


def test_mask_edge_band_zeroes_the_bands_at_depth_edges(built, tmp_path):
    from zedd_capture.pointcloud.config import BuildConfig
    from zedd_capture.pointcloud.project import depth_edge_band

    root, rig, _, s, _ = built
    masked = build_depth(rig, root, SCENE, config=BuildConfig(mask_edge_band=True, write_cloud=False)).depth
    band = depth_edge_band(s.depth)
    assert 0.001 < band.mean() < 0.2
    assert np.all(masked[band] == 0)
    np.testing.assert_array_equal(masked[~band], s.depth[~band])
    # 2 px: the band and its 8-neighbours, nothing else
    wide = build_depth(rig, root, SCENE, config=BuildConfig(mask_edge_band=True, edge_band_width_px=2,
                                                           write_cloud=False)).depth
    grown = cv2.dilate(band.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert grown.sum() > 1.5 * band.sum() and np.all(wide[grown] == 0)
    np.testing.assert_array_equal(wide[~grown], s.depth[~grown])


def test_edge_snap_gains_on_the_twin_and_leaves_no_new_holes(built):
    from zedd_capture.pointcloud.config import BuildConfig
    from zedd_capture.report.accuracy import depth_accuracy

    root, rig, truth, s, _ = built
    plain = build_depth(rig, root, SCENE, config=BuildConfig(edge_snap_radius_px=0, write_cloud=False)).depth
    gt = np.load(truth / "depth.npy")
    with_snap, without = depth_accuracy(s.depth, gt), depth_accuracy(plain, gt)
    assert s.stats["edge_snap"]["snapped"] > 0 and s.stats["edge_snap"]["dropped"] > 0
    assert with_snap["within_0.5pct"] > without["within_0.5pct"]
    assert with_snap["abs_rel"] < without["abs_rel"]
    assert np.all(s.depth[plain > 0] > 0)  # every pixel filled before is still filled
    assert with_snap["largest_hole_px"] <= without["largest_hole_px"]  # (a 24-frame sweep leaves holes of its own)


def test_free_space_carving_gains_on_the_twin(built):
    # the sweep's rays through the near side of depth edges: the pixels they carve read the truth more often
    from zedd_capture.pointcloud.config import BuildConfig

    root, rig, truth, s, _ = built
    plain = build_depth(rig, root, SCENE, config=BuildConfig(free_space_min_rays=0, write_cloud=False))
    gt = np.load(truth / "depth.npy")
    assert plain.stats["free_space"]["carved_pixels"] == 0 and "rays" not in plain.timings_s
    assert "rays" in s.timings_s
    changed = (s.depth != plain.depth) & (gt > 0)
    right = lambda d: np.abs(d - gt) <= 0.005 * gt  # noqa: E731
    fixed, broken = int(np.sum(changed & right(s.depth))), int(np.sum(changed & right(plain.depth)))
    print(f"free space: {s.stats['free_space']['carved_pixels']} carved, {changed.sum()} changed, {fixed} fixed, "
          f"{broken} broken")
    assert s.stats["free_space"]["carved_pixels"] >= changed.sum() > 0
    assert fixed > broken
    assert np.all(s.depth[plain.depth > 0] > 0)


def test_projection_at_the_working_size_beats_projecting_at_twice_the_size(built):
    # a depth map of 912 x 608 (2x the sim rig's): the projection runs at 456 x 304 and reads its planes at the
    # fine pixels; projecting directly at 912 x 608 leaves a quarter of the points per pixel for the fits
    from zedd_capture.geometry import scale_intrinsics
    from zedd_capture.pointcloud.config import BuildConfig
    from zedd_capture.report.accuracy import depth_accuracy
    from zedd_capture.sim.scene import build_scene
    from zedd_capture.sim.truth import render_depth

    root, rig, truth, s, _ = built
    w, h = 2 * rig.depth_map.width_px, 2 * rig.depth_map.height_px
    big = rig.model_copy(update={"depth_map": rig.depth_map.model_copy(update={"width_px": w, "height_px": h})})
    scene = build_scene(SCENE)
    K_big = scale_intrinsics(np.loadtxt(truth / "K.txt"), (rig.depth_map.width_px, rig.depth_map.height_px), (w, h))
    gt = render_depth(scene, K_big, w, h, scene.tripod_camera_pose)
    cfg = dict(write_cloud=False, edge_snap_radius_px=0)
    up = build_depth(big, root, SCENE, config=BuildConfig(**cfg))
    direct = build_depth(big, root, SCENE, config=BuildConfig(projection_width_px=None, **cfg))
    assert up.stats["projection_size"] == [rig.depth_map.width_px, rig.depth_map.height_px]
    assert direct.stats["projection_size"] == [w, h] and up.depth.shape == direct.depth.shape == (h, w)
    a_up, a_direct = depth_accuracy(up.depth, gt), depth_accuracy(direct.depth, gt)
    assert a_up["within_0.5pct"] > a_direct["within_0.5pct"] + 0.02
    assert a_up["abs_rel"] < a_direct["abs_rel"]


def test_the_view_cloud_holds_every_frame_when_the_world_cloud_holds_every_second(built):
    # view_cloud.ply: every sweep frame's points in the camera's view (+10 % margin), what the projection uses
    from zedd_capture.pointcloud.aggregate import AggregateConfig
    from zedd_capture.pointcloud.config import BuildConfig
    from zedd_capture.pointcloud.project import project_points
    from zedd_capture.report.accuracy import depth_accuracy

    root, rig, truth, s, _ = built
    L = SceneLayout(root, SCENE)
    view = read_ply(L.view_cloud_path)
    assert len(view["x"]) == s.stats["view"]["points"] < s.points
    assert set(np.unique(view["frame"]).astype(int)) == set(range(N_FRAMES + 1))  # + the static frame
    W, H = rig.depth_map.width_px, rig.depth_map.height_px
    pts = np.stack([view["x"], view["y"], view["z"]], 1)
    pc = pts @ s.T_camera_world[:3, :3].T.astype(np.float32) + s.T_camera_world[:3, 3].astype(np.float32)
    assert len(project_points(pc, s.K, W, H)[0]) > 0.6 * len(pc)  # the image, of the image + margins (1.44x its area)
    # the world cloud of every 2nd frame: the view cloud still holds every frame, and the map is better for it
    gt = np.load(truth / "depth.npy")
    every2 = AggregateConfig(accumulate_every=2)
    with_view = build_depth(rig, root, SCENE, config=BuildConfig(aggregate=every2, write_cloud=False))
    without = build_depth(rig, root, SCENE, config=BuildConfig(aggregate=every2, view_cloud=False, write_cloud=False))
    assert with_view.stats["aggregate"]["accumulate_every"] == 2 and without.stats["view"] is None
    a_view, a_world = depth_accuracy(with_view.depth, gt), depth_accuracy(without.depth, gt)
    assert a_view["within_0.5pct"] > a_world["within_0.5pct"] + 0.01  # 84.1 vs 81.4 %
    assert a_view["abs_rel"] < a_world["abs_rel"]


def test_trajectory_ate(built):
    root, _, truth, _, _ = built
    te, Pe = read_tum(SceneLayout(root, SCENE).trajectory_path)
    td, Pd = read_tum(truth / "trajectory_dense.tum")
    Pt = np.tile(np.eye(4), (len(te), 1, 1))
    Pt[:, :3, :3] = Slerp(td, Rotation.from_matrix(Pd[:, :3, :3]))(te).as_matrix()
    Pt[:, :3, 3] = np.stack([np.interp(te, td, Pd[:, k, 3]) for k in range(3)], 1)
    rel = np.linalg.inv(Pt[0]) @ Pt
    ate = np.sqrt(np.mean(np.sum((Pe[:, :3, 3] - rel[:, :3, 3]) ** 2, axis=1)))
    assert ate < 0.005


def test_world_cloud_records_the_measuring_frame(built):
    # world_cloud.ply: float32 x y z range frame; frame = index of the sweep frame that measured the point
    # (N_FRAMES: the static frame), so each point's sensor origin is that frame's trajectory position
    root, _, _, s, _ = built
    L = SceneLayout(root, SCENE)
    rec = read_ply(L.world_cloud_path)
    assert tuple(rec) == ("x", "y", "z", "range", "frame") and len(rec["x"]) == s.points
    fr = rec["frame"].astype(np.int64)
    assert np.array_equal(fr, rec["frame"]) and fr.min() == 0 and fr.max() == N_FRAMES
    _, poses = read_tum(L.trajectory_path)
    origins = np.vstack([poses[:, :3, 3], s.T_world_static[None, :3, 3]])
    pts = np.stack([rec["x"], rec["y"], rec["z"]], 1)
    err = np.abs(np.linalg.norm(pts - origins[fr], axis=1) - rec["range"])
    assert np.percentile(err, 99) < 0.05  # range = distance to its own frame's sensor (up to in-frame motion)


def test_export_is_a_valid_zedd_sample(built):
    root, rig, _, s, _ = built
    sample = export_zedd(rig, root, SCENE, s.depth, s.K)
    assert validate_zedd_root(sample.root) == []
    np.testing.assert_array_equal(np.load(sample.depth_path), s.depth)
    img = cv2.imread(str(sample.image_path(5, rig.run(5).hexcode, 16.0)))
    assert img.shape[:2] == s.depth.shape
    rows = sample.metadata_path.read_text().splitlines()
    assert len(rows) == 9 and rows[0].startswith(f"run_1\t{rig.run(1).hex}\t")
    # a failing re-export leaves the previous sample untouched and no temp folders behind
    L = SceneLayout(root, SCENE)
    before = sorted(p.name for p in sample.focus_stack_dir.iterdir())
    shutil.move(str(L.breathing_path), str(L.work_dir / "b.json"))
    try:
        with pytest.raises(ExportError, match="breathing"):
            export_zedd(rig, root, SCENE, s.depth, s.K)
    finally:
        shutil.move(str(L.work_dir / "b.json"), str(L.breathing_path))
    assert sorted(p.name for p in sample.focus_stack_dir.iterdir()) == before
    assert [p.name for p in L.scene_dir.iterdir() if p.name.startswith(".zedd")] == []
    # an export to another split keeps this one; the folder of an export killed an hour ago goes
    stale = L.scene_dir / ".zedd.killed.part"
    (stale / "val").mkdir(parents=True)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    other = export_zedd(rig, root, SCENE, s.depth, s.K, split="test")
    assert validate_zedd_root(other.root) == []
    # readable by others as a plain mkdir / open would make them (tempfile's are private)
    assert stat.S_IMODE(other.root.stat().st_mode) == default_mode(folder=True)
    assert stat.S_IMODE(other.depth_path.stat().st_mode) == default_mode()
    assert np.array_equal(np.load(sample.depth_path), s.depth) and other.depth_path.is_file()
    assert [p.name for p in L.scene_dir.iterdir() if p.name.startswith(".zedd")] == []
    shutil.rmtree(other.root / "test")


def test_build_depth_checks_the_export_inputs_before_the_build(built, tmp_path):
    root, rig, _, _, _ = built
    bad = _copy_build(root, rig, tmp_path / "bad")
    shutil.rmtree(SceneLayout(bad, SCENE).work_dir)
    lut = CalibrationLayout(bad, rig.name).focus_lut_path
    lut.write_text("not a focus LUT\n")
    t0 = time.perf_counter()
    result = CliRunner().invoke(app, ["build-depth", "--scene", SCENE, "--root", str(bad)])
    assert result.exit_code == 1 and "focus_lut.tsv" in result.output, result.output
    assert time.perf_counter() - t0 < 20  # before reading the sweep (the build takes minutes)
    assert not SceneLayout(bad, SCENE).work_dir.exists() and not SceneLayout(bad, SCENE).zedd_root.exists()


def test_bad_inputs_fail_at_their_stage(built, tmp_path):
    root, rig, _, _, _ = built
    L = SceneLayout(root, SCENE)
    bad_root = tmp_path / "bad"
    B = SceneLayout(bad_root, SCENE)
    shutil.copytree(L.raw_dir, B.raw_dir)
    shutil.copytree(CalibrationLayout(root, rig.name).dir, CalibrationLayout(bad_root, rig.name).dir)
    data = L.lidar_sweep_path.read_bytes()
    B.lidar_sweep_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BuildDepthError, match=r"\[read\].*lidar_sweep.osf"):
        build_depth(rig, bad_root, SCENE)
    B.lidar_sweep_path.unlink()
    with pytest.raises(BuildDepthError, match=r"\[read\].*lidar_sweep.osf.*not found"):
        build_depth(rig, bad_root, SCENE)
    assert not B.zedd_root.exists() and not B.trajectory_path.exists()


def test_static_frame_of_another_scene_fails_registration(tmp_path):
    rig = _rig()
    _record(tmp_path / "root", SCENE, rig, static_scene="garden03")
    with pytest.raises(BuildDepthError, match=r"\[register\]"):
        build_depth(rig, tmp_path / "root", SCENE)


def _copy_build(root: Path, rig, dest: Path) -> Path:
    """A root holding the built scene's raw data, calibration and the default build's work files (a reprojection
    rewrites the log)."""
    L, D = SceneLayout(root, SCENE), SceneLayout(dest, SCENE)
    shutil.copytree(L.raw_dir, D.raw_dir)
    shutil.copytree(root.parent / f"{root.name}_default_work", D.work_dir)
    shutil.copytree(CalibrationLayout(root, rig.name).dir, CalibrationLayout(dest, rig.name).dir)
    return dest


def test_reproject_rebuilds_the_projection_from_the_work_files(built, tmp_path):
    from zedd_capture.pointcloud.config import BuildConfig
    from zedd_capture.pointcloud.project import depth_edge_band
    from zedd_capture.pointcloud.reproject import reproject

    root, rig, _, s, _ = built
    copy = _copy_build(root, rig, tmp_path / "copy")
    log_path = SceneLayout(copy, SCENE).build_log_path
    log_path.write_text(json.dumps({**json.loads(log_path.read_text()), "tool_version": "0.0.9 (git 0123456789ab)"}))
    again = reproject(rig, copy, SCENE)  # code other than the build's
    # the same cloud, sensor positions and rays as the build (poses read back from trajectory.tum, 1e-9 m digits)
    assert again.depth.shape == s.depth.shape
    assert np.mean(again.depth == s.depth) > 0.999
    assert np.abs(again.depth - s.depth).max() < 1e-4
    assert again.frames == s.frames and again.points == s.points
    assert again.stats["free_space"]["carved_pixels"] == s.stats["free_space"]["carved_pixels"]
    assert not [w for w in again.warnings if "calibration" in w]
    # a projection setting acts, and the rewritten log records it
    masked = reproject(rig, copy, SCENE, BuildConfig(mask_edge_band=True))
    band = depth_edge_band(again.depth)
    assert band.any() and np.all(masked.depth[band] == 0)
    np.testing.assert_array_equal(masked.depth[~band], again.depth[~band])
    logged = json.loads(SceneLayout(copy, SCENE).build_log_path.read_text())
    assert logged["stats"]["config"]["mask_edge_band"] is True
    # the second reprojection still records the build's own stage timings
    assert "aggregate" in logged["stats"]["reprojected"]["build_timings_s"] and "aggregate" not in logged["timings_s"]
    assert logged["stats"]["reprojected"]["build_tool_version"] == "0.0.9 (git 0123456789ab)"  # kept, twice over
    assert logged["tool_version"] == tool_version()
    assert logged["coverage"] == pytest.approx(float((masked.depth > 0).mean()))
    # a calibration changed since the build: the reprojection keeps the build's camera and says so
    from zedd_capture.calibration.extrinsic import read_extrinsic, write_extrinsic

    cal = CalibrationLayout(copy, rig.name)
    T = read_extrinsic(cal.extrinsic_path)
    T[0, 3] += 0.001
    write_extrinsic(cal.extrinsic_path, T)
    moved = reproject(rig, copy, SCENE)
    np.testing.assert_array_equal(moved.depth, again.depth)
    assert [w for w in moved.warnings if "extrinsic changed since the build" in w and "--reproject keeps" in w]
    cal.extrinsic_path.write_text("not a matrix\n")
    broken = reproject(rig, copy, SCENE)
    assert [w for w in broken.warnings if "cannot be read now" in w and "extrinsic.txt" in w]
    assert len([w for w in broken.warnings if "--reproject keeps" in w]) == 1  # the earlier one is not carried on


def test_reproject_applies_cleanup_regions_added_after_the_build(built, tmp_path):
    import yaml

    from zedd_capture.pointcloud.reproject import reproject

    root, rig, _, s, _ = built
    copy = _copy_build(root, rig, tmp_path / "copy")
    W, H = rig.depth_map.width_px, rig.depth_map.height_px
    SceneLayout(copy, SCENE).cleanup_path.write_text(yaml.safe_dump({"regions": [
        {"name": "near", "type": "polygon", "image_size": [W, H], "polygon": [[0, 0], [W, 0], [W, H], [0, H]],
         "depth_m": [0.0, 1.0]}]}))
    cleaned_run = reproject(rig, copy, SCENE)
    cleaned = cleaned_run.depth
    assert cleaned_run.stats["reprojected"]["cleanup_removed"]["near"] > 0
    assert cleaned_run.stats["view"]["points"] < s.stats["view"]["points"]
    near = (s.depth > 0) & (s.depth < 0.9)
    far = s.depth > 1.5
    assert near.sum() > 100  # the twin kitchen's near pole
    # the near surface is gone: those pixels now read what lies behind it, or nothing
    assert np.all(cleaned[near] == 0) or np.mean((cleaned[near] == 0) | (cleaned[near] > 1.0)) > 0.95
    from scipy.ndimage import binary_dilation

    away = far & ~binary_dilation(near, iterations=10)  # beyond the plane fits' reach from the removed surface
    assert np.mean(np.abs(cleaned[away] - s.depth[away]) <= 1e-3 * s.depth[away]) > 0.97


def test_reproject_refuses_other_upstream_settings_and_names_missing_files(built, tmp_path):
    from zedd_capture.pointcloud.aggregate import AggregateConfig
    from zedd_capture.pointcloud.config import BuildConfig
    from zedd_capture.pointcloud.reproject import reproject

    root, rig, _, _, _ = built
    copy = _copy_build(root, rig, tmp_path / "copy")
    L = SceneLayout(copy, SCENE)
    with pytest.raises(BuildDepthError, match=r"aggregate\.k = 5 \(the build's: 7\)"):
        reproject(rig, copy, SCENE, BuildConfig(aggregate=AggregateConfig(k=5)))
    with pytest.raises(BuildDepthError, match=r"mode = 'paper' \(the build's: 'fast'\)"):
        reproject(rig, copy, SCENE, mode="paper")
    data = L.view_cloud_path.read_bytes()
    L.view_cloud_path.write_bytes(data[:-100])
    with pytest.raises(BuildDepthError, match=r"view_cloud\.ply: .*cut short"):
        reproject(rig, copy, SCENE)
    L.view_cloud_path.write_bytes(b"not a ply\n")
    with pytest.raises(BuildDepthError, match=r"view_cloud\.ply: not a PLY"):
        reproject(rig, copy, SCENE)
    L.build_log_path.write_text("{")
    with pytest.raises(BuildDepthError, match=r"build_depth\.json: not a build-depth log"):
        reproject(rig, copy, SCENE)
    L.build_log_path.unlink()
    with pytest.raises(BuildDepthError, match=r"build_depth\.json: missing: run zedd build-depth"):
        reproject(rig, copy, SCENE)
    assert not L.zedd_root.exists()
