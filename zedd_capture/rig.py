"""Typed rig configuration (camera body, lens, capture plan, lidar, extrinsic) loaded from YAML.

A rig file describes one physical (or simulated) capture rig. Every error names the file,
the field and the reason, e.g. ``rigs/sim.yaml: capture.runs.2.hexcode: not a 4-digit hex code``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RIGS_DIR = Path(__file__).resolve().parent.parent / "rigs"
DEFAULT_RIG = "sim"


class RigError(ValueError):
    """A rig file is missing, unreadable or invalid; the message names file, field and reason."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_hexcode(value: str | int) -> int:
    """Parse a focus-motor position: ``"6D3E"`` / ``0x6D3E`` / int -> int in 0..0xFFFF."""
    if isinstance(value, bool):
        raise ValueError("not a 4-digit hex code")
    if isinstance(value, int):
        code = value
    else:
        text = str(value).strip()
        if text.lower().startswith("0x"):
            text = text[2:]
        if len(text) != 4 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"{value!r} is not a 4-digit hex code")
        code = int(text, 16)
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"{value!r} is outside 0000..FFFF")
    return code


def format_hexcode(code: int) -> str:
    """Format a motor position as 4 upper-case hex digits."""
    if not 0 <= int(code) <= 0xFFFF:
        raise ValueError(f"hexcode {code} is outside 0000..FFFF")
    return f"{int(code):04X}"


class CameraConfig(_Strict):
    body: str
    gphoto2_model: str = Field("sony", description="key of the widget table in devices.camera_models")
    sensor_width_mm: float = Field(gt=0)
    sensor_height_mm: float = Field(gt=0)
    width_px: int = Field(gt=0, description="image width as shot (px)")
    height_px: int = Field(gt=0, description="image height as shot (px)")
    jpeg_quality: int = Field(95, ge=50, le=100)

    @property
    def pixel_pitch_mm(self) -> float:
        return self.sensor_width_mm / self.width_px


class BreathingConfig(_Strict):
    """Lens breathing: image scale s(d) = 1 + k_per_diopter * (1/d - 1/d_canonical) about the principal point."""

    k_per_diopter: float = 0.014
    decentre_px_per_diopter: tuple[float, float] = (0.0, 0.0)


class LensConfig(_Strict):
    name: str
    focal_length_mm: float = Field(gt=0)
    min_focus_m: float = Field(gt=0)
    breathing: BreathingConfig = BreathingConfig()


class FocusRun(_Strict):
    run: int = Field(ge=1)
    hexcode: int | None = None
    focus_distance_m: float | None = Field(None, gt=0)

    @field_validator("hexcode", mode="before")
    @classmethod
    def _hex(cls, v):
        return None if v is None else parse_hexcode(v)

    @model_validator(mode="after")
    def _one_target(self):
        if self.hexcode is None and self.focus_distance_m is None:
            raise ValueError("a run needs a hexcode or a focus_distance_m")
        return self

    @property
    def hex(self) -> str:
        return format_hexcode(self.hexcode) if self.hexcode is not None else "????"


class ExposureConfig(_Strict):
    """Exposure ladder: shutter time t = base_shutter_s * (N / base_f_number)^2 at constant ISO."""

    iso: int = Field(100, gt=0)
    base_f_number: float = Field(1.4, gt=0)
    base_shutter_s: float = Field(1 / 4000, gt=0)
    shutter_type: Literal["electronic", "mechanical", "auto"] = "electronic"

    def shutter_for(self, f_number: float) -> float:
        """Shutter time (s) keeping exposure constant at ``f_number``."""
        return self.base_shutter_s * (f_number / self.base_f_number) ** 2


class CaptureConfig(_Strict):
    runs: list[FocusRun] = Field(min_length=2)
    apertures: list[float] = Field(min_length=1)
    all_in_focus_f_number: float = 16.0
    canonical_run: int = 5
    canonical_focus_distance_m: float = Field(3.08, gt=0)
    sweep_seconds: float = Field(60.0, gt=0)

    @field_validator("apertures")
    @classmethod
    def _apertures(cls, v):
        if any(a <= 0 or not math.isfinite(a) for a in v):
            raise ValueError("f-numbers must be positive")
        if len(set(v)) != len(v):
            raise ValueError("f-numbers must be unique")
        return v

    @model_validator(mode="after")
    def _runs(self):
        numbers = [r.run for r in self.runs]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"runs must be numbered 1..{len(numbers)} in order, got {numbers}")
        if self.canonical_run not in numbers:
            raise ValueError(f"canonical_run {self.canonical_run} is not one of the runs")
        if self.all_in_focus_f_number not in self.apertures:
            raise ValueError(f"all_in_focus_f_number {self.all_in_focus_f_number} is not in apertures")
        return self


class DepthMapConfig(_Strict):
    width_px: int = Field(gt=0)
    height_px: int = Field(gt=0)
    splat_radius_px: int = Field(3, ge=0, le=16)


class LidarConfig(_Strict):
    model: str = "OS-0-128"
    mode: Literal["512x10", "1024x10", "2048x10"] = "1024x10"
    hostname: str | None = None
    metadata_json: str | None = Field(None, description="sensor metadata JSON (the twin takes its beams from it)")
    lidar_port: int = 7502
    imu_port: int = 7503

    @property
    def columns(self) -> int:
        return int(self.mode.split("x")[0])

    @property
    def frequency_hz(self) -> int:
        return int(self.mode.split("x")[1])


class SimConfig(_Strict):
    """Settings of the digital twin (ignored by hardware backends)."""

    range_noise_m: float = Field(0.01, ge=0)
    read_noise: float = Field(0.002, ge=0)
    photons_at_white: float = Field(4000.0, gt=0)
    motor_repeatability_counts: int = Field(2, ge=0)
    frames_per_sweep: int | None = Field(None, ge=1, description="override sweep length in frames")


class Rig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    backend: Literal["sim", "hardware"]
    camera: CameraConfig
    lens: LensConfig
    capture: CaptureConfig
    exposure: ExposureConfig = ExposureConfig()
    depth_map: DepthMapConfig
    lidar: LidarConfig = LidarConfig()
    lidar_to_camera: list[list[float]] = Field(description="nominal 4x4 lidar->camera transform")
    sim: SimConfig = SimConfig()
    source: str = Field("", description="file the rig was loaded from")

    @field_validator("lidar_to_camera")
    @classmethod
    def _extrinsic(cls, v):
        m = np.asarray(v, dtype=float)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError("must be a finite 4x4 matrix")
        r = m[:3, :3]
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or not np.allclose(m[3], [0, 0, 0, 1]):
            raise ValueError("must be a rigid transform (orthonormal rotation, last row 0 0 0 1)")
        return v

    # --- derived quantities -------------------------------------------------------------
    @property
    def extrinsic(self) -> np.ndarray:
        """Nominal 4x4 lidar->camera transform (metres)."""
        return np.asarray(self.lidar_to_camera, dtype=float)

    def nominal_K(self, width_px: int | None = None, height_px: int | None = None) -> np.ndarray:
        """Nominal pinhole intrinsics (px) from focal length and sensor width, principal point at the centre."""
        w = width_px or self.camera.width_px
        h = height_px or self.camera.height_px
        f_px = self.lens.focal_length_mm * w / self.camera.sensor_width_mm  # square pixels
        return np.array([[f_px, 0.0, (w - 1) / 2], [0.0, f_px, (h - 1) / 2], [0.0, 0.0, 1.0]])

    def run(self, k: int) -> FocusRun:
        for r in self.capture.runs:
            if r.run == k:
                return r
        raise KeyError(f"rig {self.name} has no run {k}")

    @property
    def calibration_dir_name(self) -> str:
        return self.name


def _format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "<top level>"


def load_rig(rig: str | Path | None = None) -> Rig:
    """Load a rig by YAML path or by name of a file in rigs/ (default: the simulated rig)."""
    path = resolve_rig_path(rig)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise RigError(f"{path}: <top level>: expected a mapping of rig fields")
    try:
        return Rig.model_validate({**data, "source": str(path)})
    except ValidationError as e:
        problems = "; ".join(f"{_format_loc(err['loc'])}: {err['msg']}" for err in e.errors())
        raise RigError(f"{path}: {problems}") from None


def resolve_rig_path(rig: str | Path | None) -> Path:
    """A rig argument is a path to a YAML file or the stem of a file in rigs/."""
    if rig is None:
        rig = DEFAULT_RIG
    candidate = Path(rig)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise RigError(f"{candidate}: rig file not found")
        return candidate
    named = RIGS_DIR / f"{rig}.yaml"
    if not named.is_file():
        known = ", ".join(sorted(p.stem for p in RIGS_DIR.glob("*.yaml")))
        raise RigError(f"{rig}: no such rig file and no rig of that name in {RIGS_DIR} (known: {known})")
    return named
