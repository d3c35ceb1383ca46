"""ChArUco calibration target (OpenCV 5 ``cv2.aruco.CharucoBoard``) and its printed texture.

Board frame: origin at the board's top-left outer corner, x right, y down (along the printed image
rows), z = 0 on the printed plane (OpenCV's object-point convention); the board's normal facing the
camera is -z. Default size (7 x 5 squares of 0.15 m, 1.05 m x 0.75 m) keeps corners detectable
over the 0.8-8 m focus range at the reference resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np


@dataclass(frozen=True)
class CharucoTarget:
    squares_x: int = 7
    squares_y: int = 5
    square_m: float = 0.15
    marker_m: float = 0.11
    dictionary: str = "DICT_4X4_50"
    margin_m: float = 0.02  # white border printed around the squares

    def __post_init__(self):
        if not 0 < self.marker_m < self.square_m:
            raise ValueError(f"CharucoTarget: marker_m {self.marker_m} must be in (0, square_m={self.square_m})")
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"CharucoTarget: unknown ArUco dictionary {self.dictionary!r}")

    @property
    def width_m(self) -> float:
        return self.squares_x * self.square_m

    @property
    def height_m(self) -> float:
        return self.squares_y * self.square_m

    def cv_board(self) -> cv2.aruco.CharucoBoard:
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.squares_x, self.squares_y), self.square_m, self.marker_m, d)

    def corner_points(self) -> np.ndarray:
        """(M, 3) chessboard (ChArUco) corners in the board frame (m), in OpenCV's id order."""
        return np.asarray(self.cv_board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)

    def texture(self, px_per_m: float = 2000.0) -> np.ndarray:
        """Printed board (squares + white margin) as uint8 greyscale; pixel (0, 0) covers the margin corner.

        Pixel (u, v) centre lies at board coords ((u + 0.5) / px_per_m - margin_m, (v + 0.5) / px_per_m - margin_m).
        """
        return _texture(self, float(px_per_m))


@lru_cache(maxsize=8)
def _texture(target: CharucoTarget, px_per_m: float) -> np.ndarray:
    w = int(round(target.width_m * px_per_m))
    h = int(round(target.height_m * px_per_m))
    img = target.cv_board().generateImage((w, h), marginSize=0, borderBits=1)
    m = int(round(target.margin_m * px_per_m))
    return cv2.copyMakeBorder(img, m, m, m, m, cv2.BORDER_CONSTANT, value=255)
