"""Adaptive-radius density filter (the paper's outlier removal), exact and fast.

A point x is kept when at least ``k`` other points lie within ``r(x) = alpha * range(x)``, where
range is the distance from the sensor position that measured x. Equivalently: the distance to
its (k+1)-th nearest neighbour (itself included) is <= r(x).

Exact in two passes:
1. Early accept (no approximation): points are sorted by a Morton code of 1 mm cells. For each
   point take the coarsest power-of-two cell whose diagonal is <= r(x); every point inside that
   cell is within r(x) of x, so a cell holding >= k+1 points proves x is kept. Run lengths of
   the Morton-sorted keys give those cell counts in O(N) per level.
2. The remaining points are decided by a k+1 nearest-neighbour query (scipy cKDTree, all cores)
   with a distance bound, in batches of similar radius.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.008
K_NEIGHBOURS = 7
_BASE_CELL_M = 0.001
_BITS = 21


def _part1by2(x: np.ndarray) -> np.ndarray:
    x = x & np.uint64(0x1FFFFF)
    x = (x | (x << np.uint64(32))) & np.uint64(0x1F00000000FFFF)
    x = (x | (x << np.uint64(16))) & np.uint64(0x1F0000FF0000FF)
    x = (x | (x << np.uint64(8))) & np.uint64(0x100F00F00F00F00F)
    x = (x | (x << np.uint64(4))) & np.uint64(0x10C30C30C30C30C3)
    x = (x | (x << np.uint64(2))) & np.uint64(0x1249249249249249)
    return x


def morton_keys(points: np.ndarray, cell: float, lo: np.ndarray) -> np.ndarray:
    """Morton (Z-order) codes of the ``cell``-sized voxels (origin ``lo``) of (N, 3) points (21 bits per axis)."""
    q = np.floor((points - lo) / cell)
    if q.max() >= 2**_BITS:
        raise ValueError(f"cloud extent {np.ptp(points, axis=0)} m too large for {cell} m Morton cells")
    q = q.astype(np.uint64)
    return _part1by2(q[:, 0]) | (_part1by2(q[:, 1]) << np.uint64(1)) | (_part1by2(q[:, 2]) << np.uint64(2))


def point_ranges(points: np.ndarray, sensor_positions: np.ndarray) -> np.ndarray:
    """Distance (m) of each point from the sensor position that measured it ((N,3) or (3,))."""
    return np.linalg.norm(points - sensor_positions, axis=-1)


def density_filter(
    points: np.ndarray,
    ranges: np.ndarray,
    alpha: float = ALPHA,
    k: int = K_NEIGHBOURS,
    workers: int = -1,
    return_stats: bool = False,
):
    """Boolean keep-mask: >= ``k`` neighbours within ``alpha * ranges`` (metres) of each point.

    points: (N, 3) metres (any float dtype), ranges: (N,) metres from each point's sensor position.
    """
    from scipy.spatial import cKDTree

    points = np.asarray(points)
    n = len(points)
    radius = alpha * np.asarray(ranges, dtype=np.float64)
    keep = np.zeros(n, dtype=bool)
    stats = {"points": n, "early_accepted": 0, "knn_queried": 0}
    if n <= k:
        return (keep, stats) if return_stats else keep
    # --- pass 1: early accept by Morton cell counts -------------------------------------
    lo = points.min(axis=0).astype(np.float64)
    keys = morton_keys(points, _BASE_CELL_M, lo)
    order = np.argsort(keys)
    ks = keys[order]
    del keys
    r_sorted = radius[order]
    with np.errstate(divide="ignore"):
        # coarsest level whose cell diagonal fits in r (then any in-cell point is a neighbour) ...
        lv_min = np.floor(np.log2(np.maximum(r_sorted, 1e-12) / (np.sqrt(3.0) * _BASE_CELL_M)))
    lv_lo = int(max(lv_min.min(), 0))
    lv_hi = int(min(lv_min.max() + 1, _BITS - 1))
    accepted = np.zeros(n, dtype=bool)
    for lv in range(lv_hi, lv_lo - 1, -1):
        # ... or one level coarser when the cell's farthest corner from the point is within r
        cand = np.flatnonzero(~accepted & (lv_min >= lv - 1) & (lv_min >= 0))
        if not len(cand):
            continue
        kc = ks >> np.uint64(3 * lv)
        starts = np.flatnonzero(np.concatenate(([True], kc[1:] != kc[:-1])))
        counts = np.diff(np.append(starts, n))
        run_of = np.repeat(np.arange(len(starts)), counts)
        cand = cand[counts[run_of[cand]] >= k + 1]
        x = (points[order[cand]] - lo) / _BASE_CELL_M  # same quantisation as the Morton keys
        cell_lo = np.floor(np.floor(x) / 2.0**lv) * 2.0**lv
        f = (x - cell_lo) / 2.0**lv
        far = _BASE_CELL_M * 2.0**lv * np.sqrt((np.maximum(f, 1.0 - f) ** 2).sum(axis=1))
        accepted[cand[far <= r_sorted[cand] * (1 - 1e-9)]] = True
    stats["early_accepted"] = int(accepted.sum())
    undecided_sorted = np.flatnonzero(~accepted)
    keep[order[accepted]] = True
    del ks, accepted
    # --- pass 2: exact k+1 nearest neighbour check for the rest --------------------------
    if len(undecided_sorted):
        idx = order[undecided_sorted]
        idx = idx[np.argsort(radius[idx])]
        stats["knn_queried"] = int(len(idx))
        tree = cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=False)
        batch = 100_000
        for s in range(0, len(idx), batch):
            b = idx[s : s + batch]
            rb = radius[b]
            d, _ = tree.query(points[b], k=k + 1, distance_upper_bound=float(rb.max()) * (1 + 1e-9), workers=workers)
            keep[b] = d[:, k] <= rb
    return (keep, stats) if return_stats else keep


def density_filter_bruteforce(points: np.ndarray, ranges: np.ndarray, alpha: float = ALPHA, k: int = K_NEIGHBOURS):
    """Reference implementation (O(N^2) memory in chunks); for tests on small clouds only."""
    points = np.asarray(points, dtype=np.float64)
    r = alpha * np.asarray(ranges, dtype=np.float64)
    keep = np.zeros(len(points), dtype=bool)
    for s in range(0, len(points), 512):
        d = np.linalg.norm(points[s : s + 512, None, :] - points[None, :, :], axis=-1)
        keep[s : s + 512] = (d <= r[s : s + 512, None]).sum(axis=1) - 1 >= k
    return keep
