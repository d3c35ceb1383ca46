"""Calibration sessions: the plain entry functions behind ``zedd calibrate-focus/-intrinsics/-breathing/-extrinsics``.

Each collects its data from the digital twin when ``rig.backend == "sim"`` (a calibration set-up:
the camera at the origin of a plain room, a ChArUco board placed in front of it, the focus motor
driven, images captured; the lidar twin ray-casts the board for the extrinsic) or, for hardware,
from a folder of images/recordings (layouts in docs/calibration.md). Products go to
``calibration/<rig.name>/`` with a provenance header; each function returns a
:class:`CalibrationReport` (table rows for rich, products, plot paths, notes).

The twin's hidden truth (motor curve, true K, breathing, extrinsic) is never read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..layout import CalibrationLayout, atomic_write_json, existing_scene
from ..rig import Rig, format_hexcode
from .breathing import (BreathingError, estimate_breathing, find_all_in_focus_images, model_warp, read_breathing,
                        read_gray_images, rescale_warp, write_breathing)
from .charuco import BoardSpec, CalibrationError, board_pose, detect, load_image, mean_corner_depth
from .extrinsic import calibrate_extrinsic, write_extrinsic
from .focus_lut import FocusLUT, FocusLUTEntry, provenance, read_focus_lut, write_focus_lut
from .focus_search import distance_breathing, distance_paper, find_sharp_hexcode, board_roi
from .intrinsics import read_intrinsics, scaled, write_intrinsics
from .intrinsics import calibrate_intrinsics as _calibrate_intrinsics

Progress = Callable[[str], None] | None


@dataclass
class CalibrationReport:
    """What a calibration run did: a title, table rows (dicts, same keys), products written, plots, notes."""

    title: str
    rows: list[dict] = field(default_factory=list)
    products: dict[str, Path] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    def table(self):
        """The rows as a rich Table."""
        from rich.table import Table

        t = Table(title=self.title)
        keys = list(self.rows[0]) if self.rows else []
        for k in keys:
            t.add_column(k)
        for r in self.rows:
            t.add_row(*[_fmt(r.get(k)) for k in keys])
        return t


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.5g}"
    return "" if v is None else str(v)


def _say(progress: Progress, msg: str) -> None:
    if progress:
        progress(msg)


# --- the twin calibration set-up -------------------------------------------------------------------
def _twin(rig: Rig, textured_wall_m: float | None = None):
    """A TwinRig in a calibration room: camera at the world origin (world = camera frame), a far wall."""
    from ..sim.devices import TwinRig
    from ..sim.scene import DIFFUSE, Part, box, scene_from_parts
    from ..sim.textures import Texture

    if textured_wall_m is None:
        wall = Part("wall", box((0.0, 0.0, 12.5), (40.0, 40.0, 0.1)), DIFFUSE, Texture(kind="constant", base_rgb=(0.5, 0.5, 0.5)))
    else:
        wall = Part("target", box((0.0, 0.0, textured_wall_m + 0.05), (20.0, 20.0, 0.1)), DIFFUSE,
                    Texture(kind="noise", base_rgb=(0.55, 0.5, 0.45), contrast=0.8, seed=11))
    scene = scene_from_parts("calibration", [wall], np.eye(4), light_dir=(0.0, -0.3, -1.0))
    tw = TwinRig(rig, "calibration", scene=scene)
    tw.move_camera(np.eye(4))
    tw.camera.open()
    return tw


def _board_for(rig: Rig, distance_m: float, width_frac: float = 0.4, squares=(7, 5), min_square_m: float = 0.05):
    """A ChArUco target whose width is ``width_frac`` of the image width at ``distance_m`` (nominal optics)."""
    from ..sim.board import CharucoTarget

    K = rig.nominal_K()
    width_m = width_frac * rig.camera.width_px / K[0, 0] * distance_m
    # squares >= 5 cm: the twin prints boards at 2000 px/m, smaller squares carry texel rounding errors
    # and whole millimetres, so squares and margin are whole texels (no rounding inside generateImage)
    sq = max(round(width_m / squares[0], 3), min_square_m)
    return CharucoTarget(squares[0], squares[1], sq, round(0.73 * sq, 4), margin_m=round(0.15 * sq, 3))


def _board_pose(board, distance_m: float, tilt_deg=(0.0, 0.0, 0.0), offset_m=(0.0, 0.0)) -> np.ndarray:
    """T_world_board (= T_camera_board in the set-up): board centre at (offset, distance), tilted (xyz Euler)."""
    from scipy.spatial.transform import Rotation

    R = Rotation.from_euler("xyz", tilt_deg, degrees=True).as_matrix()
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.array([offset_m[0], offset_m[1], distance_m]) - R @ np.array([board.width_m / 2, board.height_m / 2, 0.0])
    return T


def _shoot(tw, f_number: float) -> np.ndarray:
    tw.camera.set_aperture(f_number)
    tw.camera.set_shutter(tw.rig.exposure.shutter_for(f_number))
    img = cv2.imdecode(np.frombuffer(tw.camera.capture(), np.uint8), cv2.IMREAD_COLOR)
    return img


def _grey_capture(tw, f_number: float):
    """A capture function for the sharp search: set ``f_number`` (and its shutter), shoot, decode to grey."""

    def cap() -> np.ndarray:
        tw.camera.set_aperture(f_number)
        tw.camera.set_shutter(tw.rig.exposure.shutter_for(f_number))
        return cv2.imdecode(np.frombuffer(tw.camera.capture(), np.uint8), cv2.IMREAD_GRAYSCALE)

    return cap


def native_pixel_pitch_mm(reference_rig: str = "zedd-reference") -> float:
    """The sensor's pixel pitch as shot (mm): sensor width / image width of the reference rig (the alpha 1 II's
    4104 px images). The sim rig renders at a quarter of that; the sharp search's fine stage crops the board at
    this pitch."""
    from ..rig import load_rig

    cam = load_rig(reference_rig).camera
    return cam.sensor_width_mm / cam.width_px


def _native_crop(tw, roi: tuple[int, int, int, int], pitch_mm: float | None = None, margin_px: int = 8):
    """Window of the board region ``roi`` (px of the twin's images) in a full-size shot at ``pitch_mm``.

    Returns (size (w, h), region (x0, y0, x1, y1) of that shot, roi inside the region's crop); the crop
    gets ``margin_px`` around the roi so no filter touches its border.
    """
    rig = tw.rig
    pitch_mm = native_pixel_pitch_mm() if pitch_mm is None else pitch_mm
    w0, h0 = tw.render_size or (rig.camera.width_px, rig.camera.height_px)
    s = rig.camera.sensor_width_mm / w0 / pitch_mm
    W, H = int(round(w0 * s)), int(round(h0 * s))
    x0, y0 = (max(int(np.floor(v * s)) - margin_px, 0) for v in roi[:2])
    x1, y1 = min(int(np.ceil(roi[2] * s)) + margin_px, W), min(int(np.ceil(roi[3] * s)) + margin_px, H)
    inner = (int(np.floor(roi[0] * s)) - x0, int(np.floor(roi[1] * s)) - y0,
             int(np.ceil(roi[2] * s)) - x0, int(np.ceil(roi[3] * s)) - y0)
    return (W, H), (x0, y0, x1, y1), inner


def _grey_crop_capture(tw, f_number: float, size: tuple[int, int], region: tuple[int, int, int, int]):
    """Like :func:`_grey_capture` for the window ``region`` of a ``size`` (w, h) px shot (twin only)."""

    def cap() -> np.ndarray:
        tw.camera.set_aperture(f_number)
        tw.camera.set_shutter(tw.rig.exposure.shutter_for(f_number))
        return cv2.imdecode(np.frombuffer(tw.camera.capture_region(region, size), np.uint8), cv2.IMREAD_GRAYSCALE)

    return cap


def sharp_search_twin(tw, roi: tuple[int, int, int, int], lo: int, hi: int, wide: float, small: float,
                      native_fine: bool = True, **kw):
    """:func:`find_sharp_hexcode` on the twin: preview stages on the rig's images (ratio to ``small``
    f-number), fine stage (``native_fine``) on a crop of ``roi`` rendered at the sensor's native pitch."""
    if native_fine:
        size, region, inner = _native_crop(tw, roi)
        kw.update(capture_fine=_grey_crop_capture(tw, wide, size, region),
                  capture_fine_reference=_grey_crop_capture(tw, small, size, region), roi_fine=inner)
    return find_sharp_hexcode(_grey_capture(tw, wide), tw.focus_motor.move_to, lo, hi, roi,
                              capture_reference=_grey_capture(tw, small), **kw)


# --- focus LUT ----------------------------------------------------------------------------------
def _predict_distance(entries: list[FocusLUTEntry], hexcode: int) -> float:
    """Distance at ``hexcode`` from the measured entries: a low-order fit of diopters vs hexcode.

    Entries closer than 500 counts to a later one are dropped (their difference is mostly noise).
    """
    kept: list[FocusLUTEntry] = []
    for e in reversed(entries):
        if all(abs(e.hexcode - k.hexcode) > 500 for k in kept):
            kept.append(e)
    if len(kept) == 1:
        return kept[0].focus_distance_m
    kept = sorted(kept, key=lambda e: abs(e.hexcode - hexcode))[:3]
    h = np.array([e.hexcode for e in kept], float)
    P = np.array([1 / e.focus_distance_m for e in kept])
    c = np.polyfit(h, P, min(2, len(kept) - 1))
    return float(1.0 / max(np.polyval(c, hexcode), 0.05))


FOCUS_METHODS = ("auto", "breathing", "paper")


def calibrate_focus(rig: Rig, root: Path, hexcodes: Sequence[int] | None = None, progress: Progress = None, *,
                    method: str = "auto", paper_views: int = 0, images_dir: Path | None = None,
                    bootstrap_distance_m: float = 1.3, max_iterations: int = 2,
                    refine: str = "board", board=None) -> CalibrationReport:
    """Focus LUT hexcode -> metres for the rig's runs (or ``hexcodes``); writes calibration/<rig>/focus_lut.tsv.

    method: ``"breathing"`` (needs calibration/<rig>/intrinsics.yaml), ``"paper"`` (co-calibration of
    I0 + ``paper_views`` poses, >= 2) or ``"auto"`` (breathing when intrinsics exist, else paper
    with 4 views). With ``paper_views`` > 0 and the breathing method, the paper value is reported too.
    """
    if method not in FOCUS_METHODS:
        raise CalibrationError(f"focus calibration method {method!r}: not one of {', '.join(FOCUS_METHODS)}")
    lay = CalibrationLayout(Path(root), rig.name)
    intr = read_intrinsics(lay.intrinsics_path) if lay.intrinsics_path.is_file() else None
    if method == "auto":
        method = "breathing" if intr is not None else "paper"
    if method == "breathing" and intr is None:
        raise CalibrationError(f"{lay.intrinsics_path}: method 'breathing' needs the canonical intrinsics "
                               "(run `zedd calibrate-intrinsics` first, or use method 'paper')")
    if method == "paper" and paper_views < 2:
        paper_views = 4
    targets = [int(h) for h in hexcodes] if hexcodes is not None else [r.hexcode for r in rig.capture.runs if r.hexcode is not None]
    if not targets:
        raise CalibrationError(f"rig {rig.name}: no hexcodes to calibrate (runs have no hexcode; pass hexcodes)")
    canonical_hex = rig.run(rig.capture.canonical_run).hexcode
    if rig.backend == "sim":
        measured, rows_detail = _focus_twin(rig, targets, canonical_hex, intr, method, paper_views,
                                            bootstrap_distance_m, max_iterations, progress, refine)
    else:
        measured, rows_detail = _focus_folder(rig, Path(images_dir or lay.dir / "captures" / "focus"), intr, method,
                                              board or BoardSpec())
    entries = sorted(measured, key=lambda e: e.hexcode)
    # one entry per distinct hexcode (repeated searches of a target: keep the latest measurement)
    uniq: dict[int, FocusLUTEntry] = {}
    for e in measured:
        uniq[e.hexcode] = e
    meas_lut = FocusLUT(list(uniq.values()))
    rows, out_entries = [], []
    for h in sorted(set(targets)):
        near = min(uniq.values(), key=lambda e: abs(e.hexcode - h))
        if len(uniq) == 1 and abs(near.hexcode - h) <= SAME_POSITION_COUNTS:  # measured where the motor landed
            d = near.focus_distance_m
        else:
            d = float(meas_lut.distance_m(h, extrapolate=True))
        out_entries.append(FocusLUTEntry(h, d, near.uncertainty_m, near.residual_px))
    for e in uniq.values():  # keep measured entries away from the targets (extra coverage)
        if all(abs(e.hexcode - h) > 300 for h in targets):
            out_entries.append(e)
    run_of = {r.hexcode: r.run for r in rig.capture.runs}
    for e in sorted(out_entries, key=lambda e: e.hexcode, reverse=True):
        det = rows_detail.get(e.hexcode, {})
        rows.append({"run": run_of.get(e.hexcode, ""), "hexcode": format_hexcode(e.hexcode),
                     "focus_distance_m": e.focus_distance_m, "diopters": 1 / e.focus_distance_m,
                     "uncertainty_m": e.uncertainty_m, "residual_px": e.residual_px, **det})
    prov = provenance("focus_lut", rig.name, method, backend=rig.backend, measured_entries=len(uniq),
                      canonical_hexcode=format_hexcode(canonical_hex) if canonical_hex is not None else None,
                      intrinsics=str(lay.intrinsics_path) if intr is not None else None)
    lut = FocusLUT(out_entries, prov)
    write_focus_lut(lay.focus_lut_path, lut)
    rep = CalibrationReport(f"focus LUT ({rig.name}, method {method})", rows, {"focus_lut": lay.focus_lut_path})
    rep.summary = {"method": method, "entries": len(out_entries), "measured": len(uniq)}
    rep.plots.append(write_report_plot(rig, Path(root)))
    atomic_write_json(lay.report_dir / "focus.json", {"rows": rows, "summary": rep.summary})
    return rep


def _measure_at(tw, rig, board, T_board, canonical_hex, intr, method, paper_views, sharp_hex, W, H):
    """Board distance for the current (sharp) motor position: I0 (+ Ic at canonical, + paper views)."""
    img0 = _shoot(tw, rig.capture.all_in_focus_f_number)
    K_c = dist_c = None
    if intr is not None:
        K_c, dist_c = scaled(intr, W, H), intr.dist
    name = f"I0@{format_hexcode(sharp_hex)}"
    out = {}
    if method == "breathing":
        tw.focus_motor.move_to(canonical_hex)
        img_c = _shoot(tw, rig.capture.all_in_focus_f_number)
        tw.focus_motor.move_to(sharp_hex)
        rel = (intr.std[0] / intr.K[0, 0]) if intr.std else 0.0
        out["breathing"] = distance_breathing(board, img0, img_c, K_c, dist_c, (name, f"Ic@{format_hexcode(canonical_hex)}"), rel)
    if paper_views > 0:
        others = []
        z = float(T_board[2, 3] + T_board[:3, :3][2] @ np.array([board.width_m / 2, board.height_m / 2, 0]))
        tilts = [(25, 0, 0), (0, 25, 0), (-20, -20, 5), (20, -25, -5), (-25, 20, 0), (15, 15, 10)]
        for i in range(paper_views):
            tw.place_board(_board_pose(board, z, tilts[i % len(tilts)]), board)
            others.append(_shoot(tw, rig.capture.all_in_focus_f_number))
        tw.place_board(T_board, board)
        out["paper"] = distance_paper(board, img0, others, [name] + [f"I{i + 1}@{format_hexcode(sharp_hex)}" for i in range(len(others))],
                                      K_init=K_c, dist_init=dist_c)
    return out


def _focus_twin(rig, targets, canonical_hex, intr, method, paper_views, bootstrap_m, max_iterations, progress,
                refine="board"):
    tw = _twin(rig)
    W, H = rig.camera.width_px, rig.camera.height_px
    # motor range of the searches: the targets and the rig's runs (the bootstrap placements at the canonical and
    # bootstrap distances must find their sharp positions even when only a few far hexcodes are calibrated)
    codes = list(targets) + [r.hexcode for r in rig.capture.runs if r.hexcode is not None]
    span = max(codes) - min(codes)
    lo, hi = max(0, min(codes) - span // 6 - 500), min(0xFFFF, max(codes) + span // 6 + 500)
    wide = rig.capture.apertures and min(rig.capture.apertures)
    entries: list[FocusLUTEntry] = []
    detail: dict[int, dict] = {}

    def search_and_measure(z: float, centre=None, window=None, precise=True):
        board = _board_for(rig, z)
        T = _board_pose(board, z)
        tw.place_board(T, board)
        roi = board_roi(_shoot(tw, rig.capture.all_in_focus_f_number), board, f"board at {z:.2f} m (F16 preview)")
        res = sharp_search_twin(tw, roi, lo, hi, wide, rig.capture.all_in_focus_f_number, native_fine=precise,
                                centre=centre, window=window, coarse_points=9 if centre is not None else 13,
                                precise=precise, progress=progress)
        m = _measure_at(tw, rig, board, T, canonical_hex, intr, method, paper_views, res.achieved, W, H)
        best = m[method]
        # the board was sharp at the search's estimate, not exactly at the achieved position: record the estimate
        h = int(round(res.hexcode_float))
        e = FocusLUTEntry(h, best.focus_distance_m, best.uncertainty_m, best.residual_px)
        info = {"sharp_search_captures": res.captures, "peak_half_width_counts": round(res.half_width, 1)}
        if "paper" in m and method != "paper":
            info["paper_distance_m"] = m["paper"].focus_distance_m
        if "breathing" in m:
            info["breathing_scale"] = m["breathing"].scale_to_canonical
        _say(progress, f"board at {z:.3f} m: sharp at {format_hexcode(h)} ({res.captures} captures), "
                       f"measured {best.focus_distance_m:.4f} m")
        return e, info, res

    # bootstrap: the canonical run at the rig's canonical distance, one more placement for the slope
    first = canonical_hex if canonical_hex in targets else targets[len(targets) // 2]
    z0 = rig.capture.canonical_focus_distance_m
    # (rough positions: used to predict where to put the board, not written to the LUT)
    e, info, res = search_and_measure(z0, precise=False)
    rough = [e]
    e2, _, _ = search_and_measure(bootstrap_m, precise=False)
    if abs(e2.hexcode - e.hexcode) > 50:
        rough.append(e2)
    order = sorted(targets, key=lambda h: abs(h - first))
    for h in order:
        for it in range(max_iterations):
            known = rough + entries  # later (precise) entries win where they are close to rough ones
            z = _predict_distance(known, h)
            prev = [x for x in known if abs(x.hexcode - h) < 4000]
            window = 1500.0 if prev else 4000.0
            e, info, res = search_and_measure(z, centre=float(h), window=window, precise=refine != "board")
            (rough if refine == "board" and intr is not None else entries).append(e)
            detail[h] = {**info, "measured_hexcode": format_hexcode(e.hexcode), "measured_distance_m": e.focus_distance_m}
            if abs(e.hexcode - h) <= max(60, 0.15 * res.half_width):
                break
        if refine == "board" and intr is not None:
            # the run's own hexcode, motor fixed: bracket the sharp zone by moving the board (symmetric in 1/z)
            z = _predict_distance(rough + entries, h)
            # far runs: the sharp zone spans metres and one bracket scatters by ~0.2-0.3 % (1 sigma, measured
            # at 513 and 1026 px); average a few brackets started 1 % apart
            n_rep = next((n for z_min, n in FAR_BRACKETS if z >= z_min), 1)
            reps = [_board_bracket(tw, rig, h, z * (1 + 0.01 * (i - (n_rep - 1) / 2)), canonical_hex, intr, W, H, progress)
                    for i in range(n_rep)]
            eb, binfo = _mean_entry([e for e, _ in reps]), reps[-1][1]
            binfo = {**binfo, "brackets": n_rep, "board_bracket_captures": sum(b["board_bracket_captures"] for _, b in reps)}
            entries = [x for x in entries if abs(x.hexcode - eb.hexcode) > SAME_POSITION_COUNTS] + [eb]
            detail[h].update(binfo)
    return entries, detail


# motor positions this close (counts) are the same target: the motor lands within a few counts of a move
SAME_POSITION_COUNTS = 30
# (distance from, brackets averaged) for far runs. At 8.1 m one bracket of the tiny test rig (513 px) is off by
# +0.27 % +- 0.21 % (1 sigma, 7 brackets): three left the LUT at 0.42-0.57 %, six put it at ~0.27 +- 0.09 %
FAR_BRACKETS = ((7.0, 6), (4.0, 3))


def _mean_entry(entries: list[FocusLUTEntry]) -> FocusLUTEntry:
    """One LUT entry from repeated measurements of (nearly) the same hexcode: means of hexcode and diopters."""
    if len(entries) == 1:
        return entries[0]
    P = np.array([1.0 / e.focus_distance_m for e in entries])
    h = int(round(float(np.mean([e.hexcode for e in entries]))))
    sd = float(P.std(ddof=1) / np.sqrt(len(P)))
    d = 1.0 / float(P.mean())
    return FocusLUTEntry(h, d, sd * d * d, float("nan"))


def _board_bracket(tw, rig, h, z_guess, canonical_hex, intr, W, H, progress, level_frac: float = 0.0025,
                   tol_diopters: float = 1e-4, debug: list | None = None):
    """Motor fixed at ``h``: move the (distance-scaled) board along the axis and bisect the edges of the zone
    where the F1.4 image is as sharp as the F16 one (focus-measure ratio); the focus is the midpoint in 1/z.

    The sharp zone is symmetric in board diopters, so this is free of the bias the motor curve's local
    curvature puts on a motor sweep. Board distances are measured (PnP with the breathing-corrected K).
    """
    f16 = rig.capture.all_in_focus_f_number
    wide = min(rig.capture.apertures)
    K_c = scaled(intr, W, H)
    board = _board_for(rig, z_guess)
    tw.place_board(_board_pose(board, z_guess), board)
    tw.focus_motor.move_to(canonical_hex)
    img_c = _shoot(tw, f16)
    a = int(tw.focus_motor.move_to(h))
    img0 = _shoot(tw, f16)
    from .focus_search import breathing_between, focus_measure

    A, _ = breathing_between(detect(img0, board, f"I0@{format_hexcode(a)}"),
                             detect(img_c, board, "Ic", max_edge_width_px=None))
    K_h = np.linalg.inv(np.vstack([A, [0, 0, 1]])) @ K_c
    shots = 2

    def probe(P: float) -> tuple[float, float]:
        nonlocal shots
        z = 1.0 / P
        b = _board_for(rig, z)
        tw.place_board(_board_pose(b, z), b)
        i16 = _shoot(tw, f16)
        i14 = _shoot(tw, wide)
        shots += 2
        name = f"board at {z:.3f} m, motor {format_hexcode(a)}"
        roi = board_roi(i16, b, name)
        r = focus_measure(i14, roi) / focus_measure(i16, roi)
        det = detect(i16, b, name)
        zm = mean_corner_depth(b, board_pose(det, K_h, intr.dist).T_camera_board)
        if debug is not None:
            debug.append((P, 1.0 / zm, r))
        return r, 1.0 / zm

    P0 = 1.0 / z_guess
    r0, Pm0 = probe(P0)
    # plateau half width from nominal optics: a CoC of 0.35 px at the widest aperture (twin: below that no blur)
    px_per_diopter = rig.lens.focal_length_mm ** 2 / wide / rig.camera.pixel_pitch_mm / 1000.0
    step = max(0.5 / px_per_diopter, 4 * tol_diopters)
    # the sharp plateau's level: median ratio of a few probes well inside it
    tops = [r0] + [probe(P0 + d * step)[0] for d in (-0.4, 0.4)]
    top = float(np.median(tops))
    edges = []
    for side in (-1, 1):
        inside, inside_m = P0, Pm0
        out = None
        P = P0
        for _ in range(12):  # walk out until the board blurs
            P = P + side * step
            r, Pm = probe(P)
            if r < top * (1 - level_frac):
                out, out_m = P, Pm
                break
            inside, inside_m = P, Pm
        if out is None:
            raise CalibrationError(f"motor {format_hexcode(a)}: the board never blurred while moving it (no focus edge found)")
        while abs(out - inside) > tol_diopters:
            mid = 0.5 * (inside + out)
            r, Pm = probe(mid)
            if r >= top * (1 - level_frac):
                inside, inside_m = mid, Pm
            else:
                out, out_m = mid, Pm
        edges.append(0.5 * (inside_m + out_m))
    P_focus = 0.5 * (edges[0] + edges[1])
    e = FocusLUTEntry(a, 1.0 / P_focus, tol_diopters / P_focus**2, float("nan"))
    _say(progress, f"motor {format_hexcode(a)}: sharp zone {1 / edges[1]:.4f}..{1 / edges[0]:.4f} m -> focus {1 / P_focus:.4f} m "
                   f"({shots} captures)")
    return e, {"board_bracket_captures": shots, "sharp_zone_m": f"{1 / edges[1]:.4f}..{1 / edges[0]:.4f}",
               "achieved_hexcode": format_hexcode(a)}


def _focus_folder(rig, folder: Path, intr, method, board):
    """Hardware: ``folder/<HEX>/I0*.jpg`` (sharp), ``Ic*.jpg`` (same pose at the canonical hexcode), ``I1..*.jpg``."""
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: no focus calibration images (expected <HEX>/I0.jpg, Ic.jpg, I1.jpg ...)")
    entries, detail = [], {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        try:
            h = int(sub.name, 16)
        except ValueError:
            continue
        i0 = sorted(sub.glob("I0*.jpg"))
        if not i0:
            raise CalibrationError(f"{sub}: no I0*.jpg (the board image at the sharp hexcode)")
        img0 = load_image(i0[0])
        others = [load_image(p) for p in sorted(sub.glob("I[1-9]*.jpg"))]
        ic = sorted(sub.glob("Ic*.jpg"))
        if method == "breathing" and ic:
            K = scaled(intr, img0.shape[1], img0.shape[0])
            m = distance_breathing(board, img0, load_image(ic[0]), K, intr.dist, (str(i0[0]), str(ic[0])))
        else:
            m = distance_paper(board, img0, others, [str(i0[0])] + [str(p) for p in sorted(sub.glob("I[1-9]*.jpg"))])
        entries.append(FocusLUTEntry(h, m.focus_distance_m, m.uncertainty_m, m.residual_px))
        detail[h] = {"method": m.method}
    if not entries:
        raise CalibrationError(f"{folder}: no <HEX>/ folders with images")
    return entries, detail


# --- intrinsics -----------------------------------------------------------------------------------
def _intrinsic_poses(n: int) -> list[tuple[float, tuple, tuple]]:
    """(distance factor, tilt xyz deg, offset as a fraction of the view) for n views spread over the image."""
    base = [(1.0, (0, 0, 0), (0, 0)), (1.0, (40, 0, 0), (-0.2, -0.15)), (1.0, (-40, 0, 5), (0.2, 0.15)),
            (1.0, (0, 40, 0), (0.2, -0.15)), (1.0, (0, -40, -5), (-0.2, 0.15)), (0.85, (30, 30, 10), (0.0, 0.15)),
            (1.15, (-30, -30, 0), (0.0, -0.15)), (0.85, (30, -30, 0), (-0.25, 0.0)), (1.15, (-30, 30, 10), (0.25, 0.0)),
            (1.0, (45, 15, 0), (0.1, 0.1)), (1.0, (-15, 45, -10), (-0.1, -0.1)), (0.9, (20, -45, 5), (0.1, -0.1))]
    return [base[i % len(base)] for i in range(n)]


def calibrate_intrinsics(rig: Rig, root: Path, progress: Progress = None, *, views: int = 8,
                         images_dir: Path | None = None, distance_m: float | None = None,
                         fix_aspect: bool = True, radial: int = 2, board=None) -> CalibrationReport:
    """Canonical intrinsics + distortion (motor at the canonical run's hexcode) from ChArUco views.

    Twin: ``views`` board poses around ``distance_m`` (default the canonical focus distance) at F16.
    Hardware: every image in ``images_dir`` (default calibration/<rig>/captures/intrinsics/*.jpg).
    Writes calibration/<rig>/intrinsics.yaml.
    """
    lay = CalibrationLayout(Path(root), rig.name)
    if rig.backend == "sim":
        tw = _twin(rig)
        tw.focus_motor.move_to(rig.run(rig.capture.canonical_run).hexcode)
        # at the canonical distance the board stays inside the depth of field (a tilted, defocused board
        # shows depth-dependent blur whose edges bias the corners by ~0.05 px in the twin)
        z = distance_m or rig.capture.canonical_focus_distance_m
        # a board ~80 % of the image width: the principal point's 1-sigma drops from ~0.45 to ~0.25 px at
        # 513 px (0.55 of the width left it ~2 sigma = 1 px off on the tiny rig)
        board = _board_for(rig, z, width_frac=0.8, squares=(8, 6))
        K0 = rig.nominal_K()
        images, names = [], []
        for i, (fz, tilt, off) in enumerate(_intrinsic_poses(views)):
            zz = z * fz
            half_w = zz * rig.camera.width_px / (2 * K0[0, 0])
            half_h = zz * rig.camera.height_px / (2 * K0[1, 1])
            tw.place_board(_board_pose(board, zz, tilt, (0.7 * off[0] * 2 * half_w, 0.7 * off[1] * 2 * half_h)), board)
            images.append(_shoot(tw, rig.capture.all_in_focus_f_number))
            names.append(f"twin view {i + 1}")
            _say(progress, f"captured {names[-1]}")
    else:
        folder = Path(images_dir or lay.dir / "captures" / "intrinsics")
        paths = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))
        if not paths:
            raise CalibrationError(f"{folder}: no calibration images (*.jpg, *.png)")
        board = board or BoardSpec()
        images, names = [load_image(p) for p in paths], [str(p) for p in paths]
    # OpenCV on one thread here: with several, the result varied in its last bits (~1e-12) from run to run, and on
    # the twin every board placement computed from it later (calibrate-focus) drew different noise
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        dets = [detect(img, board, name) for img, name in zip(images, names)]
        intr, cal = _calibrate_intrinsics(dets, K_init=rig.nominal_K(*dets[0].image_size), fix_aspect=fix_aspect,
                                          radial=radial)
    finally:
        cv2.setNumThreads(threads)
    intr.provenance = provenance("intrinsics", rig.name, "ChArUco calibrateCamera (k3 fixed)", backend=rig.backend,
                                 views=len(dets), rms_px=round(cal.rms_px, 4),
                                 canonical_hexcode=format_hexcode(rig.run(rig.capture.canonical_run).hexcode))
    write_intrinsics(lay.intrinsics_path, intr)
    rows = [{"view": n, "corners": len(d), "rms_px": float(e), "edge_width_px": d.edge_width_px}
            for n, d, e in zip(names, dets, cal.per_view_rms_px)]
    rep = CalibrationReport(f"intrinsics ({rig.name})", rows, {"intrinsics": lay.intrinsics_path})
    std = intr.std + [float("nan")] * 4
    rep.summary = {"fx": intr.K[0, 0], "fy": intr.K[1, 1], "cx": intr.K[0, 2], "cy": intr.K[1, 2],
                   "std_fx": std[0], "std_fy": std[1], "std_cx": std[2], "std_cy": std[3], "rms_px": cal.rms_px,
                   "dist": [float(v) for v in intr.dist]}
    atomic_write_json(lay.report_dir / "intrinsics.json", {"rows": rows, "summary": rep.summary})
    return rep


# --- breathing ------------------------------------------------------------------------------------
def _prior_warps(rig: Rig, lay: CalibrationLayout, size: tuple[int, int]) -> dict[int, np.ndarray] | None:
    """Rig breathing.json (rescaled to ``size``) or, with a focus LUT, the rig's nominal breathing model."""
    if lay.breathing_path.is_file():
        tab = read_breathing(lay.breathing_path)
        src = tab.image_size or size
        return {k: rescale_warp(W, src, size) for k, W in tab.items()}
    if lay.focus_lut_path.is_file():
        lut = read_focus_lut(lay.focus_lut_path)
        K = rig.nominal_K(*size)
        b = rig.lens.breathing
        scale = size[0] / rig.camera.width_px
        out = {}
        for r in rig.capture.runs:
            if r.hexcode is not None:
                d = float(lut.distance_m(r.hexcode, extrapolate=True))
                out[r.run] = model_warp(b.k_per_diopter, d, rig.capture.canonical_focus_distance_m, K,
                                        tuple(v * scale for v in b.decentre_px_per_diopter))
        return out
    return None


def _run_distances(rig: Rig, lay: CalibrationLayout) -> dict[int, float] | None:
    if not lay.focus_lut_path.is_file():
        return None
    lut = read_focus_lut(lay.focus_lut_path)
    return {r.run: float(lut.distance_m(r.hexcode, extrapolate=True)) for r in rig.capture.runs if r.hexcode is not None}


def _all_in_focus_images(rig: Rig, folder: Path, naming: str = "") -> dict[int, np.ndarray]:
    """run -> grey image of the rig's all-in-focus f-number in ``folder``; BreathingError naming the folder when there
    are none (``naming``: how they should be named), or an unreadable image."""
    f_number = rig.capture.all_in_focus_f_number
    paths = find_all_in_focus_images(folder, f_number)
    if not paths:
        raise BreathingError(f"{folder}: no F{f_number:.1f} images{naming}")
    return read_gray_images(paths)


def calibrate_breathing(rig: Rig, root: Path, scene: str | None = None, progress: Progress = None, *,
                        images_dir: Path | None = None, target_distance_m: float | None = None) -> CalibrationReport:
    """Per-run warps run image -> canonical image from F/16 images.

    ``scene`` given: from scenes/<scene>/raw/focus_stack, written to scenes/<scene>/work/breathing.json
    (the rig's breathing.json or model is the prior). Otherwise the rig-level calibration on a
    textured target (twin: a textured wall at ``target_distance_m``, default the canonical
    distance; hardware: F16 images in ``images_dir``), written to calibration/<rig>/breathing.json.
    """
    lay = CalibrationLayout(Path(root), rig.name)
    if scene is not None:
        sl = existing_scene(root, scene)
        if not sl.raw_focus_stack_dir.is_dir():
            raise BreathingError(f"{sl.raw_focus_stack_dir}: scene {scene!r} has no raw focus stack "
                                 f"(run `zedd capture --scene {scene}` first)")
        images = _all_in_focus_images(rig, sl.raw_focus_stack_dir)
        out_path = sl.breathing_path
    elif rig.backend == "sim":
        tw = _twin(rig, textured_wall_m=target_distance_m or rig.capture.canonical_focus_distance_m)
        images = {}
        for r in rig.capture.runs:
            tw.focus_motor.move_to(r.hexcode)
            images[r.run] = cv2.cvtColor(_shoot(tw, rig.capture.all_in_focus_f_number), cv2.COLOR_BGR2GRAY)
            _say(progress, f"run {r.run}: captured F{rig.capture.all_in_focus_f_number:.0f} at {format_hexcode(r.hexcode)}")
        out_path = lay.breathing_path
    else:
        folder = Path(images_dir or lay.dir / "captures" / "breathing")
        images = _all_in_focus_images(rig, folder, " named img_run_K_motor_HEX_aperture_F16.0.jpg")
        out_path = lay.breathing_path
    h, w = next(iter(images.values())).shape[:2]
    prior = _prior_warps(rig, lay, (w, h))
    dists = _run_distances(rig, lay)
    res = estimate_breathing(images, rig.capture.canonical_run, prior=prior, focus_distances_m=dists,
                             canonical_distance_m=(dists or {}).get(rig.capture.canonical_run))
    prov = provenance("breathing", rig.name, "ECC affine pyramid + bicubic Gauss-Newton refinement",
                      backend=rig.backend, scene=scene, prior="yes" if prior else "no")
    write_breathing(out_path, res.warps, prov, res)
    rows = [{"run": k, "method": res.method[k], "correlation": res.correlation.get(k), "scale": res.scale[k],
             "tx_px": float(res.warps[k][0, 2]), "ty_px": float(res.warps[k][1, 2]),
             "model_residual": res.model_residual.get(k)} for k in res.warps]
    rep = CalibrationReport(f"breathing ({scene or rig.name})", rows, {"breathing": out_path})
    rep.summary = {"k_per_diopter": res.model_k_per_diopter, "image_size": [w, h]}
    if scene is None:
        rep.plots.append(write_report_plot(rig, Path(root)))
    return rep


# --- extrinsic ------------------------------------------------------------------------------------
def _lidar_points(osf_path: Path) -> np.ndarray:
    """All returns of every frame of an OSF recording (static rig) as (N, 3) points in the sensor frame (m)."""
    from ouster.sdk import core, open_source

    src = open_source(str(osf_path))
    pts = []
    try:
        info = src.sensor_info[0]
        for fs in src:
            fr = fs[0]
            if fr is None:
                continue
            xyz = core.XYZLut(info)(fr)
            rng = fr.field("RANGE")
            pts.append(xyz[rng > 0].reshape(-1, 3).astype(np.float64))
    finally:
        src.close()
    if not pts:
        raise CalibrationError(f"{osf_path}: no lidar frame in the recording")
    return np.concatenate(pts)


def calibrate_extrinsics(rig: Rig, root: Path, progress: Progress = None, *, poses: int = 8,
                         images_dir: Path | None = None, distance_m: float | None = None,
                         lidar_frames: int = 1, board_width_frac: float = 1.0, board=None) -> CalibrationReport:
    """Lidar -> camera extrinsic from board poses seen by both sensors; writes calibration/<rig>/extrinsic.txt.

    Needs calibration/<rig>/intrinsics.yaml (board poses from the camera). Twin: ``poses`` tilted
    board poses around ``distance_m``; hardware: ``images_dir/pose_<i>.jpg`` + ``pose_<i>.osf``.
    """
    lay = CalibrationLayout(Path(root), rig.name)
    intr = read_intrinsics(lay.intrinsics_path)
    work = lay.dir / "captures" / "extrinsic"
    if rig.backend == "sim" and poses < 3:
        raise CalibrationError(f"extrinsic calibration needs >= 3 board poses with non-parallel normals, got {poses}")
    if rig.backend == "sim":
        tw = _twin(rig)
        tw.focus_motor.move_to(rig.run(rig.capture.canonical_run).hexcode)
        distance_m = distance_m or rig.capture.canonical_focus_distance_m
        board = _board_for(rig, distance_m, width_frac=board_width_frac, squares=(9, 7))
        tilts = [(0, 30, 0), (30, 0, 0), (-25, -25, 10), (20, -30, -5), (-30, 20, 0), (25, 25, 15), (0, -35, 0), (-35, 0, 5)]
        offs = [(0.1, 0.0), (-0.1, 0.1), (0.0, -0.1), (0.2, 0.05), (-0.2, -0.05), (0.0, 0.1), (0.15, -0.1), (-0.15, 0.0)]
        items = []
        for i in range(poses):
            tw.place_board(_board_pose(board, distance_m * (0.9 + 0.1 * (i % 3)), tilts[i % 8], offs[i % 8]), board)
            img = _shoot(tw, rig.capture.all_in_focus_f_number)
            osfs = []
            for j in range(lidar_frames):  # independent noise per frame: stack a few static frames
                osf = work / f"pose_{i + 1}_{j + 1}.osf"
                tw.lidar.record_static(osf)
                osfs.append(osf)
            items.append((f"pose_{i + 1}", img, osfs))
            _say(progress, f"pose {i + 1}: image + lidar frame")
        board_size = (board.width_m, board.height_m)
    else:
        folder = Path(images_dir or work)
        items = []
        for p in sorted(folder.glob("pose_*.jpg")):
            osf = p.with_suffix(".osf")
            if not osf.is_file():
                raise CalibrationError(f"{p}: no lidar recording {osf.name} beside it")
            items.append((str(p), load_image(p), [osf]))
        board = board or BoardSpec()
        board_size = (board.squares_x * board.square_m, board.squares_y * board.square_m)
    if len(items) < 3:
        raise CalibrationError(f"extrinsic calibration needs >= 3 board poses with non-parallel normals, got {len(items)}")
    T_cb, pts, names = [], [], []
    for name, img, osfs in items:
        det = detect(img, board, name)
        K = scaled(intr, det.image_size[0], det.image_size[1])
        T_cb.append(board_pose(det, K, intr.dist).T_camera_board)
        pts.append(np.concatenate([_lidar_points(o) for o in osfs]))
        names.append(name)
    res = calibrate_extrinsic(T_cb, pts, board_size, rig.extrinsic, names)
    prov = provenance("extrinsic", rig.name, "plane-to-plane (closed form + point-to-plane refinement)",
                      backend=rig.backend, poses=len(items),
                      std_translation_mm=" ".join(f"{v * 1000:.2f}" for v in res.std_translation_m),
                      std_rotation_deg=" ".join(f"{v:.4f}" for v in res.std_rotation_deg))
    write_extrinsic(lay.extrinsic_path, res.T_camera_lidar, prov)
    rows = [{"pose": n, "lidar_points": c, "rms_mm": r * 1000, "normal_angle_deg": a}
            for n, c, r, a in zip(res.names, res.per_pose_points, res.per_pose_rms_m, res.per_pose_angle_deg)]
    rep = CalibrationReport(f"lidar -> camera extrinsic ({rig.name})", rows, {"extrinsic": lay.extrinsic_path})
    rep.summary = {"T_camera_lidar": res.T_camera_lidar.tolist(),
                   "std_translation_mm": (res.std_translation_m * 1000).tolist(),
                   "std_rotation_deg": res.std_rotation_deg.tolist(),
                   "leave_one_out_translation_mm": res.loo_translation_m * 1000,
                   "leave_one_out_rotation_deg": res.loo_rotation_deg, "normal_spread": res.normal_spread}
    atomic_write_json(lay.report_dir / "extrinsic.json", {"rows": rows, "summary": rep.summary})
    return rep


# --- report plot ------------------------------------------------------------------------------------
def write_report_plot(rig: Rig, root: Path) -> Path:
    """PNG with the focus LUT (distance and diopters vs hexcode) and the breathing curve (scale vs 1/d)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lay = CalibrationLayout(Path(root), rig.name)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    lut = read_focus_lut(lay.focus_lut_path) if lay.focus_lut_path.is_file() else None
    if lut is not None:
        hs = np.linspace(lut.hexcodes.min(), lut.hexcodes.max(), 300)
        ax.plot(hs, lut.diopters(hs), "-", color="C0", label="PCHIP in diopters")
        ax.plot(lut.hexcodes, 1 / lut.distances_m, "o", color="C0", label="calibrated")
        for h, d in zip(lut.hexcodes, lut.distances_m):
            ax.annotate(f"{d:.2f} m", (h, 1 / d), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("motor hexcode")
        ax.set_ylabel("focus (diopters, 1/m)")
        ax.legend(fontsize=8)
    ax.set_title("focus LUT")
    ax = axes[1]
    if lay.breathing_path.is_file() and lut is not None:
        tab = read_breathing(lay.breathing_path)
        xs, ss = [], []
        for r in rig.capture.runs:
            if r.run in tab and r.hexcode is not None:
                xs.append(float(lut.diopters(r.hexcode, extrapolate=True)))
                ss.append(float(np.sqrt(abs(np.linalg.det(tab[r.run][:, :2])))))
        if xs:
            xs, ss = np.array(xs), np.array(ss)
            mag = 1 / ss - 1
            ax.plot(xs, mag * 100, "o", label="per run (1/scale - 1)")
            xc = 1 / rig.capture.canonical_focus_distance_m
            A = np.column_stack([xs - xc])
            k = np.linalg.lstsq(A, mag, rcond=None)[0][0]
            xx = np.linspace(xs.min(), xs.max(), 50)
            ax.plot(xx, k * (xx - xc) * 100, "-", label=f"model k = {k:.4f} / diopter")
            ax.legend(fontsize=8)
    ax.set_xlabel("focus (diopters)")
    ax.set_ylabel("magnification vs canonical (%)")
    ax.set_title("lens breathing")
    fig.tight_layout()
    lay.report_dir.mkdir(parents=True, exist_ok=True)
    out = lay.report_dir / "calibration.png"
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
