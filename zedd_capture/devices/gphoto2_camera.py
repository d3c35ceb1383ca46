"""The python-gphoto2 camera backend (:class:`~zedd_capture.devices.protocols.Camera`).

Widget names and value formats come from :mod:`camera_models`. gphoto2 is imported lazily (on
:meth:`GPhoto2Camera.open`) because the virtual camera needs ``VCAMERADIR`` set before the import.
"""

from __future__ import annotations

import time
from typing import Any

from .camera_models import CameraModel, camera_model
from .protocols import DeviceError

# gphoto2 result codes (gphoto2-result.h / gphoto2-port-result.h) -> what the operator should know
_ERRORS = {
    -53: "the camera is claimed by another process (a file manager's gvfs-gphoto2 monitor or another "
         "gphoto2 program): close it or run `gio mount -s gphoto2`",
    -110: "the camera is busy (still writing, or a menu is open): wait and retry",
    -52: "the camera was not found on USB (off, asleep or unplugged?)",
    -105: "no supported camera detected (check the cable and the body's USB mode: PC Remote)",
    -7: "USB I/O error: the camera was probably disconnected",
    -34: "USB read failed: the camera was probably disconnected",
    -35: "USB write failed: the camera was probably disconnected",
    -10: "USB timeout: the camera stopped answering (disconnected or asleep?)",
    -6: "the camera does not support this setting or operation",
    -2: "bad parameters (the setting does not exist on this body)",
    -1: "generic camera error",
}


class CameraError(DeviceError):
    """A gphoto2 camera operation failed; the message says which operation and why."""


def explain(code: int) -> str:
    return _ERRORS.get(int(code), f"gphoto2 error {code}")


class GPhoto2Camera:
    """A camera driven through libgphoto2 (auto-detected, or a given model name / port)."""

    def __init__(self, model: CameraModel | str = "sony", port: str | None = None, shutter_type: str = "electronic",
                 event_timeout_ms: int = 2000):
        self.model = camera_model(model) if isinstance(model, str) else model
        self.port, self.shutter_type, self.event_timeout_ms = port, shutter_type, event_timeout_ms
        self._gp: Any = None
        self._cam: Any = None
        self._captures_since_init = 0
        self._settings: dict[str, str] = {}  # widget -> value, re-applied after a re-init
        self.not_controlled: list[str] = []  # settings this body cannot take over USB (recorded in the manifest)

    # --- session -------------------------------------------------------------------------------
    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except self._gp.GPhoto2Error as e:
            raise CameraError(f"camera: {what}: {explain(e.code)} [{e}]") from None

    def open(self) -> None:
        if self._cam is not None:
            return
        try:
            import gphoto2 as gp
        except ImportError as e:
            raise CameraError(f"python-gphoto2 is not installed: {e}") from None
        self._gp = gp
        cam = gp.Camera()
        if self.port:
            ports = gp.PortInfoList()
            ports.load()
            idx = self._call(f"find port {self.port}", ports.lookup_path, self.port)
            cam.set_port_info(ports[idx])
        self._call("open (init)", cam.init)
        self._cam = cam
        self._captures_since_init = 0
        self._set_once()
        for widget, value in self._settings.items():
            self._set_widget(widget, value)

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.exit()
            except self._gp.GPhoto2Error:
                pass
            self._cam = None

    def _require(self):
        if self._cam is None:
            raise CameraError("camera: not open (call open() first)")
        return self._cam

    # USB hand-off for the Sony PTP focus backend (devices/focus.py)
    def release_usb(self) -> None:
        self.close()

    def reacquire_usb(self) -> None:
        self.open()

    # --- widgets -------------------------------------------------------------------------------
    def _widget(self, name: str):
        cam = self._require()
        return self._call(f"read setting '{name}'", cam.get_single_config, name)

    def choices(self, name: str) -> list[str]:
        w = self._widget(name)
        return [w.get_choice(i) for i in range(w.count_choices())]

    def get(self, name: str) -> str:
        return str(self._widget(name).get_value())

    def _set_widget(self, name: str, value: str) -> None:
        cam = self._require()
        w = self._widget(name)
        self._call(f"set '{name}' to {value!r}", w.set_value, value)
        self._call(f"set '{name}' to {value!r}", cam.set_single_config, name, w)

    def _has(self, name: str) -> bool:
        try:
            self._require().get_single_config(name)
            return True
        except self._gp.GPhoto2Error:
            return False

    def _set_once(self) -> None:
        """Capture target = the camera's RAM (images go to the host only), shutter type."""
        m = self.model
        if m.capture_target_widget and self._has(m.capture_target_widget):
            offered = self.choices(m.capture_target_widget)
            pick = next((c for c in m.capture_target_choices if c in offered), None)
            if pick is None:
                raise CameraError(f"camera: '{m.capture_target_widget}' offers {offered}, none of {m.capture_target_choices}")
            self._set_widget(m.capture_target_widget, pick)
        if m.shutter_type_widget:
            want = m.shutter_type_choices[self.shutter_type]
            if not self._has(m.shutter_type_widget):
                raise CameraError(f"camera: no '{m.shutter_type_widget}' setting: cannot select the {self.shutter_type} shutter")
            offered = self.choices(m.shutter_type_widget)
            if want not in offered:
                raise CameraError(f"camera: shutter type {want!r} not offered (choices {offered})")
            self._set_widget(m.shutter_type_widget, want)
        elif "shutter_type" not in self.not_controlled:
            self.not_controlled.append("shutter_type")

    # --- Camera protocol -----------------------------------------------------------------------
    def set_aperture(self, f_number: float) -> float:
        name = self.model.aperture_widget
        offered = {c: self.model.parse_aperture(c) for c in self.choices(name)}
        best = min((c for c, v in offered.items() if v is not None), key=lambda c: abs(offered[c] - f_number), default=None)
        if best is None or abs(offered[best] - f_number) > self.model.aperture_tolerance:
            raise CameraError(f"camera: aperture f/{f_number:g} is not offered by this body/lens "
                              f"(choices {sorted(v for v in offered.values() if v)})")
        self._set_widget(name, best)
        self._settings[name] = best
        got = self.model.parse_aperture(self.get(name))
        if got is None or abs(got - f_number) > self.model.aperture_tolerance:
            raise CameraError(f"camera: asked for f/{f_number:g}, the body reports {self.get(name)!r}")
        return got

    def set_shutter(self, seconds: float) -> float:
        """Nearest offered shutter time in stops (log2), returns the value read back (s)."""
        import math

        name = self.model.shutter_widget
        offered = {c: self.model.parse_shutter(c) for c in self.choices(name)}
        usable = [c for c, v in offered.items() if v]
        if not usable:
            raise CameraError(f"camera: '{name}' offers no numeric shutter times (exposure mode not M?)")
        best = min(usable, key=lambda c: abs(math.log2(offered[c] / seconds)))
        self._set_widget(name, best)
        self._settings[name] = best
        got = self.model.parse_shutter(self.get(name))
        if got is None:
            raise CameraError(f"camera: shutter read back as {self.get(name)!r}")
        return got

    def set_iso(self, iso: int) -> int:
        name = self.model.iso_widget
        if name is None:
            if "iso" not in self.not_controlled:
                self.not_controlled.append("iso")
            return int(iso)
        want = str(int(iso))
        if want not in self.choices(name):
            raise CameraError(f"camera: ISO {iso} not offered (choices {self.choices(name)})")
        self._set_widget(name, want)
        self._settings[name] = want
        got = self.model.parse_iso(self.get(name))
        if got != int(iso):
            raise CameraError(f"camera: asked for ISO {iso}, the body reports {self.get(name)!r}")
        return got

    def focus_step(self, n: int) -> None:
        """One relative focus step through the model's manual-focus widget (sign = direction, |n| =
        step size class 1/3/7 on Sony). With a position read-back this drives RelativeServoFocus."""
        name = self.model.manual_focus_widget
        if name is None:
            raise CameraError(f"camera: the {self.model.key} widget table has no relative focus drive")
        w = self._widget(name)
        value = float(n) if w.get_type() == self._gp.GP_WIDGET_RANGE else str(int(n))
        self._call(f"focus step {n:+d}", w.set_value, value)
        self._call(f"focus step {n:+d}", self._require().set_single_config, name, w)

    def capture(self) -> bytes:
        """Release the shutter, download the JPEG from the camera's RAM, delete it there."""
        gp = self._gp
        if self.model.max_captures_per_init and self._captures_since_init >= self.model.max_captures_per_init:
            self.close()
            self.open()
        cam = self._require()
        path = self._call("capture", cam.capture, gp.GP_CAPTURE_IMAGE)
        self._captures_since_init += 1
        folder, name = path.folder, path.name
        if not name.lower().endswith((".jpg", ".jpeg")):
            folder, name = self._wait_for_jpeg(folder, name)
        f = self._call(f"download {folder}/{name}", cam.file_get, folder, name, gp.GP_FILE_TYPE_NORMAL)
        data = bytes(memoryview(self._call("read image data", f.get_data_and_size)))
        if self.model.delete_after_download:
            try:
                cam.file_delete(folder, name)
            except gp.GPhoto2Error:
                pass  # RAM capture targets often refuse deletion; the image is gone after download anyway
        if data[:2] != b"\xff\xd8":
            raise CameraError(f"camera: {name} is not a JPEG (set the body's file format to JPEG)")
        return data

    def _wait_for_jpeg(self, folder: str, name: str) -> tuple[str, str]:
        gp, cam = self._gp, self._require()
        deadline = time.monotonic() + self.event_timeout_ms / 1000
        while time.monotonic() < deadline:
            ev, data = self._call("wait for event", cam.wait_for_event, 200)
            if ev == gp.GP_EVENT_FILE_ADDED and data.name.lower().endswith((".jpg", ".jpeg")):
                return data.folder, data.name
        raise CameraError(f"camera: captured {name} but no JPEG followed (set the file format to JPEG or RAW+JPEG)")
