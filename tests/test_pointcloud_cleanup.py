"""Declarative cleanup regions: polygon + depth range in the camera image, 3-D boxes."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from zedd_capture.pointcloud.cleanup import CleanupError, cleanup_mask, load_regions

K = np.array([[100.0, 0, 49.5], [0, 100.0, 39.5], [0, 0, 1]])


def test_polygon_and_box_regions(tmp_path):
    path = tmp_path / "cleanup.yaml"
    path.write_text(yaml.safe_dump({"regions": [
        {"name": "person", "type": "polygon", "image_size": [200, 160], "polygon": [[0, 0], [98, 0], [98, 158], [0, 158]],
         "depth_m": [1.0, 2.0]},
        {"name": "pole", "type": "box", "frame": "lidar", "min": [-1, -1, 2.5], "max": [1, 1, 3.5]},
    ]}))
    regions = load_regions(path)
    # camera == world; lidar frame = world shifted by 1 m along z
    pts = np.array([[-0.5, 0, 1.5], [0.5, 0, 1.5], [-0.5, 0, 2.5], [0, 0, 2.0], [0.1, 0, 4.0]], np.float32)
    T_lidar_world = np.eye(4)
    T_lidar_world[2, 3] = -1.0
    keep, removed = cleanup_mask(pts, regions, np.eye(4), K, (100, 80), T_lidar_world)
    # left half of the image in 1-2 m is removed; the box removes world z in [3.5, 4.5] m
    assert keep.tolist() == [False, True, True, True, False]
    assert removed == {"person": 1, "pole": 1}
    assert load_regions(tmp_path / "none.yaml") == []


@pytest.mark.parametrize("region,msg", [
    ({"type": "box", "min": [0, 0, 0], "max": [1, -1, 1]}, "max > min"),
    ({"type": "polygon", "image_size": [10, 10], "polygon": [[0, 0], [1, 1]]}, ">= 3"),
    ({"type": "sphere"}, "type must be"),
    ({"type": "polygon", "polygon": [[0, 0], [1, 1], [2, 0]]}, "image_size"),
])
def test_bad_regions_name_the_file(tmp_path, region, msg):
    path = tmp_path / "cleanup.yaml"
    path.write_text(yaml.safe_dump({"regions": [region]}))
    with pytest.raises(CleanupError, match=msg) as e:
        load_regions(path)
    assert "cleanup.yaml" in str(e.value)
