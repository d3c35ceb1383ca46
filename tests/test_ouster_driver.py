"""OusterLidar against a loopback fake sensor: another process replays a real OS0-128 frame
(tests/data/ouster, from the ouster-sdk 1.0.1 source distribution, BSD-3-Clause) as UDP lidar
packets with rewritten frame ids, dropping chosen packets and frames.

Run as a script this file IS the fake sensor:
    python tests/test_ouster_driver.py PORT FIRST_ID N_FRAMES DROP_FRAMES DROP_PACKETS
(DROP_FRAMES: comma list of frame offsets never sent; DROP_PACKETS: comma list of offset:packet).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).parent / "data" / "ouster"
JSON = DATA / "OS-0-128-U1_v2.3.0_1024x10.json"
PCAP = DATA / "OS-0-128-U1_v2.3.0_1024x10.pcap"


def _frame_packets() -> list[bytes]:
    from ouster.sdk import core
    from ouster.sdk._bindings.client import open_packet_source

    src = open_packet_source(str(PCAP), meta=[str(JSON)])
    return [bytes(p.buf) for _, p in src if isinstance(p, core.LidarPacket)]


def fake_sensor(port: int, first_id: int, n_frames: int, drop_frames: set[int], drop_packets: set[tuple[int, int]]) -> None:
    packets = _frame_packets()  # 64 packets = one 1024-column frame
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    period = 0.1 / len(packets)  # real rate: 10 frames/s
    t = time.monotonic()
    for k in range(n_frames):
        if k in drop_frames:
            continue
        fid = (first_id + k) % 65536
        for j, buf in enumerate(packets):
            if (k, j) in drop_packets:
                continue
            b = bytearray(buf)
            b[2:4] = fid.to_bytes(2, "little")  # frame_id field of the (non-legacy) packet header
            sock.sendto(bytes(b), ("127.0.0.1", port))
            t += period
            time.sleep(max(0.0, t - time.monotonic()))
    # one more frame start so the client closes the last frame
    b = bytearray(packets[0])
    b[2:4] = ((first_id + n_frames) % 65536).to_bytes(2, "little")
    sock.sendto(bytes(b), ("127.0.0.1", port))


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _start_fake(port, first_id, n, drop_frames="", drop_packets=""):
    return subprocess.Popen([sys.executable, __file__, str(port), str(first_id), str(n), drop_frames or "-",
                             drop_packets or "-"], cwd=Path(__file__).parent.parent)


def test_static_and_sweep_from_loopback_sensor(tmp_path):
    from ouster.sdk import core, open_source

    from zedd_capture.devices.ouster_lidar import OusterLidar

    info = core.SensorInfo(JSON.read_text())
    port = _free_port()
    lidar = OusterLidar("127.0.0.1", mode="1024x10", lidar_port=port, imu_port=_free_port(), sensor_info=info,
                        timeout_s=5.0)
    lidar.connect()
    try:
        # static: frame 0 arrives with 2 packets missing -> skipped and counted, frame 1 is recorded
        fake = _start_fake(port, 65530, 3, "", "0:5,0:40")
        static = lidar.record_static(tmp_path / "static.osf")
        fake.wait(timeout=20)
        assert static.frames == 1 and static.incomplete_frames == 1 and static.packets_lost == 2
        assert static.info["frame_id"] == 65531

        # sweep of 0.8 s = 8 frames: frame offset 3 never sent, offset 5 misses 3 packets; frame ids
        # wrap past 65535 on the way; frames still buffered from before the call are not recorded
        fake = _start_fake(port, 65534, 10, "3", "5:0,5:1,5:63")
        progress = []
        sweep = lidar.record_sweep(tmp_path / "sweep.osf", 0.8, lambda d, t: progress.append((d, t)))
        fake.wait(timeout=20)
    finally:
        lidar.close()
    assert sweep.frames_expected == 8
    assert sweep.frames == 7 and sweep.info["frames_lost"] == 1
    assert sweep.incomplete_frames == 1
    assert sweep.packets_lost == 64 + 3
    assert progress[-1] == (8, 8)

    # the OSF files hold the frames and the sensor's own metadata
    for path, n, ids in ((tmp_path / "static.osf", 1, [65531]),
                         (tmp_path / "sweep.osf", 7, [65534, 65535, 0, 2, 3, 4, 5])):
        src = open_source(str(path))
        meta = src.sensor_info[0]
        assert meta.sn == info.sn and meta.init_id == info.init_id and str(meta.config.lidar_mode) == "1024x10"
        got = [int(fs[0].frame_id) for fs in src]
        assert len(got) == n and got == ids


def test_silent_sensor_is_a_clear_device_error(tmp_path):
    import pytest
    from ouster.sdk import core

    from zedd_capture.devices.ouster_lidar import LidarError, OusterLidar
    from zedd_capture.devices.protocols import DeviceError

    lidar = OusterLidar("127.0.0.1", lidar_port=_free_port(), imu_port=_free_port(),
                        sensor_info=core.SensorInfo(JSON.read_text()), timeout_s=1.0)
    with pytest.raises(DeviceError, match="no packets|no frame|reading packets failed") as e:
        lidar.record_static(tmp_path / "s.osf")
    assert isinstance(e.value, LidarError)
    lidar.close()


if __name__ == "__main__":
    port, first, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    df = {int(x) for x in sys.argv[4].split(",") if x not in ("", "-")}
    dp = {tuple(int(v) for v in x.split(":")) for x in sys.argv[5].split(",") if x not in ("", "-")}
    time.sleep(0.3)  # let the client's socket settle
    fake_sensor(port, first, n, df, dp)
