"""bench/aggregate: paper mode vs fast mode vs KISS-ICP / small_gicp peers on one twin sweep.

    .venv/bin/python bench/aggregate.py --root /tmp/zedd-bench --scene kitchen01 --frames 600 --paper-frames 50

Records the twin sweep once (1024x10, OSF + truth), then runs each method in its own process
(peak RSS per method): frames/s, total seconds, peak memory, ATE RMSE against the twin's dense
truth trajectory. The paper's literal loop grows with the map, so it runs on the first
``--paper-frames`` frames and its total for all frames is extrapolated from a linear fit of the
per-frame time. "fast" runs the whole build-depth pipeline (aggregate + register + project) and
also reports the exported depth against the twin's true depth (AbsRel, largest interior hole).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def record(root: Path, scene: str, frames: int, mode: str) -> None:
    from zedd_capture.layout import CalibrationLayout, SceneLayout
    from zedd_capture.rig import load_rig
    from zedd_capture.sim.devices import TwinRig
    from zedd_capture.sim.truth import write_truth

    L = SceneLayout(root, scene)
    if L.lidar_sweep_path.is_file() and (L.truth_dir / "trajectory_dense.tum").is_file():
        return
    rig = _rig(frames, mode)
    twin = TwinRig(rig, scene, root=root)
    t = time.time()
    twin.lidar.record_static(L.lidar_static_path)
    twin.lidar.record_sweep(L.lidar_sweep_path, rig.capture.sweep_seconds)
    write_truth(L, twin)
    cal = CalibrationLayout(root, rig.name)
    cal.dir.mkdir(parents=True, exist_ok=True)
    for f in ("extrinsic.txt", "intrinsics.yaml", "focus_lut.tsv"):
        shutil.copy(L.truth_dir / f, cal.dir / f)
    print(f"recorded {frames} frames in {time.time() - t:.1f} s", file=sys.stderr)


def _rig(frames: int, mode: str):
    from zedd_capture.rig import load_rig

    rig = load_rig()
    return rig.model_copy(update={"sim": rig.sim.model_copy(update={"frames_per_sweep": frames}),
                                  "lidar": rig.lidar.model_copy(update={"mode": mode})})


def truth_poses(root: Path, scene: str, times: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation, Slerp

    from zedd_capture.geometry import read_tum
    from zedd_capture.layout import SceneLayout

    td, Pd = read_tum(SceneLayout(root, scene).truth_dir / "trajectory_dense.tum")
    P = np.tile(np.eye(4), (len(times), 1, 1))
    P[:, :3, :3] = Slerp(td, Rotation.from_matrix(Pd[:, :3, :3]))(times).as_matrix()
    P[:, :3, 3] = np.stack([np.interp(times, td, Pd[:, k, 3]) for k in range(3)], 1)
    return P


def ate_mm(est: np.ndarray, true: np.ndarray) -> float:
    """Position RMSE (mm) with both trajectories anchored on their first pose (frame 0's own error counts)."""
    rel = np.linalg.inv(true[0]) @ true
    est = np.linalg.inv(est[0]) @ est
    return 1000 * float(np.sqrt(np.mean(np.sum((est[:, :3, 3] - rel[:, :3, 3]) ** 2, axis=1))))


def ate_aligned_mm(est: np.ndarray, true: np.ndarray) -> float:
    """ATE as in the TUM benchmark and `zedd report`: position RMSE (mm) after the best rigid alignment."""
    from zedd_capture.report.accuracy import align_rigid

    T = align_rigid(est[:, :3, 3], true[:, :3, 3])
    e = est[:, :3, 3] @ T[:3, :3].T + T[:3, 3] - true[:, :3, 3]
    return 1000 * float(np.sqrt(np.mean(np.sum(e**2, axis=1))))


def drift_mm(est: np.ndarray, true: np.ndarray) -> float:
    """Relative pose error between consecutive frames (translation RMSE, mm)."""
    e = np.linalg.inv(est[:-1]) @ est[1:]
    t = np.linalg.inv(true[:-1]) @ true[1:]
    return 1000 * float(np.sqrt(np.mean(np.sum((e[:, :3, 3] - t[:, :3, 3]) ** 2, axis=1))))


def run_method(method: str, root: Path, scene: str, n_frames: int) -> dict:
    from zedd_capture.layout import SceneLayout
    from zedd_capture.pointcloud.aggregate import AggregateConfig, aggregate
    from zedd_capture.pointcloud.io import read_lidar

    L = SceneLayout(root, scene)
    out: dict = {"method": method}
    if method == "fast":
        import cv2

        from zedd_capture.geometry import read_tum
        from zedd_capture.pointcloud.pipeline import build_depth

        rig = _rig(n_frames, "1024x10")
        t = time.perf_counter()
        s = build_depth(rig, root, scene, mode="fast")
        out["seconds_pipeline"] = time.perf_counter() - t
        agg = s.stats["aggregate"]
        out.update(frames=s.frames, seconds=s.timings_s["aggregate"], seconds_read=s.timings_s["read"],
                   seconds_registration=agg["seconds_registration"], seconds_density_and_accumulate=agg["seconds"] - agg["seconds_registration"],
                   seconds_density=agg.get("seconds_density"), seconds_accumulate=agg.get("seconds_accumulate"),
                   points=agg["points"], timings=s.timings_s, static_fitness=s.fitness, static_rmse_m=s.rmse_m)
        te, Pe = read_tum(L.trajectory_path)
        out["times"], poses = te, Pe
        gt = np.load(L.truth_dir / "depth.npy")
        v = (gt > 0) & (s.depth > 0)
        rel = np.abs(s.depth[v] - gt[v]) / gt[v]
        holes = ((gt > 0) & (s.depth == 0)).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(holes, connectivity=4)
        h, w = gt.shape
        interior = np.zeros_like(holes)
        for i in range(1, n):
            x, y, ww, hh, _ = stats[i]
            if x > 0 and y > 0 and x + ww < w and y + hh < h:
                interior[lab == i] = 1
        dist = cv2.distanceTransform(interior, cv2.DIST_L2, 5) if interior.any() else np.zeros(1)
        out["depth"] = {"coverage": float(v.sum() / (gt > 0).sum()), "absrel_mean": float(rel.mean()),
                        "absrel_median": float(np.median(rel)), "frac_absrel_le_0.5pct": float(np.mean(rel <= 0.005)),
                        "frac_absrel_le_0.3pct": float(np.mean(rel <= 0.003)), "frac_absrel_le_1pct": float(np.mean(rel <= 0.01)),
                        "max_interior_hole_radius_px": float(dist.max()), "splat_radius_px": rig.depth_map.splat_radius_px}
    else:
        t = time.perf_counter()
        rec = read_lidar(L.lidar_sweep_path, max_frames=n_frames)
        out["seconds_read"] = time.perf_counter() - t
        frames = rec.frames
        out["frames"] = len(frames)
        times = np.array([f.t_ref for f in frames])
        t = time.perf_counter()
        if method == "paper":
            per_frame = []
            last = [time.perf_counter()]

            def prog(d, n):
                now = time.perf_counter()
                per_frame.append(now - last[0])
                last[0] = now

            wc = aggregate(frames, AggregateConfig(mode="paper"), progress=prog)
            poses = wc.poses
            out["points"] = wc.stats["points"]
            i = np.arange(len(per_frame))
            b, a = np.polyfit(i, per_frame, 1)
            full = 600
            out["per_frame_s_first_last"] = [per_frame[1], per_frame[-1]]
            out["extrapolated_seconds_600_frames"] = float(sum(max(a + b * k, 0) for k in range(full)))
        elif method == "small_gicp":
            wc = aggregate(frames, AggregateConfig(deskew=False, density_filter=False))
            poses = wc.poses
        elif method == "kiss_icp":
            from kiss_icp.config import KISSConfig
            from kiss_icp.kiss_icp import KissICP

            cfg = KISSConfig()
            cfg.data.max_range = 30.0
            cfg.data.min_range = 0.3
            cfg.mapping.voxel_size = 0.1
            k = KissICP(cfg)
            poses = []
            for f in frames:
                ts = (f.dt - f.dt.min()) / max(float(np.ptp(f.dt)), 1e-9)
                k.register_frame(np.asarray(f.points, np.float64), ts.astype(np.float64))
                poses.append(np.array(k.last_pose))
            poses = np.array(poses)
        out["seconds"] = time.perf_counter() - t
        out["times"] = times
    true = truth_poses(root, scene, out["times"])
    out["ate_rmse_mm"] = ate_mm(poses, true)  # anchored on the first frame
    out["ate_aligned_mm"] = ate_aligned_mm(poses, true)
    out["rpe_mm_per_frame"] = drift_mm(poses, true)
    out["frames_per_s"] = out["frames"] / out["seconds"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.pop("times")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", type=Path, default=Path("/tmp/zedd-bench"))
    ap.add_argument("--scene", default="kitchen01")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--paper-frames", type=int, default=50)
    ap.add_argument("--methods", default="fast,small_gicp,kiss_icp,paper")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    if a.one:
        n = a.paper_frames if a.one == "paper" else a.frames
        print(json.dumps(run_method(a.one, a.root, a.scene, n)))
        return
    record(a.root, a.scene, a.frames, "1024x10")
    results = []
    for m in a.methods.split(","):
        p = subprocess.run([sys.executable, __file__, "--root", str(a.root), "--scene", a.scene, "--frames", str(a.frames),
                            "--paper-frames", str(a.paper_frames), "--one", m], capture_output=True, text=True)
        if p.returncode:
            results.append({"method": m, "error": p.stderr.strip().splitlines()[-1:]})
        else:
            results.append(json.loads(p.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if a.out:
        a.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
