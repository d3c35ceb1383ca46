"""OS0-128 beam model built from a real Ouster sensor metadata JSON (via ouster-sdk).

The twin casts one ray per pixel of the *staggered* range image, exactly the model that
ouster-sdk's ``core.XYZLut`` inverts:

    xyz_sensor[row, col] = direction[row, col] * range + offset[row, col]   (metres)

with, in the lidar frame (Ouster docs, "Lidar Range to XYZ"), encoder angle
``theta_e = 2 pi (1 - col / W)``, beam azimuth ``theta_a = -2 pi az_row / 360``, altitude
``phi = 2 pi alt_row / 360`` and beam-origin offset ``n`` (mm):

    direction = (cos(theta_e + theta_a) cos(phi), sin(theta_e + theta_a) cos(phi), sin(phi))
    beam origin = (n cos(theta_e), n sin(theta_e), 0)
    offset = beam origin - n * direction

then both mapped into the *sensor* frame (x forward, y left, z up) with
``lidar_to_sensor_transform`` (mm -> m). RANGE is the distance from the beam origin to the
hit plus ``n``. Column ``col`` of the staggered image is fired at encoder position
``measurement_id = col`` (all 128 beams of a column fire at the same time).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ouster.sdk import core

MODES = ("512x10", "1024x10", "2048x10")
#: udp profile of the twin's frames: 1 mm RANGE, SIGNAL, REFLECTIVITY, NEAR_IR (the metadata file
#: of the real OS0 used the low-data-rate RNG15_RFL8_NIR8 profile, 8 mm range steps and no SIGNAL).
TWIN_PROFILE = "RNG19_RFL8_SIG16_NIR16"


class MetadataError(ValueError):
    """A sensor metadata JSON is missing, unreadable or not an Ouster sensor description."""


@dataclass(frozen=True)
class OS0Model:
    """Beam geometry of one Ouster sensor in one lidar mode (all arrays in the staggered layout).

    Attributes:
        info: ouster-sdk SensorInfo the twin writes into its OSF files.
        altitude_deg, azimuth_deg: (H,) beam angles (degrees) as in the metadata JSON.
        beam_origin_m: lidar-origin-to-beam-origin offset ``n`` (metres).
        lidar_to_sensor: 4x4 (metres) lidar frame -> sensor frame.
        directions: (H, W, 3) unit ray directions in the sensor frame.
        beam_origins: (H, W, 3) beam origin of each pixel in the sensor frame (metres).
        offsets: (H, W, 3) XYZLut offsets (metres): xyz = direction * range + offset.
        frame_period_s: 1 / frequency.
    """

    info: core.SensorInfo
    mode: str
    altitude_deg: np.ndarray
    azimuth_deg: np.ndarray
    beam_origin_m: float
    lidar_to_sensor: np.ndarray
    directions: np.ndarray
    beam_origins: np.ndarray
    offsets: np.ndarray
    frame_period_s: float
    source: str = ""

    @property
    def h(self) -> int:
        return int(self.altitude_deg.shape[0])

    @property
    def w(self) -> int:
        return int(self.directions.shape[1])

    def column_times(self) -> np.ndarray:
        """(W,) firing time of each staggered column relative to the frame start (s)."""
        return np.arange(self.w) * (self.frame_period_s / self.w)

    @classmethod
    def from_metadata(cls, json_path: str | Path, mode: str = "1024x10", profile: str = TWIN_PROFILE) -> "OS0Model":
        """Build the model from a sensor metadata JSON, re-targeted to ``mode`` (512x10/1024x10/2048x10)."""
        path = Path(json_path)
        try:
            text = path.read_text()
        except OSError as e:
            raise MetadataError(f"{path}: cannot read sensor metadata: {e}") from None
        return cls.from_json_text(text, mode=mode, profile=profile, source=str(path))

    @classmethod
    def from_json_text(cls, text: str, mode: str = "1024x10", profile: str = TWIN_PROFILE, source: str = "<json>") -> "OS0Model":
        if mode not in MODES:
            raise MetadataError(f"{source}: lidar mode {mode!r} not supported by the twin (use one of {MODES})")
        info = sensor_info_for_mode(text, mode, profile, source)
        alt = np.asarray(info.beam_altitude_angles, dtype=float)
        az = np.asarray(info.beam_azimuth_angles, dtype=float)
        n_m = float(info.lidar_origin_to_beam_origin_mm) * 1e-3
        beam_to_lidar = np.asarray(info.beam_to_lidar_transform, dtype=float)
        if abs(beam_to_lidar[2, 3]) > 1e-9:
            raise MetadataError(f"{source}: beam_to_lidar_transform has a z offset; the twin models x offsets only")
        l2s = np.asarray(info.lidar_to_sensor_transform, dtype=float).copy()
        l2s[:3, 3] *= 1e-3
        dirs, origins, offsets = beam_geometry(alt, az, n_m, info.w, l2s)
        return cls(
            info=info, mode=mode, altitude_deg=alt, azimuth_deg=az, beam_origin_m=n_m, lidar_to_sensor=l2s,
            directions=dirs, beam_origins=origins, offsets=offsets,
            frame_period_s=1.0 / int(mode.split("x")[1]), source=source,
        )


def beam_geometry(alt_deg: np.ndarray, az_deg: np.ndarray, n_m: float, w: int, lidar_to_sensor: np.ndarray):
    """(directions, beam_origins, offsets), each (H, W, 3) in the sensor frame (metres); see module doc."""
    enc = 2 * np.pi * (1.0 - np.arange(w) / w)  # (W,)
    theta = enc[None, :] - np.radians(az_deg)[:, None]  # (H, W)
    phi = np.radians(alt_deg)[:, None]
    d = np.stack([np.cos(theta) * np.cos(phi), np.sin(theta) * np.cos(phi), np.broadcast_to(np.sin(phi), theta.shape)], -1)
    o = np.zeros_like(d)
    o[..., 0] = n_m * np.cos(enc)[None, :]
    o[..., 1] = n_m * np.sin(enc)[None, :]
    off = o - n_m * d
    R, t = lidar_to_sensor[:3, :3], lidar_to_sensor[:3, 3]
    return d @ R.T, o @ R.T + t, off @ R.T + t


def sensor_info_for_mode(text: str, mode: str, profile: str = TWIN_PROFILE, source: str = "<json>") -> core.SensorInfo:
    """SensorInfo of the real sensor JSON with lidar mode, column window, pixel shifts and udp profile set."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise MetadataError(f"{source}: not JSON: {e}") from None
    fmt = meta.get("data_format") if isinstance(meta, dict) else None
    if not isinstance(fmt, dict) or "beam_altitude_angles" not in meta:
        raise MetadataError(f"{source}: not an Ouster sensor metadata file (no data_format / beam_altitude_angles)")
    w_new = int(mode.split("x")[0])
    w_old = int(fmt.get("columns_per_frame", w_new))
    if w_new != w_old:
        fmt["pixel_shift_by_row"] = [int(round(s * w_new / w_old)) for s in fmt["pixel_shift_by_row"]]
    fmt["columns_per_frame"] = w_new
    fmt["column_window"] = [0, w_new - 1]
    if profile:
        fmt["udp_profile_lidar"] = profile
    meta["lidar_mode"] = mode
    if isinstance(meta.get("config_params"), dict):
        meta["config_params"]["lidar_mode"] = mode
        if profile:
            meta["config_params"]["udp_profile_lidar"] = profile
    info, issues = core.parse_and_validate_metadata(json.dumps(meta))
    if info is None:
        raise MetadataError(f"{source}: ouster-sdk rejected the metadata: {issues}")
    if info.w != w_new or info.h != len(meta["beam_altitude_angles"]):
        raise MetadataError(f"{source}: expected {w_new} columns x {len(meta['beam_altitude_angles'])} beams, got {info.w}x{info.h}")
    return info
