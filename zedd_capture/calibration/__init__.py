"""Calibration: focus LUT (hexcode -> metres), canonical intrinsics, breathing warps, lidar->camera extrinsic."""
