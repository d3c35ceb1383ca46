"""Per-model gphoto2 widget table: widget names and value formats live here, nowhere else.

Keys are ``rig.camera.gphoto2_model``:

* ``sony``: Sony bodies in PC-remote ("mode 3") control, e.g. the alpha 1 II ("Sony ILCE-1M2 (PC
  Control)", USB 054c:0eed). f-number ``'f/2'`` ``'f/1.4'`` ``'f/16'``; shutterspeed ``'1/100'``
  ``'30'``; iso ``'100'``; shuttertype Auto/Mechanical/Electronic; capturetarget sdram (Internal RAM).
  Focus: no absolute position through libgphoto2 (see devices/focus.py and devices/ptp.py).
* ``generic``: a generic PTP body (f-number, shutterspeed, iso, capturetarget).
* ``virtual``: python-gphoto2's bundled virtual camera (a generic PTP / Nikon D750 emulation):
  f-number f/2.8-f/22, shutter speeds written ``'0.0100s'``, no ISO, no shutter type, 26 captures
  per ``init()``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CameraModel:
    key: str
    description: str
    aperture_widget: str = "f-number"
    shutter_widget: str = "shutterspeed"
    iso_widget: str | None = "iso"  # None: the body has no ISO control over USB
    shutter_type_widget: str | None = "shuttertype"
    shutter_type_choices: dict[str, str] = field(default_factory=lambda: {
        "electronic": "Electronic", "mechanical": "Mechanical", "auto": "Auto"})
    capture_target_widget: str | None = "capturetarget"
    capture_target_choices: tuple[str, ...] = ("Internal RAM", "sdram", "SDRAM")  # first one the body offers
    max_captures_per_init: int | None = None  # re-initialise the session after this many captures
    aperture_tolerance: float = 0.05  # |reported - requested| f-stops accepted as "the same" value
    delete_after_download: bool = True  # False where the capture target is RAM (nothing stays on a card)
    manual_focus_widget: str | None = None  # relative focus drive (Sony 'manualfocus' 0xD2D1: -7..+7, 0 = stop)

    # value formats -------------------------------------------------------------------------
    @staticmethod
    def parse_aperture(text: str) -> float | None:
        """'f/2' / 'f/1.4' / 'F2.8' / '2.8' -> f-number; None for non-numeric choices."""
        m = re.fullmatch(r"\s*[fF]?/?\s*(\d+(?:\.\d+)?)\s*", str(text))
        return float(m.group(1)) if m else None

    @staticmethod
    def parse_shutter(text: str) -> float | None:
        """'1/100' / '30' / '0.0100s' / '2.5"' -> seconds; None for 'Bulb', 'Auto', ..."""
        t = str(text).strip().rstrip('s"').strip()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)", t)
        if m:
            den = float(m.group(2))
            return float(m.group(1)) / den if den else None
        m = re.fullmatch(r"\d+(?:\.\d+)?", t)
        return float(t) if m else None

    @staticmethod
    def parse_iso(text: str) -> int | None:
        t = str(text).strip()
        return int(t) if t.isdigit() else None


SONY = CameraModel(key="sony", description="Sony alpha body in PC-remote mode (e.g. ILCE-1M2)",
                   delete_after_download=False, manual_focus_widget="manualfocus")
GENERIC = CameraModel(key="generic", description="generic PTP camera", shutter_type_widget=None)
VIRTUAL = CameraModel(
    key="virtual", description="python-gphoto2 virtual camera (generic PTP / Nikon emulation)",
    iso_widget=None, shutter_type_widget=None, max_captures_per_init=26, delete_after_download=False)

MODELS: dict[str, CameraModel] = {m.key: m for m in (SONY, GENERIC, VIRTUAL)}


def camera_model(key: str) -> CameraModel:
    """The widget table entry for ``rig.camera.gphoto2_model``; unknown keys name the known ones."""
    try:
        return MODELS[key]
    except KeyError:
        raise KeyError(f"camera model {key!r} not in the widget table (known: {', '.join(sorted(MODELS))})") from None
