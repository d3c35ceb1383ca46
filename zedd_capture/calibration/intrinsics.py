"""Canonical intrinsics (focus at the canonical distance) from ChArUco views; ``intrinsics.yaml`` I/O.

``intrinsics.yaml`` (same as the twin's truth): ``K`` (3x3 nested list, px), ``dist`` (OpenCV
order k1 k2 p1 p2 k3), ``width``, ``height``; extra keys: ``rms_px``, ``std`` (1-sigma of fx fy cx
cy k1 k2 p1 p2 k3), ``views``, and the provenance header as ``#`` comment lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from ..layout import atomic_write_text
from .charuco import CalibrationError, CameraCalibration, Detection, calibrate, detect
from .focus_lut import format_comment_header


@dataclass
class Intrinsics:
    K: np.ndarray
    dist: np.ndarray
    width: int
    height: int
    rms_px: float = float("nan")
    std: list[float] = field(default_factory=list)
    views: int = 0
    provenance: dict = field(default_factory=dict)


def calibrate_intrinsics(
    detections: Sequence[Detection],
    K_init: np.ndarray | None = None,
    fix_k3: bool = True,
    zero_tangential: bool = True,
    fix_aspect: bool = False,
    radial: int = 2,
) -> tuple[Intrinsics, CameraCalibration]:
    """Intrinsics + distortion from ChArUco detections of one focus setting (>= 3 views, one image size).

    ``radial``: number of radial distortion terms solved (0-3); tangential terms are zero unless
    ``zero_tangential`` is False; ``fix_aspect`` keeps fx/fy of ``K_init`` (square pixels).
    """
    import cv2

    flags = 0
    if fix_k3 or radial < 3:
        flags |= cv2.CALIB_FIX_K3
    if radial < 2:
        flags |= cv2.CALIB_FIX_K2
    if radial < 1:
        flags |= cv2.CALIB_FIX_K1
    if zero_tangential:
        flags |= cv2.CALIB_ZERO_TANGENT_DIST
    if fix_aspect:  # square pixels: fx = fy (the ratio of K_init is kept)
        flags |= cv2.CALIB_FIX_ASPECT_RATIO
        if K_init is None:
            raise CalibrationError("fix_aspect needs K_init (its fx/fy ratio is kept)")
    cal = calibrate(detections, K_init=K_init, flags=flags)
    w, h = cal.image_size
    intr = Intrinsics(cal.K, cal.dist, w, h, cal.rms_px, [float(s) for s in cal.std_intrinsics[:9]], len(detections))
    return intr, cal


def calibrate_intrinsics_from_images(images: Sequence[np.ndarray], board, names: Sequence[str], **kw) -> Intrinsics:
    """Detect the board in every image (errors name the image) and calibrate."""
    dets = [detect(img, board, name) for img, name in zip(images, names)]
    return calibrate_intrinsics(dets, **kw)[0]


def format_intrinsics(intr: Intrinsics) -> str:
    data = {
        "K": [[float(v) for v in row] for row in np.asarray(intr.K, float)],
        "dist": [float(v) for v in np.asarray(intr.dist, float).reshape(-1)],
        "width": int(intr.width),
        "height": int(intr.height),
        "rms_px": float(intr.rms_px),
        "std": [float(v) for v in intr.std],
        "views": int(intr.views),
    }
    return (
        "# zedd-toolkit canonical intrinsics (OpenCV pinhole + k1 k2 p1 p2 k3)\n"
        + format_comment_header(intr.provenance)
        + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)
    )


def write_intrinsics(path: Path, intr: Intrinsics) -> None:
    atomic_write_text(Path(path), format_intrinsics(intr))


def read_intrinsics(path: Path) -> Intrinsics:
    """Read intrinsics.yaml (ours or the twin's truth); errors name the file and the field."""
    from ..layout import read_text_file

    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: intrinsics not found (run `zedd calibrate-intrinsics`)")
    try:
        data = yaml.safe_load(read_text_file(path, "intrinsics YAML", CalibrationError))
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise CalibrationError(f"{path}: not valid YAML{at}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: expected a mapping with K, dist, width, height")
    for key in ("K", "width", "height"):
        if key not in data:
            raise CalibrationError(f"{path}: missing field {key!r}")
    try:
        K = np.asarray(data["K"], float)
    except (TypeError, ValueError):
        K = np.full(1, np.nan)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise CalibrationError(f"{path}: K: expected a finite 3x3 matrix with fx, fy > 0")
    try:
        dist = np.asarray(data.get("dist") or [0.0] * 5, float).reshape(-1)
    except (TypeError, ValueError):
        dist = np.full(1, np.nan)
    if not np.all(np.isfinite(dist)) or dist.size not in (4, 5, 8, 12, 14):
        raise CalibrationError(f"{path}: dist: expected 4, 5, 8, 12 or 14 finite OpenCV distortion coefficients")
    size = {}
    for key in ("width", "height"):
        v = data[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v <= 0:
            raise CalibrationError(f"{path}: {key}: expected a positive whole number of pixels, got {v!r}")
        size[key] = int(v)
    try:
        rms = float(data.get("rms_px", float("nan")))
        std = [float(v) for v in (data.get("std") or [])]
        views = int(data.get("views", 0) or 0)
    except (TypeError, ValueError) as e:
        raise CalibrationError(f"{path}: rms_px / std / views: {e}") from None
    return Intrinsics(K, dist, size["width"], size["height"], rms, std, views)


def scaled(intr: Intrinsics, width: int, height: int) -> np.ndarray:
    """K of the canonical image resized to ``width`` x ``height`` (pixel-centre convention)."""
    from ..geometry import scale_intrinsics

    return scale_intrinsics(intr.K, (intr.width, intr.height), (width, height))
