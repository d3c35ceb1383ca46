"""Focus LUT: PCHIP-in-diopters interpolant, exact inverse, capture plan, file I/O and errors."""

import numpy as np
import pytest

from zedd_capture.calibration.focus_lut import (FocusLUT, FocusLUTEntry, FocusLUTError, provenance, read_focus_lut,
                                                write_focus_lut)

CODES = [0x6D3E, 0x4EA8, 0x3B39, 0x2D09, 0x2371, 0x1DB4, 0x183F, 0x1657, 0x1113]
DIST = [0.82, 1.15, 1.58, 2.17, 3.08, 3.98, 5.10, 6.22, 8.10]


def lut():
    return FocusLUT([FocusLUTEntry(h, d, 0.001, 0.05) for h, d in zip(CODES, DIST)], provenance("focus_lut", "t"))


def test_entries_reproduced_and_monotone_between():
    L = lut()
    assert np.allclose(L.distance_m(np.array(CODES)), DIST, rtol=1e-12)
    hs = np.linspace(min(CODES), max(CODES), 2000)
    d = L.diopters(hs)
    assert np.all(np.diff(d) > 0)  # larger hexcode = nearer focus, strictly monotone


def test_inverse_is_exact():
    L = lut()
    for target in [0.82, 1.0, 2.5, 3.08, 7.7, 8.1]:
        h = L.hexcode_for(target)
        assert abs(L.distance_m(h) - target) < 1e-6 * target
    with pytest.raises(FocusLUTError, match="outside the calibrated range"):
        L.hexcode_for(20.0)


def test_capture_plan_rounds_to_integer_hexcodes():
    runs = lut().capture_plan([0.9, 3.08, 8.0])
    assert [r.run for r in runs] == [1, 2, 3]
    assert runs[1].hexcode == 0x2371
    for r, d in zip(runs, [0.9, 3.08, 8.0]):
        assert abs(r.focus_distance_m / d - 1) < 5e-4  # one count ~ 5e-5 diopters


def test_roundtrip_and_truth_format(tmp_path):
    p = tmp_path / "focus_lut.tsv"
    write_focus_lut(p, lut())
    text = p.read_text()
    assert text.startswith("#") and "rig: t" in text
    back = read_focus_lut(p)
    assert np.allclose(back.distances_m, lut().distances_m, rtol=1e-6)
    truth = tmp_path / "truth.tsv"
    truth.write_text("# twin truth\n6D3E\t0.82\n1113\t8.1\n")
    assert read_focus_lut(truth).distance_m("1113") == pytest.approx(8.1)


def test_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("# x\n6D3E\t0.82\nXYZ1\t3.0\n")
    with pytest.raises(FocusLUTError, match=r"bad.tsv:3: hexcode"):
        read_focus_lut(p)
    p.write_text("6D3E\t0.82\n4EA8\t0.70\n1113\t8.1\n")
    with pytest.raises(FocusLUTError, match="not monotone"):
        read_focus_lut(p)
    with pytest.raises(FocusLUTError, match="outside the calibrated range"):
        lut().distance_m(0x0100)
