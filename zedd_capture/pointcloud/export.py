"""Export one scene as a ZEDD sample (scenes/<scene>/zedd/), atomically.

Everything is written into a temporary folder beside ``zedd/`` and renamed into place at the
end, so an error never leaves a half-written sample: gt/depth.npy (float32 m, invalid 0),
gt/K.txt, gt/depth_vis.jpg, gt/overlay.jpg, focus_stack/ (every raw image warped into the
canonical image space with the scene's breathing warps and resized to the depth-map
resolution) and metadata.txt (focus distances from the focus LUT).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..layout import (CalibrationLayout, MetadataRow, SceneLayout, ZeddSample, default_mode, format_metadata,
                      existing_scene, parse_image_name)

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The ZEDD export failed; the message names the file. Nothing is left in zedd/."""


def colourise_depth(depth: np.ndarray, d_min: float | None = None, d_max: float | None = None) -> np.ndarray:
    """BGR uint8 visualisation (TURBO on inverse depth); invalid pixels black."""
    valid = depth > 0
    out = np.zeros(depth.shape + (3,), np.uint8)
    if not valid.any():
        return out
    inv = np.zeros_like(depth, dtype=np.float32)
    inv[valid] = 1.0 / depth[valid]
    lo = 1.0 / (d_max or float(np.percentile(depth[valid], 99)))
    hi = 1.0 / (d_min or float(np.percentile(depth[valid], 1)))
    g = np.clip((inv - lo) / max(hi - lo, 1e-9), 0, 1)
    col = cv2.applyColorMap((g * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    out[valid] = col[valid]
    return out


def _write_jpg(path: Path, img: np.ndarray, quality: int = 95) -> None:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ExportError(f"{path}: JPEG encoding failed")
    path.write_bytes(buf.tobytes())


def _load_warps(layout: SceneLayout, cal: CalibrationLayout):
    from ..calibration.breathing import read_breathing

    for p in (layout.breathing_path, cal.breathing_path):
        if p.is_file():
            if p != layout.breathing_path:
                log.warning("%s missing: using the rig-level warps %s", layout.breathing_path, p)
            return read_breathing(p), p
    raise ExportError(f"{layout.breathing_path}: breathing warps not found (nor {cal.breathing_path}); run the breathing calibration")


@dataclass
class ExportInputs:
    """What the export reads besides the depth map, read and checked (:func:`export_inputs`)."""

    images: dict  # raw focus-stack image path -> its parsed name (layout.ImageName)
    warps: object  # calibration.breathing warps (per run)
    metadata: list  # MetadataRow per run (focus distance from the focus LUT)


def export_inputs(rig, root: Path, scene: str) -> ExportInputs:
    """Read and check what :func:`export_zedd` needs besides the depth map: the raw focus stack's image names, the
    focus LUT and the breathing warps of every run. build-depth calls it before the build, so that a missing or
    corrupt calibration product fails in seconds, not after the build. Raises :class:`ExportError` (or the
    reader's error) naming the file."""
    from ..calibration.focus_lut import read_focus_lut

    layout = existing_scene(root, scene)
    cal = CalibrationLayout(Path(root), rig.name)
    raw = sorted(layout.raw_focus_stack_dir.glob("*.jpg")) if layout.raw_focus_stack_dir.is_dir() else []
    if not raw:
        raise ExportError(f"{layout.raw_focus_stack_dir}: no focus-stack images")
    names = {p: parse_image_name(p.name) for p in raw}
    lut = read_focus_lut(cal.focus_lut_path)
    warps, warp_path = _load_warps(layout, cal)
    hex_of_run: dict[int, int] = {}
    for p, n in names.items():
        if hex_of_run.setdefault(n.run, n.hexcode) != n.hexcode:
            raise ExportError(f"{p}: run {n.run} has images with different hexcodes")
    missing = sorted(set(hex_of_run) - set(warps))
    if missing:
        raise ExportError(f"{warp_path}: no warp for runs {missing}")
    rows = [MetadataRow(run, code, float(lut.distance_m(code, extrapolate=True))) for run, code in sorted(hex_of_run.items())]
    return ExportInputs(names, warps, rows)


def export_zedd(rig, root: Path, scene: str, depth: np.ndarray, K: np.ndarray, split: str = "val",
                jpeg_quality: int | None = None, inputs: ExportInputs | None = None) -> ZeddSample:
    """Write scenes/<scene>/zedd/ (a ZEDD root holding this scene under ``split``; the root's other splits are
    kept) and return the sample.

    depth: (H, W) float32 metres at rig.depth_map resolution (0 invalid); K: its 3x3 intrinsics; ``inputs``: from
    :func:`export_inputs` (read here when None).
    """
    from ..calibration.breathing import apply, rescale_warp

    layout = SceneLayout(Path(root), scene)
    W, H = rig.depth_map.width_px, rig.depth_map.height_px
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape != (H, W):
        raise ExportError(f"export {scene}: depth shape {depth.shape} != rig depth map {(H, W)}")
    quality = jpeg_quality or rig.camera.jpeg_quality
    inputs = inputs or export_inputs(rig, root, scene)
    names, warps, rows = inputs.images, inputs.warps, inputs.metadata

    layout.scene_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(layout.scene_dir)
    tmp_root = Path(tempfile.mkdtemp(prefix=".zedd.", suffix=".part", dir=layout.scene_dir))
    tmp_root.chmod(default_mode(folder=True))  # mkdtemp's folder is private; zedd/ is for others to read
    try:
        sample = ZeddSample(tmp_root, split, scene)
        sample.gt_dir.mkdir(parents=True)
        sample.focus_stack_dir.mkdir(parents=True)
        sample.metadata_path.write_text(format_metadata(rows))
        with open(sample.depth_path, "wb") as f:
            np.save(f, depth)
        np.savetxt(sample.K_path, np.asarray(K, float), fmt="%.10g")
        aif = None
        for p, n in sorted(names.items(), key=lambda kv: (kv[1].run, kv[1].f_number)):
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise ExportError(f"{p}: unreadable image")
            h, w = img.shape[:2]
            Wp = np.asarray(warps[n.run], float)
            if warps.image_size and tuple(warps.image_size) != (w, h):
                Wp = rescale_warp(Wp, warps.image_size, (w, h))
            canon = apply(img, Wp)
            small = cv2.resize(canon, (W, H), interpolation=cv2.INTER_AREA)
            _write_jpg(sample.image_path(n.run, n.hexcode, n.f_number), small, quality)
            if n.run == rig.capture.canonical_run and abs(n.f_number - rig.capture.all_in_focus_f_number) < 1e-6:
                aif = small
        vis = colourise_depth(depth)
        _write_jpg(sample.depth_vis_path, vis, 95)
        if aif is None:
            log.warning("export %s: no all-in-focus image (run %d, F%.1f); overlay on black", scene,
                        rig.capture.canonical_run, rig.capture.all_in_focus_f_number)
            aif = np.zeros_like(vis)
        overlay = np.where((depth > 0)[..., None], (0.5 * aif + 0.5 * vis).astype(np.uint8), aif)
        _write_jpg(sample.overlay_path, overlay, 95)
        # swap into place
        final = layout.zedd_root
        old = None
        if final.exists():
            old = final.with_name(f".zedd.old.{tmp_root.name}")
            final.rename(old)
        tmp_root.rename(final)
        tmp_root = None
    except BaseException:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    if old is not None:
        # the root's other splits (an export to val after one to test) move over; should that fail, they stay in
        # the hidden .zedd.old.* folder, which is then kept
        for entry in old.iterdir():
            if entry.is_dir() and entry.name != split:
                entry.rename(final / entry.name)
        shutil.rmtree(old, ignore_errors=True)
    return layout.zedd_sample(split)


def _remove_stale_parts(scene_dir: Path, min_age_s: float = 3600.0) -> None:
    """Remove the temporary folders of exports killed before they finished (``.zedd.*.part`` older than
    ``min_age_s``: an export running beside this one keeps its own)."""
    now = time.time()
    for part in scene_dir.glob(".zedd.*.part"):
        try:
            if part.is_dir() and now - part.stat().st_mtime > min_age_s:
                shutil.rmtree(part, ignore_errors=True)
                log.info("removed %s (left by an export that did not finish)", part)
        except OSError:
            pass
