"""ChArUco detection, camera calibration and board pose (OpenCV 5 aruco API).

Every error names the image it is about: too few corners detected, a blurred board (estimated
edge width in px), images of inconsistent sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np


class CalibrationError(ValueError):
    """Calibration input is unusable; the message names the image/file and the reason."""


DEFAULT_MIN_CORNERS = 8
DEFAULT_MAX_EDGE_WIDTH_PX = 4.5


@dataclass(frozen=True)
class BoardSpec:
    """A ChArUco board: squares (x, y), square and marker side (m), aruco dictionary id."""

    squares_x: int = 11
    squares_y: int = 8
    square_m: float = 0.09
    marker_m: float = 0.07
    dictionary: int = cv2.aruco.DICT_5X5_250

    def cv_board(self) -> cv2.aruco.CharucoBoard:
        d = cv2.aruco.getPredefinedDictionary(self.dictionary)
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, d)


def as_cv_board(board) -> cv2.aruco.CharucoBoard:
    """Accept a cv2 CharucoBoard or anything with ``.cv_board()`` (BoardSpec, the twin's CharucoTarget)."""
    if isinstance(board, cv2.aruco.CharucoBoard):
        return board
    if hasattr(board, "cv_board"):
        return board.cv_board()
    raise TypeError(f"not a ChArUco board: {board!r}")


def to_gray(image: np.ndarray) -> np.ndarray:
    """8-bit grey from 8-bit or float [0,1] grey/BGR/RGB images."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = np.clip(np.asarray(img, np.float32) * (255.0 if img.max() <= 1.5 else 1.0), 0, 255).astype(np.uint8)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img


def make_detector(board) -> cv2.aruco.CharucoDetector:
    """CharucoDetector with marker parameters that hold up on small (~20 px squares) and tilted boards."""
    p = cv2.aruco.DetectorParameters()
    p.polygonalApproxAccuracyRate = 0.05
    p.errorCorrectionRate = 1.0
    p.adaptiveThreshWinSizeMin = 3
    p.adaptiveThreshWinSizeMax = 53
    p.adaptiveThreshWinSizeStep = 4
    return cv2.aruco.CharucoDetector(as_cv_board(board), cv2.aruco.CharucoParameters(), p)


def load_image(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise CalibrationError(f"{path}: cannot read image")
    return img


@dataclass
class Detection:
    """ChArUco corners of one image: pixel corners (N,2), ids (N,), board-frame object points (N,3)."""

    name: str
    image_size: tuple[int, int]  # (w, h)
    corners: np.ndarray
    ids: np.ndarray
    object_points: np.ndarray
    edge_width_px: float = float("nan")
    markers: int = 0

    def __len__(self) -> int:
        return len(self.ids)


def edge_width_px(gray: np.ndarray, points: np.ndarray, half: int = 7) -> float:
    """Median edge width (px) around chessboard corners: local contrast / peak gradient (~1.2 px when sharp).

    For a step edge blurred by a Gaussian of sigma s this is sqrt(2 pi) s, so it grows
    linearly with defocus; it is insensitive to contrast and exposure.
    """
    g = gray.astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    mag = np.hypot(gx, gy)
    h, w = g.shape
    widths = []
    for x, y in np.asarray(points, float).reshape(-1, 2):
        xi, yi = int(round(x)), int(round(y))
        if xi - half < 0 or yi - half < 0 or xi + half >= w or yi + half >= h:
            continue
        patch = g[yi - half : yi + half + 1, xi - half : xi + half + 1]
        gm = mag[yi - half : yi + half + 1, xi - half : xi + half + 1]
        lo, hi = np.percentile(patch, [5, 95])
        peak = np.percentile(gm, 98)
        if hi - lo > 10 and peak > 0:
            widths.append((hi - lo) / peak)
    return float(np.median(widths)) if widths else float("nan")


def detect(
    image: np.ndarray,
    board,
    name: str = "<image>",
    min_corners: int = DEFAULT_MIN_CORNERS,
    max_edge_width_px: float | None = DEFAULT_MAX_EDGE_WIDTH_PX,
) -> Detection:
    """Detect ChArUco corners; raises CalibrationError naming ``name`` when too few or the board is blurred."""
    cvb = as_cv_board(board)
    gray = to_gray(image)
    h, w = gray.shape
    cc, ci, mc, mi = make_detector(cvb).detectBoard(gray)
    n = 0 if ci is None else len(ci)
    n_markers = 0 if mi is None else len(mi)
    if n < min_corners:
        blur = ""
        if mc is not None and len(mc):
            ew = edge_width_px(gray, np.concatenate([m.reshape(-1, 2) for m in mc]))
            if np.isfinite(ew) and max_edge_width_px and ew > max_edge_width_px:
                blur = f"; the board looks blurred (edge width {ew:.1f} px)"
        raise CalibrationError(
            f"{name}: too few ChArUco corners detected ({n} corners, {n_markers} markers; need >= {min_corners}){blur}"
        )
    corners = cc.reshape(-1, 2).astype(np.float64)
    ids = ci.reshape(-1).astype(int)
    obj, _img = cvb.matchImagePoints(cc, ci)
    ew = edge_width_px(gray, corners)
    if max_edge_width_px is not None and np.isfinite(ew) and ew > max_edge_width_px:
        raise CalibrationError(
            f"{name}: the board is blurred (edge width {ew:.1f} px > {max_edge_width_px:.1f} px); refocus or stop down"
        )
    return Detection(name, (w, h), corners, ids, obj.reshape(-1, 3).astype(np.float64), ew, n_markers)


def check_sizes(detections: Sequence[Detection]) -> tuple[int, int]:
    """The common image size (w, h); raises naming the first image whose size differs."""
    if not detections:
        raise CalibrationError("no images to calibrate from")
    size = detections[0].image_size
    for d in detections[1:]:
        if d.image_size != size:
            raise CalibrationError(
                f"{d.name}: image size {d.image_size[0]}x{d.image_size[1]} differs from "
                f"{detections[0].name} ({size[0]}x{size[1]}); all calibration images must have one size"
            )
    return size


@dataclass
class CameraCalibration:
    """Result of :func:`calibrate`: K (3x3 px), dist (OpenCV order), per-view poses (T_camera_board) and errors."""

    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]
    rms_px: float
    poses: list[np.ndarray]
    per_view_rms_px: np.ndarray
    std_intrinsics: np.ndarray = field(default_factory=lambda: np.zeros(0))
    names: list[str] = field(default_factory=list)


def rt_to_T(rvec, tvec) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, float).reshape(3, 1))[0]
    T[:3, 3] = np.asarray(tvec, float).reshape(3)
    return T


def calibrate(
    detections: Sequence[Detection],
    K_init: np.ndarray | None = None,
    dist_init: np.ndarray | None = None,
    flags: int = 0,
    min_views: int = 3,
) -> CameraCalibration:
    """calibrateCamera over ChArUco detections (same image size required). Returns K, dist, poses, errors."""
    size = check_sizes(detections)
    if len(detections) < min_views:
        raise CalibrationError(f"need >= {min_views} board views to calibrate, got {len(detections)}")
    obj = [d.object_points.astype(np.float32).reshape(-1, 1, 3) for d in detections]
    img = [d.corners.astype(np.float32).reshape(-1, 1, 2) for d in detections]
    K0 = None if K_init is None else np.array(K_init, float)
    if K0 is not None:
        flags |= cv2.CALIB_USE_INTRINSIC_GUESS
    d0 = np.zeros(5) if dist_init is None else np.array(dist_init, float).reshape(-1)
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    res = cv2.calibrateCameraExtended(obj, img, size, K0, d0, flags=flags, criteria=crit)
    rms, K, dist, rvecs, tvecs, std_i, _std_e, per_view = res
    if not np.isfinite(rms):
        raise CalibrationError("calibrateCamera failed (non-finite error)")
    return CameraCalibration(
        np.asarray(K, float),
        np.asarray(dist, float).reshape(-1),
        size,
        float(rms),
        [rt_to_T(r, t) for r, t in zip(rvecs, tvecs)],
        np.asarray(per_view, float).reshape(-1),
        np.asarray(std_i, float).reshape(-1),
        [d.name for d in detections],
    )


@dataclass
class BoardPose:
    """Board pose in the camera: T_camera_board (4x4, m), RMS reprojection (px)."""

    T_camera_board: np.ndarray
    rms_px: float
    name: str = ""


def board_pose(det: Detection, K: np.ndarray, dist: np.ndarray | None = None) -> BoardPose:
    """solvePnP (IPPE for the planar board, then Levenberg-Marquardt refinement)."""
    if len(det) < 4:
        raise CalibrationError(f"{det.name}: need >= 4 corners for a board pose, got {len(det)}")
    obj = det.object_points.astype(np.float64)
    img = det.corners.astype(np.float64)
    dist = np.zeros(5) if dist is None else np.asarray(dist, float)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        raise CalibrationError(f"{det.name}: solvePnP failed")
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec,
                                      (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12))
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
    return BoardPose(rt_to_T(rvec, tvec), rms, det.name)


def board_corner_points(board) -> np.ndarray:
    """All inner chessboard corners of the board in the board frame (N,3), metres."""
    return np.asarray(as_cv_board(board).getChessboardCorners(), float).reshape(-1, 3)


def mean_corner_depth(board, T_camera_board: np.ndarray) -> float:
    """Mean camera-frame z (m) of all the board's inner corners (the paper's focus distance of I0)."""
    pts = board_corner_points(board)
    cam = pts @ T_camera_board[:3, :3].T + T_camera_board[:3, 3]
    return float(np.mean(cam[:, 2]))
