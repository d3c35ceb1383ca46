"""Accuracy of a twin scene's products against the truth the twin wrote (never used by the pipeline).

Each function compares one product with its truth file and returns plain numbers:
depth (AbsRel, deltas, coverage), focus LUT (relative distance error per run), breathing
(px displacement between estimated and true warps), intrinsics, extrinsic (mm, deg), ATE (mm).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..calibration.breathing import read_breathing
from ..calibration.extrinsic import read_extrinsic
from ..calibration.focus_lut import read_focus_lut
from ..calibration.intrinsics import read_intrinsics
from ..geometry import invert, read_tum, rotation_angle_deg
from ..pointcloud.project import depth_edge_band


def read_lut(path: Path) -> dict[int, float]:
    """focus_lut.tsv -> {hexcode: focus_distance_m} (``read_focus_lut``: errors name the file and line)."""
    return {e.hexcode: e.focus_distance_m for e in read_focus_lut(path).entries}


def depth_accuracy(depth: np.ndarray, true_depth: np.ndarray, tolerance: float = 0.005) -> dict:
    """Exported depth vs true depth on pixels valid in both; coverage = share of true-valid pixels filled."""
    if depth.shape != true_depth.shape:
        raise ValueError(f"depth shape {depth.shape} differs from truth {true_depth.shape}")
    true_valid = np.isfinite(true_depth) & (true_depth > 0.01)
    valid = true_valid & np.isfinite(depth) & (depth > 0)
    p, t = depth[valid].astype(float), true_depth[valid].astype(float)
    rel = np.abs(p - t) / t
    ratio = np.maximum(p / t, t / p)
    off_edges = ~depth_edge_band(np.where(np.isfinite(depth), depth, 0))[valid]  # of the map under test
    # holes: true-valid pixels left empty; size = the largest distance (px) from a hole pixel to a filled one
    # (a disc splat of radius r fills exactly the holes of size <= r)
    holes = (true_valid & ~valid).astype(np.uint8)
    hole_px = float(cv2.distanceTransform(holes, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).max()) if holes.any() else 0.0
    best = np.sort(rel)[: int(0.99 * rel.size)]
    return {
        "pixels": int(valid.sum()),
        "coverage": float(valid.sum() / max(true_valid.sum(), 1)),
        "abs_rel": float(rel.mean()) if rel.size else float("nan"),
        "median_rel": float(np.median(rel)) if rel.size else float("nan"),
        f"within_{tolerance * 100:g}pct": float((rel <= tolerance).mean()) if rel.size else 0.0,
        "d1_05": float((ratio < 1.05).mean()) if rel.size else 0.0,
        "d1_25": float((ratio < 1.25).mean()) if rel.size else 0.0,
        # the same outside the 1-px bands at the map's own depth edges (what --mask-edges exports)
        "edge_band_fraction": float(1.0 - off_edges.mean()) if rel.size else 0.0,
        f"within_{tolerance * 100:g}pct_off_edges": float((rel[off_edges] <= tolerance).mean()) if off_edges.any() else 0.0,
        "abs_rel_off_edges": float(rel[off_edges].mean()) if off_edges.any() else float("nan"),
        "largest_hole_px": hole_px,
        # AbsRel of the best 99 % of the pixels (the worst 1 % left out)
        "abs_rel_best99": float(best.mean()) if best.size else float("nan"),
    }


def lut_accuracy(lut_path: Path, truth_path: Path) -> dict:
    """Relative focus-distance error of every hexcode present in both tables."""
    est, truth = read_lut(lut_path), read_lut(truth_path)
    common = sorted(set(est) & set(truth))
    errors = {f"{h:04X}": (est[h] - truth[h]) / truth[h] for h in common}
    return {"runs": len(common), "max_rel_error": max((abs(e) for e in errors.values()), default=float("nan")),
            "rel_error": errors}


def _warp_grid(w: int, h: int, step: int = 16) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(0, w, step, dtype=float), np.arange(0, h, step, dtype=float))
    return np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 1)


def breathing_accuracy(est_path: Path, truth_path: Path, width: int, height: int) -> dict:
    """Max and RMS displacement (px) between estimated and true run->canonical warps over the image."""
    est, truth = read_breathing(est_path), read_breathing(truth_path)
    grid = _warp_grid(width, height)
    per_run = {}
    for run in sorted(set(est) & set(truth)):
        d = grid @ (est[run] - truth[run]).T
        n = np.linalg.norm(d, axis=1)
        per_run[f"run_{run}"] = {"max_px": float(n.max()), "rms_px": float(np.sqrt((n**2).mean()))}
    return {"runs": len(per_run), "max_px": max((v["max_px"] for v in per_run.values()), default=float("nan")),
            "per_run": per_run}


def intrinsics_accuracy(est_path: Path, truth_path: Path) -> dict:
    est, truth = read_intrinsics(est_path), read_intrinsics(truth_path)
    Ke, Kt = np.asarray(est.K, float), np.asarray(truth.K, float)
    if (est.width, est.height) != (truth.width, truth.height):
        scale = truth.width / est.width
        Ke = Ke.copy()
        Ke[:2] *= scale
    return {"fx_rel_error": float(Ke[0, 0] / Kt[0, 0] - 1), "fy_rel_error": float(Ke[1, 1] / Kt[1, 1] - 1),
            "cx_error_px": float(Ke[0, 2] - Kt[0, 2]), "cy_error_px": float(Ke[1, 2] - Kt[1, 2])}


def extrinsic_accuracy(est_path: Path, truth_path: Path) -> dict:
    Te, Tt = read_extrinsic(est_path), read_extrinsic(truth_path)
    D = invert(Tt) @ Te
    return {"translation_error_mm": float(np.linalg.norm(D[:3, 3]) * 1000), "rotation_error_deg": rotation_angle_deg(D[:3, :3])}


def align_rigid(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rigid 4x4 transform mapping points src (N, 3) onto dst (N, 3) (Kabsch, no scale)."""
    cs, cd = src.mean(0), dst.mean(0)
    U, _, Vt = np.linalg.svd((src - cs).T @ (dst - cd))
    S = np.diag([1.0, 1.0, np.sign(np.linalg.det(Vt.T @ U.T))])
    R = Vt.T @ S @ U.T
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = cd - R @ cs
    return T


def trajectory_accuracy(est_path: Path, truth_path: Path, max_gap_s: float = 0.11) -> dict:
    """ATE: RMSE (mm) of positions after the best rigid alignment.

    Truth positions are interpolated linearly at the estimate's timestamps (a 200 Hz truth such as
    trajectory_dense.tum makes that exact to < 0.1 mm); estimates outside the truth's time span or
    between truth samples further apart than ``max_gap_s`` are not scored.
    """
    te, pe = read_tum(est_path)
    tt, pt = read_tum(truth_path)
    idx = np.searchsorted(tt, te).clip(1, len(tt) - 1)
    t0, t1 = tt[idx - 1], tt[idx]
    ok = (te >= tt[0] - 1e-6) & (te <= tt[-1] + 1e-6) & (t1 - t0 <= max_gap_s)
    if ok.sum() < 3:
        raise ValueError(f"{est_path}: fewer than 3 poses lie within the time span of {truth_path}")
    w = np.clip((te - t0) / np.maximum(t1 - t0, 1e-12), 0.0, 1.0)[:, None]
    truth_xyz = (1 - w) * pt[idx - 1, :3, 3] + w * pt[idx, :3, 3]
    src, dst = pe[ok, :3, 3], truth_xyz[ok]
    T = align_rigid(src, dst)
    err = np.linalg.norm(src @ T[:3, :3].T + T[:3, 3] - dst, axis=1)
    return {"poses": int(ok.sum()), "ate_rmse_mm": float(np.sqrt((err**2).mean()) * 1000), "ate_max_mm": float(err.max() * 1000)}
