"""Closed-loop relative focus servo against a small motor model with backlash and noisy steps."""

from __future__ import annotations

import numpy as np
import pytest

from zedd_capture.devices.focus import RelativeServoFocus
from zedd_capture.devices.protocols import DeviceError


class BacklashMotor:
    """Relative drive: step class m moves gain[m] counts (+-jitter); reversing loses ``backlash``
    counts of travel first. Positive commands DEcrease the hexcode (like Sony 'Near' = larger code?
    unknown on hardware, so the servo must learn the sign)."""

    def __init__(self, pos=0x3000, backlash=25, gains=None, jitter=0.1, sign=-1, seed=0, lo=0, hi=0xFFFF):
        self.x = float(pos)  # lens element position (what the body reports)
        self.backlash, self.sign, self.jitter = backlash, sign, jitter
        self.gains = gains or {1: 6.0, 3: 45.0, 7: 380.0}
        self.slack = 0.0  # remaining play to take up before motion, signed by the last direction
        self.last_dir = 0
        self.rng = np.random.default_rng(seed)
        self.lo, self.hi = lo, hi
        self.steps = 0

    def step(self, n: int) -> None:
        self.steps += 1
        d = int(np.sign(n)) * self.sign
        travel = self.gains[abs(n)] * (1 + self.jitter * self.rng.uniform(-1, 1))
        if d != self.last_dir and self.last_dir != 0:
            travel = max(0.0, travel - self.backlash)
        self.last_dir = d
        self.x = float(np.clip(self.x + d * travel, self.lo, self.hi))

    def position(self) -> int:
        return int(round(self.x))


@pytest.mark.parametrize("start", [0x1000, 0x6000])
@pytest.mark.parametrize("target", [0x2371, 0x4EA8])
def test_servo_converges_from_both_sides(start, target):
    motor = BacklashMotor(pos=start)
    servo = RelativeServoFocus(motor, tolerance=4, approach=+1)
    got = servo.move_to(target)
    rep = servo.last_report
    assert rep.status == "ok", rep
    assert abs(got - target) <= 4
    assert got == motor.position()
    # final approach from below: the last move before stopping increased the position
    assert rep.history[-1] >= rep.history[-2]
    assert rep.steps < 200


def test_servo_learns_gain_and_repeats_from_same_side():
    motor = BacklashMotor(pos=0x5000, seed=3)
    servo = RelativeServoFocus(motor, tolerance=3)
    results, steps = [], []
    for target in (0x2371, 0x6D3E, 0x2371, 0x1113, 0x2371):
        before = motor.steps
        results.append(servo.move_to(target))
        steps.append(motor.steps - before)
    assert all(abs(r - t) <= 3 for r, t in zip(results, (0x2371, 0x6D3E, 0x2371, 0x1113, 0x2371)))
    assert servo.direction == -1  # learned that positive commands decrease the hexcode
    assert servo.gain[7] == pytest.approx(380, rel=0.15)
    assert servo.gain[3] == pytest.approx(45, rel=0.25)
    # steps per move (fixed seed): 39, 53, 63, 17, 20; the first includes probing the gains
    assert sum(steps) <= 240 and steps[0] > max(steps[3:])


def test_servo_stops_on_oscillation_when_smallest_step_exceeds_tolerance():
    motor = BacklashMotor(pos=0x1000, gains={1: 11.0, 3: 45.0, 7: 380.0}, jitter=0.0, backlash=0)
    servo = RelativeServoFocus(motor, tolerance=2, max_reversals=3)
    target = 0x1000 + 778  # reachable positions from 0x1000 are sums of 380/45/11: 771 and 782 bracket it
    got = servo.move_to(target)
    assert servo.last_report.status == "oscillation"
    assert servo.last_report.reversals == 4
    assert abs(got - target) <= 11


def test_servo_reports_a_stuck_motor():
    motor = BacklashMotor(pos=0xFFF0)
    motor.gains = {1: 0.0, 3: 0.0, 7: 0.0}
    with pytest.raises(DeviceError, match="does not move"):
        RelativeServoFocus(motor).move_to(0x2000)
