"""``zedd eval-model``: run a model over ZEDD samples, score it, write predictions and metrics.

Outputs under ``out_dir``: ``<scene>/depth.npy`` (float32 metres), ``<scene>/depth.png``
(colour-mapped inverse depth), ``<scene>/metrics.json``, and ``metrics.json`` (settings, every
scene, the mean over scenes); optionally the test-server submission zip.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ..layout import SUBMISSION_COUNT, atomic_save_npy, atomic_write_bytes, atomic_write_json
from .dataset import DEFAULT_APERTURE, DEFAULT_RUNS, FocusStack, find_samples, load_stack
from .dfd_classic import dfd_classic
from .metrics import depth_metrics, mean_metrics
from .submission import write_submission

MODELS = ("fossa-vits", "fossa-vitb", "dfd-classic")
Predictor = Callable[[FocusStack], np.ndarray]


def fossa_predictor(model_name: str, checkpoint: str | Path | None, device: str = "auto") -> Predictor:
    """Predictor running a FOSSA checkpoint (``checkpoint`` or the cached release of ``model_name``)."""
    import torch

    from ..fossa import IMAGENET_MEAN, IMAGENET_STD, encoder_of_model_name, load_fossa

    model = load_fossa(checkpoint if checkpoint is not None else model_name, encoder_of_model_name(model_name), device)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)

    def predict(s: FocusStack) -> np.ndarray:
        if s.K is None:
            raise ValueError(f"scene {s.scene}: FOSSA needs gt/K.txt (the focal length scales focus distances)")
        stack = (torch.from_numpy(s.images).permute(0, 3, 1, 2)[None] - mean) / std
        fd = torch.from_numpy(s.focus_distances_m)[None]
        K = torch.from_numpy(np.asarray(s.K, np.float32))[None]
        return model.predict(stack, fd, K)[0, 0].float().cpu().numpy()

    return predict


def make_predictor(model_name: str, checkpoint: str | Path | None = None, device: str = "auto") -> Predictor:
    """Predictor for one of MODELS ('dfd-classic' needs no weights)."""
    if model_name == "dfd-classic":
        if checkpoint is not None:
            raise ValueError("dfd-classic needs no weights; drop the checkpoint")
        return lambda s: dfd_classic(s.images, s.focus_distances_m)
    if model_name in ("fossa-vits", "fossa-vitb"):
        return fossa_predictor(model_name, checkpoint, device)
    raise ValueError(f"unknown model {model_name!r}; expected one of {MODELS}")


def depth_colormap_png(depth: np.ndarray) -> bytes:
    """PNG bytes of inverse depth, 2-98 % percentile stretch, TURBO colour map (near = red)."""
    depth = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(depth) & (depth > 0)
    inv = np.zeros(depth.shape)
    inv[valid] = 1.0 / depth[valid]
    lo, hi = np.percentile(inv[valid], (2, 98)) if valid.any() else (0.0, 1.0)
    scaled = np.where(valid, np.clip((inv - lo) / max(hi - lo, 1e-9), 0, 1), 0.0)  # invalid -> darkest
    img = cv2.applyColorMap((scaled * 255).round().astype(np.uint8), cv2.COLORMAP_TURBO)
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("cv2.imencode failed to encode the depth PNG")
    return buf.tobytes()


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def evaluate(data_root_or_scene: str | Path, model_name: str = "fossa-vits", checkpoint: str | Path | None = None,
             split: str = "val", aperture: float = DEFAULT_APERTURE, runs: Sequence[int] = DEFAULT_RUNS,
             out_dir: str | Path = "eval_results", submission: str | Path | None = None, progress: bool = True,
             *, device: str = "auto", threads: int | None = None) -> dict[str, Any]:
    """Evaluate ``model_name`` on every scene of a ZEDD root (or one scene folder).

    split: 'val' (480x640 protocol) or 'test' (native); aperture: f-number of the stack images;
    runs: run ids of the stack (default F/2.8 runs 1,3,5,7,9); submission: zip path to write the
    test-server file (50 scenes of 1216x1824); device: FOSSA's torch device ('auto': a CUDA GPU when
    torch sees one, else the CPU); threads: torch CPU threads. Scenes without gt/depth.npy are predicted but not
    scored. Returns {'model', 'device', 'split', 'aperture', 'runs', 'rows': [{'scene', 'seconds',
    <metrics>...}], 'mean': {<metrics>} or None, 'out_dir', 'submission'}.
    """
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; expected one of {MODELS}")
    samples = find_samples(data_root_or_scene, split)
    if submission is not None and (split != "test" or len(samples) != SUBMISSION_COUNT):
        raise ValueError(f"a submission zip needs the test split's {SUBMISSION_COUNT} scenes at native resolution; "
                         f"got split {split!r} with {len(samples)} scenes")
    out = Path(out_dir)
    if model_name == "dfd-classic":
        device = "cpu"  # numpy
    else:
        from ..fossa import torch_device

        device = str(torch_device(device))
    predictor = make_predictor(model_name, checkpoint, device)
    rows: list[dict[str, Any]] = []
    pred_paths: dict[str, Path] = {}
    bar = _progress(progress)
    task = bar.add_task(f"{model_name} on {split}", total=len(samples)) if bar else None
    if bar:
        bar.start()
    try:
        for sample in samples:
            if bar:
                bar.update(task, description=f"{model_name}: {sample.scene}")
            stack = load_stack(sample, split, runs, aperture)
            t0 = time.perf_counter()
            pred = np.asarray(predictor(stack), dtype=np.float32)
            seconds = time.perf_counter() - t0
            scene_dir = out / sample.scene
            pred_paths[sample.scene] = scene_dir / "depth.npy"
            atomic_save_npy(pred_paths[sample.scene], pred)
            atomic_write_bytes(scene_dir / "depth.png", depth_colormap_png(pred))
            row: dict[str, Any] = {"scene": sample.scene, "seconds": round(seconds, 3)}
            if stack.depth is not None:
                row.update(depth_metrics(pred, stack.depth))
            atomic_write_json(scene_dir / "metrics.json", row)
            rows.append(row)
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    scored = [{k: v for k, v in r.items() if k not in ("scene", "seconds")} for r in rows if len(r) > 2]
    result: dict[str, Any] = {
        "model": model_name, "checkpoint": str(checkpoint) if checkpoint else None, "device": device, "split": split,
        "aperture": aperture, "runs": list(runs), "rows": rows,
        "mean": mean_metrics(scored) if scored else None, "scored_scenes": len(scored),
        "out_dir": str(out), "submission": None,
    }
    if submission is not None:
        result["submission"] = str(write_submission(pred_paths, submission))
    # predictions of scenes this run did not score (an earlier run into the same --out) stay, but are not its
    result["other_scenes_in_out"] = sorted(p.parent.name for p in out.glob("*/depth.npy") if p.parent.name not in pred_paths)
    atomic_write_json(out / "metrics.json", result)
    return result
