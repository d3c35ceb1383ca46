"""`zedd validate`: check a ZEDD root or a test-server submission zip; report every problem found."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import numpy as np

from .layout import (
    IMAGE_NAME_RE,
    SUBMISSION_COUNT,
    SUBMISSION_SHAPE,
    LayoutError,
    find_zedd_samples,
    parse_image_name,
    read_metadata,
)

SUBMISSION_NAME_RE = re.compile(r"^zedd_output_(\d{4})\.npy$")


def validate(path: Path, runs: int = 9, apertures: tuple[float, ...] = (1.4, 2.0, 2.8, 4.0, 5.6, 16.0)) -> list[str]:
    """Problems of a ZEDD root (folder) or a submission (.zip); an empty list means valid."""
    path = Path(path)
    if not path.exists():
        return [f"{path}: does not exist"]
    if path.is_file():
        if path.suffix != ".zip":
            return [f"{path}: expected a ZEDD root folder or a submission .zip"]
        return validate_submission(path)
    return validate_zedd_root(path, runs, apertures)


def validate_zedd_root(root: Path, runs: int = 9, apertures: tuple[float, ...] = (1.4, 2.0, 2.8, 4.0, 5.6, 16.0)) -> list[str]:
    """Check metadata.txt, every scene's focus stack (runs x apertures), depth.npy and K.txt."""
    root = Path(root)
    problems: list[str] = []
    hex_of_run: dict[int, int] = {}
    try:
        rows = read_metadata(root / "metadata.txt")
        hex_of_run = {r.run: r.hexcode for r in rows}
        if sorted(hex_of_run) != list(range(1, runs + 1)):
            problems.append(f"{root / 'metadata.txt'}: expected runs run_1..run_{runs}, found {sorted(hex_of_run)}")
    except LayoutError as e:
        problems.append(str(e))

    samples = find_zedd_samples(root)
    if not samples:
        problems.append(f"{root}: no <split>/<scene>/ folders with focus_stack/ or gt/")
    for sample in samples:
        problems += _check_focus_stack(sample.focus_stack_dir, hex_of_run, runs, apertures)
        problems += _check_gt(sample.depth_path, sample.K_path)
    return problems


def _check_focus_stack(stack_dir: Path, hex_of_run: dict[int, int], runs: int, apertures: tuple[float, ...]) -> list[str]:
    if not stack_dir.is_dir():
        return [f"{stack_dir}: focus_stack folder missing"]
    problems = []
    found: dict[tuple[int, float], Path] = {}
    for f in sorted(stack_dir.iterdir()):
        try:
            name = parse_image_name(str(f))
        except LayoutError as e:
            problems.append(str(e))
            continue
        if (name.run, name.f_number) in found:
            problems.append(f"{f}: duplicate image for run {name.run} at F{name.f_number:.1f} ({found[(name.run, name.f_number)].name})")
        found[(name.run, name.f_number)] = f
        if name.run in hex_of_run and hex_of_run[name.run] != name.hexcode:
            problems.append(
                f"{f}: hexcode {name.hexcode:04X} does not match metadata.txt ({hex_of_run[name.run]:04X} for run_{name.run})"
            )
        if f.stat().st_size < 4 or f.read_bytes()[:2] != b"\xff\xd8":
            problems.append(f"{f}: not a JPEG file")
    for run in range(1, runs + 1):
        for n in apertures:
            if (run, float(n)) not in found:
                problems.append(f"{stack_dir}: missing image for run {run} at F{n:.1f}")
    return problems


def _check_gt(depth_path: Path, K_path: Path) -> list[str]:
    problems = []
    depth = None
    if not depth_path.is_file():
        problems.append(f"{depth_path}: missing")
    else:
        try:
            depth = np.load(depth_path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - any unreadable file is one reported problem
            problems.append(f"{depth_path}: not a readable .npy file ({e})")
        else:
            if depth.ndim != 2:
                problems.append(f"{depth_path}: expected a 2-D depth map, got shape {depth.shape}")
                depth = None
            elif depth.dtype != np.float32:
                problems.append(f"{depth_path}: expected float32 metres, got {depth.dtype}")
    if not K_path.is_file():
        problems.append(f"{K_path}: missing")
        return problems
    try:
        K = np.loadtxt(K_path, ndmin=2)
    except ValueError as e:
        problems.append(f"{K_path}: not a numeric 3x3 matrix ({e})")
        return problems
    if K.shape != (3, 3):
        problems.append(f"{K_path}: expected a 3x3 matrix, got shape {K.shape}")
        return problems
    if not (np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])):
        problems.append(f"{K_path}: not an intrinsics matrix (need fx, fy > 0 and last row 0 0 1)")
    elif depth is not None:
        h, w = depth.shape
        if not (0 <= K[0, 2] < w and 0 <= K[1, 2] < h):
            problems.append(
                f"{K_path}: principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) is outside the {w}x{h} depth map {depth_path.name}"
            )
    return problems


def validate_submission(zip_path: Path) -> list[str]:
    """Exactly zedd_output_0001.npy..0050.npy at the zip root, each finite float 2-D (1216, 1824), nothing else."""
    problems: list[str] = []
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as e:
        return [f"{zip_path}: not a zip file ({e})"]
    with zf:
        names = [i.filename for i in zf.infolist() if not i.is_dir()]
        expected = {f"zedd_output_{i:04d}.npy" for i in range(1, SUBMISSION_COUNT + 1)}
        for name in names:
            if name not in expected:
                problems.append(f"{zip_path}: unexpected entry {name!r} (only zedd_output_0001.npy..zedd_output_{SUBMISSION_COUNT:04d}.npy at the root)")
        for name in sorted(expected - set(names)):
            problems.append(f"{zip_path}: missing {name}")
        for name in sorted(set(names) & expected):
            try:
                arr = np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
            except Exception as e:  # noqa: BLE001
                problems.append(f"{zip_path}:{name}: not a readable .npy array ({e})")
                continue
            if not np.issubdtype(arr.dtype, np.floating):
                problems.append(f"{zip_path}:{name}: expected a float array, got {arr.dtype}")
            elif arr.shape != SUBMISSION_SHAPE:
                problems.append(f"{zip_path}:{name}: expected shape {SUBMISSION_SHAPE}, got {arr.shape}")
            elif not np.all(np.isfinite(arr)):
                problems.append(f"{zip_path}:{name}: contains {int((~np.isfinite(arr)).sum())} non-finite values")
    return problems


__all__ = ["validate", "validate_zedd_root", "validate_submission", "IMAGE_NAME_RE", "SUBMISSION_NAME_RE"]
