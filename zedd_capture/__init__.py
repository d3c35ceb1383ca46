"""zedd-toolkit: build depth-from-defocus benchmarks (ZEDD) from a camera focus stack and a lidar sweep."""

__version__ = "0.1.0"
