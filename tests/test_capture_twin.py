"""capture_scene on the digital twin: a full scene, interruptions (device error mid-stack and
mid-sweep, SIGKILL mid-stack), resume to byte-identical files, corrupt-file handling, and the
relative servo converging on the twin's motor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from zedd_capture.capture.session import CaptureError, CaptureInterrupted, capture_scene
from zedd_capture.devices.protocols import DeviceError
from zedd_capture.layout import SceneLayout, parse_image_name, sha256_file
from zedd_capture.rig import load_rig

SCENE = "kitchen01"
W, H = 96, 64


def small_rig():
    rig = load_rig("sim")
    return rig.model_copy(update={"camera": rig.camera.model_copy(update={"width_px": W, "height_px": H}),
                                  "sim": rig.sim.model_copy(update={"frames_per_sweep": 3})})


def twin(rig, root):
    from zedd_capture.sim.devices import TwinRig

    return TwinRig(rig, SCENE, root)


def raw_files(root: Path) -> dict[str, str]:
    raw = SceneLayout(root, SCENE).raw_dir
    return {p.relative_to(raw).as_posix(): sha256_file(p) for p in sorted(raw.rglob("*"))
            if p.is_file() and p.name != "capture.json" and "corrupt" not in p.parts}


def assert_identical_to_reference(root: Path, ref_root: Path) -> None:
    """Same file names (achieved hexcodes) and bytes as the uninterrupted run: the twin seeds motor
    and image noise per shot identity (k-th move to a target, k-th shot of a state), not call order."""
    got, ref = raw_files(root), raw_files(ref_root)
    assert len(ref) == 56
    differing = sorted(set(got).symmetric_difference(ref) | {k for k in got if k in ref and got[k] != ref[k]})
    assert not differing, f"{len(differing)} files differ from the uninterrupted run, first {differing[:3]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted capture of the scene (the ground truth for the resume tests)."""
    root = tmp_path_factory.mktemp("ref")
    rig = small_rig()
    t = twin(rig, root)
    stages = []
    res = capture_scene(rig, SCENE, root, t.camera, t.focus_motor, t.lidar, yes=True,
                        progress=lambda s, d, n, detail: stages.append((s, d, n)))
    return rig, root, res, stages


def test_one_command_produces_the_scene(reference):
    rig, root, res, stages = reference
    lay = SceneLayout(root, SCENE)
    assert res.complete and not res.warnings
    images = sorted(lay.raw_focus_stack_dir.iterdir())
    assert len(images) == 54
    assert lay.lidar_static_path.is_file() and lay.lidar_sweep_path.is_file()
    m = json.loads(lay.manifest_path.read_text())
    assert m["status"] == "complete" and m["scene"] == SCENE and m["rig"]["name"] == rig.name
    assert len(m["files"]) == 56
    tol = rig.sim.motor_repeatability_counts
    for r in rig.capture.runs:
        rec = m["runs"][str(r.run)]
        assert abs(int(rec["achieved"], 16) - r.hexcode) <= tol and rec["within_tolerance"]
    for p in images:
        name = parse_image_name(p.name)
        entry = m["files"][f"focus_stack/{p.name}"]
        assert entry["sha256"] == sha256_file(p) and entry["bytes"] == p.stat().st_size
        assert name.hexcode == int(m["runs"][str(name.run)]["achieved"], 16)  # the ACHIEVED code names the file
        assert abs(int(entry["hexcode_achieved"], 16) - rig.run(name.run).hexcode) <= tol
        assert entry["f_number_reported"] == pytest.approx(name.f_number)
        assert entry["shutter_s"] == pytest.approx(rig.exposure.shutter_for(name.f_number), rel=0.25)
        img = cv2.imdecode(np.frombuffer(p.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
        assert img.shape == (H, W, 3)
    assert {(parse_image_name(p.name).run, parse_image_name(p.name).f_number) for p in images} == {
        (r.run, n) for r in rig.capture.runs for n in rig.capture.apertures}
    assert m["files"]["lidar_sweep.osf"]["frames"] == 3 and m["files"]["lidar_static.osf"]["frames"] == 1
    assert m["settings"]["iso"] == 100
    assert stages[-1] == ("lidar_sweep", 1, 1) and ("focus_stack", 54, 54) in stages


class FailingCamera:
    """Delegates to a camera; capture() raises a disconnect after ``k`` successful captures."""

    def __init__(self, inner, k):
        self.inner, self.k, self.n = inner, k, 0

    def capture(self):
        if self.n >= self.k:
            raise DeviceError("camera: USB I/O error: the camera was probably disconnected (injected)")
        self.n += 1
        return self.inner.capture()

    def __getattr__(self, name):
        return getattr(self.inner, name)


class FailingLidar:
    """record_sweep writes part of the file, then the sensor 'disconnects'."""

    def __init__(self, inner):
        self.inner = inner

    def record_static(self, path):
        return self.inner.record_static(path)

    def record_sweep(self, path, seconds, progress=None):
        Path(path).write_bytes(b"OSF half written")
        raise DeviceError("lidar 127.0.0.1: no packets for 5 s (injected)")


def test_device_error_mid_stack_then_resume_is_byte_identical(reference, tmp_path):
    rig, ref_root, _, _ = reference
    t = twin(rig, tmp_path)
    with pytest.raises(CaptureInterrupted, match=r"stopped at run 4 aperture F2\.8: .*disconnected.*Kept 20/54 images"):
        capture_scene(rig, SCENE, tmp_path, FailingCamera(t.camera, 20), t.focus_motor, t.lidar, yes=True)
    lay = SceneLayout(tmp_path, SCENE)
    kept = sorted(lay.raw_focus_stack_dir.iterdir())
    assert len(kept) == 20 and not lay.lidar_static_path.exists()
    m = json.loads(lay.manifest_path.read_text())
    assert m["status"] == "incomplete" and len(m["files"]) == 20 and "disconnected" in m["last_error"]["error"]
    before = {p.name: p.stat().st_mtime_ns for p in kept}

    t2 = twin(rig, tmp_path)  # a fresh process would build a fresh twin
    res = capture_scene(rig, SCENE, tmp_path, t2.camera, t2.focus_motor, t2.lidar, yes=True)
    assert res.complete and len(res.verified) == 20 and len(res.captured) == 36
    assert {p.name: p.stat().st_mtime_ns for p in kept} == before  # good files untouched
    assert_identical_to_reference(tmp_path, ref_root)


def test_device_error_mid_sweep_then_resume(reference, tmp_path):
    rig, ref_root, _, _ = reference
    t = twin(rig, tmp_path)
    with pytest.raises(CaptureInterrupted, match="stopped at lidar sweep.*Kept 54/54 images, the static frame"):
        capture_scene(rig, SCENE, tmp_path, t.camera, t.focus_motor, FailingLidar(t.lidar), yes=True)
    lay = SceneLayout(tmp_path, SCENE)
    assert not lay.lidar_sweep_path.exists() and not (lay.raw_dir / ".partial").exists()
    t2 = twin(rig, tmp_path)
    res = capture_scene(rig, SCENE, tmp_path, t2.camera, t2.focus_motor, t2.lidar, yes=True)
    assert res.complete and res.captured == ["lidar_sweep.osf"] and len(res.verified) == 55
    assert_identical_to_reference(tmp_path, ref_root)


_CHILD = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_capture_twin import small_rig, twin, SCENE
from zedd_capture.capture.session import capture_scene
rig = small_rig(); root = Path({root!r}); t = twin(rig, root)
def slow(stage, done, total, detail):
    if stage == "focus_stack" and done >= 1:
        time.sleep(0.15)
capture_scene(rig, SCENE, root, t.camera, t.focus_motor, t.lidar, yes=True, progress=slow)
"""


def test_sigkill_mid_stack_then_resume_is_byte_identical(reference, tmp_path):
    rig, ref_root, _, _ = reference
    lay = SceneLayout(tmp_path, SCENE)
    code = _CHILD.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        d = lay.raw_focus_stack_dir
        if d.is_dir() and len(list(d.glob("img_*.jpg"))) >= 13:
            break
        if proc.poll() is not None:
            pytest.fail(f"capture child exited early with {proc.returncode}")
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(lay.raw_focus_stack_dir.glob("img_*.jpg")))
    assert 13 <= n_before < 54
    t2 = twin(rig, tmp_path)
    res = capture_scene(rig, SCENE, tmp_path, t2.camera, t2.focus_motor, t2.lidar, yes=True)
    assert res.complete
    assert len(res.verified) == n_before and len(res.captured) == 56 - n_before
    assert not list(lay.raw_dir.rglob("*.part"))
    assert_identical_to_reference(tmp_path, ref_root)


def test_corrupt_and_missing_files_are_reported_and_recaptured(reference, tmp_path):
    rig, ref_root, _, _ = reference
    t = twin(rig, tmp_path)
    capture_scene(rig, SCENE, tmp_path, t.camera, t.focus_motor, t.lidar, yes=True)
    lay = SceneLayout(tmp_path, SCENE)
    images = sorted(lay.raw_focus_stack_dir.iterdir())
    bad, gone = images[7], images[30]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    gone.unlink()
    good_mtimes = {p.name: p.stat().st_mtime_ns for p in images if p not in (bad, gone)}
    warnings = []
    t2 = twin(rig, tmp_path)
    res = capture_scene(rig, SCENE, tmp_path, t2.camera, t2.focus_motor, t2.lidar, yes=True,
                        progress=lambda s, d, n, detail: s == "warning" and warnings.append(detail))
    assert res.complete
    assert res.corrupt == [f"focus_stack/{bad.name}"]
    assert sorted(res.captured) == sorted([f"focus_stack/{bad.name}", f"focus_stack/{gone.name}"])
    assert any("CORRUPT" in w and bad.name in w for w in warnings) and any(gone.name in w for w in warnings)
    moved = list((lay.raw_dir / "corrupt").iterdir())
    assert len(moved) == 1 and moved[0].read_bytes() == bytes(data)  # kept for inspection, not deleted
    assert {p.name: p.stat().st_mtime_ns for p in images if p not in (bad, gone)} == good_mtimes
    m = json.loads(lay.manifest_path.read_text())
    assert m["corrupt"][0]["file"] == f"focus_stack/{bad.name}"
    assert_identical_to_reference(tmp_path, ref_root)


def test_complete_scene_rerun_captures_nothing_and_other_plan_is_refused(reference, tmp_path):
    rig, ref_root, _, _ = reference
    t = twin(rig, tmp_path)
    capture_scene(rig, SCENE, tmp_path, t.camera, t.focus_motor, t.lidar, yes=True)

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"device used on a complete scene: {name}")

    res = capture_scene(rig, SCENE, tmp_path, Untouchable(), Untouchable(), Untouchable(), yes=True)
    assert res.complete and res.captured == [] and len(res.verified) == 56
    other = rig.model_copy(update={"capture": rig.capture.model_copy(update={"apertures": [2.0, 16.0]})})
    with pytest.raises(CaptureError, match="different rig or plan"):
        capture_scene(other, SCENE, tmp_path, Untouchable(), Untouchable(), Untouchable(), yes=True)


def test_prompts_between_steps_unless_yes(tmp_path):
    rig = small_rig()
    rig = rig.model_copy(update={"capture": rig.capture.model_copy(update={"apertures": [16.0], "runs": rig.capture.runs[:2],
                                                                           "canonical_run": 1})})
    t = twin(rig, tmp_path)
    prompts = []
    capture_scene(rig, SCENE, tmp_path, t.camera, t.focus_motor, t.lidar, prompt=prompts.append)
    assert len(prompts) == 2 and "static" in prompts[0] and "sweep" in prompts[1]


class TwinStepDrive:
    """Relative Near/Far steps on the twin's motor: step class m moves gain[m] counts (the twin adds
    its +-repeatability error to every move); commands are inverted (positive = lower hexcode)."""

    GAIN = {1: 6, 3: 40, 7: 350}

    def __init__(self, motor):
        self.motor = motor

    def step(self, n):
        delta = -int(np.sign(n)) * self.GAIN[abs(n)]
        self.motor.move_to(int(np.clip(self.motor.position() + delta, 0, 0xFFFF)))

    def position(self):
        return self.motor.position()


@pytest.mark.parametrize("start", [0x1113, 0x6D3E])
def test_relative_servo_converges_on_twin_motor_from_both_sides(start, tmp_path):
    from zedd_capture.devices.focus import RelativeServoFocus

    rig = small_rig()
    t = twin(rig, tmp_path)
    t.focus_motor.move_to(start)
    servo = RelativeServoFocus(TwinStepDrive(t.focus_motor), tolerance=4)
    target = rig.run(5).hexcode
    got = servo.move_to(target)
    assert servo.last_report.status == "ok"
    assert abs(got - target) <= 4 and got == t.focus_motor.position()
    assert servo.direction == -1


def test_default_devices_are_the_twin_and_match(reference, tmp_path):
    """What `zedd capture --scene kitchen01 --yes` calls: no devices given -> open_backends -> TwinRig."""
    rig, ref_root, _, _ = reference
    res = capture_scene(rig, SCENE, tmp_path, yes=True)
    assert res.complete
    assert_identical_to_reference(tmp_path, ref_root)
