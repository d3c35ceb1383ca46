"""Camera side of the digital twin: thin-lens defocus, occlusion, breathing, motor, exposure, truth, board."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import yaml

from zedd_capture.devices.protocols import Camera, DeviceError, FocusMotor
from zedd_capture.layout import SceneLayout
from zedd_capture.rig import load_rig
from zedd_capture.sim import scene as scene_mod
from zedd_capture.sim.board import CharucoTarget
from zedd_capture.sim.devices import TwinRig
from zedd_capture.sim.motor import PUBLISHED_HEXCODES, HiddenMotor
from zedd_capture.sim.optics import (K_at_focus, breathing_scale, breathing_warp_to_canonical, coc_diameter_mm,
                                     coc_diameter_px, true_K)
from zedd_capture.sim.render import expose, render_defocused, render_view
from zedd_capture.sim.scene import DIFFUSE, Part, box, build_scene, scene_from_parts
from zedd_capture.sim.textures import Texture
from zedd_capture.sim.truth import write_camera_truth, write_truth


def small_rig(width: int, height: int):
    rig = load_rig("sim")
    cam = rig.camera.model_copy(update={"width_px": width, "height_px": height})
    return rig.model_copy(update={"camera": cam}, deep=True)


def plane(z: float, texture: Texture, name: str = "plane", x_range=(-20.0, 20.0)) -> Part:
    """A fronto-parallel slab whose front face is the plane z (camera at the origin looking +z)."""
    cx = (x_range[0] + x_range[1]) / 2
    return Part(name, box((cx, 0.0, z + 0.005), (x_range[1] - x_range[0], 40.0, 0.01)), DIFFUSE, texture)


def step_texture(lo=0.2, hi=0.8) -> Texture:
    return Texture(kind="step", base_rgb=(1.0, 1.0, 1.0), step_point=(0.0, 0.0, 0.0), step_dir=(1.0, 0.0, 0.0),
                   lo=lo, hi=hi)


def lsf_variance(profile: np.ndarray) -> float:
    """Variance (px^2) of the line-spread function (derivative of an edge profile)."""
    lsf = np.diff(profile.astype(np.float64))
    if lsf.sum() < 0:
        lsf = -lsf
    lsf = np.clip(lsf, 0, None)
    x = np.arange(len(lsf)) + 0.5
    m = np.sum(x * lsf) / lsf.sum()
    return float(np.sum((x - m) ** 2 * lsf) / lsf.sum())


def measured_coc(rig, depth_plane: float, focus: float, f_number: float) -> tuple[float, float]:
    """(measured, analytic) CoC diameter (px) from the edge-spread of a step edge on a plane."""
    w, h = rig.camera.width_px, rig.camera.height_px
    scn = scene_from_parts("edge", [plane(depth_plane, step_texture())], np.eye(4))
    K = true_K(rig, w, h)
    rad, depth = render_view(scn, K, w, h, np.eye(4))
    blurred = render_defocused(rad, depth, focus, f_number, rig, K)
    row = slice(h // 2 - 2, h // 2 + 3)
    var_aif = lsf_variance(rad[row, :, 0].mean(axis=0))
    var_def = lsf_variance(blurred[row, :, 0].mean(axis=0))
    # the LSF of a uniform disk of diameter c has variance c^2 / 16; the sharp render adds var_aif
    c_meas = 4.0 * np.sqrt(max(var_def - var_aif, 0.0))
    pitch = rig.camera.sensor_width_mm / w
    return c_meas, float(coc_diameter_px(depth_plane, focus, f_number, rig.lens.focal_length_mm, pitch))


def test_coc_formula_by_hand():
    # f = 50 mm, focus d = 1 m, object D = 2 m, N = 2: 50^2 * 1000 / (2 * 2000 * 950) mm
    assert coc_diameter_mm(2.0, 1.0, 2.0, 50.0) == pytest.approx(2500 * 1000 / (2 * 2000 * 950), rel=1e-12)
    assert coc_diameter_mm(1.0, 1.0, 2.0, 50.0) == 0.0
    assert coc_diameter_mm(np.inf, 1.0, 2.0, 50.0) == pytest.approx(2500 / (2 * 950), rel=1e-12)


@pytest.mark.parametrize("f_number", [1.4, 2.8, 5.6])
@pytest.mark.parametrize("depth_plane", [0.6, 1.5, 4.0])
def test_edge_spread_matches_thin_lens_coc(f_number, depth_plane):
    rig = small_rig(400, 40)
    c_meas, c_true = measured_coc(rig, depth_plane, 0.82, f_number)
    assert c_true > 2.0
    assert c_meas == pytest.approx(c_true, rel=0.05)


def test_edge_spread_large_blur_downsampled_path():
    rig = small_rig(900, 64)  # CoC ~ 50 px: runs on a downsampled layer
    c_meas, c_true = measured_coc(rig, 8.0, 0.82, 1.4)
    assert c_true > 40
    assert c_meas == pytest.approx(c_true, rel=0.05)


@pytest.mark.parametrize("depth_plane", [2.0, 3.08, 8.1])
def test_f16_is_sharp_where_the_thin_lens_formula_says_so(depth_plane):
    rig = small_rig(1026, 32)  # the sim rig's pixel pitch
    focus = rig.capture.canonical_focus_distance_m
    c_meas, c_true = measured_coc(rig, depth_plane, focus, 16.0)
    assert c_true < 1.0
    assert c_meas < 1.0
    # where the formula says several pixels, F/16 blurs too (0.8 m at the canonical focus)
    c_meas_near, c_true_near = measured_coc(rig, 0.8, focus, 16.0)
    assert c_true_near > 3.0 and c_meas_near == pytest.approx(c_true_near, rel=0.05)


def edge_width_10_90(profile: np.ndarray) -> float:
    p = (profile - profile.min()) / (profile.max() - profile.min())
    if p[0] > p[-1]:
        p = p[::-1]
    x = np.arange(len(p))
    return float(np.interp(0.9, p, x) - np.interp(0.1, p, x))


def occlusion_scene():
    near = Part("near", box((-10.0, 0.0, 1.0 + 0.005), (20.0, 40.0, 0.01)), DIFFUSE,
                Texture(kind="constant", base_rgb=(0.9, 0.9, 0.9)))  # covers x < 0 at z = 1 m
    far = plane(6.0, Texture(kind="constant", base_rgb=(0.2, 0.2, 0.2)), "wall")
    return scene_from_parts("occlusion", [near, far], np.eye(4))


def test_occlusion_near_sharp_edge_stays_sharp_over_defocused_wall():
    rig = small_rig(400, 40)
    w, h = 400, 40
    K = true_K(rig, w, h)
    rad, depth = render_view(occlusion_scene(), K, w, h, np.eye(4))
    pitch = rig.camera.sensor_width_mm / w
    assert coc_diameter_px(6.0, 1.0, 1.4, 50.0, pitch) > 15  # the wall is strongly defocused
    sharp = render_defocused(rad, depth, 1.0, 1.4, rig)[h // 2, :, 0]
    assert edge_width_10_90(sharp) < 1.2
    # far from the edge both sides keep their values (no halo, no leak of the wall into the object)
    assert np.allclose(sharp[:150], 0.9, atol=1e-3) and np.allclose(sharp[260:], 0.2, atol=1e-3)
    # focused on the wall instead: the near edge spreads over the sharp wall with the near CoC
    blurred = render_defocused(rad, depth, 6.0, 1.4, rig)[h // 2, :, 0]
    c_near = coc_diameter_px(1.0, 6.0, 1.4, 50.0, pitch)
    c_meas = 4 * np.sqrt(lsf_variance(blurred) - lsf_variance(sharp))
    assert c_meas == pytest.approx(c_near, rel=0.05)


def test_breathing_measured_by_ecc_equals_model():
    rig = small_rig(512, 342)
    w, h = 512, 342
    scn = build_scene("office02")
    canon = rig.capture.canonical_focus_distance_m
    imgs = {}
    for d in (0.82, canon):
        rad, _ = render_view(scn, K_at_focus(rig, d, w, h), w, h)
        imgs[d] = cv2.cvtColor(rad, cv2.COLOR_RGB2GRAY)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 300, 1e-8)
    # coarse (half size) then full resolution; translation scales with the pixel-centre convention
    small = [cv2.resize(imgs[d], (w // 2, h // 2), interpolation=cv2.INTER_AREA) for d in (canon, 0.82)]
    warp = np.eye(2, 3, dtype=np.float32)
    _, warp = cv2.findTransformECC(small[0], small[1], warp, cv2.MOTION_AFFINE, crit, None, 3)
    warp[:, 2] = 2 * warp[:, 2] + 0.5 - 0.5 * (warp[:, 0] + warp[:, 1])
    _, warp = cv2.findTransformECC(imgs[canon], imgs[0.82], warp, cv2.MOTION_AFFINE, crit, None, 3)
    # ECC warp maps canonical coords -> run coords; the model's warp maps run -> canonical
    M = breathing_warp_to_canonical(rig, 0.82, w, h)
    A = np.vstack([M, [0, 0, 1]])
    model = np.linalg.inv(A)[:2]
    xs, ys = np.meshgrid(np.linspace(20, w - 20, 9), np.linspace(20, h - 20, 7))
    P = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)
    err = np.abs(P @ warp.T.astype(np.float64) - P @ model.T)
    assert breathing_scale(rig, 0.82) - 1 > 0.01  # the effect being measured is > 1 %
    assert err.max() < 0.02


def test_same_seed_same_scene_different_seed_different_scene():
    raw_build = scene_mod.build_scene.__wrapped__
    a, b, c = raw_build("kitchen03"), raw_build("kitchen03"), raw_build("kitchen04")
    rig = small_rig(160, 107)
    K = true_K(rig, 160, 107)
    ra, da = render_view(a, K, 160, 107)
    rb, db = render_view(b, K, 160, 107)
    rc, dc = render_view(c, K, 160, 107)
    assert np.array_equal(ra, rb) and np.array_equal(da, db)
    assert np.mean(np.abs(np.nan_to_num(da, posinf=0) - np.nan_to_num(dc, posinf=0))) > 0.1
    assert build_scene("kitchen03") is build_scene("kitchen03")  # cached


def test_twin_shots_are_deterministic():
    rig = load_rig("sim")
    shots = []
    for _ in range(2):
        twin = TwinRig(rig, "hallway02", render_size=(120, 80))
        twin.camera.open()
        twin.focus_motor.move_to(0x2D09)
        twin.camera.set_aperture(2.8)
        shots.append(twin.camera.capture())
    assert shots[0] == shots[1]


@pytest.mark.parametrize("template", scene_mod.TEMPLATES)
def test_templates_span_near_to_far_with_materials(template):
    rig = load_rig("sim")
    s = build_scene(f"{template}01")
    K = true_K(rig, 171, 114)
    _, depth = render_view(s, K, 171, 114)
    d = depth[np.isfinite(depth)]
    assert d.min() < 0.6 and d.max() > 10.0
    mats = set(s.material_of(np.arange(len(s.parts))).tolist())
    assert mats <= {0, 1, 2} and 0 in mats and len(mats) >= 2
    assert s.material_of([-1])[0] == -1
    # albedo is a deterministic function of position and geometry id, in [0, 1]
    hits = s.cast(np.zeros((50, 3)) + s.tripod_camera_pose[:3, 3], np.random.default_rng(0).normal(size=(50, 3)))
    ok = hits.hit
    a1 = s.albedo_at(hits.geometry_id[ok], hits.point[ok], hits.normal[ok])
    a2 = s.albedo_at(hits.geometry_id[ok], hits.point[ok], hits.normal[ok])
    assert np.array_equal(a1, a2) and a1.min() >= 0 and a1.max() <= 1 and a1.std() > 0.01


def test_motor_monotone_published_codes_and_seeded():
    m = HiddenMotor(seed=3)
    dist = m.distance_m(np.arange(0x10000))
    assert np.all(np.diff(dist) < 0)  # larger code = nearer focus, strictly
    runs = np.array([m.distance_m(h) for h in PUBLISHED_HEXCODES])
    assert runs[0] == pytest.approx(0.82, rel=1e-3) and runs[-1] == pytest.approx(8.10, rel=1e-3)
    assert runs[4] == pytest.approx(3.08, rel=0.01)
    assert np.all(np.diff(runs) > 0)
    for h in (0x1113, 0x2371, 0x6D3E, 0x9000):
        assert abs(m.hexcode_for(m.distance_m(h)) - h) <= 1
    other = HiddenMotor(seed=4)
    assert abs(other.distance_m(0x3B39) - m.distance_m(0x3B39)) > 1e-4  # seeded per rig
    # not a simple formula: not linear in diopters over the plan
    p = 1 / runs
    fit = np.polyval(np.polyfit(PUBLISHED_HEXCODES, p, 1), PUBLISHED_HEXCODES)
    assert np.max(np.abs(fit - p)) > 0.005


def test_motor_repeatability_and_readback():
    rig = load_rig("sim")
    twin = TwinRig(rig, "office01", render_size=(64, 48))
    assert isinstance(twin.focus_motor, FocusMotor) and isinstance(twin.camera, Camera)
    errs = []
    for _ in range(40):
        for code in (0x6D3E, 0x1113):
            got = twin.focus_motor.move_to(code)
            assert got == twin.focus_motor.position()
            errs.append(got - code)
    errs = np.array(errs)
    assert np.abs(errs).max() <= rig.sim.motor_repeatability_counts and len(set(errs.tolist())) > 1
    assert twin.sim_time_s > 40 * 0.1  # each long move takes simulated settle time
    assert twin.focus_distance_m == pytest.approx(twin.motor_model.distance_m(twin.focus_motor.position()))
    with pytest.raises(DeviceError):
        twin.focus_motor.move_to(0x10000)


def test_exposure_ladder_keeps_brightness_and_noise_model():
    rig = load_rig("sim")
    rad = np.full((200, 200, 3), 0.18, np.float32)
    twin = TwinRig(rig, "office01", render_size=(64, 48))
    means = []
    for n in rig.capture.apertures:
        N = twin.camera.set_aperture(n)
        t = twin.camera.set_shutter(rig.exposure.shutter_for(n))
        img = expose(rad, N, t, 100, rig, np.random.default_rng(1))
        means.append(img.mean())
    assert np.ptp(means) / np.mean(means) < 0.03  # constant within the body's 1/3-stop shutter steps
    base = expose(rad, 1.4, 1 / 4000, 100, rig, np.random.default_rng(1)).mean()
    darker = expose(rad, 2.8, 1 / 4000, 100, rig, np.random.default_rng(1)).mean()  # 2 stops less light
    brighter = expose(rad, 2.8, 1 / 4000, 400, rig, np.random.default_rng(1)).mean()  # ISO gains them back
    assert darker < base * 0.6 and brighter == pytest.approx(base, rel=0.02)
    noisy = expose(rad, 1.4, 1 / 4000, 100, rig, np.random.default_rng(1)).astype(float)
    assert 0.5 < noisy.std() < 5.0  # shot + read noise present (in 8-bit sRGB counts)


def test_camera_protocol_capture_jpeg():
    rig = load_rig("sim")
    twin = TwinRig(rig, "garden01", render_size=(96, 64))
    with pytest.raises(DeviceError):
        twin.camera.capture()
    twin.camera.open()
    assert twin.camera.set_aperture(2.0) == 2.0
    assert twin.camera.set_shutter(1 / 2041) == pytest.approx(1 / 2000)
    assert twin.camera.set_iso(100) == 100
    data = twin.camera.capture()
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert data[:2] == b"\xff\xd8" and img.shape == (64, 96, 3)
    assert twin.shots[-1].focus_distance_m == pytest.approx(twin.focus_distance_m)


def test_board_renders_where_its_object_points_project():
    rig = small_rig(820, 547)
    w, h = 820, 547
    target = CharucoTarget()
    base = scene_from_parts("room", [plane(6.0, Texture(kind="noise", base_rgb=(0.5, 0.5, 0.5), seed=1))], np.eye(4))
    rot = cv2.Rodrigues(np.array([0.15, -0.25, 0.05]))[0]
    T_wb = np.eye(4)
    T_wb[:3, :3] = rot
    T_wb[:3, 3] = [-0.5, -0.35, 2.0]
    scn = base.with_board(target, T_wb)
    assert len(scn.parts) == len(base.parts) + 2 and scn.parts[0] is base.parts[0]
    K = true_K(rig, w, h)
    rad, _ = render_view(scn, K, w, h, np.eye(4))
    grey = (np.clip(rad.mean(axis=2), 0, 1) * 255).astype(np.uint8)
    corners, ids, _, _ = cv2.aruco.CharucoDetector(target.cv_board()).detectBoard(grey)
    assert ids is not None and len(ids) >= 20
    obj = target.corner_points()[ids.ravel()]
    proj, _ = cv2.projectPoints(obj, cv2.Rodrigues(rot)[0], T_wb[:3, 3], K, None)
    err = np.linalg.norm(proj.reshape(-1, 2) - corners.reshape(-1, 2), axis=1)
    assert np.median(err) < 0.15 and err.max() < 0.5


def test_write_truth_files(tmp_path):
    rig = load_rig("sim")
    twin = TwinRig(rig, "kitchen01", render_size=(64, 48))
    for r in rig.capture.runs:
        twin.focus_motor.move_to(r.hexcode)
    layout = SceneLayout(tmp_path, "kitchen01")
    write_truth(layout, twin)
    d = layout.truth_dir
    for name in ("extrinsic.txt", "trajectory.tum", "static.tum"):  # the lidar twin's truth beside the camera's
        assert (d / name).stat().st_size > 0, name
    depth = np.load(d / "depth.npy")
    assert depth.shape == (rig.depth_map.height_px, rig.depth_map.width_px) and depth.dtype == np.float32
    K = np.loadtxt(d / "K.txt")
    assert np.allclose(K, true_K(rig, rig.depth_map.width_px, rig.depth_map.height_px))
    assert np.allclose(true_K(rig)[0, 0], rig.nominal_K()[0, 0] * 1.003)
    assert 0.3 < depth[depth > 0].min() < 1.0 and depth.max() > 10
    lut = [ln.split("\t") for ln in (d / "focus_lut.tsv").read_text().splitlines() if not ln.startswith("#")]
    assert [int(x[0], 16) for x in lut] == [r.hexcode for r in rig.capture.runs]
    assert float(lut[0][1]) == pytest.approx(0.82, rel=1e-3)
    warps = json.loads((d / "breathing.json").read_text())
    assert sorted(warps) == sorted(f"run_{r.run}" for r in rig.capture.runs)
    w5 = np.array(warps["run_5"])
    assert np.allclose(w5[:, :2], np.eye(2), atol=2e-4)  # run 5 ~ canonical
    w1 = np.array(warps["run_1"])
    s1 = breathing_scale(rig, twin.motor_model.distance_m(twin.achieved[0x6D3E]))
    assert w1[0, 0] == pytest.approx(1 / s1, rel=1e-9)
    intr = yaml.safe_load((d / "intrinsics.yaml").read_text())
    assert intr["width"] == rig.camera.width_px and intr["dist"] == [0.0] * 5
    assert np.allclose(intr["K"], true_K(rig))
    # a twin that drove no motor (a verify-only rerun of the capture) writes the same warps from the positions the
    # manifest recorded; without them it would take the commanded codes
    fresh = TwinRig(rig, "kitchen01", render_size=(64, 48))
    by_run = {r.run: twin.achieved[r.hexcode] for r in rig.capture.runs}
    write_camera_truth(tmp_path / "again", fresh, by_run)
    assert json.loads((tmp_path / "again" / "breathing.json").read_text()) == warps
    write_camera_truth(tmp_path / "planned", fresh)
    assert json.loads((tmp_path / "planned" / "breathing.json").read_text()) != warps


def test_twin_is_identity_seeded_for_resume():
    """The same shot gives the same bytes whatever was shot before (a resumed capture is identical)."""
    rig = load_rig("sim")
    a = TwinRig(rig, "classroom02", render_size=(80, 54))
    b = TwinRig(rig, "classroom02", render_size=(80, 54))
    for t in (a, b):
        t.camera.open()
    b.focus_motor.move_to(0x6D3E)
    b.camera.set_aperture(16.0)
    b.camera.capture()
    out = []
    for t in (a, b):
        t.focus_motor.move_to(0x2371)
        t.camera.set_aperture(2.8)
        out.append((t.focus_motor.position(), t.camera.capture()))
    assert out[0] == out[1]
    again = b.camera.capture()  # a second exposure of the same state has fresh noise
    assert again != out[1][1]
