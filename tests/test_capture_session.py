"""capture_scene's resume logic with small deterministic devices (content is a pure function of the
shot's identity, as a seeded-per-shot twin would be): interruptions anywhere must resume to files
byte-identical to an uninterrupted run; orphans/partials after SIGKILL are handled."""

from __future__ import annotations

import hashlib
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

from zedd_capture.capture.session import CaptureInterrupted, capture_scene
from zedd_capture.devices.protocols import DeviceError, RecordingSummary
from zedd_capture.layout import SceneLayout, sha256_file
from zedd_capture.rig import load_rig
from zedd_capture.version import tool_version

SCENE = "office03"


class Motor:
    """Achieved = target + a deterministic per-target error in [-2, 2]."""

    def __init__(self):
        self.pos = 0x2000

    def move_to(self, hexcode):
        self.pos = hexcode + int(hashlib.sha256(str(hexcode).encode()).digest()[0]) % 5 - 2
        return self.pos

    def position(self):
        return self.pos


class Camera:
    def __init__(self, motor, fail_after=None, delay=0.0):
        self.motor, self.fail_after, self.delay, self.n = motor, fail_after, delay, 0
        self.f = self.s = None

    def open(self):
        pass

    def close(self):
        pass

    def set_aperture(self, n):
        self.f = n
        return n

    def set_shutter(self, s):
        self.s = s
        return s

    def set_iso(self, iso):
        return iso

    def capture(self):
        if self.fail_after is not None and self.n >= self.fail_after:
            raise DeviceError("camera: USB I/O error: the camera was probably disconnected (injected)")
        self.n += 1
        time.sleep(self.delay)
        seed = int(hashlib.sha256(f"{self.motor.pos}/{self.f}/{self.s}".encode()).hexdigest()[:8], 16)
        img = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
        return cv2.imencode(".jpg", img)[1].tobytes()


class Lidar:
    def __init__(self, fail_sweep=False):
        self.fail_sweep = fail_sweep

    def record_static(self, path):
        Path(path).write_bytes(b"STATIC" * 1000)
        return RecordingSummary(Path(path), 1, 1)

    def record_sweep(self, path, seconds, progress=None):
        with open(path, "wb") as f:
            for i in range(5):
                f.write(bytes([i]) * 5000)
                if progress:
                    progress(i + 1, 5)
                if self.fail_sweep and i == 2:
                    raise DeviceError("lidar: no packets for 5 s (injected)")
        return RecordingSummary(Path(path), 5, 5, packets_lost=0)


def rig():
    return load_rig("sim").model_copy(update={"backend": "hardware"})


def run(root, fail_after=None, fail_sweep=False, **kw):
    m = Motor()
    return capture_scene(rig(), SCENE, root, Camera(m, fail_after), m, Lidar(fail_sweep), yes=True, **kw)


def files(root):
    raw = SceneLayout(root, SCENE).raw_dir
    return {p.relative_to(raw).as_posix(): sha256_file(p) for p in sorted(raw.rglob("*"))
            if p.is_file() and p.name != "capture.json" and not {"corrupt", "unexpected"} & set(p.parts)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    res = run(root)
    assert res.complete
    return files(root)


@pytest.mark.parametrize("k", [0, 1, 6, 29, 53])
def test_interrupt_at_any_image_resumes_byte_identical(reference, tmp_path, k):
    with pytest.raises(CaptureInterrupted, match=f"Kept {k}/54 images"):
        run(tmp_path, fail_after=k)
    assert len(files(tmp_path)) == k
    res = run(tmp_path)
    assert res.complete and len(res.verified) == k and len(res.captured) == 56 - k
    assert files(tmp_path) == reference
    m = json.loads(SceneLayout(tmp_path, SCENE).manifest_path.read_text())
    assert [s["outcome"] for s in m["sessions"]] == ["interrupted", "complete"]
    assert {s["tool_version"] for s in m["sessions"]} == {tool_version()}  # each session says which code ran it
    assert "last_error" not in m


def test_interrupt_mid_sweep_discards_the_partial_recording(reference, tmp_path):
    with pytest.raises(CaptureInterrupted, match="lidar sweep.*no packets"):
        run(tmp_path, fail_sweep=True)
    lay = SceneLayout(tmp_path, SCENE)
    assert not lay.lidar_sweep_path.exists()
    assert json.loads(lay.manifest_path.read_text())["status"] == "incomplete"
    res = run(tmp_path)
    assert res.captured == ["lidar_sweep.osf"]
    assert files(tmp_path) == reference


def test_file_written_but_not_recorded_is_adopted_and_partials_removed(reference, tmp_path):
    """SIGKILL between the image's rename and the manifest write, and inside an atomic write."""
    with pytest.raises(CaptureInterrupted):
        run(tmp_path, fail_after=8)
    lay = SceneLayout(tmp_path, SCENE)
    m = json.loads(lay.manifest_path.read_text())
    last = sorted(k for k in m["files"])[-1]
    del m["files"][last]  # as if killed right after the rename
    lay.manifest_path.write_text(json.dumps(m))
    (lay.raw_focus_stack_dir / ".img_run_2_motor_4EA8_aperture_F4.0.jpg.abc.part").write_bytes(b"half")
    (lay.raw_dir / ".partial").mkdir()
    (lay.raw_dir / ".partial" / "lidar_sweep.osf").write_bytes(b"half")
    res = run(tmp_path)
    assert res.complete and last in res.verified and not res.warnings
    assert res.manifest["files"][last]["adopted"] is True
    assert not list(lay.raw_dir.rglob("*.part")) and not (lay.raw_dir / ".partial").exists()
    assert files(tmp_path) == reference


def test_unexpected_file_is_moved_aside_not_deleted(reference, tmp_path):
    lay = SceneLayout(tmp_path, SCENE)
    lay.raw_focus_stack_dir.mkdir(parents=True)
    stray = lay.raw_focus_stack_dir / "img_run_1_motor_0001_aperture_F1.4.jpg"
    stray.write_bytes(b"from another rig")
    res = run(tmp_path)
    assert res.complete and any("not part of this scene's plan" in w for w in res.warnings)
    parked = list((lay.raw_dir / "unexpected").glob(f"{stray.name}.*"))
    assert len(parked) == 1 and parked[0].read_bytes() == b"from another rig"
    assert files(tmp_path) == reference
    # a second stray of the same name is parked beside the first, not over it
    stray.write_bytes(b"another shot")
    res = run(tmp_path)
    assert res.complete
    assert sorted(p.read_bytes() for p in (lay.raw_dir / "unexpected").glob(f"{stray.name}.*")) == [
        b"another shot", b"from another rig"]
    assert files(tmp_path) == reference


_CHILD = """
import sys
sys.path.insert(0, {tests!r})
import test_capture_session as T
from zedd_capture.capture.session import capture_scene
m = T.Motor()
capture_scene(T.rig(), T.SCENE, {root!r}, T.Camera(m, delay=0.05), m, T.Lidar(), yes=True)
"""


def test_sigkill_mid_stack_resumes_byte_identical(reference, tmp_path):
    lay = SceneLayout(tmp_path, SCENE)
    proc = subprocess.Popen([sys.executable, "-c", _CHILD.format(tests=str(Path(__file__).parent), root=str(tmp_path))])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if lay.raw_focus_stack_dir.is_dir() and len(list(lay.raw_focus_stack_dir.glob("img_*"))) >= 20:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "child finished or died before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n = len(list(lay.raw_focus_stack_dir.glob("img_*")))
    assert 20 <= n < 54
    res = run(tmp_path)
    assert res.complete and len(res.verified) == n
    assert files(tmp_path) == reference
