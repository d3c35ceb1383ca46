"""Adaptive-radius density filter: exact (== brute force) on clouds that exercise both passes."""

from __future__ import annotations

import numpy as np
import pytest

from zedd_capture.pointcloud.density import density_filter, density_filter_bruteforce


def _cloud(seed: int, n_dense: int = 3000, n_sparse: int = 800):
    rng = np.random.default_rng(seed)
    dense = rng.normal(0, 0.01, (n_dense, 3)) + rng.uniform(-1, 1, (1, 3))  # early-accept pass
    plane = np.c_[rng.uniform(-1, 1, (n_sparse, 2)), rng.normal(0, 0.003, n_sparse)]  # KNN pass
    outliers = rng.uniform(-2, 2, (200, 3))
    pts = np.vstack([dense, plane, outliers]).astype(np.float32)
    sensor = np.array([0.3, -0.2, 1.5])
    return pts, np.linalg.norm(pts - sensor, axis=1)


@pytest.mark.parametrize("seed,alpha", [(0, 0.008), (1, 0.02), (2, 0.05)])
def test_density_filter_equals_brute_force(seed, alpha):
    pts, rng = _cloud(seed)
    keep, stats = density_filter(pts, rng, alpha=alpha, k=7, return_stats=True)
    ref = density_filter_bruteforce(pts, rng, alpha=alpha, k=7)
    assert np.array_equal(keep, ref)
    assert stats["early_accepted"] > 0 and stats["knn_queried"] > 0
    assert 0 < keep.sum() < len(pts)


def test_density_filter_k_boundary():
    # a point with exactly 7 neighbours within r is kept, with 6 it is removed
    r = 0.1
    ang = np.linspace(0, 2 * np.pi, 8)[:-1]
    ring7 = np.c_[0.09 * np.cos(ang), 0.09 * np.sin(ang), np.zeros(7)]
    pts = np.vstack([[0, 0, 0], ring7]).astype(np.float32)
    ranges = np.full(len(pts), r / 0.008)
    assert density_filter(pts, ranges)[0]
    assert not density_filter(pts[:-1], ranges[:-1])[0]
