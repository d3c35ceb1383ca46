"""Declarative cleanup regions: the paper's manual clean-up recorded as data (work/cleanup.yaml)
and re-applied on every rebuild.

Regions are defined in frames that are stable across rebuilds (the camera frame or the static
tripod lidar frame), so cleanup runs after the static frame is registered. YAML::

    regions:
      - name: passer-by
        type: polygon            # a polygon in the canonical camera image plus a depth range
        image_size: [456, 304]   # (w, h) the polygon's pixel coordinates refer to
        polygon: [[10, 20], [200, 20], [200, 300], [10, 300]]
        depth_m: [0.5, 2.0]      # camera z range removed inside the polygon
      - name: tripod-legs
        type: box                # an axis-aligned 3-D box
        frame: lidar             # camera (default) | lidar (the static tripod lidar frame)
        min: [-0.5, -0.5, -2.0]
        max: [0.5, 0.5, -0.3]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import yaml


class CleanupError(ValueError):
    """A cleanup file or region is invalid; the message names the file and region."""


@dataclass(frozen=True)
class PolygonRegion:
    name: str
    polygon: np.ndarray  # (P, 2) px
    image_size: tuple[int, int]  # (w, h)
    depth_m: tuple[float, float]


@dataclass(frozen=True)
class BoxRegion:
    name: str
    lo: np.ndarray
    hi: np.ndarray
    frame: Literal["camera", "lidar"] = "camera"


Region = PolygonRegion | BoxRegion


def parse_regions(data, source: str = "cleanup.yaml") -> list[Region]:
    """Regions from parsed YAML (a mapping with ``regions:`` list, or the list itself)."""
    if data is None:
        return []
    items = data.get("regions", []) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise CleanupError(f"{source}: 'regions' must be a list")
    out: list[Region] = []
    for i, r in enumerate(items):
        where = f"{source}: regions[{i}]"
        if not isinstance(r, dict):
            raise CleanupError(f"{where}: must be a mapping")
        name = str(r.get("name", f"region{i}"))
        kind = r.get("type")
        try:
            if kind == "polygon":
                poly = np.asarray(r["polygon"], dtype=np.float64)
                if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
                    raise CleanupError(f"{where} ({name}): polygon needs >= 3 [u, v] points")
                w, h = (int(v) for v in r["image_size"])
                d0, d1 = (float(v) for v in r.get("depth_m", [0.0, np.inf]))
                if not d1 > d0:
                    raise CleanupError(f"{where} ({name}): depth_m must be [near, far] with far > near")
                out.append(PolygonRegion(name, poly, (w, h), (d0, d1)))
            elif kind == "box":
                lo = np.asarray(r["min"], dtype=np.float64)
                hi = np.asarray(r["max"], dtype=np.float64)
                if lo.shape != (3,) or hi.shape != (3,) or np.any(hi <= lo):
                    raise CleanupError(f"{where} ({name}): box needs min/max [x, y, z] with max > min")
                frame = r.get("frame", "camera")
                if frame not in ("camera", "lidar"):
                    raise CleanupError(f"{where} ({name}): frame must be camera or lidar, got {frame!r}")
                out.append(BoxRegion(name, lo, hi, frame))
            else:
                raise CleanupError(f"{where} ({name}): type must be polygon or box, got {kind!r}")
        except KeyError as e:
            raise CleanupError(f"{where} ({name}): missing field {e}") from None
        except (TypeError, ValueError) as e:
            if isinstance(e, CleanupError):
                raise
            raise CleanupError(f"{where} ({name}): {e}") from None
    return out


def load_regions(path: Path) -> list[Region]:
    """Regions of a cleanup YAML; a missing file means no regions."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CleanupError(f"{path}: not valid YAML: {e}") from None
    return parse_regions(data, str(path))


def cleanup_mask(
    points_world: np.ndarray,
    regions: list[Region],
    T_camera_world: np.ndarray,
    K: np.ndarray,
    K_size: tuple[int, int],
    T_lidar_world: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Keep-mask (N,) of world points outside every region, and removed counts per region.

    T_camera_world: 4x4 world -> camera; K: intrinsics at image size ``K_size`` (w, h); polygons
    given at another ``image_size`` are scaled to it. T_lidar_world: world -> static lidar frame.
    """
    from ..geometry import scale_intrinsics

    keep = np.ones(len(points_world), dtype=bool)
    removed: dict[str, int] = {}
    if not regions:
        return keep, removed
    pw = np.asarray(points_world, dtype=np.float32)
    pc = pw @ T_camera_world[:3, :3].T.astype(np.float32) + T_camera_world[:3, 3].astype(np.float32)
    pl = None
    for reg in regions:
        if isinstance(reg, BoxRegion):
            if reg.frame == "lidar":
                if T_lidar_world is None:
                    raise CleanupError(f"cleanup region {reg.name}: lidar frame not available")
                if pl is None:
                    pl = pw @ T_lidar_world[:3, :3].T.astype(np.float32) + T_lidar_world[:3, 3].astype(np.float32)
                p = pl
            else:
                p = pc
            inside = np.all((p >= reg.lo) & (p <= reg.hi), axis=1)
        else:
            w, h = reg.image_size
            Kr = scale_intrinsics(K, K_size, (w, h))
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [np.round(reg.polygon).astype(np.int32)], 1)
            z = pc[:, 2]
            cand = np.flatnonzero((z >= reg.depth_m[0]) & (z <= reg.depth_m[1]) & (z > 1e-6))
            u = np.rint(pc[cand, 0] / z[cand] * Kr[0, 0] + Kr[0, 2]).astype(np.int64)
            v = np.rint(pc[cand, 1] / z[cand] * Kr[1, 1] + Kr[1, 2]).astype(np.int64)
            ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
            hit = np.zeros(len(cand), bool)
            hit[ok] = mask[v[ok], u[ok]] > 0
            inside = np.zeros(len(pw), bool)
            inside[cand[hit]] = True
        removed[reg.name] = int((inside & keep).sum())
        keep &= ~inside
    return keep, removed
