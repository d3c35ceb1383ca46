"""Benchmark of the camera twin: seconds per image and per full focus stack (runs x apertures).

    .venv/bin/python bench/sim_render.py [--scene kitchen01] [--rig sim] [--stacks 1]

Drives the TwinRig exactly as a capture session does (move_to, set_aperture, set_shutter, capture)
and prints a table: ray casts (all-in-focus views) vs cached reuse, defocus + sensor + JPEG time.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scene", default="kitchen01")
    ap.add_argument("--rig", default="sim")
    ap.add_argument("--stacks", type=int, default=1)
    args = ap.parse_args()

    from zedd_capture.rig import load_rig
    from zedd_capture.sim import render
    from zedd_capture.sim.devices import TwinRig
    from zedd_capture.sim.optics import K_at_focus
    from zedd_capture.sim.scene import build_scene

    rig = load_rig(args.rig)
    w, h = rig.camera.width_px, rig.camera.height_px
    t0 = time.perf_counter()
    scene = build_scene(args.scene)
    t_build = time.perf_counter() - t0

    K = K_at_focus(rig, 3.08, w, h)
    t0 = time.perf_counter()
    rad, depth = render.render_view(scene, K, w, h)
    t_view = time.perf_counter() - t0
    defocus = {}
    for n in rig.capture.apertures:
        t0 = time.perf_counter()
        render.render_defocused(rad, depth, 0.82, n, rig)
        defocus[n] = time.perf_counter() - t0

    stack_times = []
    per_image = []
    for _ in range(args.stacks):
        twin = TwinRig(rig, args.scene)
        twin.camera.open()
        t_stack = time.perf_counter()
        for r in rig.capture.runs:
            twin.focus_motor.move_to(r.hexcode)
            for n in rig.capture.apertures:
                twin.camera.set_aperture(n)
                twin.camera.set_shutter(rig.exposure.shutter_for(n))
                twin.camera.set_iso(rig.exposure.iso)
                t0 = time.perf_counter()
                jpg = twin.camera.capture()
                per_image.append(time.perf_counter() - t0)
        stack_times.append(time.perf_counter() - t_stack)
        twin.camera.close()

    n_img = len(rig.capture.runs) * len(rig.capture.apertures)
    print(f"camera twin benchmark: scene {args.scene}, rig {rig.name}, {w}x{h} px, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    rows = [
        ("scene build (cached afterwards)", t_build),
        ("all-in-focus ray cast + texture (1 view)", t_view),
    ]
    rows += [(f"defocus only, F{n:.1f} focused 0.82 m", t) for n, t in defocus.items()]
    rows += [
        ("capture(): mean per image (incl. cast share, sensor, JPEG)", float(np.mean(per_image))),
        ("capture(): max per image (first aperture of a run re-casts)", float(np.max(per_image))),
        (f"full stack {len(rig.capture.runs)}x{len(rig.capture.apertures)} = {n_img} images", float(np.mean(stack_times))),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'step':<{width}}  seconds")
    print(f"{'-' * width}  -------")
    for name, t in rows:
        print(f"{name:<{width}}  {t:7.2f}")
    print(f"ray casts per stack: {twin.view_cache.casts} (reused {twin.view_cache.hits} times); "
          f"last JPEG {len(jpg) / 1e3:.0f} kB; target: full stack < 120 s on 2 cores")


if __name__ == "__main__":
    main()
