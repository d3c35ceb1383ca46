"""Edge snapping: points near depth edges moved along their sensor rays onto the surfaces around them."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zedd_capture.pointcloud.edge_snap import (near_speckle_points, partial_edge_points, slide_along_rays, snap_edge_points,
                                              speckle_pixels)
from zedd_capture.pointcloud.config import BuildConfig
from zedd_capture.pointcloud.project import depth_edge_band, zbuffer

K = np.array([[240.0, 0, 39.5], [0, 240.0, 29.5], [0, 0, 1]])  # 1 px = 6 mm at 1.5 m
W, H = 80, 60
BOARD_Z, WALL_Z, BOARD_EDGE_X = 1.5, 4.0, 0.0125  # the board covers camera x < 2 px right of the centre


def _board_scene(rng, board_noise_m=0.02):
    """A board at 1.5 m (x < BOARD_EDGE_X) before a wall at 4 m. The board is measured from a sensor 0.8 m to
    the right of the camera (its 2 cm range noise points ~28 deg off the camera rays: its points scatter
    ~1.6 px sideways), the wall from one next to the camera (everywhere, also behind the board).
    Returns (points (N, 3), sensor positions (2, 3), frame index (N,), truth depth (H, W))."""
    sensors = np.array([[0.8, 0.0, 0.0], [0.05, 0.0, 0.0]])
    n_board = 12 * 40 * H
    board = np.c_[rng.uniform(-0.2, BOARD_EDGE_X, n_board), rng.uniform(-0.15, 0.15, n_board), np.full(n_board, BOARD_Z)]
    n_wall = 8 * W * H
    wall = np.c_[rng.uniform(-0.7, 0.7, n_wall), rng.uniform(-0.5, 0.5, n_wall), np.full(n_wall, WALL_Z)]

    def measured(true, sensor, sigma):
        ray = true - sensor
        ray /= np.linalg.norm(ray, axis=1, keepdims=True)
        return true + rng.normal(0, sigma, len(true))[:, None] * ray

    pts = np.vstack([measured(board, sensors[0], board_noise_m), measured(wall, sensors[1], 0.01)]).astype(np.float32)
    frames = np.r_[np.zeros(n_board, np.int64), np.ones(n_wall, np.int64)]
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    xn, yn = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    on_board = (xn * BOARD_Z > -0.2) & (xn * BOARD_Z < BOARD_EDGE_X) & (np.abs(yn * BOARD_Z) < 0.15)
    truth = np.where(on_board, BOARD_Z, WALL_Z)
    return pts, sensors, frames, truth


def _project(pts, **overrides):
    return zbuffer(pts, K, W, H, 2, BuildConfig().zbuffer_config(), **overrides)


def _u(points):
    return points[:, 0] / points[:, 2] * K[0, 0] + K[0, 2]


def _within(dm, truth):
    return np.mean(np.abs(dm - truth) / truth < 0.005)


def test_spilled_board_points_go_back_onto_the_board():
    pts, sensors, frames, truth = _board_scene(np.random.default_rng(3))
    first = _project(pts)
    # landing within 1 px of the plane's pixel: the board's plane is not extended past its silhouette
    snapped, keep = snap_edge_points(pts, sensors, frames, first, K, land_px=1.0)
    second = _project(snapped[keep])
    # board points more than half a pixel past the board's true edge (sideways error in the image)
    board = frames == 0
    edge_u = K[0, 0] * BOARD_EDGE_X / BOARD_Z + K[0, 2]
    past_before = np.mean(_u(pts[board]) > edge_u + 0.5)
    past_after = np.mean(_u(snapped[board & keep]) > edge_u + 0.5)
    assert past_before > 0.005
    assert past_after < 0.2 * past_before
    assert np.mean(keep[board]) > 0.85  # 2 cm noise, 3 cm gate: the tails beyond 1.5 sigma go
    assert _within(second, truth) >= _within(first, truth) - 0.002
    assert np.all(second > 0)
    # the projection's curvature correction (local_planes.fit_planes_multiscale) already gets the board's pixels 1 px
    # from its edge right in the first map (97.0 -> 98.2 % within 0.5 %); without it, snapping is what does
    flat = dict(plane_curvature=False)
    first_flat = _project(pts, **flat)
    snapped_flat, keep_flat = snap_edge_points(pts, sensors, frames, first_flat, K, land_px=1.0)
    assert _within(_project(snapped_flat[keep_flat], **flat), truth) > _within(first_flat, truth) + 0.005
    # landing within 2.5 px (the default, for the planes of far surfaces hidden behind a near one's first-map
    # fringe) may extend the board's plane up to 2.5 px past its edge; dropping the board's points from the edge
    # pixels it covers less than half of puts the edge back
    snapped, keep = snap_edge_points(pts, sensors, frames, first, K)
    second = _project(snapped[keep])
    third = _project(snapped[keep][~partial_edge_points(snapped[keep], None, second, K)])
    assert _within(third, truth) > _within(first, truth) + 0.005
    assert np.all(third > 0)


def test_mixed_returns_beside_a_silhouette_are_dropped_and_far_points_untouched():
    rng = np.random.default_rng(4)
    pts, sensors, frames, truth = _board_scene(rng)
    # mixed returns of a third sensor 0.8 m to the left: along its rays that graze the board's edge, 10-90 %
    # of the way to the wall; the camera sees them beside the silhouette, over the wall
    sensors = np.vstack([sensors, [[-0.8, 0.0, 0.0]]])
    n = 300
    edge = np.c_[np.full(n, BOARD_EDGE_X), rng.uniform(-0.1, 0.1, n), np.full(n, BOARD_Z)]
    ray = (edge - sensors[2]) / np.linalg.norm(edge - sensors[2], axis=1, keepdims=True)
    mixed = edge + (rng.uniform(0.1, 0.9, n) * (WALL_Z - BOARD_Z) / ray[:, 2])[:, None] * ray
    allp = np.vstack([pts, mixed]).astype(np.float32)
    allf = np.r_[frames, np.full(n, 2)]
    first = _project(allp)
    snapped, keep = snap_edge_points(allp, sensors, allf, first, K)
    second = _project(snapped[keep])

    def neither_surface(dm):
        return int(((dm > 1.6) & (dm < 3.9)).sum())

    assert neither_surface(first) > 20
    assert neither_surface(second) == 0
    assert _within(second, truth) > _within(first, truth) + 0.005  # 97.2 -> 98.1 % (96.0 -> 98.0 % without curvature)
    # points far from any depth edge of the first map are returned as they were
    near_edge = cv2.dilate(depth_edge_band(first).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0  # zone 3 px + 1
    u, v = np.rint(_u(allp)).astype(int), np.rint(allp[:, 1] / allp[:, 2] * K[1, 1] + K[1, 2]).astype(int)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    far = inside & ~near_edge[v.clip(0, H - 1), u.clip(0, W - 1)]
    assert far.mean() > 0.3
    np.testing.assert_array_equal(snapped[far], allp[far])
    assert keep[far].all()
    # a moved point only slides along its own sensor ray
    moved = np.any(snapped != allp, axis=1)
    assert moved.sum() > 100
    ray = allp[moved] - sensors[allf[moved]]
    ray /= np.linalg.norm(ray, axis=1, keepdims=True)
    step = (snapped[moved] - allp[moved]).astype(np.float64)
    off_ray = np.linalg.norm(np.cross(ray, step), axis=1)  # m, float32 rounding only
    assert off_ray.max() < 2e-6 and np.abs(step).max() <= 0.03 + 1e-6


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="frame_index"):
        snap_edge_points(np.zeros((5, 3), np.float32), np.zeros((1, 3)), np.zeros(4, int), np.ones((H, W)), K)


@pytest.mark.parametrize("edge_u, board_at_42", [(41.8, False), (42.2, True)])
def test_a_pixel_that_the_near_surface_covers_less_than_half_of_shows_the_surface_behind(edge_u, board_at_42):
    # exact points (1 mm noise): a board at 1.5 m whose right edge crosses pixel column 42 (centre u = 42, spanning
    # 41.5-42.5) at edge_u, before a wall at 4 m (measured everywhere, also behind the board). Column 42 holds board
    # points either way and the z-buffer gives it to the board; its centre ray meets the board only when
    # edge_u > 42, i.e. when the board covers more than half of it
    rng = np.random.default_rng(5)
    x_edge = (edge_u - K[0, 2]) * BOARD_Z / K[0, 0]
    n_board, n_wall = 30 * 40 * H, 10 * W * H
    board = np.c_[rng.uniform(-0.2, x_edge, n_board), rng.uniform(-0.15, 0.15, n_board), np.full(n_board, BOARD_Z)]
    wall = np.c_[rng.uniform(-0.7, 0.7, n_wall), rng.uniform(-0.5, 0.5, n_wall), np.full(n_wall, WALL_Z)]
    pts = np.vstack([board, wall]).astype(np.float32)
    pts[:, 2] += rng.normal(0, 0.001, len(pts)).astype(np.float32)
    rows = slice(H // 2 - 10, H // 2 + 10)  # well inside the board's height (+-24 rows)
    before = _project(pts)
    assert np.all(np.abs(before[rows, 42] - BOARD_Z) < 0.01) and np.all(np.abs(before[rows, 41] - BOARD_Z) < 0.01)
    drop = partial_edge_points(pts, None, before, K)
    after = _project(pts[~drop])
    assert np.all(np.abs(after[rows, 41] - BOARD_Z) < 0.01)  # covered in full: untouched
    expect = BOARD_Z if board_at_42 else WALL_Z
    assert np.mean(np.abs(after[rows, 42] - expect) < 0.01 * expect) >= 0.9
    assert np.all(pts[drop, 2] < 2.0)  # only board points are dropped ...
    assert np.mean(drop) < 0.01  # ... and only at the edge


def test_isolated_near_returns_beside_a_pole_are_dropped():
    # a wall at 4 m measured everywhere, a pole at 0.8 m covering columns 30-39, pairs of the pole's returns
    # scattered 12-16 px to its sides (range noise seen from the side) and a 4 x 4 px box at 1.5 m (a small object
    # in its own right, larger than max_size_px=8)
    rng = np.random.default_rng(6)
    z_pole, z_box = 0.8, 1.5
    u, v = np.meshgrid(np.arange(W), np.arange(H))

    def pixel_points(cols, rows, z, n):
        uu, vv = np.repeat(np.ravel(cols), n), np.repeat(np.ravel(rows), n)
        uu = uu + rng.uniform(-0.5, 0.5, uu.size)
        vv = vv + rng.uniform(-0.5, 0.5, vv.size)
        zz = z + rng.normal(0, 0.002, uu.size)
        return np.c_[(uu - K[0, 2]) / K[0, 0] * zz, (vv - K[1, 2]) / K[1, 1] * zz, zz]

    wall = pixel_points(u, v, WALL_Z, 6)
    pole = pixel_points(u[:, 30:40], v[:, 30:40], z_pole, 6)
    box = pixel_points(u[20:24, 60:64], v[20:24, 60:64], z_box, 6)
    stray_px = [(10, 18), (25, 52), (40, 16), (50, 55)]  # (row, col)
    strays = np.vstack([pixel_points(np.array([c]), np.array([r]), z_pole, 2) for r, c in stray_px])
    pts = np.vstack([wall, pole, box, strays]).astype(np.float32)
    before = _project(pts)
    for r, c in stray_px:
        assert abs(before[r, c] - z_pole) < 0.01  # nearest wins: the strays hold their pixels
    drop, pixels = near_speckle_points(pts, before, K)
    after = _project(pts[~drop])
    assert pixels == len(stray_px)
    for r, c in stray_px:
        assert abs(after[r, c] - WALL_Z) < 0.005 * WALL_Z
    np.testing.assert_allclose(after[:, 30:40], before[:, 30:40])  # the pole ...
    np.testing.assert_allclose(after[20:24, 60:64], z_box, rtol=0.005)  # ... and the box stay
    assert drop.sum() == 2 * len(stray_px) and np.all(pts[drop, 2] < 1.0)


def test_a_fragment_next_to_a_sparse_near_object_is_not_a_speckle():
    # the first map of a sparsely sampled pole: a row where its points left a 1-px gap, so that a pixel of it stands
    # alone 2 px from the rest; and a lone near pixel 10 px away
    depth = np.full((H, W), WALL_Z, np.float32)
    depth[:, 30:34] = 0.8
    depth[10, 33] = WALL_Z
    depth[10, 34] = 0.8  # 2 px from the pole at (10, 32): a fragment
    depth[30, 44] = 0.8  # 10 px from the pole
    speckle = speckle_pixels(depth)
    assert np.argwhere(speckle).tolist() == [[30, 44]]
    assert speckle_pixels(depth, keep_radius_px=0)[10, 34]  # what keep_radius_px keeps


def test_front_surface_points_that_no_plane_explains_stay():
    """Points 2 cm behind the board in its last column (a rounded edge), measured by a sensor far to the side:
    along their rays no plane of the pixels inside lands within land_px (the board's plane is met 3 m away). The
    first map shows the board in their pixels, so they are its front surface: kept where they are. Points 0.5 m
    behind it in the same pixels (between board and wall) are not: dropped."""
    pts, sensors, frames, truth = _board_scene(np.random.default_rng(4), board_noise_m=0.002)
    u_edge = int(np.max(np.nonzero(truth[H // 2] == BOARD_Z)))
    rows = np.arange(H // 2 - 10, H // 2 + 10)

    def at_pixel_centres(z):
        return np.c_[(u_edge - K[0, 2]) / K[0, 0] * z, (rows - K[1, 2]) / K[1, 1] * z, z].astype(np.float32)

    lip, floater = at_pixel_centres(np.full(len(rows), BOARD_Z + 0.02)), at_pixel_centres(np.full(len(rows), BOARD_Z + 0.5))
    side = np.array([[-3.0, 0.0, BOARD_Z]])
    all_pts = np.vstack([pts, lip, floater])
    all_frames = np.r_[frames, np.full(2 * len(rows), len(sensors))]
    first = _project(all_pts)
    assert np.all(np.abs(first[rows, u_edge] - BOARD_Z) < 0.02)  # the first map shows the board there
    snapped, keep = snap_edge_points(all_pts, np.vstack([sensors, side]), all_frames, first, K)
    n = len(pts)
    assert keep[n:n + len(rows)].all() and np.array_equal(snapped[n:n + len(rows)], lip)
    assert not keep[n + len(rows):].any()


def test_points_slide_along_their_sensor_rays_to_their_own_pixel_and_keep_their_offset():
    # a wall at ~1.5 m turned 22 deg about the vertical, measured from a sensor 0.8 m to the right of the camera (rays
    # ~28 deg off the camera's): 2 cm range noise moves a point ~1.6 px sideways in the image
    rng = np.random.default_rng(5)
    normal = np.array([0.4, 0.1, -1.0]) / np.linalg.norm([0.4, 0.1, -1.0])
    x0 = np.array([0.0, 0.0, 1.5])
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones(u.shape)], axis=-1)
    depth = (normal @ x0 / (rays @ normal)).astype(np.float32)  # the first map: exact
    n = 20000
    pu, pv = rng.uniform(10, W - 10, n), rng.uniform(10, H - 10, n)
    r = np.c_[(pu - K[0, 2]) / K[0, 0], (pv - K[1, 2]) / K[1, 1], np.ones(n)]
    true = r * (normal @ x0 / (r @ normal))[:, None]
    sensor = np.array([[0.8, 0.0, 0.0]])
    ray = (true - sensor) / np.linalg.norm(true - sensor, axis=1, keepdims=True)
    noise = rng.normal(0, 0.02, n)
    pts = (true + noise[:, None] * ray).astype(np.float32)
    moved = slide_along_rays(pts, sensor, np.zeros(n, np.int64), depth, K)

    def pixel_error(p):
        return np.hypot(_u(p) - pu, p[:, 1] / p[:, 2] * K[1, 1] + K[1, 2] - pv)

    # within the defaults' 3 cm along the ray (max_move_m) and 2 % of the depth along the camera ray (front_gate_rel)
    slid = np.abs(noise) <= 0.024
    assert np.median(pixel_error(pts)[slid]) > 0.6  # 0.75 px before (its sideways share of the noise)
    assert np.median(pixel_error(moved)[slid]) < 0.01 and pixel_error(moved)[slid].max() < 0.05
    # the offset along the surface normal (what a plane fit reads as noise) is the range noise's, as before
    np.testing.assert_allclose((moved[slid] - true[slid]) @ normal, noise[slid] * (ray[slid] @ normal), atol=2e-5)
    far = np.abs(noise) > 0.03
    assert np.array_equal(moved[far], pts[far]) and far.sum() > 50


def test_points_at_edges_and_behind_the_surface_do_not_slide():
    pts, sensors, frames, truth = _board_scene(np.random.default_rng(3))
    first = _project(pts)
    moved = slide_along_rays(pts, sensors, frames, first, K)
    changed = np.any(moved != pts, axis=1)
    u, v = np.rint(_u(pts)).astype(int), np.rint(pts[:, 1] / pts[:, 2] * K[1, 1] + K[1, 2]).astype(int)
    inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
    u, v = np.clip(u, 0, W - 1), np.clip(v, 0, H - 1)
    near_edge = cv2.dilate(depth_edge_band(first).astype(np.uint8), np.ones((3, 3), np.uint8))[v, u] > 0
    behind = pts[:, 2] > 1.05 * first[v, u]  # the wall behind the board
    assert changed[inside & ~near_edge & ~behind].mean() > 0.9
    assert not changed[inside & near_edge].any() and not changed[inside & behind].any()
    assert (inside & behind).sum() > 1000
    with pytest.raises(ValueError, match="frame_index"):
        slide_along_rays(pts, sensors, frames[:-1], first, K)
