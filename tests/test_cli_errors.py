"""The CLI's answer to user mistakes: one red line naming the option, file or scene, exit code 1, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from zedd_capture.cli import app


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def no_traceback(result) -> bool:
    return result.exception is None or isinstance(result.exception, SystemExit)


def test_error_text_with_brackets_is_printed_as_text(tmp_path):
    # rich would read "[/]" as a closing tag (MarkupError) and drop "[read]"-like words
    result = run("build-depth", "--scene", "kitchen01", "--root", str(tmp_path), "--set", "spill_ratio=[/]")
    assert result.exit_code == 1 and no_traceback(result)
    assert "spill_ratio=[/]" in result.output and "not a list" in result.output


@pytest.mark.parametrize("command", ["report", "build-depth", "calibrate-breathing"])
def test_a_misspelt_scene_is_named_with_the_close_ones_and_nothing_written(tmp_path, command):
    (tmp_path / "scenes" / "kitchen01" / "raw").mkdir(parents=True)
    result = run(command, "--scene", "kitchn01", "--root", str(tmp_path))
    assert result.exit_code == 1 and no_traceback(result)
    text = " ".join(result.output.split())
    assert "no such scene ('kitchn01' does not exist; did you mean kitchen01?)" in text
    assert sorted(p.name for p in (tmp_path / "scenes").iterdir()) == ["kitchen01"]  # no folder for the typo
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]


def test_report_of_a_scene_under_a_root_without_scenes_writes_nothing(tmp_path):
    result = run("report", "--scene", "kitchn01", "--root", str(tmp_path))
    assert result.exit_code == 1 and no_traceback(result)
    assert "kitchn01" in result.output and "no such scene" in result.output and "no scenes under" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("scene, message", [("kitchn01", "unknown template"), ("", "scene")])
def test_capture_of_an_unknown_twin_scene_is_one_error(tmp_path, scene, message):
    result = run("capture", "--scene", scene, "--root", str(tmp_path), "--yes")
    assert result.exit_code == 1 and no_traceback(result), result.output
    assert message in result.output
    assert not (tmp_path / "scenes").exists() or list((tmp_path / "scenes").iterdir()) == []


def test_calibrate_focus_checks_its_options_before_any_work(tmp_path):
    result = run("calibrate-focus", "--root", str(tmp_path), "--method", "nope")
    assert result.exit_code == 1 and "--method: 'nope' is not one of auto, breathing, paper" in result.output
    result = run("calibrate-focus", "--root", str(tmp_path), "--images-dir", str(tmp_path / "none"))
    assert result.exit_code == 1 and "the simulated rig calibrates on the twin" in result.output
    assert list(tmp_path.iterdir()) == []


def test_eval_model_refuses_a_device_the_model_cannot_use(tmp_path):
    result = run("eval-model", "--data", str(tmp_path), "--model", "dfd-classic", "--device", "cuda",
                 "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "dfd-classic runs on the CPU" in result.output
    assert not (tmp_path / "out").exists()


def test_eval_model_threads_must_be_positive(tmp_path):
    result = run("eval-model", "--data", str(tmp_path), "--threads", "0", "--out", str(tmp_path / "out"))
    assert result.exit_code == 1 and "--threads 0: must be at least 1" in result.output
    assert not (tmp_path / "out").exists()
