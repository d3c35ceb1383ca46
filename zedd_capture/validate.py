"""`zedd validate`: check a ZEDD root or a test-server submission zip; report every problem found."""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from .evaluation.dataset import read_rgb_image
from .layout import (
    IMAGE_NAME_RE,
    SUBMISSION_COUNT,
    SUBMISSION_SHAPE,
    LayoutError,
    find_zedd_samples,
    load_npy,
    load_text_matrix,
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
        # ZEDD runs go near to far (run_1 nearest; hexcodes fall as the distance grows)
        backwards = [f"run_{a.run} {a.focus_distance_m:.4f} m -> run_{b.run} {b.focus_distance_m:.4f} m"
                     for a, b in zip(rows, rows[1:]) if not b.focus_distance_m > a.focus_distance_m]
        if backwards:
            problems.append(f"{root / 'metadata.txt'}: focus distances must increase with the run number "
                            f"(runs go near to far): {', '.join(backwards)}")
    except LayoutError as e:
        problems.append(str(e))

    samples = find_zedd_samples(root)
    if not samples:
        problems.append(f"{root}: no <split>/<scene>/ folders with focus_stack/ or gt/")
    for sample in samples:
        stack_problems, image_size = _check_focus_stack(sample.focus_stack_dir, hex_of_run, runs, apertures)
        problems += stack_problems
        problems += _check_gt(sample.depth_path, sample.K_path, image_size)
    return problems


def _check_focus_stack(stack_dir: Path, hex_of_run: dict[int, int], runs: int,
                       apertures: tuple[float, ...]) -> tuple[list[str], tuple[int, int] | None]:
    """Problems of one focus_stack/ folder, and the (height, width) its images share (None if unknown)."""
    if not stack_dir.is_dir():
        return [f"{stack_dir}: focus_stack folder missing"], None
    problems = []
    found: dict[tuple[int, float], Path] = {}
    sizes: dict[Path, tuple[int, int]] = {}
    allowed = {f"{n:.1f}" for n in apertures}
    for f in sorted(stack_dir.iterdir()):
        try:
            name = parse_image_name(str(f))
        except LayoutError as e:
            problems.append(str(e))
            continue
        if (name.run, name.f_number) in found:
            problems.append(f"{f}: duplicate image for run {name.run} at F{name.f_number:.1f} ({found[(name.run, name.f_number)].name})")
        found[(name.run, name.f_number)] = f
        if not 1 <= name.run <= runs:
            listed = "" if name.run in hex_of_run else " and metadata.txt does not list it"
            problems.append(f"{f}: run {name.run} is not part of a ZEDD sample (runs 1..{runs}){listed}")
        elif name.run in hex_of_run and hex_of_run[name.run] != name.hexcode:
            problems.append(
                f"{f}: hexcode {name.hexcode:04X} does not match metadata.txt ({hex_of_run[name.run]:04X} for run_{name.run})"
            )
        if f"{name.f_number:.1f}" not in allowed:
            problems.append(f"{f}: aperture F{name.f_number:.1f} is not one of the ZEDD apertures "
                            f"({', '.join(f'F{n:.1f}' for n in apertures)})")
        with open(f, "rb") as fh:
            head = fh.read(4)  # the decode below reads the file itself
        if len(head) < 4 or head[:2] != b"\xff\xd8":
            problems.append(f"{f}: not a JPEG file")
            continue
        try:
            sizes[f] = read_rgb_image(f).size[::-1]  # (height, width); decoded in full as eval-model reads it
        except LayoutError as e:
            problems.append(str(e))
    for run in range(1, runs + 1):
        for n in apertures:
            if (run, float(n)) not in found:
                problems.append(f"{stack_dir}: missing image for run {run} at F{n:.1f}")
    common = Counter(sizes.values()).most_common(1)[0][0] if sizes else None
    for f, size in sizes.items():
        if size != common:
            problems.append(f"{f}: size {size[1]}x{size[0]} differs from the other focus-stack images "
                            f"({common[1]}x{common[0]})")
    return problems, common


def _check_gt(depth_path: Path, K_path: Path, image_size: tuple[int, int] | None = None) -> list[str]:
    """Problems of gt/depth.npy (2-D float32 metres, some valid pixel, none negative, the images' size) and gt/K.txt."""
    problems = []
    depth = None
    if not depth_path.is_file():
        problems.append(f"{depth_path}: missing")
    else:
        try:  # eval-model's reader (layout.load_depth_map) with its messages, and float32 as the format asks
            depth = load_npy(depth_path, "depth map", ndim=2)
        except LayoutError as e:
            problems.append(str(e))
        else:
            if depth.dtype != np.float32:
                problems.append(f"{depth_path}: expected float32 metres, got {depth.dtype}")
            problems += _check_depth_values(depth_path, depth, image_size)
    if not K_path.is_file():
        problems.append(f"{K_path}: missing")
        return problems
    try:
        K = load_text_matrix(K_path, "3x3 matrix")
    except LayoutError as e:
        problems.append(str(e))
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


def _check_depth_values(depth_path: Path, depth: np.ndarray, image_size: tuple[int, int] | None) -> list[str]:
    """A 2-D real-valued depth map (layout.load_npy's): no negative metres, at least one valid pixel (finite and
    > 0), the focus stack's size."""
    problems = []
    finite = np.isfinite(depth)
    negative = int(np.count_nonzero(finite & (depth < 0)))
    if negative:
        problems.append(f"{depth_path}: {negative} negative depth values (metres; invalid pixels are 0 or non-finite)")
    if not np.any(finite & (depth > 0)):
        problems.append(f"{depth_path}: no valid pixel (every value is 0, negative or non-finite)")
    if image_size is not None and depth.shape != image_size:
        problems.append(f"{depth_path}: shape {depth.shape} differs from the focus-stack images {image_size}")
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
        counts = Counter(names)
        for name, count in counts.items():
            if count > 1:
                problems.append(f"duplicate entry {name} in {zip_path} ({count} entries of that name)")
        for name in counts:
            if name not in expected:
                problems.append(f"{zip_path}: unexpected entry {name!r} (only zedd_output_0001.npy..zedd_output_{SUBMISSION_COUNT:04d}.npy at the root)")
        for name in sorted(expected - set(names)):
            problems.append(f"{zip_path}: missing {name}")
        # every copy of a duplicated name is checked (readers differ in which one they take)
        for info in sorted((i for i in zf.infolist() if not i.is_dir() and i.filename in expected), key=lambda i: i.filename):
            name = info.filename
            try:
                arr = np.load(io.BytesIO(zf.read(info)), allow_pickle=False)
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
