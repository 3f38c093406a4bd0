"""The names sfbench/tasks/gpt.py takes from ``text``; they live in sources.py and windows.py."""

from .sources import DataError
from .windows import eval_windows, sample_windows

__all__ = ["DataError", "eval_windows", "sample_windows"]
