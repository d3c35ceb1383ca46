"""Calibration sessions on the digital twin; the twin's hidden truth is used only to score.

Full-resolution camera for intrinsics and extrinsic (a few views), 513x342 renders for the
focus LUT and breathing (many captures).
"""

import cv2
import numpy as np
import pytest

from zedd_capture.calibration import session as S
from zedd_capture.calibration.breathing import apply, max_displacement_px, read_breathing
from zedd_capture.calibration.charuco import CalibrationError
from zedd_capture.calibration.extrinsic import read_extrinsic
from zedd_capture.calibration.focus_lut import read_focus_lut
from zedd_capture.calibration.focus_search import board_roi, find_sharp_hexcode
from zedd_capture.calibration.intrinsics import read_intrinsics
from zedd_capture.geometry import rotation_angle_deg
from zedd_capture.layout import CalibrationLayout
from zedd_capture.rig import load_rig

from zedd_capture.sim.lidar import true_extrinsic  # (truth: scoring only)
from zedd_capture.sim.motor import HiddenMotor, seed_for_rig
from zedd_capture.sim.optics import breathing_warp_to_canonical, true_K

RIG = load_rig("sim")
SMALL = RIG.model_copy(update={"camera": RIG.camera.model_copy(update={"width_px": 513, "height_px": 342})})
# Sharp-search tolerance at 513 px with every stage on the rig's own images: the F1.4 peak is ~+-1100 counts
# wide at a 5 % sharpness drop (1026 px: ~+-600), and over such a window the quartic in counts is biased by
# the motor curve's local bend (the sharpness is even in diopters, not in counts): measured at 1026 px
# -2..-3 counts at 1.3/3.0 m, +15..20 at 5 m. +-2 counts needs the fine stage at the sensor's native pitch.
TOL_COUNTS = 8
# Fine stage on a native-pitch (4104 px) crop of the board: +-2 counts of defocus is still only ~0.02 px of
# blur there, but the peak is ~4-5x narrower in counts (5 % window ~+-110-160 counts), so the bend's bias
# falls below a count; measured errors -0.9..+1.0 counts over 0.82-8.1 m at 1026 px (12 searches).
NATIVE_TOL_COUNTS = RIG.sim.motor_repeatability_counts


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("calroot")
    rep = S.calibrate_intrinsics(RIG, r)
    assert rep.products["intrinsics"].is_file()
    return r


def test_intrinsics_within_tolerance(root):
    intr = read_intrinsics(CalibrationLayout(root, RIG.name).intrinsics_path)
    Kt = true_K(RIG)
    assert abs(intr.K[0, 0] / Kt[0, 0] - 1) < 1e-3
    assert abs(intr.K[1, 1] / Kt[1, 1] - 1) < 1e-3
    assert np.hypot(intr.K[0, 2] - Kt[0, 2], intr.K[1, 2] - Kt[1, 2]) < 1.0
    assert (intr.width, intr.height) == (RIG.camera.width_px, RIG.camera.height_px)


def test_extrinsic_within_3mm_005deg(root):
    rep = S.calibrate_extrinsics(RIG, root)
    E = read_extrinsic(CalibrationLayout(root, RIG.name).extrinsic_path)
    Tt = true_extrinsic(RIG)
    assert np.linalg.norm(E[:3, 3] - Tt[:3, 3]) <= 0.003
    assert rotation_angle_deg(E[:3, :3] @ Tt[:3, :3].T) <= 0.05
    assert len(rep.rows) == 8 and all(r["rms_mm"] < 30 for r in rep.rows)


def test_extrinsic_with_two_poses_is_a_clear_error(root):
    with pytest.raises(CalibrationError, match=">= 3 board poses"):
        S.calibrate_extrinsics(RIG, root, poses=2)


def test_focus_lut_runs_within_half_percent(root):
    runs = [1, 9]  # the near and far ends (all 9 runs: see the report)
    rep = S.calibrate_focus(SMALL, root, hexcodes=[SMALL.run(k).hexcode for k in runs])
    lut = read_focus_lut(CalibrationLayout(root, RIG.name).focus_lut_path)
    motor = HiddenMotor(seed_for_rig(RIG.name))
    for k in runs:
        h = SMALL.run(k).hexcode
        assert abs(lut.distance_m(h) / motor.distance_m(h) - 1) < 0.005, k
    assert (CalibrationLayout(root, RIG.name).report_dir / "calibration.png").is_file()
    assert {r["hexcode"] for r in rep.rows} >= {"6D3E", "1113"}


def test_focus_lut_of_one_far_hexcode_alone(root, tmp_path):
    # the bootstrap placements (3.08 m, 1.3 m) must find their sharp positions outside the target's own
    # neighbourhood, and a one-entry LUT answers its target (the motor lands within its repeatability)
    import shutil

    lay = CalibrationLayout(tmp_path, RIG.name)
    lay.dir.mkdir(parents=True)
    shutil.copy(CalibrationLayout(root, RIG.name).intrinsics_path, lay.intrinsics_path)
    h = SMALL.run(9).hexcode  # 8.1 m
    S.calibrate_focus(SMALL, tmp_path, hexcodes=[h])
    lut = read_focus_lut(lay.focus_lut_path)
    assert list(lut.hexcodes) == [h]
    assert abs(lut.distance_m(h) / HiddenMotor(seed_for_rig(RIG.name)).distance_m(h) - 1) < 0.005


@pytest.mark.parametrize("z", [1.3, 3.0])
def test_sharp_search_lands_within_motor_repeatability(z):
    tw = S._twin(SMALL)
    board = S._board_for(SMALL, z)
    tw.place_board(S._board_pose(board, z), board)
    roi = board_roi(S._shoot(tw, 16.0), board)
    # centre +- window as calibrate_focus's searches after the bootstrap (a rough LUT predicts the peak)
    guess = tw.motor_model.hexcode_for(z) + 900  # truth only to place the window, well off-centre
    res = find_sharp_hexcode(S._grey_capture(tw, 1.4), tw.focus_motor.move_to, 0x1000, 0x7000, roi,
                             centre=guess, window=4000, coarse_points=9,
                             capture_reference=S._grey_capture(tw, 16.0))
    true_hex = tw.motor_model.hexcode_for(z)
    rep = SMALL.sim.motor_repeatability_counts
    # the fitted peak lands within the motor's repeatability of the true sharp hexcode ...
    assert abs(res.hexcode_float - true_hex) <= TOL_COUNTS, (res.hexcode_float, true_hex, res.std_counts)
    # ... and the motor then reaches it within its repeatability
    assert abs(res.achieved - res.hexcode) <= rep
    assert res.std_counts < 5


def test_sharp_search_native_crop_lands_within_motor_repeatability():
    z = 1.3
    tw = S._twin(SMALL)
    board = S._board_for(SMALL, z)
    tw.place_board(S._board_pose(board, z), board)
    roi = board_roi(S._shoot(tw, 16.0), board)
    true_hex = tw.motor_model.hexcode_for(z)  # truth only to place the window and to score
    # window as calibrate_focus's searches once a rough LUT exists; preview at 513 px, fine stage at 4104 px
    res = S.sharp_search_twin(tw, roi, 0x1000, 0x7000, 1.4, 16.0, centre=true_hex + 400, window=1500,
                              coarse_points=9, fit_points=17)
    assert abs(res.hexcode_float - true_hex) <= NATIVE_TOL_COUNTS, (res.hexcode_float, true_hex, res.std_counts)
    assert abs(res.achieved - res.hexcode) <= SMALL.sim.motor_repeatability_counts
    assert res.fine_samples and res.captures == len(res.samples) + len(res.fine_samples)
    assert res.fit_window[1] - res.fit_window[0] < 500  # the native peak is narrow in counts


def test_region_render_is_a_crop_of_the_full_image():
    """A window rendered with ``region`` is the same picture as the full image there (pitch, optics, K)."""
    from zedd_capture.sim.render import render_shot

    tw = S._twin(SMALL)
    board = S._board_for(SMALL, 2.0)
    tw.place_board(S._board_pose(board, 2.0), board)
    W, H = 240, 160
    d = 1.9  # board slightly defocused: the blur must follow the full image's pitch
    full = render_shot(tw.scene, SMALL, d, 1.4, 1e-3, 100, np.random.default_rng(0), np.eye(4), W, H)
    reg = (90, 50, 170, 110)
    crop = render_shot(tw.scene, SMALL, d, 1.4, 1e-3, 100, np.random.default_rng(0), np.eye(4), W, H, region=reg)
    m = 6  # the crop's own border sees no light from outside it
    a = full.radiance[reg[1] + m:reg[3] - m, reg[0] + m:reg[2] - m]
    b = crop.radiance[m:-m, m:-m]
    assert crop.radiance.shape[:2] == (reg[3] - reg[1], reg[2] - reg[0])
    assert np.abs(a - b).max() < 1e-3
    assert np.allclose(crop.K[:2, 2], full.K[:2, 2] - reg[:2])


def test_breathing_rig_level_and_f14_reuse(root):
    rep = S.calibrate_breathing(SMALL, root)
    tab = read_breathing(CalibrationLayout(root, RIG.name).breathing_path)
    W, H = 513, 342
    tw = S._twin(SMALL, textured_wall_m=SMALL.capture.canonical_focus_distance_m)
    for r in SMALL.capture.runs:
        # the F1.4 shot of a run (motor driven again: +-repeatability) is warped with the F/16 estimate;
        # score it against the twin's true warp of that shot (what truth/breathing.json holds)
        tw.focus_motor.move_to(r.hexcode)
        truth = breathing_warp_to_canonical(SMALL, tw.focus_distance_m, W, H)
        assert max_displacement_px(tab[r.run], truth, W, H) <= 0.05, r.run
    img14 = cv2.cvtColor(S._shoot(tw, 1.4), cv2.COLOR_BGR2GRAY)
    assert apply(img14, tab[9]).shape == img14.shape
    assert all(row["correlation"] > 0.9 for row in rep.rows)
