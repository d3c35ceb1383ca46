"""`zedd validate`: one test per defect, each asserting the message that names the file."""

import io
import shutil
import zipfile

import cv2
import numpy as np
import pytest
from zedd_samples import make_zedd_root, submission_bytes, valid_submission_arrays

from zedd_capture.validate import validate


@pytest.fixture
def root(tmp_path):
    make_zedd_root(tmp_path / "zedd")
    return tmp_path / "zedd"


def only(problems):
    assert len(problems) == 1, problems
    return problems[0]


def test_valid_root_has_no_problems(root):
    assert validate(root) == []


def test_missing_metadata(root):
    (root / "metadata.txt").unlink()
    assert "metadata.txt: metadata.txt not found" in only(validate(root))


def test_metadata_bad_line(root):
    text = (root / "metadata.txt").read_text().replace("run_3\t3B39", "run_3\t3B3")
    (root / "metadata.txt").write_text(text)
    assert "metadata.txt:3: hexcode" in only(validate(root))


def test_metadata_missing_run(root):
    lines = (root / "metadata.txt").read_text().splitlines(keepends=True)
    (root / "metadata.txt").write_text("".join(lines[:8]))
    assert "expected runs run_1..run_9" in only(validate(root))


def test_missing_image(root):
    img = next((root / "val/kitchen01/focus_stack").glob("img_run_4_*_F5.6.jpg"))
    img.unlink()
    assert "missing image for run 4 at F5.6" in only(validate(root))


def test_unparseable_image_name(root):
    stack = root / "val/kitchen01/focus_stack"
    shutil.copy(next(stack.glob("*.jpg")), stack / "img_run_1_motor_6d3e_aperture_F2.jpg")
    assert "img_run_1_motor_6d3e_aperture_F2.jpg: not a focus-stack image name" in only(validate(root))


def test_hexcode_does_not_match_metadata(root):
    stack = root / "val/kitchen01/focus_stack"
    (stack / "img_run_2_motor_4EA8_aperture_F2.8.jpg").rename(stack / "img_run_2_motor_4EA9_aperture_F2.8.jpg")
    msg = only(validate(root))
    assert "img_run_2_motor_4EA9_aperture_F2.8.jpg: hexcode 4EA9 does not match metadata.txt (4EA8 for run_2)" in msg


def test_image_not_jpeg(root):
    p = root / "val/kitchen01/focus_stack/img_run_1_motor_6D3E_aperture_F1.4.jpg"
    p.write_bytes(b"PNG not really")
    assert "img_run_1_motor_6D3E_aperture_F1.4.jpg: not a JPEG file" in only(validate(root))


def test_depth_missing(root):
    (root / "val/kitchen01/gt/depth.npy").unlink()
    assert "gt/depth.npy: missing" in only(validate(root))


def test_depth_not_2d(root):
    np.save(root / "val/kitchen01/gt/depth.npy", np.ones((48, 64, 1), np.float32))
    assert "depth map must be 2-D, got shape (48, 64, 1)" in only(validate(root))


def test_depth_wrong_dtype(root):
    np.save(root / "val/kitchen01/gt/depth.npy", np.ones((48, 64), np.float64))
    assert "expected float32 metres, got float64" in only(validate(root))


def test_depth_corrupt(root):
    (root / "val/kitchen01/gt/depth.npy").write_bytes(b"\x93NUMPY garbage")
    assert "gt/depth.npy: not a readable .npy depth map: corrupt" in only(validate(root))


def test_K_not_3x3(root):
    np.savetxt(root / "val/kitchen01/gt/K.txt", np.eye(4))
    assert "K.txt: expected a 3x3 matrix, got shape (4, 4)" in only(validate(root))


def test_K_not_numbers(root):
    (root / "val/kitchen01/gt/K.txt").write_text("fx 0 320\n0 fy 240\n0 0 1\n")
    problem = only(validate(root))
    assert "gt/K.txt: not a 3x3 matrix of numbers: could not convert string" in problem and "usecols" not in problem


def test_K_does_not_fit_depth_size(root):
    np.savetxt(root / "val/kitchen01/gt/K.txt", np.array([[50.0, 0, 500], [0, 50, 24], [0, 0, 1]]))
    assert "principal point (500.0, 24.0) is outside the 64x48 depth map" in only(validate(root))


def test_empty_root(tmp_path):
    (tmp_path / "metadata.txt").write_text("")
    problems = validate(tmp_path)
    assert any("no <split>/<scene>/ folders" in p for p in problems)


def test_image_truncated(root):
    p = root / "val/kitchen01/focus_stack/img_run_3_motor_3B39_aperture_F2.8.jpg"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    msg = only(validate(root))
    assert "img_run_3_motor_3B39_aperture_F2.8.jpg: cannot read image: image file is truncated" in msg  # eval-model's words


def test_image_size_differs_from_the_stack(root):
    p = root / "val/kitchen01/focus_stack/img_run_6_motor_1DB4_aperture_F4.0.jpg"
    p.write_bytes(cv2.imencode(".jpg", np.zeros((40, 60, 3), np.uint8))[1].tobytes())
    msg = only(validate(root))
    assert "img_run_6_motor_1DB4_aperture_F4.0.jpg: size 60x40 differs from the other focus-stack images (64x48)" in msg


def test_depth_size_differs_from_the_images(root):
    np.save(root / "val/kitchen01/gt/depth.npy", np.ones((40, 60), np.float32))
    assert "gt/depth.npy: shape (40, 60) differs from the focus-stack images (48, 64)" in only(validate(root))


def test_image_of_a_run_metadata_does_not_list(root):
    stack = root / "val/kitchen01/focus_stack"
    shutil.copy(stack / "img_run_9_motor_1113_aperture_F2.8.jpg", stack / "img_run_10_motor_1000_aperture_F2.8.jpg")
    msg = only(validate(root))
    assert "img_run_10_motor_1000_aperture_F2.8.jpg: run 10 is not part of a ZEDD sample (runs 1..9)" in msg
    assert "metadata.txt does not list it" in msg


def test_image_of_an_extra_aperture(root):
    stack = root / "val/kitchen01/focus_stack"
    shutil.copy(stack / "img_run_4_motor_2D09_aperture_F5.6.jpg", stack / "img_run_4_motor_2D09_aperture_F8.0.jpg")
    msg = only(validate(root))
    assert "img_run_4_motor_2D09_aperture_F8.0.jpg: aperture F8.0 is not one of the ZEDD apertures" in msg


@pytest.mark.parametrize("value", [0.0, np.nan, np.inf])
def test_depth_without_a_valid_pixel(root, value):
    np.save(root / "val/kitchen01/gt/depth.npy", np.full((48, 64), value, np.float32))
    assert "gt/depth.npy: no valid pixel" in only(validate(root))


def test_depth_negative_values(root):
    depth = np.load(root / "val/kitchen01/gt/depth.npy")
    depth[:2, :3] = -1.5
    np.save(root / "val/kitchen01/gt/depth.npy", depth)
    assert "gt/depth.npy: 6 negative depth values" in only(validate(root))


def test_metadata_focus_distances_not_near_to_far(root):
    text = (root / "metadata.txt").read_text().replace("\t1.4500\n", "\t0.9000\n")
    (root / "metadata.txt").write_text(text)
    msg = only(validate(root))
    assert "metadata.txt: focus distances must increase with the run number" in msg
    assert "run_2 1.0500 m -> run_3 0.9000 m" in msg


# --- submission zips ---------------------------------------------------------------------
def write_zip(tmp_path, arrays):
    p = tmp_path / "submission.zip"
    p.write_bytes(submission_bytes(arrays))
    return p


def test_valid_submission(tmp_path):
    assert validate(write_zip(tmp_path, valid_submission_arrays())) == []


def test_submission_missing_file(tmp_path):
    arrays = valid_submission_arrays()
    del arrays["zedd_output_0050.npy"]
    assert "missing zedd_output_0050.npy" in only(validate(write_zip(tmp_path, arrays)))


def test_submission_extra_file(tmp_path):
    arrays = valid_submission_arrays()
    arrays["preds/zedd_output_0001.npy"] = arrays["zedd_output_0001.npy"]
    assert "unexpected entry 'preds/zedd_output_0001.npy'" in only(validate(write_zip(tmp_path, arrays)))


def test_submission_wrong_shape(tmp_path):
    arrays = valid_submission_arrays()
    arrays["zedd_output_0007.npy"] = np.ones((480, 640), np.float32)
    assert "zedd_output_0007.npy: expected shape (1216, 1824), got (480, 640)" in only(validate(write_zip(tmp_path, arrays)))


def test_submission_non_finite(tmp_path):
    arrays = valid_submission_arrays()
    bad = arrays["zedd_output_0003.npy"].copy()
    bad[5, 5] = np.nan
    bad[6, 6] = np.inf
    arrays["zedd_output_0003.npy"] = bad
    assert "zedd_output_0003.npy: contains 2 non-finite values" in only(validate(write_zip(tmp_path, arrays)))


def test_submission_not_float(tmp_path):
    arrays = valid_submission_arrays()
    arrays["zedd_output_0010.npy"] = np.ones((1216, 1824), np.int32)
    assert "zedd_output_0010.npy: expected a float array, got int32" in only(validate(write_zip(tmp_path, arrays)))


def test_submission_not_a_zip(tmp_path):
    p = tmp_path / "submission.zip"
    p.write_bytes(b"not a zip")
    assert "not a zip file" in only(validate(p))


def test_submission_duplicate_entry(tmp_path):
    p = write_zip(tmp_path, valid_submission_arrays())
    buf = io.BytesIO()
    np.save(buf, np.full((1216, 1824), 2.5, np.float32))
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(p, "a") as zf:
        zf.writestr("zedd_output_0002.npy", buf.getvalue())
    assert only(validate(p)) == f"duplicate entry zedd_output_0002.npy in {p} (2 entries of that name)"
