"""Depth metrics on hand-computed cases, and the submission zip."""
from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest

from zedd_capture.evaluation.metrics import METRIC_KEYS, depth_metrics, mean_metrics
from zedd_capture.evaluation.submission import iter_submission, submission_name, validate_submission, write_submission
from zedd_capture.layout import SUBMISSION_COUNT, SUBMISSION_SHAPE


def test_hand_computed_case() -> None:
    gt = np.array([1.0, 2.0, 4.0, 10.0])
    pred = np.array([1.0, 2.2, 3.0, 10.0])
    m = depth_metrics(pred, gt)
    assert set(m) == set(METRIC_KEYS)
    # ratios max(p/t, t/p): 1, 1.1, 4/3, 1
    assert m["d1_05"] == pytest.approx(0.5)
    assert m["d1_15"] == pytest.approx(0.75)
    assert m["d1"] == pytest.approx(0.75)
    assert m["d2"] == m["d3"] == pytest.approx(1.0)
    assert m["abs_rel"] == pytest.approx((0 + 0.1 + 0.25 + 0) / 4)
    assert m["sq_rel"] == pytest.approx((0.04 / 2 + 1.0 / 4) / 4)
    assert m["mse"] == pytest.approx((0.04 + 1.0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(1.04 / 4))
    g = np.log([1.0, 1.1, 0.75, 1.0])
    assert m["rmse_log"] == pytest.approx(math.sqrt(np.mean(g**2)))
    assert m["log10"] == pytest.approx(np.mean(np.abs(g)) / math.log(10))
    assert m["silog"] == pytest.approx(math.sqrt(np.mean(g**2) - 0.5 * np.mean(g) ** 2))


def test_perfect_and_scaled_prediction() -> None:
    gt = np.linspace(0.5, 8.0, 100).reshape(10, 10)
    perfect = depth_metrics(gt.copy(), gt)
    assert perfect["d1_05"] == 1.0 and perfect["abs_rel"] == 0.0 and perfect["silog"] == 0.0
    scaled = depth_metrics(1.1 * gt, gt)
    assert scaled["abs_rel"] == pytest.approx(0.1)
    assert scaled["d1_05"] == 0.0 and scaled["d1_15"] == 1.0
    # a global scale error is (almost) invisible to SiLog: sqrt(0.5) * |ln 1.1|
    assert scaled["silog"] == pytest.approx(math.sqrt(0.5) * math.log(1.1))


def test_invalid_ground_truth_pixels_are_excluded() -> None:
    gt = np.array([[2.0, 0.0, np.nan], [np.inf, 0.005, 1500.0]])
    pred = np.array([[2.0, np.nan, -1.0], [0.0, 7.0, np.inf]])  # garbage only where gt is invalid
    m = depth_metrics(pred, gt)
    assert m["abs_rel"] == 0.0 and m["d1_05"] == 1.0
    edge = depth_metrics(np.array([0.01, 1000.0]), np.array([0.01, 1000.0]))  # bounds are inclusive
    assert edge["abs_rel"] == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_prediction_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match="1 NaN/inf values on valid ground-truth pixels"):
        depth_metrics(np.array([1.0, bad, 2.0]), np.array([1.0, 1.5, 2.0]))


def test_other_bad_inputs() -> None:
    with pytest.raises(ValueError, match="non-positive"):
        depth_metrics(np.array([1.0, 0.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        depth_metrics(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="no valid pixel"):
        depth_metrics(np.ones(2), np.zeros(2))


def test_mean_over_images() -> None:
    gt = np.array([1.0, 2.0])
    a, b = depth_metrics(np.array([1.0, 2.0]), gt), depth_metrics(np.array([1.2, 2.4]), gt)
    mean = mean_metrics([a, b])
    assert mean["abs_rel"] == pytest.approx(0.1)
    # RMSE is per image, then averaged (not recomputed from the pooled MSE)
    assert mean["rmse"] == pytest.approx(0.5 * b["rmse"])
    with pytest.raises(ValueError):
        mean_metrics([])
    with pytest.raises(ValueError, match="keys"):
        mean_metrics([a, {"abs_rel": 0.0}])


def _predictions() -> dict[str, np.ndarray]:
    """50 distinct constant maps (broadcast views: no 440 MB of test data in memory)."""
    return {f"scene{i:03d}": np.broadcast_to(np.float32(1.0 + i), SUBMISSION_SHAPE) for i in range(SUBMISSION_COUNT)}


@pytest.fixture
def zip_dir(tmp_path: Path):
    """tmp_path whose zips (440 MB each) are deleted after the test, not kept by pytest."""
    yield tmp_path
    for p in tmp_path.glob("*.zip"):
        p.unlink()


def test_submission_round_trip(zip_dir: Path) -> None:
    tmp_path = zip_dir
    preds = _predictions()
    keys = list(preds)[::-1]  # insertion order must not matter: scenes are sorted
    zip_path = write_submission({k: preds[k] for k in keys}, tmp_path / "sub.zip")
    with zipfile.ZipFile(zip_path) as zf:
        assert zf.namelist() == [submission_name(i) for i in range(1, 51)]
    assert submission_name(1) == "zedd_output_0001.npy"
    for i, (name, arr) in enumerate(iter_submission(zip_path)):
        assert name == submission_name(i + 1)
        assert arr.shape == SUBMISSION_SHAPE and arr.dtype == np.float32
        assert arr[0, 0] == arr[-1, -1] == preds[f"scene{i:03d}"][0, 0]
    npy = tmp_path / "p.npy"
    np.save(npy, np.ones(SUBMISSION_SHAPE, np.float64))
    write_submission([npy] * 50, tmp_path / "from_paths.zip")  # paths are accepted too
    assert validate_submission(tmp_path / "from_paths.zip") == 50


def test_submission_rejects_bad_inputs(zip_dir: Path) -> None:
    tmp_path = zip_dir
    preds = _predictions()
    out = tmp_path / "sub.zip"
    with pytest.raises(ValueError, match="50 predictions"):
        write_submission(list(preds.values())[:49], out)
    bad = dict(preds, scene007=np.zeros((480, 640), np.float32))
    with pytest.raises(ValueError, match=r"scene007: shape \(480, 640\)"):
        write_submission(bad, out)
    nan = np.array(preds["scene003"])
    nan[5, 5] = np.nan
    with pytest.raises(ValueError, match="scene003: 1 NaN/inf"):
        write_submission(dict(preds, scene003=nan), out)
    with pytest.raises(ValueError, match="dtype int"):
        write_submission(dict(preds, scene001=np.ones(SUBMISSION_SHAPE, np.int32)), out)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("zedd_output_0001.npy", b"")
    with pytest.raises(ValueError, match="missing"):
        validate_submission(out)
