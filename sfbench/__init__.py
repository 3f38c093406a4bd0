"""sfbench — a benchmark suite for schedule-free optimization research."""

__version__ = "0.1.0"
