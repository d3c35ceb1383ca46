"""Capture devices behind small protocols: camera, focus motor, lidar (hardware and twin backends)."""

from .protocols import Camera, DeviceError, FocusMotor, Lidar, RecordingSummary

__all__ = ["Camera", "DeviceError", "FocusMotor", "Lidar", "RecordingSummary"]
