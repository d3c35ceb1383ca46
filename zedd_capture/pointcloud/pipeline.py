"""``zedd build-depth``: raw lidar recordings of one scene -> metric depth map in the canonical camera.

Stages: read -> deskew + aggregate (+ density filter) -> register static frame -> view cloud (fast
mode: every frame's points in the camera's view, density-filtered) -> cleanup -> transform into the
camera frame -> z-buffer projection. Cleanup regions are defined in the camera (or static lidar)
frame, the only frames stable across rebuilds, so cleanup runs right after the static frame is
registered. Writes work/trajectory.tum, work/world_cloud.ply, work/view_cloud.ply and
work/build_depth.json; the ZEDD export is :func:`zedd_capture.pointcloud.export.export_zedd`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.ndimage import binary_dilation

from ..geometry import invert, scale_intrinsics, write_tum
from ..layout import CalibrationLayout, SceneLayout, atomic_open, atomic_write_json
from ..version import tool_version
from .aggregate import (AggregateConfig, WorldCloud, accumulate, aggregate, density_filtered, frame_index_dtype,
                        frame_motion)
from .cleanup import cleanup_mask, load_regions
from .edge_snap import (near_edge_pixels, near_speckle_points, partial_edge_points, slide_along_rays,
                        snap_edge_points)
from .free_space import SweepRays, far_side_depth, free_space_violations, sweep_rays
from .io import read_lidar, read_static_frame
from .planes import upsample_depth
from .project import ZbufferConfig, depth_edge_band, project_points, view_weights, zbuffer
from .register import RegisterConfig, register_static

log = logging.getLogger(__name__)

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)

STAGES = ("read", "aggregate", "register", "view", "cleanup", "project", "write")


class BuildDepthError(RuntimeError):
    """A build-depth stage failed; the message names the stage and the file or numbers."""


@dataclass
class BuildConfig:
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    splat_radius_px: int | None = None  # None: rig.depth_map.splat_radius_px
    splat_mode: str = "fill"
    band_m: float | None = 0.05
    band_rel: float = 0.01  # + this fraction of the depth: the front band widens with the range noise of far surfaces
    occlusion_radius_px: int = 8
    smooth_radius_px: int = 0  # superseded by the local plane fit (plane_radius_px)
    # per-pixel plane fit over this neighbourhood (Gaussian weights of sigma plane_sigma_px), read at the
    # pixel-centre ray. A wide window averages the range noise of sparsely sampled surfaces (a thin pole
    # 0.5 m from the camera holds < 1 point per pixel). Twin, kitchen01: radius 2 -> 6 (sigma 3): 89.0 ->
    # 92.6 % of pixels within 0.5 %, pixels nearer than 1 m 59 -> 15 % bad. Several radii: per pixel the
    # widest fit that agrees with the narrower ones within plane_ici_k standard errors
    # (local_planes.fit_planes_multiscale): creases and curved patches keep a narrow window. Twin, within 0.5 %
    # (view power 4), radius 6 -> (2, 4, 8): kitchen01 94.2 -> 95.4 %, office03 87.5 -> 88.2 %, hallway02
    # 85.9 -> 87.3 %. Since the view cloud (~15-25 points per pixel) radius 1 pays too: (2, 4, 8) -> (1, 2, 4, 8),
    # within 0.5 % (AbsRel): kitchen01 98.32 -> 98.42 % (1.27 -> 1.25 %), kitchen02 97.69 -> 97.87 (1.85 -> 1.87),
    # office03 97.35 -> 97.49 (2.77 -> 2.77), hallway02 97.49 -> 97.83 (1.11 -> 1.11): creases and the far side of
    # depth edges keep a narrower window
    plane_radius_px: int | tuple[int, ...] = (1, 2, 4, 8)
    plane_sigma_px: float | None | tuple[float | None, ...] = (None, None, 2.0, 4.0)
    plane_ici_k: float = 3.0
    # each radius's fit loses the bias of a plane on a curved surface before the comparison (the Hessian from the
    # widest fit's slopes; local_planes.fit_planes_multiscale). Twin, within 0.5 % / AbsRel: kitchen01 97.89 -> 97.99 % /
    # 1.19 -> 1.19 %, kitchen02 97.27 -> 97.37 / 1.58 -> 1.63, office03 97.24 -> 97.34 / 2.41 -> 2.50, hallway02
    # 96.65 -> 96.84 / 1.31 -> 1.34; tiny rig (test_end_to_end) 85.5 -> 86.8 % / 16.2 -> 15.9 %
    plane_curvature: bool = True
    # passes of the plane fit (the first two measure the noise on both sides of the plane, see
    # local_planes.fit_local_planes). Twin, within 0.5 %, 3 -> 5 passes (with the two symmetric ones):
    # kitchen01 94.2 -> 94.5 %, office03 92.8 -> 93.0 %, hallway02 91.1 -> 92.6 % (its corridor walls)
    plane_iterations: int = 5
    # spill removal (project.spill_mask): a front surface with less than spill_ratio x the point density of
    # the same surface nearby is the sideways-scattered fringe of a nearer object: dropped, the surface behind
    # shows; not on surfaces with fewer than spill_min_support points within spill_radius_px (there the test
    # erodes a sparse object as much as it removes fringe). Twin, share of pixels within 0.5 % (radius 6
    # without -> with): kitchen01 92.9 -> 94.0 %, office03 85.9 -> 87.0 %, hallway02 82.9 -> 84.0 %. 0: off
    spill_ratio: float = 0.4
    spill_radius_px: int = 3
    spill_gate_rel: float = 0.05
    spill_min_support: float = 15.0
    # a pixel's front cluster with thin_ratio x fewer points than lie just behind it (within thin_depth_rel of
    # its depth) is a layer of mixed returns (surfaces at grazing incidence), not a surface: dropped. Twin,
    # within 0.5 %: hallway02 84.0 -> 85.8 %, kitchen01 94.0 -> 94.0 %, office03 87.0 -> 87.1 %. 0: off. Not the
    # edge of a surface before a step (project._front_clusters: a neighbour of its depth passes, the points behind
    # lie > 6 % behind): kitchen01 97.99 -> 98.08 %, kitchen02 97.37 -> 97.51 %, office03 97.34 -> 97.32 %
    thin_ratio: float = 2.0
    thin_depth_rel: float = 0.1
    # points within edge_snap_zone_px of a depth edge of the first projection move along their sensor rays onto
    # the nearest surface of the non-edge pixels within edge_snap_radius_px, or are dropped when none lies
    # within edge_snap_max_m; then the projection runs again (edge_snap.snap_edge_points: range noise seen from
    # the side spills a near surface past its silhouette); pixels left without points keep the first value.
    # Twin, within 0.5 % (dense): kitchen01 94.55 -> 95.2 %, office03 93.0 -> 94.1 %, hallway02 92.6 -> 92.8 %;
    # AbsRel 7.7 -> 5.6 %, 22.5 -> 14.5 %, 7.1 -> 6.2 %. 0: off
    edge_snap_radius_px: int = 4
    edge_snap_zone_px: int = 3
    edge_snap_max_m: float = 0.03
    edge_snap_land_px: float = 2.5
    # and the points away from the edges (beyond slide_zone_px) slide along their sensor rays to where they meet the
    # first map's surface, keeping their distance from it (edge_snap.slide_along_rays: 1 cm range noise along a
    # sweep ray 30 deg off the camera's shifts a point sideways by 4-8 px on the near pole; the plane fits then see
    # each point at its own pixel). Twin, within 0.5 % / AbsRel: kitchen01 98.42 -> 98.49 % / 1.25 -> 1.25 %,
    # kitchen02 97.87 -> 97.90 / 1.87 -> 1.88, office03 97.49 -> 97.56 / 2.77 -> 2.77, hallway02 97.83 -> 97.89 /
    # 1.11 -> 1.13 (zone 0: 98.47 / office03 97.53 %; 3: 98.47 / 97.49 %). 0: off
    slide_max_m: float = 0.03
    slide_zone_px: int = 1
    # then the near surface's points are dropped from the pixels at its edges that it covers less than this
    # fraction of (by point density; edge_snap.partial_edge_points) and the projection runs a third time.
    # Twin, within 0.5 %: kitchen01 97.3 -> 97.6 %, office03 96.3 -> 96.9 %; AbsRel of the best 99 % 0.11 -> 0.06 %,
    # 0.44 -> 0.22 %. 0: off
    edge_coverage_ratio: float = 0.5
    # and the points of isolated patches of at most speckle_max_px pixels that read > 5 % nearer than all around
    # them (edge_snap.near_speckle_points: a near object's returns scattered sideways by range noise). Twin, within
    # 0.5 %: kitchen01 97.61 -> 97.78 %, kitchen02 97.11 -> 97.17 %, office03 96.92 -> 96.99 %, hallway02 96.41 ->
    # 96.44 %; AbsRel 1.41 -> 1.26 %, 3.00 -> 2.94 %. 0: off
    speckle_max_px: int = 8
    # then the sweep's free space (free_space.free_space_violations): a near-side edge pixel whose centre ray
    # free_space_min_rays sweep rays crossed within free_space_eps_px (free_space_eps_out_px toward the far side)
    # just behind the map's depth, on their way to something farther, shows the surface behind (the mean of its
    # farther 8-neighbours); free_space_deep_min_rays where that is more than twice as far (a wrong carve there
    # costs > 100 % relative error, a right one gains < 100 %; with 2 rays there kitchen02's AbsRel rose 1.57 ->
    # 1.67 %: rims of the near pole read 0.5-1 % too near, and the space just in front of the real rim is free).
    # free_space_rounds times (each round reaches the next pixel of a spread edge). Twin, same view clouds, within
    # 0.5 % / AbsRel / AbsRel of the best 99 %: kitchen01 97.78 -> 97.89 % / 1.25 -> 1.19 % / 0.055 -> 0.053 %,
    # kitchen02 97.25 -> 97.27 / 1.57 -> 1.58 / 0.068 -> 0.067, office03 97.08 -> 97.24 / 2.47 -> 2.41 / 0.186 ->
    # 0.126, hallway02 96.51 -> 96.65 / 1.36 -> 1.31 / 0.110 -> 0.099; the tiny rig's 30 frames: 86.47 -> 86.50 %.
    # 0: off
    free_space_min_rays: int = 1
    free_space_eps_px: float = 0.7
    free_space_eps_out_px: float = 0.1
    free_space_deep_min_rays: int = 3
    free_space_rounds: int = 2
    # the projection (and every radius above, in pixels) runs at about this width - the depth map's size divided
    # by an integer - and planes.upsample_depth reads the result at the map's own pixels: the lidar gives a
    # fixed number of points per solid angle, and at the reference rig's 1824 x 1216 a pixel holds too few for
    # the per-pixel fits. Twin, kitchen01 at 1824 x 1216: projected directly 86.6 % within 0.5 %, AbsRel 54 %;
    # at 456 x 304 and upsampled 95.2 %, AbsRel 5.4 %. None: project at the map's size
    projection_width_px: int | None = 456
    # mark the 1-px bands on both sides of depth edges (jump > edge_band_jump_rel, project.depth_edge_band)
    # invalid (0) in the exported map: denser ground truth is the paper's choice (False); the bands hold most
    # of the wrong-surface pixels. Twin, kitchen01: within 0.5 % 94.0 -> 96.9 %, AbsRel 6.5 -> 0.7 %,
    # coverage 100 -> 92 %
    mask_edge_band: bool = False
    edge_band_jump_rel: float = 0.05
    # width (px) of the masked band on each side of an edge: 1 = the pixels next to the edge; w = those and the
    # pixels within w - 1 px of them. Twin, share within 0.5 % of the valid pixels / pixels masked, 1 -> 2:
    # kitchen01 99.33 -> 99.62 % / 3.0 -> 6.8 %, kitchen02 98.80 -> 99.08 / 3.6 -> 7.9, office03 98.91 -> 99.55 /
    # 4.8 -> 10.5, hallway02 99.00 -> 99.39 / 4.6 -> 9.9 (the edges are what depth-from-defocus finds hardest);
    # the largest hole, kitchen01 / office03: 2.2 / 2.8 px at 1, 4.1 / 7.0 px at 2 (the sim rig's splat radius: 2 px)
    edge_band_width_px: int = 1
    range_noise_m: float = 0.01  # lidar range noise (1 sigma): point selection / edge gates of the plane fit
    adaptive_noise: bool = True  # per-pixel noise measured from the plane-fit residuals (far / weak returns are noisier)
    edge_jump_m: float | None = 0.1  # drop mixed pixels at depth edges (see io.depth_edges)
    max_frames: int | None = None
    # fast mode: project a cloud of every sweep frame's points in the camera's view (the image widened by
    # view_margin_frac of its size on each side, so that the density filter still sees the neighbours of
    # points at the image border), not the world cloud, which holds every n-th frame when the sweep has
    # more than AggregateConfig.max_points returns (600 OS0-128 frames: every 4th). Twin, 4x the points in the
    # view; within 0.5 %: kitchen01 95.9 -> 96.5 %, office03 93.9 -> 95.7 % (AbsRel 14.6 -> 1.75 %)
    view_cloud: bool = True
    view_margin_frac: float = 0.1
    write_cloud: bool = True
    include_static: bool = True
    # per-point view weights (project.view_weights): cos(angle at the point between the sensor that measured it
    # (its frame's estimated pose) and the camera) ** power, at least floor: the back and hidden flanks of thin
    # objects, seen from the far side of the sweep, no longer pull the visible surface behind them, and still
    # hold a surface nothing else saw. None: all points weigh the same. Twin (within 0.5 %): kitchen01
    # 87.9 -> 89.5 %, office03 83.5 -> 85.2 % (power 2, floor 0.05: 89.5 / 84.7 %); with the radius-6 plane
    # fit, power 1 -> 4: kitchen01 93.9 -> 94.2 %, office03 87.1 -> 87.5 %, hallway02 85.8 -> 85.9 %
    # (power 8 at 3280092: within 0.5 % +0.02-0.17 points on the four twin scenes, AbsRel +0.27-0.53: more pixels of the
    # near pole read the wall behind it; see README)
    view_weight_power: float | None = 4.0
    view_weight_floor: float = 0.001

    def zbuffer_config(self) -> ZbufferConfig:
        """The settings of :func:`project.zbuffer` these settings give (all but the splat radius and the point
        weights, which build-depth passes itself)."""
        return ZbufferConfig(mode=self.splat_mode, band_m=self.band_m, band_rel=self.band_rel,
                             occlusion_radius_px=self.occlusion_radius_px, smooth_radius_px=self.smooth_radius_px,
                             plane_radius_px=self.plane_radius_px, plane_iterations=self.plane_iterations,
                             plane_sigma_px=self.plane_sigma_px, plane_ici_k=self.plane_ici_k,
                             plane_curvature=self.plane_curvature, noise_m=self.range_noise_m,
                             adaptive_noise=self.adaptive_noise, spill_ratio=self.spill_ratio,
                             spill_radius_px=self.spill_radius_px, spill_gate_rel=self.spill_gate_rel,
                             spill_min_support=self.spill_min_support, thin_ratio=self.thin_ratio,
                             thin_depth_rel=self.thin_depth_rel)


def _fits(current, value) -> bool:
    """Whether a parsed setting ``value`` may replace the field value ``current`` (None and tuples: any)."""
    if value is None or current is None or isinstance(value, tuple) or isinstance(current, (tuple, list)):
        return True
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, int):
        return isinstance(value, int)
    if isinstance(current, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(current))


def with_settings(config: BuildConfig, settings: list[str] | tuple[str, ...]) -> BuildConfig:
    """``config`` with each ``"name=value"`` of ``settings`` (a YAML value: ``spill_ratio=0.35``,
    ``plane_radius_px=[2, 4]``, ``band_m=null``; ``aggregate.name=value`` / ``register.name=value`` for the
    nested configs) replacing that field. Raises :class:`BuildDepthError` naming the setting: an unknown name,
    a value of the wrong type, or one the projection's :class:`project.ZbufferConfig` rejects."""
    import yaml

    def replaced(obj, path: list[str], value, setting: str):
        names = {f.name for f in fields(obj)}
        if path[0] not in names:
            raise BuildDepthError(f"build-depth: unknown setting {setting!r}: {type(obj).__name__} has no field "
                                  f"{path[0]!r} (fields: {', '.join(sorted(names))})")
        current = getattr(obj, path[0])
        if is_dataclass(current):
            if len(path) == 1:
                raise BuildDepthError(f"build-depth: setting {setting!r}: {path[0]!r} holds settings of its own "
                                      f"(use {path[0]}.<name>=value)")
            return replace(obj, **{path[0]: replaced(current, path[1:], value, setting)})
        if len(path) > 1:
            raise BuildDepthError(f"build-depth: unknown setting {setting!r}: {path[0]!r} has no fields")
        annotation = str(next(f.type for f in fields(obj) if f.name == path[0]))
        if isinstance(value, list) and isinstance(current, (tuple, list)):
            value = type(current)(value)
        elif isinstance(value, list) and "tuple" in annotation:
            value = tuple(value)  # a scalar setting that also takes one value per scale (plane_radius_px)
        elif isinstance(value, list):
            raise BuildDepthError(f"build-depth: setting {setting!r}: {path[0]} takes one value ({current!r}), not a list")
        if not _fits(current, value):
            raise BuildDepthError(f"build-depth: setting {setting!r}: {path[0]} is {type(current).__name__} "
                                  f"({current!r}), not {type(value).__name__}")
        return replace(obj, **{path[0]: float(value) if isinstance(current, float) and isinstance(value, int) else value})

    for setting in settings:
        name, sep, text = setting.partition("=")
        if not sep or not name.strip():
            raise BuildDepthError(f"build-depth: setting {setting!r} is not name=value")
        if name.strip() == "aggregate.mode":
            raise BuildDepthError(f"build-depth: setting {setting!r}: the aggregation mode is --mode (fast|paper)")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise BuildDepthError(f"build-depth: setting {setting!r}: value is not YAML ({e})") from e
        config = replaced(config, name.strip().split("."), value, setting)
    return checked(config, f"settings {list(settings)}")


# lowest values of the settings that must be more than 0 when set (the sweep reader needs two frames)
_LOWEST_WHEN_SET = {"projection_width_px": 1, "max_frames": 2, "splat_radius_px": 1, "edge_band_width_px": 1}


def checked(config: BuildConfig, source: str = "config") -> BuildConfig:
    """``config``, after checking the projection's settings (:class:`project.ZbufferConfig`) and that every other
    number of it and of its nested configs (``aggregate``, ``register``) is finite and >= 0 (``projection_width_px``
    and ``splat_radius_px`` >= 1, ``max_frames`` >= 2 when set): one :class:`BuildDepthError` naming ``source`` and
    the field, before the aggregation rather than after it."""
    try:
        config.zbuffer_config()
    except (ValueError, TypeError) as e:
        raise BuildDepthError(f"build-depth: {source}: {e}") from e

    def numbers(obj, prefix: str):
        for f in fields(obj):
            value = getattr(obj, f.name)
            if is_dataclass(value):
                yield from numbers(value, f"{prefix}{f.name}.")
            elif not isinstance(value, bool) and isinstance(value, (int, float)):
                yield f"{prefix}{f.name}", value  # None, tuples (checked by ZbufferConfig), flags: skipped

    for name, value in numbers(config, ""):
        low = _LOWEST_WHEN_SET.get(name, 0)
        if not np.isfinite(value) or value < low:
            raise BuildDepthError(f"build-depth: {source}: BuildConfig.{name} = {value!r}: must be "
                                  f"{f'>= {low}' if low else 'a finite number >= 0'}")
    return config


@dataclass
class BuildSummary:
    scene: str
    mode: str
    depth: np.ndarray  # (H, W) float32 metres, 0 = invalid, canonical camera at rig.depth_map resolution
    K: np.ndarray  # 3x3 intrinsics of ``depth``
    frames: int
    points: int
    fitness: float
    rmse_m: float
    coverage: float  # fraction of depth pixels with a value
    timings_s: dict
    T_camera_world: np.ndarray
    T_world_static: np.ndarray
    warnings: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)

    def log_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("depth",)}
        d["tool_version"] = tool_version()
        for k in ("K", "T_camera_world", "T_world_static"):
            d[k] = np.asarray(d[k]).tolist()
        return d

    def write_log(self, path: Path) -> None:
        """Write :meth:`log_dict` as JSON (work/build_depth.json), atomically."""
        atomic_write_json(path, json.loads(json.dumps(self.log_dict(), default=_json_default)))


def load_camera_calibration(rig, root: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int], list[str]]:
    """(T_camera_lidar, canonical K, K image size (w, h), warnings) from calibration/<rig>/ (or the rig's nominal values)."""
    from ..calibration.extrinsic import read_extrinsic
    from ..calibration.intrinsics import read_intrinsics

    cal = CalibrationLayout(root, rig.name)
    warnings = []
    if cal.extrinsic_path.is_file():
        T_cl = read_extrinsic(cal.extrinsic_path)
    else:
        T_cl = rig.extrinsic
        warnings.append(f"{cal.extrinsic_path} missing: using the rig's nominal lidar->camera extrinsic")
    if cal.intrinsics_path.is_file():
        intr = read_intrinsics(cal.intrinsics_path)
        K, size = intr.K, (intr.width, intr.height)
    else:
        size = (rig.camera.width_px, rig.camera.height_px)
        K = rig.nominal_K(*size)
        warnings.append(f"{cal.intrinsics_path} missing: using the rig's nominal intrinsics")
    for w in warnings:
        log.warning(w)
    return T_cl, K, size, warnings


def write_ply(path: Path, points: np.ndarray, ranges: np.ndarray | None = None, frames: np.ndarray | None = None) -> None:
    """Binary little-endian PLY (float32 x y z [range] [frame]) written atomically.

    frames: per-point index of the measuring sensor frame (WorldCloud.frame_index), stored as float32 (exact
    below 2**24) so that readers of all-float32 vertices keep working."""
    pts = np.asarray(points, dtype=np.float32)
    cols = [("x", pts[:, 0]), ("y", pts[:, 1]), ("z", pts[:, 2])]
    if ranges is not None:
        cols.append(("range", np.asarray(ranges, dtype=np.float32)))
    if frames is not None:
        cols.append(("frame", np.asarray(frames, dtype=np.float32)))
    rec = np.empty(len(pts), dtype=[(n, "<f4") for n, _ in cols])
    for n, c in cols:
        rec[n] = c
    header = "ply\nformat binary_little_endian 1.0\n" f"element vertex {len(pts)}\n"
    header += "".join(f"property float {n}\n" for n, _ in cols) + "end_header\n"
    with atomic_open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(rec.tobytes())


def read_ply(path: Path) -> dict[str, np.ndarray]:
    """The vertex properties of a PLY that :func:`write_ply` wrote (binary little-endian, all float32), by name.
    Raises :class:`BuildDepthError` naming the file when it is missing, not such a PLY, or cut short."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = []
            while True:
                line = f.readline()
                if not line or len(header) > 64:
                    raise BuildDepthError(f"{path}: not a PLY written by build-depth (no end_header)")
                text = line.decode("ascii", "replace").strip()
                header.append(text)
                if text == "end_header":
                    break
            data = f.read()
    except OSError as e:
        raise BuildDepthError(f"{path}: cannot read the point cloud ({e.strerror or e})") from None
    if header[0] != "ply" or "format binary_little_endian 1.0" not in header:
        raise BuildDepthError(f"{path}: not a binary little-endian PLY written by build-depth")
    count = next((int(h.split()[2]) for h in header if h.startswith("element vertex")), None)
    props = [h.split() for h in header if h.startswith("property")]
    if count is None or not props or any(p[1] != "float" for p in props):
        raise BuildDepthError(f"{path}: build-depth's PLYs hold float32 vertex properties only")
    dtype = np.dtype([(p[2], "<f4") for p in props])
    if len(data) != count * dtype.itemsize:
        raise BuildDepthError(f"{path}: {len(data)} bytes of vertex data, {count} vertices need "
                              f"{count * dtype.itemsize} (file cut short?)")
    rec = np.frombuffer(data, dtype=dtype)
    return {name: rec[name] for name in dtype.names}


def _stage(name: str):
    class _Ctx:
        def __enter__(self):
            self.t = time.perf_counter()
            return self

        def __exit__(self, et, e, tb):
            self.dt = time.perf_counter() - self.t
            if e is not None and not isinstance(e, BuildDepthError):
                raise BuildDepthError(f"build-depth [{name}]: {e}") from e
            return False

    return _Ctx()


def splat_radius(rig, cfg: BuildConfig) -> int:
    """The splat radius (px at the depth map's size): ``cfg.splat_radius_px``, else the rig's."""
    return rig.depth_map.splat_radius_px if cfg.splat_radius_px is None else cfg.splat_radius_px


def lidar_expectations(rig, edge_jump_m: float | None) -> dict:
    """read_lidar / read_static_frame keywords: the rig's lidar (columns, product line) and the mixed-pixel jump."""
    return {"expect_columns": rig.lidar.columns, "expect_prod_line": rig.lidar.model, "edge_jump_m": edge_jump_m}


def frames_with_returns(frames: list) -> list:
    """The frames that hold returns, as aggregate() indexes them (its poses, the clouds' frame indices)."""
    return [f for f in frames if len(f) > 0]


def free_space_rays(frames: list, times: np.ndarray, poses: np.ndarray, agg_cfg: AggregateConfig, sweep) -> SweepRays:
    """Every return of ``frames`` (:func:`frames_with_returns` of ``sweep``, posed by ``poses`` at ``times`` and
    deskewed as ``agg_cfg`` says) as a ray, for the free-space test of the projection."""
    return sweep_rays(frames, times, poses, *frame_motion(times, poses, agg_cfg), sweep.ray_directions,
                      sweep.ray_offsets)


def sensor_origins(poses: np.ndarray, T_world_static: np.ndarray) -> np.ndarray:
    """(F + 1, 3) float32 world positions of the lidar: each sweep frame's (``poses`` (F, 4, 4)), then the static
    frame's, whose points carry frame index F."""
    return np.vstack([poses[:, :3, 3], T_world_static[None, :3, 3]]).astype(np.float32)


def to_camera(points: np.ndarray, T_camera_world: np.ndarray) -> np.ndarray:
    """(N, 3) float32: world ``points`` in the camera frame."""
    R, t = T_camera_world[:3, :3].astype(np.float32), T_camera_world[:3, 3].astype(np.float32)
    return np.asarray(points, dtype=np.float32) @ R.T + t


def build_depth(rig, root: Path, scene: str, mode: str = "fast", progress: StageProgress | None = None,
                config: BuildConfig | None = None) -> BuildSummary:
    """Run every build-depth stage for ``scene`` under ``root``; returns the depth map and K (see module doc).

    rig: a loaded :class:`zedd_capture.rig.Rig`; mode: "fast" (default) or "paper".
    progress(stage, done, total) is called as stages advance. Raises :class:`BuildDepthError`.
    """
    cfg = checked(config or BuildConfig())
    if mode not in ("fast", "paper"):
        raise BuildDepthError(f"build-depth: unknown mode {mode!r} (fast|paper)")
    agg_cfg = AggregateConfig(**{**asdict(cfg.aggregate), "mode": mode})
    layout = SceneLayout(Path(root), scene)
    timings: dict[str, float] = {}
    report = progress or (lambda *a: None)
    W, H = rig.depth_map.width_px, rig.depth_map.height_px
    radius = splat_radius(rig, cfg)

    with _stage("calibration") as st:
        T_cl, K_canon, K_size, warnings = load_camera_calibration(rig, root)
        K = scale_intrinsics(K_canon, K_size, (W, H))
        regions = load_regions(layout.cleanup_path)  # read now: a broken cleanup.yaml fails before the build
    with _stage("read") as st:
        report("read", 0, 2)
        expect = lidar_expectations(rig, cfg.edge_jump_m)
        sweep = read_lidar(layout.lidar_sweep_path, max_frames=cfg.max_frames, min_frames=2, **expect)
        report("read", 1, 2)
        static = read_static_frame(layout.lidar_static_path, **expect)
        report("read", 2, 2)
    timings["read"] = st.dt
    with _stage("aggregate") as st:
        cloud: WorldCloud = aggregate(sweep.frames, agg_cfg, progress=lambda d, n: report("aggregate", d, n))
    timings["aggregate"] = st.dt
    n_frames = len(sweep.frames)
    frames = frames_with_returns(sweep.frames)
    rays = None
    if cfg.free_space_min_rays > 0:  # every return as a ray, for the free-space test of the projection
        with _stage("rays") as st:
            rays = free_space_rays(frames, cloud.times, cloud.poses, agg_cfg, sweep)
        timings["rays"] = st.dt
    del sweep
    with _stage("register") as st:
        report("register", 0, 1)
        rcfg = RegisterConfig(**{**asdict(cfg.register), "candidates": list(cfg.register.candidates) + [np.eye(4)]})
        reg = register_static(static.points, cloud.points, rcfg)
        report("register", 1, 1)
    timings["register"] = st.dt
    if reg.info.get("rival"):
        rival = reg.info["rival"]
        warnings.append(f"static registration is ambiguous: a pose {rival['offset_m']:.2f} m, {rival['angle_deg']:.0f} deg "
                        f"from the chosen one fits almost as well (coarse fitness {rival['fitness']:.3f}); check "
                        "overlay.jpg (a symmetric room? start the sweep at the tripod)")
        log.warning(warnings[-1])
    T_world_static = reg.T_world_static
    T_camera_world = T_cl @ invert(T_world_static)
    # sensor position of each point: its frame's pose translation (estimated trajectory); the static
    # frame's points get index F, the static lidar's position
    origins_w = sensor_origins(cloud.poses, T_world_static)
    view = None
    if mode == "fast" and cfg.view_cloud:
        with _stage("view") as st:
            report("view", 0, 1)
            select = in_view(T_camera_world, K, W, H, cfg.view_margin_frac)
            view = view_cloud(frames, cloud, select, agg_cfg)
            report("view", 1, 1)
        timings["view"] = st.dt
    del frames
    if cfg.include_static:
        # the tripod frame sees exactly what the camera sees: add it to the world cloud (and the view's)
        _add_static_frame(cloud, static, T_world_static, agg_cfg.min_range_m)
        if view is not None:
            _add_static_frame(view, static, T_world_static, agg_cfg.min_range_m, select)
    with _stage("cleanup") as st:
        keep, removed = cleanup_mask(cloud.points, regions, T_camera_world, K, (W, H), invert(T_world_static))
        if regions:
            cloud.select(keep)
            if view is not None:
                view.select(cleanup_mask(view.points, regions, T_camera_world, K, (W, H), invert(T_world_static))[0])
        projected = cloud if view is None else view
        points, frames = projected.points, projected.frame_index
        if view is not None:
            view.stats["points"] = len(view.points)  # with the static frame's, after cleanup: what is projected
    timings["cleanup"] = st.dt
    with _stage("project") as st:
        depth, project_stats = project_depth(to_camera(points, T_camera_world), to_camera(origins_w, T_camera_world),
                                             frames, K, W, H, radius,
                                             cfg, progress=lambda d, n: report("project", d, n), rays=rays,
                                             T_world_camera=invert(T_camera_world))
        del rays
    timings["project"] = st.dt
    summary = BuildSummary(
        scene=scene,
        mode=mode,
        depth=depth,
        K=K,
        frames=n_frames,
        points=int(len(cloud.points)),  # the world cloud (world_cloud.ply); the projected view cloud: stats["view"]
        fitness=reg.fitness,
        rmse_m=reg.rmse_m,
        coverage=float((depth > 0).mean()),
        timings_s=timings,
        T_camera_world=T_camera_world,
        T_world_static=T_world_static,
        warnings=warnings,
        # every setting of the build (not a hand-picked few), so that build_depth.json records how the map was made
        stats={"aggregate": cloud.stats, "view": None if view is None else view.stats, "cleanup_removed": removed,
               "register": {"ransac_fitness": reg.ransac_fitness, **reg.info}, "splat_radius_px": radius, **project_stats,
               "config": {**asdict(cfg), "splat_radius_px": radius}},
    )
    with _stage("write") as st:
        report("write", 0, 1)
        write_tum(layout.trajectory_path, cloud.times, cloud.poses,
                  header=f"build-depth ({mode}) T_world_lidar per sweep frame at its mid-frame time (s); world = first sweep frame")
        if cfg.write_cloud:
            write_ply(layout.world_cloud_path, cloud.points, cloud.ranges, cloud.frame_index)
            if view is not None:
                write_ply(layout.view_cloud_path, view.points, view.ranges, view.frame_index)
        timings["write"] = time.perf_counter() - st.t
        summary.write_log(layout.build_log_path)
        report("write", 1, 1)
    return summary


def project_depth(points_cam: np.ndarray, sensor_positions_cam: np.ndarray, frame_index: np.ndarray | None,
                  K: np.ndarray, width: int, height: int, splat_radius_px: int, cfg: BuildConfig,
                  progress: Callable[[int, int], None] | None = None, rays: SweepRays | None = None,
                  T_world_camera: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """(depth (height, width) float32 m, 0 = invalid; stats): the camera-frame cloud ``points_cam`` (N, 3) z-buffer
    projected with intrinsics ``K`` at the working size (``cfg.projection_width_px``), its points near depth edges
    snapped and the others slid along their sensor rays onto the surface (``cfg.edge_snap_*``, ``cfg.slide_*``;
    needs ``frame_index`` (N,) into ``sensor_positions_cam`` (F, 3)) and projected again, the near surface's points
    dropped from the edge pixels it covers less than ``cfg.edge_coverage_ratio`` of, and those of near speckles (``cfg.speckle_max_px``), and projected a third time; with the sweep's ``rays``
    (free_space.SweepRays, world frame; camera pose ``T_world_camera``) the near-side edge pixels that
    ``cfg.free_space_min_rays`` rays went through show the surface behind (``cfg.free_space_rounds`` times); then
    read at (width, height)
    (planes.upsample_depth); edge bands (``cfg.edge_band_width_px`` wide) zeroed if ``cfg.mask_edge_band``."""
    report = progress or (lambda *a: None)
    if rays is not None and T_world_camera is None:
        raise ValueError("project_depth: the free-space test needs the camera pose (T_world_camera)")
    factor = working_factor(width, height, cfg.projection_width_px)
    Ww, Hw = width // factor, height // factor
    # the splat radius in working pixels: rounded up, and at least 2 (the sim rig's, where the fill was tuned at
    # 456 x 304) unless the rig asks for less. Twin, kitchen01 at 1824 x 1216 (r = 3): working radius 1 left
    # holes of 6.3 px, 2 leaves 2.8 px
    radius_w = max(-(-splat_radius_px // factor), min(splat_radius_px, 2))
    K_w = scale_intrinsics(K, (width, height), (Ww, Hw))
    report(0, 2)
    pc = np.asarray(points_cam, dtype=np.float32)
    zcfg = cfg.zbuffer_config()
    depth = zbuffer(pc, K_w, Ww, Hw, radius_w, zcfg, _view_weights(pc, sensor_positions_cam, frame_index, cfg))
    snapped = dropped = slid = partial = speckle_px = speckle_points = carved_px = 0
    if cfg.edge_snap_radius_px > 0 and frame_index is not None:
        report(1, 2)
        snapped_pc, keep = snap_edge_points(pc, sensor_positions_cam, frame_index, depth, K_w,
                                            zone_px=cfg.edge_snap_zone_px, radius_px=cfg.edge_snap_radius_px,
                                            max_move_m=cfg.edge_snap_max_m, jump_rel=cfg.edge_band_jump_rel,
                                            land_px=cfg.edge_snap_land_px)
        snapped = int(np.count_nonzero(np.any(snapped_pc != pc, axis=1)))
        if cfg.slide_max_m > 0:
            slid_pc = slide_along_rays(snapped_pc, sensor_positions_cam, frame_index, depth, K_w,
                                       zone_px=cfg.slide_zone_px, max_move_m=cfg.slide_max_m,
                                       jump_rel=cfg.edge_band_jump_rel)
            slid = int(np.count_nonzero(np.any(slid_pc != snapped_pc, axis=1)))
            snapped_pc = slid_pc
        dropped = int(len(pc) - np.count_nonzero(keep))
        pc, kept_frames = snapped_pc[keep], frame_index[keep]
        del snapped_pc, keep
        weights = _view_weights(pc, sensor_positions_cam, kept_frames, cfg)
        second = zbuffer(pc, K_w, Ww, Hw, radius_w, zcfg, weights)
        depth = np.where(second > 0, second, depth)  # a pixel whose points were all dropped keeps its first value
        drop = np.zeros(len(pc), bool)
        if cfg.edge_coverage_ratio > 0:
            drop = partial_edge_points(pc, weights, depth, K_w, ratio=cfg.edge_coverage_ratio,
                                       jump_rel=cfg.edge_band_jump_rel)
            partial = int(np.count_nonzero(drop))
        if cfg.speckle_max_px > 0:
            speckle_drop, speckle_px = near_speckle_points(pc, depth, K_w, max_size_px=cfg.speckle_max_px)
            speckle_points = int(np.count_nonzero(speckle_drop & ~drop))
            drop |= speckle_drop
            del speckle_drop
        if drop.any():
            keep = ~drop
            third = zbuffer(pc[keep], K_w, Ww, Hw, radius_w, zcfg, None if weights is None else weights[keep])
            depth = np.where(third > 0, third, depth)
            del third, keep
        del drop
        del second, weights
    del pc
    if rays is not None and cfg.free_space_min_rays > 0:
        for _ in range(cfg.free_space_rounds):
            counts = free_space_violations(depth, K_w, T_world_camera, near_edge_pixels(depth, cfg.edge_band_jump_rel),
                                           rays, eps_px=cfg.free_space_eps_px, eps_out_px=cfg.free_space_eps_out_px,
                                           jump_rel=cfg.edge_band_jump_rel)
            # where the far side is more than twice as far, a wrong carve costs more than 100 % relative error
            # and a right one gains less: ask for more rays there
            deep = near_edge_pixels(depth, 1.0)
            carved = counts >= np.where(deep, cfg.free_space_deep_min_rays, cfg.free_space_min_rays)
            if not carved.any():
                break
            carved_px += int(carved.sum())
            depth = np.where(carved, far_side_depth(depth, cfg.edge_band_jump_rel), depth)
    depth = upsample_depth(depth, K_w, factor, K)
    band = depth_edge_band(depth, cfg.edge_band_jump_rel)
    if cfg.mask_edge_band:
        wide = binary_dilation(band, np.ones((3, 3), bool), iterations=cfg.edge_band_width_px - 1) \
            if cfg.edge_band_width_px > 1 else band
        depth = np.where(wide, np.float32(0), depth)
    report(2, 2)
    return depth, {"projection_size": [Ww, Hw], "projection_splat_radius_px": radius_w,
                   "edge_band_fraction": float(band.mean()),
                   "edge_snap": {"radius_px": cfg.edge_snap_radius_px, "zone_px": cfg.edge_snap_zone_px,
                                 "max_m": cfg.edge_snap_max_m, "snapped": snapped, "dropped": dropped},
                   "slide": {"max_m": cfg.slide_max_m, "zone_px": cfg.slide_zone_px, "moved": slid},
                   "edge_coverage": {"ratio": cfg.edge_coverage_ratio, "dropped": partial},
                   "speckles": {"max_px": cfg.speckle_max_px, "pixels": speckle_px, "dropped": speckle_points},
                   "free_space": {"min_rays": cfg.free_space_min_rays, "carved_pixels": carved_px}}


def in_view(T_camera_world: np.ndarray, K: np.ndarray, width: int, height: int,
            margin_frac: float = 0.1) -> Callable[[np.ndarray], np.ndarray]:
    """A function world points (N, 3) -> (N,) bool: in front of the camera (``T_camera_world``, intrinsics ``K``)
    and inside its ``width`` x ``height`` px image widened by ``margin_frac`` of its size on each side."""
    mu, mv = margin_frac * width, margin_frac * height
    Kw = np.array(K, dtype=np.float64)
    Kw[0, 2] += mu
    Kw[1, 2] += mv
    Ww, Hw = int(np.ceil(width + 2 * mu)), int(np.ceil(height + 2 * mv))
    def select(world_points: np.ndarray) -> np.ndarray:
        inside = np.zeros(len(world_points), bool)
        inside[project_points(to_camera(world_points, T_camera_world), Kw, Ww, Hw, index=True)[-1]] = True
        return inside

    return select


def view_cloud(frames: list, cloud: WorldCloud, select: Callable[[np.ndarray], np.ndarray],
               cfg: AggregateConfig) -> WorldCloud:
    """The points of every frame (world frame, deskewed with ``cloud``'s poses, :func:`aggregate.accumulate`) that
    ``select`` keeps (:func:`in_view`), density-filtered like the world cloud."""
    t0 = time.perf_counter()
    points, ranges, frame_index = accumulate(frames, cloud.times, cloud.poses, cfg, select=select)
    t_acc = time.perf_counter() - t0
    points, ranges, frame_index, removed = density_filtered(points, ranges, frame_index, cfg)
    return WorldCloud(points=points, ranges=ranges, poses=cloud.poses, times=cloud.times, frame_index=frame_index,
                      stats={"points": len(points), "density_removed": removed,
                             "seconds_accumulate": t_acc, "seconds": time.perf_counter() - t0})


def _add_static_frame(cloud: WorldCloud, static, T_world_static: np.ndarray, min_range_m: float,
                      select: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
    """Append the static frame's returns beyond ``min_range_m`` (moved into the world; those ``select`` keeps) to
    ``cloud``, with frame index len(cloud.poses) (the static lidar's position follows the sweep's in the sensor
    origins)."""
    Ts = T_world_static.astype(np.float32)
    near = static.ranges > min_range_m
    points, ranges = static.points[near] @ Ts[:3, :3].T + Ts[:3, 3], static.ranges[near]
    if select is not None:
        inside = select(points)
        points, ranges = points[inside], ranges[inside]
    cloud.points = np.concatenate([cloud.points, points])
    cloud.ranges = np.concatenate([cloud.ranges, ranges])
    if cloud.frame_index is not None:
        fdt = frame_index_dtype(len(cloud.poses) + 1)
        cloud.frame_index = np.concatenate([cloud.frame_index.astype(fdt, copy=False),
                                            np.full(len(points), len(cloud.poses), dtype=fdt)])


def working_factor(width: int, height: int, working_width: int | None) -> int:
    """The integer the depth map's (width, height) is divided by for the projection: about width /
    working_width, lowered until it divides both; 1 when working_width is None or not smaller."""
    if working_width is None or width <= working_width:
        return 1
    f = max(1, round(width / working_width))
    while f > 1 and (width % f or height % f):
        f -= 1
    return f


def _view_weights(pc: np.ndarray, origins_c: np.ndarray, frames: np.ndarray | None, cfg: BuildConfig) -> np.ndarray | None:
    """project.view_weights of every point (camera frame) from its frame's sensor position, or None (off / no
    frame index)."""
    if cfg.view_weight_power is None or frames is None:
        return None
    weights = np.empty(len(pc), dtype=np.float32)
    for a in range(0, len(pc), 1 << 21):  # chunks: no (N, 3) origins array
        b = a + (1 << 21)
        weights[a:b] = view_weights(pc[a:b], origins_c[frames[a:b]], cfg.view_weight_power, cfg.view_weight_floor)
    return weights


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)
