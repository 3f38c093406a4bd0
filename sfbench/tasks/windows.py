"""Deterministic (x, y) batches of windows of a token split: :func:`sample_windows` for training (a batch depends
only on ``(seed, step)``, so a resumed run sees exactly the batches an uninterrupted run would) and
:func:`eval_windows` for evaluation."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch

from .sources import DataError


def _check_windows(tokens: Any, batch_size: int, block_size: int) -> np.ndarray:
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    arr = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
    if arr.ndim != 1:
        raise DataError(f"tokens must be a 1-D array, got shape {arr.shape}")
    for nm, v in (("batch_size", batch_size), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise DataError(f"{nm} must be a positive integer, got {v!r}")
    if block_size + 1 > arr.shape[0]:
        raise DataError(f"the token split is too short for the block size: {arr.shape[0]} tokens, but one "
                        f"(input, target) window needs block_size + 1 = {block_size + 1}; use more text, a "
                        "smaller block_size, or a larger val_frac (if this is the validation split)")
    return arr


def _gather(arr: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(block_size + 1, dtype=np.int64)[None, :]
    buf = arr[idx].astype(np.int64)  # fancy indexing copies only the touched pages of a memmap
    x = torch.from_numpy(np.ascontiguousarray(buf[:, :-1]))
    y = torch.from_numpy(np.ascontiguousarray(buf[:, 1:]))
    return x, y


def sample_windows(tokens: Any, batch_size: int, block_size: int, seed: int,
                   step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random training batch that depends only on ``(seed, step)``.

    Returns int64 tensors ``x, y`` of shape ``(batch_size, block_size)`` with
    ``x[b] = tokens[i:i+block]`` and ``y[b] = tokens[i+1:i+block+1]``; the start
    indices ``i`` are drawn uniformly from ``[0, len - block_size - 1]`` by a
    numpy generator seeded with ``SeedSequence([seed, step])`` -- no state is
    carried between calls, so resuming at step k reproduces the batches exactly.
    """
    arr = _check_windows(tokens, batch_size, block_size)
    for nm, v in (("seed", seed), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise DataError(f"{nm} must be a non-negative integer, got {v!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
    starts = rng.integers(0, arr.shape[0] - block_size, size=batch_size, dtype=np.int64)
    return _gather(arr, starts, block_size)


def eval_windows(tokens: Any, batch_size: int, block_size: int,
                 max_batches: Optional[int] = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, deterministic sequence of full ``(x, y)`` batches for evaluation.

    Window starts are evenly spaced over the whole split. The number of batches
    is ``min(max_batches, (len - 1) // block_size // batch_size)`` (at least 1),
    so windows do not overlap when the split is long enough and the whole
    split is covered when ``max_batches`` is None. Every batch has exactly
    ``batch_size`` rows (no ragged last batch, so compiled models see one shape);
    on a split too short for one batch of disjoint windows, windows overlap.

    Arguments are validated when called, not on first iteration.
    """
    arr = _check_windows(tokens, batch_size, block_size)
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, (int, np.integer)) or max_batches <= 0
    ):
        raise DataError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    n = arr.shape[0]
    n_batches = max(1, (n - 1) // block_size // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, int(max_batches))
    n_windows = n_batches * batch_size
    last_start = n - block_size - 1
    starts = np.floor(np.linspace(0, last_start, num=n_windows)).astype(np.int64)

    def _batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(n_batches):
            yield _gather(arr, starts[b * batch_size:(b + 1) * batch_size], block_size)

    return _batches()
