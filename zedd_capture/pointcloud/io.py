"""Read Ouster lidar recordings (OSF, or pcap + metadata JSON) into per-frame point arrays.

Points are in the sensor frame (metres, ouster-sdk ``XYZLut``; Ouster axes x fwd, y left, z up);
invalid returns (RANGE == 0) are dropped. Each point carries the timestamp (seconds, sensor
clock) of the measurement column it came from, for deskewing. Every failure raises
:class:`LidarReadError` naming the file and the reason.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class LidarReadError(ValueError):
    """A lidar recording is missing, unreadable, truncated, corrupt, empty or of another sensor."""


@dataclass
class LidarFrameData:
    """One lidar frame: valid points in the sensor frame and their column timestamps.

    points: (N, 3) float32 metres, sensor frame. dt: (N,) float32 seconds of each point's column
    timestamp relative to ``t_ref``. ranges: (N,) float32 metres (RANGE channel). t_ref: frame
    reference time (s, sensor clock), the midpoint of its column timestamps; poses of this frame
    refer to ``t_ref``. pixel: (N,) int32 index ``row * W + col`` of each point in the (staggered) range
    image, or None (for :mod:`free_space`).
    """

    points: np.ndarray
    dt: np.ndarray
    ranges: np.ndarray
    t_ref: float
    frame_id: int
    complete: bool = True
    pixel: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.points)


@dataclass
class LidarRecording:
    path: Path
    frames: list[LidarFrameData]
    serial: str
    prod_line: str
    columns: int
    pixels_per_column: int
    incomplete_dropped: int = 0
    info: dict = field(default_factory=dict)
    #: (H, W, 3) unit ray direction and (H, W, 3) offset (m) of every pixel in the sensor frame (ouster-sdk
    #: XYZLut: xyz = direction * range + offset); None when unknown
    ray_directions: np.ndarray | None = None
    ray_offsets: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        return int(sum(len(f) for f in self.frames))


def _check_pcap_structure(path: Path) -> None:
    """Walk the pcap record headers; raise if the file ends inside a record (truncated)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            raise LidarReadError(f"{path}: truncated pcap (file shorter than the pcap header)")
        magic = head[:4]
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            endian = "<"
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            endian = ">"
        else:
            return  # pcapng or other: left to ouster-sdk
        pos = 24
        n = 0
        while pos < size:
            f.seek(pos)
            rec = f.read(16)
            if len(rec) < 16:
                raise LidarReadError(f"{path}: truncated pcap (ends inside a record header after {n} packets)")
            _, _, incl_len, _ = struct.unpack(endian + "IIII", rec)
            if incl_len > 1 << 20:
                raise LidarReadError(f"{path}: corrupt pcap (record {n} claims {incl_len} bytes)")
            pos += 16 + incl_len
            n += 1
        if pos != size:
            raise LidarReadError(f"{path}: truncated pcap (last packet {n} is cut off)")


def _osf_header_lengths(path: Path) -> tuple[int, int] | None:
    """(metadata_offset, file_length) from an OSF v2 header (size-prefixed flatbuffer 'OSF$'), or None."""
    with open(path, "rb") as f:
        head = f.read(256)
    try:
        if len(head) < 16 or head[8:12] != b"OSF$":
            return None
        buf = head[4:]
        table = struct.unpack_from("<I", buf, 0)[0]
        vt = table - struct.unpack_from("<i", buf, table)[0]
        vt_size = struct.unpack_from("<H", buf, vt)[0]
        offs = [struct.unpack_from("<H", buf, vt + 4 + 2 * i)[0] for i in range((vt_size - 4) // 2)]
        if len(offs) < 4 or not offs[2] or not offs[3]:
            return None
        meta = struct.unpack_from("<Q", buf, table + offs[2])[0]
        length = struct.unpack_from("<Q", buf, table + offs[3])[0]
        return int(meta), int(length)
    except struct.error:
        return None


def _check_osf_structure(path: Path) -> None:
    """A truncated OSF (ends before its recorded length / metadata) raises; ouster-sdk would read part of it."""
    lengths = _osf_header_lengths(path)
    if lengths is None:
        return
    meta, length = lengths
    size = path.stat().st_size
    if length and size < length or meta and size <= meta:
        raise LidarReadError(f"{path}: truncated OSF ({size} bytes, the header records {length} bytes)")


def _open(path: Path, meta: Path | None, soft_id_check: bool = False):
    from ouster.sdk import open_source

    kwargs = {}
    if meta is not None:
        kwargs["meta"] = [str(meta)]
    if soft_id_check:
        kwargs["soft_id_check"] = True
    try:
        return open_source(str(path), **kwargs)
    except Exception as e:  # ouster raises its own exception types
        msg = str(e).strip().splitlines()
        detail = msg[-1] if msg else type(e).__name__
        raise LidarReadError(f"{path}: not a readable lidar recording ({detail})") from None


def read_lidar(
    path: Path,
    meta: Path | None = None,
    max_frames: int | None = None,
    expect_columns: int | None = None,
    expect_pixels: int | None = None,
    expect_prod_line: str | None = None,
    max_incomplete_fraction: float = 0.05,
    min_frames: int = 1,
    edge_jump_m: float | None = None,
    edge_jump_rel: float = 0.05,
) -> LidarRecording:
    """Read an OSF file (metadata embedded) or a pcap with its ``meta`` JSON.

    Frames with missing columns are dropped (counted in ``incomplete_dropped``); more than
    ``max_incomplete_fraction`` of them, a truncated/corrupt file, metadata that does not match the
    packets (another sensor), a sensor other than expected, or fewer than ``min_frames`` frames
    raise :class:`LidarReadError` naming the file. ``edge_jump_m``: drop returns at horizontal
    range discontinuities larger than ``edge_jump_m + edge_jump_rel * range`` (mixed/veil pixels).
    """
    from ouster.sdk import core

    path = Path(path)
    if not path.is_file():
        raise LidarReadError(f"{path}: lidar recording not found")
    if path.stat().st_size == 0:
        raise LidarReadError(f"{path}: empty file (0 bytes)")
    is_pcap = path.suffix.lower() == ".pcap"
    if is_pcap:
        if meta is None:
            cand = path.with_suffix(".json")
            if not cand.is_file():
                raise LidarReadError(f"{path}: a pcap needs its sensor metadata JSON ({cand} not found)")
            meta = cand
        meta = Path(meta)
        if not meta.is_file():
            raise LidarReadError(f"{meta}: sensor metadata JSON not found (for {path})")
        _check_pcap_structure(path)
        _, issues = _parse_meta(meta)
    if not is_pcap:
        _check_osf_structure(path)
    src = _open(path, meta if is_pcap else None)
    try:
        info = src.sensor_info[0]
    except Exception:
        raise LidarReadError(f"{path}: recording has no sensor metadata (truncated or corrupt)") from None
    W = int(info.format.columns_per_frame)
    H = int(info.format.pixels_per_column)
    prod_line = str(info.prod_line)
    who = f"{meta} (for {path})" if is_pcap else str(path)
    if expect_columns is not None and W != expect_columns or expect_pixels is not None and H != expect_pixels:
        raise LidarReadError(
            f"{who}: metadata of another sensor/mode: {H}x{W}, expected {expect_pixels}x{expect_columns}"
        )
    if expect_prod_line is not None and expect_prod_line not in prod_line:
        raise LidarReadError(f"{who}: metadata of another sensor: {prod_line}, expected {expect_prod_line}")
    xyzlut = core.XYZLut(info)
    frames: list[LidarFrameData] = []
    dropped = 0
    total = 0
    try:
        for fs in src:
            fr = fs[0]
            if fr is None:
                continue
            total += 1
            status_ok = (np.asarray(fr.status) & 1).astype(bool)
            if not status_ok.all():
                dropped += 1
                continue
            rng = np.asarray(fr.field(core.ChanField.RANGE))
            valid = rng > 0
            if edge_jump_m is not None:
                valid &= ~depth_edges(rng, edge_jump_m, edge_jump_rel)
            xyz = xyzlut(fr)
            ts = np.asarray(fr.timestamp, dtype=np.float64) * 1e-9
            t_ref = 0.5 * (ts.min() + ts.max())
            pixel = np.flatnonzero(valid.ravel()).astype(np.int32)
            cols = pixel % W
            frames.append(
                LidarFrameData(
                    points=xyz[valid].astype(np.float32),
                    dt=(ts - t_ref).astype(np.float32)[cols],
                    ranges=rng[valid].astype(np.float32) * np.float32(1e-3),
                    t_ref=float(t_ref),
                    frame_id=int(fr.frame_id),
                    pixel=pixel,
                )
            )
            if max_frames is not None and len(frames) >= max_frames:
                break
    except LidarReadError:
        raise
    except Exception as e:
        raise LidarReadError(f"{path}: corrupt lidar recording after {total} frames ({e})") from None
    finally:
        try:
            src.close()
        except Exception:
            pass
    if total == 0 and is_pcap:
        # packets that do not match the JSON's initialization id / serial are silently skipped
        soft = _open(path, meta, soft_id_check=True)
        n_soft = sum(1 for fs in soft if fs[0] is not None)
        soft.close()
        if n_soft:
            raise LidarReadError(
                f"{meta}: metadata of another sensor (serial {info.sn}, init id {info.init_id}) "
                f"does not match the packets of {path}"
            )
        raise LidarReadError(f"{path}: no lidar frames decoded (empty, corrupt, or not an Ouster capture)")
    if total == 0:
        raise LidarReadError(f"{path}: no lidar frames (empty sweep, or truncated/corrupt OSF)")
    if dropped > max_incomplete_fraction * total and not (dropped == 1 and total > 20):
        raise LidarReadError(
            f"{path}: {dropped} of {total} frames are incomplete (truncated or corrupt recording, lost packets)"
        )
    if len(frames) < min_frames:
        raise LidarReadError(f"{path}: {len(frames)} complete frames, need at least {min_frames}")
    empty = [f.frame_id for f in frames if len(f) == 0]
    if len(empty) == len(frames):
        raise LidarReadError(f"{path}: every frame is empty (no valid returns)")
    if dropped:
        log.warning("%s: dropped %d incomplete frames of %d", path, dropped, total)
    ray_directions = np.asarray(xyzlut.direction, dtype=np.float64).reshape(H, W, 3)  # per range unit (mm)
    ray_directions = ray_directions / np.linalg.norm(ray_directions, axis=-1, keepdims=True)
    return LidarRecording(
        path=path,
        frames=[f for f in frames if len(f)],
        serial=str(info.sn),
        prod_line=prod_line,
        columns=W,
        pixels_per_column=H,
        incomplete_dropped=dropped,
        info={"init_id": int(info.init_id), "frames_total": total},
        ray_directions=ray_directions,
        ray_offsets=np.asarray(xyzlut.offset, dtype=np.float64).reshape(H, W, 3),
    )


def depth_edges(range_mm: np.ndarray, jump_m: float, rel: float = 0.05, grazing_ratio: float | None = 0.7) -> np.ndarray:
    """(H, W) mask of mixed pixels: returns whose range lies strictly between those of their two
    horizontal neighbours (same beam, adjacent columns of the staggered layout), more than
    ``jump_m + rel * range`` from each. Thin objects (both neighbours farther) are kept.

    grazing_ratio: also flags mixed returns on surfaces seen at grazing incidence, where the range
    changes by more than ``jump_m`` from column to column: there a true return sits about midway
    (the range steps to both neighbours are nearly equal, their ratio ~1), while a return mixed
    from two adjacent footprints sits near one neighbour; flagged when the smaller step is below
    ``grazing_ratio`` x the larger (both steps > ``jump_m``). The genuine returns next to a mixed one
    have lopsided steps too and go with it (on the twin's grazing walls that halves the returns more
    than 2 % too near). A step edge's own returns (one step below ``jump_m``) are kept."""
    r = range_mm.astype(np.float32) * np.float32(1e-3)
    valid = range_mm > 0
    thr = np.float32(jump_m) + np.float32(rel) * r
    rl, rr = np.roll(r, 1, axis=1), np.roll(r, -1, axis=1)
    vl, vr = np.roll(valid, 1, axis=1), np.roll(valid, -1, axis=1)
    between = valid & vl & vr & (((rl < r) & (r < rr)) | ((rr < r) & (r < rl)))
    dl, dr = np.abs(r - rl), np.abs(r - rr)
    mixed = between & (dl > thr) & (dr > thr)
    if grazing_ratio is not None:
        lo = np.minimum(dl, dr)
        mixed |= between & (lo > np.float32(jump_m)) & (lo < np.float32(grazing_ratio) * np.maximum(dl, dr))
    return mixed


def _parse_meta(meta: Path):
    from ouster.sdk import core

    try:
        text = meta.read_text()
        return core.parse_and_validate_metadata(text)
    except Exception as e:
        raise LidarReadError(f"{meta}: not valid Ouster sensor metadata ({e})") from None


def read_static_frame(path: Path, meta: Path | None = None, **kw) -> LidarFrameData:
    """The tripod frame: the first complete frame of a (static) recording."""
    rec = read_lidar(path, meta, max_frames=None, max_incomplete_fraction=1.0, **kw)
    if not rec.frames:
        raise LidarReadError(f"{path}: no complete frame in the static recording")
    return rec.frames[0]


