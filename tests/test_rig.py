"""Rig configs: the shipped rigs load; invalid configs name file, field and reason."""

import numpy as np
import pytest
import yaml

from zedd_capture.rig import RigError, load_rig, parse_hexcode

PUBLISHED = ["6D3E", "4EA8", "3B39", "2D09", "2371", "1DB4", "183F", "1657", "1113"]


def test_reference_rig_matches_paper():
    rig = load_rig("zedd-reference")
    assert [f"{r.hexcode:04X}" for r in rig.capture.runs] == PUBLISHED
    assert rig.capture.apertures == [1.4, 2.0, 2.8, 4.0, 5.6, 16.0]
    assert rig.capture.canonical_focus_distance_m == 3.08
    assert (rig.depth_map.width_px, rig.depth_map.height_px) == (1824, 1216)
    assert (rig.camera.width_px, rig.camera.height_px) == (4104, 2736)
    assert rig.lidar.mode == "1024x10" and rig.lidar.columns == 1024


def test_sim_rig_is_default_and_same_optics():
    sim, ref = load_rig(), load_rig("zedd-reference")
    assert sim.backend == "sim" and sim.name == "zedd-sim"
    assert sim.lens.focal_length_mm == ref.lens.focal_length_mm
    assert sim.capture.runs == ref.capture.runs
    # quarter resolution keeps the same field of view
    np.testing.assert_allclose(sim.nominal_K()[0, 0] * 4, ref.nominal_K()[0, 0], rtol=1e-9)


def test_exposure_ladder_keeps_exposure_constant():
    rig = load_rig()
    ev = [rig.exposure.shutter_for(n) / n**2 for n in rig.capture.apertures]
    np.testing.assert_allclose(ev, ev[0])


def write_modified(tmp_path, edit):
    data = yaml.safe_load(open(load_rig().source))
    edit(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    "edit, field, reason",
    [
        (lambda d: d["capture"]["runs"][2].update(hexcode="3B3"), "capture.runs.2.hexcode", "not a 4-digit hex code"),
        (lambda d: d["camera"].update(width_px=-5), "camera.width_px", "greater than 0"),
        (lambda d: d["capture"]["runs"].pop(3), "capture", "runs must be numbered 1..8 in order"),
        (lambda d: d["capture"].update(apertures=[1.4, 2.0]), "capture", "all_in_focus_f_number 16.0 is not in apertures"),
        (lambda d: d.update(lidar_to_camera=[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]]), "lidar_to_camera", "rigid transform"),
        (lambda d: d["lidar"].update(mode="4096x5"), "lidar.mode", "Input should be"),
        (lambda d: d.update(colour="red"), "colour", "Extra inputs are not permitted"),
        (lambda d: d.pop("depth_map"), "depth_map", "Field required"),
    ],
)
def test_invalid_config_names_file_field_reason(tmp_path, edit, field, reason):
    p = write_modified(tmp_path, edit)
    with pytest.raises(RigError) as e:
        load_rig(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ")
    assert f"{field}: " in msg and reason in msg


def test_unknown_rig_and_bad_yaml(tmp_path):
    with pytest.raises(RigError, match="nosuchrig: no such rig file"):
        load_rig("nosuchrig")
    p = tmp_path / "x.yaml"
    p.write_text("name: [unclosed")
    with pytest.raises(RigError, match="x.yaml: not valid YAML"):
        load_rig(p)


def test_parse_hexcode():
    assert parse_hexcode("6d3e") == 0x6D3E == parse_hexcode("0x6D3E") == parse_hexcode(0x6D3E)
    for bad in ["6D3E1", "ZZZZ", -1, 0x10000]:
        with pytest.raises(ValueError):
            parse_hexcode(bad)
