"""File names, metadata.txt, atomic writes and the manifest of zedd_capture.layout."""

import os
import signal
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from zedd_capture.layout import (
    LayoutError,
    MetadataRow,
    SceneLayout,
    atomic_write_bytes,
    format_image_name,
    format_metadata,
    parse_image_name,
    parse_metadata,
    parse_scene_name,
    read_manifest,
    record_file,
    write_manifest,
)

f_numbers = st.integers(min_value=10, max_value=640).map(lambda n: n / 10)


@given(run=st.integers(1, 10_000), hexcode=st.integers(0, 0xFFFF), f_number=f_numbers)
def test_image_name_round_trip(run, hexcode, f_number):
    name = format_image_name(run, hexcode, f_number)
    parsed = parse_image_name(name)
    assert (parsed.run, parsed.hexcode, parsed.f_number) == (run, hexcode, f_number)
    assert parsed.name == name


@given(st.text(min_size=0, max_size=40))
def test_random_text_is_rejected_or_round_trips(text):
    try:
        parsed = parse_image_name(text)
    except LayoutError as e:
        assert "not a focus-stack image name" in str(e)
    else:
        assert parsed.name == text


def test_published_examples():
    assert format_image_name(1, 0x6D3E, 2.0) == "img_run_1_motor_6D3E_aperture_F2.0.jpg"
    assert format_image_name(5, 0x2371, 16) == "img_run_5_motor_2371_aperture_F16.0.jpg"
    p = parse_image_name("img_run_9_motor_1113_aperture_F1.4.jpg")
    assert (p.run, p.hexcode, p.f_number) == (9, 0x1113, 1.4)


@pytest.mark.parametrize(
    "bad",
    ["img_run_1_motor_6d3e_aperture_F2.0.jpg", "img_run_01_motor_6D3E_aperture_F2.0.jpg",
     "img_run_1_motor_6D3E_aperture_F2.jpg", "img_run_1_motor_6D3_aperture_F2.0.jpg", "img_run_1_motor_6D3E_aperture_F2.0.png"],
)
def test_bad_names_are_rejected(bad):
    with pytest.raises(LayoutError, match="not a focus-stack image name"):
        parse_image_name(bad)


rows_strategy = st.lists(
    st.tuples(st.integers(0, 0xFFFF), st.floats(0.1, 1000, allow_nan=False).map(lambda d: round(d, 4))),
    min_size=1, max_size=12,
).map(lambda xs: [MetadataRow(i + 1, h, d) for i, (h, d) in enumerate(xs)])


@given(rows_strategy)
def test_metadata_round_trip(rows):
    assert parse_metadata(format_metadata(rows)) == rows


def test_metadata_format_is_tab_separated():
    text = format_metadata([MetadataRow(1, 0x6D3E, 0.82), MetadataRow(2, 0x4EA8, 1.1)])
    assert text.splitlines()[0] == "run_1\t6D3E\t0.8200"


@pytest.mark.parametrize(
    "text, message",
    [("run_1 6D3E 0.82\n", "metadata.txt:1: expected run_id<TAB>hexcode<TAB>focus_distance_m"),
     ("run_x\t6D3E\t0.82\n", "metadata.txt:1: run id 'run_x' is not run_<k>"),
     ("run_1\t6D3E\tfar\n", "metadata.txt:1: focus distance 'far' is not a number"),
     ("run_1\t6D3E\t-1\n", "must be a positive finite number"),
     ("run_1\t6D3E\t1\nrun_1\t6D3E\t2\n", "duplicate run ids")],
)
def test_metadata_errors_name_line(text, message):
    with pytest.raises(LayoutError, match=message):
        parse_metadata(text)


def test_scene_names():
    assert parse_scene_name("kitchen01") == ("kitchen", 1)
    assert parse_scene_name("office07") == ("office", 7)
    with pytest.raises(LayoutError, match="Kitchen: scene names"):
        parse_scene_name("Kitchen")


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "a" / "x.bin"
    atomic_write_bytes(p, b"old")
    atomic_write_bytes(p, b"new content")
    assert p.read_bytes() == b"new content"
    assert [f.name for f in p.parent.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path, umask):
    # tempfile's files are private (0600): a dataset written through it would be unreadable to its other users
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        (tmp_path / "b.bin").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) \
        == 0o666 & ~umask


def test_atomic_write_error_keeps_old_file(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"good")

    class Boom(Exception):
        pass

    def chunks():
        yield b"partial"
        raise Boom()

    from zedd_capture.layout import atomic_open

    with pytest.raises(Boom), atomic_open(p) as f:
        for c in chunks():
            f.write(c)
    assert p.read_bytes() == b"good"
    assert [f.name for f in tmp_path.iterdir()] == ["x.bin"]


def test_atomic_write_killed_process_leaves_no_partial_file(tmp_path):
    """SIGKILL in the middle of a large write: the target is either absent or complete, never partial."""
    target = tmp_path / "big.npy"
    script = textwrap.dedent(f"""
        import os, sys, time
        from zedd_capture.layout import atomic_open
        with atomic_open({str(target)!r}) as f:
            f.write(b"x" * 1_000_000)
            f.flush()
            print("writing", flush=True)
            time.sleep(30)
            f.write(b"y")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert all(f.name.startswith(".big.npy.") and f.name.endswith(".part") for f in leftovers)


def test_manifest_round_trip_and_corruption(tmp_path):
    scene = SceneLayout(tmp_path, "kitchen01")
    img = scene.raw_image_path(1, 0x6D3E, 2.0)
    atomic_write_bytes(img, b"\xff\xd8jpeg")
    manifest = read_manifest(scene.manifest_path)
    assert manifest["files"] == {}
    entry = record_file(manifest, scene.raw_dir, img, achieved_hexcode="6D3F")
    write_manifest(scene.manifest_path, manifest)
    back = read_manifest(scene.manifest_path)
    assert back["files"]["focus_stack/img_run_1_motor_6D3E_aperture_F2.0.jpg"] == entry
    assert entry["bytes"] == 6 and len(entry["sha256"]) == 64
    scene.manifest_path.write_text("{ truncated")
    with pytest.raises(LayoutError, match="capture.json: corrupt capture manifest"):
        read_manifest(scene.manifest_path)


def test_npy_atomic_save(tmp_path):
    from zedd_capture.layout import atomic_save_npy

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npy(tmp_path / "d.npy", a)
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy"), a)
