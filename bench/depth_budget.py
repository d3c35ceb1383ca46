"""bench/depth_budget: where the depth map's error comes from, on a built twin scene.

    .venv/bin/python bench/depth_budget.py [--root demo] [--scene kitchen01 [--scene office03 ...]]

Needs a twin scene that build-depth has built, with its truth/ folder: ``make demo`` leaves one in demo/ (without
one at the default root the bench says so and skips). The build's
projection inputs are read back from its work files (pointcloud.reproject) and projected again under
changed conditions, each row scored against the twin's true depth:

- calibration alone: the true depth rendered from where the estimated extrinsic puts the camera (all else exact);
- build-depth as built, and with the camera-frame cloud moved to the true extrinsic;
- the same with free space off (the free-space test needs the sweep's own rays, which the rows below lack);
- exact points: every point replaced by the twin's exact surface point on its own sensor ray (true extrinsic);
  then with Gaussian range noise of the rig's ``sim.range_noise_m`` along each point's sensor ray, and the same
  noise along the camera ray instead (no sideways shift in the image).

Columns: share within 0.5 %, the same outside the map's own 1-px edge bands (what ``--mask-edges`` exports), AbsRel,
AbsRel of the best 99 %, the pixels off split by their distance from a true depth jump (> 3 %), and the median signed
error of the surfaces nearer than 1 m (the near pole's bias). A second table splits that bias by the pixels' distance
from the near surfaces' silhouette (rim, steep flanks, centre).

A third table bounds what silhouettes allow: the share within 0.5 % of a map that is exact everywhere except that
each pixel reads the surface at its centre moved by N(0, sigma^2) px per axis (the truth rendered 9 x 9 per pixel;
the surface behind or in front wherever the moved centre crosses a depth jump > 3 %), for a range of sigma. Each row
of the first table is then read as an equivalent sigma: the sigma whose bound misses as many pixels as the row
misses within 2 px of a true jump; the last column gives the sigma that would reach 99 % with the row's misses
away from the jumps as they are.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation, distance_transform_edt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zedd_capture.geometry import scale_intrinsics  # noqa: E402
from zedd_capture.layout import CalibrationLayout, SceneLayout  # noqa: E402
from zedd_capture.pointcloud.config import BuildConfig  # noqa: E402
from zedd_capture.pointcloud.depth_map import project_depth  # noqa: E402
from zedd_capture.pointcloud.pipeline import splat_radius  # noqa: E402
from zedd_capture.pointcloud.project import depth_edge_band  # noqa: E402
from zedd_capture.pointcloud.reproject import load_projection_inputs  # noqa: E402
from zedd_capture.rig import load_rig  # noqa: E402


NEAR_M = 1.0  # surfaces nearer than this are "near" (the twin scenes' pole at ~0.5 m)
SILHOUETTE_BINS_PX = ((1, 2), (2, 3), (3, 4), (4, 6), (6, 9), (9, 14), (14, None))


def score(depth: np.ndarray, truth: np.ndarray) -> dict:
    """Share within 0.5 % (of all true pixels, and of those outside the map's 1-px edge bands), AbsRel, best-99
    AbsRel (%), misses by distance from a true jump, near-surface bias (%) overall and by distance from the near
    surfaces' silhouette (px, 1 = the rim pixel)."""
    valid = truth > 0
    rel = np.where(valid & (depth > 0), (depth - truth) / np.where(valid, truth, 1), np.inf)
    miss = valid & ~(np.abs(rel) <= 0.005)
    outside_bands = valid & (depth > 0) & ~depth_edge_band(depth)
    jump1 = depth_edge_band(truth, 0.03)
    jump2 = binary_dilation(jump1) & ~jump1
    finite = np.abs(rel[valid])[np.isfinite(rel[valid])]
    near = valid & (truth < NEAR_M) & np.isfinite(rel)
    inside = distance_transform_edt(valid & (truth < NEAR_M))  # px from the nearest pixel that is not near
    profile = []
    for lo, hi in SILHOUETTE_BINS_PX:
        sel = near & (inside >= lo) & (inside < (hi or np.inf))
        profile.append(100 * float(np.median(rel[sel])) if sel.any() else float("nan"))
    return {"within": 100 * np.mean(~miss[valid]), "within_mask_edges": 100 * np.mean(~miss[outside_bands]),
            "absrel": 100 * finite.mean(), "near_profile": profile,
            "best99": 100 * np.sort(finite)[: int(0.99 * finite.size)].mean(),
            "miss_jump1": int((miss & jump1).sum()), "miss_jump2": int((miss & jump2).sum()),
            "miss_other": int((miss & ~jump1 & ~jump2).sum()),
            "near_bias": 100 * float(np.median(rel[near])) if near.any() else float("nan")}


def moved(points: np.ndarray, C: np.ndarray) -> np.ndarray:
    return (np.asarray(points, np.float64) @ C[:3, :3].T + C[:3, 3]).astype(np.float32)


def exact_points(twin, T_world_camera: np.ndarray, points_cam: np.ndarray, sensors_cam: np.ndarray,
                 frames: np.ndarray, sigma_m: float, along: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points, kept mask): each point's sensor ray cast in the twin (camera frame ``T_world_camera``), the hit
    within 0.1 m of the point kept, plus N(0, sigma_m) along the sensor ray or the camera ray (``along``)."""
    rng = np.random.default_rng(seed)
    out = np.empty_like(points_cam)
    keep = np.zeros(len(points_cam), bool)
    R, t = T_world_camera[:3, :3], T_world_camera[:3, 3]
    for a in range(0, len(points_cam), 1 << 20):
        p = np.asarray(points_cam[a:a + (1 << 20)], np.float64)
        o = np.asarray(sensors_cam[frames[a:a + (1 << 20)]], np.float64)
        ray = p - o
        dist = np.linalg.norm(ray, axis=1)
        ray /= dist[:, None]
        hit_t = twin.scene.cast(o @ R.T + t, ray @ R.T).t
        hit = o + ray * np.where(np.isfinite(hit_t), hit_t, 0)[:, None]
        noise = rng.standard_normal(len(p)) * sigma_m
        direction = ray if along == "sensor" else hit / np.linalg.norm(hit, axis=1, keepdims=True)
        out[a:a + len(p)] = hit + direction * noise[:, None]
        keep[a:a + len(p)] = np.isfinite(hit_t) & (np.abs(hit_t - dist) < 0.1)
    return out, keep


SIGMAS_PX = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
SUPERSAMPLE = 9


def silhouette_bound(scene, K: np.ndarray, width: int, height: int, T_world_camera: np.ndarray,
                     sigmas: tuple[float, ...] = SIGMAS_PX, draws: int = 3, seed: int = 0) -> list[float]:
    """Share (%) within 0.5 % of the true depth of a map exact but for its silhouettes: each pixel reads the surface
    at its centre moved by N(0, sigma^2) px along each axis (mean of ``draws`` draws per sigma)."""
    from zedd_capture.sim.truth import render_depth

    s = SUPERSAMPLE
    # pixel-centre convention: sample (i, j) of pixel (v, u) sits at (v s + i, u s + j)
    Ks = scale_intrinsics(K, (width, height), (width * s, height * s))
    fine = render_depth(scene, Ks, width * s, height * s, T_world_camera)
    truth = fine[s // 2::s, s // 2::s]
    valid = truth > 0
    v, u = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    shares = []
    for sigma in sigmas:
        got = []
        for _ in range(draws):
            du, dv = rng.normal(0.0, sigma, (2, height, width))
            moved_depth = fine[np.clip(np.rint((v + dv) * s + s // 2).astype(int), 0, height * s - 1),
                               np.clip(np.rint((u + du) * s + s // 2).astype(int), 0, width * s - 1)]
            crossed = (moved_depth > 0) & valid & (np.maximum(moved_depth, truth) > 1.03 * np.minimum(moved_depth, truth))
            depth = np.where(crossed, moved_depth, truth)
            got.append(100 * np.mean(np.abs(depth - truth)[valid] <= 0.005 * truth[valid]))
        shares.append(float(np.mean(got)))
    return shares


def equivalent_sigma(edge_miss_pct: float, bound: list[float], sigmas: tuple[float, ...] = SIGMAS_PX) -> str:
    """The sigma (px) whose bound misses ``edge_miss_pct`` % of the pixels (linear between the table's sigmas)."""
    misses = [100 - b for b in bound]
    if edge_miss_pct <= misses[0]:
        return f"<={sigmas[0]:g}"
    if edge_miss_pct >= misses[-1]:
        return f">={sigmas[-1]:g}"
    return f"{np.interp(edge_miss_pct, misses, sigmas):.2f}"


def scene_budget(rig, root: Path, scene: str) -> list[tuple[str, float, str, float, str]]:
    """Print the three tables of one built twin scene; returns per condition (name, share within 0.5 %, equivalent
    sigma, % off away from the jumps, sigma 99 % would need)."""
    from zedd_capture.sim.devices import TwinRig
    from zedd_capture.sim.optics import true_K
    from zedd_capture.sim.truth import render_depth

    layout = SceneLayout(root, scene)
    truth = np.load(layout.truth_dir / "depth.npy")
    E_est = np.loadtxt(CalibrationLayout(root, rig.name).extrinsic_path)
    E_true = np.loadtxt(layout.truth_dir / "extrinsic.txt")
    C = E_true @ np.linalg.inv(E_est)  # estimated camera frame -> true camera frame
    twin = TwinRig(rig, scene, root)
    T_world_camera_true = twin.base_scene.tripod_camera_pose
    t0 = time.perf_counter()
    inputs = load_projection_inputs(rig, root, scene)
    print(f"\n{scene}: read the build's projection inputs: {len(inputs.points_cam):,} points "
          f"({time.perf_counter() - t0:.1f} s)")
    cfg = BuildConfig()
    radius = splat_radius(rig, cfg)
    W, H, K = inputs.width, inputs.height, inputs.K

    def project(points, sensors, frames, rays=None, T_world_camera=None):
        return project_depth(points, sensors, frames, K, W, H, radius, cfg, rays=rays, T_world_camera=T_world_camera)[0]

    rows = []
    Kt = true_K(rig, W, H)
    rows.append(("calibration alone (truth seen through the estimated extrinsic)",
                 render_depth(twin.scene, Kt, W, H, T_world_camera_true @ C)))
    rows.append(("build-depth as built", project(inputs.points_cam, inputs.sensor_positions_cam, inputs.frame_index,
                                                 inputs.rays, inputs.T_world_camera)))
    pts_true, sens_true = moved(inputs.points_cam, C), moved(inputs.sensor_positions_cam, C)
    rows.append(("... with the true extrinsic", project(pts_true, sens_true, inputs.frame_index, inputs.rays,
                                                        inputs.T_world_camera @ np.linalg.inv(C))))
    rows.append(("... with the true extrinsic, free space off", project(pts_true, sens_true, inputs.frame_index)))
    sigma = float(rig.sim.range_noise_m)
    for name, s, along in (("exact points on the same sensor rays", 0.0, "sensor"),
                           (f"... + {sigma * 100:g} cm noise along the sensor rays", sigma, "sensor"),
                           (f"... + {sigma * 100:g} cm noise along the camera rays", sigma, "camera")):
        p, keep = exact_points(twin, T_world_camera_true, pts_true, sens_true, inputs.frame_index, s, along)
        rows.append((name, project(p[keep], sens_true, inputs.frame_index[keep])))
    print(f"\n{scene}: depth error budget ({W} x {H} px; misses by distance from a true depth jump > 3 %)")
    head = f"{'':66s} {'within 0.5%':>11s} {'mask-edges':>10s} {'AbsRel':>7s} {'best99':>7s} {'off@1px':>8s} {'off@2px':>8s} {'off else':>8s} {'<1 m bias':>9s}"
    print(head)
    scores = [(name, score(depth, truth)) for name, depth in rows]
    for name, r in scores:
        print(f"{name:66s} {r['within']:10.2f}% {r['within_mask_edges']:9.2f}% {r['absrel']:6.2f}% {r['best99']:6.3f}% {r['miss_jump1']:8d} "
              f"{r['miss_jump2']:8d} {r['miss_other']:8d} {r['near_bias']:+8.3f}%")
    bins = [f"{lo}" if hi == lo + 1 else f"{lo}-{hi - 1}" if hi else f">={lo}" for lo, hi in SILHOUETTE_BINS_PX]
    print(f"\nsurfaces nearer than {NEAR_M:g} m: median error (%) by distance from their silhouette (px)")
    print(f"{'':66s} " + " ".join(f"{b:>7s}" for b in bins))
    for name, r in scores:
        print(f"{name:66s} " + " ".join(f"{v:+7.3f}" for v in r["near_profile"]))
    bound = silhouette_bound(twin.scene, Kt, W, H, T_world_camera_true)
    n_valid = int((truth > 0).sum())
    print("\nsilhouette bound: exact depths, each pixel reading the surface at its centre moved by N(0, sigma^2) px "
          "per axis")
    print("  " + " | ".join(f"sigma {sg:g} px: {b:.2f}%" for sg, b in zip(SIGMAS_PX, bound)))
    print(f"{'':66s} {'off within 2 px of a jump':>26s} {'equivalent sigma (px)':>22s} {'off elsewhere':>14s} "
          f"{'sigma for 99 %':>15s}")
    summary = []
    for name, r in scores:
        edge_pct = 100 * (r["miss_jump1"] + r["miss_jump2"]) / n_valid
        other_pct = 100 * r["miss_other"] / n_valid
        needed = equivalent_sigma(1.0 - other_pct, bound) if other_pct < 1.0 else "none"
        summary.append((name, r["within"], equivalent_sigma(edge_pct, bound), other_pct, needed))
        print(f"{name:66s} {edge_pct:25.2f}% {summary[-1][2]:>22s} {other_pct:13.2f}% {needed:>15s}")
    print(f"\n({scene}: {time.perf_counter() - t0:.0f} s)")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=None, help="twin root with built scenes (default: demo/)")
    ap.add_argument("--scene", action="append", default=None,
                    help="a built twin scene (repeatable; default kitchen01); several end with a summary")
    a = ap.parse_args()
    rig = load_rig("sim")
    root = a.root or Path(__file__).resolve().parent.parent / "demo"
    scenes = a.scene or ["kitchen01"]
    for scene in scenes:
        layout = SceneLayout(root, scene)
        if not ((layout.truth_dir / "depth.npy").is_file() and layout.build_log_path.is_file()):
            message = f"{layout.scene_dir}: no built twin scene with its truth (make demo builds kitchen01)"
            if a.root is None and a.scene is None:
                print(f"depth_budget: {message}; skipped")
                return
            sys.exit(message)
    results = {scene: scene_budget(rig, root, scene) for scene in scenes}
    if len(scenes) > 1:
        print("\nsummary: within 0.5 % / equivalent sigma (px) / off away from jumps / sigma for 99 %")
        names = [name for name, *_ in results[scenes[0]]]
        print(f"{'':66s} " + " ".join(f"{s:>30s}" for s in scenes))
        for i, name in enumerate(names):
            cells = []
            for scene in scenes:
                _, within, eq, other, needed = results[scene][i]
                cells.append(f"{within:.2f}% / {eq} / {other:.2f}% / {needed}")
            print(f"{name:66s} " + " ".join(f"{c:>30s}" for c in cells))


if __name__ == "__main__":
    main()
