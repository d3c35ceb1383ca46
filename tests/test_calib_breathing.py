"""Breathing warps: ECC pyramid + bicubic refinement on synthetic warps of a texture; chaining; I/O; apply."""

import numpy as np
import pytest
from scipy import ndimage
from test_calib_synth import textured_image

from zedd_capture.calibration.breathing import (BreathingError, apply, compose, estimate_breathing,
                                                max_displacement_px, read_breathing, to3, warp_scale,
                                                write_breathing)

W, H = 480, 320


def shot(base: np.ndarray, warp: np.ndarray, gain: float, seed: int) -> np.ndarray:
    """Image of a run whose pixels map to the canonical image by ``warp`` (exact cubic-spline resampling)."""
    ys, xs = np.mgrid[0:H, 0:W].astype(float)
    M = to3(warp)
    cx = M[0, 0] * xs + M[0, 1] * ys + M[0, 2] + 60
    cy = M[1, 0] * xs + M[1, 1] * ys + M[1, 2] + 60
    img = ndimage.map_coordinates(base, [cy, cx], order=3, mode="mirror")
    img = gain * img + 0.05 + np.random.default_rng(seed).normal(0, 0.004, img.shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def breathing_truth(dd: float) -> np.ndarray:
    s = 1 / (1 + 0.014 * dd)
    cx, cy = (W - 1) / 2 + 2.0, (H - 1) / 2 - 1.5
    return np.array([[s, 0, (1 - s) * cx + 0.15 * dd], [0, s, (1 - s) * cy - 0.1 * dd]])


@pytest.fixture(scope="module")
def runs():
    base = textured_image(W + 120, H + 120, seed=3)
    dds = {1: 0.9, 2: 0.5, 3: 0.15, 4: 0.0, 5: -0.1, 6: -0.2}
    truth = {k: breathing_truth(dd) for k, dd in dds.items()}
    imgs = {k: shot(base, truth[k], 0.7 + 0.06 * k, k) for k in truth}  # exposure differs per run
    return truth, imgs


def test_per_run_warps_within_005px(runs):
    truth, imgs = runs
    res = estimate_breathing(imgs, 4)
    for k in truth:
        assert max_displacement_px(res.warps[k], truth[k], W, H) <= 0.05, (k, res.method[k])
    # the fitted breathing model recovers k (scale vs 1/d) from the warps
    d = {k: 1 / (1 / 3.08 + dd) for k, dd in zip(truth, [0.9, 0.5, 0.15, 0.0, -0.1, -0.2])}
    res2 = estimate_breathing(imgs, 4, focus_distances_m=d, canonical_distance_m=3.08)
    assert res2.model_k_per_diopter == pytest.approx(0.014, rel=0.02)
    assert max(abs(v) for v in res2.model_residual.values()) < 5e-5


def test_chaining_when_direct_fails(runs, monkeypatch):
    import zedd_capture.calibration.breathing as br

    truth, imgs = runs
    n1, n4 = br.normalise(imgs[1]), br.normalise(imgs[4])
    real = br.ecc_align

    def flaky(image, reference, *a, **k):  # direct alignment of run 1 to the canonical run fails
        if image.shape == n1.shape and np.array_equal(image, n1) and np.array_equal(reference, n4):
            raise br.BreathingError("ECC did not converge")
        return real(image, reference, *a, **k)

    monkeypatch.setattr(br, "ecc_align", flaky)
    res = br.estimate_breathing(imgs, 4)
    assert res.method[1] == "chained via run 2"
    assert max_displacement_px(res.warps[1], truth[1], W, H) <= 0.05
    with pytest.raises(BreathingError, match="run"):
        estimate_breathing(imgs, 4, min_correlation=1.01)
    w13 = compose(truth[1], np.linalg.inv(to3(truth[3]))[:2])
    assert max_displacement_px(compose(w13, truth[3]), truth[1], W, H) < 1e-9


def test_apply_and_roundtrip(tmp_path, runs):
    truth, imgs = runs
    out = apply(imgs[1], truth[1])
    assert out.shape == imgs[1].shape and out.dtype == np.uint8
    # the warped run image matches the canonical image (up to exposure) in the interior
    a, b = out[40:-40, 40:-40].astype(float), imgs[4][40:-40, 40:-40].astype(float)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98
    p = tmp_path / "breathing.json"
    write_breathing(p, truth, {"rig": "test"})
    back = read_breathing(p)
    assert set(back) == set(truth) and all(np.allclose(back[k], truth[k]) for k in truth)
    assert warp_scale(back[1]) < 1 < warp_scale(back[6])
    p.write_text('{"run_1": [[1, 0], [0, 1]]}')
    with pytest.raises(BreathingError, match=r"breathing.json: run_1: expected a finite 2x3"):
        read_breathing(p)


def test_inconsistent_sizes_name_run(runs):
    truth, imgs = runs
    bad = dict(imgs)
    bad[2] = imgs[2][:-10]
    with pytest.raises(BreathingError, match="run 2: image size"):
        estimate_breathing(bad, 4)


def test_calibrate_breathing_of_a_scene_from_its_raw_folder(tmp_path, runs):
    """`zedd calibrate-breathing --scene`: the scene's own F16 images -> scenes/<scene>/work/breathing.json
    (the errors of this path: test_bad_inputs.test_calibrate_breathing_*)."""
    import cv2

    from zedd_capture.calibration.breathing import read_breathing
    from zedd_capture.calibration.session import calibrate_breathing
    from zedd_capture.layout import SceneLayout
    from zedd_capture.rig import load_rig

    truth, imgs = runs
    rig = load_rig("sim")
    lay = SceneLayout(tmp_path, "s01")
    lay.raw_focus_stack_dir.mkdir(parents=True)
    mapping = {rig.capture.canonical_run: 4, 1: 1, 2: 2, 3: 3, 6: 5, 7: 6}  # rig run -> synthetic run
    for k, j in mapping.items():
        cv2.imwrite(str(lay.raw_image_path(k, 0x1000 + k, 16.0)), imgs[j], [cv2.IMWRITE_JPEG_QUALITY, 98])
        cv2.imwrite(str(lay.raw_image_path(k, 0x1000 + k, 1.4)), imgs[j])  # ignored (not F16)
    report = calibrate_breathing(rig, tmp_path, scene="s01")
    assert report.products["breathing"] == lay.breathing_path
    warps = read_breathing(lay.breathing_path)
    assert set(warps) == set(mapping)
    for k, j in mapping.items():
        assert max_displacement_px(warps[k], truth[j] @ np.linalg.inv(to3(truth[4])), W, H) <= 0.05
    assert not (tmp_path / "calibration").exists()  # a scene's warps never touch the rig's calibration
