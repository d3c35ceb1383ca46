"""Reading ZEDD samples for evaluation, with the published val / test protocols.

A ZEDD root holds ``metadata.txt`` (run -> hexcode, focus distance) and
``<split>/<scene>/{focus_stack,gt}``. Val protocol: images LANCZOS-resized to height 480 and
centre-cropped to width 640, K scaled and shifted to match, depth resized NEAREST. Test
protocol: native resolution (1216 x 1824 for the reference rig).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..layout import LayoutError, ZeddSample, load_depth_map, load_text_matrix, parse_image_name, read_metadata

DEFAULT_APERTURE = 2.8
DEFAULT_RUNS: tuple[int, ...] = (1, 3, 5, 7, 9)
VAL_HEIGHT, VAL_WIDTH = 480, 640
SPLITS = ("val", "test")


@dataclass
class FocusStack:
    """One scene ready for a depth-from-focus model.

    images: (N, H, W, 3) float32 RGB in [0, 1]; focus_distances_m: (N,) metres;
    K: (3, 3) pixels at this resolution, or None; depth: (H, W) float32 metres, or None when
    the sample has no ground truth (invalid pixels 0 or non-finite).
    """

    scene: str
    split: str
    images: np.ndarray
    focus_distances_m: np.ndarray
    K: np.ndarray | None
    depth: np.ndarray | None
    image_paths: list[Path]


def find_samples(data_root_or_scene: str | Path, split: str = "val") -> list[ZeddSample]:
    """Samples to evaluate, sorted by scene name.

    ``data_root_or_scene`` is a ZEDD root (has metadata.txt; its ``<split>/`` scenes are taken),
    a toolkit scene folder ``scenes/<scene>`` with an exported ``zedd/`` root, or one ZEDD scene
    folder ``<root>/<any split>/<scene>`` (its own folder is used; ``split`` then only picks the
    protocol in load_stack).
    """
    path = Path(data_root_or_scene)
    if not (path / "metadata.txt").is_file() and (path / "zedd" / "metadata.txt").is_file():
        path = path / "zedd"  # a toolkit scene folder scenes/<scene>/ holding its exported zedd/ root
    if (path / "metadata.txt").is_file():
        split_dir = path / split
        if not split_dir.is_dir():
            raise LayoutError(f"{path}: ZEDD root has no '{split}' folder")
        scenes = sorted(p.name for p in split_dir.iterdir() if (p / "focus_stack").is_dir())
        if not scenes:
            raise LayoutError(f"{split_dir}: no scene folders with focus_stack/")
        return [ZeddSample(path, split, s) for s in scenes]
    if (path / "focus_stack").is_dir():
        root = path.parent.parent
        if not (root / "metadata.txt").is_file():
            raise LayoutError(f"{path}: scene folder found, but {root / 'metadata.txt'} is missing")
        return [ZeddSample(root, path.parent.name, path.name)]
    raise LayoutError(f"{path}: neither a ZEDD root (metadata.txt) nor a scene folder (focus_stack/)")


def stack_image_paths(sample: ZeddSample, runs: Sequence[int], aperture: float) -> list[Path]:
    """Focus-stack image of each run at ``aperture`` (f-number), in the order of ``runs``."""
    by_key: dict[tuple[int, str], Path] = {}
    if not sample.focus_stack_dir.is_dir():
        raise LayoutError(f"{sample.focus_stack_dir}: focus_stack folder missing")
    for p in sample.focus_stack_dir.iterdir():
        try:
            name = parse_image_name(p.name)
        except LayoutError:
            continue
        by_key[(name.run, f"{name.f_number:.1f}")] = p
    paths = []
    for run in runs:
        key = (run, f"{aperture:.1f}")
        if key not in by_key:
            have = sorted({f"F{f}" for r, f in by_key if r == run}) or "no image"
            raise LayoutError(f"{sample.focus_stack_dir}: no image for run {run} at F{aperture:.1f} "
                              f"(run {run}: {have})")
        paths.append(by_key[key])
    return paths


def focus_distances(sample: ZeddSample, runs: Sequence[int]) -> np.ndarray:
    """Focus distance (metres) of each run, from the root's metadata.txt."""
    table = {row.run: row.focus_distance_m for row in read_metadata(sample.metadata_path)}
    missing = [r for r in runs if r not in table]
    if missing:
        raise LayoutError(f"{sample.metadata_path}: no focus distance for runs {missing}")
    return np.array([table[r] for r in runs], dtype=np.float32)


def val_geometry(height: int, width: int) -> tuple[int, int, int]:
    """(resized width, crop left, crop width) for the val protocol of an H x W image."""
    new_w = int(round(width * VAL_HEIGHT / height))
    crop_w = min(VAL_WIDTH, new_w)
    return new_w, (new_w - crop_w) // 2, crop_w


def val_intrinsics(K: np.ndarray, height: int, width: int) -> np.ndarray:
    """K of the val-protocol image: scaled by the resize, cx shifted by the crop."""
    new_w, left, _ = val_geometry(height, width)
    K = np.array(K, dtype=np.float64)
    K[0, :] *= new_w / width
    K[1, :] *= VAL_HEIGHT / height
    K[0, 2] -= left
    return K


def _val_image(img: Image.Image, resample: Image.Resampling) -> Image.Image:
    new_w, left, crop_w = val_geometry(img.height, img.width)
    return img.resize((new_w, VAL_HEIGHT), resample).crop((left, 0, left + crop_w, VAL_HEIGHT))


def _read_K(sample: ZeddSample) -> np.ndarray | None:
    if not sample.K_path.is_file():
        return None
    K = load_text_matrix(sample.K_path, "3x3 matrix")
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise LayoutError(f"{sample.K_path}: expected a finite 3x3 intrinsics matrix with fx, fy > 0, "
                          f"got shape {K.shape}")
    return K


def _read_depth(sample: ZeddSample) -> np.ndarray | None:
    if not sample.depth_path.is_file():
        return None
    return load_depth_map(sample.depth_path)


def read_rgb_image(path: Path) -> Image.Image:
    """An RGB image read fully (so truncated files fail here); a corrupt file raises LayoutError naming it."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except UnidentifiedImageError:
        raise LayoutError(f"{path}: not an image file (corrupt, or a format PIL cannot identify)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise LayoutError(f"{path}: cannot read image: {exc}") from None


def load_stack(sample: ZeddSample, split: str = "val", runs: Sequence[int] = DEFAULT_RUNS,
               aperture: float = DEFAULT_APERTURE) -> FocusStack:
    """Read one sample under the protocol of ``split`` ('val' resized/cropped, 'test' native)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if len(runs) < 2:
        raise ValueError(f"a focus stack needs at least 2 runs, got {list(runs)}")
    paths = stack_image_paths(sample, runs, aperture)
    fds = focus_distances(sample, runs)
    K, depth = _read_K(sample), _read_depth(sample)
    images: list[np.ndarray] = []
    size: tuple[int, int] | None = None  # native (H, W) of the stack
    for p in paths:
        img = read_rgb_image(p)
        if size is None:
            size = (img.height, img.width)
        elif (img.height, img.width) != size:
            raise LayoutError(f"{p}: size {img.width}x{img.height} differs from the stack's {size[1]}x{size[0]}")
        if split == "val":
            img = _val_image(img, Image.Resampling.LANCZOS)
        images.append(np.asarray(img, dtype=np.float32) / 255.0)
    assert size is not None
    height, width = size
    if depth is not None and depth.shape != (height, width):
        raise LayoutError(f"{sample.depth_path}: shape {depth.shape} differs from the images ({height}, {width})")
    if split == "val":
        if K is not None:
            K = val_intrinsics(K, height, width)
        if depth is not None:
            depth_img = Image.fromarray(np.ascontiguousarray(depth, dtype=np.float32))  # mode 'F'
            depth = np.asarray(_val_image(depth_img, Image.Resampling.NEAREST), dtype=np.float32)
    return FocusStack(sample.scene, split, np.stack(images), fds, K, depth, paths)
