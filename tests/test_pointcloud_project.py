"""Z-buffer projection: equals a brute-force disc splat; front-surface averaging; outliers."""

from __future__ import annotations

import numpy as np
import pytest

from zedd_capture.pointcloud.config import BuildConfig
from zedd_capture.pointcloud.project import ZbufferConfig, zbuffer, zbuffer_bruteforce

K = np.array([[60.0, 0, 39.5], [0, 60.0, 29.5], [0, 0, 1]])
W, H = 80, 60


def test_zbuffer_settings_come_from_a_typed_config_and_bad_ones_name_the_field():
    rng = np.random.default_rng(3)
    pts = np.c_[rng.uniform(-1, 1, (3000, 2)), rng.uniform(2, 3, 3000)].astype(np.float32)
    cfg = ZbufferConfig(plane_radius_px=2, noise_m=0.01, spill_ratio=0.4)
    by_config = zbuffer(pts, K, W, H, 1, cfg)
    assert np.array_equal(by_config, zbuffer(pts, K, W, H, 1, plane_radius_px=2, noise_m=0.01, spill_ratio=0.4))
    # keywords replace the config's fields; the rest of the config stays
    assert np.array_equal(zbuffer(pts, K, W, H, 1, cfg, spill_ratio=0.0), zbuffer(pts, K, W, H, 1, plane_radius_px=2,
                                                                                    noise_m=0.01))
    assert not np.array_equal(by_config, zbuffer(pts, K, W, H, 1, cfg, plane_radius_px=0))
    for bad, field in ((dict(mode="paint"), "mode"), (dict(spill_ratio=float("nan")), "spill_ratio"),
                       (dict(band_m=-0.01), "band_m"), (dict(spill_radius_px=1.5), "spill_radius_px"),
                       (dict(plane_radius_px=(2, 4), plane_sigma_px=(None,)), "plane_sigma_px")):
        with pytest.raises(ValueError, match=rf"ZbufferConfig\.{field} = "):
            zbuffer(pts, K, W, H, 1, **bad)
    with pytest.raises(TypeError, match="plane_radius"):  # a misspelt setting is not silently ignored
        zbuffer(pts, K, W, H, 1, plane_radius=2)


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


def _ray_cloud(depth_fn, n, noise_m, rng):
    """Points uniformly spread over the image, on the surface z = depth_fn(xn, yn) (ray xn, yn, 1), with
    Gaussian range noise along the ray."""
    u, v = rng.uniform(-0.5, W - 0.5, n), rng.uniform(-0.5, H - 0.5, n)
    xn, yn = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    z = depth_fn(xn, yn)
    ok = np.isfinite(z)
    z = z[ok] * (1 + rng.normal(0, noise_m, ok.sum()) / (z[ok] * np.sqrt(1 + xn[ok] ** 2 + yn[ok] ** 2)))
    return np.c_[xn[ok] * z, yn[ok] * z, z].astype(np.float32)


def _tilted_plane(tilt_deg: float, z0_m: float):
    """Depth z(xn, yn) along normalised rays of a plane through (0, 0, z0) tilted ``tilt_deg`` about x."""
    n = np.array([0.0, np.sin(np.radians(tilt_deg)), -np.cos(np.radians(tilt_deg))])
    d = n @ np.array([0.0, 0.0, z0_m])
    return lambda xn, yn: d / (n[0] * xn + n[1] * yn + n[2])


def _pole_depth(xn, zc, R):
    """Depth (m, nan off the pole) of a vertical cylinder of radius R at depth zc on the optical axis along the
    rays (xn, ., 1)."""
    a = xn * xn + 1
    disc = zc * zc - a * (zc * zc - R * R)
    return np.where(disc > 0, (zc - np.sqrt(np.maximum(disc, 0))) / a, np.nan)


def _pole_front_depth(Kp, Wp, Hp, zc, R):
    """(truth, inner): :func:`_pole_depth` along each pixel-centre ray, and the pole pixels at least 3 px from its
    silhouette and the border."""
    v, u = np.mgrid[0:Hp, 0:Wp]
    truth = _pole_depth((u - Kp[0, 2]) / Kp[0, 0], zc, R)
    inner = np.isfinite(truth) & np.isfinite(np.roll(truth, 3, 1)) & np.isfinite(np.roll(truth, -3, 1))
    inner[:3], inner[-3:] = False, False
    return truth, inner


def _centre_rays():
    v, u = np.mgrid[0:H, 0:W]
    return (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]


def test_plane_fit_is_unbiased_on_a_steep_tilted_plane():
    # plane 30 deg from fronto-parallel through (0, 0, 3 m): 2.4-4 m, 3-7 cm of depth change per pixel
    # (at this coarse test camera; a 4x steeper per-pixel slope than the kitchen floor's)
    plane = _tilted_plane(30, 3.0)
    pts = _ray_cloud(plane, 8 * W * H, 0.01, np.random.default_rng(2))
    truth = plane(*_centre_rays())
    inner = (slice(3, H - 3), slice(3, W - 3))
    rel = lambda dm: np.abs(dm[inner] - truth[inner]) / truth[inner]  # noqa: E731
    fit = zbuffer(pts, K, W, H, 1, plane_radius_px=2, noise_m=0.01)
    mean = zbuffer(pts, K, W, H, 1)  # front-band mean of the pixel's own points
    assert np.all(fit[inner] > 0)
    assert np.median(rel(fit)) < 0.001 and np.percentile(rel(fit), 99) < 0.004
    assert abs(np.median((fit[inner] - truth[inner]) / truth[inner])) < 0.0003  # no bias
    assert np.percentile(rel(fit), 90) < 0.6 * np.percentile(rel(mean), 90)


def test_plane_fit_reads_a_noisy_cylinder_at_the_pixel_centre_ray():
    # vertical cylinder, radius 0.3 m, axis 1.2 m in front of the camera; 5 mm range noise
    zc, R = 1.2, 0.3

    def cyl(xn, yn):
        a = xn * xn + 1
        disc = zc * zc - a * (zc * zc - R * R)
        return np.where(disc > 0, (zc - np.sqrt(np.maximum(disc, 0))) / a, np.nan)

    pts = _ray_cloud(cyl, 10 * W * H, 0.005, np.random.default_rng(3))
    truth = cyl(*_centre_rays())
    fit = zbuffer(pts, K, W, H, 1, plane_radius_px=2, noise_m=0.005)
    # interior of the silhouette (3 px margin) and of the image
    inside = np.isfinite(truth)
    inner = inside & ~np.isnan(np.pad(truth, 3, constant_values=np.nan)[6:, 3:-3]) & ~np.isnan(np.pad(truth, 3, constant_values=np.nan)[:-6, 3:-3])
    inner &= np.isfinite(np.roll(truth, 3, 1)) & np.isfinite(np.roll(truth, -3, 1))
    inner[:3], inner[-3:] = False, False
    rel = np.abs(fit[inner] - truth[inner]) / truth[inner]
    rel_mean = np.abs(zbuffer(pts, K, W, H, 1)[inner] - truth[inner]) / truth[inner]
    assert inner.sum() > 900
    # a 5 px window is 7.5 cm wide here (coarse test camera): plane-vs-curvature bias ~ +0.05%
    assert np.median(rel) < 0.001 and np.percentile(rel, 99) < 0.003
    assert abs(np.median((fit[inner] - truth[inner]) / truth[inner])) < 0.001
    assert np.percentile(rel, 99) < 0.7 * np.percentile(rel_mean, 99)


def test_noisy_far_plane_is_not_biased_toward_the_camera():
    # a far wall (12 m, tilted) seen with weak returns: 3 cm range noise (3x the 1 cm sensor floor),
    # ~4 points per pixel. A fixed 1 cm selection window around a front-band start keeps the front of
    # the noise; the per-pixel noise measured from the residuals does not (and gates no wider)
    plane = _tilted_plane(20, 12.0)
    pts = _ray_cloud(plane, 4 * W * H, 0.03, np.random.default_rng(4))
    truth = plane(*_centre_rays())
    inner = (slice(3, H - 3), slice(3, W - 3))
    kw = dict(band_m=0.05, plane_radius_px=2, noise_m=0.01)
    fixed = zbuffer(pts, K, W, H, 1, **kw)
    adaptive = zbuffer(pts, K, W, H, 1, band_rel=0.01, adaptive_noise=True, **kw)
    signed = lambda dm: (dm[inner] - truth[inner]) / truth[inner]  # noqa: E731
    assert np.median(signed(fixed)) < -0.0005  # the old default: ~9 mm toward the camera at 12 m
    assert abs(np.median(signed(adaptive))) < 0.0002
    assert np.percentile(np.abs(signed(adaptive)), 99) < 0.002
    # on a 1 cm-noise surface the adaptive window is no worse than the fixed one
    pts1 = _ray_cloud(plane, 4 * W * H, 0.01, np.random.default_rng(5))
    f1 = zbuffer(pts1, K, W, H, 1, **kw)
    a1 = zbuffer(pts1, K, W, H, 1, band_rel=0.01, adaptive_noise=True, **kw)
    assert abs(np.median(signed(a1))) < 0.0002
    assert np.percentile(np.abs(signed(a1)), 95) <= 1.1 * np.percentile(np.abs(signed(f1)), 95)


def test_fill_reads_the_neighbours_plane_at_the_pixel_centre():
    # a tilted plane sampled at ~1.5 points per pixel: ~1/5 of the pixels have no point of their own.
    # Filling them with a neighbour's depth (the erosion splat) puts them one pixel off on the slope
    # (0.77 % here); the neighbours' planes read at the pixel's own centre ray do not
    plane = _tilted_plane(25, 4.0)
    pts = _ray_cloud(plane, int(1.5 * W * H), 0.003, np.random.default_rng(6))
    truth = plane(*_centre_rays())
    own = zbuffer(pts, K, W, H, 0, plane_radius_px=2, noise_m=0.003)
    fill = zbuffer(pts, K, W, H, 2, plane_radius_px=2, noise_m=0.003)
    empty = (own == 0)
    empty[:3], empty[-3:], empty[:, :3], empty[:, -3:] = False, False, False, False
    assert empty.sum() > 300 and np.all(fill[empty] > 0)
    rel = np.abs(fill[empty] - truth[empty]) / truth[empty]
    inner_own = (own > 0)[3:-3, 3:-3]
    rel_own = (np.abs(fill - truth) / truth)[3:-3, 3:-3][inner_own]
    assert np.percentile(rel, 95) < 0.003  # one pixel of this slope is 0.77 %
    assert np.percentile(rel, 95) < 1.5 * np.percentile(rel_own, 95)


def test_depth_edge_lands_on_the_true_edge():
    # a board at 1.5 m (x < 0) in front of a wall at 4 m, dense noisy points: the depth edge of the
    # map is where the truth's is (no foreground bleeding beyond the last column it covers)
    def scene(xn, yn):
        return np.where(xn * 1.5 < -0.05, 1.5, 4.0)

    pts = _ray_cloud(scene, 10 * W * H, 0.01, np.random.default_rng(7))
    truth = scene(*_centre_rays())
    for kw in (dict(), dict(band_rel=0.01, adaptive_noise=True)):
        dm = zbuffer(pts, K, W, H, 2, plane_radius_px=2, noise_m=0.01, **kw)
        rel = np.abs(dm - truth) / truth
        assert np.mean(rel[3:-3] < 0.005) > 0.99
        wrong_side = (rel[3:-3] > 0.1).sum(axis=1)
        assert wrong_side.max() <= 1  # at most one pixel per row on the wrong side of the edge


def test_view_weights_drop_the_hidden_flank_of_a_pole():
    # a vertical pole (r = 5 cm, axis at 0.6 m) seen by a sensor at the camera and by one beside it (the
    # hand-held sweep walks around near objects), 1 cm range noise: the side sensor's points on the flank
    # hidden from the camera project inside the silhouette, within the noise behind the visible surface,
    # and pull the depth back; weighting points by their viewing direction (hidden flank: 0.05) removes that
    from zedd_capture.pointcloud.project import view_weights

    Kp, Wp, Hp = np.array([[200.0, 0, 59.5], [0, 200.0, 44.5], [0, 0, 1]]), 120, 90
    rng = np.random.default_rng(8)
    zc, R = 0.6, 0.05
    # most of the pole's points come from the sides, as in the twin's sweep (kitchen01: 55 % from > 45 deg)
    sensors = ((np.zeros(3), 40_000), (np.array([0.3, 0.0, 0.6]), 150_000), (np.array([-0.3, 0.0, 0.7]), 150_000))
    pts, org = [], []
    for s, n in sensors:
        phi = rng.uniform(0, 2 * np.pi, n)
        y = rng.uniform(-0.15, 0.15, phi.size)
        nrm = np.c_[np.cos(phi), np.zeros_like(phi), np.sin(phi)]
        p = np.c_[R * np.cos(phi), y, zc + R * np.sin(phi)]
        p = p[np.einsum("ij,ij->i", nrm, s - p) > 0]  # convex: front-facing = visible from s
        ray = (p - s) / np.linalg.norm(p - s, axis=1, keepdims=True)
        pts.append(p + ray * rng.normal(0, 0.01, (len(p), 1)))
        org.append(np.repeat(s[None], len(p), 0))
    n_cam = len(pts[0])
    pts, org = np.vstack(pts).astype(np.float32), np.vstack(org).astype(np.float32)

    truth, inner = _pole_front_depth(Kp, Wp, Hp, zc, R)
    kw = dict(plane_radius_px=2, noise_m=0.01, band_rel=0.01, adaptive_noise=True)
    plain = zbuffer(pts, Kp, Wp, Hp, 1, **kw)
    w = view_weights(pts, org)
    assert w[:n_cam].min() > 0.8 and (w[n_cam:] <= 0.05).sum() > 10_000  # camera's points kept, hidden flank ~dropped
    weighted = zbuffer(pts, Kp, Wp, Hp, 1, point_weights=w, **kw)
    rel = lambda dm: (dm[inner] - truth[inner]) / truth[inner]  # noqa: E731
    assert inner.sum() > 1500
    within = lambda dm: np.mean(np.abs(rel(dm)) < 0.005)  # noqa: E731
    assert np.median(rel(plain)) > 0.002 and within(plain) < 0.9  # the flank pulls the pole back (~+0.24 %)
    assert abs(np.median(rel(weighted))) < 0.5 * np.median(rel(plain))  # (the 0.05 floor keeps a little of the flank)
    assert within(weighted) > 0.95


def test_view_weights_keep_a_thin_pole_front_unbiased_when_seen_from_behind():
    # a thin pole (r = 1.5 cm at 0.5 m) measured by the sensor frames of a sweep: frame 0 at the camera,
    # frames 1-2 behind the pole (most of the pole's points). The back points project inside the pole's
    # silhouette within the front band (3 cm behind): mixed with the few front points they pull the depth
    # back; with per-point sensor origins (WorldCloud.origins from the frame indices) the view weights
    # leave the front surface unbiased
    from zedd_capture.pointcloud.aggregate import WorldCloud
    from zedd_capture.pointcloud.project import view_weights

    Kp, Wp, Hp = np.array([[400.0, 0, 59.5], [0, 400.0, 44.5], [0, 0, 1]]), 120, 90
    rng = np.random.default_rng(11)
    zc, R = 0.5, 0.015
    sensors = np.array([[0.0, 0.0, 0.0], [0.05, 0.0, 1.2], [-0.05, 0.0, 1.3]])
    counts = (20_000, 60_000, 60_000)
    pts, fidx = [], []
    for i, (s, n) in enumerate(zip(sensors, counts)):
        phi = rng.uniform(0, 2 * np.pi, n)
        p = np.c_[R * np.cos(phi), rng.uniform(-0.1, 0.1, n), zc + R * np.sin(phi)]
        nrm = np.c_[np.cos(phi), np.zeros(n), np.sin(phi)]
        p = p[np.einsum("ij,ij->i", nrm, s - p) > 0]  # convex: the side facing the sensor
        ray = (p - s) / np.linalg.norm(p - s, axis=1, keepdims=True)
        pts.append(p + ray * rng.normal(0, 0.005, (len(p), 1)))
        fidx.append(np.full(len(p), i, np.uint16))
    poses = np.tile(np.eye(4), (3, 1, 1))
    poses[:, :3, 3] = sensors  # world = camera frame here
    pts = np.vstack(pts).astype(np.float32)
    cloud = WorldCloud(points=pts, ranges=np.zeros(len(pts), np.float32), poses=poses, times=np.arange(3.0),
                       frame_index=np.concatenate(fidx))
    w = view_weights(cloud.points, cloud.origins())
    assert np.all(w[cloud.frame_index > 0] <= 0.05) and np.median(w[cloud.frame_index == 0]) > 0.9

    truth, inner = _pole_front_depth(Kp, Wp, Hp, zc, R)
    assert inner.sum() > 500
    kw = dict(plane_radius_px=2, noise_m=0.005, band_rel=0.01, adaptive_noise=True)
    rel = lambda dm: (dm[inner] - truth[inner]) / truth[inner]  # noqa: E731
    plain = rel(zbuffer(pts, Kp, Wp, Hp, 1, **kw))
    weighted = rel(zbuffer(pts, Kp, Wp, Hp, 1, point_weights=w, **kw))
    within = lambda r: np.mean(np.abs(r) < 0.005)  # noqa: E731
    assert np.median(plain) > 0.02 and within(plain) < 0.05  # the back (3 cm behind, 3x the points) wins
    assert abs(np.median(weighted)) < 0.002  # measured 0.09 %: ~5 noisy front points per pixel
    assert within(weighted) > 0.75  # measured 0.86


def test_point_weights_are_scale_free():
    # only the ratios of the weights matter: a pixel whose points all carry a small (floor) weight keeps
    # its depth (the plane fit's point count is the sum of the weights, not clamped to 1)
    rng = np.random.default_rng(12)
    pts = _ray_cloud(lambda x, y: 2.0 + 0.5 * x, 20_000, 0.01, rng)
    w = rng.uniform(0.5, 1.0, len(pts)).astype(np.float32)
    kw = dict(plane_radius_px=2, noise_m=0.01, band_rel=0.01, adaptive_noise=True)
    a = zbuffer(pts, K, W, H, 2, point_weights=w, **kw)
    b = zbuffer(pts, K, W, H, 2, point_weights=w * np.float32(0.001), **kw)
    rel = np.abs(a - b) / a
    assert np.mean(rel < 1e-5) > 0.99 and rel.max() < 2e-3  # float rounding at the selection windows only
    ones = zbuffer(pts, K, W, H, 2, point_weights=np.ones(len(pts), np.float32), **kw)
    np.testing.assert_allclose(ones, zbuffer(pts, K, W, H, 2, **kw), rtol=1e-5)


def test_numba_projection_equals_numpy_path(monkeypatch):
    """The fused numba pass returns bit-identical pixels, depths, offsets and weights, in the same order."""
    from zedd_capture.pointcloud import project as P

    assert P._nb is not None, "numba is a dependency (pyproject.toml): the fused kernels must be tested"
    rng = np.random.default_rng(1)
    n = 50_000
    pts = np.empty((n, 3), np.float32)
    pts[:, 2] = rng.uniform(-1, 15, n)  # some behind the camera
    pts[:, 0] = rng.uniform(-0.9, 0.9, n) * np.abs(pts[:, 2])  # some outside the image
    pts[:, 1] = rng.uniform(-0.6, 0.6, n) * np.abs(pts[:, 2])
    K = np.array([[700.0, 0.3, 455.5], [0, 701.0, 303.2], [0, 0, 1]])
    w = rng.uniform(0, 1, n)
    fast = P.project_points(pts, K, 912, 608, subpixel=True, weights=w, index=True)
    monkeypatch.setattr(P, "_nb", None)
    slow = P.project_points(pts, K, 912, 608, subpixel=True, weights=w, index=True)
    assert 0 < len(fast[0]) < n
    assert len(fast) == len(slow) == 6
    for a, b in zip(fast, slow):
        assert a.dtype is b.dtype and np.array_equal(a, b)
    np.testing.assert_array_equal(fast[1], pts[fast[-1], 2])  # the index points at each landing point


def test_spill_of_a_sideways_scattered_near_bar_is_removed():
    # a bar 0.5 m away (12 px wide) sampled by ~4 points per pixel whose 2 cm range noise points 45 deg
    # off the camera ray (measured from the side): its points scatter ~1.7 px sideways over the wall
    # behind (3 m, densely sampled everywhere, also behind the bar as if seen from elsewhere)
    rng = np.random.default_rng(11)
    u, v = rng.uniform(-0.5, W - 0.5, 4 * W * H), rng.uniform(-0.5, H - 0.5, 4 * W * H)
    xn, yn = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]
    on_bar = np.abs(xn) < 0.1
    bar = np.c_[xn * 0.5, yn * 0.5, np.full(len(u), 0.5)][on_bar]
    d = rng.normal(0, 0.02, len(bar))[:, None] * np.array([np.sin(np.pi / 4), 0, np.cos(np.pi / 4)])
    wall = _ray_cloud(lambda x, y: np.full_like(x, 3.0), 10 * W * H, 0.01, rng)
    pts = np.vstack([bar + d, wall]).astype(np.float32)
    xc, _ = _centre_rays()
    truth = np.where(np.abs(xc) < 0.1, 0.5, 3.0)[3:-3]

    def per_row(mask):
        return mask.sum() / len(truth)

    kw = dict(plane_radius_px=2, noise_m=0.01, band_rel=0.01, adaptive_noise=True, occlusion_radius_px=8)
    plain = zbuffer(pts, K, W, H, 2, **kw)
    clean = zbuffer(pts, K, W, H, 2, spill_ratio=0.4, spill_gate_rel=0.05, **kw)
    spill_plain, spill_clean = per_row((truth > 1) & (plain[3:-3] < 1)), per_row((truth > 1) & (clean[3:-3] < 1))
    assert spill_plain > 2.5  # wall pixels reading the bar: a fringe of > 1 px on each side
    assert spill_clean < 0.4 * spill_plain
    assert per_row((truth < 1) & (clean[3:-3] > 1)) < 0.5  # the bar itself stays (< 0.5 px per row lost)
    assert np.all(clean > 0)  # and no holes
    # a bar sampled by 1 point in 4 pixels (~7 points within the radius 3): too few to tell fringe from
    # a sparse object, so spill_min_support leaves it as it is
    sparse = np.vstack([(bar + d)[::16], wall]).astype(np.float32)
    sparse_kw = dict(kw, spill_ratio=0.4, spill_gate_rel=0.05, spill_radius_px=3)
    np.testing.assert_array_equal(zbuffer(sparse, K, W, H, 2, spill_min_support=15, **sparse_kw),
                                  zbuffer(sparse, K, W, H, 2, **kw))
    assert not np.array_equal(zbuffer(sparse, K, W, H, 2, **sparse_kw), zbuffer(sparse, K, W, H, 2, **kw))


def test_thin_layer_of_mixed_returns_in_front_of_a_surface_is_dropped():
    # a wall at 5 m (8 points per pixel) with mixed returns 1-4 % in front of it (1 per pixel on
    # average), as a lidar gives on surfaces seen at grazing incidence; a sparse bar 2 m away stays
    rng = np.random.default_rng(5)
    wall = _ray_cloud(lambda x, y: np.full_like(x, 5.0), 8 * W * H, 0.01, rng)
    mixed = _ray_cloud(lambda x, y: np.full_like(x, 5.0), W * H, 0.0, rng)
    mixed *= (1 - rng.uniform(0.01, 0.04, len(mixed)))[:, None].astype(np.float32)
    bar = _ray_cloud(lambda x, y: np.where(np.abs(x) < 0.1, 2.0, np.nan), W * H, 0.01, rng)
    pts = np.vstack([wall, mixed, bar])
    xc, _ = _centre_rays()
    truth = np.where(np.abs(xc) < 0.1, 2.0, 5.0)
    kw = dict(plane_radius_px=2, noise_m=0.01, band_rel=0.01, adaptive_noise=True, occlusion_radius_px=8)
    inner = (slice(3, H - 3), slice(3, W - 3))

    def within(dm):
        return np.mean(np.abs(dm[inner] - truth[inner]) / truth[inner] < 0.005)

    plain, thin = zbuffer(pts, K, W, H, 2, **kw), zbuffer(pts, K, W, H, 2, thin_ratio=2, **kw)
    assert within(plain) < 0.8 and within(thin) > 0.95  # (what is left: the bar's edges)
    bar_px = np.abs(xc[inner]) < 0.08  # the bar, away from its edges (40 % nearer than the wall: not a thin layer)
    np.testing.assert_array_equal(thin[inner][bar_px] < 3, plain[inner][bar_px] < 3)


def test_thin_layer_test_keeps_the_edge_of_a_surface_before_a_step():
    # a panel at 4.65 m (x < the edge, 0.1 px right of column 40's centre: column 40 is 60 % panel) before a wall at
    # 5 m that the sweep saw behind it too, 1.7x as densely as the panel: in column 40 the wall holds 2.8x the
    # panel's points, as many as a thin layer of mixed returns has behind it; but it continues the panel and the
    # wall lies 7.5 % behind (a step), so it is the panel's edge
    rng = np.random.default_rng(23)
    edge_xn = (40 - K[0, 2] + 0.1) / K[0, 0]
    panel = _ray_cloud(lambda x, y: np.where(x < edge_xn, 4.65, np.nan), 20 * W * H, 0.01, rng)
    wall = _ray_cloud(lambda x, y: np.full_like(x, 5.0), 34 * W * H, 0.01, rng)
    depth = zbuffer(np.vstack([panel, wall]), K, W, H, 2, thin_ratio=2, plane_radius_px=2, noise_m=0.01,
                    band_rel=0.01, adaptive_noise=True)
    rows = slice(3, H - 3)

    def share(col, z):
        return np.mean(np.abs(depth[rows, col] - z) / z < 0.005)

    assert share(40, 4.65) > 0.8  # the panel's outermost column: 89 % (20 % without the step rule)
    assert share(41, 5.0) > 0.9 and share(30, 4.65) > 0.95 and share(50, 5.0) > 0.95


def test_depth_edge_band_marks_both_sides_of_a_jump_only():
    from zedd_capture.pointcloud.project import depth_edge_band

    d = np.tile(np.linspace(3.0, 3.3, W, dtype=np.float32), (H, 1))  # a slanted wall: 0.13 % per pixel
    d[:, 50:] *= 0.8  # a nearer surface from column 50 on (-20 %)
    d[10, 10] = 0  # an invalid pixel is not an edge
    band = depth_edge_band(d, 0.05)
    assert band[:, 49].all() and band[:, 50].all() and band.sum() == 2 * H


def test_window_sums_compiled_equals_the_numpy_reference():
    from zedd_capture.pointcloud.grid import window_offsets
    from zedd_capture.pointcloud.local_planes import _nb, _window_sums, _window_sums_numpy

    assert _nb is not None, "numba is a dependency (pyproject.toml): the fused kernels must be tested"
    rng = np.random.default_rng(11)
    h, w, C = 23, 31, 14
    mom = rng.uniform(0, 2, (h, w, C))
    zc = np.where(rng.random((h, w)) < 0.8, rng.uniform(2.9, 3.1, (h, w)), np.inf)
    A = np.where(np.isfinite(zc), 1 / np.where(np.isfinite(zc), zc, 1), 0) + rng.normal(0, 1e-3, (h, w))
    Gx, Gy = rng.normal(0, 2e-3, (h, w)), rng.normal(0, 2e-3, (h, w))
    gate = np.full((h, w), 0.05)
    own = np.isfinite(zc)
    offs = np.array(window_offsets(4), dtype=np.int64)
    wo = np.exp(-0.5 * (offs**2).sum(1) / 4.0)
    S = _window_sums(mom, zc, A, Gx, Gy, gate, own, offs, wo, True)
    S_ref = _window_sums_numpy(mom, zc, A, Gx, Gy, gate, own, offs, wo, True)
    assert 0.2 < (S_ref[..., 0] > 0).mean() < 0.9  # the gate keeps some neighbours and drops others
    np.testing.assert_allclose(S, S_ref, rtol=1e-10, atol=1e-12)


def test_plane_fit_compiled_equals_the_numpy_fallback(monkeypatch):
    import zedd_capture.pointcloud.local_planes as local_planes
    from zedd_capture.pointcloud.project import project_points

    assert local_planes._nb is not None, "numba is a dependency (pyproject.toml): the fused kernels must be tested"
    rng = np.random.default_rng(14)
    pts = _ray_cloud(_tilted_plane(20, 3.0), 5 * W * H, 0.01, rng)
    lin, z, du, dv = project_points(pts, K, W, H, subpixel=True)
    weights = rng.uniform(0.1, 1.0, len(z)).astype(np.float32)
    init = np.full(W * H, 3.0, np.float32)
    kw = dict(weight_sigma_px=2.0, adaptive_noise=True, return_planes=True, return_sigma=True, weights=weights)
    compiled = local_planes.fit_local_planes(lin, z, du, dv, init, W, H, 4, 0.01, **kw)
    monkeypatch.setattr(local_planes, "_nb", None)
    fallback = local_planes.fit_local_planes(lin, z, du, dv, init, W, H, 4, 0.01, **kw)
    np.testing.assert_allclose(compiled[0], fallback[0], rtol=1e-6)
    for a, b in zip(compiled[1], fallback[1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(compiled[2], fallback[2], rtol=1e-5)


def test_plane_fit_standard_error_matches_the_scatter_of_the_fitted_depth():
    from zedd_capture.pointcloud.local_planes import fit_local_planes
    from zedd_capture.pointcloud.project import project_points

    # a fronto-parallel wall at 3 m, 1 cm range noise, ~6 points per pixel
    pts = _ray_cloud(lambda x, y: np.full_like(x, 3.0), 6 * W * H, 0.01, np.random.default_rng(12))
    lin, z, du, dv = project_points(pts, K, W, H, subpixel=True)
    init = np.full(W * H, 3.0, np.float32)
    for radius, sigma in ((2, None), (5, 2.5)):
        depth, se = fit_local_planes(lin, z, du, dv, init, W, H, radius, 0.01, weight_sigma_px=sigma,
                                     adaptive_noise=True, return_sigma=True)
        inner = np.zeros((H, W), bool)
        inner[radius:-radius, radius:-radius] = True
        inner = inner.ravel()
        scatter = np.std(depth[inner] - 3.0)
        # the standard error from the measured noise and the weights predicts the pixel-to-pixel scatter
        assert 0.75 < np.median(se[inner]) / scatter < 1.33, (radius, np.median(se[inner]), scatter)


def test_multiscale_plane_fit_keeps_a_crease_sharp_and_averages_the_flats():
    # a floor meeting a wall (a concave crease along a row) 3-4 m away, 1 cm range noise, ~4 points per pixel
    n_floor = np.array([0.0, -0.94, -0.34])  # plane through (0, 0.9, 3.4): the floor seen from 0.9 m above
    d_floor = n_floor @ np.array([0.0, 0.9, 3.4])

    def scene(xn, yn):
        floor = d_floor / (n_floor[0] * xn + n_floor[1] * yn + n_floor[2])
        return np.where((floor > 0) & (floor < 4.0), floor, 4.0)  # wall at 4 m beyond the floor

    pts = _ray_cloud(scene, 4 * W * H, 0.01, np.random.default_rng(13))
    truth = scene(*_centre_rays())
    kw = dict(noise_m=0.01, adaptive_noise=True, band_rel=0.01)
    wide = zbuffer(pts, K, W, H, 1, plane_radius_px=8, plane_sigma_px=4.0, **kw)
    narrow = zbuffer(pts, K, W, H, 1, plane_radius_px=2, **kw)
    multi = zbuffer(pts, K, W, H, 1, plane_radius_px=(2, 4, 8), plane_sigma_px=(None, 2.0, 4.0), **kw)
    crease_row = int(np.argmax(np.any(truth < 4.0, axis=1)))  # first row that sees the floor
    rows = np.arange(H)[:, None] * np.ones((1, W), int)
    inner = (np.arange(W) >= 8) & (np.arange(W) < W - 8)
    near_crease = (np.abs(rows - crease_row) <= 2) & inner
    flat = (np.abs(rows - crease_row) >= 10) & (rows >= 8) & (rows < H - 8) & inner
    err = {k: np.abs(d - truth) / truth for k, d in (("wide", wide), ("narrow", narrow), ("multi", multi))}
    assert 6 < crease_row < H - 12 and flat.sum() > 500
    # the wide window straddles the crease and reads it too near; the narrow ones do not
    assert np.mean(err["multi"][near_crease]) < 0.7 * np.mean(err["wide"][near_crease])  # 0.0021 vs 0.0036
    # on the flats the wide window's averaging is kept
    assert np.sqrt(np.mean(err["multi"][flat] ** 2)) < 0.6 * np.sqrt(np.mean(err["narrow"][flat] ** 2))
    with pytest.raises(ValueError, match="plane_sigma_px"):
        zbuffer(pts, K, W, H, 1, plane_radius_px=(2, 4, 8), plane_sigma_px=(None, 2.0), **kw)
    # at the view cloud's density (16 points per pixel) a radius-1 window pays next to the crease (build-depth's
    # default radii): the rows 1-3 px from it read closer (mean error 0.87-0.93 x over seeds 13-20), the flats the same
    pts = _ray_cloud(scene, 16 * W * H, 0.01, np.random.default_rng(13))
    near_crease = (np.abs(rows - crease_row) >= 1) & (np.abs(rows - crease_row) <= 3) & inner
    err = {radii: np.abs(zbuffer(pts, K, W, H, 1, plane_radius_px=radii, plane_sigma_px=sigmas, **kw) - truth) / truth
           for radii, sigmas in (((2, 4, 8), (None, 2.0, 4.0)), (BuildConfig().plane_radius_px, BuildConfig().plane_sigma_px))}
    assert BuildConfig().plane_radius_px == (1, 2, 4, 8)
    assert np.mean(err[(1, 2, 4, 8)][near_crease]) < 0.95 * np.mean(err[(2, 4, 8)][near_crease])  # 0.925 x
    assert np.sqrt(np.mean(err[(1, 2, 4, 8)][flat] ** 2)) < 1.05 * np.sqrt(np.mean(err[(2, 4, 8)][flat] ** 2))


def test_curvature_correction_removes_most_of_the_plane_fits_bias_on_a_pole():
    # a 20 cm pole 0.5-0.6 m away (20 px wide at this test camera, as the tiny rig's 3 cm pole 0.47 m away is at
    # its 228 px): a plane fitted over a window of the convex front lies behind it at the window's centre
    from zedd_capture.pointcloud.local_planes import fit_local_planes, plane_hessian
    from zedd_capture.pointcloud.project import project_points

    truth, inner = _pole_front_depth(K, W, H, 0.6, 0.1)
    pole = lambda xn, yn: _pole_depth(xn, 0.6, 0.1)  # noqa: E731
    pts = _ray_cloud(pole, 10 * W * H, 0.005, np.random.default_rng(21))
    lin, z, du, dv = project_points(pts, K, W, H, subpixel=True)
    init = np.bincount(lin, weights=z, minlength=W * H) / np.maximum(np.bincount(lin, minlength=W * H), 1)
    init = np.where(init > 0, init, np.inf).astype(np.float32)
    inverse_depth = 1.0 / truth
    true_hxx = np.roll(inverse_depth, -1, 1) + np.roll(inverse_depth, 1, 1) - 2 * inverse_depth
    for radius, sigma in ((2, None), (4, 2.0), (8, 4.0)):
        depth, planes, _, (m_uu, m_uv, m_vv) = fit_local_planes(
            lin, z, du, dv, init, W, H, radius, 0.01, weight_sigma_px=sigma, adaptive_noise=True, return_planes=True,
            return_sigma=True, return_offset_moments=True)
        hxx, hxy, hyy = (h.reshape(H, W) for h in plane_hessian(planes, W, H))
        # the Hessian from the fitted slopes: the pole's curvature across, none along it
        assert np.median(hxx[inner] / true_hxx[inner]) == pytest.approx(1.0, abs=0.2)
        assert np.median(np.abs(hyy[inner])) < 0.15 * np.median(np.abs(hxx[inner]))  # noise: 7 % at radius 2
        with np.errstate(divide="ignore"):  # 0 off the pole
            corrected = 1.0 / (planes[0] - (0.5 * hxx.ravel() * m_uu + hxy.ravel() * m_uv + 0.5 * hyy.ravel() * m_vv))
        bias = np.median((depth.reshape(H, W) - truth)[inner] / truth[inner])
        bias_corrected = np.median((corrected.reshape(H, W) - truth)[inner] / truth[inner])
        assert bias > 0.001  # behind the surface: +0.15, +0.36, +1.1 %
        assert abs(bias_corrected) < 0.5 * bias, (radius, bias, bias_corrected)  # the quadratic term is most of it
    # the multiscale choice: corrected fits keep more of the pole within 0.5 % (a 3 m wall behind it)
    pts = _ray_cloud(lambda xn, yn: np.where(np.isnan(pole(xn, yn)), 3.0, pole(xn, yn)), 10 * W * H, 0.005,
                     np.random.default_rng(22))
    kw = dict(noise_m=0.01, adaptive_noise=True, band_rel=0.01, plane_radius_px=(2, 4, 8),
              plane_sigma_px=(None, 2.0, 4.0))
    err = {c: (zbuffer(pts, K, W, H, 1, plane_curvature=c, **kw)[inner] - truth[inner]) / truth[inner]
           for c in (False, True)}
    assert np.median(err[True]) < 0.7 * np.median(err[False])  # +0.20 vs +0.35 %
    assert np.mean(np.abs(err[True]) <= 0.005) > np.mean(np.abs(err[False]) <= 0.005) + 0.03  # 99 vs 92 %
