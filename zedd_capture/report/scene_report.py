"""`zedd report`: one self-contained HTML page (images inlined) and the same numbers as JSON per scene.

Sections: focus stack contact sheet, all-in-focus image, depth map + overlay, trajectory and world
cloud (top-down), calibration residuals, coverage, accuracy against the twin truth (when the
scene has truth/), model scores (from eval-model's JSON).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np

from ..geometry import read_tum
from ..layout import (CalibrationLayout, LayoutError, SceneLayout, atomic_write_json, atomic_write_text, load_depth_map,
                      existing_scene, parse_image_name, read_json_file)
from ..rig import Rig
from ..version import tool_version
from . import accuracy

SECTIONS = ["Focus stack", "All-in-focus", "Depth", "Trajectory and world cloud", "Calibration",
            "Coverage", "Accuracy against truth", "Model scores"]


def _img_tag(image_bgr: np.ndarray, width: int | None = None, quality: int = 85) -> str:
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    style = f' style="width:{width}px"' if width else ""
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.tobytes()).decode()}"{style}>'


def _png_tag(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _table(rows: dict | list, header: tuple[str, ...] = ("quantity", "value")) -> str:
    items = rows.items() if isinstance(rows, dict) else rows
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in (k, *([val] if not isinstance(val, tuple) else val))) + "</tr>"
        for k, val in items
    )
    return "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + f"</tr>{body}</table>"


def _calibration_tables(report: dict) -> str:
    """A calibration report (``{"rows": [...], "summary": {...}}``) as two HTML tables."""
    rows = report.get("rows") or []
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ""
    if rows:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in cols) + "</tr>" for r in rows)
        out += f"<table><tr>{head}</tr>{body}</table>"
    summary = report.get("summary") or {}
    if summary:
        out += "<p></p>" + _table({k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in summary.items()})
    return out


def _imread(path: Path) -> np.ndarray:
    """A colour image (BGR); an unreadable or corrupt file raises LayoutError naming it."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise LayoutError(f"{path}: cannot read image (missing, corrupt or not an image)")
    return img


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.5g}"
    return str(v)


def contact_sheet(stack_dir: Path, thumb_w: int = 160) -> np.ndarray | None:
    """Runs (rows) x apertures (columns) thumbnails of a focus-stack folder."""
    images = {}
    for f in sorted(stack_dir.glob("img_run_*.jpg")):
        n = parse_image_name(f.name)
        images[(n.run, n.f_number)] = f
    if not images:
        return None
    runs = sorted({k[0] for k in images})
    fnums = sorted({k[1] for k in images})
    first = _imread(next(iter(images.values())))
    th = int(round(first.shape[0] * thumb_w / first.shape[1]))
    sheet = np.full((len(runs) * (th + 4), len(fnums) * (thumb_w + 4), 3), 255, np.uint8)
    for (run, fn), path in images.items():
        img = cv2.resize(_imread(path), (thumb_w, th), interpolation=cv2.INTER_AREA)
        r, c = runs.index(run), fnums.index(fn)
        sheet[r * (th + 4): r * (th + 4) + th, c * (thumb_w + 4): c * (thumb_w + 4) + thumb_w] = img
    return sheet


def _topdown_plot(traj_path: Path, cloud_path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    if cloud_path.is_file():
        import open3d as o3d

        pts = np.asarray(o3d.io.read_point_cloud(str(cloud_path)).points)
        if len(pts):
            pts = pts[np.random.default_rng(0).choice(len(pts), min(len(pts), 60000), replace=False)]
            ax.scatter(pts[:, 0], pts[:, 1], s=0.2, c=pts[:, 2], cmap="viridis", alpha=0.5)
    if traj_path.is_file():
        _, poses = read_tum(traj_path)
        ax.plot(poses[:, 0, 3], poses[:, 1, 3], "r-", lw=1.2, label="sweep trajectory")
        ax.plot(poses[0, 0, 3], poses[0, 1, 3], "ko", label="start")
        ax.legend(loc="upper right")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.set_title("world cloud (top-down, colour = height) and trajectory")
    return fig


def collect_numbers(rig: Rig, root: Path, scene: str, eval_dir: Path | None = None) -> dict:
    """Every figure of the report as plain JSON-able numbers."""
    lay, cal = SceneLayout(root, scene), CalibrationLayout(root, rig.name)
    sample = lay.zedd_sample()
    out: dict = {"scene": scene, "rig": rig.name, "tool_version": tool_version()}
    if lay.build_log_path.is_file():
        out["build"] = read_json_file(lay.build_log_path, "build log")
    depth = load_depth_map(sample.depth_path) if sample.depth_path.is_file() else None
    if depth is not None:
        valid = np.isfinite(depth) & (depth > 0)
        out["coverage"] = {"valid_pixel_fraction": float(valid.mean()),
                           "depth_min_m": float(depth[valid].min()) if valid.any() else float("nan"),
                           "depth_max_m": float(depth[valid].max()) if valid.any() else float("nan")}
    for rep in sorted(cal.report_dir.glob("*.json")) if cal.report_dir.is_dir() else []:
        data = read_json_file(rep, "calibration report")
        rows = data.get("rows") or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows) or not isinstance(data.get("summary") or {}, dict):
            raise LayoutError(f"{rep}: corrupt calibration report: expected 'rows' (a list of objects) and 'summary' (an object)")
        out.setdefault("calibration", {})[rep.stem] = data
    truth = lay.truth_dir
    if truth.is_dir():
        acc: dict = {}
        if depth is not None and (truth / "depth.npy").is_file():
            true_depth = load_depth_map(truth / "depth.npy")
            if true_depth.shape != depth.shape:
                raise LayoutError(f"{truth / 'depth.npy'}: shape {true_depth.shape} differs from the exported "
                                  f"depth map {sample.depth_path} {depth.shape}")
            acc["depth"] = accuracy.depth_accuracy(depth, true_depth)
        if cal.focus_lut_path.is_file() and (truth / "focus_lut.tsv").is_file():
            acc["focus_lut"] = accuracy.lut_accuracy(cal.focus_lut_path, truth / "focus_lut.tsv")
        breathing = lay.breathing_path if lay.breathing_path.is_file() else cal.breathing_path
        if breathing.is_file() and (truth / "breathing.json").is_file():
            acc["breathing"] = accuracy.breathing_accuracy(breathing, truth / "breathing.json", rig.camera.width_px, rig.camera.height_px)
        if cal.intrinsics_path.is_file() and (truth / "intrinsics.yaml").is_file():
            acc["intrinsics"] = accuracy.intrinsics_accuracy(cal.intrinsics_path, truth / "intrinsics.yaml")
        if cal.extrinsic_path.is_file() and (truth / "extrinsic.txt").is_file():
            acc["extrinsic"] = accuracy.extrinsic_accuracy(cal.extrinsic_path, truth / "extrinsic.txt")
        if lay.trajectory_path.is_file() and (truth / "trajectory.tum").is_file():
            acc["trajectory"] = accuracy.trajectory_accuracy(
                lay.trajectory_path, next(p for p in (truth / "trajectory_dense.tum", truth / "trajectory.tum") if p.is_file()))
        out["accuracy"] = acc
    given = eval_dir is not None
    eval_dir = Path(eval_dir) if given else lay.scene_dir / "eval"
    if given and not eval_dir.is_dir():
        raise LayoutError(f"{eval_dir}: no such folder (--eval-dir: eval-model's --out folders, or the folder above them)")
    # eval-model --out <eval_dir>/<model>, or --eval-dir naming one such --out folder itself
    results = sorted(eval_dir.glob("*/metrics.json"))
    if (eval_dir / "metrics.json").is_file():
        results.append(eval_dir / "metrics.json")
    scores = {}
    for f in results:
        result = read_json_file(f, "model metrics")
        mean = result.get("mean")
        if mean:
            if not isinstance(mean, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in mean.values()):
                raise LayoutError(f"{f}: corrupt model metrics: 'mean' must map metric names to numbers")
            scores[str(result.get("model", f.parent.name))] = mean
    if given and not scores:
        raise LayoutError(f"{eval_dir}: no scored eval-model run (a metrics.json with the mean of the scored scenes, in "
                          "this folder or one below it)")
    if scores:
        out["model_scores"] = scores
    return out


def summary_rows(numbers: dict) -> list[tuple[str, str, str]]:
    """(figure, value, goal) rows of the accuracy table printed by the demo."""
    acc = numbers.get("accuracy", {})
    rows = []
    if "depth" in acc:
        d = acc["depth"]
        rows += [("depth AbsRel", f"{d['abs_rel'] * 100:.3f} %", "<= 0.5 %"),
                 ("depth pixels within 0.5 %", f"{d['within_0.5pct'] * 100:.2f} %", ">= 99 %"),
                 ("depth coverage of true-valid pixels", f"{d['coverage'] * 100:.1f} %", "")]
        if "within_0.5pct_off_edges" in d:
            rows.append((f"  outside 1-px depth-edge bands ({d['edge_band_fraction'] * 100:.1f} % of pixels)",
                         f"{d['within_0.5pct_off_edges'] * 100:.2f} % within 0.5 %, AbsRel {d['abs_rel_off_edges'] * 100:.2f} %", ""))
        if "largest_hole_px" in d:
            rows += [("  AbsRel of the best 99 % of pixels", f"{d['abs_rel_best99'] * 100:.3f} %", ""),
                     ("  largest hole in true surfaces", f"{d['largest_hole_px']:.1f} px to a filled pixel", "<= splat radius")]
    if "focus_lut" in acc:
        rows.append(("focus LUT max error", f"{acc['focus_lut']['max_rel_error'] * 100:.3f} %", "<= 0.5 %"))
    if "breathing" in acc:
        rows.append(("breathing warp max error", f"{acc['breathing']['max_px']:.4f} px", "<= 0.05 px"))
    if "intrinsics" in acc:
        i = acc["intrinsics"]
        rows.append(("intrinsics fx / fy error", f"{i['fx_rel_error'] * 100:+.3f} / {i['fy_rel_error'] * 100:+.3f} %", "<= 0.1 %"))
        rows.append(("principal point error", f"{i['cx_error_px']:+.2f}, {i['cy_error_px']:+.2f} px", "<= 1 px"))
    if "extrinsic" in acc:
        e = acc["extrinsic"]
        rows.append(("extrinsic error", f"{e['translation_error_mm']:.2f} mm, {e['rotation_error_deg']:.4f} deg", "<= 3 mm, 0.05 deg"))
    if "trajectory" in acc:
        rows.append(("trajectory ATE RMSE", f"{acc['trajectory']['ate_rmse_mm']:.2f} mm", "<= 5 mm"))
    for model, s in numbers.get("model_scores", {}).items():
        rows.append((f"{model} AbsRel / d1.25", f"{s.get('abs_rel', float('nan')):.4f} / {s.get('d1', float('nan')):.4f}", ""))
    return rows


def build_report(rig: Rig, root: Path, scene: str, eval_dir: Path | None = None) -> tuple[Path, Path, dict]:
    """Write report/index.html and report/report.json for a scene; returns (html, json, numbers)."""
    lay = existing_scene(root, scene)
    sample = lay.zedd_sample()
    numbers = collect_numbers(rig, root, scene, eval_dir)
    parts = [f"<h1>ZEDD scene report: {html.escape(scene)}</h1><p>rig {html.escape(rig.name)}</p>"]

    def section(title: str, body: str) -> None:
        parts.append(f'<section id="{title.lower().replace(" ", "-")}"><h2>{html.escape(title)}</h2>{body}</section>')

    stack_dir = sample.focus_stack_dir if sample.focus_stack_dir.is_dir() else lay.raw_focus_stack_dir
    sheet = contact_sheet(stack_dir) if stack_dir.is_dir() else None
    section("Focus stack", (_img_tag(sheet) + "<p>rows: runs 1..9 (near to far); columns: apertures</p>") if sheet is not None else "<p>no focus stack</p>")
    aif = sorted(stack_dir.glob(f"img_run_{rig.capture.canonical_run}_*_F{rig.capture.all_in_focus_f_number:.1f}.jpg")) if stack_dir.is_dir() else []
    section("All-in-focus", _img_tag(_imread(aif[0]), 640) if aif else "<p>missing</p>")
    depth_imgs = [_img_tag(_imread(p), 480) for p in (sample.depth_vis_path, sample.overlay_path) if p.is_file()]
    section("Depth", "".join(depth_imgs) or "<p>no depth map yet (run zedd build-depth)</p>")
    if lay.trajectory_path.is_file() or lay.world_cloud_path.is_file():
        section("Trajectory and world cloud", _png_tag(_topdown_plot(lay.trajectory_path, lay.world_cloud_path)))
    else:
        section("Trajectory and world cloud", "<p>not built yet</p>")
    cal = numbers.get("calibration", {})
    cal_plots = "".join(
        f'<img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
        for p in sorted(CalibrationLayout(root, rig.name).report_dir.glob("*.png"))
    )
    section("Calibration", cal_plots + "".join(
        f"<h3>{html.escape(k)}</h3>{_calibration_tables(v)}" for k, v in cal.items()
    ) or "<p>no calibration reports</p>")
    section("Coverage", _table(numbers.get("coverage", {})) if "coverage" in numbers else "<p>no depth map</p>")
    rows = summary_rows(numbers)
    section("Accuracy against truth", _table([(r[0], (r[1], r[2])) for r in rows if "AbsRel /" not in r[0]],
                                             ("figure", "value", "goal")) if "accuracy" in numbers else "<p>no truth (hardware scene)</p>")
    scores = numbers.get("model_scores", {})
    section("Model scores", _table([(m, (f"{s.get('abs_rel', float('nan')):.4f}", f"{s.get('d1_05', float('nan')):.4f}",
                                         f"{s.get('d1_15', float('nan')):.4f}", f"{s.get('d1', float('nan')):.4f}"))
                                    for m, s in scores.items()], ("model", "AbsRel", "d<1.05", "d<1.15", "d<1.25"))
            if scores else "<p>no model scores (run zedd eval-model)</p>")
    page = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>ZEDD report " + html.escape(scene) + "</title>"
            "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}img{max-width:100%;margin:4px}"
            "table{border-collapse:collapse;display:block;overflow-x:auto;max-width:100%}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
            "section{margin-bottom:2em}</style></head><body>" + "".join(parts) + "</body></html>")
    html_path, json_path = lay.report_dir / "index.html", lay.report_dir / "report.json"
    atomic_write_text(html_path, page)
    atomic_write_json(json_path, numbers)
    return html_path, json_path, numbers
