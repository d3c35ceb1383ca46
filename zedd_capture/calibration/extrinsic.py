"""Lidar -> camera extrinsic (T_camera_lidar) from a planar target seen by both sensors.

For every pose of the board: the camera gives the board plane (from the ChArUco pose), the lidar
gives the points on the board (selected with the nominal extrinsic, plane fitted with RANSAC).
Plane-to-plane constraints n_c = R n_l, d_c = n_c . t + d_l give a closed-form start (rotation by
SVD of the normal pairs, translation by least squares over the offsets); a nonlinear refinement
then minimises the distance of every lidar board point (mapped into the camera) to its camera
board plane. Uncertainty: 1-sigma from the Gauss-Newton covariance and, with >= 4 poses, the
leave-one-pose-out spread. At least 3 poses with non-parallel normals are needed.

``extrinsic.txt``: the 4x4 matrix (numpy.loadtxt-readable), provenance as ``#`` comment lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from ..geometry import rotation_angle_deg, transform_points
from ..layout import atomic_save_txt, load_text_matrix
from .charuco import CalibrationError
from .focus_lut import format_comment_header

MIN_POSES = 3
MIN_NORMAL_SPREAD = 0.1  # smallest singular value of the stacked unit normals / sqrt(poses) (~ sin 6 deg)


@dataclass(frozen=True)
class Plane:
    """Plane n . x = d with unit normal n pointing away from the sensor (d > 0)."""

    n: np.ndarray
    d: float
    inliers: int = 0
    rms_m: float = float("nan")


def oriented(n: np.ndarray, d: float) -> tuple[np.ndarray, float]:
    n = np.asarray(n, float) / np.linalg.norm(n)
    d = float(d) / 1.0
    return (n, d) if d >= 0 else (-n, -d)


def fit_plane_lsq(points: np.ndarray) -> Plane:
    c = points.mean(axis=0)
    _, s, vt = np.linalg.svd(points - c, full_matrices=False)
    n = vt[2]
    n, d = oriented(n, n @ c)
    rms = float(np.sqrt(np.mean(((points @ n) - d) ** 2)))
    return Plane(n, d, len(points), rms)


def fit_plane_ransac(points: np.ndarray, threshold_m: float = 0.03, iterations: int = 100, seed: int = 0,
                     name: str = "") -> tuple[Plane, np.ndarray]:
    """RANSAC plane (3-point hypotheses), then least squares on the inliers; returns (plane, inlier mask)."""
    pts = np.asarray(points, float)
    if len(pts) < 10:
        raise CalibrationError(f"{name}: only {len(pts)} lidar points on the board (need >= 10)")
    rng = np.random.default_rng(seed)
    best, best_count = None, -1
    for _ in range(iterations):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        n = np.cross(b - a, c - a)
        nn = np.linalg.norm(n)
        if nn < 1e-9:
            continue
        n /= nn
        count = int(np.sum(np.abs((pts - a) @ n) < threshold_m))
        if count > best_count:
            best, best_count = (n, float(n @ a)), count
    n, d = best
    mask = np.abs(pts @ n - d) < threshold_m
    plane = fit_plane_lsq(pts[mask])
    mask = np.abs(pts @ plane.n - plane.d) < max(threshold_m / 2, 3 * plane.rms_m)
    return fit_plane_lsq(pts[mask]), mask


def board_plane_in_camera(T_camera_board: np.ndarray) -> Plane:
    """The board plane (z = 0 of the board frame) in the camera frame."""
    n = T_camera_board[:3, 2]
    n, d = oriented(n, n @ T_camera_board[:3, 3])
    return Plane(n, d)


def select_board_points(points_lidar: np.ndarray, T_camera_board: np.ndarray, board_size_m: tuple[float, float],
                        T_camera_lidar_init: np.ndarray, margin_m: float = 0.08, plane_tol_m: float = 0.15,
                        shrink_m: float = 0.0) -> np.ndarray:
    """Boolean mask of the lidar points (sensor frame) that fall on the board, using the nominal extrinsic.

    A point is kept when, mapped into the board frame, it lies inside the board rectangle shrunk by
    ``shrink_m`` (keeps edge mixed returns out) and within ``plane_tol_m`` of the board plane.
    ``margin_m`` is kept for the initial, rough selection (negative shrink).
    """
    T_board_cam = np.linalg.inv(T_camera_board)
    p = transform_points(T_board_cam @ T_camera_lidar_init, np.asarray(points_lidar, float))
    w, h = board_size_m
    s = shrink_m - margin_m
    return (p[:, 0] > s) & (p[:, 0] < w - s) & (p[:, 1] > s) & (p[:, 1] < h - s) & (np.abs(p[:, 2]) < plane_tol_m)


def closed_form(planes_cam: Sequence[Plane], planes_lidar: Sequence[Plane]) -> np.ndarray:
    """T_camera_lidar from plane pairs: R = argmin sum |n_c - R n_l|^2 (SVD), t from n_c . t = d_c - d_l."""
    Nc = np.array([p.n for p in planes_cam])
    Nl = np.array([p.n for p in planes_lidar])
    H = Nl.T @ Nc
    U, _, Vt = np.linalg.svd(H)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ D @ U.T
    b = np.array([pc.d - pl.d for pc, pl in zip(planes_cam, planes_lidar)])
    t = np.linalg.lstsq(Nc, b, rcond=None)[0]
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def check_poses(planes_cam: Sequence[Plane], names: Sequence[str] | None = None) -> float:
    """Raise unless there are >= 3 poses with non-parallel normals; returns the normal spread."""
    k = len(planes_cam)
    if k < MIN_POSES:
        raise CalibrationError(f"extrinsic calibration needs >= {MIN_POSES} board poses with non-parallel normals, got {k}")
    N = np.array([p.n for p in planes_cam])
    spread = float(np.linalg.svd(N, compute_uv=False)[-1] / np.sqrt(k))
    if spread < MIN_NORMAL_SPREAD:
        listed = f" ({', '.join(names)})" if names else ""
        raise CalibrationError(
            f"the {k} board poses{listed} are (nearly) parallel (normal spread {spread:.3f} < {MIN_NORMAL_SPREAD}): "
            "tilt the board about two different axes; >= 3 non-parallel poses are needed"
        )
    return spread


@dataclass
class ExtrinsicResult:
    T_camera_lidar: np.ndarray
    per_pose_rms_m: list[float]
    per_pose_points: list[int]
    per_pose_angle_deg: list[float]  # angle between camera normal and rotated lidar normal
    std_translation_m: np.ndarray
    std_rotation_deg: np.ndarray
    loo_translation_m: float = float("nan")  # max leave-one-out translation change
    loo_rotation_deg: float = float("nan")
    normal_spread: float = float("nan")
    names: list[str] = field(default_factory=list)


def _params_to_T(x: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(x[:3]).as_matrix()
    T[:3, 3] = x[3:]
    return T


def _refine(T0: np.ndarray, planes_cam: Sequence[Plane], points: Sequence[np.ndarray]):
    N = np.concatenate([np.repeat(p.n[None], len(q), 0) for p, q in zip(planes_cam, points)])
    D = np.concatenate([np.full(len(q), p.d) for p, q in zip(planes_cam, points)])
    P = np.concatenate(points)
    R0 = T0[:3, :3]

    def res(x):
        R = Rotation.from_rotvec(x[:3]).as_matrix() @ R0
        return np.einsum("ij,ij->i", N, P @ R.T + x[3:]) - D

    x0 = np.concatenate([np.zeros(3), T0[:3, 3]])
    sol = least_squares(res, x0, method="lm", xtol=1e-12, ftol=1e-12)
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(sol.x[:3]).as_matrix() @ R0
    T[:3, 3] = sol.x[3:]
    dof = max(1, len(P) - 6)
    sigma2 = float(sol.fun @ sol.fun / dof)
    try:
        cov = np.linalg.inv(sol.jac.T @ sol.jac) * sigma2
    except np.linalg.LinAlgError:
        cov = np.full((6, 6), np.nan)
    return T, sol.fun, cov


def solve_extrinsic(planes_cam: Sequence[Plane], board_points_lidar: Sequence[np.ndarray],
                    names: Sequence[str] | None = None) -> ExtrinsicResult:
    """T_camera_lidar from camera board planes and the lidar points on each board (sensor frame, m)."""
    names = list(names) if names else [f"pose {i + 1}" for i in range(len(planes_cam))]
    if len(planes_cam) != len(board_points_lidar):
        raise CalibrationError("one set of lidar board points is needed per camera board pose")
    spread = check_poses(planes_cam, names)
    planes_l = [fit_plane_lsq(np.asarray(p, float)) for p in board_points_lidar]
    T0 = closed_form(planes_cam, planes_l)
    T, r, cov = _refine(T0, planes_cam, [np.asarray(p, float) for p in board_points_lidar])
    per_rms, per_n, per_ang, i0 = [], [], [], 0
    for pc, pl, pts in zip(planes_cam, planes_l, board_points_lidar):
        ri = r[i0 : i0 + len(pts)]
        i0 += len(pts)
        per_rms.append(float(np.sqrt(np.mean(ri**2))))
        per_n.append(len(pts))
        per_ang.append(float(np.degrees(np.arccos(np.clip(pc.n @ (T[:3, :3] @ pl.n), -1, 1)))))
    std = np.sqrt(np.clip(np.diag(cov), 0, None))
    out = ExtrinsicResult(T, per_rms, per_n, per_ang, std[3:], np.degrees(std[:3]), normal_spread=spread, names=names)
    if len(planes_cam) >= 4:
        dts, dRs = [], []
        for i in range(len(planes_cam)):
            keep = [j for j in range(len(planes_cam)) if j != i]
            sub = [planes_cam[j] for j in keep]
            try:
                check_poses(sub)
            except CalibrationError:
                continue
            Ti, _, _ = _refine(T, sub, [np.asarray(board_points_lidar[j], float) for j in keep])
            dts.append(float(np.linalg.norm(Ti[:3, 3] - T[:3, 3])))
            dRs.append(rotation_angle_deg(Ti[:3, :3] @ T[:3, :3].T))
        if dts:
            out.loo_translation_m, out.loo_rotation_deg = max(dts), max(dRs)
    return out


def calibrate_extrinsic(board_poses: Sequence[np.ndarray], lidar_points: Sequence[np.ndarray],
                        board_size_m: tuple[float, float], T_camera_lidar_init: np.ndarray,
                        names: Sequence[str] | None = None, ransac_threshold_m: float = 0.03,
                        shrink_m: float = 0.03) -> ExtrinsicResult:
    """Full procedure: select the board points per pose (nominal extrinsic), RANSAC planes, solve, re-select, refine.

    ``board_poses``: T_camera_board per pose (from the camera); ``lidar_points``: (M, 3) lidar
    points in the sensor frame per pose; ``board_size_m``: (width, height) of the board.
    """
    names = list(names) if names else [f"pose {i + 1}" for i in range(len(board_poses))]
    if len(board_poses) != len(lidar_points):
        raise CalibrationError(f"{len(board_poses)} camera board poses but {len(lidar_points)} lidar frames")
    planes_cam = [board_plane_in_camera(T) for T in board_poses]
    check_poses(planes_cam, names)
    T = np.asarray(T_camera_lidar_init, float)
    for it, (margin, tol) in enumerate([(0.1, 0.25), (-shrink_m, 0.06)]):
        sel = []
        for T_cb, pts, name in zip(board_poses, lidar_points, names):
            pts = np.asarray(pts, float)
            m = select_board_points(pts, T_cb, board_size_m, T, margin_m=margin, plane_tol_m=tol)
            cand = pts[m]
            _, inl = fit_plane_ransac(cand, ransac_threshold_m, name=name)
            if inl.sum() < 30:
                raise CalibrationError(f"{name}: only {int(inl.sum())} lidar points on the board plane (need >= 30)")
            sel.append(cand[inl])
        res = solve_extrinsic(planes_cam, sel, names)
        T = res.T_camera_lidar
    return res


def write_extrinsic(path: Path, T: np.ndarray, provenance: dict | None = None) -> None:
    header = "zedd-toolkit lidar->camera extrinsic T_camera_lidar (4x4, metres)\n" + format_comment_header(provenance, "")
    atomic_save_txt(Path(path), np.asarray(T, float), fmt="%.12f", header=header.rstrip("\n"))


def read_extrinsic(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: extrinsic not found (run `zedd calibrate-extrinsics`)")
    T = load_text_matrix(path, "4x4 matrix", CalibrationError)
    if T.shape != (4, 4):
        raise CalibrationError(f"{path}: expected a finite 4x4 matrix, got shape {T.shape}")
    if not np.all(np.isfinite(T)):
        raise CalibrationError(f"{path}: expected a finite 4x4 matrix, found NaN or inf")
    R = T[:3, :3]
    if not (np.allclose(T[3], [0, 0, 0, 1], atol=1e-6) and np.allclose(R.T @ R, np.eye(3), atol=1e-3)
            and np.linalg.det(R) > 0):
        raise CalibrationError(f"{path}: not a rigid transform (rotation block not orthonormal or last row not 0 0 0 1)")
    return T
