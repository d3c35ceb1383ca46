"""Every path and file name of raw scenes, calibration products and ZEDD samples.

Also: atomic writes (temp file + fsync + rename, so an interrupted write never leaves a
partial file) and the capture manifest (``raw/capture.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .rig import format_hexcode, parse_hexcode

IMAGE_NAME_RE = re.compile(r"^img_run_(\d+)_motor_([0-9A-F]{4})_aperture_F(\d+\.\d)\.jpg$")
SCENE_NAME_RE = re.compile(r"^([a-z]+)(\d+)$")
SUBMISSION_COUNT = 50
SUBMISSION_SHAPE = (1216, 1824)


class LayoutError(ValueError):
    """A file or folder does not follow the ZEDD layout; the message names it."""


# --- image names -------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageName:
    run: int
    hexcode: int
    f_number: float

    @property
    def name(self) -> str:
        return format_image_name(self.run, self.hexcode, self.f_number)


def format_image_name(run: int, hexcode: int, f_number: float) -> str:
    """``img_run_<k>_motor_<HEX>_aperture_F<N:.1f>.jpg`` (f/2 -> F2.0)."""
    if run < 1:
        raise ValueError(f"run must be >= 1, got {run}")
    if not f_number > 0:
        raise ValueError(f"f-number must be positive, got {f_number}")
    return f"img_run_{run}_motor_{format_hexcode(hexcode)}_aperture_F{f_number:.1f}.jpg"


def parse_image_name(name: str) -> ImageName:
    """Inverse of :func:`format_image_name`; raises LayoutError naming the file."""
    m = IMAGE_NAME_RE.match(Path(name).name)
    if not m or m.group(1).startswith("0"):
        raise LayoutError(f"{name}: not a focus-stack image name (img_run_<k>_motor_<HEX>_aperture_F<N.N>.jpg)")
    return ImageName(int(m.group(1)), int(m.group(2), 16), float(m.group(3)))


def parse_scene_name(scene: str) -> tuple[str, int]:
    """``kitchen01`` -> (``kitchen``, 1): template and seed of a twin scene."""
    m = SCENE_NAME_RE.match(scene)
    if not m:
        raise LayoutError(f"{scene}: scene names are <template><number>, e.g. kitchen01")
    return m.group(1), int(m.group(2))


# --- metadata.txt ------------------------------------------------------------------------
@dataclass(frozen=True)
class MetadataRow:
    run: int
    hexcode: int
    focus_distance_m: float


def format_metadata(rows: list[MetadataRow]) -> str:
    """``run_<k><TAB>HEX<TAB>metres`` one line per run, in run order."""
    return "".join(
        f"run_{r.run}\t{format_hexcode(r.hexcode)}\t{r.focus_distance_m:.4f}\n" for r in sorted(rows, key=lambda r: r.run)
    )


def parse_metadata(text: str, source: str = "metadata.txt") -> list[MetadataRow]:
    """Parse metadata.txt text; '#' lines and blank lines are ignored. Errors name line and reason."""
    rows: list[MetadataRow] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != 3:
            raise LayoutError(f"{source}:{lineno}: expected run_id<TAB>hexcode<TAB>focus_distance_m, got {line!r}")
        run_id, hexcode, dist = parts
        m = re.fullmatch(r"run_([1-9]\d*)", run_id.strip())
        if not m:
            raise LayoutError(f"{source}:{lineno}: run id {run_id!r} is not run_<k>")
        try:
            code = parse_hexcode(hexcode.strip())
        except ValueError as e:
            raise LayoutError(f"{source}:{lineno}: hexcode: {e}") from None
        try:
            d = float(dist)
        except ValueError:
            raise LayoutError(f"{source}:{lineno}: focus distance {dist!r} is not a number") from None
        if not (np.isfinite(d) and d > 0):
            raise LayoutError(f"{source}:{lineno}: focus distance {dist!r} must be a positive finite number of metres")
        rows.append(MetadataRow(int(m.group(1)), code, d))
    runs = [r.run for r in rows]
    if len(set(runs)) != len(runs):
        raise LayoutError(f"{source}: duplicate run ids {sorted(runs)}")
    return sorted(rows, key=lambda r: r.run)


def read_metadata(path: Path) -> list[MetadataRow]:
    path = Path(path)
    if not path.is_file():
        raise LayoutError(f"{path}: metadata.txt not found")
    return parse_metadata(read_text_file(path, "metadata.txt"), str(path))


# --- readers whose errors name the file ------------------------------------------------------
def read_text_file(path: Path, what: str = "text file", error: type[Exception] = LayoutError) -> str:
    """UTF-8 text of ``path``; a missing, unreadable or binary file raises ``error`` naming it."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        raise error(f"{path}: cannot read as {what}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise error(f"{path}: cannot read {what}: {e.strerror or e}") from None


def read_json_file(path: Path, what: str = "JSON file", error: type[Exception] = LayoutError, kind: type | None = dict):
    """Parsed JSON of ``path`` (a ``kind`` at the top level, default a mapping); errors name the file."""
    path = Path(path)
    try:
        data = json.loads(read_text_file(path, what, error))
    except json.JSONDecodeError as e:
        raise error(f"{path}: corrupt {what}: {e}") from None
    if kind is not None and not isinstance(data, kind):
        raise error(f"{path}: corrupt {what}: expected a JSON {'object' if kind is dict else kind.__name__}, "
                    f"got {type(data).__name__}")
    return data


def load_text_matrix(path: Path, what: str = "matrix", error: type[Exception] = LayoutError) -> np.ndarray:
    """A text file of whitespace-separated numbers (``#`` comments) as a 2-D float64 array; a file that cannot be read
    or holds anything but numbers raises ``error``: ``<path>: not a <what> of numbers: <numpy's first clause>``
    (without its advice on ``usecols``). The caller checks the shape (an empty file gives shape (1, 0) or (0, ...))."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "loadtxt: input contained no data": the shape says it
            return np.loadtxt(path, comments="#", ndmin=2)
    except (OSError, ValueError) as e:
        why = " ".join(str(e).split()).split(";")[0]
        raise error(f"{path}: not a {what} of numbers: {why}") from None


def load_npy(path: Path, what: str = "array", ndim: int | None = None, error: type[Exception] = LayoutError) -> np.ndarray:
    """A real-valued .npy array (no pickles) of ``ndim`` dimensions; corrupt files raise ``error`` naming the file."""
    import pickle

    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic != b"\x93NUMPY":
            kind = "an .npz archive" if magic.startswith(b"PK") else "an empty file" if not magic else "no NUMPY header"
            raise error(f"{path}: not a .npy {what} ({kind})")
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        if isinstance(e, error):
            raise
        if isinstance(e, OSError) and e.strerror:
            raise error(f"{path}: cannot read {what}: {e.strerror}") from None
        text = " ".join(str(e).split())
        why = ("it holds Python objects (dtype object), not a plain array" if "pickle" in text.lower() else
               "cut short" if isinstance(e, EOFError) or "EOF" in text or not text else
               f"corrupt ({text.split('. ')[0][:160]})")
        raise error(f"{path}: not a readable .npy {what}: {why}") from None
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise error(f"{path}: {what} has dtype {arr.dtype}, expected real numbers")
    if ndim is not None and arr.ndim != ndim:
        raise error(f"{path}: {what} must be {ndim}-D, got shape {arr.shape}")
    return arr


def load_depth_map(path: Path) -> np.ndarray:
    """A depth map ``depth.npy``: 2-D (H, W) float32 metres (0 or non-finite = invalid); errors name the file."""
    return load_npy(path, "depth map", ndim=2).astype(np.float32, copy=False)


def write_metadata(path: Path, rows: list[MetadataRow]) -> None:
    atomic_write_text(path, format_metadata(rows))


# --- atomic writes -----------------------------------------------------------------------
def default_mode(folder: bool = False) -> int:
    """The permission bits a plain ``open`` / ``mkdir`` would give under the process umask (0o644 / 0o755 under
    umask 022): temp files from ``tempfile`` are private (0o600 / 0o700), and a dataset must stay readable by
    whoever reads it after the rename."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


@contextlib.contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator:
    """Open a temp file beside ``path``; on success fsync + rename over ``path`` (with the permissions a plain
    ``open`` would give it), on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.fchmod(fd, default_mode())
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def atomic_save_txt(path: Path, array: np.ndarray, fmt: str = "%.10g", header: str = "") -> None:
    with atomic_open(path, "wb") as f:
        np.savetxt(f, array, fmt=fmt, header=header)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- folders -----------------------------------------------------------------------------
@dataclass(frozen=True)
class SceneLayout:
    """Folders and files of one scene under ``<root>/scenes/<scene>/``."""

    root: Path
    scene: str

    @property
    def scene_dir(self) -> Path:
        return Path(self.root) / "scenes" / self.scene

    # raw/ (as captured)
    @property
    def raw_dir(self) -> Path:
        return self.scene_dir / "raw"

    @property
    def raw_focus_stack_dir(self) -> Path:
        return self.raw_dir / "focus_stack"

    def raw_image_path(self, run: int, hexcode: int, f_number: float) -> Path:
        return self.raw_focus_stack_dir / format_image_name(run, hexcode, f_number)

    @property
    def lidar_static_path(self) -> Path:
        return self.raw_dir / "lidar_static.osf"

    @property
    def lidar_sweep_path(self) -> Path:
        return self.raw_dir / "lidar_sweep.osf"

    @property
    def manifest_path(self) -> Path:
        return self.raw_dir / "capture.json"

    # work/ (intermediate products of build-depth)
    @property
    def work_dir(self) -> Path:
        return self.scene_dir / "work"

    @property
    def breathing_path(self) -> Path:
        return self.work_dir / "breathing.json"

    @property
    def trajectory_path(self) -> Path:
        return self.work_dir / "trajectory.tum"

    @property
    def world_cloud_path(self) -> Path:
        return self.work_dir / "world_cloud.ply"

    @property
    def view_cloud_path(self) -> Path:
        """The points build-depth projected: every sweep frame's in the camera's view (camera-independent world frame)."""
        return self.work_dir / "view_cloud.ply"

    @property
    def cleanup_path(self) -> Path:
        return self.work_dir / "cleanup.yaml"

    @property
    def build_log_path(self) -> Path:
        return self.work_dir / "build_depth.json"

    # zedd/ (the exported ZEDD sample: a ZEDD root holding this one scene)
    @property
    def zedd_root(self) -> Path:
        return self.scene_dir / "zedd"

    def zedd_sample(self, split: str = "val") -> "ZeddSample":
        return ZeddSample(self.zedd_root, split, self.scene)

    # truth/ (only on the twin; never read by the pipeline)
    @property
    def truth_dir(self) -> Path:
        return self.scene_dir / "truth"

    @property
    def report_dir(self) -> Path:
        return self.scene_dir / "report"


def existing_scene(root: Path | str, scene: str) -> SceneLayout:
    """The layout of a scene that exists under ``<root>/scenes``. LayoutError ``<folder>: no such scene (...)``
    otherwise, with the scenes of close names (a typo) or the ones there are."""
    import difflib

    layout = SceneLayout(Path(root), scene)
    if layout.scene_dir.is_dir():
        return layout
    parent = layout.scene_dir.parent
    have = sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []
    close = difflib.get_close_matches(scene, have, n=3)
    hint = (f"did you mean {' or '.join(close)}?" if close else
            f"scenes here: {', '.join(have[:10])}{', ...' if len(have) > 10 else ''}" if have else
            f"no scenes under {parent}: capture it first, or check --scene and --root")
    raise LayoutError(f"{layout.scene_dir}: no such scene ({scene!r} does not exist; {hint})")


@dataclass(frozen=True)
class ZeddSample:
    """One scene of a ZEDD root: ``<root>/<split>/<scene>/{focus_stack,gt}`` plus ``<root>/metadata.txt``."""

    root: Path
    split: str
    scene: str

    @property
    def metadata_path(self) -> Path:
        return Path(self.root) / "metadata.txt"

    @property
    def scene_dir(self) -> Path:
        return Path(self.root) / self.split / self.scene

    @property
    def focus_stack_dir(self) -> Path:
        return self.scene_dir / "focus_stack"

    @property
    def gt_dir(self) -> Path:
        return self.scene_dir / "gt"

    @property
    def depth_path(self) -> Path:
        return self.gt_dir / "depth.npy"

    @property
    def K_path(self) -> Path:
        return self.gt_dir / "K.txt"

    @property
    def depth_vis_path(self) -> Path:
        return self.gt_dir / "depth_vis.jpg"

    @property
    def overlay_path(self) -> Path:
        return self.gt_dir / "overlay.jpg"

    def image_path(self, run: int, hexcode: int, f_number: float) -> Path:
        return self.focus_stack_dir / format_image_name(run, hexcode, f_number)


def find_zedd_samples(root: Path) -> list[ZeddSample]:
    """All scenes of a ZEDD root (folders ``<split>/<scene>`` holding focus_stack/ or gt/), sorted."""
    root = Path(root)
    samples = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for scene_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if (scene_dir / "focus_stack").is_dir() or (scene_dir / "gt").is_dir():
                samples.append(ZeddSample(root, split_dir.name, scene_dir.name))
    return samples


def calibration_dir(root: Path, rig_name: str) -> Path:
    return Path(root) / "calibration" / rig_name


@dataclass(frozen=True)
class CalibrationLayout:
    """Calibration products of one rig under ``<root>/calibration/<rig>/`` (same formats as twin truth)."""

    root: Path
    rig_name: str

    @property
    def dir(self) -> Path:
        return calibration_dir(self.root, self.rig_name)

    @property
    def focus_lut_path(self) -> Path:
        return self.dir / "focus_lut.tsv"

    @property
    def intrinsics_path(self) -> Path:
        return self.dir / "intrinsics.yaml"

    @property
    def breathing_path(self) -> Path:
        return self.dir / "breathing.json"

    @property
    def extrinsic_path(self) -> Path:
        return self.dir / "extrinsic.txt"

    @property
    def report_dir(self) -> Path:
        return self.dir / "report"


# --- capture manifest ----------------------------------------------------------------------
MANIFEST_VERSION = 1


def read_manifest(path: Path) -> dict:
    """Read raw/capture.json; a missing file gives an empty manifest, a corrupt one an error naming it."""
    path = Path(path)
    if not path.exists():
        return {"version": MANIFEST_VERSION, "files": {}}
    data = read_json_file(path, "capture manifest", kind=None)
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise LayoutError(f"{path}: capture manifest has no 'files' mapping")
    return data


def record_file(manifest: dict, raw_dir: Path, path: Path, **info) -> dict:
    """Add a captured file (path relative to raw/, sha256, size, extra info) to the manifest dict."""
    rel = Path(path).relative_to(raw_dir).as_posix()
    entry = {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size, **info}
    manifest.setdefault("files", {})[rel] = entry
    return entry


def write_manifest(path: Path, manifest: dict) -> None:
    atomic_write_json(path, {"version": MANIFEST_VERSION, **{k: v for k, v in manifest.items() if k != "version"}})
