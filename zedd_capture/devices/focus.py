"""Focus-motor backends: Sony absolute position over PTP, and a closed-loop relative servo.

Both obey :class:`~zedd_capture.devices.protocols.FocusMotor`: ``move_to(hexcode)`` drives, waits
until settled and returns the ACHIEVED position read back from the body; ``position()`` reads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .protocols import DeviceError
from .ptp import SonyPtpSession, UsbLink


class UsbHandoff(Protocol):
    """Whoever else holds the camera's USB interface (the gphoto2 session)."""

    def release_usb(self) -> None: ...
    def reacquire_usb(self) -> None: ...


class SonyAbsoluteFocus:
    """Absolute focus over Sony's PTP extension (FocusPositionSetting 0xE042 / current 0xE043).

    Around every move the gphoto2 session (``handoff``) gives the USB interface up and takes it
    back afterwards, because one interface has one owner at a time.
    """

    def __init__(self, link: UsbLink, handoff: UsbHandoff | None = None, settle_timeout_s: float = 10.0,
                 poll_s: float = 0.05, stable_reads: int = 2, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.link, self.handoff = link, handoff
        self.settle_timeout_s, self.poll_s, self.stable_reads = settle_timeout_s, poll_s, stable_reads
        self._sleep, self._clock = sleep, clock
        self._last: int | None = None  # position read back after the last settled move

    def _with_session(self, fn):
        if self.handoff is not None:
            self.handoff.release_usb()
        try:
            with SonyPtpSession(self.link) as s:
                return fn(s)
        finally:
            if self.handoff is not None:
                self.handoff.reacquire_usb()

    def move_to(self, hexcode: int) -> int:
        """Set 0xE042, wait while 0xD19C says driving and until 0xE043 is stable; return 0xE043."""

        def run(s: SonyPtpSession) -> int:
            s.set_focus_position(int(hexcode))
            deadline = self._clock() + self.settle_timeout_s
            last, same = None, 0
            while True:
                pos, driving = s.focus_state()
                same = same + 1 if (pos == last and not driving) else 0
                last = pos
                if same >= self.stable_reads - 1 and not driving:
                    self._last = pos
                    return pos
                if self._clock() > deadline:
                    raise DeviceError(f"focus motor did not settle within {self.settle_timeout_s} s "
                                      f"(target {hexcode:04X}, last position {pos:04X}, driving={driving})")
                self._sleep(self.poll_s)

        return self._with_session(run)

    def position(self, fresh: bool = False) -> int:
        """0xE043 as read back after the last settled move (the lens does not move by itself in MF);
        ``fresh=True`` (or no move yet) reads it from the body, which costs a USB hand-off."""
        if self._last is not None and not fresh:
            return self._last
        self._last = self._with_session(lambda s: s.focus_state()[0])
        return self._last


class RelativeDrive(Protocol):
    """A focus drive that only moves in relative steps (e.g. gphoto2's Sony 'manualfocus' -7..+7)."""

    def step(self, n: int) -> None:
        """One relative move: sign = direction, |n| = step size class (1 small, 3 medium, 7 large)."""
    def position(self) -> int:
        """Motor position (hexcode) as read back."""


@dataclass
class ServoReport:
    target: int
    achieved: int
    steps: int
    reversals: int
    status: str  # "ok" | "oscillation" | "step_limit"
    history: list[int] = field(default_factory=list)


class RelativeServoFocus:
    """Closed-loop absolute positioning over relative Near/Far steps.

    * the gain (counts per step) of each step size is learned online from steps that continue in
      the same direction as the previous one (a reversal's first step is eaten by backlash);
    * the final approach always comes from the same side (``approach=+1``: increasing hexcode), so
      backlash is taken up the same way every time: if the motor is at or past the target it first
      backs off to the start side;
    * stops when within ``tolerance`` counts, or after ``max_reversals`` overshoots (oscillation:
      the smallest step is larger than the tolerance), or after ``max_steps`` steps.
    """

    def __init__(self, drive: RelativeDrive, tolerance: int = 4, approach: int = +1,
                 step_sizes: tuple[int, ...] = (1, 3, 7), initial_gain: dict[int, float] | None = None,
                 direction: int | None = None, max_steps: int = 500, max_reversals: int = 4,
                 gain_smoothing: float = 0.5):
        if approach not in (+1, -1):
            raise ValueError("approach must be +1 (from lower hexcodes) or -1")
        self.drive, self.tolerance, self.approach = drive, int(tolerance), approach
        self.step_sizes = tuple(sorted(step_sizes))
        self.gain = dict(initial_gain or {m: float(4 * m * m) for m in self.step_sizes})
        self.direction = direction  # +1: positive step commands increase the hexcode; None = learn
        self.max_steps, self.max_reversals, self.alpha = max_steps, max_reversals, gain_smoothing
        self._last_dir: int | None = None
        self.last_report: ServoReport | None = None

    def position(self) -> int:
        return int(self.drive.position())

    # one step in "hexcode direction" d (+1 up, -1 down) of size class m; returns observed delta
    def _step(self, d: int, m: int) -> int:
        before = self.position()
        cmd_sign = d * (self.direction or 1)
        self.drive.step(cmd_sign * m)
        after = self.position()
        delta = after - before
        if self.direction is None and delta != 0:
            self.direction = 1 if (delta > 0) == (cmd_sign > 0) else -1
            d_actual = 1 if delta > 0 else -1
            if d_actual != d:  # learned that the sign was the other way; this step moved us back
                self._last_dir = d_actual
                return delta
        same_dir = self._last_dir == d
        if same_dir and delta * d > 0:
            self.gain[m] = (1 - self.alpha) * self.gain[m] + self.alpha * abs(delta)
        self._last_dir = d
        return delta

    def _pick(self, remaining: float) -> int:
        """Largest step class expected not to overshoot ``remaining`` counts (smallest if none)."""
        fits = [m for m in self.step_sizes if self.gain[m] <= remaining + self.tolerance * 0.5]
        return max(fits) if fits else self.step_sizes[0]

    def move_to(self, hexcode: int) -> int:
        target, a, tol = int(hexcode), self.approach, self.tolerance
        steps = reversals = stalls = 0
        history = [self.position()]
        status = "step_limit"
        while steps < self.max_steps:
            pos = history[-1]
            err = (target - pos) * a  # > 0: still on the start side
            if abs(err) <= tol and self._last_dir in (a, None):
                status = "ok"
                break
            if err < -tol or (err <= tol and self._last_dir == -a):
                # past the target (or within it but arrived from the wrong side): back off
                if self._last_dir == a:
                    reversals += 1
                    if reversals > self.max_reversals:
                        status = "oscillation"
                        break
                back = -err + tol + self.gain[self.step_sizes[0]]
                delta = self._step(-a, self._pick(back))
            else:
                delta = self._step(a, self._pick(err))
            steps += 1
            stalls = stalls + 1 if delta == 0 else 0
            if stalls >= 8:
                raise DeviceError(f"focus motor does not move (8 steps without change at {pos:04X}; end of travel "
                                  "or focus mode not MF?)")
            history.append(pos + delta)
        achieved = self.position()
        self.last_report = ServoReport(target, achieved, steps, reversals, status, history)
        return achieved
