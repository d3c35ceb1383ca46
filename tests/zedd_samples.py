"""Builders of small valid ZEDD roots and submission zips for validator/reader tests."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np

from zedd_capture.layout import MetadataRow, ZeddSample, atomic_save_npy, write_metadata
from zedd_capture.rig import load_rig

SIM_RIG = load_rig("sim")
HEXCODES = [r.hexcode for r in SIM_RIG.capture.runs]
APERTURES = SIM_RIG.capture.apertures
DISTANCES = [0.82, 1.05, 1.45, 2.1, 3.08, 4.0, 5.3, 6.4, 8.1]


def make_zedd_root(root: Path, scene: str = "kitchen01", split: str = "val", size=(64, 48)) -> ZeddSample:
    """A complete, valid one-scene ZEDD root with tiny images (w, h = size)."""
    w, h = size
    write_metadata(root / "metadata.txt", [MetadataRow(k + 1, HEXCODES[k], DISTANCES[k]) for k in range(9)])
    sample = ZeddSample(root, split, scene)
    rng = np.random.default_rng(0)
    jpeg = cv2.imencode(".jpg", rng.integers(0, 255, (h, w, 3), dtype=np.uint8))[1].tobytes()
    sample.focus_stack_dir.mkdir(parents=True)
    for k in range(9):
        for n in APERTURES:
            sample.image_path(k + 1, HEXCODES[k], n).write_bytes(jpeg)
    depth = rng.uniform(0.5, 10, (h, w)).astype(np.float32)
    atomic_save_npy(sample.depth_path, depth)
    np.savetxt(sample.K_path, np.array([[50.0, 0, w / 2], [0, 50.0, h / 2], [0, 0, 1]]))
    return sample


def submission_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            b = io.BytesIO()
            np.save(b, arr)
            zf.writestr(name, b.getvalue())
    return buf.getvalue()


def valid_submission_arrays() -> dict[str, np.ndarray]:
    a = np.full((1216, 1824), 2.5, dtype=np.float32)
    return {f"zedd_output_{i:04d}.npy": a for i in range(1, 51)}
