"""ChArUco detection/calibration on self-rendered boards; bad input gives errors naming the image."""

import numpy as np
import pytest
from test_calib_synth import BOARD, look_at_board, render_board

from zedd_capture.calibration.charuco import CalibrationError, board_pose, check_sizes, detect, mean_corner_depth
from zedd_capture.calibration.intrinsics import calibrate_intrinsics, read_intrinsics, write_intrinsics

K = np.array([[1430.0, 0, 512.3], [0, 1431.0, 340.8], [0, 0, 1]])
POSES = [(1.5, (0, 0, 0), (0, 0)), (1.4, (25, 0, 5), (0.1, 0)), (1.6, (-25, 10, 0), (0, 0.1)),
         (1.5, (0, 30, -5), (-0.1, 0)), (1.7, (15, -25, 10), (0, 0)), (1.3, (-10, -20, 0), (0.05, -0.05))]


def views(size=(1026, 684)):
    Ts = [look_at_board(BOARD, d, t, o) for d, t, o in POSES]
    return Ts, [render_board(BOARD, K, T, size, noise=1.0, seed=i) for i, T in enumerate(Ts)]


def test_calibration_recovers_K_and_depth(tmp_path):
    Ts, imgs = views()
    dets = [detect(im, BOARD, f"view{i}.jpg") for i, im in enumerate(imgs)]
    intr, cal = calibrate_intrinsics(dets)
    assert abs(intr.K[0, 0] / K[0, 0] - 1) < 1e-3 and abs(intr.K[1, 1] / K[1, 1] - 1) < 1e-3
    assert np.hypot(*(intr.K[:2, 2] - K[:2, 2])) < 1.0
    for T, Tc in zip(Ts, cal.poses):
        assert abs(mean_corner_depth(BOARD, Tc) / mean_corner_depth(BOARD, T) - 1) < 1e-3
    pose = board_pose(dets[1], K)
    assert abs(mean_corner_depth(BOARD, pose.T_camera_board) / mean_corner_depth(BOARD, Ts[1]) - 1) < 5e-4
    p = tmp_path / "intrinsics.yaml"
    intr.provenance = {"rig": "test"}
    write_intrinsics(p, intr)
    back = read_intrinsics(p)
    assert np.allclose(back.K, intr.K) and (back.width, back.height) == (1026, 684)


def test_too_few_detections_names_image():
    blank = np.full((480, 640), 128, np.uint8)
    with pytest.raises(CalibrationError, match=r"empty_wall\.jpg: too few ChArUco corners"):
        detect(blank, BOARD, "empty_wall.jpg")


def test_blurred_board_names_image():
    T = look_at_board(BOARD, 1.6)
    img = render_board(BOARD, K, T, (1026, 684), blur_sigma=2.5)
    with pytest.raises(CalibrationError, match=r"run3_I0\.jpg: .*blurred"):
        detect(img, BOARD, "run3_I0.jpg")
    sharp = detect(render_board(BOARD, K, T, (1026, 684)), BOARD, "sharp.jpg")
    assert sharp.edge_width_px < 3.0


def test_inconsistent_sizes_name_image():
    Ts, imgs = views()
    K2 = K.copy(); K2[:2] *= 0.5
    small = render_board(BOARD, K2, Ts[2], (513, 342))
    dets = [detect(imgs[0], BOARD, "a.jpg"), detect(imgs[1], BOARD, "b.jpg"), detect(small, BOARD, "small.jpg", min_corners=4)]
    with pytest.raises(CalibrationError, match=r"small\.jpg: image size 513x342 differs from a\.jpg"):
        check_sizes(dets)
    with pytest.raises(CalibrationError, match=r"small\.jpg"):
        calibrate_intrinsics(dets)


def test_read_intrinsics_errors(tmp_path):
    p = tmp_path / "intrinsics.yaml"
    p.write_text("K: [[1, 0], [0, 1]]\nwidth: 10\nheight: 10\n")
    with pytest.raises(CalibrationError, match="intrinsics.yaml: K"):
        read_intrinsics(p)


def test_hardware_folder_with_mixed_sizes_names_the_image(tmp_path):
    import cv2

    from zedd_capture.calibration.session import calibrate_intrinsics as session_intrinsics
    from zedd_capture.rig import load_rig

    rig = load_rig("sim")
    hw = rig.model_copy(update={"backend": "hardware"})
    Ts, imgs = views()
    folder = tmp_path / "views"
    folder.mkdir()
    for i, im in enumerate(imgs[:4]):
        cv2.imwrite(str(folder / f"view_{i}.png"), im)
    K2 = K.copy(); K2[:2] *= 0.5
    cv2.imwrite(str(folder / "view_9_small.png"), render_board(BOARD, K2, Ts[4], (513, 342)))
    with pytest.raises(CalibrationError, match=r"view_9_small\.png: image size 513x342 differs"):
        session_intrinsics(hw, tmp_path, images_dir=folder, board=BOARD, fix_aspect=False)
    (folder / "view_9_small.png").unlink()
    rep = session_intrinsics(hw, tmp_path, images_dir=folder, board=BOARD, fix_aspect=False)
    assert abs(rep.summary["fx"] / K[0, 0] - 1) < 1e-3
