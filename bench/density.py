"""bench/density: exact adaptive-radius density filter on 20M points (target <= 15 s on 2 cores).

    .venv/bin/python bench/density.py [--points 20000000] [--ply scenes/x/work/world_cloud.ply] [--backend numba|scipy]

Synthetic room surfaces with noise and outliers (or a world_cloud.ply written by build-depth:
float x y z range); checks exactness against scipy's k=8 KNN on a random subset of points.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zedd_capture.pointcloud.density import ALPHA, K_NEIGHBOURS, density_filter  # noqa: E402


def room(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dims = np.array([8.0, 6.0, 3.0])
    face = rng.integers(0, 6, n)
    P = np.zeros((n, 3), np.float32)
    uv = rng.random((n, 2))
    for f in range(6):
        m = face == f
        ax = f // 2
        o = [a for a in range(3) if a != ax]
        P[m, ax] = dims[ax] * (f % 2)
        P[m, o[0]] = uv[m, 0] * dims[o[0]]
        P[m, o[1]] = uv[m, 1] * dims[o[1]]
    P += rng.normal(0, 0.005, (n, 3)).astype(np.float32)
    P[: n // 200] = (rng.random((n // 200, 3)) * dims).astype(np.float32)  # 0.5% outliers
    sensor = np.array([4.0, 3.0, 1.5], np.float32)
    return P, np.linalg.norm(P - sensor, axis=1)


def read_ply(path: Path):
    raw = path.read_bytes()
    i = raw.index(b"end_header\n") + len(b"end_header\n")
    a = np.frombuffer(raw[i:], dtype=np.float32).reshape(-1, 4)
    return np.ascontiguousarray(a[:, :3]), a[:, 3].copy()


def main() -> None:
    from scipy.spatial import cKDTree

    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=20_000_000)
    ap.add_argument("--ply", type=Path, default=None)
    ap.add_argument("--backend", default="auto", choices=["auto", "numba", "scipy"])
    ap.add_argument("--workers", type=int, default=-1)
    a = ap.parse_args()
    P, r = read_ply(a.ply) if a.ply else room(a.points)
    if a.backend != "scipy":  # compile outside the timing (numba caches it on disk after the first run)
        density_filter(P[:1000], r[:1000], ALPHA, K_NEIGHBOURS, backend=a.backend)
    t = time.perf_counter()
    keep, stats = density_filter(P, r, ALPHA, K_NEIGHBOURS, workers=a.workers, return_stats=True, backend=a.backend)
    dt = time.perf_counter() - t
    idx = np.random.default_rng(1).choice(len(P), 20000, replace=False)
    d, _ = cKDTree(P).query(P[idx], k=K_NEIGHBOURS + 1, workers=-1)
    exact = bool(np.array_equal(keep[idx], d[:, K_NEIGHBOURS] <= ALPHA * r[idx]))
    print(json.dumps({"source": str(a.ply) if a.ply else "synthetic room", "points": len(P), "seconds": dt,
                      "kept_fraction": float(keep.mean()), **stats, "exact_on_20k_sample": exact}))


if __name__ == "__main__":
    main()
