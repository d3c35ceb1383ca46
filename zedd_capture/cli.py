"""The `zedd` command line: parse options, load the rig, call one stage function, print with rich.

Stage modules are imported inside each command so `zedd --help` and `zedd validate` stay fast.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .rig import Rig, RigError, format_hexcode, load_rig

app = typer.Typer(
    name="zedd",
    help="zedd-toolkit: capture, calibrate, build and score depth-from-defocus benchmarks (ZEDD).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
rig_app = typer.Typer(help="Inspect rig definitions.", no_args_is_help=True)
app.add_typer(rig_app, name="rig")
# piped output (CI logs, `make demo | tee`) gets a wide console so stage tables are not truncated
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _print_version(value: bool) -> None:
    if value:
        from .version import tool_version

        print(f"zedd-toolkit {tool_version()}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="Print the version (and git commit of a checkout) and exit.")) -> None:
    pass


RootOpt = typer.Option(Path("."), "--root", help="Folder holding scenes/<scene>/ and calibration/<rig>/.")
RigOpt = typer.Option(None, "--rig", help="Rig YAML path or name of a rig in rigs/ (default: the simulated rig).")
SceneOpt = typer.Option(..., "--scene", help="Scene name, e.g. kitchen01 (twin: template kitchen, seed 1).")
YesOpt = typer.Option(False, "--yes", "-y", help="Do not wait for the operator between steps.")


def _fail(message: str, code: int = 1) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(code)


def _warn(message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}")


def _rig(rig: Optional[str]) -> Rig:
    try:
        return load_rig(rig)
    except RigError as e:
        _fail(str(e))
        raise  # unreachable


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _run_stage(fn, *args, **kwargs):
    """Call a stage; known, user-facing errors (bad input, a device gone, a file that cannot be read or written)
    become one red line and exit code 1."""
    import yaml

    from .devices.protocols import DeviceError
    from .layout import LayoutError

    try:
        return fn(*args, **kwargs)
    except (LayoutError, DeviceError, RigError, OSError, ValueError, RuntimeError, yaml.YAMLError) as e:
        _fail(f"{type(e).__name__}: {e}")


@contextmanager
def _locked(folder: Path, command: str) -> Iterator[None]:
    """Run the block holding ``folder``'s zedd lock (lock.folder_lock); another command holding it is one error,
    a file system that cannot lock one warning."""
    import warnings
    from contextlib import ExitStack

    from .layout import LayoutError
    from .lock import folder_lock

    with ExitStack() as stack:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                stack.enter_context(folder_lock(folder, command))
            except (LayoutError, OSError) as e:
                _fail(f"{type(e).__name__}: {e}")
        for w in caught:
            _warn(str(w.message))
        yield


def _locked_scene(root: Path, scene: str, command: str):
    """:func:`_locked` on a scene that must exist already: a misspelt one is layout.existing_scene's error (with the
    close names), and no folder is made for it."""
    from .layout import existing_scene

    return _locked(_run_stage(existing_scene, root, scene).scene_dir, command)


# --- rig / validate ----------------------------------------------------------------------
@rig_app.command("show")
def rig_show(rig: str = typer.Argument("sim", help="Rig YAML path or rig name.")) -> None:
    """Print the resolved rig (camera, lens, capture plan, lidar, extrinsic)."""
    r = _rig(rig)
    t = Table(title=f"rig {r.name} ({r.backend}) from {r.source}", show_header=False)
    t.add_column("field", style="cyan")
    t.add_column("value")
    t.add_row("camera", f"{r.camera.body}: {r.camera.width_px}x{r.camera.height_px} px, "
              f"{r.camera.sensor_width_mm}x{r.camera.sensor_height_mm} mm, pitch {r.camera.pixel_pitch_mm * 1000:.2f} um")
    t.add_row("lens", f"{r.lens.name}: f = {r.lens.focal_length_mm} mm, breathing {r.lens.breathing.k_per_diopter} / dpt")
    t.add_row("apertures", ", ".join(f"F{n:.1f}" for n in r.capture.apertures))
    t.add_row("exposure", ", ".join(f"F{n:.1f}: {r.exposure.shutter_for(n):.5f} s" for n in r.capture.apertures)
              + f" at ISO {r.exposure.iso}, {r.exposure.shutter_type} shutter")
    t.add_row("canonical focus", f"{r.capture.canonical_focus_distance_m} m (run {r.capture.canonical_run})")
    t.add_row("depth map", f"{r.depth_map.width_px}x{r.depth_map.height_px} px, splat radius {r.depth_map.splat_radius_px} px")
    t.add_row("lidar", f"{r.lidar.model} {r.lidar.mode}" + (f" at {r.lidar.hostname}" if r.lidar.hostname else ""))
    t.add_row("lidar->camera", "\n".join(" ".join(f"{v:+.4f}" for v in row) for row in r.lidar_to_camera))
    console.print(t)
    runs = Table(title="capture plan")
    for col in ("run", "hexcode", "target distance (m)"):
        runs.add_column(col)
    for fr in r.capture.runs:
        runs.add_row(str(fr.run), format_hexcode(fr.hexcode) if fr.hexcode is not None else "-",
                     f"{fr.focus_distance_m:.3f}" if fr.focus_distance_m else "-")
    console.print(runs)


@app.command()
def validate(path: Path = typer.Argument(..., help="A ZEDD root folder or a submission .zip.")) -> None:
    """Check a ZEDD root or a submission zip; print every problem, exit 1 if any."""
    from .validate import validate as run_validate

    problems = run_validate(path)
    for p in problems:
        console.print(f"[red]x[/] {escape(str(p))}", highlight=False, soft_wrap=True)
    if problems:
        err_console.print(f"[bold red]{len(problems)} problem(s)[/] in {escape(str(path))}")
        raise typer.Exit(1)
    console.print(f"[green]ok[/] {escape(str(path))}")


# --- capture -------------------------------------------------------------------------------
class _StageBars:
    """Adapter from a stage callback ``(stage, done, total[, detail])`` to one rich bar per stage."""

    def __init__(self, progress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int = 0, total: int = 0, detail: str = "") -> None:
        if stage == "warning":
            self.progress.console.print(f"[yellow]warning:[/] {escape(detail)}")
            return
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total or None)
        self.progress.update(self.tasks[stage], completed=done, total=total or None,
                             description=escape(f"{stage} {detail}".strip()))


@app.command()
def capture(
    scene: str = SceneOpt,
    rig: Optional[str] = RigOpt,
    root: Path = RootOpt,
    yes: bool = YesOpt,
) -> None:
    """Shoot the focus stack, record the static lidar frame and the hand-held sweep (resumable)."""
    from .capture.backends import open_backends
    from .capture.session import capture_scene

    r = _rig(rig)
    twin = None
    if r.backend == "sim":  # keep the twin: after a complete capture it writes the scene's truth/
        from .sim.devices import TwinRig

        twin = _run_stage(TwinRig, r, scene, root)
        devices = (twin.camera, twin.focus_motor, twin.lidar)
    else:
        devices = _run_stage(open_backends, r, scene, root)

    def ask(message: str) -> None:
        console.print(f"[bold cyan]{escape(message)}[/]")
        typer.confirm("Ready?", default=True, abort=True)

    from .layout import SceneLayout

    layout = SceneLayout(root, scene)
    with _locked(layout.scene_dir, f"capture --scene {scene}"):
        try:
            with _progress() as progress:
                result = _run_stage(capture_scene, r, scene, root, *devices, yes=yes, progress=_StageBars(progress),
                                    prompt=None if yes else ask)
        except KeyboardInterrupt:
            _fail(f"capture of {scene} interrupted: every file written so far is kept and recorded in its "
                  "capture.json; the same command continues where it stopped", code=130)
        if twin is not None and result.complete:
            from .sim.truth import write_truth

            truth_dir = _run_stage(write_truth, layout, twin, achieved_by_run=result.achieved_by_run)
            console.print(f"twin truth (never read by the pipeline): {escape(str(truth_dir))}")
    files = result.manifest.get("files", {})
    t = Table(title=f"capture of {scene}: {'complete' if result.complete else 'INCOMPLETE'}")
    t.add_column("item")
    t.add_column("value")
    t.add_row("images", str(sum(k.startswith("focus_stack/") for k in files)))
    for key in ("lidar_static.osf", "lidar_sweep.osf"):
        info = files.get(key)
        t.add_row(key, f"{info.get('frames', '?')} frames, {info['bytes'] / 1e6:.1f} MB" if info else "missing")
    t.add_row("captured now / verified / re-captured corrupt", f"{len(result.captured)} / {len(result.verified)} / {len(result.corrupt)}")
    t.add_row("manifest", escape(str(result.manifest_path)))
    console.print(t)
    if result.warnings:  # each was printed as it happened; capture.json keeps them
        console.print(f"[yellow]{len(result.warnings)} warning(s)[/] above (also in {escape(str(result.manifest_path))})")


# --- build-depth ---------------------------------------------------------------------------
@app.command("build-depth")
def build_depth(
    scene: str = SceneOpt,
    rig: Optional[str] = RigOpt,
    root: Path = RootOpt,
    mode: str = typer.Option("fast", "--mode", help="fast (frame-to-local-map ICP) or paper (the paper's literal loop)."),
    split: str = typer.Option("val", "--split", help="Split folder of the exported ZEDD sample."),
    mask_edges: bool = typer.Option(False, "--mask-edges", help="Mark the bands at depth edges invalid (0) in the exported depth map: 1 px on each side, or --set edge_band_width_px=N."),
    settings: list[str] = typer.Option([], "--set", help="Change one build setting, name=value (a field of pointcloud.config.BuildConfig; aggregate.<name> / register.<name> for the nested ones); repeatable. build_depth.json records them all."),
    reproject: bool = typer.Option(False, "--reproject", help="Run only the projection again, from the last build's work/ files (new projection settings or cleanup regions; seconds instead of minutes). Settings of the earlier stages must be the build's; the build's calibration is kept (a warning says when calibration/ changed since), and points that a cleanup region removed at the build do not come back when the region shrinks: build again for those."),
) -> None:
    """Lidar sweep -> world cloud -> registered, cleaned, projected depth map; export the ZEDD sample."""
    from .layout import SceneLayout
    from .pointcloud.export import export_inputs, export_zedd
    from .pointcloud.config import BuildConfig, with_settings
    from .pointcloud.pipeline import build_depth as run

    r = _rig(rig)
    config = _run_stage(with_settings, BuildConfig(mask_edge_band=mask_edges), settings)
    inputs = _run_stage(export_inputs, r, root, scene)  # focus stack, LUT, warps: fail now, not after the build
    with _locked(SceneLayout(root, scene).scene_dir, f"build-depth --scene {scene}"):
        with _progress() as progress:
            bars = _StageBars(progress)
            if reproject:
                from .pointcloud.reproject import reproject as rerun

                summary = _run_stage(rerun, r, root, scene, config=config, mode=mode, progress=bars)
            else:
                summary = _run_stage(run, r, root, scene, mode=mode, progress=bars, config=config)
            bars("export", 0, 1)
            try:
                sample = export_zedd(r, root, scene, summary.depth, summary.K, split=split, inputs=inputs)
            except (OSError, ValueError, RuntimeError) as e:
                _fail(f"{type(e).__name__}: {e}\nThe build's work files (work/build_depth.json, the clouds, the trajectory) "
                      "are written; zedd/ still holds the previous export. Once the cause is fixed, "
                      f"`zedd build-depth --scene {scene} --reproject` (with the same --set options) exports without "
                      "rebuilding.")
            bars("export", 1, 1)
    t = Table(title=f"build-depth {scene} ({summary.mode}{', reprojected' if reproject else ''})", show_header=False)
    t.add_row("frames", str(summary.frames))
    t.add_row("points in world cloud", f"{summary.points:,}")
    if summary.stats.get("view"):
        t.add_row("points in the camera's view", f"{summary.stats['view']['points']:,} (every sweep frame's)")
    t.add_row("static registration", f"fitness {summary.fitness:.3f}, RMSE {summary.rmse_m * 1000:.1f} mm")
    t.add_row("coverage", f"{summary.coverage * 100:.1f} % of {summary.depth.shape[1]}x{summary.depth.shape[0]} px")
    if "projection_size" in summary.stats:
        pw, ph = summary.stats["projection_size"]
        snap = summary.stats["edge_snap"]
        partial = summary.stats["edge_coverage"]["dropped"]
        speckles = summary.stats["speckles"]
        t.add_row("projection", f"at {pw}x{ph} px; edge snapping moved {snap['snapped']:,} points, dropped {snap['dropped']:,}; "
                                f"{partial:,} points of partly covered edge pixels dropped; "
                                f"{speckles['dropped']:,} points of {speckles['pixels']:,} near speckle pixels dropped; "
                                f"{summary.stats['free_space']['carved_pixels']:,} edge pixels the sweep saw through")
    t.add_row("timing", ", ".join(f"{k} {v:.1f} s" for k, v in summary.timings_s.items()))
    t.add_row("ZEDD sample", escape(str(sample.scene_dir)))
    console.print(t)
    for w in summary.warnings:
        _warn(w)


# --- calibration -----------------------------------------------------------------------------
class _StatusLog:
    """Stage message callback: each message is logged with its time, the spinner shows the latest."""

    def __init__(self, status) -> None:
        self.status = status

    def __call__(self, message: str) -> None:
        self.status.update(escape(message))
        console.log(escape(message))


def _calibrate(fn, title: str, rig: Optional[str], root: Path, **kwargs) -> None:
    r = _rig(rig)
    images_dir = kwargs.get("images_dir")
    if images_dir is not None and r.backend == "sim":
        _fail(f"--images-dir {images_dir}: the simulated rig calibrates on the twin; image folders are for hardware rigs")
    if images_dir is not None and not Path(images_dir).is_dir():
        _fail(f"--images-dir {images_dir}: no such folder")
    from .layout import CalibrationLayout

    scene = kwargs.get("scene")
    if scene is None:
        guard = _locked(CalibrationLayout(root, r.name).dir, f"calibration of the {title}")
    else:  # calibrate-breathing --scene writes scenes/<scene>/work/breathing.json
        guard = _locked_scene(root, scene, f"calibration of the {title} of {scene}")
    with guard, console.status(title) as status:
        report = _run_stage(fn, r, root, progress=_StatusLog(status), **kwargs)
    console.print(report.table())
    for note in report.notes:
        console.print(f"[dim]{escape(note)}[/]")
    for name, path in report.products.items():
        console.print(escape(f"wrote {name}: {path}"))
    for plot in report.plots:
        console.print(escape(f"plot: {plot}"))


@app.command("calibrate-focus")
def calibrate_focus(
    rig: Optional[str] = RigOpt,
    root: Path = RootOpt,
    hexcodes: Optional[str] = typer.Option(None, help="Comma-separated hexcodes to calibrate (default: the rig's runs)."),
    method: str = typer.Option("auto", help="breathing (the board's distance from its scale against the canonical intrinsics), paper (co-calibrated I0..In) or auto: breathing when calibration/<rig>/intrinsics.yaml exists, else paper."),
    images_dir: Optional[Path] = typer.Option(None, help="Hardware: folder of board images per hexcode (see docs/calibration.md)."),
) -> None:
    """Hexcode -> metres lookup table: find the sharp hexcode on a ChArUco board, measure its distance."""
    from .calibration.session import FOCUS_METHODS
    from .calibration.session import calibrate_focus as run
    from .rig import parse_hexcode

    if method not in FOCUS_METHODS:
        _fail(f"--method: {method!r} is not one of {', '.join(FOCUS_METHODS)}")
    try:
        codes = [parse_hexcode(h) for h in hexcodes.split(",")] if hexcodes else None
    except ValueError as e:
        _fail(f"--hexcodes: {e}")
    _calibrate(run, "focus LUT", rig, root, hexcodes=codes, method=method, images_dir=images_dir)


@app.command("calibrate-intrinsics")
def calibrate_intrinsics(
    rig: Optional[str] = RigOpt,
    root: Path = RootOpt,
    images_dir: Optional[Path] = typer.Option(None, help="Hardware: folder of ChArUco images at the canonical focus."),
) -> None:
    """Intrinsics and distortion of the canonical image space (focus at the canonical distance)."""
    from .calibration.session import calibrate_intrinsics as run

    _calibrate(run, "canonical intrinsics", rig, root, images_dir=images_dir)


@app.command("calibrate-breathing")
def calibrate_breathing(
    rig: Optional[str] = RigOpt,
    root: Path = RootOpt,
    scene: Optional[str] = typer.Option(None, "--scene", help="Estimate from this scene's F/16 images (default: rig target)."),
    images_dir: Optional[Path] = typer.Option(None, help="Hardware: F/16 images of a textured target, one per run."),
) -> None:
    """Lens-breathing warps of every focus run into the canonical image space (ECC, coarse-to-fine)."""
    from .calibration.session import calibrate_breathing as run

    _calibrate(run, "breathing warps", rig, root, scene=scene, images_dir=images_dir)


@app.command("calibrate-extrinsics")
def calibrate_extrinsics(
    rig: Optional[str] = RigOpt,
    root: Path = RootOpt,
    images_dir: Optional[Path] = typer.Option(None, help="Hardware: board images + lidar recordings per pose."),
) -> None:
    """Lidar -> camera transform from a planar target seen by both sensors (plane-to-plane)."""
    from .calibration.session import calibrate_extrinsics as run

    _calibrate(run, "lidar -> camera extrinsic", rig, root, images_dir=images_dir)


# --- scoring and report --------------------------------------------------------------------
@app.command("eval-model")
def eval_model(
    data: Path = typer.Option(..., "--data", help="A ZEDD root, one <split>/<scene> folder, or scenes/<scene>."),
    model: str = typer.Option("dfd-classic", "--model", help="fossa-vits | fossa-vitb | dfd-classic"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Local model.pth (default: huggingface cache)."),
    split: str = typer.Option("val", "--split", help="val (480x640 protocol) or test (native 1216x1824)."),
    aperture: float = typer.Option(2.8, "--aperture", help="f-number of the stack slices."),
    runs: str = typer.Option("1,3,5,7,9", "--runs", help="Comma-separated focus runs of the stack."),
    out: Path = typer.Option(Path("eval_results"), "--out", help="Output folder: predictions, metrics JSON."),
    submission: Optional[Path] = typer.Option(None, "--submission", help="Write the test-server zip here (test split)."),
    device: str = typer.Option("auto", "--device", help="auto (a CUDA GPU when torch sees one), cpu, cuda or cuda:<n>."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads."),
) -> None:
    """Run a depth-from-defocus model on ZEDD samples and score it with the published metrics."""
    from .evaluation.evaluate import MODELS, evaluate

    if model not in MODELS:
        _fail(f"--model: {model!r} is not one of {', '.join(MODELS)}")
    if threads is not None and threads < 1:
        _fail(f"--threads {threads}: must be at least 1")
    if model == "dfd-classic" and device not in ("auto", "cpu"):
        _fail(f"--device {device}: dfd-classic runs on the CPU (numpy); use --device cpu or a FOSSA model")
    try:
        run_list = [int(r) for r in runs.split(",")]
    except ValueError:
        _fail(f"--runs: {runs!r} is not a comma-separated list of run numbers")
    with _locked(out, f"eval-model --model {model} --data {data}"):  # two runs into one --out would mix metrics
        result = _run_stage(evaluate, data, model, checkpoint, split, aperture, run_list, out, submission,
                            True, device=device, threads=threads)
    keys = ["abs_rel", "d1_05", "d1_15", "d1", "rmse", "silog"]
    t = Table(title=f"{model} on {data} ({split}, F{aperture:.1f}, runs {runs}, {result['device']})")
    t.add_column("scene")
    for k in keys:
        t.add_column(k)
    for row in result["rows"]:
        t.add_row(row["scene"], *[f"{row[k]:.4f}" if k in row else "-" for k in keys])
    if result.get("mean"):
        t.add_row("[bold]mean", *[f"[bold]{result['mean'][k]:.4f}" for k in keys])
    console.print(t)
    console.print(escape(f"predictions and metrics: {result['out_dir']}"
                         + (f"; submission: {result['submission']}" if result.get("submission") else "")))
    if result.get("other_scenes_in_out"):
        _warn(f"{result['out_dir']} also holds predictions of scenes this run did not score (an earlier run's): "
              f"{', '.join(result['other_scenes_in_out'])}; its metrics.json lists only this run's")


@app.command()
def report(scene: str = SceneOpt, rig: Optional[str] = RigOpt, root: Path = RootOpt,
           eval_dir: Optional[Path] = typer.Option(None, "--eval-dir", help="The folder above eval-model --out folders, or one --out folder (default scenes/<scene>/eval; a given one must hold a scored run).")) -> None:
    """Write a self-contained HTML report (+ JSON) for a scene, with accuracy against truth on the twin."""
    from .report.scene_report import build_report, summary_rows

    r = _rig(rig)
    with _locked_scene(root, scene, f"report --scene {scene}"):
        html_path, json_path, numbers = _run_stage(build_report, r, root, scene, eval_dir)
    rows = summary_rows(numbers)
    if rows:
        t = Table(title=f"accuracy of {scene}")
        for c in ("figure", "value", "goal"):
            t.add_column(c)
        for row in rows:
            t.add_row(*row)
        console.print(t)
    else:
        console.print(f"no accuracy figures for {scene}: they need the twin's truth (scenes/{scene}/truth/) "
                      "and the build's products")
    console.print(escape(f"report: {html_path}\nnumbers: {json_path}"))
