"""Adaptive-radius density filter (the paper's outlier removal), exact and fast.

A point x is kept when at least ``k`` other points lie within ``r(x) = alpha * range(x)``, where
range is the distance from the sensor position that measured x. Equivalently: the distance to
its (k+1)-th nearest neighbour (itself included) is <= r(x). Every decision below is made by
counting true point distances, so the result equals the brute-force definition.

Compiled path (numba, used when installed):
1. Points are sorted by Morton (Z-order) code of ``base``-sized cells (1 mm) with an LSD radix
   sort, so for every level l a cell of size ``base * 2**l`` is one contiguous run.
2. Window pass: each point counts the points within r among its +-``window`` Morton neighbours
   (spatially close after the sort) and stops at k+1: most points are settled here.
3. Cell pass for the rest: with the level whose cell size s >= r + 2 base, every neighbour within
   r lies in the 3x3x3 block of cells around the point's cell; their runs are found by binary
   search (cached per cell and level), boxes farther than r are skipped, counting stops at k+1.
Fallback (no numba): Morton cell-count early accept, then scipy cKDTree k+1 queries.
"""

from __future__ import annotations

import numpy as np

ALPHA = 0.008
K_NEIGHBOURS = 7
_BASE_CELL_M = 0.001
_BITS = 21
_WINDOW = 16

try:  # optional compiled path
    import os

    import numba as _nb

    if "NUMBA_THREADING_LAYER" not in os.environ:
        _nb.config.THREADING_LAYER_PRIORITY = ["omp", "workqueue", "tbb"]  # old system TBB only warns
except ImportError:  # pragma: no cover - exercised only without numba
    _nb = None


def _part1by2(x: np.ndarray) -> np.ndarray:
    """Spread the low 21 bits of uint64 ``x`` (array or scalar) to every third bit (numpy; compiled as _spread)."""
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
    backend: str = "auto",
):
    """Boolean keep-mask: >= ``k`` neighbours within ``alpha * ranges`` (metres) of each point.

    points: (N, 3) metres (any float dtype), ranges: (N,) metres from each point's sensor position.
    workers: threads (-1: all cores). backend: "auto" (numba if installed), "numba" or "scipy".
    """
    points = np.asarray(points)
    ranges = np.asarray(ranges)
    if points.ndim != 2 or points.shape[1] != 3 or len(ranges) != len(points):
        raise ValueError(f"density_filter: points must be (N, 3) and ranges (N,), got {points.shape} and {ranges.shape}")
    if backend == "auto":
        backend = "numba" if _nb is not None else "scipy"
    if backend == "numba":
        if _nb is None:
            raise ImportError("density_filter: backend 'numba' requested but numba is not installed")
        keep, stats = _density_numba(points, ranges, alpha, k, workers)
    elif backend == "scipy":
        keep, stats = _density_scipy(points, ranges, alpha, k, workers)
    else:
        raise ValueError(f"density_filter: unknown backend {backend!r} (auto|numba|scipy)")
    return (keep, stats) if return_stats else keep


# --- compiled path ----------------------------------------------------------------------------
if _nb is not None:

    _spread_bits = _nb.njit(cache=True, inline="always")(_part1by2)  # the same bit spreading, on one uint64

    @_nb.njit(cache=True, inline="always")
    def _spread(v):
        return _spread_bits(np.uint64(v))

    @_nb.njit(cache=True, inline="always")
    def _morton(gx, gy, gz):
        """Morton key of integer cell coordinates (21 bits each)."""
        return _spread(gx) | (_spread(gy) << np.uint64(1)) | (_spread(gz) << np.uint64(2))

    @_nb.njit(cache=True, inline="always")
    def _gap(a, f, c, s):
        """Distance (m) from a point at fractional cell coordinate f (cell c, size s) to the neighbouring
        cell at offset a (-1, 0, +1) along one axis; 0 for its own cell."""
        if a == -1:
            return (f - c) * s
        if a == 1:
            return (c + 1 - f) * s
        return 0.0

    @_nb.njit(cache=True, parallel=True)
    def _keys_levels(points, radius, lo, base):
        """Morton keys of base cells, per-point level (cell base*2**l >= r + 2 base; -1: invalid r)."""
        n = points.shape[0]
        keys = np.empty(n, np.uint64)
        level = np.empty(n, np.int8)
        for i in _nb.prange(n):
            q0 = np.int64(np.floor((np.float64(points[i, 0]) - lo[0]) / base))
            q1 = np.int64(np.floor((np.float64(points[i, 1]) - lo[1]) / base))
            q2 = np.int64(np.floor((np.float64(points[i, 2]) - lo[2]) / base))
            keys[i] = _morton(q0, q1, q2)
            r = radius[i]
            if not (r >= 0.0 and r < 1e30):
                level[i] = -1
                continue
            need = r / base + 2.0
            lv = 0
            while lv < 20 and (1 << lv) < need:
                lv += 1
            level[i] = lv
        return keys, level

    @_nb.njit(cache=True)
    def _radix_argsort(keys, shift, nbits):
        """Stable LSD radix argsort of ``keys >> shift`` over its low ``nbits`` bits."""
        n = keys.shape[0]
        RB = 11
        mask = np.uint64((1 << RB) - 1)
        k1 = keys >> np.uint64(shift)
        k2 = np.empty_like(k1)
        i1 = np.arange(n)
        i2 = np.empty_like(i1)
        s = 0
        while s < nbits:
            cnt = np.zeros((1 << RB) + 1, np.int64)
            sh = np.uint64(s)
            for i in range(n):
                cnt[np.int64((k1[i] >> sh) & mask) + 1] += 1
            for b in range(1 << RB):
                cnt[b + 1] += cnt[b]
            for i in range(n):
                d = np.int64((k1[i] >> sh) & mask)
                p = cnt[d]
                cnt[d] = p + 1
                k2[p] = k1[i]
                i2[p] = i1[i]
            k1, k2 = k2, k1
            i1, i2 = i2, i1
            s += RB
        return k1, i1

    @_nb.njit(cache=True, parallel=True)
    def _gather(points, radius, level, order):
        n = order.shape[0]
        P = np.empty((n, 3), np.float64)
        R = np.empty(n, np.float64)
        L = np.empty(n, np.int8)
        for i in _nb.prange(n):
            j = order[i]
            P[i, 0] = points[j, 0]
            P[i, 1] = points[j, 1]
            P[i, 2] = points[j, 2]
            R[i] = radius[j]
            L[i] = level[j]
        return P, R, L

    @_nb.njit(cache=True, inline="always")
    def _within(P, i, j, r, r2lo, r2hi):
        dx = P[j, 0] - P[i, 0]
        dy = P[j, 1] - P[i, 1]
        dz = P[j, 2] - P[i, 2]
        d2 = dx * dx + dy * dy + dz * dz
        if d2 <= r2lo:
            return True
        if d2 > r2hi:
            return False
        return np.sqrt(d2) <= r  # exact tie-break, as np.linalg.norm(d) <= r

    @_nb.njit(cache=True)
    def _lower_bound(a, v):
        lo_ = 0
        hi_ = a.shape[0]
        while lo_ < hi_:
            mid = (lo_ + hi_) >> 1
            if a[mid] < v:
                lo_ = mid + 1
            else:
                hi_ = mid
        return lo_

    @_nb.njit(cache=True, parallel=True)
    def _decide(P, R, L, skeys, shift_levels, lo, base, need, window, chunk):
        """keep (sorted order) and how each point was decided (1 window, 2 cells)."""
        n = P.shape[0]
        keep = np.zeros(n, np.bool_)
        how = np.zeros(n, np.int8)
        nchunks = (n + chunk - 1) // chunk
        for c in _nb.prange(nchunks):
            cache_key = np.full(22, np.uint64(0xFFFFFFFFFFFFFFFF))
            cache_rng = np.zeros((22, 27, 2), np.int64)
            for i in range(c * chunk, min(n, (c + 1) * chunk)):
                lv = L[i]
                if lv < 0:
                    continue
                r = R[i]
                r2lo = r * r * (1.0 - 1e-12)
                r2hi = r * r * (1.0 + 1e-12)
                cnt = 1  # itself
                # window pass over Morton neighbours
                for off in range(1, window + 1):
                    j = i - off
                    if j >= 0 and _within(P, i, j, r, r2lo, r2hi):
                        cnt += 1
                    j = i + off
                    if j < n and _within(P, i, j, r, r2lo, r2hi):
                        cnt += 1
                    if cnt >= need:
                        break
                if cnt >= need:
                    keep[i] = True
                    how[i] = 1
                    continue
                how[i] = 2
                # cell pass: 27 cells of size s = base * 2**lv >= r + 2 base
                dl = np.uint64(3 * (lv - shift_levels))
                s = base * (1 << lv)
                fx = (P[i, 0] - lo[0]) / s
                fy = (P[i, 1] - lo[1]) / s
                fz = (P[i, 2] - lo[2]) / s
                cx = np.int64(np.floor(fx))
                cy = np.int64(np.floor(fy))
                cz = np.int64(np.floor(fz))
                ck = skeys[i] >> dl
                if cache_key[lv] != ck:
                    cache_key[lv] = ck
                    m = 0
                    for ax in range(-1, 2):
                        for ay in range(-1, 2):
                            for az in range(-1, 2):
                                gx = cx + ax
                                gy = cy + ay
                                gz = cz + az
                                if gx < 0 or gy < 0 or gz < 0:
                                    cache_rng[lv, m, 0] = 0
                                    cache_rng[lv, m, 1] = 0
                                else:
                                    nk = _morton(gx, gy, gz)
                                    a = _lower_bound(skeys, nk << dl)
                                    b = _lower_bound(skeys, (nk + np.uint64(1)) << dl)
                                    cache_rng[lv, m, 0] = a
                                    cache_rng[lv, m, 1] = b
                                m += 1
                cnt = 0
                tol = 1e-6
                m = 0
                for ax in range(-1, 2):
                    gapx = _gap(ax, fx, cx, s)
                    for ay in range(-1, 2):
                        gapy = _gap(ay, fy, cy, s)
                        for az in range(-1, 2):
                            gapz = _gap(az, fz, cz, s)
                            a = cache_rng[lv, m, 0]
                            b = cache_rng[lv, m, 1]
                            m += 1
                            if a >= b or cnt >= need:
                                continue
                            gx_ = max(gapx - tol, 0.0)
                            gy_ = max(gapy - tol, 0.0)
                            gz_ = max(gapz - tol, 0.0)
                            if gx_ * gx_ + gy_ * gy_ + gz_ * gz_ > r2hi:
                                continue  # the whole cell is farther than r
                            for j in range(a, b):
                                if _within(P, i, j, r, r2lo, r2hi):
                                    cnt += 1
                                    if cnt >= need:
                                        break
                keep[i] = cnt >= need
        return keep, how

    @_nb.njit(cache=True, parallel=True)
    def _scatter(keep_sorted, order):
        keep = np.zeros(order.shape[0], np.bool_)
        for i in _nb.prange(order.shape[0]):
            keep[order[i]] = keep_sorted[i]
        return keep


def _density_numba(points, ranges, alpha, k, workers):
    n = len(points)
    stats = {"points": n, "backend": "numba", "window_accepted": 0, "cell_checked": 0}
    if n <= k:
        return np.zeros(n, dtype=bool), stats
    if workers and workers > 0:
        prev = _nb.get_num_threads()
        _nb.set_num_threads(min(workers, _nb.config.NUMBA_NUM_THREADS))
    try:
        pts = np.ascontiguousarray(points)
        radius = alpha * np.asarray(ranges, dtype=np.float64)
        lo = pts.min(axis=0).astype(np.float64) - 1e-6
        extent = float((pts.max(axis=0) - lo).max())
        base = max(_BASE_CELL_M, extent / (2**_BITS - 4))
        if float(np.nanmax(np.where(np.isfinite(radius), radius, 0.0))) / base + 2 > 2**20:
            return _density_scipy(points, ranges, alpha, k, workers)  # radii beyond the cell levels
        keys, level = _keys_levels(pts, radius, lo, base)
        valid = level >= 0
        lmin = int(level[valid].min()) if valid.any() else 0
        nbits = 3 * max(int(np.ceil(np.log2(extent / base + 2))), 1) - 3 * lmin
        skeys, order = _radix_argsort(keys, 3 * lmin, max(nbits, 1))
        del keys
        P, R, L = _gather(pts, radius, level, order)
        keep_sorted, how = _decide(P, R, L, skeys, lmin, lo, base, k + 1, _WINDOW, 16384)
        stats["window_accepted"] = int((how == 1).sum())
        stats["cell_checked"] = int((how == 2).sum())
        return _scatter(keep_sorted, order), stats
    finally:
        if workers and workers > 0:
            _nb.set_num_threads(prev)


# --- fallback (scipy) -------------------------------------------------------------------------
def _density_scipy(points, ranges, alpha, k, workers):
    from scipy.spatial import cKDTree

    n = len(points)
    radius = alpha * np.asarray(ranges, dtype=np.float64)
    keep = np.zeros(n, dtype=bool)
    stats = {"points": n, "backend": "scipy", "window_accepted": 0, "cell_checked": 0}
    if n <= k:
        return keep, stats
    # pass 1: early accept by Morton cell counts (a cell whose diagonal fits in r holds only neighbours)
    lo = points.min(axis=0).astype(np.float64)
    keys = morton_keys(points, _BASE_CELL_M, lo)
    order = np.argsort(keys)
    ks = keys[order]
    del keys
    r_sorted = radius[order]
    with np.errstate(divide="ignore"):
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
    stats["window_accepted"] = int(accepted.sum())
    undecided_sorted = np.flatnonzero(~accepted)
    keep[order[accepted]] = True
    del ks, accepted
    # pass 2: exact k+1 nearest neighbour check for the rest
    if len(undecided_sorted):
        idx = order[undecided_sorted]
        idx = idx[np.argsort(radius[idx])]
        stats["cell_checked"] = int(len(idx))
        tree = cKDTree(points, leafsize=32, balanced_tree=False, compact_nodes=False)
        batch = 100_000
        for s in range(0, len(idx), batch):
            b = idx[s : s + batch]
            rb = radius[b]
            d, _ = tree.query(points[b], k=k + 1, distance_upper_bound=float(rb.max()) * (1 + 1e-9), workers=workers)
            keep[b] = d[:, k] <= rb
    return keep, stats


def density_filter_bruteforce(points: np.ndarray, ranges: np.ndarray, alpha: float = ALPHA, k: int = K_NEIGHBOURS):
    """Reference implementation (O(N^2) memory in chunks); for tests on small clouds only."""
    points = np.asarray(points, dtype=np.float64)
    r = alpha * np.asarray(ranges, dtype=np.float64)
    keep = np.zeros(len(points), dtype=bool)
    for s in range(0, len(points), 512):
        d = np.linalg.norm(points[s : s + 512, None, :] - points[None, :, :], axis=-1)
        keep[s : s + 512] = (d <= r[s : s + 512, None]).sum(axis=1) - 1 >= k
    return keep
