"""Per-pixel planes of a depth map and the plane-read upsampling of the projection."""

from __future__ import annotations

import numpy as np

from zedd_capture.geometry import scale_intrinsics
from zedd_capture.pointcloud.depth_map import working_factor
from zedd_capture.pointcloud.planes import pixel_planes, upsample_depth

K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
W, H = 80, 60
N_TRUE = np.array([0.3, -0.2, -1.0]) / np.linalg.norm([0.3, -0.2, -1.0])


def _plane_depth(Kp, w, h, offset_m=2.0):
    """Depth (h, w) of the plane N_TRUE . X = -offset_m at the pixel-centre rays of Kp."""
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    rays = np.stack([(u - Kp[0, 2]) / Kp[0, 0], (v - Kp[1, 2]) / Kp[1, 1], np.ones((h, w))])
    return (offset_m / -(N_TRUE @ rays.reshape(3, -1))).reshape(h, w)


def test_pixel_planes_recover_a_tilted_plane_and_stop_at_edges():
    n_true = N_TRUE
    depth = _plane_depth(K, W, H)
    point, normal = pixel_planes(depth.astype(np.float32), K)
    cos = np.abs(normal.reshape(-1, 3) @ n_true)
    assert cos.min() > 0.9999
    np.testing.assert_allclose(point[..., 2], depth, rtol=1e-6)
    step = depth.copy()
    step[:, 40:] *= 2  # a depth edge: the normals on both sides still come from their own side only
    _, normal = pixel_planes(step.astype(np.float32), K)
    assert np.abs(normal.reshape(-1, 3) @ n_true).min() > 0.9999


def test_upsampling_reads_each_pixels_plane_at_the_fine_rays():
    for factor in (2, 4):
        K_fine = scale_intrinsics(K, (W, H), (W * factor, H * factor))
        fine = upsample_depth(_plane_depth(K, W, H).astype(np.float32), K, factor, K_fine)
        truth = _plane_depth(K_fine, W * factor, H * factor)
        assert fine.shape == truth.shape and fine.dtype == np.float32
        assert np.max(np.abs(fine - truth) / truth) < 1e-4  # finite-difference gradients (one-sided at the border)
        # the coarse map repeated (nearest) is off by up to half a coarse pixel's slope
        assert np.max(np.abs(np.repeat(np.repeat(_plane_depth(K, W, H), factor, 0), factor, 1) - truth) / truth) > 1e-3


def test_upsampling_keeps_edges_and_holes_where_the_coarse_map_has_them():
    coarse = np.full((H, W), 4.0, np.float32)
    coarse[:, :30] = 1.5  # a board in front of a wall
    coarse[10:12, 50:53] = 0  # a hole
    fine = upsample_depth(coarse, K, 4, scale_intrinsics(K, (W, H), (4 * W, 4 * H)))
    np.testing.assert_allclose(fine[:, : 4 * 30], 1.5, rtol=1e-6)  # no value between the two surfaces
    np.testing.assert_allclose(fine[:, 4 * 30:][fine[:, 4 * 30:] > 0], 4.0, rtol=1e-6)
    assert np.all(fine[40:48, 200:212] == 0) and (fine == 0).sum() == 16 * 6
    np.testing.assert_array_equal(upsample_depth(coarse, K, 1, K), coarse)


def test_working_factor_divides_the_map():
    assert working_factor(1824, 1216, 456) == 4  # the reference rig -> 456 x 304
    assert working_factor(456, 304, 456) == 1 and working_factor(228, 152, 456) == 1
    assert working_factor(1826, 1216, 456) == 2  # 4 and 3 do not divide 1826
    assert working_factor(1824, 1216, None) == 1
