"""Reader of Ouster recordings: the real OS0-128 pcap from the ouster-sdk test data, OSF round trip,
and one clear error naming the file for every kind of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from zedd_capture.pointcloud.io import LidarReadError, read_lidar, read_static_frame

DATA = Path(__file__).parent / "data" / "ouster"
PCAP = DATA / "OS-0-128-U1_v2.3.0_1024x10.pcap"
META = DATA / "OS-0-128-U1_v2.3.0_1024x10.json"


@pytest.fixture(scope="module")
def real():
    return read_lidar(PCAP, META)


@pytest.fixture(scope="module")
def osf_file(tmp_path_factory):
    from ouster.sdk import open_source, osf

    src = open_source(str(PCAP), meta=[str(META)])
    info = src.sensor_info[0]
    frame = [fs[0] for fs in src][0]
    path = tmp_path_factory.mktemp("osf") / "sweep.osf"
    w = osf.Writer(str(path), info)
    for _ in range(3):
        w.save(0, frame)
    w.close()
    return path


def test_real_pcap_points_and_timestamps(real):
    assert real.prod_line.startswith("OS-0-128") and real.columns == 1024 and real.pixels_per_column == 128
    assert len(real.frames) == 1
    f = real.frames[0]
    # about 74 % of the 131072 returns are valid in this indoor recording; no zero points left
    assert 0.6 * 131072 < len(f) < 0.9 * 131072
    assert np.all(np.linalg.norm(f.points, axis=1) > 0)
    # XYZ = direction * range + beam offset (~27 mm): |p| within a few cm of RANGE
    assert np.percentile(np.abs(np.linalg.norm(f.points, axis=1) - f.ranges), 99) < 0.06
    # column timestamps span one 10 Hz rotation around t_ref
    assert -0.051 < f.dt.min() < -0.045 and 0.045 < f.dt.max() < 0.051


def test_each_return_is_a_ray_of_its_pixel(real):
    # the real recording: every point lies on the ray of the range-image pixel it came from, at its range
    # (ouster-sdk's XYZLut tables, kept for the free-space test), and the pixel's column is the timestamp's
    f = real.frames[0]
    H, W = real.pixels_per_column, real.columns
    assert real.ray_directions.shape == real.ray_offsets.shape == (H, W, 3)
    np.testing.assert_allclose(np.linalg.norm(real.ray_directions, axis=-1), 1.0, atol=1e-9)
    row, col = np.divmod(f.pixel, W)
    expect = real.ray_directions[row, col] * f.ranges[:, None] + real.ray_offsets[row, col]
    np.testing.assert_allclose(f.points, expect, atol=2e-5)
    assert len(np.unique(f.pixel)) == len(f.pixel)
    # one timestamp per column; columns are fired in order
    dt_of_col = np.full(W, np.nan)
    dt_of_col[col] = f.dt
    seen = ~np.isnan(dt_of_col)
    np.testing.assert_array_equal(dt_of_col[col], f.dt)
    assert np.all(np.diff(dt_of_col[seen]) > 0)


def test_osf_round_trip_equals_pcap(real, osf_file):
    rec = read_lidar(osf_file)
    assert len(rec.frames) == 3
    np.testing.assert_allclose(rec.frames[0].points, real.frames[0].points, atol=1e-6)
    np.testing.assert_allclose(rec.frames[2].dt, real.frames[0].dt, atol=1e-6)
    assert len(read_static_frame(osf_file)) == len(real.frames[0])


def _expect(match, *args, **kw):
    with pytest.raises(LidarReadError, match=match) as e:
        read_lidar(*args, **kw)
    return str(e.value)


def test_missing_and_empty_files(tmp_path):
    assert "sweep.osf" in _expect("not found", tmp_path / "sweep.osf")
    (tmp_path / "empty.osf").write_bytes(b"")
    assert "empty.osf" in _expect("empty file", tmp_path / "empty.osf")
    shutil.copy(PCAP, tmp_path / "x.pcap")
    _expect("metadata JSON", tmp_path / "x.pcap")


def test_truncated_and_corrupt(tmp_path, osf_file):
    data = PCAP.read_bytes()
    (tmp_path / "t.pcap").write_bytes(data[: len(data) // 2])
    assert "t.pcap" in _expect("truncated pcap", tmp_path / "t.pcap", META)
    od = osf_file.read_bytes()
    (tmp_path / "t.osf").write_bytes(od[: int(len(od) * 0.7)])
    assert "t.osf" in _expect("truncated OSF", tmp_path / "t.osf")
    (tmp_path / "g.osf").write_bytes(np.random.default_rng(0).bytes(4000))
    assert "g.osf" in _expect("not a readable lidar recording", tmp_path / "g.osf")


def test_metadata_of_another_sensor(tmp_path):
    m = json.loads(META.read_text())
    m["initialization_id"] = 1234
    m["prod_sn"] = "999999999999"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(m))
    msg = _expect("another sensor", PCAP, other)
    assert "other.json" in msg
    _expect("another sensor", PCAP, META, expect_columns=512)
    _expect("another sensor", PCAP, META, expect_prod_line="OS-1-64")


def test_empty_sweep(tmp_path):
    from ouster.sdk import open_source, osf

    info = open_source(str(PCAP), meta=[str(META)]).sensor_info[0]
    w = osf.Writer(str(tmp_path / "zero.osf"), info)
    w.close()
    assert "zero.osf" in _expect("no lidar frames", tmp_path / "zero.osf")


def test_depth_edges_flags_mixed_pixels_only():
    from zedd_capture.pointcloud.io import depth_edges

    rng = np.random.default_rng(0)
    r = np.full((4, 64), 5000, np.uint32)  # 5 m wall
    r[:, 20:30] = 1000  # a 1 m object
    r[:, 30] = 3000  # a mixed pixel between them
    r[:, 40] = 2000  # a one-column pole: kept
    r = r + rng.integers(0, 20, r.shape).astype(np.uint32)  # 2 cm noise
    r[0, 50] = 0  # no return: no edge around it
    e = depth_edges(r, 0.1)
    assert e[:, 30].all() and e.sum() == 4
    real = read_lidar(PCAP, META, edge_jump_m=0.1)
    n_all = len(read_lidar(PCAP, META).frames[0])
    assert 0.95 * n_all < len(real.frames[0]) < n_all


def test_depth_edges_flags_mixed_returns_on_a_grazing_wall():
    from zedd_capture.pointcloud.io import depth_edges

    # one beam along a wall seen at grazing incidence: the range grows 0.4-0.8 m from column to column
    cols = np.arange(40)
    r_m = 6.0 + 0.4 * cols + 0.01 * cols**2
    r = np.tile(np.round(r_m * 1000).astype(np.uint32), (2, 1))
    r[:, 10] = np.round((r_m[9] + 0.25 * (r_m[10] - r_m[9])) * 1000)  # mixed from the footprints of 9 and 10
    r[:, 25] = np.round((r_m[24] + 0.6 * (r_m[25] - r_m[24])) * 1000)
    r[:, 32:] = 3000  # a step edge to a nearer surface: its returns are not mixed
    e = depth_edges(r, 0.1)[:, 1:-1]  # (columns 0 and 39 are neighbours on a spinning lidar)
    assert e[:, 9].all() and e[:, 24].all()
    # the returns next to them go too; the other genuine returns of the wall (steps to both neighbours
    # alike) and those at the step edge are kept
    assert e.sum() <= 12 and not e[:, :7].any() and not e[:, 13:22].any() and not e[:, 27:].any()
    assert not depth_edges(r, 0.1, grazing_ratio=None)[:, [10, 25]].any()  # the jump rule alone misses them
