"""Simulated capture backends (the twin rig): Camera and FocusMotor protocols over one shared state.

``TwinRig(rig, "kitchen01")`` holds the scene, the camera pose, the hidden motor and its position;
``.camera.capture()`` renders with the motor's true current focus distance (breathing + thin-lens
defocus + exposure + noise) and returns JPEG bytes; ``.focus_motor.move_to(code)`` drives the hidden
motor (+- repeatability counts) and returns the position read back. ``.lidar`` is the lidar twin's
``SimLidar`` (zedd_capture.sim.lidar), built on first use. Everything is deterministic per
(rig, scene) and identity-seeded: the k-th move to a hexcode and the k-th shot of a given state
(position, exposure, pose, board) come out the same whatever happened before.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..devices.protocols import DeviceError
from ..rig import Rig
from .board import CharucoTarget
from .motor import HiddenMotor, seed_for_rig
from .render import ViewCache, encode_jpeg, render_shot
from .scene import SimScene, build_scene

# Sony-style 1/3-stop settings the simulated body accepts.
F_NUMBERS = (1.4, 1.6, 1.8, 2.0, 2.2, 2.5, 2.8, 3.2, 3.5, 4.0, 4.5, 5.0, 5.6, 6.3, 7.1, 8.0, 9.0, 10.0, 11.0,
             13.0, 14.0, 16.0)
SHUTTERS = tuple(1 / x for x in (8000, 6400, 5000, 4000, 3200, 2500, 2000, 1600, 1250, 1000, 800, 640, 500, 400,
                                 320, 250, 200, 160, 125, 100, 80, 60, 50, 40, 30, 25, 20, 15, 13, 10, 8, 6, 5, 4)) + (
    0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 15.0, 20.0, 25.0, 30.0)
ISOS = (50, 64, 80, 100, 125, 160, 200, 250, 320, 400, 500, 640, 800, 1000, 1250, 1600, 2000, 2500, 3200, 6400)


def _nearest_log(value: float, choices) -> float:
    c = np.asarray(choices, dtype=float)
    return float(c[np.argmin(np.abs(np.log(c) - np.log(value)))])


def _pose_key(T) -> int:
    """crc32 of a 4x4 pose rounded to 1e-6 (m; rotation entries): the seed of a shot's noise. Unrounded, the
    last bits of a board placement computed from calibrated values (which vary by ~1e-11 between runs:
    cv2.calibrateCamera is not bit-reproducible) reseeded every shot, and a calibration run's noise with it."""
    return zlib.crc32((np.round(np.asarray(T, dtype=float), 6) + 0.0).tobytes())  # + 0.0: no -0.0


@dataclass
class ShotRecord:
    index: int
    hexcode: int  # position read back when the shot was taken
    focus_distance_m: float  # hidden truth
    f_number: float
    shutter_s: float
    iso: int
    sim_time_s: float


class TwinCamera:
    """Camera protocol of the twin (renders on ``capture``)."""

    def __init__(self, twin: "TwinRig"):
        self._twin = twin
        self.is_open = False
        self.f_number = twin.rig.capture.apertures[0]
        self.shutter_s = twin.rig.exposure.shutter_for(self.f_number)
        self.iso = twin.rig.exposure.iso

    def open(self) -> None:
        self.is_open = True

    def close(self) -> None:
        self.is_open = False

    def set_aperture(self, f_number: float) -> float:
        if not f_number > 0:
            raise DeviceError(f"twin camera: invalid f-number {f_number}")
        self.f_number = _nearest_log(f_number, F_NUMBERS)
        return self.f_number

    def set_shutter(self, seconds: float) -> float:
        if not seconds > 0:
            raise DeviceError(f"twin camera: invalid shutter time {seconds}")
        self.shutter_s = _nearest_log(seconds, SHUTTERS)
        return self.shutter_s

    def set_iso(self, iso: int) -> int:
        if not iso > 0:
            raise DeviceError(f"twin camera: invalid ISO {iso}")
        self.iso = int(_nearest_log(iso, ISOS))
        return self.iso

    def capture(self) -> bytes:
        if not self.is_open:
            raise DeviceError("twin camera: capture() before open()")
        rgb = self._twin.shoot(self.f_number, self.shutter_s, self.iso)
        return encode_jpeg(rgb, self._twin.rig.camera.jpeg_quality)

    def capture_region(self, region: tuple[int, int, int, int], size: tuple[int, int]) -> bytes:
        """JPEG of the window ``region`` (x0, y0, x1, y1 px) of a photograph of ``size`` (w, h) px.

        Twin only: what cropping a full-resolution shot gives (e.g. the sensor's native pixel pitch while
        the twin otherwise renders at a reduced size); optics, noise per pixel and JPEG as ``capture``.
        """
        if not self.is_open:
            raise DeviceError("twin camera: capture_region() before open()")
        rgb = self._twin.shoot(self.f_number, self.shutter_s, self.iso, region=region, size=size)
        return encode_jpeg(rgb, self._twin.rig.camera.jpeg_quality)


class TwinFocusMotor:
    """FocusMotor protocol of the twin (the body's read-back is the achieved position)."""

    def __init__(self, twin: "TwinRig"):
        self._twin = twin

    def move_to(self, hexcode: int) -> int:
        if not 0 <= int(hexcode) <= 0xFFFF:
            raise DeviceError(f"twin focus motor: position {hexcode} outside 0000..FFFF")
        return self._twin.drive(int(hexcode))

    def position(self) -> int:
        return self._twin.position


class TwinRig:
    """Shared state of the simulated rig for one scene (any rig's optics; e.g. the reference rig renders 4104x2736).

    ``time_scale`` > 0 makes motor moves really sleep settle_time * time_scale (default: simulated
    clock only, ``sim_time_s``). ``render_size`` (w, h) overrides the camera resolution (tests).
    """

    def __init__(self, rig: Rig, scene_name: str, root: Path | None = None, time_scale: float = 0.0,
                 render_size: tuple[int, int] | None = None, scene: SimScene | None = None):
        self.rig = rig
        self.scene_name = scene_name
        self.root = Path(root) if root is not None else None
        self.base_scene = scene if scene is not None else build_scene(scene_name)
        self._scene = self.base_scene
        self.camera_pose = self.base_scene.tripod_camera_pose.copy()
        self.motor_model = HiddenMotor(seed_for_rig(rig.name), rig.sim.motor_repeatability_counts)  # hidden
        self._seed = [seed_for_rig(rig.name), zlib.crc32(scene_name.encode())]
        self._move_counts: dict[int, int] = {}
        self._shot_counts: dict[tuple, int] = {}
        self.position = self.motor_model.hexcode_for(rig.capture.canonical_focus_distance_m)
        self.time_scale = time_scale
        self.render_size = render_size
        self.sim_time_s = 0.0
        self.shots: list[ShotRecord] = []
        self.achieved: dict[int, int] = {}  # commanded hexcode -> last achieved position
        self.view_cache = ViewCache()
        self.camera = TwinCamera(self)
        self.focus_motor = TwinFocusMotor(self)
        self._lidar = None

    # --- state -----------------------------------------------------------------------------
    @property
    def scene(self) -> SimScene:
        return self._scene

    @property
    def focus_distance_m(self) -> float:
        """True focus distance of the current motor position (hidden truth)."""
        return float(self.motor_model.distance_m(self.position))

    @property
    def lidar(self):
        if self._lidar is None:
            try:
                from .lidar import SimLidar
            except ImportError as e:
                raise DeviceError(f"twin lidar unavailable: zedd_capture.sim.lidar.SimLidar cannot be imported ({e})")
            self._lidar = SimLidar(self)
        return self._lidar

    def place_board(self, T_world_board: np.ndarray, target: CharucoTarget | None = None) -> SimScene:
        """Put a ChArUco board (default CharucoTarget()) at ``T_world_board``; replaces a previous board."""
        self._scene = self.base_scene.with_board(target or CharucoTarget(), T_world_board)
        return self._scene

    def remove_board(self) -> None:
        self._scene = self.base_scene

    def move_camera(self, T_world_camera: np.ndarray) -> None:
        self.camera_pose = np.asarray(T_world_camera, dtype=float).copy()

    def reset_camera(self) -> None:
        self.camera_pose = self.base_scene.tripod_camera_pose.copy()

    # --- actions -----------------------------------------------------------------------------
    def drive(self, hexcode: int) -> int:
        # identity-seeded: the k-th move to a target lands the same whatever was done before
        k = self._move_counts.get(int(hexcode), 0)
        self._move_counts[int(hexcode)] = k + 1
        achieved = self.motor_model.achieve(hexcode, np.random.default_rng(self._seed + [1, int(hexcode), k]))
        settle = self.motor_model.settle_seconds(self.position, achieved)
        self.sim_time_s += settle
        if self.time_scale > 0:
            time.sleep(settle * self.time_scale)
        self.position = achieved
        self.achieved[int(hexcode)] = achieved
        return achieved

    def shoot(self, f_number: float, shutter_s: float, iso: int, region: tuple[int, int, int, int] | None = None,
              size: tuple[int, int] | None = None) -> np.ndarray:
        """Render one photograph (uint8 RGB) at the current state.

        ``size`` (w, h) overrides the image size; ``region`` (x0, y0, x1, y1 px of that image) renders only
        that window of it (same pitch and optics as the full image).
        """
        w, h = size or self.render_size or (self.rig.camera.width_px, self.rig.camera.height_px)
        # identity-seeded noise: the k-th shot of the same state (position, exposure, pose, board) is the same
        # image whatever was shot before (a resumed capture re-creates identical files)
        board_key = 0 if self._scene.board is None else _pose_key(self._scene.board[1])
        key = (int(self.position), round(f_number * 100), round(shutter_s * 1e7), int(iso),
               _pose_key(self.camera_pose), board_key)
        if region is not None or size is not None:  # full-frame keys (and their noise) stay as they were
            key = key + (zlib.crc32(np.asarray([w, h, *(region or (0, 0, w, h))], np.int64).tobytes()),)
        k = self._shot_counts.get(key, 0)
        self._shot_counts[key] = k + 1
        rng = np.random.default_rng(self._seed + [2, *key, k])
        d = self.focus_distance_m
        shot = render_shot(self._scene, self.rig, d, f_number, shutter_s, iso, rng, self.camera_pose, w, h,
                           cache=self.view_cache, region=region)
        self.sim_time_s += shutter_s
        self.shots.append(ShotRecord(len(self.shots), self.position, d, f_number, shutter_s, iso, self.sim_time_s))
        return shot.rgb
