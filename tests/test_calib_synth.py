"""Synthetic inputs for the calibration tests (self-rendered ChArUco views, textures) + their own checks."""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from zedd_capture.calibration.charuco import BoardSpec
from zedd_capture.geometry import scale_intrinsics

BOARD = BoardSpec(squares_x=9, squares_y=6, square_m=0.1, marker_m=0.075, dictionary=cv2.aruco.DICT_5X5_100)


def look_at_board(board: BoardSpec, distance_m: float, tilt_deg=(0.0, 0.0, 0.0), offset=(0.0, 0.0)) -> np.ndarray:
    """T_camera_board: board centre on the optical axis at ``distance_m`` (+offset), rotated by xyz Euler tilt."""
    w, h = board.squares_x * board.square_m, board.squares_y * board.square_m
    R = Rotation.from_euler("xyz", tilt_deg, degrees=True).as_matrix()
    T = np.eye(4)
    T[:3, :3] = R
    centre = np.array([w / 2, h / 2, 0.0])
    T[:3, 3] = np.array([offset[0], offset[1], distance_m]) - R @ centre
    return T


def render_board(board: BoardSpec, K: np.ndarray, T_camera_board: np.ndarray, size: tuple[int, int],
                 blur_sigma: float = 0.0, noise: float = 0.0, seed: int = 0, ss: int = 3) -> np.ndarray:
    """8-bit grey image of the board (pinhole, no distortion), supersampled ``ss`` x, optional blur and noise."""
    ppm = 2000.0
    tw, th = int(round(board.squares_x * board.square_m * ppm)), int(round(board.squares_y * board.square_m * ppm))
    tex = board.cv_board().generateImage((tw, th), marginSize=0).astype(np.float32)
    w, h = size
    Kss = scale_intrinsics(K, (w, h), (w * ss, h * ss))
    S = np.array([[1 / ppm, 0, 0.5 / ppm], [0, 1 / ppm, 0.5 / ppm], [0, 0, 1]])
    P = np.column_stack([T_camera_board[:3, 0], T_camera_board[:3, 1], T_camera_board[:3, 3]])
    H = Kss @ P @ S
    big = cv2.warpPerspective(tex, H, (w * ss, h * ss), flags=cv2.INTER_LINEAR, borderValue=150.0)
    img = cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA)
    img = 30 + img * (200 / 255)
    if blur_sigma > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    if noise > 0:
        img = img + np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def textured_image(w: int, h: int, seed: int = 0) -> np.ndarray:
    """A float32 [0,1] texture with detail at several scales (for ECC tests)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w), np.float32)
    for s in (2, 5, 13, 31):
        layer = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), s)
        img += layer / (layer.std() + 1e-9)
    img = (img - img.min()) / (img.max() - img.min())
    return img


def test_render_board_detects_at_true_positions():
    from zedd_capture.calibration.charuco import detect

    K = np.array([[900.0, 0, 319.5], [0, 900.0, 239.5], [0, 0, 1]])
    T = look_at_board(BOARD, 1.6, (10, -15, 3))
    img = render_board(BOARD, K, T, (640, 480))
    det = detect(img, BOARD, "synthetic.png")
    proj = det.object_points @ T[:3, :3].T + T[:3, 3]
    uv = proj[:, :2] / proj[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]
    err = np.linalg.norm(uv - det.corners, axis=1)
    assert len(det) >= 30
    assert np.median(err) < 0.08, err
