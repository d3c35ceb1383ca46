"""Benchmark of the twin's OS0-128: frames per second of a hand-held sweep (ray casting, sensor
effects and OSF writing included) and OSF size per frame.

    .venv/bin/python bench/sim_lidar.py --scene kitchen01 --frames 600 [--mode 1024x10] [--out DIR]

Target (issue 4): a 600-frame 1024x10 sweep in under 3 minutes on 2 cores (> 3.3 frames/s).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from zedd_capture.rig import load_rig
from zedd_capture.sim.lidar import SimLidar, cast_frame, frame_from_cast
from zedd_capture.sim.scene import build_scene


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scene", default="kitchen01")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--mode", default="1024x10", choices=["512x10", "1024x10", "2048x10"])
    ap.add_argument("--out", type=Path, default=None, help="folder for the OSF (default: a temporary one)")
    args = ap.parse_args()

    rig = load_rig()
    rig = rig.model_copy(update={"sim": rig.sim.model_copy(update={"frames_per_sweep": args.frames}),
                                 "lidar": rig.lidar.model_copy(update={"mode": args.mode})})
    t = time.perf_counter()
    scene = build_scene(args.scene)
    lidar = SimLidar(scene, rig)
    t_setup = time.perf_counter() - t
    out = args.out or Path(tempfile.mkdtemp(prefix="sim_lidar_"))
    path = out / "lidar_sweep.osf"

    # stage split on a few frames (cast / effects+fields)
    traj = lidar.sweep_trajectory(20)
    t_cast = t_fields = 0.0
    for k, t0 in enumerate(traj.frame_times[:10]):
        a = time.perf_counter()
        c = cast_frame(scene, lidar.model, traj, float(t0))
        b = time.perf_counter()
        frame_from_cast(scene, lidar.model, c, k, np.random.default_rng(k), lidar.noise)
        t_cast += b - a
        t_fields += time.perf_counter() - b

    t = time.perf_counter()
    summary = lidar.record_sweep(path, rig.capture.sweep_seconds)
    wall = time.perf_counter() - t
    size = path.stat().st_size
    result = {
        "scene": args.scene, "mode": args.mode, "frames": summary.frames, "cpu_count": os.cpu_count(),
        "setup_s": round(t_setup, 3), "sweep_wall_s": round(wall, 2), "frames_per_s": round(summary.frames / wall, 2),
        "cast_ms_per_frame": round(100 * t_cast, 1), "effects_ms_per_frame": round(100 * t_fields, 1),
        "osf_bytes": size, "osf_mb_per_frame": round(size / summary.frames / 1e6, 3),
        "projected_600_frames_s": round(600 * wall / summary.frames, 1),
        "motion": {k: round(v, 2) for k, v in summary.info["motion"].items()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
