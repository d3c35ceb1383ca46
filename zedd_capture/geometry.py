"""Small shared geometry helpers: intrinsics scaling, rigid transforms, TUM trajectories.

Conventions: camera frame is OpenCV (x right, y down, z forward); pixel centres at integer
coordinates; a 4x4 ``T_a_b`` maps points of frame b into frame a (``p_a = T_a_b @ p_b``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from .layout import atomic_write_text, load_text_matrix


def scale_intrinsics(K: np.ndarray, src_size: tuple[int, int], dst_size: tuple[int, int]) -> np.ndarray:
    """Intrinsics of an image resized from ``src_size`` (w, h) to ``dst_size`` (w, h), pixel-centre convention."""
    sx = dst_size[0] / src_size[0]
    sy = dst_size[1] / src_size[1]
    K2 = np.array(K, dtype=float).copy()
    K2[0, 0] *= sx
    K2[1, 1] *= sy
    K2[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K2[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K2


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 rigid transform to (N, 3) points."""
    return points @ T[:3, :3].T + T[:3, 3]


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform."""
    Ti = np.eye(4)
    Ti[:3, :3] = T[:3, :3].T
    Ti[:3, 3] = -T[:3, :3].T @ T[:3, 3]
    return Ti


def pose_to_tum(t: float, T: np.ndarray) -> str:
    q = Rotation.from_matrix(T[:3, :3]).as_quat()  # x y z w
    x, y, z = T[:3, 3]
    return f"{t:.6f} {x:.9f} {y:.9f} {z:.9f} {q[0]:.9f} {q[1]:.9f} {q[2]:.9f} {q[3]:.9f}"


def write_tum(path: Path, times: np.ndarray, poses: np.ndarray, header: str = "") -> None:
    """Write poses (N, 4, 4) at times (N,) in TUM format ``t x y z qx qy qz qw``."""
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += [pose_to_tum(float(t), T) for t, T in zip(times, poses)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_tum(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM file -> (times (N,), poses (N, 4, 4)); '#' lines skipped; errors name the file."""
    path = Path(path)
    data = load_text_matrix(path, "TUM trajectory", ValueError)
    if data.shape[1] != 8:
        raise ValueError(f"{path}: TUM lines need 8 columns (t x y z qx qy qz qw), got {data.shape[1]}")
    if len(data) == 0:
        raise ValueError(f"{path}: TUM trajectory has no poses")
    if not np.all(np.isfinite(data)):
        bad = int(np.flatnonzero(~np.all(np.isfinite(data), axis=1))[0])
        raise ValueError(f"{path}: pose {bad + 1} has a non-finite value (NaN or inf)")
    norms = np.linalg.norm(data[:, 4:8], axis=1)
    if np.any(norms < 1e-9):
        raise ValueError(f"{path}: pose {int(np.flatnonzero(norms < 1e-9)[0]) + 1} has a zero quaternion")
    poses = np.tile(np.eye(4), (len(data), 1, 1))
    poses[:, :3, :3] = Rotation.from_quat(data[:, 4:8]).as_matrix()
    poses[:, :3, 3] = data[:, 1:4]
    return data[:, 0], poses


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (degrees) of a 3x3 rotation."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))
