"""One writing zedd command per scene / calibration folder (lock.folder_lock), held by a real second process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from zedd_capture.cli import app
from zedd_capture.layout import LayoutError
from zedd_capture.lock import LOCK_NAME, folder_lock
from zedd_capture.rig import load_rig

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def holder():
    """Start a process that holds ``folder``'s lock as ``command`` until killed; yields (start, processes)."""
    procs: list[subprocess.Popen] = []

    def start(folder: Path, command: str) -> subprocess.Popen:
        code = textwrap.dedent(f"""
            import sys, time
            from zedd_capture.lock import folder_lock
            with folder_lock({str(folder)!r}, {command!r}):
                print("held", flush=True)
                time.sleep(120)
        """)
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


def test_a_second_command_is_refused_with_the_holder_named(tmp_path, holder):
    folder = tmp_path / "scenes" / "kitchen01"
    p = holder(folder, "build-depth --scene kitchen01")
    with pytest.raises(LayoutError) as e:
        with folder_lock(folder, "capture --scene kitchen01"):
            pytest.fail("the lock was taken twice")
    msg = str(e.value)
    assert msg.startswith(f"{folder}: in use by another zedd command (build-depth --scene kitchen01, pid {p.pid} on ")
    assert "run this one when it has finished" in msg


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, holder):
    folder = tmp_path / "calibration" / "sim"
    p = holder(folder, "calibration of the focus LUT")
    p.send_signal(signal.SIGKILL)
    p.wait()
    with folder_lock(folder, "calibration of the canonical intrinsics") as path:
        assert path == folder / LOCK_NAME
        assert f'"pid": {os.getpid()}' in path.read_text()


def test_the_lock_is_released_after_the_block_also_on_errors(tmp_path):
    with pytest.raises(KeyError):
        with folder_lock(tmp_path, "first"):
            raise KeyError("a failing stage")
    with folder_lock(tmp_path, "second"):
        pass


def test_cli_calibration_while_another_holds_the_folder_writes_nothing(tmp_path, holder):
    cal = tmp_path / "calibration" / load_rig("sim").name
    holder(cal, "calibration of the focus LUT")
    result = CliRunner().invoke(app, ["calibrate-intrinsics", "--root", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "in use by another zedd command (calibration of the focus LUT" in " ".join(result.output.split())
    assert sorted(p.name for p in cal.iterdir()) == [LOCK_NAME]


@pytest.mark.parametrize("command", [["capture", "--yes"], ["report"], ["calibrate-breathing"]])
def test_cli_scene_commands_while_another_holds_the_scene_write_nothing(tmp_path, holder, command):
    """capture, report and calibrate-breathing --scene (which writes the scene's work/breathing.json) hold the
    scene's lock: refused, with the holder named, and nothing written beside the lock file."""
    scene = tmp_path / "scenes" / "kitchen01"
    holder(scene, "build-depth --scene kitchen01")
    result = CliRunner().invoke(app, [command[0], "--scene", "kitchen01", "--root", str(tmp_path), *command[1:]])
    assert result.exit_code == 1, result.output
    assert "in use by another zedd command (build-depth --scene kitchen01" in " ".join(result.output.split())
    assert sorted(p.name for p in scene.iterdir()) == [LOCK_NAME]


def test_a_file_system_that_cannot_lock_warns_and_runs(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):  # what flock answers on a mount without lock support (no such mount here)
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = False
    with pytest.warns(UserWarning, match="the file system cannot lock \\(No locks available\\)"):
        with folder_lock(tmp_path, "build-depth --scene kitchen01"):
            ran = True
    assert ran


def test_cli_on_a_file_system_that_cannot_lock_warns_and_calibrates(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    result = CliRunner().invoke(app, ["calibrate-intrinsics", "--root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "warning: " in result.output and "the file system cannot lock" in " ".join(result.output.split())
    assert (tmp_path / "calibration" / load_rig("sim").name / "intrinsics.yaml").is_file()


def test_folders_the_lock_created_go_again_when_the_command_wrote_nothing(tmp_path):
    new = tmp_path / "scenes" / "typo01"
    with folder_lock(new, "capture --scene typo01"):
        assert (new / LOCK_NAME).is_file()
    assert not (tmp_path / "scenes").exists()  # both levels it created, none it found
    with folder_lock(new, "capture --scene typo01"):
        (new / "capture.json").write_text("{}")
    assert sorted(p.name for p in new.iterdir()) == [LOCK_NAME, "capture.json"]  # what a command wrote stays
    existing = tmp_path / "calibration"
    existing.mkdir()
    with folder_lock(existing, "calibrate-focus"):
        pass
    assert existing.is_dir()  # a folder that was there stays (with its lock file)


def test_a_lock_file_removed_between_open_and_lock_is_opened_again(tmp_path, monkeypatch):
    import fcntl

    from zedd_capture import lock

    folder = tmp_path / "scenes" / "kitchen01"
    folder.mkdir(parents=True)
    path = folder / LOCK_NAME
    real_flock, calls = fcntl.flock, []

    def flock_after_the_last_holder_left(fd, op):  # the last holder removes the file (and its folder, which it
        calls.append(fd)                           # had created) just before our lock
        if len(calls) == 1:
            path.unlink()
            folder.rmdir()
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_the_last_holder_left)
    fd = lock._locked_fd(folder, path)
    try:
        assert len(calls) == 2 and os.fstat(fd).st_ino == os.stat(path).st_ino  # the lock is on the file in place
    finally:
        os.close(fd)


def test_cli_eval_model_while_another_holds_its_out_folder_writes_nothing(tmp_path, holder):
    out = tmp_path / "eval"
    holder(out, "eval-model --model dfd-classic --data zedd")
    result = CliRunner().invoke(app, ["eval-model", "--data", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "in use by another zedd command (eval-model --model dfd-classic" in " ".join(result.output.split())
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_cli_eval_model_that_fails_leaves_no_out_folder(tmp_path):
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval-model", "--data", str(tmp_path / "nothing"), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "nothing" in result.output
    assert not out.exists()


def test_a_folder_that_is_a_file_is_one_clear_error(tmp_path):
    (tmp_path / "eval").write_text("results of something else")
    for out in (tmp_path / "eval", tmp_path / "eval" / "fossa"):
        result = CliRunner().invoke(app, ["eval-model", "--data", str(tmp_path), "--out", str(out)])
        assert result.exit_code == 1, result.output
        squeezed = "".join(result.output.split())  # rich may fold a long path anywhere
        assert "".join(f"{out}: not a folder (it, or a folder above it, is a file)".split()) in squeezed
    assert (tmp_path / "eval").read_text() == "results of something else"
