"""dfd-classic on focus stacks rendered from a known depth map with a thin-lens blur."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

import json
import shutil
from pathlib import Path

from PIL import Image

from zedd_capture.evaluation.dataset import find_samples, load_stack, val_intrinsics
from zedd_capture.evaluation.dfd_classic import dfd_classic, peak_diopters, push_pull_fill
from zedd_capture.evaluation.evaluate import evaluate
from zedd_capture.evaluation.metrics import depth_metrics
from zedd_capture.layout import MetadataRow, ZeddSample, format_image_name, write_metadata

H, W = 120, 160
FOCAL_M, F_NUMBER = 0.05, 2.8
PITCH_M = 36e-3 / max(H, W)  # the FOSSA synthetic-stack convention: 36 mm sensor across the long edge


def coc_px(depth_m: float, fd_m: float) -> float:
    """Thin-lens blur-circle diameter in pixels for an object at depth_m, focus at fd_m."""
    aperture = FOCAL_M / F_NUMBER
    return abs(depth_m - fd_m) * FOCAL_M * aperture / (depth_m * (fd_m - FOCAL_M)) / PITCH_M


def texture(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """Multi-scale random texture in [0, 1] (h, w, 3)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for scale, amp in ((1, 0.5), (3, 0.3), (9, 0.2)):
        small = rng.random((h // scale + 1, w // scale + 1, 3)).astype(np.float32)
        img += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w]
    return np.clip(img, 0, 1)


def render_stack(tex: np.ndarray, depth: np.ndarray, fds: list[float]) -> np.ndarray:
    """Per depth layer, blur the texture with a Gaussian (sigma = CoC / 2) and take that layer's pixels."""
    stack = []
    for fd in fds:
        out = np.zeros_like(tex)
        for d in np.unique(depth):
            sigma = coc_px(float(d), fd) / 2
            layer = tex if sigma < 0.3 else cv2.GaussianBlur(tex, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
            out[depth == d] = layer[depth == d]
        stack.append(out)
    return np.stack(stack)


def step_depth(h: int = H, w: int = W) -> np.ndarray:
    """Four vertical bands at 0.9, 1.5, 2.5, 4.5 m plus a near square at 0.7 m."""
    depth = np.empty((h, w), np.float32)
    for i, d in enumerate((0.9, 1.5, 2.5, 4.5)):
        depth[:, i * w // 4:(i + 1) * w // 4] = d
    depth[h // 3:2 * h // 3, 3 * w // 8:5 * w // 8] = 0.7
    return depth


FDS = [0.7, 1.0, 1.6, 2.6, 5.0]


def test_dfd_classic_beats_constant_depth() -> None:
    depth = step_depth()
    stack = render_stack(texture(0), depth, FDS)
    pred = dfd_classic(stack, np.array(FDS))
    assert pred.shape == depth.shape and pred.dtype == np.float32 and np.isfinite(pred).all()
    m = depth_metrics(pred, depth)
    const = depth_metrics(np.full_like(depth, np.median(depth)), depth)
    print(f"dfd-classic AbsRel {m['abs_rel']:.4f} d1 {m['d1']:.3f}; constant (median) AbsRel {const['abs_rel']:.4f}")
    assert m["abs_rel"] < 0.5 * const["abs_rel"]
    assert m["abs_rel"] < 0.15
    assert pred.min() >= min(FDS) - 1e-4 and pred.max() <= max(FDS) + 1e-3


def test_dfd_classic_slice_order_and_tilted_plane() -> None:
    rows = np.linspace(0.8, 4.0, H, dtype=np.float32)[:, None]  # a floor-like ramp, quantised in 24 layers
    depth = np.repeat(np.round(rows * 6) / 6, W, axis=1)
    stack = render_stack(texture(1), depth, FDS)
    order = [3, 0, 4, 1, 2]
    a = dfd_classic(stack, np.array(FDS))
    b = dfd_classic(stack[order], np.array(FDS)[order])
    np.testing.assert_allclose(a, b, rtol=1e-6)
    m = depth_metrics(a, depth)
    const = depth_metrics(np.full_like(depth, np.median(depth)), depth)
    assert m["abs_rel"] < 0.5 * const["abs_rel"]


def test_peak_interpolation_recovers_gaussian_peak() -> None:
    diopters = np.array([0.2, 0.5, 1.0, 1.6, 2.0])
    true_peak = np.array([0.8, 1.3, 0.35])
    fm = np.exp(-((diopters[:, None] - true_peak[None]) ** 2) / (2 * 0.4**2))[:, :, None]
    np.testing.assert_allclose(peak_diopters(fm, diopters)[:, 0], true_peak, atol=1e-6)


def test_push_pull_fills_holes_and_keeps_confident_pixels() -> None:
    values = np.tile(np.linspace(1, 2, 32, dtype=np.float32), (32, 1))
    weights = np.zeros_like(values)
    weights[::4, ::4] = 1
    filled = push_pull_fill(values, weights)
    assert np.isfinite(filled).all()
    np.testing.assert_allclose(filled[::4, ::4], values[::4, ::4], atol=1e-6)
    assert np.abs(filled - values).max() < 0.1


def test_dfd_classic_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="N >= 2"):
        dfd_classic(np.zeros((1, 8, 8, 3)), np.array([1.0]))
    with pytest.raises(ValueError, match="positive finite"):
        dfd_classic(np.zeros((2, 8, 8, 3)), np.array([1.0, -1.0]))


def make_zedd_root(root: Path, h: int = 120, w: int = 180, split: str = "val", scene: str = "steps01") -> np.ndarray:
    """A ZEDD root with one rendered scene (runs 1,3,5,7,9 at F2.8, plus an F16 distractor); returns depth."""
    depth = step_depth(h, w)
    fds = dict(zip((1, 3, 5, 7, 9), FDS))
    write_metadata(root / "metadata.txt", [MetadataRow(r, 0x1000 + 0x400 * r, fd) for r, fd in fds.items()])
    sample = ZeddSample(root, split, scene)
    sample.focus_stack_dir.mkdir(parents=True)
    sample.gt_dir.mkdir()
    stack = render_stack(texture(2, h, w), depth, list(fds.values()))
    for (run, _), img in zip(fds.items(), stack):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(
            sample.image_path(run, 0x1000 + 0x400 * run, 2.8), quality=95)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(sample.focus_stack_dir / format_image_name(5, 0x2400, 16.0))
    gt = depth.copy()
    gt[:4] = 0.0  # invalid rows, as lidar holes are
    np.save(sample.depth_path, gt)
    np.savetxt(sample.K_path, [[250.0, 0, w / 2], [0, 250.0, h / 2], [0, 0, 1]])
    return depth


def test_val_protocol_reader(tmp_path: Path) -> None:
    make_zedd_root(tmp_path, 120, 180)
    (sample,) = find_samples(tmp_path, "val")
    s = load_stack(sample, "val")
    assert s.images.shape == (5, 480, 640, 3) and s.depth.shape == (480, 640)
    np.testing.assert_allclose(s.focus_distances_m, FDS, rtol=1e-4)
    # 120x180 -> LANCZOS to 480x720, centre crop 40 px each side
    np.testing.assert_allclose(s.K, val_intrinsics(np.loadtxt(sample.K_path), 120, 180))
    np.testing.assert_allclose(s.K[[0, 1, 0, 1], [0, 1, 2, 2]], [1000.0, 1000.0, 360 - 40, 240.0])
    assert set(np.unique(s.depth)) <= set(np.unique(np.load(sample.depth_path)))  # NEAREST: no new values
    native = load_stack(find_samples(sample.scene_dir, "test")[0], "test")
    assert native.images.shape == (5, 120, 180, 3)
    with pytest.raises(Exception, match="F4.0"):
        load_stack(sample, "val", aperture=4.0)


def test_evaluate_dfd_classic_end_to_end(tmp_path: Path) -> None:
    depth = make_zedd_root(tmp_path / "zedd", 120, 180)
    res = evaluate(tmp_path / "zedd", "dfd-classic", None, "val", 2.8, (1, 3, 5, 7, 9), tmp_path / "out",
                   None, progress=False)
    (row,) = res["rows"]
    const = depth_metrics(np.full_like(depth, np.median(depth)), depth)
    print(f"dfd-classic on the synthetic ZEDD sample: AbsRel {row['abs_rel']:.4f} (constant {const['abs_rel']:.4f})")
    assert row["scene"] == "steps01" and row["abs_rel"] < 0.5 * const["abs_rel"]
    assert res["mean"]["abs_rel"] == row["abs_rel"]
    out = tmp_path / "out"
    assert np.load(out / "steps01" / "depth.npy").shape == (480, 640)
    assert cv2.imread(str(out / "steps01" / "depth.png")).shape == (480, 640, 3)
    assert json.loads((out / "metrics.json").read_text())["rows"][0]["d1"] == row["d1"]
    assert json.loads((out / "steps01" / "metrics.json").read_text())["abs_rel"] == row["abs_rel"]
    assert res["other_scenes_in_out"] == []
    # an earlier run's scene in the same --out is kept and named, not listed among this run's rows
    shutil.copytree(out / "steps01", out / "office03")
    again = evaluate(tmp_path / "zedd", "dfd-classic", None, "val", 2.8, (1, 3, 5, 7, 9), out, None, progress=False)
    assert again["other_scenes_in_out"] == ["office03"] and [r["scene"] for r in again["rows"]] == ["steps01"]
    with pytest.raises(ValueError, match="submission zip needs the test split"):
        evaluate(tmp_path / "zedd", "dfd-classic", None, "val", 2.8, (1, 3, 5, 7, 9), out, out / "s.zip", False)
