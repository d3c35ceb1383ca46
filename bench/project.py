"""bench/project: z-buffer splat of 20M points into 1824x1216 at r = 3 (target <= 0.5 s on 2 cores).

    .venv/bin/python bench/project.py [--points 20000000]

Reports the paper's plain splat (nearest per pixel + disc erosion), the default front-surface
averaged z-buffer, the earlier edge-preserving smoothing, build-depth's z-buffer settings (local plane fit,
per-pixel noise) at the full 1824 x 1216, build-depth's whole projection (depth_map.project_depth: at the
456 x 304 working size, edge snapping and a second pass, the partly covered edge pixels and near speckles and a third pass,
read at 1824 x 1216), and checks the plain splat
against a brute-force disc splat on a 1% subset.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zedd_capture.pointcloud.config import BuildConfig  # noqa: E402
from zedd_capture.pointcloud.depth_map import project_depth  # noqa: E402
from zedd_capture.pointcloud.project import zbuffer, zbuffer_bruteforce  # noqa: E402


def scene_points(n: int, seed: int = 0) -> np.ndarray:
    """Points on a room-like set of planes in front of a camera (z forward), 1-10 m."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1, 1, n).astype(np.float32)
    v = rng.uniform(-0.67, 0.67, n).astype(np.float32)
    z = np.where(u < -0.3, 2.0 + 3 * (u + 1), np.where(v > 0.3, 1.5 + 2 * v, 6.0)).astype(np.float32)
    z += rng.normal(0, 0.01, n).astype(np.float32)
    return np.stack([u * z * 0.72, v * z * 0.72, z], 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=20_000_000)
    a = ap.parse_args()
    W, H, r = 1824, 1216, 3
    K = np.array([[W / 1.44, 0, (W - 1) / 2], [0, W / 1.44, (H - 1) / 2], [0, 0, 1]])
    pts = scene_points(a.points)
    out = {"points": a.points, "size": [W, H], "radius_px": r}
    variants = (("paper_splat", dict(mode="splat", band_m=None)), ("default_fill_band", dict()),
                ("smooth_r1", dict(occlusion_radius_px=8, smooth_radius_px=1)),
                # config.BuildConfig defaults: local plane fit with per-pixel noise, spill removal, plane-read fill
                ("build_depth_settings_native", dict(config=BuildConfig().zbuffer_config())))
    for name, kw in variants:
        zbuffer(pts[:100_000], K, W, H, r, **kw)
        ts = []
        for _ in range(1 if name == "build_depth_settings_native" else 3):
            t = time.perf_counter()
            zbuffer(pts, K, W, H, r, **kw)
            ts.append(time.perf_counter() - t)
        out[f"{name}_s"] = min(ts)
    # build-depth's projection as it runs: two sweep positions beside the camera measured the points
    sensors = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    frames = (np.arange(len(pts)) % 2).astype(np.uint16)
    t = time.perf_counter()
    _, stats = project_depth(pts, sensors, frames, K, W, H, r, BuildConfig())
    out["build_depth_project_s"] = time.perf_counter() - t
    out["build_depth_project_size"] = stats["projection_size"]
    out["edge_snap_dropped"] = stats["edge_snap"]["dropped"]
    sub = pts[:: max(1, a.points // 20000)]
    Ks = K.copy()
    Ks[:2] /= 8  # small image for the brute-force check
    fast = zbuffer(sub, Ks, W // 8, H // 8, r, mode="splat", band_m=None)
    ref = zbuffer_bruteforce(sub, Ks, W // 8, H // 8, r)
    out["equals_bruteforce"] = bool(np.array_equal(fast, ref))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
