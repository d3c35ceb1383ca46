"""The twin lens's hidden focus motor: hexcode (0x0000-0xFFFF) <-> focus distance, settle, repeatability.

HIDDEN TRUTH: only the twin itself, tests and accuracy reports may call ``distance_m`` /
``hexcode_for``; calibration must find the mapping from images.

The mapping is a monotone cubic (PCHIP) curve in diopters through knots near a smooth quadratic
that puts the published ZEDD hexcodes near their focus distances (6D3E -> 0.82 m, 2371 -> ~3.08 m,
1113 -> 8.10 m); the intermediate knots carry a seeded perturbation of a few per cent, so the curve
differs per rig seed and equals no simple formula. Larger hexcode = nearer focus.
"""

from __future__ import annotations

import zlib

import numpy as np
from scipy.interpolate import PchipInterpolator

# Published plan hexcodes of the ZEDD rig (runs 1..9) and the quadratic base curve in diopters
# fitted through run 1 (0.82 m), run 5 (3.08 m) and run 9 (8.10 m).
PUBLISHED_HEXCODES = (0x6D3E, 0x4EA8, 0x3B39, 0x2D09, 0x2371, 0x1DB4, 0x183F, 0x1657, 0x1113)
_ANCHORS = {0x6D3E: 1 / 0.82, 0x2371: 1 / 3.08, 0x1113: 1 / 8.10}
_MAX_CODE = 0xFFFF


def _base_diopters(h: np.ndarray) -> np.ndarray:
    xs = np.array(list(_ANCHORS)), np.array(list(_ANCHORS.values()))
    c = np.polyfit(xs[0].astype(float), xs[1], 2)
    return np.polyval(c, np.asarray(h, dtype=float))


def seed_for_rig(rig_name: str) -> int:
    """Stable motor seed of a rig (the hidden curve belongs to the lens, not to a scene)."""
    return zlib.crc32(rig_name.encode("utf-8")) & 0x7FFFFFFF


class HiddenMotor:
    """Hidden monotone motor model. ``seed`` perturbs the curve; repeatability/settle are per move."""

    def __init__(self, seed: int = 0, repeatability_counts: int = 2, settle_s_base: float = 0.08,
                 settle_s_per_kcount: float = 0.012):
        self.seed = int(seed)
        self.repeatability_counts = int(repeatability_counts)
        self.settle_s_base = settle_s_base
        self.settle_s_per_kcount = settle_s_per_kcount
        rng = np.random.default_rng([self.seed, 0x30706])
        inner = [0x4EA8, 0x3B39, 0x2D09, 0x1DB4, 0x183F, 0x1657, 0x8000, 0x9E00]
        knots_h = [0, 2200, 0x1113, 0x2371, 0x6D3E, 48000, _MAX_CODE] + inner
        vals = {0: 0.001, 2200: 0.035, 48000: float(_base_diopters(48000)), _MAX_CODE: 2.44}
        vals[0x1113] = _ANCHORS[0x1113]
        vals[0x6D3E] = _ANCHORS[0x6D3E]
        vals[0x2371] = _ANCHORS[0x2371] * (1 + 0.004 * rng.uniform(-1, 1))
        for h in inner:
            vals[h] = float(_base_diopters(h)) * (1 + 0.025 * rng.uniform(-1, 1))
        hs = np.array(sorted(set(knots_h)), dtype=float)
        ps = np.array([vals[int(h)] for h in hs])
        if not np.all(np.diff(ps) > 0):  # cannot happen with the margins above; guard anyway
            raise RuntimeError(f"hidden motor seed {seed}: knots not monotone")
        self._curve = PchipInterpolator(hs, ps)
        self._table = self._curve(np.arange(_MAX_CODE + 1, dtype=float))  # diopters per code

    # --- hidden truth --------------------------------------------------------------------
    def diopters(self, hexcode) -> np.ndarray | float:
        h = np.asarray(hexcode)
        if np.any((h < 0) | (h > _MAX_CODE)):
            raise ValueError(f"hexcode {hexcode} outside 0000..FFFF")
        out = self._curve(h.astype(float))
        return float(out) if out.ndim == 0 else out

    def distance_m(self, hexcode) -> np.ndarray | float:
        """True focus distance (m) of a motor position (int or array)."""
        p = self.diopters(hexcode)
        return 1.0 / p

    def hexcode_for(self, distance_m: float) -> int:
        """Nearest motor position focusing at ``distance_m`` (clamped to the travel)."""
        p = 1.0 / float(distance_m)
        i = int(np.searchsorted(self._table, p))
        if i <= 0:
            return 0
        if i > _MAX_CODE:
            return _MAX_CODE
        return i if abs(self._table[i] - p) < abs(self._table[i - 1] - p) else i - 1

    # --- mechanics -----------------------------------------------------------------------
    def settle_seconds(self, from_code: int, to_code: int) -> float:
        """Simulated time to drive and settle between two positions (s)."""
        return self.settle_s_base + self.settle_s_per_kcount * abs(int(to_code) - int(from_code)) / 1000.0

    def achieve(self, target: int, rng: np.random.Generator) -> int:
        """Position actually reached when commanded to ``target`` (+- repeatability counts)."""
        r = self.repeatability_counts
        err = int(rng.integers(-r, r + 1)) if r > 0 else 0
        return int(np.clip(int(target) + err, 0, _MAX_CODE))
