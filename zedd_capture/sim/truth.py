"""Ground truth the twin writes to scenes/<scene>/truth/ (never read by the pipeline).

Camera side (this module): depth.npy + K.txt (depth-map resolution, canonical camera = true_K at the
canonical focus, tripod pose), focus_lut.tsv (the hidden motor at the plan's hexcodes),
breathing.json (per run: 2x3 warp run image -> canonical image at camera resolution, from the
position the motor actually reached for that run when the twin shot it), intrinsics.yaml (true K at
camera resolution, no distortion). Lidar side: ``zedd_capture.sim.lidar.write_lidar_truth``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from ..layout import SceneLayout, atomic_save_npy, atomic_save_txt, atomic_write_json, atomic_write_text
from ..rig import Rig, format_hexcode
from .devices import TwinRig
from .optics import breathing_warp_to_canonical, true_K
from .render import camera_rays
from .scene import SimScene


def render_depth(scene: SimScene, K: np.ndarray, width: int, height: int, T_world_camera: np.ndarray) -> np.ndarray:
    """Exact z-depth (H, W float32 m; 0 where nothing is hit) by ray casting."""
    o, d = camera_rays(K, width, height, T_world_camera)
    t = scene.cast(np.broadcast_to(o, d.shape), d).t
    return np.where(np.isfinite(t), t, 0.0).reshape(height, width).astype(np.float32)


def plan_hexcodes(rig: Rig, twin: TwinRig) -> list[tuple[int, int]]:
    """(run, commanded hexcode) of the plan (runs given by distance use the hidden motor's code)."""
    out = []
    for r in rig.capture.runs:
        code = r.hexcode if r.hexcode is not None else twin.motor_model.hexcode_for(r.focus_distance_m)
        out.append((r.run, int(code)))
    return out


def write_camera_truth(truth_dir: Path, twin: TwinRig, achieved_by_run: dict[int, int] | None = None) -> None:
    """The camera twin's truth files. ``achieved_by_run``: run -> the motor position its images were shot at (the
    capture manifest's); without it, where this twin's motor went (a run it did not drive: the commanded code)."""
    rig = twin.rig
    truth_dir = Path(truth_dir)
    w, h = rig.depth_map.width_px, rig.depth_map.height_px
    K = true_K(rig, w, h)
    depth = render_depth(twin.scene, K, w, h, twin.base_scene.tripod_camera_pose)
    atomic_save_npy(truth_dir / "depth.npy", depth)
    atomic_save_txt(truth_dir / "K.txt", K, header="canonical intrinsics of depth.npy (twin truth)")

    plan = plan_hexcodes(rig, twin)
    lines = [f"# twin truth: hidden motor model of rig {rig.name}, plan hexcodes",
             "# hexcode\tfocus_distance_m"]
    lines += [f"{format_hexcode(c)}\t{twin.motor_model.distance_m(c):.6f}" for _, c in plan]
    atomic_write_text(truth_dir / "focus_lut.tsv", "\n".join(lines) + "\n")

    W, H = rig.camera.width_px, rig.camera.height_px
    warps = {}
    for run, code in plan:
        achieved = (achieved_by_run or {}).get(run, twin.achieved.get(code, code))
        d = float(twin.motor_model.distance_m(achieved))
        warps[f"run_{run}"] = breathing_warp_to_canonical(rig, d, W, H).tolist()
    atomic_write_json(truth_dir / "breathing.json", warps)

    intr = {"K": true_K(rig, W, H).tolist(), "dist": [0.0, 0.0, 0.0, 0.0, 0.0], "width": W, "height": H}
    atomic_write_text(truth_dir / "intrinsics.yaml", yaml.safe_dump(intr, sort_keys=False))


def write_truth(scene_layout: SceneLayout, twin_rig: TwinRig, lidar: bool = True,
                achieved_by_run: dict[int, int] | None = None) -> Path:
    """Write scenes/<scene>/truth/ (camera files, then the lidar twin's files). Returns the folder.
    ``achieved_by_run``: see :func:`write_camera_truth` (a resumed or verify-only capture drives only some runs'
    motor positions, or none: the manifest knows them all)."""
    truth_dir = scene_layout.truth_dir
    write_camera_truth(truth_dir, twin_rig, achieved_by_run)
    if lidar:
        try:
            from .lidar import write_lidar_truth
        except ImportError as e:
            raise ImportError(
                f"{truth_dir}: camera truth written, but lidar truth (extrinsic.txt, trajectory.tum, static.tum) "
                f"needs zedd_capture.sim.lidar.write_lidar_truth, which cannot be imported: {e}") from e
        write_lidar_truth(truth_dir, twin_rig)
    return truth_dir
