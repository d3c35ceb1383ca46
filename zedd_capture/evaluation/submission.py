"""The official ZEDD test-server submission: one zip of 50 ``zedd_output_NNNN.npy`` files."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence, Union

import numpy as np

from ..layout import SUBMISSION_COUNT, SUBMISSION_SHAPE, atomic_open

Prediction = Union[np.ndarray, str, Path]


def submission_name(index: int) -> str:
    """1-based index -> ``zedd_output_0001.npy``."""
    return f"zedd_output_{index:04d}.npy"


def check_prediction(depth: np.ndarray, what: str) -> np.ndarray:
    """A finite float32 (1216, 1824) array, or ValueError naming ``what``."""
    depth = np.asarray(depth)
    if depth.shape != SUBMISSION_SHAPE:
        raise ValueError(f"{what}: shape {depth.shape}, the submission needs {SUBMISSION_SHAPE}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"{what}: dtype {depth.dtype}, the submission needs float depths")
    if not np.isfinite(depth).all():
        raise ValueError(f"{what}: {int((~np.isfinite(depth)).sum())} NaN/inf values; all depths must be finite")
    return depth.astype(np.float32, copy=False)


def write_submission(predictions: Sequence[Prediction] | Mapping[str, Prediction], out_path: str | Path) -> Path:
    """Write the zip atomically; returns its path.

    predictions: 50 depth maps (metres) as arrays or .npy paths, in sorted scene order, or a
    mapping scene -> prediction (sorted by scene name here). File i (1-based) is
    ``zedd_output_{i:04d}.npy``. Everything is checked before the zip replaces ``out_path``.
    """
    if isinstance(predictions, Mapping):
        items = [(str(k), predictions[k]) for k in sorted(predictions)]
    else:
        items = [(f"prediction {i}", p) for i, p in enumerate(predictions, 1)]
    if len(items) != SUBMISSION_COUNT:
        raise ValueError(f"a submission holds {SUBMISSION_COUNT} predictions (one per test scene), got {len(items)}")
    out_path = Path(out_path)
    # stored, not deflated: float depth maps barely compress and deflate costs seconds per file
    with atomic_open(out_path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for i, (what, pred) in enumerate(items, 1):
            if isinstance(pred, (str, Path)):
                what, pred = str(pred), np.load(pred, allow_pickle=False)
            depth = check_prediction(pred, what)
            with zf.open(submission_name(i), "w") as member:
                np.save(member, depth)
    return out_path


def iter_submission(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Check a submission zip and yield (file name, array) in file order, one array at a time.

    Raises ValueError naming the zip and the offending file when the names, count, shape,
    dtype or values are wrong.
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        expected = [submission_name(i) for i in range(1, SUBMISSION_COUNT + 1)]
        if sorted(names) != expected:
            extra = sorted(set(names) - set(expected))[:5]
            missing = sorted(set(expected) - set(names))[:5]
            raise ValueError(f"{path}: expected files {expected[0]} .. {expected[-1]} at the zip root; "
                             f"unexpected {extra}, missing {missing}")
        for name in expected:
            try:
                with zf.open(name) as member:
                    arr = np.load(io.BytesIO(member.read()), allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"{path}:{name}: not a .npy array: {exc}") from None
            yield name, check_prediction(arr, f"{path}:{name}")


def validate_submission(path: str | Path) -> int:
    """Check a whole submission zip (see iter_submission); returns the number of files (50)."""
    return sum(1 for _ in iter_submission(path))
