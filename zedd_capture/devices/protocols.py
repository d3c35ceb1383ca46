"""The contracts every capture backend obeys (hardware drivers and the digital twin alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable


class DeviceError(RuntimeError):
    """A device failed (disconnected, busy, unsupported setting); the message says which and why."""


@runtime_checkable
class Camera(Protocol):
    """A still camera with software control of exposure (focus lives in :class:`FocusMotor`)."""

    def open(self) -> None: ...
    def close(self) -> None: ...
    def set_aperture(self, f_number: float) -> float:
        """Set the f-number; returns the value the body reports."""
    def set_shutter(self, seconds: float) -> float:
        """Set the nearest available shutter time (s); returns it."""
    def set_iso(self, iso: int) -> int: ...
    def capture(self) -> bytes:
        """Take one picture and return the JPEG bytes."""


@runtime_checkable
class FocusMotor(Protocol):
    """The lens focus motor addressed by the 16-bit position the body reports (the hexcode)."""

    def move_to(self, hexcode: int) -> int:
        """Drive to ``hexcode``, wait until settled, return the achieved position read back."""
    def position(self) -> int:
        """Current motor position as reported by the body."""


@dataclass
class RecordingSummary:
    path: Path
    frames: int
    frames_expected: int
    packets_lost: int = 0
    incomplete_frames: int = 0
    info: dict = field(default_factory=dict)


ProgressCallback = Callable[[int, int], None]  # (frames done, frames expected)


@runtime_checkable
class Lidar(Protocol):
    """A spinning lidar that records frames to an OSF file (sensor metadata embedded)."""

    def record_static(self, path: Path) -> RecordingSummary:
        """Record one complete frame from the current (tripod) pose."""
    def record_sweep(self, path: Path, seconds: float, progress: ProgressCallback | None = None) -> RecordingSummary:
        """Record ``seconds`` of frames (hand-held sweep)."""
