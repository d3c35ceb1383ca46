"""Bad input files end in one error that names the file (never a traceback from a library).

Covers the readers behind `zedd report`, `zedd eval-model`, FOSSA checkpoint loading and
`zedd calibrate-breathing --scene`, each with a small corrupt file in tmp_path.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from zedd_samples import SIM_RIG, make_zedd_root

from zedd_capture.calibration.breathing import BreathingError, write_breathing
from zedd_capture.calibration.charuco import CalibrationError
from zedd_capture.calibration.extrinsic import write_extrinsic
from zedd_capture.calibration.focus_lut import FocusLUTError, read_focus_lut
from zedd_capture.calibration.intrinsics import Intrinsics, read_intrinsics, write_intrinsics
from zedd_capture.geometry import read_tum
from zedd_capture.layout import CalibrationLayout, LayoutError, SceneLayout, atomic_save_npy

SCENE = "kitchen01"
NPY_GARBAGE = b"\x93NUMPY garbage that is not an array header"


# --- zedd report ---------------------------------------------------------------------------
def _report_root(root: Path) -> tuple[SceneLayout, CalibrationLayout]:
    """A scene with an exported depth map, truth and calibration products (all valid, tiny)."""
    lay, cal = SceneLayout(root, SCENE), CalibrationLayout(root, SIM_RIG.name)
    make_zedd_root(lay.zedd_root, SCENE)
    truth = lay.truth_dir
    truth.mkdir(parents=True)
    atomic_save_npy(truth / "depth.npy", np.load(lay.zedd_sample().depth_path))
    cal.dir.mkdir(parents=True)
    lut = "# hexcode\tfocus_distance_m\n1000\t0.800000\n2000\t1.500000\n3000\t4.000000\n"
    (truth / "focus_lut.tsv").write_text(lut)
    cal.focus_lut_path.write_text(lut.replace("1.500000", "1.510000"))
    intr = Intrinsics(np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]), np.zeros(5), 640, 480)
    write_intrinsics(truth / "intrinsics.yaml", intr)
    write_intrinsics(cal.intrinsics_path, intr)
    write_extrinsic(truth / "extrinsic.txt", np.eye(4))
    write_extrinsic(cal.extrinsic_path, np.eye(4))
    warps = {1: np.array([[1.0, 0, 0], [0, 1.0, 0]])}
    write_breathing(truth / "breathing.json", warps)
    write_breathing(cal.breathing_path, warps)
    lay.work_dir.mkdir(parents=True)
    lay.build_log_path.write_text('{"points": 1}\n')
    return lay, cal


def test_report_of_valid_tiny_scene(tmp_path: Path) -> None:
    from zedd_capture.report.scene_report import collect_numbers

    _report_root(tmp_path)
    acc = collect_numbers(SIM_RIG, tmp_path, SCENE)["accuracy"]
    assert acc["depth"]["abs_rel"] == 0.0
    assert acc["focus_lut"]["runs"] == 3 and acc["focus_lut"]["max_rel_error"] == pytest.approx(0.01 / 1.5)
    assert acc["intrinsics"]["fx_rel_error"] == 0.0 and acc["extrinsic"]["translation_error_mm"] == 0.0
    assert acc["breathing"]["max_px"] == 0.0


REPORT_CASES = {
    # name: (path of the file under the root, bytes written there, expected exception, words in the message)
    "intrinsics_yaml": (lambda lay, cal: cal.intrinsics_path, b"K: [[1, 0, 0]\nwidth: : 640\n", CalibrationError,
                        "not valid YAML"),
    "intrinsics_fields": (lambda lay, cal: cal.intrinsics_path, b"K: [[1, 0], [0, 1]]\nwidth: 640\nheight: 480\n",
                          CalibrationError, "K: expected"),
    "intrinsics_binary": (lambda lay, cal: lay.truth_dir / "intrinsics.yaml", b"\xff\xd8\xff\xe0binary", CalibrationError,
                          "not UTF-8"),
    "focus_lut_columns": (lambda lay, cal: cal.focus_lut_path, b"1000\n", FocusLUTError, ":1: expected HEX<TAB>metres"),
    "focus_lut_nan": (lambda lay, cal: lay.truth_dir / "focus_lut.tsv", b"1000\tnan\n", FocusLUTError,
                      "must be positive metres"),
    "build_log": (lambda lay, cal: lay.build_log_path, b'{"points": ', LayoutError, "corrupt build log"),
    "exported_depth": (lambda lay, cal: lay.zedd_sample().depth_path, NPY_GARBAGE, LayoutError, "not a readable .npy"),
    "exported_depth_text": (lambda lay, cal: lay.zedd_sample().depth_path, b"1 2 3\n", LayoutError, "no NUMPY header"),
    "true_depth": (lambda lay, cal: lay.truth_dir / "depth.npy", NPY_GARBAGE, LayoutError, "not a readable .npy"),
    "true_depth_pickle": (lambda lay, cal: lay.truth_dir / "depth.npy", pickle.dumps({"a": 1}), LayoutError,
                          "not a .npy depth map (no NUMPY header)"),
    "extrinsic": (lambda lay, cal: cal.extrinsic_path, b"1 0 0\n0 1\n", CalibrationError, "not a 4x4 matrix"),
    "extrinsic_nan": (lambda lay, cal: lay.truth_dir / "extrinsic.txt", b"1 0 0 0\n0 1 0 0\n0 0 nan 0\n0 0 0 1\n",
                      CalibrationError, "found NaN or inf"),
    "breathing": (lambda lay, cal: cal.breathing_path, b'{"run_1": [[1, 0, 0]]}', BreathingError, "run_1"),
    "calibration_report": (lambda lay, cal: cal.report_dir / "focus.json", b"[1, 2", LayoutError,
                           "corrupt calibration report"),
}


@pytest.mark.parametrize("case", sorted(REPORT_CASES))
def test_report_names_the_corrupt_file(tmp_path: Path, case: str) -> None:
    from zedd_capture.report.scene_report import build_report

    where, content, error, words = REPORT_CASES[case]
    lay, cal = _report_root(tmp_path)
    path = where(lay, cal)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    with pytest.raises(error) as info:
        build_report(SIM_RIG, tmp_path, SCENE)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert words in message
    assert isinstance(info.value, ValueError)  # what the CLI's _run_stage turns into one red line


def test_report_depth_shapes_that_differ_name_both_files(tmp_path: Path) -> None:
    from zedd_capture.report.scene_report import build_report

    lay, _ = _report_root(tmp_path)
    atomic_save_npy(lay.truth_dir / "depth.npy", np.ones((5, 7), np.float32))
    with pytest.raises(LayoutError, match=r"truth/depth\.npy: shape \(5, 7\) differs .*gt/depth\.npy"):
        build_report(SIM_RIG, tmp_path, SCENE)


def test_report_corrupt_focus_stack_image_is_named(tmp_path: Path) -> None:
    from zedd_capture.report.scene_report import build_report

    lay, _ = _report_root(tmp_path)
    sample = lay.zedd_sample()
    bad = sample.image_path(3, SIM_RIG.capture.runs[2].hexcode, 2.8)
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(LayoutError, match=f"{bad.name}: cannot read image"):
        build_report(SIM_RIG, tmp_path, SCENE)


def test_report_eval_dir_is_read_or_named(tmp_path: Path) -> None:
    """--eval-dir: eval-model's --out folders or the folder above them; a wrong one is an error, not a report
    without the model scores."""
    import json

    from zedd_capture.report.scene_report import collect_numbers

    _report_root(tmp_path)
    with pytest.raises(LayoutError, match="elsewhere: no such folder"):
        collect_numbers(SIM_RIG, tmp_path, SCENE, tmp_path / "elsewhere")
    runs = tmp_path / "runs"
    (runs / "dfd-classic" / SCENE).mkdir(parents=True)
    (runs / "dfd-classic" / SCENE / "metrics.json").write_text(json.dumps({"scene": SCENE, "abs_rel": 0.5}))
    with pytest.raises(LayoutError, match="runs: no scored eval-model run"):
        collect_numbers(SIM_RIG, tmp_path, SCENE, runs)
    (runs / "dfd-classic" / "metrics.json").write_text(json.dumps({"model": "dfd-classic", "mean": {"abs_rel": 0.5}}))
    for eval_dir in (runs, runs / "dfd-classic"):  # the folder above the --out folders, or one of them
        assert collect_numbers(SIM_RIG, tmp_path, SCENE, eval_dir)["model_scores"] == {"dfd-classic": {"abs_rel": 0.5}}
    assert "model_scores" not in collect_numbers(SIM_RIG, tmp_path, SCENE)  # the default eval/ may be absent


def test_report_of_a_missing_scene(tmp_path: Path) -> None:
    from zedd_capture.report.scene_report import build_report

    with pytest.raises(LayoutError, match="kitchn01.*does not exist"):
        build_report(SIM_RIG, tmp_path, "kitchn01")
    assert not (tmp_path / "scenes" / "kitchn01").exists()


def test_report_cli_prints_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from zedd_capture.cli import app

    _, cal = _report_root(tmp_path)
    cal.intrinsics_path.write_text("K: [[1, 0, 0]\n")
    res = CliRunner().invoke(app, ["report", "--scene", SCENE, "--root", str(tmp_path)])
    assert res.exit_code == 1
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit)
    out = res.output
    assert "Traceback" not in out and "intrinsics.yaml" in out


def test_shared_readers_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "focus_lut.tsv"
    p.write_text("# header\n1000\t0.8\nhexcode\tfocus_distance_m\n2000\n")
    with pytest.raises(FocusLUTError, match=r"focus_lut\.tsv:4: expected HEX<TAB>metres"):
        read_focus_lut(p)
    p = tmp_path / "intrinsics.yaml"
    p.write_text("K: [[500, 0, 320], [0, 500, 240], [0, 0, 1]]\nwidth: abc\nheight: 480\n")
    with pytest.raises(CalibrationError, match=r"intrinsics\.yaml: width"):
        read_intrinsics(p)
    p.write_text("K: [[500, 0, 320], [0, 500, 240], [0, 0, 1]]\ndist: [a, b]\nwidth: 640\nheight: 480\n")
    with pytest.raises(CalibrationError, match=r"intrinsics\.yaml: dist"):
        read_intrinsics(p)
    p = tmp_path / "trajectory.tum"
    p.write_text("0 0 0 0 0 0 0 0\n")
    with pytest.raises(ValueError, match=r"trajectory\.tum: pose 1 has a zero quaternion"):
        read_tum(p)
    p.write_text("0 0 0 nan 0 0 0 1\n")
    with pytest.raises(ValueError, match=r"trajectory\.tum: pose 1 has a non-finite"):
        read_tum(p)


# --- zedd eval-model -------------------------------------------------------------------------
def _evaluate(root: Path, out: Path):
    from zedd_capture.evaluation.evaluate import evaluate

    return evaluate(root, "dfd-classic", out_dir=out, progress=False)


@pytest.mark.parametrize("content", [b"not a jpeg at all", "truncated"])
def test_eval_model_corrupt_stack_image_is_named(tmp_path: Path, content) -> None:
    sample = make_zedd_root(tmp_path / "zedd")
    bad = sample.image_path(5, SIM_RIG.capture.runs[4].hexcode, 2.8)
    if content == "truncated":
        content = bad.read_bytes()[:200]
    bad.write_bytes(content)
    with pytest.raises(LayoutError) as info:
        _evaluate(tmp_path / "zedd", tmp_path / "out")
    assert str(info.value).startswith(str(bad))
    assert "image" in str(info.value)


@pytest.mark.parametrize("content", [NPY_GARBAGE, b"", "object", "3d", "npz"])
def test_eval_model_corrupt_depth_is_named(tmp_path: Path, content) -> None:
    sample = make_zedd_root(tmp_path / "zedd")
    if content == "object":
        np.save(sample.depth_path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif content == "3d":
        np.save(sample.depth_path, np.ones((2, 3, 4), np.float32))
    elif content == "npz":
        buf = io.BytesIO()
        np.savez(buf, depth=np.ones((48, 64), np.float32))
        sample.depth_path.write_bytes(buf.getvalue())
    else:
        sample.depth_path.write_bytes(content)
    with pytest.raises(LayoutError) as info:
        _evaluate(tmp_path / "zedd", tmp_path / "out")
    assert str(info.value).startswith(str(sample.depth_path)), str(info.value)


def test_eval_model_binary_metadata_is_named(tmp_path: Path) -> None:
    sample = make_zedd_root(tmp_path / "zedd")
    sample.metadata_path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(LayoutError, match=r"metadata\.txt: cannot read as metadata\.txt: not UTF-8"):
        _evaluate(tmp_path / "zedd", tmp_path / "out")


# --- FOSSA checkpoints -----------------------------------------------------------------------
class Foreign:
    """A pickled object that is not a tensor (what a checkpoint of another tool may hold)."""


def _checkpoints(folder: Path) -> dict[str, Path]:
    import torch

    paths = {n: folder / f"{n}.pth" for n in ("junk", "empty", "truncated", "foreign", "numpy", "not_tensors")}
    paths["junk"].write_bytes(b"not a checkpoint")
    paths["empty"].write_bytes(b"")
    buf = io.BytesIO()
    torch.save({"model": {"a": torch.zeros(64)}}, buf)
    paths["truncated"].write_bytes(buf.getvalue()[:150])
    torch.save({"model": Foreign()}, paths["foreign"])
    torch.save({"model": {"a": np.zeros(3)}}, paths["numpy"])
    torch.save({"model": {"a": torch.zeros(1), "step": 3}}, paths["not_tensors"])
    return paths


def test_corrupt_or_foreign_checkpoint_is_one_error(tmp_path: Path) -> None:
    from zedd_capture.fossa import read_state_dict

    for name, path in _checkpoints(tmp_path).items():
        with pytest.raises(ValueError) as info:
            read_state_dict(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not a FOSSA checkpoint"), (name, message)
        assert "weights_only" not in message and "\n" not in message, (name, message)
        assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__), name


def test_checkpoint_of_another_network_is_not_a_fossa_checkpoint(tmp_path: Path) -> None:
    import torch

    from zedd_capture.fossa import load_fossa

    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3), "fc.bias": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match=r"resnet\.pth: not a FOSSA checkpoint: none of its 2 tensors"):
        load_fossa(path, "vits")


def test_eval_model_with_a_corrupt_checkpoint(tmp_path: Path) -> None:
    from zedd_capture.evaluation.evaluate import evaluate

    make_zedd_root(tmp_path / "zedd")
    path = tmp_path / "model.pth"
    path.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(ValueError, match=r"model\.pth: not a FOSSA checkpoint, cannot be read"):
        evaluate(tmp_path / "zedd", "fossa-vits", path, out_dir=tmp_path / "out", progress=False, device="cpu")


# --- zedd calibrate-breathing --scene ----------------------------------------------------------
def test_calibrate_breathing_misspelt_scene(tmp_path: Path) -> None:
    from zedd_capture.calibration.session import calibrate_breathing

    SceneLayout(tmp_path, "kitchen01").raw_focus_stack_dir.mkdir(parents=True)
    with pytest.raises(LayoutError) as info:  # layout.existing_scene, as build-depth and report say it
        calibrate_breathing(SIM_RIG, tmp_path, scene="kitchn01")
    message = str(info.value)
    assert "kitchn01" in message and "does not exist" in message and "did you mean kitchen01" in message
    assert "F16.0" not in message
    with pytest.raises(LayoutError, match="kitchn01.*does not exist.*no scenes under"):
        calibrate_breathing(SIM_RIG, tmp_path / "elsewhere", scene="kitchn01")


def test_calibrate_breathing_scene_without_raw_stack_or_with_a_corrupt_image(tmp_path: Path) -> None:
    from zedd_capture.calibration.session import calibrate_breathing

    lay = SceneLayout(tmp_path, "office03")
    lay.scene_dir.mkdir(parents=True)
    with pytest.raises(BreathingError, match=r"office03/raw/focus_stack: scene 'office03' has no raw focus stack"):
        calibrate_breathing(SIM_RIG, tmp_path, scene="office03")
    lay.raw_focus_stack_dir.mkdir(parents=True)
    with pytest.raises(BreathingError, match="no F16.0 images"):
        calibrate_breathing(SIM_RIG, tmp_path, scene="office03")
    bad = lay.raw_image_path(1, SIM_RIG.capture.runs[0].hexcode, 16.0)
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(BreathingError, match=f"{bad.name}: cannot read image"):
        calibrate_breathing(SIM_RIG, tmp_path, scene="office03")
