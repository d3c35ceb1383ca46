"""The ouster-sdk lidar backend (:class:`~zedd_capture.devices.protocols.Lidar`).

Connects to a sensor by hostname, configures it (lidar mode, UDP ports, NORMAL operation, UDP
destination = this host), and records frames to OSF files with the sensor's own metadata
embedded. Loss is counted per recording:

* lost frames: gaps in ``frame_id`` between consecutive frames (frame ids are 16 bit and wrap);
* lost packets: columns without the valid bit in ``status``, divided by the columns per packet,
  plus every packet of each lost frame;
* incomplete frames: frames with at least one missing column.

``sensor_info`` (a ``core.SensorInfo``) skips every HTTP call: the sensor is assumed configured
and streaming to our ports with exactly that metadata (used by the loopback tests, and possible
on hardware when the HTTP API is firewalled).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .protocols import DeviceError, ProgressCallback, RecordingSummary

FRAME_ID_MODULO = 1 << 16


class LidarError(DeviceError):
    """The lidar could not be reached, configured or read; the message says which and why."""


class OusterLidar:
    """An Ouster sensor reached at ``hostname`` (records static frames and sweeps to OSF)."""

    def __init__(self, hostname: str, mode: str = "1024x10", lidar_port: int = 7502, imu_port: int = 7503,
                 sensor_info=None, configure: bool = True, timeout_s: float = 5.0, max_static_attempts: int = 10):
        self.hostname, self.mode = hostname, mode
        self.lidar_port, self.imu_port = lidar_port, imu_port
        self.sensor_info, self.configure = sensor_info, configure
        self.timeout_s, self.max_static_attempts = timeout_s, max_static_attempts
        self._source = None
        self._iter = None

    # --- connection ----------------------------------------------------------------------------
    def sensor_config(self):
        from ouster.sdk import core

        cfg = core.SensorConfig()
        cfg.lidar_mode = core.LidarMode(self.mode)
        cfg.udp_port_lidar = self.lidar_port
        cfg.udp_port_imu = self.imu_port
        cfg.operating_mode = core.OperatingMode.NORMAL
        return cfg

    def connect(self) -> None:
        """Configure the sensor (unless ``sensor_info`` was given) and start listening for packets."""
        if self._source is not None:
            return
        from ouster.sdk import open_source, sensor

        kw = {"lidar_port": self.lidar_port, "imu_port": self.imu_port, "timeout": self.timeout_s}
        try:
            if self.sensor_info is None and self.configure:
                sensor.set_config(self.hostname, self.sensor_config(), udp_dest_auto=True)
            if self.sensor_info is not None:
                from ouster.sdk import core

                info = core.SensorInfo(self.sensor_info.to_json_string())  # the source listens on the info's ports
                info.config.udp_port_lidar, info.config.udp_port_imu = self.lidar_port, self.imu_port
                kw["sensor_info"] = [info]
            self._source = open_source(self.hostname, **kw)
        except Exception as e:  # ouster-sdk raises RuntimeError / ClientError with its own text
            raise LidarError(f"lidar {self.hostname}: cannot connect/configure ({self.mode}, UDP {self.lidar_port}/"
                             f"{self.imu_port}): {e}") from None
        info = self._source.sensor_info[0]
        if str(info.config.lidar_mode) != self.mode:
            self.close()
            raise LidarError(f"lidar {self.hostname}: runs in mode {info.config.lidar_mode}, expected {self.mode}")

    def close(self) -> None:
        if self._source is not None:
            try:
                self._source.close()
            except Exception:  # noqa: BLE001
                pass
        self._source = self._iter = None

    @property
    def info(self):
        self.connect()
        return self._source.sensor_info[0]

    def _next_frame(self, not_before_ns: int = 0):
        """The next frame from the sensor whose first packet arrived at or after ``not_before_ns`` (host
        clock, ``time.time_ns``; older frames were buffered before the call). Silence is a DeviceError."""
        self.connect()
        if self._iter is None:
            self._iter = iter(self._source)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fs = next(self._iter)
            except StopIteration:
                raise LidarError(f"lidar {self.hostname}: no packets for {self.timeout_s:g} s (disconnected, or UDP "
                                 f"not reaching port {self.lidar_port}?)") from None
            except Exception as e:  # noqa: BLE001 - ClientTimeout / ClientOverflow / socket errors
                raise LidarError(f"lidar {self.hostname}: reading packets failed: {e}") from None
            frame = fs[0] if fs is not None else None
            if frame is not None and int(frame.get_first_valid_packet_timestamp()) >= not_before_ns:
                return frame
            if time.monotonic() > deadline:
                raise LidarError(f"lidar {self.hostname}: no frame for {self.timeout_s:g} s")

    # --- recordings ----------------------------------------------------------------------------
    def _columns_per_packet(self) -> int:
        from ouster.sdk import core

        return int(core.PacketFormat(self.info).columns_per_packet)

    def _missing_packets(self, frame) -> int:
        cpp = self._columns_per_packet()
        valid = (np.asarray(frame.status) & 1).astype(bool)
        missing_cols = int(valid.size - valid.sum())
        return int(np.ceil(missing_cols / cpp))

    def record_static(self, path: Path) -> RecordingSummary:
        """Write the first COMPLETE frame to ``path`` (OSF); incomplete ones before it are counted."""
        from ouster.sdk import osf

        skipped = lost = 0
        t0 = time.time_ns()
        for _ in range(self.max_static_attempts):
            frame = self._next_frame(t0)
            if frame.complete():
                w = osf.Writer(str(path), self.info)
                try:
                    w.save(0, frame)
                finally:
                    w.close()
                return RecordingSummary(Path(path), 1, 1, packets_lost=lost, incomplete_frames=skipped,
                                        info={"hostname": self.hostname, "mode": self.mode, "frame_id": int(frame.frame_id),
                                              "incomplete_frames_skipped": skipped})
            skipped += 1
            lost += self._missing_packets(frame)
        raise LidarError(f"lidar {self.hostname}: no complete frame in {self.max_static_attempts} frames "
                         f"({lost} packets lost): check the network (jumbo frames? link speed?)")

    def record_sweep(self, path: Path, seconds: float, progress: ProgressCallback | None = None) -> RecordingSummary:
        """Record ``seconds`` of frames (frame count = seconds x rate, lost frames included) to OSF."""
        from ouster.sdk import osf

        rate = self.info.config.lidar_mode.fps if hasattr(self.info.config.lidar_mode, "fps") else 10
        expected = max(1, int(round(seconds * rate)))
        packets_per_frame = int(np.ceil(self.info.format.columns_per_frame / self._columns_per_packet()))
        frames = lost_frames = lost_packets = incomplete = 0
        first_id = last_id = None
        t0 = time.time_ns()
        w = osf.Writer(str(path), self.info)
        try:
            while True:
                frame = self._next_frame(t0)
                fid = int(frame.frame_id)
                if first_id is None:
                    first_id = fid
                    span = 1
                else:
                    gap = (fid - last_id) % FRAME_ID_MODULO
                    if gap == 0:
                        continue  # duplicate
                    lost_frames += gap - 1
                    span = frames + lost_frames + 1
                    if span > expected:
                        # lost frames pushed us past the end: only count the ones inside the window
                        lost_frames -= span - expected
                        break
                last_id = fid
                missing = self._missing_packets(frame)
                lost_packets += missing
                incomplete += missing > 0
                w.save(0, frame)
                frames += 1
                if progress:
                    progress(frames + lost_frames, expected)
                if span >= expected:
                    break
        finally:
            w.close()
        lost_packets += lost_frames * packets_per_frame
        return RecordingSummary(Path(path), frames, expected, packets_lost=lost_packets, incomplete_frames=incomplete,
                                info={"hostname": self.hostname, "mode": self.mode, "frames_lost": lost_frames,
                                      "first_frame_id": first_id, "last_frame_id": last_id,
                                      "packets_per_frame": packets_per_frame})
