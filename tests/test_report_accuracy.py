"""Depth accuracy figures of the report against hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest

from zedd_capture.report.accuracy import depth_accuracy


def _wall(h=60, w=80, z=3.0):
    return np.full((h, w), z, np.float32)


def test_largest_hole_is_the_distance_to_the_nearest_filled_pixel():
    truth = _wall()
    depth = truth.copy()
    depth[10:15, 20:25] = 0  # 5 x 5: its centre is 3 px from the nearest filled pixel
    depth[40, 60] = 0  # a single pixel: 1 px
    acc = depth_accuracy(depth, truth)
    assert acc["largest_hole_px"] == pytest.approx(3.0, abs=1e-3)
    assert acc["coverage"] == pytest.approx(1 - 26 / truth.size)
    depth[10:15, 20:25] = 3.0
    assert depth_accuracy(depth, truth)["largest_hole_px"] == pytest.approx(1.0, abs=1e-3)
    truth_with_sky = truth.copy()
    truth_with_sky[:, :10] = 0  # pixels without truth are not holes
    depth[:, :10] = 0
    assert depth_accuracy(depth, truth_with_sky)["largest_hole_px"] == pytest.approx(1.0, abs=1e-3)


def test_abs_rel_of_the_best_99_percent_leaves_out_the_worst_pixels_only():
    truth = _wall()
    rng = np.random.default_rng(0)
    depth = truth * (1 + rng.uniform(-0.002, 0.002, truth.shape)).astype(np.float32)
    flat = depth.ravel()
    flat[: truth.size // 200] = 1.0  # 0.5 % of the pixels on a wrong surface (-67 %)
    acc = depth_accuracy(depth, truth)
    assert acc["abs_rel"] > 0.003  # the wrong-surface pixels dominate the plain mean
    assert acc["abs_rel_best99"] == pytest.approx(0.001, rel=0.1)  # uniform +-0.2 %: mean 0.1 %
    assert acc["within_0.5pct"] == pytest.approx(0.995, abs=1e-3)
