"""The real gphoto2 code path against python-gphoto2's bundled virtual camera.

The virtual camera returns its folder's first .jpg, re-read at download time with the byte size
fixed at init(), and allows 26 captures per init(). Before each capture the test writes a new JPEG
of the same size whose comment segment names the shot, so every downloaded file proves which
shot it came from. A full 54-image stack runs through capture_scene -> GPhoto2Camera ->
libgphoto2 -> download, with a fake motor and lidar.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest




def _setup_vcam(tmp: Path, monkeypatch) -> Path:
    """The virtual camera's folder; VCAMERADIR and IOLIBS are set for this test only (``monkeypatch``)."""
    d = tmp / "vcam"
    d.mkdir()
    monkeypatch.setenv("VCAMERADIR", str(d))
    import gphoto2  # noqa: F401  (import after VCAMERADIR, as the virtual camera requires)

    iolibs = os.environ.get("IOLIBS", "")
    if iolibs.endswith("iolibs"):  # gphoto2 was imported earlier in this process: switch to the virtual port
        monkeypatch.setenv("IOLIBS", iolibs[: -len("iolibs")] + "vusb")
    return d


SIZE = 4096
_BASE = cv2.imencode(".jpg", np.full((48, 64, 3), 100, np.uint8))[1].tobytes()


def tagged_jpeg(tag: str) -> bytes:
    """A valid JPEG with a COM segment carrying ``tag``, zero-padded to SIZE bytes."""
    com = tag.encode().ljust(64, b" ")
    data = _BASE[:2] + b"\xff\xfe" + struct.pack(">H", len(com) + 2) + com + _BASE[2:]
    assert len(data) <= SIZE
    return data + b"\0" * (SIZE - len(data))


def read_tag(data: bytes) -> str:
    assert data[:4] == b"\xff\xd8\xff\xfe"
    (n,) = struct.unpack(">H", data[4:6])
    return data[6:6 + n - 2].decode().strip()


class FakeMotor:
    def __init__(self):
        self.pos = 0x8000

    def move_to(self, hexcode):
        self.pos = hexcode + 1  # a constant 1-count error: names must carry the achieved code
        return self.pos

    def position(self):
        return self.pos


class FakeLidar:
    def record_static(self, path):
        from zedd_capture.devices.protocols import RecordingSummary

        Path(path).write_bytes(b"static")
        return RecordingSummary(Path(path), 1, 1)

    def record_sweep(self, path, seconds, progress=None):
        from zedd_capture.devices.protocols import RecordingSummary

        Path(path).write_bytes(b"sweep")
        return RecordingSummary(Path(path), 3, 3)


def make_feeding_camera(vdir: Path, motor: FakeMotor):
    from zedd_capture.devices.gphoto2_camera import GPhoto2Camera

    class FeedingCamera(GPhoto2Camera):
        """The real backend; before each release the virtual body's source image is swapped."""

        inits = 0

        def open(self):
            FeedingCamera.inits += 1
            super().open()

        def capture(self):
            n = self.model.parse_aperture(self.get(self.model.aperture_widget))
            (vdir / "shot.jpg").write_bytes(tagged_jpeg(f"pos={motor.pos:04X} f={n:.1f}"))
            return super().capture()

    return FeedingCamera("virtual")


def test_virtual_camera_full_stack_through_capture_scene(tmp_path, monkeypatch):
    vdir = _setup_vcam(tmp_path, monkeypatch)
    (vdir / "shot.jpg").write_bytes(tagged_jpeg("init"))
    from zedd_capture.capture.session import capture_scene
    from zedd_capture.layout import parse_image_name
    from zedd_capture.rig import load_rig

    rig = load_rig("sim")
    # the virtual body offers f/2.8-f/22 only: 6 apertures it has, 9 runs -> 54 images
    apertures = [2.8, 4.0, 5.6, 8.0, 11.0, 16.0]
    rig = rig.model_copy(update={"backend": "hardware", "capture": rig.capture.model_copy(update={"apertures": apertures})})
    motor = FakeMotor()
    cam = make_feeding_camera(vdir, motor)
    res = capture_scene(rig, "vcam01", tmp_path / "root", cam, motor, FakeLidar(), yes=True)
    assert res.complete
    stack = sorted((tmp_path / "root/scenes/vcam01/raw/focus_stack").iterdir())
    assert len(stack) == 54
    seen = set()
    for p in stack:
        name = parse_image_name(p.name)
        run = rig.run(name.run)
        assert name.hexcode == run.hexcode + 1  # achieved, not target
        data = p.read_bytes()
        assert len(data) == SIZE
        assert read_tag(data) == f"pos={name.hexcode:04X} f={name.f_number:.1f}"
        assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)
        entry = res.manifest["files"][f"focus_stack/{p.name}"]
        assert entry["f_number_reported"] == name.f_number
        assert entry["shutter_s"] > 0 and entry["hexcode_achieved"] == f"{name.hexcode:04X}"
        seen.add((name.run, name.f_number))
    assert len(seen) == 54
    assert cam.inits >= 3  # 54 captures need re-inits every <= 26
    assert res.manifest["settings"]["not_controlled_over_usb"] == ["iso", "shutter_type"]
    # the shutter ladder picks the nearest offered time, read back from the body
    shutters = {e["f_number"]: e["shutter_s"] for e in res.manifest["files"].values() if e.get("kind") == "image"}
    # one stop per f-number step, so (16 / 2.8)^2 ~ 33x between them, up to the ladder's 1/3-stop steps
    times = [shutters[n] for n in sorted(shutters)]
    assert all(a < b for a, b in zip(times, times[1:])), shutters
    assert 20 < shutters[16.0] / shutters[2.8] < 60, shutters


def test_virtual_camera_errors_are_clear(tmp_path, monkeypatch):
    vdir = _setup_vcam(tmp_path, monkeypatch)
    (vdir / "shot.jpg").write_bytes(tagged_jpeg("x"))
    from zedd_capture.devices.gphoto2_camera import CameraError, GPhoto2Camera
    from zedd_capture.devices.protocols import DeviceError

    cam = GPhoto2Camera("virtual")
    with pytest.raises(CameraError, match="not open"):
        cam.capture()
    cam.open()
    try:
        with pytest.raises(DeviceError, match=r"aperture f/1.4 is not offered"):
            cam.set_aperture(1.4)
        assert cam.set_aperture(2.8) == 2.8
        assert cam.set_shutter(1 / 90) == pytest.approx(0.01)
        with pytest.raises(CameraError, match="does not exist on this body|does not support"):
            cam._set_widget("iso", "100")
        with pytest.raises(CameraError, match="no relative focus drive"):
            cam.focus_step(3)
    finally:
        cam.close()
    # the Sony table asks for a shutter-type widget the virtual body lacks: a clear error, not a crash
    sony = GPhoto2Camera("sony")
    with pytest.raises(CameraError, match="shuttertype"):
        sony.open()
    sony.close()


def test_widget_value_formats():
    from zedd_capture.devices.camera_models import SONY, VIRTUAL, camera_model

    assert SONY.parse_aperture("f/2") == 2.0 and SONY.parse_aperture("f/1.4") == 1.4
    assert SONY.parse_shutter("1/100") == pytest.approx(0.01) and SONY.parse_shutter("30") == 30.0
    assert SONY.parse_shutter("Bulb") is None
    assert VIRTUAL.parse_shutter("0.0100s") == pytest.approx(0.01)
    assert SONY.parse_iso("100") == 100 and SONY.parse_iso("Auto ISO") is None
    with pytest.raises(KeyError, match="known: generic, sony, virtual"):
        camera_model("canon")


def test_gphoto2_error_codes_become_operator_messages():
    from zedd_capture.devices.gphoto2_camera import explain

    assert "claimed by another process" in explain(-53)  # GP_ERROR_IO_USB_CLAIM
    assert "busy" in explain(-110)  # GP_ERROR_CAMERA_BUSY
    assert "disconnected" in explain(-7) and "not found on USB" in explain(-52)
    assert "does not support" in explain(-6)  # GP_ERROR_NOT_SUPPORTED
    assert explain(-999) == "gphoto2 error -999"
