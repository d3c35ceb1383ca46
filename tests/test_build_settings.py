"""build-depth settings from the command line: `zedd build-depth --set name=value`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from zedd_capture.cli import app
from zedd_capture.pointcloud.config import BuildConfig, BuildDepthError, with_settings


def test_settings_replace_fields_with_typed_values():
    cfg = with_settings(BuildConfig(), ["spill_ratio=0.35", "plane_radius_px=[2, 4]", "plane_sigma_px=[null, 2.0]",
                                        "band_m=null", "adaptive_noise=false", "occlusion_radius_px=4",
                                        "aggregate.map_voxel_m=0.02", "free_space_eps_px=1"])
    assert cfg.spill_ratio == 0.35 and cfg.plane_radius_px == (2, 4) and cfg.plane_sigma_px == (None, 2.0)
    assert cfg.band_m is None and cfg.adaptive_noise is False and cfg.occlusion_radius_px == 4
    assert cfg.aggregate.map_voxel_m == 0.02 and cfg.aggregate.mode == BuildConfig().aggregate.mode
    assert cfg.free_space_eps_px == 1.0 and isinstance(cfg.free_space_eps_px, float)
    # the projection reads them: the zbuffer config carries the new values
    z = cfg.zbuffer_config()
    assert z.spill_ratio == 0.35 and z.plane_radius_px == (2, 4) and z.band_m is None
    assert BuildConfig().spill_ratio == 0.4  # the defaults are untouched


@pytest.mark.parametrize("settings, message", [
    (["spil_ratio=0.3"], "unknown setting 'spil_ratio=0.3': BuildConfig has no field 'spil_ratio'"),
    (["aggregate.nope=1"], "AggregateConfig has no field 'nope'"),
    (["aggregate=1"], "'aggregate' holds settings of its own"),
    (["spill_ratio=abc"], "setting 'spill_ratio=abc': spill_ratio is float (0.4), not str"),
    (["occlusion_radius_px=2.5"], "occlusion_radius_px is int (8), not float"),
    (["adaptive_noise=1"], "adaptive_noise is bool (True), not int"),
    (["spill_ratio"], "setting 'spill_ratio' is not name=value"),
    (["spill_ratio=-1"], "ZbufferConfig.spill_ratio = -1.0: must be >= 0"),
    (["plane_radius_px=[2, 4, 8]", "plane_sigma_px=[1.0]"], "ZbufferConfig.plane_sigma_px"),
    (["slide_zone_px=-1"], "BuildConfig.slide_zone_px = -1: must be a finite number >= 0"),
    (["edge_snap_max_m=.nan"], "BuildConfig.edge_snap_max_m = nan: must be a finite number >= 0"),
    (["projection_width_px=0"], "BuildConfig.projection_width_px = 0: must be >= 1"),
    (["max_frames=1"], "BuildConfig.max_frames = 1: must be >= 2"),
    (["edge_band_width_px=0"], "BuildConfig.edge_band_width_px = 0: must be >= 1"),
    # the nested configs' numbers too
    (["aggregate.k=-5"], "BuildConfig.aggregate.k = -5: must be a finite number >= 0"),
    (["aggregate.alpha=.nan"], "BuildConfig.aggregate.alpha = nan: must be a finite number >= 0"),
    (["register.min_fitness=-1"], "BuildConfig.register.min_fitness = -1.0: must be a finite number >= 0"),
    # a list for a setting of one value (plane_radius_px takes one per scale, spill_ratio does not)
    (["spill_ratio=[0.3]"], "spill_ratio takes one value (0.4), not a list"),
    (["edge_jump_m=[1, 2]"], "edge_jump_m takes one value (0.1), not a list"),
    (["aggregate.mode=paper"], "the aggregation mode is --mode"),
])
def test_bad_settings_are_one_error_naming_the_setting(settings, message):
    with pytest.raises(BuildDepthError) as err:
        with_settings(BuildConfig(), settings)
    assert message in str(err.value)


def test_cli_rejects_a_bad_setting_before_reading_or_writing_anything(tmp_path):
    result = CliRunner().invoke(app, ["build-depth", "--scene", "kitchen01", "--root", str(tmp_path),
                                      "--set", "spill_ratio=0.3", "--set", "plane_radius=4"])
    assert result.exit_code == 1
    assert "unknown setting 'plane_radius=4'" in result.output
    assert list(tmp_path.iterdir()) == []  # no scene read (there is none), nothing written
