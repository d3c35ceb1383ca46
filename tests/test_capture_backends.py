"""open_backends: the twin for a sim rig, the hardware drivers (nothing opened yet) otherwise."""

from __future__ import annotations

import pytest

from zedd_capture.capture.backends import open_backends
from zedd_capture.devices.protocols import Camera, DeviceError, FocusMotor, Lidar
from zedd_capture.rig import load_rig


def test_sim_rig_gets_the_twin(tmp_path):
    cam, motor, lidar = open_backends(load_rig("sim"), "kitchen01", tmp_path)
    assert isinstance(cam, Camera) and isinstance(motor, FocusMotor) and isinstance(lidar, Lidar)
    assert type(cam).__module__ == "zedd_capture.sim.devices"
    assert type(lidar).__name__ == "SimLidar"


def test_hardware_rig_gets_drivers_without_touching_devices(tmp_path):
    from zedd_capture.devices.focus import SonyAbsoluteFocus
    from zedd_capture.devices.gphoto2_camera import GPhoto2Camera
    from zedd_capture.devices.ouster_lidar import OusterLidar

    rig = load_rig("zedd-reference")
    cam, motor, lidar = open_backends(rig, "kitchen01", tmp_path)
    assert isinstance(cam, GPhoto2Camera) and cam.model.key == "sony" and cam._cam is None
    assert isinstance(motor, SonyAbsoluteFocus) and motor.handoff is cam
    assert isinstance(lidar, OusterLidar) and lidar.hostname == rig.lidar.hostname and lidar._source is None
    assert isinstance(cam, Camera) and isinstance(motor, FocusMotor) and isinstance(lidar, Lidar)


def test_hardware_rig_without_lidar_hostname_is_a_clear_error(tmp_path):
    rig = load_rig("zedd-reference")
    rig = rig.model_copy(update={"lidar": rig.lidar.model_copy(update={"hostname": None})})
    with pytest.raises(DeviceError, match="lidar.hostname is not set"):
        open_backends(rig, "kitchen01", tmp_path)
