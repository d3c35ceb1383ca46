"""Deskew lidar frames: undo the sensor motion during one rotation (~0.1 s).

Each point is measured at its column's timestamp. With a body velocity ``xi = (omega rad/s,
v m/s)`` (sensor frame at ``t_ref``) and, once the neighbouring poses are known, a constant
acceleration ``(alpha rad/s^2, a m/s^2)`` over the frame, the sensor pose at ``t_ref + dt``
relative to the pose at ``t_ref`` is ``(R(omega dt + alpha dt^2 / 2), v dt + a dt^2 / 2)``;
deskewing maps each point into the sensor frame at ``t_ref``. Velocity and acceleration come from
the poses of neighbouring frames, which the paper does not do.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def relative_velocity(T_a: np.ndarray, T_b: np.ndarray, dt_s: float) -> np.ndarray:
    """Body velocity (6,) = (omega rad/s, v m/s) in the sensor frame taking pose ``T_a`` to ``T_b`` in ``dt_s``."""
    if dt_s <= 0:
        return np.zeros(6)
    T_rel = np.linalg.inv(T_a) @ T_b
    omega = Rotation.from_matrix(T_rel[:3, :3]).as_rotvec() / dt_s
    v = T_rel[:3, 3] / dt_s
    return np.concatenate([omega, v])


def motion(velocity: np.ndarray, dt_s: float) -> np.ndarray:
    """4x4 pose change ``(R(omega dt), v dt)`` after ``dt_s`` seconds at constant ``velocity``."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(np.asarray(velocity[:3]) * dt_s).as_matrix()
    T[:3, 3] = np.asarray(velocity[3:]) * dt_s
    return T


def deskew_points(points: np.ndarray, dt: np.ndarray, velocity: np.ndarray, acceleration: np.ndarray | None = None) -> np.ndarray:
    """Map (N, 3) sensor-frame points measured ``dt`` (N,) seconds after ``t_ref`` into the frame at ``t_ref``.

    ``velocity`` (6,) = (omega rad/s, v m/s); ``acceleration`` (6,) = (alpha rad/s^2, a m/s^2) or None
    (constant velocity), both in the sensor frame at ``t_ref``. Vectorised; returns float32.
    """
    velocity = np.asarray(velocity, dtype=np.float64)
    acceleration = np.zeros(6) if acceleration is None else np.asarray(acceleration, dtype=np.float64)
    if not np.any(velocity) and not np.any(acceleration):
        return np.asarray(points, dtype=np.float32)
    dt = np.asarray(dt, dtype=np.float64)
    # group by column timestamp: all points of a column share dt, so rotations are few
    udt, inv = np.unique(dt, return_inverse=True)
    rotvec = udt[:, None] * velocity[None, :3] + 0.5 * udt[:, None] ** 2 * acceleration[None, :3]
    R = Rotation.from_rotvec(rotvec).as_matrix()  # (C, 3, 3)
    shift = udt[:, None] * velocity[None, 3:] + 0.5 * udt[:, None] ** 2 * acceleration[None, 3:]  # (C, 3)
    p = np.asarray(points, dtype=np.float64)
    out = np.einsum("nij,nj->ni", R[inv], p) + shift[inv]
    return out.astype(np.float32)


def central_velocities(times: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """Per-frame body velocity (F, 6) from neighbouring poses (central difference; one-sided at the ends)."""
    F = len(poses)
    vel = np.zeros((F, 6))
    for i in range(F):
        a, b = max(i - 1, 0), min(i + 1, F - 1)
        if a == b:
            continue
        # velocity in the frame of pose i: average of the two one-sided estimates
        v = []
        if i > 0:
            v.append(relative_velocity(poses[i - 1], poses[i], times[i] - times[i - 1]))
        if i < F - 1:
            v.append(relative_velocity(poses[i], poses[i + 1], times[i + 1] - times[i]))
        vel[i] = np.mean(v, axis=0)
    return vel


def central_accelerations(times: np.ndarray, poses: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Per-frame body acceleration (F, 6) = (alpha rad/s^2, a m/s^2) in each frame's sensor frame.

    ``a`` is the second difference of the positions (world frame) rotated into frame i; ``alpha`` the
    central difference of the body angular ``velocities`` (F, 6) (see :func:`central_velocities`).
    The ends repeat their neighbours; zeros for fewer than 3 frames.
    """
    F = len(poses)
    acc = np.zeros((F, 6))
    if F < 3:
        return acc
    x = poses[:, :3, 3]
    h0, h1 = np.diff(times)[:-1], np.diff(times)[1:]  # (F-2,)
    a_world = 2 * ((x[2:] - x[1:-1]) / h1[:, None] - (x[1:-1] - x[:-2]) / h0[:, None]) / (h0 + h1)[:, None]
    acc[1:-1, 3:] = np.einsum("fji,fj->fi", poses[1:-1, :3, :3], a_world)  # R_i^T a
    acc[1:-1, :3] = (velocities[2:, :3] - velocities[:-2, :3]) / (h0 + h1)[:, None]
    acc[0], acc[-1] = acc[1], acc[-2]
    return acc
