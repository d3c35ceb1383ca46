"""Register the static tripod frame to the world cloud: global guess (FPFH + RANSAC, Open3D)
then coarse-to-fine point-to-plane ICP, a fine GICP and a last robust point-to-plane ICP of every
static point on the world cloud's voxel means. Fails with :class:`RegistrationError` when poor."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class RegistrationError(RuntimeError):
    """The static frame could not be registered to the world cloud; the message gives the numbers."""


@dataclass
class RegisterConfig:
    coarse_voxel_m: float = 0.10
    # fine GICP: voxel and correspondence distance. Twin, static-frame pose error and depth pixels within
    # 0.5 % (2 cm / 5 cm -> 1 cm / 3 cm): hallway02 2.95 mm, 0.059 deg -> 0.88 mm, 0.013 deg, 82.1 -> 91.1 %
    # (a corridor: the 2 cm voxels leave its axis weakly constrained); office03 92.4 -> 92.8 %; kitchen01
    # 0.38 -> 0.55 mm, 95.4 -> 94.1 % (sub-mm either way). The 1 cm map of kitchen01's 19M points: ~7 s, built once
    fine_voxel_m: float = 0.01
    ransac_iterations: int = 50_000
    ransac_confidence: float = 0.999
    # independent RANSAC runs (seeds seed, seed + 1, ...), each refined by the coarse ICP; the best fitness wins.
    # A synthetic box room (test_pointcloud_register), 10 static frames: one run landed 180 deg off in 3 (fitness
    # 0.72, which passes min_fitness) and failed in 1; three runs: 10 right. kitchen01: same pose, +1.8 s
    ransac_runs: int = 3
    # a different pose (> rival_offset_m or > rival_angle_deg away) that fits within rival_fitness_margin of the
    # best at the coarse level makes the registration ambiguous (a symmetric room): reported in info["rival"],
    # and build-depth warns
    rival_fitness_margin: float = 0.05
    rival_offset_m: float = 0.2
    rival_angle_deg: float = 10.0
    # the best guess is also tried turned by these angles about the static frame's vertical axis (the tripod stands
    # level) through the centre of its points: the poses a symmetric room confuses with it, so a rival is found even
    # when every guess lands on the same pose (right or mirrored), and the better of the two wins
    turn_angles_deg: tuple = (90.0, 180.0, 270.0)
    min_fitness: float = 0.6  # fraction of static points with a world 1 cm voxel mean within fine_max_corr_m
    max_rmse_m: float = 0.03
    min_coarse_fitness: float = 0.3  # at the coarse voxel level, before the fine ICP
    fine_max_corr_m: float = 0.03
    # last: every static point, point-to-plane (Tukey) on the world cloud's 3 cm voxel means with normals over
    # 12 cm. Twin, static pose error against the true one (world cloud aligned to the true scene mesh) and depth
    # pixels within 0.5 %: hallway02 1.77 mm, 0.025 deg -> 0.12 mm, 0.003 deg, 87.0 -> 92.4 % (true pose 92.3 %);
    # kitchen01 0.45 mm, 0.002 deg -> 0.48 mm, 0.003 deg, 95.9 -> 95.9 %; office03 0.50 -> 0.18 mm, 0.005 deg,
    # 94.1 -> 93.9 % (true pose 93.8 %). The GICP alone lands 0.002-0.025 deg off on a corridor.
    polish: bool = True
    polish_voxel_m: float = 0.03
    polish_normal_radius_m: float = 0.12
    seed: int = 0
    candidates: list = field(default_factory=list)  # extra 4x4 initial guesses (e.g. a sweep pose)


@dataclass
class RegistrationResult:
    T_world_static: np.ndarray
    fitness: float
    rmse_m: float
    ransac_fitness: float
    info: dict = field(default_factory=dict)


def _pcd(points, voxel=None, normals=True):
    import open3d as o3d

    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if voxel:
        pc = pc.voxel_down_sample(voxel)
    if normals:
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=(voxel or 0.05) * 3, max_nn=20))
    return pc


def _fpfh(pc, voxel):
    import open3d as o3d

    return o3d.pipelines.registration.compute_fpfh_feature(pc, o3d.geometry.KDTreeSearchParamHybrid(radius=voxel * 5, max_nn=100))


def _polish(static_points: np.ndarray, world_points: np.ndarray, T: np.ndarray, cfg: RegisterConfig) -> np.ndarray:
    """T refined by point-to-plane ICP (Tukey loss) of all static points on the world cloud's voxel means."""
    import open3d as o3d

    reg = o3d.pipelines.registration
    tgt = _pcd(world_points, cfg.polish_voxel_m, normals=False)
    tgt.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=cfg.polish_normal_radius_m, max_nn=60))
    src = _pcd(static_points, normals=False)
    for d in (cfg.fine_max_corr_m * 2, cfg.fine_max_corr_m):
        est = reg.TransformationEstimationPointToPlane(reg.TukeyLoss(k=d / 2))
        T = np.asarray(reg.registration_icp(src, tgt, d, T, est, reg.ICPConvergenceCriteria(1e-9, 1e-9, 60)).transformation)
    return T


def _rival(refined: list, T_best: np.ndarray, best_fitness: float, cfg: RegisterConfig) -> dict | None:
    """The best of the coarse-refined guesses ``refined`` [(T, fitness)] that is a different pose (more than
    ``cfg.rival_offset_m`` or ``cfg.rival_angle_deg`` from ``T_best``) and fits within ``cfg.rival_fitness_margin``
    of ``best_fitness``, as {fitness, offset_m, angle_deg}; None when the best guess has no such rival."""
    from ..geometry import rotation_angle_deg

    found = None
    for T, fitness in refined:
        offset = float(np.linalg.norm(T[:3, 3] - T_best[:3, 3]))
        angle = float(rotation_angle_deg(T[:3, :3].T @ T_best[:3, :3]))
        if (offset > cfg.rival_offset_m or angle > cfg.rival_angle_deg) and fitness >= best_fitness - cfg.rival_fitness_margin:
            if found is None or fitness > found["fitness"]:
                found = {"fitness": fitness, "offset_m": offset, "angle_deg": angle}
    return found


def _turned(T: np.ndarray, centre: np.ndarray, angles_deg) -> list[np.ndarray]:
    """``T`` (world <- static) turned by each of ``angles_deg`` about the static frame's z axis through ``centre``
    (static frame, m)."""
    out = []
    for a in np.radians(np.asarray(angles_deg, dtype=float)):
        turn = np.eye(4)
        turn[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
        turn[:3, 3] = centre - turn[:3, :3] @ centre
        out.append(T @ turn)
    return out


def _match_quality(static_points: np.ndarray, target_tree, T: np.ndarray, max_dist_m: float) -> tuple[float, float]:
    """(fitness, RMSE m): the fraction of static points placed with ``T`` that have a world voxel mean of
    ``target_tree`` (a small_gicp KdTree) within ``max_dist_m``, and their RMS distance to it."""
    placed = np.asarray(static_points, np.float64) @ T[:3, :3].T + T[:3, 3]
    _, sq_dist = target_tree.batch_nearest_neighbor_search(placed, num_threads=2)
    sq_dist = np.asarray(sq_dist, dtype=float).reshape(-1)
    inlier = sq_dist <= max_dist_m**2
    if not inlier.any():
        return 0.0, float("inf")
    return float(inlier.mean()), float(np.sqrt(sq_dist[inlier].mean()))


def register_static(static_points: np.ndarray, world_points: np.ndarray, config: RegisterConfig | None = None) -> RegistrationResult:
    """T_world_static aligning the tripod frame (sensor frame points, m) to the world cloud (m)."""
    import open3d as o3d
    import small_gicp

    cfg = config or RegisterConfig()
    reg = o3d.pipelines.registration
    if len(static_points) < 100:
        raise RegistrationError(f"register: static frame has only {len(static_points)} points")
    if len(world_points) < 100:
        raise RegistrationError(f"register: world cloud has only {len(world_points)} points")
    vc = cfg.coarse_voxel_m
    src_c = _pcd(static_points, vc)
    tgt_c = _pcd(world_points, vc)
    src_f, tgt_f = _fpfh(src_c, vc), _fpfh(tgt_c, vc)
    ransacs = []
    for run in range(cfg.ransac_runs):  # several independent global guesses: one can land on a mirror pose of a symmetric room
        o3d.utility.random.seed(cfg.seed + run)
        ransacs.append(reg.registration_ransac_based_on_feature_matching(
            src_c, tgt_c, src_f, tgt_f, True, vc * 1.5, reg.TransformationEstimationPointToPoint(False), 3,
            [reg.CorrespondenceCheckerBasedOnEdgeLength(0.9), reg.CorrespondenceCheckerBasedOnDistance(vc * 1.5)],
            reg.RANSACConvergenceCriteria(cfg.ransac_iterations, cfg.ransac_confidence)))
    ransac = max(ransacs, key=lambda r: r.fitness)
    guesses = [np.asarray(r.transformation) for r in ransacs] + [np.asarray(c, dtype=float) for c in cfg.candidates]
    # refine every guess at the coarse level, keep the best (also among its turned poses), then refine it coarse-to-fine
    best = None
    refined = []

    def refine(guesses: list) -> None:
        nonlocal best
        for T in guesses:
            for d in (vc * 2, vc):
                r = reg.registration_icp(src_c, tgt_c, d, T, reg.TransformationEstimationPointToPlane(),
                                         reg.ICPConvergenceCriteria(1e-8, 1e-8, 40))
                T = np.asarray(r.transformation)
            refined.append((T, float(r.fitness)))
            if best is None or r.fitness > best[1].fitness + 1e-6 or (abs(r.fitness - best[1].fitness) < 1e-6 and r.inlier_rmse < best[1].inlier_rmse):
                best = (T, r)

    refine(guesses)
    turned = _turned(best[0], np.asarray(src_c.points).mean(axis=0), cfg.turn_angles_deg)
    refine(turned)
    T = best[0]
    rival = _rival(refined, T, float(best[1].fitness), cfg)
    if best[1].fitness < cfg.min_coarse_fitness:
        raise RegistrationError(
            f"register: no global match of the static frame in the world cloud: coarse fitness {best[1].fitness:.3f} "
            f"(need >= {cfg.min_coarse_fitness}), RANSAC fitness {ransac.fitness:.3f}"
        )
    # fine map: world points near the static frame's footprint only
    st_w = np.asarray(static_points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]
    lo, hi = st_w.min(0) - 0.5, st_w.max(0) + 0.5
    wp = np.asarray(world_points)
    wp = wp[np.all((wp >= lo) & (wp <= hi), axis=1)]
    # one 1 cm voxel map (small_gicp: voxel means, covariances, k-d tree) serves the GICP and the final fitness
    target, target_tree = small_gicp.preprocess_points(np.asarray(wp, np.float64), cfg.fine_voxel_m, num_threads=2)
    source, _ = small_gicp.preprocess_points(np.asarray(static_points, np.float64), cfg.fine_voxel_m, num_threads=2)
    for d in (cfg.fine_max_corr_m * 2, cfg.fine_max_corr_m):
        g = small_gicp.align(target, source, target_tree, T, registration_type="GICP", max_correspondence_distance=d,
                             num_threads=2, max_iterations=60, rotation_epsilon=1e-6, translation_epsilon=1e-6)
        T = np.asarray(g.T_target_source)
    if cfg.polish:
        T = _polish(static_points, wp, T, cfg)
    fitness, rmse = _match_quality(static_points, target_tree, T, cfg.fine_max_corr_m)
    result = RegistrationResult(T, fitness, rmse, float(ransac.fitness), {"guesses": len(guesses) + len(turned), "rival": rival})
    if fitness < cfg.min_fitness or rmse > cfg.max_rmse_m:
        raise RegistrationError(
            f"register: static frame does not match the world cloud: fitness {fitness:.3f} (need >= {cfg.min_fitness}), "
            f"RMSE {1000 * rmse:.1f} mm (need <= {1000 * cfg.max_rmse_m:.0f} mm)"
        )
    return result
