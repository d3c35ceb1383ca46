"""Procedural 3-D scenes of the twin, shared by the camera and the lidar (one open3d RaycastingScene).

``build_scene("kitchen01")`` = template ``kitchen`` with seed 1 (deterministic, cached). World frame:
metres, z up, floor at z = 0; the tripod camera stands near the origin looking roughly along +x.
Every geometry (one open3d mesh, one geometry id in the RaycastingScene) carries a material flag
(0 diffuse, 1 reflective, 2 transparent) and a procedural texture (see textures.py).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import open3d as o3d

from ..layout import parse_scene_name
from .textures import Texture

DIFFUSE, REFLECTIVE, TRANSPARENT = 0, 1, 2
MISS_ID = -1
TEMPLATES = ("kitchen", "office", "hallway", "classroom", "garden")
SKY_RGB = np.array([0.70, 0.80, 0.95], dtype=np.float32)


@dataclass
class RayHits:
    """Ray-cast result. ``t`` in units of the direction length (inf = miss), ``geometry_id`` -1 = miss,
    ``normal`` unit face normal (as meshed, not flipped towards the ray), ``point`` = o + t d."""

    t: np.ndarray
    geometry_id: np.ndarray
    normal: np.ndarray
    point: np.ndarray

    @property
    def hit(self) -> np.ndarray:
        return self.geometry_id >= 0


@dataclass
class Part:
    name: str
    mesh: o3d.geometry.TriangleMesh
    material: int
    texture: Texture


@dataclass
class SimScene:
    name: str
    template: str
    seed: int
    parts: list[Part]
    tripod_camera_pose: np.ndarray  # 4x4 T_world_camera (OpenCV camera axes)
    light_dir: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.4, 0.87]))
    sky: bool = False
    board: tuple | None = None  # (CharucoTarget, T_world_board) when a board was added
    raycasting: o3d.t.geometry.RaycastingScene = field(init=False, repr=False)

    def __post_init__(self):
        self.raycasting = o3d.t.geometry.RaycastingScene()
        for i, p in enumerate(self.parts):
            gid = self.raycasting.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(p.mesh))
            if gid != i:
                raise RuntimeError(f"scene {self.name}: geometry id {gid} != part index {i}")
        self._materials = np.array([p.material for p in self.parts] + [MISS_ID], dtype=np.int8)

    # --- queries ---------------------------------------------------------------------------
    def cast(self, origins: np.ndarray, directions: np.ndarray) -> RayHits:
        """Cast rays (N, 3) + (N, 3) (world frame); vectorised open3d ray casting."""
        o = np.asarray(origins, dtype=np.float32).reshape(-1, 3)
        d = np.asarray(directions, dtype=np.float32).reshape(-1, 3)
        o, d = np.broadcast_arrays(o, d)
        rays = o3d.core.Tensor(np.ascontiguousarray(np.concatenate([o, d], axis=1)))
        ans = self.raycasting.cast_rays(rays)
        t = ans["t_hit"].numpy()
        gid = ans["geometry_ids"].numpy().astype(np.int64)
        miss = ~np.isfinite(t)
        gid[miss] = MISS_ID
        n = ans["primitive_normals"].numpy()
        pts = o + np.where(miss, 0.0, t)[:, None] * d
        pts[miss] = np.nan
        return RayHits(t=t, geometry_id=gid, normal=n, point=pts)

    def material_of(self, geometry_ids) -> np.ndarray:
        """Material flag per geometry id: 0 diffuse, 1 reflective, 2 transparent, -1 for a miss."""
        g = np.asarray(geometry_ids, dtype=np.int64)
        return self._materials[np.where(g < 0, len(self.parts), g)]

    def part_names(self, geometry_ids) -> list[str]:
        return [self.parts[int(g)].name if g >= 0 else "<miss>" for g in np.ravel(geometry_ids)]

    def albedo_at(self, geometry_ids, points_world, normals, ray_dirs=None, footprint_m=None) -> np.ndarray:
        """(N, 3) albedo in [0, 1]: deterministic function of position and geometry id.

        ``ray_dirs`` (N, 3) and ``footprint_m`` (N,) (pixel size at the hit, m) band-limit the texture
        to the pixel footprint (camera renders); without them the unfiltered texture is returned.
        Misses (id -1) get the sky colour (0 indoors).
        """
        g = np.asarray(geometry_ids, dtype=np.int64).ravel()
        P = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
        Nn = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
        out = np.zeros((len(g), 3), dtype=np.float32)
        if self.sky:
            out[g < 0] = SKY_RGB
        order = np.argsort(g, kind="stable")
        gs = g[order]
        starts = np.flatnonzero(np.r_[True, gs[1:] != gs[:-1]])
        ends = np.r_[starts[1:], len(gs)]
        for s, e in zip(starts, ends):
            gid = gs[s]
            if gid < 0:
                continue
            idx = order[s:e]
            rd = None if ray_dirs is None else np.asarray(ray_dirs, dtype=np.float64).reshape(-1, 3)[idx]
            fp = None if footprint_m is None else np.asarray(footprint_m, dtype=np.float64).ravel()[idx]
            out[idx] = self.parts[gid].texture.albedo(P[idx], Nn[idx], rd, fp)
        return out

    # --- editing ---------------------------------------------------------------------------
    def with_parts(self, extra: list[Part], name: str | None = None) -> "SimScene":
        """A new scene with extra parts appended (existing geometry ids unchanged)."""
        return SimScene(name or self.name, self.template, self.seed, self.parts + list(extra),
                        self.tripod_camera_pose.copy(), self.light_dir.copy(), self.sky, self.board)

    def with_board(self, board, T_world_board: np.ndarray) -> "SimScene":
        """A new scene with the ChArUco ``board`` (board.CharucoTarget) placed at ``T_world_board``.

        The printed face is the board's z = 0 plane (board frame: x right, y down; it faces -z),
        backed by a 1 cm grey panel behind it (+z).
        """
        T = np.asarray(T_world_board, dtype=float)
        m = board.margin_m
        W, H = board.width_m, board.height_m
        corners_b = np.array([[-m, -m, 0], [W + m, -m, 0], [W + m, H + m, 0], [-m, H + m, 0]])
        corners_w = corners_b @ T[:3, :3].T + T[:3, 3]
        face = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(corners_w),
                                         o3d.utility.Vector3iVector(np.array([[0, 2, 1], [0, 3, 2]])))
        ppm = 2000.0 if max(W, H) < 2.0 else 1000.0
        tex = Texture(kind="board", board_image=board.texture(ppm), px_per_m=ppm,
                      T_board_world=np.linalg.inv(T), margin_m=m, seed=0)
        back = _box_mesh_local(np.array([W + 2 * m, H + 2 * m, 0.01]))
        back.translate((-m, -m, 0.0005))
        back.transform(T)
        parts = [Part("board", face, DIFFUSE, tex),
                 Part("board_backing", back, DIFFUSE, Texture(kind="constant", base_rgb=(0.35, 0.35, 0.35)))]
        s = self.with_parts(parts, name=self.name)
        s.board = (board, T.copy())
        return s


# --- mesh helpers ------------------------------------------------------------------------
def _box_mesh_local(size) -> o3d.geometry.TriangleMesh:
    return o3d.geometry.TriangleMesh.create_box(float(size[0]), float(size[1]), float(size[2]))


def _rotz(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def box(center, size, yaw: float = 0.0) -> o3d.geometry.TriangleMesh:
    """Axis-aligned box of ``size`` (x, y, z) m centred at ``center``, rotated by ``yaw`` about z."""
    m = _box_mesh_local(size)
    m.translate(-np.asarray(size, dtype=float) / 2)
    m.rotate(_rotz(yaw), center=(0, 0, 0))
    m.translate(np.asarray(center, dtype=float))
    return m


def cylinder(base, radius: float, height: float, resolution: int = 12) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_cylinder(radius, height, resolution=resolution, split=1)
    m.translate(np.asarray(base, dtype=float) + [0, 0, height / 2])
    return m


def ellipsoid(center, radii, resolution: int = 10) -> o3d.geometry.TriangleMesh:
    m = o3d.geometry.TriangleMesh.create_sphere(1.0, resolution=resolution)
    v = np.asarray(m.vertices) * np.asarray(radii, dtype=float)
    m.vertices = o3d.utility.Vector3dVector(v + np.asarray(center, dtype=float))
    return m


def merge(meshes) -> o3d.geometry.TriangleMesh:
    out = o3d.geometry.TriangleMesh()
    for m in meshes:
        out += m
    return out


def camera_pose(position, yaw: float, pitch: float) -> np.ndarray:
    """T_world_camera for a camera at ``position`` looking along yaw (about z from +x) and pitch (up +)."""
    f = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    r = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    d = np.cross(f, r)
    T = np.eye(4)
    T[:3, :3] = np.stack([r, d, f], axis=1)
    T[:3, 3] = position
    return T


# --- procedural builder -------------------------------------------------------------------
class _Builder:
    def __init__(self, seed: int, template: str):
        self.rng = np.random.default_rng([zlib.crc32(template.encode()), seed])
        self.parts: list[Part] = []
        self._tex_seed = zlib.crc32(f"{template}{seed}".encode())

    def add(self, name: str, mesh, rgb, contrast: float = 0.4, material: int = DIFFUSE, jitter: float = 0.08):
        rgb = np.clip(np.asarray(rgb, dtype=float) * (1 + jitter * self.rng.normal(size=3)), 0.03, 0.95)
        tex = Texture(kind="noise", base_rgb=tuple(rgb), contrast=contrast, seed=self._tex_seed + len(self.parts))
        mesh.compute_triangle_normals()
        self.parts.append(Part(name, mesh, material, tex))

    def u(self, a, b):
        return float(self.rng.uniform(a, b))


_WOOD = (0.55, 0.38, 0.22)
_METAL = (0.6, 0.6, 0.62)
_WALLS = [(0.80, 0.78, 0.72), (0.70, 0.75, 0.80), (0.82, 0.74, 0.66), (0.72, 0.80, 0.70)]


def _room(b: _Builder, L: float, W: float, H: float, y0: float, back: float = -1.5, far_opening: float = 0.0):
    """Floor, ceiling and four walls (0.1 m thick boxes outside the room). far_opening>0: a doorway of
    that width in the far wall leading to a corridor reaching ~15 m."""
    t = 0.1
    wall = _WALLS[int(b.rng.integers(len(_WALLS)))]
    xc = (L + back) / 2
    span = L - back
    b.add("floor", box((xc, y0, -t / 2), (span, W, t)), (0.45, 0.40, 0.35), 0.5)
    b.add("ceiling", box((xc, y0, H + t / 2), (span, W, t)), (0.85, 0.85, 0.85), 0.25)
    b.add("wall_left", box((xc, y0 + W / 2 + t / 2, H / 2), (span, t, H)), wall, 0.35)
    b.add("wall_right", box((xc, y0 - W / 2 - t / 2, H / 2), (span, t, H)), wall, 0.35)
    b.add("wall_back", box((back - t / 2, y0, H / 2), (t, W, H)), wall, 0.35)
    if far_opening <= 0:
        b.add("wall_far", box((L + t / 2, y0, H / 2), (t, W, H)), wall, 0.35)
        return
    yo = y0 + b.u(-0.2, 0.2) * W
    wl = (y0 + W / 2) - (yo + far_opening / 2)
    wr = (yo - far_opening / 2) - (y0 - W / 2)
    b.add("wall_far_l", box((L + t / 2, yo + far_opening / 2 + wl / 2, H / 2), (t, wl, H)), wall, 0.35)
    b.add("wall_far_r", box((L + t / 2, yo - far_opening / 2 - wr / 2, H / 2), (t, wr, H)), wall, 0.35)
    b.add("lintel", box((L + t / 2, yo, H - 0.25), (t, far_opening, 0.5)), wall, 0.35)
    L2 = 15.0
    cw = far_opening + 0.6
    b.add("corridor_floor", box(((L + L2) / 2, yo, -t / 2), (L2 - L, cw, t)), (0.4, 0.4, 0.42), 0.5)
    b.add("corridor_end", box((L2 + t / 2, yo, H / 2), (t, cw, H)), _WALLS[0], 0.5)
    b.add("corridor_l", box(((L + L2) / 2, yo + cw / 2 + t / 2, H / 2), (L2 - L, t, H)), wall, 0.4)
    b.add("corridor_r", box(((L + L2) / 2, yo - cw / 2 - t / 2, H / 2), (L2 - L, t, H)), wall, 0.4)
    b.add("corridor_ceiling", box(((L + L2) / 2, yo, H + t / 2), (L2 - L, cw, t)), (0.85, 0.85, 0.85), 0.3)


def _table(b: _Builder, x, y, yaw, w=1.2, d=0.8, h=0.75, name="table"):
    R = _rotz(yaw)
    parts = [box((x, y, h - 0.02), (w, d, 0.04), yaw)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            o = R @ np.array([sx * (w / 2 - 0.05), sy * (d / 2 - 0.05), 0])
            parts.append(box((x + o[0], y + o[1], (h - 0.04) / 2), (0.04, 0.04, h - 0.04)))
    b.add(name, merge(parts), _WOOD, 0.45)


def _chair(b: _Builder, x, y, yaw, name="chair"):
    R = _rotz(yaw)
    s, hs = 0.44, 0.46
    parts = [box((x, y, hs), (s, s, 0.03), yaw)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            o = R @ np.array([sx * (s / 2 - 0.02), sy * (s / 2 - 0.02), 0])
            parts.append(box((x + o[0], y + o[1], hs / 2), (0.022, 0.022, hs)))  # thin legs
    o = R @ np.array([-s / 2 + 0.015, 0, 0])
    parts.append(box((x + o[0], y + o[1], hs + 0.25), (0.03, s, 0.4), yaw))
    col = [_WOOD, (0.2, 0.25, 0.5), (0.6, 0.15, 0.12), _METAL][int(b.rng.integers(4))]
    b.add(name, merge(parts), col, 0.4, REFLECTIVE if col == _METAL else DIFFUSE)


def _shelf(b: _Builder, x, y, yaw, w=1.0, d=0.35, h=1.9, n=5, name="shelf"):
    R = _rotz(yaw)
    parts = []
    for sy in (-1, 1):
        o = R @ np.array([0, sy * (w / 2 - 0.01), 0])
        parts.append(box((x + o[0], y + o[1], h / 2), (d, 0.02, h), yaw))
    for i in range(n):
        parts.append(box((x, y, 0.05 + i * (h - 0.1) / (n - 1)), (d, w, 0.02), yaw))
    b.add(name, merge(parts), _WOOD, 0.45)
    for i in range(n - 1):  # boxes and books on the boards
        zb = 0.06 + i * (h - 0.1) / (n - 1)
        for _ in range(int(b.rng.integers(1, 4))):
            bw, bh = b.u(0.08, 0.3), b.u(0.1, (h - 0.1) / (n - 1) - 0.05)
            o = R @ np.array([0, b.u(-w / 2 + bw, w / 2 - bw), 0])
            b.add(f"{name}_item", box((x + o[0], y + o[1], zb + bh / 2), (d * 0.8, bw, bh), yaw),
                  b.rng.uniform(0.15, 0.85, 3), 0.6, jitter=0)


def _poster(b: _Builder, wall_x=None, wall_y=None, along=0.0, z=1.6, w=0.6, h=0.8, facing=1):
    """A thin poster 1 cm proud of a wall (wall_x: wall plane x, facing -x; wall_y: plane y)."""
    if wall_x is not None:
        m = box((wall_x - facing * 0.006, along, z), (0.01, w, h))
    else:
        m = box((along, wall_y - facing * 0.006, z), (w, 0.01, h))
    b.add("poster", m, b.rng.uniform(0.2, 0.9, 3), 0.9, jitter=0)


def _plant(b: _Builder, x, y, h=1.3, crown=0.25, name="plant"):
    b.add(f"{name}_pot", cylinder((x, y, 0), 0.12, 0.3), (0.55, 0.3, 0.2), 0.3)
    b.add(f"{name}_stem", cylinder((x, y, 0.3), 0.012, h - 0.3, 8), (0.3, 0.35, 0.15), 0.4)
    b.add(f"{name}_leaves", ellipsoid((x, y, h), (crown, crown, crown * 1.3)), (0.2, 0.5, 0.15), 0.7)


def _near_object(b: _Builder, cam_pos, yaw):
    """Something 0.3-0.6 m from the camera at the edge of the view (a plant stand / pole)."""
    dist = b.u(0.35, 0.55)
    side = 1 if b.rng.random() < 0.5 else -1
    ang = yaw + side * np.radians(b.u(11, 16))  # inside the 19.7 deg half field of view
    x, y = cam_pos[0] + dist * np.cos(ang), cam_pos[1] + dist * np.sin(ang)
    b.add("near_pole", cylinder((x, y, 0), 0.018, cam_pos[2] + 0.5, 10), (0.35, 0.3, 0.25), 0.6)
    b.add("near_leaves", ellipsoid((x, y, cam_pos[2] - b.u(0.08, 0.15)), (0.025, 0.025, 0.04), 8), (0.25, 0.5, 0.2), 0.8)


def _scatter_furniture(b, L, W, y0, n_tables, n_shelves, n_boxes, n_posters, H, x_min=1.4):
    for i in range(n_tables):
        x, y = b.u(x_min + 0.6, L - 1.0), y0 + b.u(-W / 2 + 0.8, W / 2 - 0.8)
        yaw = b.u(-0.3, 0.3) + (np.pi / 2 if b.rng.random() < 0.3 else 0)
        _table(b, x, y, yaw, w=b.u(0.9, 1.6), d=b.u(0.6, 0.9))
        for k in range(int(b.rng.integers(1, 4))):
            a = yaw + k * np.pi / 2 + b.u(-0.3, 0.3)
            _chair(b, x + 0.75 * np.cos(a), y + 0.75 * np.sin(a), a + np.pi)
    for i in range(n_shelves):
        side = 1 if i % 2 == 0 else -1
        x = b.u(x_min, L - 0.8)
        _shelf(b, x, y0 + side * (W / 2 - 0.2), np.pi / 2, w=b.u(0.8, 1.4), h=min(H - 0.3, b.u(1.5, 2.1)))
    for i in range(n_boxes):
        s = b.u(0.2, 0.6)
        b.add("box", box((b.u(x_min, L - 0.5), y0 + b.u(-W / 2 + 0.4, W / 2 - 0.4), s / 2 * b.u(0.6, 1.0)),
                         (s, s * b.u(0.6, 1.4), s * b.u(0.6, 1.0)), b.u(0, np.pi)), (0.6, 0.45, 0.3), 0.5)
    for i in range(n_posters):
        r = b.rng.random()
        z = b.u(1.2, min(2.0, H - 0.6))
        if r < 0.4:
            _poster(b, wall_x=L, along=y0 + b.u(-W / 2 + 0.5, W / 2 - 0.5), z=z, w=b.u(0.4, 1.0), h=b.u(0.4, 0.9))
        else:
            side = 1 if r < 0.7 else -1
            _poster(b, wall_y=y0 + side * W / 2, along=b.u(1.0, L - 0.5), z=z, w=b.u(0.4, 1.0), h=b.u(0.4, 0.9),
                    facing=side)


def _build(template: str, seed: int) -> tuple[_Builder, np.ndarray, bool]:
    b = _Builder(seed, template)
    cam = np.array([0.0, 0.0, b.u(1.3, 1.5)])
    yaw, pitch = np.radians(b.u(-6, 6)), np.radians(b.u(-7, -2))
    sky = False
    if template == "kitchen":
        L, W, H = b.u(6.5, 8.5), b.u(4.0, 5.0), b.u(2.6, 2.8)
        y0 = b.u(-0.5, 0.5)
        _room(b, L, W, H, y0, far_opening=b.u(1.0, 1.4))
        side = 1 if b.rng.random() < 0.5 else -1
        yw = y0 + side * (W / 2 - 0.3)
        b.add("counter", box((L / 2 + 1, yw, 0.45), (L - 2.5, 0.6, 0.9)), (0.85, 0.85, 0.8), 0.3)
        b.add("upper_cabinets", box((L / 2 + 1, y0 + side * (W / 2 - 0.18), 1.9), (L - 2.5, 0.35, 0.7)),
              (0.7, 0.55, 0.4), 0.4)
        b.add("fridge", box((L - 0.8, y0 - side * (W / 2 - 0.4), 0.9), (0.7, 0.7, 1.8)), _METAL, 0.15, REFLECTIVE)
        b.add("window", box((b.u(2.5, L - 1.5), y0 + side * (W / 2 - 0.005), 1.6), (1.2, 0.01, 0.9)),
              (0.5, 0.6, 0.7), 0.2, TRANSPARENT)
        _scatter_furniture(b, L, W, y0, 1, 1, 4, 3, H)
        _plant(b, b.u(2, L - 1), y0 - side * (W / 2 - 0.5))
    elif template == "office":
        L, W, H = b.u(9.0, 12.0), b.u(6.0, 8.0), b.u(2.8, 3.0)
        y0 = b.u(-1, 1)
        _room(b, L, W, H, y0, far_opening=b.u(1.2, 1.6))
        b.add("whiteboard", box((L - 0.01, y0 + b.u(-1, 1), 1.5), (0.02, 2.0, 1.0)), (0.92, 0.92, 0.92), 0.1, REFLECTIVE)
        b.add("glass_partition", box((b.u(4, 6), y0 + W / 2 - 1.0, 1.2), (0.02, 1.6, 2.0)), (0.6, 0.7, 0.75), 0.15,
              TRANSPARENT)
        _scatter_furniture(b, L, W, y0, 4, 3, 5, 5, H)
        for _ in range(2):
            _plant(b, b.u(2, L - 1), y0 + b.u(-W / 2 + 0.5, W / 2 - 0.5), h=b.u(1.0, 1.8))
    elif template == "hallway":
        L, W, H = b.u(13.5, 15.0), b.u(2.2, 2.8), b.u(2.6, 3.0)
        y0 = b.u(-0.2, 0.2)
        _room(b, L, W, H, y0)
        for i in range(int(b.rng.integers(3, 6))):
            side = 1 if b.rng.random() < 0.5 else -1
            b.add("door", box((b.u(2, L - 1), y0 + side * (W / 2 - 0.02), 1.0), (0.9, 0.04, 2.0)), _WOOD, 0.4)
        b.add("glass_door", box((b.u(8, 11), y0, 1.1), (0.02, W * 0.6, 2.2)), (0.6, 0.7, 0.75), 0.15, TRANSPARENT)
        _scatter_furniture(b, L, W, y0, 0, 2, 4, 6, H)
        for i in range(3):
            b.add("pole", cylinder((b.u(2, L - 1), y0 + b.u(-W / 2 + 0.3, W / 2 - 0.3), 0), 0.025, H), _METAL, 0.3,
                  REFLECTIVE)
        _chair(b, b.u(2, 5), y0 + b.u(-0.5, 0.5), b.u(0, 6))
    elif template == "classroom":
        L, W, H = b.u(12.5, 14.5), b.u(7.0, 9.0), b.u(3.0, 3.3)
        y0 = b.u(-1, 1)
        _room(b, L, W, H, y0)
        b.add("whiteboard", box((L - 0.01, y0, 1.5), (0.02, 3.0, 1.2)), (0.92, 0.92, 0.92), 0.1, REFLECTIVE)
        for i in range(3):
            b.add("window", box((b.u(2, L - 2), y0 + W / 2 - 0.005, 1.8), (1.4, 0.01, 1.3)), (0.5, 0.6, 0.7), 0.2,
                  TRANSPARENT)
        for r in range(3):  # rows of desks, each with a chair
            for c in range(3):
                x = 2.0 + r * b.u(2.0, 2.6)
                y = y0 + (c - 1) * b.u(2.0, 2.4)
                _table(b, x, y, 0.0, w=0.7, d=1.2, h=0.72, name="desk")
                _chair(b, x - 0.6, y, 0.0)
        _scatter_furniture(b, L, W, y0, 0, 2, 3, 5, H)
    elif template == "garden":
        sky = True
        L = b.u(13.5, 15.0)
        b.add("ground", box((L / 2, 0, -0.05), (L + 10, 14, 0.1)), (0.3, 0.45, 0.2), 0.7)
        b.add("hedge", box((L + 0.5, 0, 1.0), (1.0, 14, 2.0)), (0.2, 0.4, 0.15), 0.8)
        b.add("house_wall", box((-2.5, 0, 2.0), (0.3, 14, 4.0)), (0.75, 0.7, 0.6), 0.4)
        for side in (1, -1):
            b.add("fence", box((L / 2, side * 6.0, 0.8), (L + 5, 0.05, 1.6)), _WOOD, 0.5)
        for _ in range(int(b.rng.integers(3, 6))):
            x, y = b.u(3, L - 1), b.u(-5, 5)
            hh = b.u(2.5, 4.5)
            b.add("trunk", cylinder((x, y, 0), b.u(0.06, 0.15), hh), (0.4, 0.3, 0.2), 0.6)
            b.add("crown", ellipsoid((x, y, hh), (b.u(0.8, 1.5),) * 2 + (b.u(0.8, 1.3),)), (0.2, 0.45, 0.15), 0.8)
        for _ in range(int(b.rng.integers(4, 8))):
            b.add("post", box((b.u(2, L - 1), b.u(-5, 5), 0.6), (0.08, 0.08, 1.2)), _WOOD, 0.5)
        _table(b, b.u(2.5, 5), b.u(-1.5, 1.5), b.u(0, 3))
        _chair(b, b.u(2, 5), b.u(-2, 2), b.u(0, 6))
        b.add("greenhouse_pane", box((b.u(6, 9), b.u(2, 4), 1.0), (1.5, 0.01, 2.0)), (0.6, 0.7, 0.75), 0.15, TRANSPARENT)
        b.add("lamp_post", cylinder((b.u(4, 8), b.u(-3, -1), 0), 0.04, 3.0), _METAL, 0.3, REFLECTIVE)
        for _ in range(3):
            s = b.u(0.3, 0.6)
            b.add("planter", box((b.u(2, L - 2), b.u(-4, 4), s / 2), (s, s, s)), (0.5, 0.35, 0.25), 0.5)
        H = 4.0
    else:
        raise ValueError(f"unknown scene template {template!r} (known: {', '.join(TEMPLATES)})")
    _near_object(b, cam, yaw)
    pose = camera_pose(cam, yaw, pitch)
    return b, pose, sky


@lru_cache(maxsize=16)
def build_scene(name: str) -> SimScene:
    """The procedural scene ``<template><seed>`` (e.g. ``kitchen01``); deterministic and cached.

    Callers must not mutate the returned scene (use ``with_board`` / ``with_parts`` for variants).
    """
    template, seed = parse_scene_name(name)
    if template not in TEMPLATES:
        raise ValueError(f"scene {name!r}: unknown template {template!r} (known: {', '.join(TEMPLATES)})")
    b, pose, sky = _build(template, seed)
    ang = b.rng.uniform(0, 2 * np.pi)
    light = np.array([0.4 * np.cos(ang), 0.4 * np.sin(ang), 0.9])
    return SimScene(name, template, seed, b.parts, pose, light / np.linalg.norm(light), sky)


def scene_from_parts(name: str, parts: list[Part], T_world_camera: np.ndarray, sky: bool = False,
                     light_dir=(0.0, 0.0, -1.0)) -> SimScene:
    """A hand-made scene (tests, calibration set-ups). light_dir points from the surface to the light."""
    ld = np.asarray(light_dir, dtype=float)
    return SimScene(name, "custom", 0, list(parts), np.asarray(T_world_camera, float), ld / np.linalg.norm(ld), sky)
