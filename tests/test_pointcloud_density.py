"""Adaptive-radius density filter: exact (== brute force) on clouds that exercise every pass."""

from __future__ import annotations

import numpy as np
import pytest

from zedd_capture.pointcloud import density as D
from zedd_capture.pointcloud.density import density_filter, density_filter_bruteforce

BACKENDS = ["scipy", "numba"]  # numba is a dependency (pyproject.toml): both backends are always tested


def _cloud(seed: int, n_dense: int = 3000, n_sparse: int = 800):
    rng = np.random.default_rng(seed)
    dense = rng.normal(0, 0.01, (n_dense, 3)) + rng.uniform(-1, 1, (1, 3))  # settled early
    plane = np.c_[rng.uniform(-1, 1, (n_sparse, 2)), rng.normal(0, 0.003, n_sparse)]  # exact pass
    outliers = rng.uniform(-2, 2, (200, 3))
    pts = np.vstack([dense, plane, outliers]).astype(np.float32)
    sensor = np.array([0.3, -0.2, 1.5])
    return pts, np.linalg.norm(pts - sensor, axis=1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed,alpha", [(0, 0.008), (1, 0.02), (2, 0.05)])
def test_density_filter_equals_brute_force(seed, alpha, backend):
    pts, rng = _cloud(seed)
    keep, stats = density_filter(pts, rng, alpha=alpha, k=7, return_stats=True, backend=backend)
    ref = density_filter_bruteforce(pts, rng, alpha=alpha, k=7)
    assert np.array_equal(keep, ref)
    assert stats["window_accepted"] > 0 and stats["cell_checked"] > 0
    assert 0 < keep.sum() < len(pts)


@pytest.mark.parametrize("backend", BACKENDS)
def test_density_filter_radius_spanning_many_levels(backend):
    # radii from 0.5 mm to 0.2 m (several cell levels), duplicates, a far cluster, k = 3 and 12
    rng = np.random.default_rng(7)
    pts = np.vstack([
        rng.normal(0, 0.02, (2500, 3)),
        rng.uniform(-3, 3, (1500, 3)),
        np.repeat(rng.uniform(-1, 1, (40, 3)), 5, axis=0),  # 5 identical copies each
        rng.normal(0, 0.05, (300, 3)) + [40.0, -25.0, 3.0],
    ]).astype(np.float32)
    ranges = rng.uniform(0.06, 25.0, len(pts))
    for k in (3, 12):
        keep = density_filter(pts, ranges, alpha=0.008, k=k, backend=backend)
        assert np.array_equal(keep, density_filter_bruteforce(pts, ranges, alpha=0.008, k=k))


@pytest.mark.parametrize("backend", BACKENDS)
def test_density_filter_k_boundary(backend):
    # a point with exactly 7 neighbours within r is kept, with 6 it is removed
    r = 0.1
    ang = np.linspace(0, 2 * np.pi, 8)[:-1]
    ring7 = np.c_[0.09 * np.cos(ang), 0.09 * np.sin(ang), np.zeros(7)]
    pts = np.vstack([[0, 0, 0], ring7]).astype(np.float32)
    ranges = np.full(len(pts), r / 0.008)
    assert density_filter(pts, ranges, backend=backend)[0]
    assert not density_filter(pts[:-1], ranges[:-1], backend=backend)[0]
    # a neighbour just outside r does not count
    pts[7] = [0.1005, 0.0, 0.0]
    assert not density_filter(pts, ranges, backend=backend)[0]


def test_density_filter_bad_input():
    with pytest.raises(ValueError, match="ranges"):
        density_filter(np.zeros((10, 3)), np.ones(9))
    assert not density_filter(np.zeros((5, 3)), np.ones(5)).any()  # fewer than k + 1 points
