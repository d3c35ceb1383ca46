"""Scoring depth-from-focus models on ZEDD samples: metrics, data reading, baseline, submission."""
from .metrics import METRIC_KEYS, depth_metrics, mean_metrics, valid_mask

__all__ = ["METRIC_KEYS", "depth_metrics", "mean_metrics", "valid_mask"]
