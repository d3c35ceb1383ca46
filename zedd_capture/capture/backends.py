"""Pick the capture devices of a rig: the digital twin for ``backend: sim``, hardware otherwise."""

from __future__ import annotations

from pathlib import Path

from ..devices.protocols import Camera, DeviceError, FocusMotor, Lidar
from ..rig import Rig


def open_backends(rig: Rig, scene: str, root: Path | str = ".") -> tuple[Camera, FocusMotor, Lidar]:
    """(camera, focus motor, lidar) for ``rig``; nothing is opened yet (the session opens the camera).

    * sim: the twin's ``TwinRig(rig, scene, root)`` (its camera renders with the motor's true focus);
    * hardware: python-gphoto2 camera (widget table ``rig.camera.gphoto2_model``), Sony absolute focus
      over PTP/USB (handing the USB interface back and forth with the gphoto2 session), ouster-sdk lidar
      at ``rig.lidar.hostname``.
    """
    if rig.backend == "sim":
        from ..sim.devices import TwinRig

        twin = TwinRig(rig, scene, Path(root))
        return twin.camera, twin.focus_motor, twin.lidar

    from ..devices.focus import SonyAbsoluteFocus
    from ..devices.gphoto2_camera import GPhoto2Camera
    from ..devices.ouster_lidar import OusterLidar
    from ..devices.ptp import PyUsbLink

    camera = GPhoto2Camera(rig.camera.gphoto2_model, shutter_type=rig.exposure.shutter_type)
    if rig.camera.gphoto2_model != "sony":
        raise DeviceError(f"{rig.source or rig.name}: camera.gphoto2_model {rig.camera.gphoto2_model!r}: no absolute focus "
                          "backend for this body (only Sony's PTP extension is supported; RelativeServoFocus needs a "
                          "position read-back the body does not give through gphoto2)")
    motor = SonyAbsoluteFocus(PyUsbLink(), handoff=camera)
    if not rig.lidar.hostname:
        raise DeviceError(f"{rig.source or rig.name}: lidar.hostname is not set (the sensor's hostname or IP address)")
    lidar = OusterLidar(rig.lidar.hostname, mode=rig.lidar.mode, lidar_port=rig.lidar.lidar_port,
                        imu_port=rig.lidar.imu_port)
    return camera, motor, lidar
