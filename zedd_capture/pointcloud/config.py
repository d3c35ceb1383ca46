"""Settings of ``zedd build-depth``: :class:`BuildConfig` (every stage's, with the measurements behind the defaults),
``--set name=value`` overrides (:func:`with_settings`) and the checks that reject a bad setting before anything is
read (:func:`checked`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, replace

import numpy as np

from .aggregate import AggregateConfig
from .project import ZbufferConfig
from .register import RegisterConfig


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
