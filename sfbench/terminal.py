"""Terminal handling shared by the rooms that draw progress bars (the trainer, the distillation teacher's training);
stdlib only, so any room may import it."""

from __future__ import annotations

import os
import sys


def tqdm_width_options() -> dict:
    """tqdm follows the terminal's size, except where it reports 0×0 (a bare pty without a window size): tqdm
    would then draw a zero-width bar and hide it as "below the screen", so use a fixed 100×24 instead."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": 100, "nrows": 24}
