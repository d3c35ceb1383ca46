"""One capture session: the rig's plan -> focus stack, static lidar frame, hand-held sweep.

Entry point: :func:`capture_scene`. It writes ``scenes/<scene>/raw/`` exactly as the data layout (README) says
(``focus_stack/img_run_K_motor_HEX_aperture_FN.jpg``, ``lidar_static.osf``, ``lidar_sweep.osf``,
``capture.json``) and is resumable:

* every file is written atomically (temp file + rename) and recorded in the manifest (sha256,
  bytes, settings, ACHIEVED hexcode read back, timestamp) right after it lands;
* a re-run verifies every recorded file against its sha256, keeps the good ones (never
  re-captures or overwrites them), moves a corrupt one aside to ``raw/corrupt/`` and reports it,
  then continues from the first missing item;
* the focus position of a run is recorded before its first image; a resumed run drives to the
  same plan target again (the command an uninterrupted run gives, so a deterministic motor lands on
  the same position) and keeps the run's recorded hexcode in the names of all its images; the
  position read back before every shot is in the manifest, and a resumed position further than the
  motor tolerance from the recorded one is reported;
* a device error ends the session with one :class:`CaptureInterrupted` (a DeviceError) that says
  what was kept and how to continue; the manifest on disk stays consistent.

Image file names carry the run's achieved hexcode (the position read back after the move);
``capture.json`` additionally records the per-image read-back position and the plan's target.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..devices.protocols import Camera, DeviceError, FocusMotor, Lidar, RecordingSummary
from ..layout import (LayoutError, SceneLayout, format_image_name, read_manifest, record_file, sha256_file,
                      write_manifest)
from ..rig import Rig, format_hexcode, parse_hexcode
from ..version import tool_version

ProgressFn = Callable[[str, int, int, str], None]  # (stage, done, total, detail)
PromptFn = Callable[[str], None]  # show an operator instruction and wait for confirmation

STAGE_STACK, STAGE_STATIC, STAGE_SWEEP = "focus_stack", "lidar_static", "lidar_sweep"
PARTIAL_DIR = ".partial"


class CaptureError(DeviceError):
    """The capture cannot start or continue (incompatible existing scene, unplanned hexcode, ...)."""


class CaptureInterrupted(DeviceError):
    """A device failed mid-capture; everything captured before it is kept and recorded."""


@dataclass
class CaptureResult:
    manifest_path: Path
    manifest: dict
    captured: list[str] = field(default_factory=list)  # files written by this session (relative to raw/)
    verified: list[str] = field(default_factory=list)  # files already present and verified
    corrupt: list[str] = field(default_factory=list)  # files found corrupt (moved to raw/corrupt/) and re-captured
    warnings: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    @property
    def achieved_by_run(self) -> dict[int, int]:
        """run -> the motor position its images were shot at, as capture.json records it."""
        return {int(run): parse_hexcode(rec["achieved"]) for run, rec in self.manifest.get("runs", {}).items()
                if rec.get("achieved")}


def _now(clock: Callable[[], float]) -> str:
    return _dt.datetime.fromtimestamp(clock(), _dt.timezone.utc).isoformat(timespec="milliseconds")


def _plan(rig: Rig) -> dict:
    runs = []
    for r in rig.capture.runs:
        if r.hexcode is None:
            raise CaptureError(f"{rig.source or rig.name}: capture.runs.{r.run}: no hexcode; capture drives the motor "
                               "by hexcode (run calibrate-focus to turn focus_distance_m into hexcodes)")
        runs.append({"run": r.run, "hexcode": format_hexcode(r.hexcode)})
    return {"runs": runs, "apertures": list(rig.capture.apertures),
            "shutter_s": {f"{n:.1f}": rig.exposure.shutter_for(n) for n in rig.capture.apertures},
            "iso": rig.exposure.iso, "shutter_type": rig.exposure.shutter_type,
            "sweep_seconds": rig.capture.sweep_seconds}


def _default_prompt(message: str) -> None:
    input(f"{message}\nPress Enter to continue (Ctrl-C to stop; re-running continues where it stopped) ")


def _motor_tolerance(rig: Rig) -> int:
    return max(1, rig.sim.motor_repeatability_counts) if rig.backend == "sim" else 8


class _Session:
    def __init__(self, rig: Rig, scene: str, root: Path, camera: Camera, motor: FocusMotor, lidar: Lidar,
                 yes: bool, progress: ProgressFn | None, prompt: PromptFn | None, tolerance: int | None,
                 clock: Callable[[], float]):
        self.rig, self.scene, self.layout = rig, scene, SceneLayout(Path(root), scene)
        self.camera, self.motor, self.lidar = camera, motor, lidar
        self.yes, self.prompt = yes, prompt or _default_prompt
        self.progress = progress or (lambda stage, done, total, detail: None)
        self.tolerance = _motor_tolerance(rig) if tolerance is None else int(tolerance)
        self.clock = clock
        self.raw = self.layout.raw_dir
        self.result = CaptureResult(self.layout.manifest_path, {})
        self.m: dict = {}
        self._camera_ready = False

    # --- manifest ----------------------------------------------------------------------------
    def _save(self) -> None:
        self.m["updated_at"] = _now(self.clock)
        write_manifest(self.layout.manifest_path, self.m)

    def _warn(self, msg: str) -> None:
        self.result.warnings.append(msg)
        self.m.setdefault("warnings", []).append(msg)
        self.progress("warning", 0, 0, msg)

    def load(self) -> None:
        try:
            m = read_manifest(self.layout.manifest_path)
        except LayoutError as e:
            raise CaptureError(f"{e}; move it away to start this scene over") from None
        rig_cfg = self.rig.model_dump(mode="json", exclude={"source"})
        plan = _plan(self.rig)
        if m.get("files") or m.get("runs"):
            if m.get("plan") != plan or m.get("rig_config", rig_cfg) != rig_cfg:
                raise CaptureError(f"{self.layout.manifest_path}: scene {self.scene} was captured with a different rig "
                                   f"or plan ({m.get('rig', {}).get('name')}); use another scene name or move raw/ away")
        m.setdefault("scene", self.scene)
        m.setdefault("created_at", _now(self.clock))
        m["rig"] = {"name": self.rig.name, "source": self.rig.source, "backend": self.rig.backend,
                    "camera": self.rig.camera.body, "lens": self.rig.lens.name, "lidar": self.rig.lidar.model}
        m["rig_config"] = rig_cfg
        m["plan"] = plan
        m["motor_tolerance_counts"] = self.tolerance
        m.setdefault("runs", {})
        m.setdefault("files", {})
        m.setdefault("sessions", [])
        m["status"] = "incomplete"
        self.m = m

    def verify_existing(self) -> None:
        """Check every recorded file; move corrupt ones aside; adopt or park unrecorded files."""
        shutil.rmtree(self.raw / PARTIAL_DIR, ignore_errors=True)
        for d in (self.raw, self.layout.raw_focus_stack_dir):
            if d.is_dir():
                for tmp in d.glob(".*.part"):  # temp files of an interrupted atomic write
                    tmp.unlink(missing_ok=True)
        files = self.m["files"]
        for rel, entry in list(files.items()):
            path = self.raw / rel
            if not path.is_file():
                self._warn(f"{rel}: recorded in capture.json but missing; capturing it again")
                del files[rel]
                continue
            if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
                dest = self._park(path, "corrupt")
                self.result.corrupt.append(rel)
                self.m.setdefault("corrupt", []).append({"file": rel, "moved_to": dest.relative_to(self.raw).as_posix(),
                                                         "found_at": _now(self.clock)})
                self._warn(f"{rel}: CORRUPT (sha256 differs from capture.json); moved to "
                           f"{dest.relative_to(self.raw).as_posix()} and capturing it again")
                del files[rel]
                continue
            self.result.verified.append(rel)
        # a file written but not yet recorded (killed between the rename and the manifest write)
        stack = self.layout.raw_focus_stack_dir
        if stack.is_dir():
            expected = {}
            for r in self.rig.capture.runs:
                run_rec = self.m["runs"].get(str(r.run))
                if run_rec:
                    for n in self.rig.capture.apertures:
                        expected[format_image_name(r.run, parse_hexcode(run_rec["achieved"]), n)] = (r.run, n, run_rec)
            for p in sorted(stack.iterdir()):
                rel = p.relative_to(self.raw).as_posix()
                if not p.is_file() or rel in files:
                    continue
                if p.name in expected:
                    run, n, run_rec = expected[p.name]
                    record_file(self.m, self.raw, p, kind="image", run=run, f_number=n, hexcode_target=run_rec["target"],
                                hexcode_achieved=run_rec["achieved"], adopted=True,
                                note="written before an interruption, recorded on resume")
                    self.result.verified.append(rel)
                else:
                    dest = self._park(p, "unexpected")
                    self._warn(f"{rel}: not part of this scene's plan; moved to {dest.relative_to(self.raw).as_posix()}")
        for rel, p in (("lidar_static.osf", self.layout.lidar_static_path), ("lidar_sweep.osf", self.layout.lidar_sweep_path)):
            if p.is_file() and rel not in files:
                dest = self._park(p, "unexpected")
                self._warn(f"{rel}: present but not recorded in capture.json; moved to "
                           f"{dest.relative_to(self.raw).as_posix()} and recording again")
        self._save()

    def _park(self, path: Path, folder: str) -> Path:
        """Move ``path`` into raw/<folder>/ under its name and the time (a file parked there before is never
        replaced: each may be a different shot); returns where it went."""
        dest = self.raw / folder / f"{path.name}.{_dt.datetime.now().strftime('%Y%m%dT%H%M%S%f')}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        while dest.exists():  # two in the same microsecond
            dest = dest.with_name(dest.name + "_")
        os.replace(path, dest)
        return dest

    # --- steps -------------------------------------------------------------------------------
    def _fail(self, where: str, err: Exception) -> CaptureInterrupted:
        files = self.m.get("files", {})
        n_img = sum(1 for e in files.values() if e.get("kind") == "image")
        total = len(self.rig.capture.runs) * len(self.rig.capture.apertures)
        msg = (f"capture of scene {self.scene} stopped at {where}: {err}. Kept {n_img}/{total} images"
               f"{', the static frame' if 'lidar_static.osf' in files else ''}"
               f"{', the sweep' if 'lidar_sweep.osf' in files else ''} in {self.raw} (recorded in capture.json); "
               f"fix the device and re-run the same command to continue.")
        self.m["last_error"] = {"at": _now(self.clock), "where": where, "error": f"{type(err).__name__}: {err}"}
        return CaptureInterrupted(msg)

    def _ensure_camera(self) -> None:
        if self._camera_ready:
            return
        self.camera.open()
        self.m.setdefault("settings", {})
        iso = self.camera.set_iso(self.rig.exposure.iso)
        self.m["settings"].update({"iso": iso, "shutter_type": self.rig.exposure.shutter_type})
        nc = getattr(self.camera, "not_controlled", None)
        if nc:
            self.m["settings"]["not_controlled_over_usb"] = sorted(nc)
        self._camera_ready = True

    def focus_stack(self) -> None:
        runs, apertures = self.rig.capture.runs, self.rig.capture.apertures
        total = len(runs) * len(apertures)
        files = self.m["files"]

        def have(run: int, n: float) -> str | None:
            rec = self.m["runs"].get(str(run))
            if not rec:
                return None
            rel = f"focus_stack/{format_image_name(run, parse_hexcode(rec['achieved']), n)}"
            return rel if rel in files else None

        done = sum(1 for r in runs for n in apertures if have(r.run, n))
        self.progress(STAGE_STACK, done, total, "verified existing images" if done else "starting")
        for r in runs:
            todo = [n for n in apertures if not have(r.run, n)]
            if not todo:
                continue
            where = f"run {r.run}"
            try:
                self._ensure_camera()
                rec = self.m["runs"].get(str(r.run))
                achieved = int(self.motor.move_to(r.hexcode))
                if rec is None:
                    ok = abs(achieved - r.hexcode) <= self.tolerance
                    rec = {"target": format_hexcode(r.hexcode), "achieved": format_hexcode(achieved),
                           "error_counts": achieved - r.hexcode, "within_tolerance": ok, "moved_at": _now(self.clock)}
                    self.m["runs"][str(r.run)] = rec
                    if not ok:
                        self._warn(f"run {r.run}: motor reached {format_hexcode(achieved)}, target {format_hexcode(r.hexcode)} "
                                   f"(off by {achieved - r.hexcode} counts, tolerance {self.tolerance})")
                    self._save()
                elif achieved != parse_hexcode(rec["achieved"]):
                    rec.setdefault("resumed_positions", []).append(format_hexcode(achieved))
                    if abs(achieved - parse_hexcode(rec["achieved"])) > self.tolerance:
                        self._warn(f"run {r.run}: resumed at {format_hexcode(achieved)}, the run's earlier images were "
                                   f"shot at {rec['achieved']} (beyond tolerance {self.tolerance})")
                run_hex = parse_hexcode(rec["achieved"])
                for n in todo:
                    where = f"run {r.run} aperture F{n:.1f}"
                    f_rep = float(self.camera.set_aperture(n))
                    shutter = float(self.camera.set_shutter(self.rig.exposure.shutter_for(n)))
                    pos = int(self.motor.position())
                    t = _now(self.clock)
                    jpeg = self.camera.capture()
                    path = self.layout.raw_image_path(r.run, run_hex, n)
                    _write_new(path, jpeg)
                    rel = path.relative_to(self.raw).as_posix()
                    record_file(self.m, self.raw, path, kind="image", run=r.run, f_number=n, f_number_reported=f_rep,
                                shutter_s=shutter, iso=self.m["settings"].get("iso"),
                                hexcode_target=format_hexcode(r.hexcode), hexcode_achieved=format_hexcode(pos),
                                captured_at=t)
                    self._save()
                    self.result.captured.append(rel)
                    done += 1
                    self.progress(STAGE_STACK, done, total, path.name)
            except DeviceError as e:
                raise self._fail(where, e) from e

    def _close_camera(self) -> None:
        if self._camera_ready:
            try:
                self.camera.close()
            except DeviceError:
                pass
            self._camera_ready = False

    def lidar_step(self, rel: str, final: Path, record: Callable[[Path], RecordingSummary], stage: str) -> None:
        if rel in self.m["files"]:
            self.progress(stage, 1, 1, "verified existing recording")
            return
        part = self.raw / PARTIAL_DIR / final.name
        shutil.rmtree(part.parent, ignore_errors=True)
        part.parent.mkdir(parents=True, exist_ok=True)
        t = _now(self.clock)
        try:
            summary = record(part)
        except DeviceError as e:
            shutil.rmtree(part.parent, ignore_errors=True)
            raise self._fail(stage.replace("_", " "), e) from e
        if not part.is_file():
            raise self._fail(stage.replace("_", " "), DeviceError(f"the lidar wrote no file for {rel}"))
        _fsync(part)
        os.replace(part, final)
        shutil.rmtree(part.parent, ignore_errors=True)
        record_file(self.m, self.raw, final, kind=stage, recorded_at=t, frames=summary.frames,
                    frames_expected=summary.frames_expected, packets_lost=summary.packets_lost,
                    incomplete_frames=summary.incomplete_frames, info=_jsonable(summary.info))
        if summary.frames < summary.frames_expected or summary.packets_lost or summary.incomplete_frames:
            self._warn(f"{rel}: {summary.frames}/{summary.frames_expected} frames, {summary.packets_lost} packets lost, "
                       f"{summary.incomplete_frames} incomplete frames")
        self._save()
        self.result.captured.append(rel)
        self.progress(stage, 1, 1, f"{summary.frames} frames")

    def run(self) -> CaptureResult:
        self.load()
        session = {"started_at": _now(self.clock), "tool_version": tool_version()}
        self.m["sessions"].append(session)
        self.verify_existing()
        outcome = "interrupted"
        try:
            self.focus_stack()
            self._close_camera()
            if "lidar_static.osf" not in self.m["files"] and not self.yes:
                self.prompt("Step 2/3: static lidar frame. Leave the tripod exactly where it is.")
            self.lidar_step("lidar_static.osf", self.layout.lidar_static_path, lambda p: self.lidar.record_static(p),
                            STAGE_STATIC)
            if "lidar_sweep.osf" not in self.m["files"] and not self.yes:
                self.prompt(f"Step 3/3: take the lidar bar off the tripod and sweep the scene by hand for "
                            f"{self.rig.capture.sweep_seconds:g} s: first ~6 s slowly around the camera's "
                            "viewpoint (left, right, up, down, a step back), then walk the scene.")
            self.lidar_step("lidar_sweep.osf", self.layout.lidar_sweep_path,
                            lambda p: self.lidar.record_sweep(p, self.rig.capture.sweep_seconds,
                                                              lambda d, t: self.progress(STAGE_SWEEP, d, t, "sweeping")),
                            STAGE_SWEEP)
            self.m["status"] = "complete"
            self.m.pop("last_error", None)
            outcome = "complete"
        finally:
            self._close_camera()
            session.update(ended_at=_now(self.clock), outcome=outcome, new_files=len(self.result.captured),
                           corrupt_found=len(self.result.corrupt))
            self._save()
            self.result.manifest = self.m
        return self.result


def _write_new(path: Path, data: bytes) -> None:
    """Atomic write that refuses to replace an existing file (a good file is never overwritten)."""
    from ..layout import atomic_open

    if path.exists():
        raise CaptureError(f"{path}: already exists and is not recorded; refusing to overwrite")
    with atomic_open(path, "wb") as f:
        f.write(data)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def capture_scene(rig: Rig, scene: str, root: Path | str = ".", camera: Camera | None = None,
                  focus_motor: FocusMotor | None = None, lidar: Lidar | None = None, *, yes: bool = False,
                  progress: ProgressFn | None = None, prompt: PromptFn | None = None,
                  motor_tolerance_counts: int | None = None, clock: Callable[[], float] = time.time) -> CaptureResult:
    """Capture (or continue capturing) one scene into ``<root>/scenes/<scene>/raw/``.

    Devices default to :func:`zedd_capture.capture.backends.open_backends` (the twin for a sim rig).
    ``yes`` skips the operator prompts between steps; ``progress(stage, done, total, detail)`` is
    called as items land (stages ``focus_stack``, ``lidar_static``, ``lidar_sweep``, ``warning``).
    Raises :class:`CaptureInterrupted` (a DeviceError) when a device fails, with everything so far kept,
    and :class:`CaptureError` when the existing scene does not match this rig's plan.
    """
    if camera is None or focus_motor is None or lidar is None:
        from .backends import open_backends

        c, f, li = open_backends(rig, scene, Path(root))
        camera, focus_motor, lidar = camera or c, focus_motor or f, lidar or li
    return _Session(rig, scene, Path(root), camera, focus_motor, lidar, yes, progress, prompt,
                    motor_tolerance_counts, clock).run()
