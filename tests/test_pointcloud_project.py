"""Z-buffer projection: equals a brute-force disc splat; front-surface averaging; outliers."""

from __future__ import annotations

import numpy as np

from zedd_capture.pointcloud.project import zbuffer, zbuffer_bruteforce

K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
W, H = 80, 60


def test_splat_equals_brute_force():
    rng = np.random.default_rng(0)
    pts = np.c_[rng.uniform(-2, 2, (400, 2)), rng.uniform(1, 5, 400)].astype(np.float32)
    for r in (0, 1, 3):
        fast = zbuffer(pts, K, W, H, r, mode="splat", band_m=None)
        ref = zbuffer_bruteforce(pts, K, W, H, r)
        np.testing.assert_array_equal(fast, ref)


def test_fill_keeps_own_pixels_and_fills_holes_up_to_radius():
    # a sparse grid of points on a plane at 2 m: every 3rd pixel; radius 2 fills every hole
    u, v = np.meshgrid(np.arange(0, W, 3), np.arange(0, H, 3))
    z = np.full(u.size, 2.0)
    pts = np.c_[(u.ravel() - K[0, 2]) * z / K[0, 0], (v.ravel() - K[1, 2]) * z / K[1, 1], z].astype(np.float32)
    d = zbuffer(pts, K, W, H, 2)
    assert np.all(d[: H - 2, : W - 2] == np.float32(2.0))
    assert np.all(zbuffer(pts, K, W, H, 0)[1::3, 1::3] == 0)  # no splat: holes stay holes


def test_front_surface_average_beats_nearest_and_drops_outliers():
    rng = np.random.default_rng(1)
    n = 200_000
    u, v = rng.uniform(-0.5, W - 0.5, n), rng.uniform(-0.5, H - 0.5, n)
    z = 3.0 + rng.normal(0, 0.01, n)  # 1 cm range noise
    pts = np.c_[(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z]
    stray = np.array([[0.0, 0.0, 1.5]])  # a single stray point in front of the wall
    pts = np.vstack([pts, stray]).astype(np.float32)
    nearest = zbuffer(pts, K, W, H, 1, band_m=None)
    avg = zbuffer(pts, K, W, H, 1, support_frac=0.1)  # a front cluster needs 10% of the pixel's points
    assert np.abs(np.median(nearest) - 3.0) > 0.015  # the paper's z-buffer keeps the low tail
    assert np.percentile(np.abs(avg - 3.0) / 3.0, 99) < 0.003
    assert nearest[30, 40] < 2 and abs(avg[30, 40] - 3.0) < 0.01
    assert zbuffer(pts, K, W, H, 1)[30, 40] < 2  # default: a lone nearer point is kept (sparse foreground)
