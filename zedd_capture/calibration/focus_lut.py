"""Focus lookup table: motor hexcode -> focus distance (metres), its interpolant and inverse.

File format (``calibration/<rig>/focus_lut.tsv``, same as the twin's truth): ``#`` comment lines
(the provenance header), then ``HEX<TAB>metres[<TAB>uncertainty_m<TAB>residual_px]``.

Between entries the distance is interpolated monotonically in diopters: a PCHIP interpolant of
1/d (1/m) against the hexcode (shape preserving, so the table's order is never violated). The
inverse (distance -> hexcode) solves the same interpolant, so ``hexcode_for(distance_m(h)) == h``.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from scipy.interpolate import PchipInterpolator
from scipy.optimize import brentq

from ..layout import atomic_write_text, read_text_file
from ..rig import FocusRun, format_hexcode, parse_hexcode
from ..version import tool_version


class FocusLUTError(ValueError):
    """A focus LUT is missing, malformed or cannot answer the query; the message says which and why."""


# --- provenance header (shared by every calibration product) -------------------------------
def provenance(kind: str, rig_name: str = "", method: str = "", **extra) -> dict:
    """A provenance record: product kind, rig, method, UTC time, host/user, extra key/values."""
    rec = {
        "product": kind,
        "rig": rig_name,
        "method": method,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tool": "zedd-toolkit",
        "tool_version": tool_version(),
        "host": platform.node(),
    }
    try:
        rec["user"] = getpass.getuser()
    except Exception:  # pragma: no cover - no user database in some containers
        pass
    rec.update({k: v for k, v in extra.items() if v is not None})
    return rec


def format_comment_header(prov: Mapping | None, prefix: str = "# ") -> str:
    """Provenance as ``# key: value`` lines (empty string for None)."""
    if not prov:
        return ""
    return "".join(f"{prefix}{k}: {v}\n" for k, v in prov.items())


# --- table -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FocusLUTEntry:
    """One calibrated motor position: hexcode, focus distance (m), 1-sigma uncertainty (m), RMS reprojection (px)."""

    hexcode: int
    focus_distance_m: float
    uncertainty_m: float = float("nan")
    residual_px: float = float("nan")


@dataclass
class FocusLUT:
    """Hexcode -> focus distance table with a monotone diopter interpolant (PCHIP on 1/d vs hexcode)."""

    entries: list[FocusLUTEntry]
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.entries) < 1:
            raise FocusLUTError("a focus LUT needs at least one entry")
        self.entries = sorted(self.entries, key=lambda e: e.hexcode)
        codes = np.array([e.hexcode for e in self.entries], dtype=float)
        if np.any(np.diff(codes) == 0):
            raise FocusLUTError(f"duplicate hexcodes in focus LUT: {[format_hexcode(int(c)) for c in codes]}")
        d = np.array([e.focus_distance_m for e in self.entries], dtype=float)
        if not np.all(np.isfinite(d) & (d > 0)):
            raise FocusLUTError("focus distances must be positive finite metres")
        diop = 1.0 / d
        steps = np.sign(np.diff(diop))
        if len(steps) and not (np.all(steps > 0) or np.all(steps < 0)):
            raise FocusLUTError(
                "focus LUT is not monotone (distance must change in one direction with the hexcode): "
                + ", ".join(f"{format_hexcode(e.hexcode)}={e.focus_distance_m:.4f}" for e in self.entries)
            )
        self._codes, self._diop = codes, diop
        self._pchip = PchipInterpolator(codes, diop, extrapolate=True) if len(codes) >= 2 else None

    # -- queries
    @property
    def hexcodes(self) -> np.ndarray:
        return self._codes.astype(int)

    @property
    def distances_m(self) -> np.ndarray:
        return 1.0 / self._diop

    def _check_range(self, h: np.ndarray, extrapolate: bool) -> None:
        lo, hi = self._codes[0], self._codes[-1]
        if not extrapolate and (np.any(h < lo) or np.any(h > hi)):
            raise FocusLUTError(
                f"hexcode outside the calibrated range {format_hexcode(int(lo))}..{format_hexcode(int(hi))}"
                " (pass extrapolate=True to extend with the end slopes)"
            )

    def diopters(self, hexcode, extrapolate: bool = False) -> np.ndarray | float:
        """Focus in diopters (1/m) at ``hexcode`` (int, hex string or array)."""
        scalar = np.isscalar(hexcode) or isinstance(hexcode, str)
        h = np.atleast_1d(np.asarray([parse_hexcode(x) if isinstance(x, str) else x for x in np.atleast_1d(hexcode)], float))
        self._check_range(h, extrapolate)
        if self._pchip is None:
            if np.any(h != self._codes[0]):
                raise FocusLUTError("a one-entry focus LUT can only answer its own hexcode")
            out = np.full(h.shape, self._diop[0])
        else:
            out = np.asarray(self._pchip(h), float)
            lo, hi = self._codes[0], self._codes[-1]
            # linear extension beyond the ends (PCHIP's cubic extrapolation can turn over)
            if extrapolate:
                s_lo = self._pchip.derivative()(lo)
                s_hi = self._pchip.derivative()(hi)
                out = np.where(h < lo, self._diop[0] + s_lo * (h - lo), out)
                out = np.where(h > hi, self._diop[-1] + s_hi * (h - hi), out)
        if np.any(out <= 0):
            raise FocusLUTError("extrapolated focus is at or beyond infinity")
        return float(out[0]) if scalar else out

    def distance_m(self, hexcode, extrapolate: bool = False) -> np.ndarray | float:
        """Focus distance (m) at ``hexcode``."""
        dio = self.diopters(hexcode, extrapolate)
        return 1.0 / dio

    def hexcode_for(self, distance_m: float, extrapolate: bool = False) -> float:
        """Inverse of :meth:`distance_m`: the (fractional) hexcode focusing at ``distance_m``."""
        if not (np.isfinite(distance_m) and distance_m > 0):
            raise FocusLUTError(f"target distance {distance_m!r} m must be positive and finite")
        target = 1.0 / distance_m
        lo, hi = self._codes[0], self._codes[-1]
        if self._pchip is None:
            if abs(target - self._diop[0]) > 1e-12:
                raise FocusLUTError("a one-entry focus LUT cannot invert other distances")
            return float(lo)
        if extrapolate:
            span = hi - lo
            lo, hi = max(0.0, lo - 4 * span), min(65535.0, hi + 4 * span)
        f = lambda h: float(self.diopters(h, extrapolate=True)) - target  # noqa: E731
        flo, fhi = f(lo), f(hi)
        if flo * fhi > 0:
            dmin, dmax = sorted(1.0 / np.array([self._diop[0], self._diop[-1]]))
            raise FocusLUTError(
                f"target distance {distance_m:.4f} m is outside the calibrated range {dmin:.4f}..{dmax:.4f} m"
            )
        return float(brentq(f, lo, hi, xtol=1e-6))

    def capture_plan(self, distances_m: Iterable[float], extrapolate: bool = False) -> list[FocusRun]:
        """Focus runs (numbered 1.. in the given order) for target distances: nearest integer hexcode + its distance."""
        runs = []
        for k, d in enumerate(distances_m, 1):
            h = int(round(self.hexcode_for(float(d), extrapolate)))
            runs.append(FocusRun(run=k, hexcode=h, focus_distance_m=round(float(self.distance_m(h, True)), 6)))
        return runs


def metadata_rows(lut: FocusLUT, runs: Iterable[tuple[int, int]]) -> list:
    """``MetadataRow``s for metadata.txt from (run, hexcode) pairs (e.g. the achieved hexcodes of a capture)."""
    from ..layout import MetadataRow

    return [MetadataRow(int(k), int(h), float(lut.distance_m(int(h), extrapolate=True))) for k, h in runs]


# --- file I/O ---------------------------------------------------------------------------
def format_focus_lut(lut: FocusLUT) -> str:
    text = "# zedd-toolkit focus LUT: hexcode -> focus distance (m); PCHIP in diopters between entries\n"
    text += format_comment_header(lut.provenance)
    text += "# columns: hexcode\tfocus_distance_m\tuncertainty_m\tresidual_px\n"
    for e in lut.entries:
        text += f"{format_hexcode(e.hexcode)}\t{e.focus_distance_m:.6f}\t{e.uncertainty_m:.6f}\t{e.residual_px:.4f}\n"
    return text


def write_focus_lut(path: Path, lut: FocusLUT) -> None:
    """Write ``focus_lut.tsv`` atomically (provenance header as ``#`` lines)."""
    atomic_write_text(Path(path), format_focus_lut(lut))


def _shorten(line: str, n: int = 80) -> str:
    return line if len(line) <= n else line[:n] + "..."


def read_focus_lut(path: Path) -> FocusLUT:
    """Read a focus LUT (ours or the twin's truth: ``HEX<TAB>metres[<TAB>...]``); errors name file and line."""
    path = Path(path)
    if not path.is_file():
        raise FocusLUTError(f"{path}: focus LUT not found (run `zedd calibrate-focus`)")
    entries, prov = [], {}
    for lineno, line in enumerate(read_text_file(path, "focus LUT", FocusLUTError).splitlines(), 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith("#"):
            body = s.lstrip("#").strip()
            if ": " in body and not body.startswith("columns"):
                k, v = body.split(": ", 1)
                prov[k.strip()] = v.strip()
            continue
        parts = line.split("\t")
        if parts[0].strip().lower() in ("hexcode", "hex"):  # an uncommented column header
            continue
        if len(parts) < 2:
            raise FocusLUTError(f"{path}:{lineno}: expected HEX<TAB>metres, got {_shorten(line)!r}")
        try:
            code = parse_hexcode(parts[0].strip())
        except ValueError as e:
            raise FocusLUTError(f"{path}:{lineno}: hexcode: {e}") from None
        try:
            vals = [float(x) for x in parts[1:4]]
        except ValueError:
            raise FocusLUTError(f"{path}:{lineno}: not a number in {_shorten(line)!r}") from None
        if not (np.isfinite(vals[0]) and vals[0] > 0):
            raise FocusLUTError(f"{path}:{lineno}: focus distance {parts[1]!r} must be positive metres")
        vals += [float("nan")] * (3 - len(vals))
        entries.append(FocusLUTEntry(code, vals[0], vals[1], vals[2]))
    if not entries:
        raise FocusLUTError(f"{path}: focus LUT has no entries")
    try:
        return FocusLUT(entries, prov)
    except FocusLUTError as e:
        raise FocusLUTError(f"{path}: {e}") from None
