"""The task protocol the trainer is written against (in the spirit of AlgoPerf's spec.py).

A task is built from its config without touching data (`__init__` must be cheap and validate its arguments, raising
`ConfigError` naming the key); `setup(device)` then loads data and anything expensive. Batches are a pure function of
the step (`batch(step)`), so a resumed run sees exactly the batches an uninterrupted one would: the data position
*is* the step.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import torch


class ConfigError(ValueError):
    """A bad configuration value: the message names the key, the value and what is allowed."""


class Task:
    """Base class of tasks. Subclasses implement `setup`, `model`, `batch`, `loss`, `evaluate`."""

    #: a short name for logs and W&B's job_type
    name: str = "task"

    def setup(self, device: torch.device) -> None:
        """Load data (and e.g. a teacher) onto `device`. May be slow; show progress. Idempotent."""

    def model(self) -> torch.nn.Module:
        raise NotImplementedError

    def batch(self, step: int) -> Any:
        """The training batch of `step`, deterministic in (seed, step)."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, float | torch.Tensor | None]:
        """(minibatch loss, lower bound ℓ* on it or None). ℓ* feeds SF-Polyak [B1]."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        """Metrics of `model` as it is (the trainer puts it at x first): keys like "eval/loss"."""
        raise NotImplementedError

    def eval_cost(self) -> float:
        """One evaluation's cost in training steps, stated from the configuration (a forward pass counts a third of
        a training step). `trainer.eval_every=auto` spaces evaluations by it; it is never measured, so the same
        command evaluates at the same steps on any machine. Default: one step."""
        return 1.0

    def bn_batches(self, n: int) -> Iterator[Any]:
        """Training batches for recomputing BatchNorm statistics at x (docs/theory.md A); default: the first n."""
        for i in range(n):
            yield self.batch(i)

    def summary(self) -> dict[str, Any]:
        """Task facts worth recording (sizes, teacher's loss, cache use, …); read at the start and the end of a run.

        The online bound (docs/theory.md) reads three of them: `D` (exact ‖w₀ − x*‖), `convex` (True when the
        training objective is convex, so the bounds can be theorems) and `stochastic` (True when steps use
        minibatch gradients: a bound then holds in expectation, not run by run)."""
        return {}

    def gradient_bound(self, model: torch.nn.Module) -> float | None:
        """An upper bound on ‖g‖ for every gradient a training step can take at the model's current parameters (any
        batch the task draws), or None. The online bound needs it for the one gradient not computed yet (the bound
        on f(x_T) contains the gradient at y_T; docs/theory.md); without it the last observed ‖g‖ stands in and the
        bound is a heuristic."""
        return None

    def persist(self) -> None:
        """Save what the task cached during the run (called at checkpoints and at the end); default: nothing."""


def check_number(key: str, value: Any, lo: float = 0.0, hi: float = math.inf, *, lo_open: bool = False,
                 hi_open: bool = False, integer: bool = False) -> float:
    """A real number (an integer with `integer=True`) in the interval; NaN and bools are refused, and infinity
    unless `hi` is infinite and closed."""
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    ok = ok and not math.isnan(value)
    ok = ok and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        kind = "an integer" if integer else "a number"
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ConfigError(f"{key}={value!r} is not allowed; use {kind} in {interval}")
    return value


def check_positive_int(key: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key}={value!r} is not allowed; use an integer >= {minimum}")
    return value


def check_choice(key: str, value: Any, choices: tuple) -> Any:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of {', '.join(map(repr, choices))}")
    return value


def check_fraction(key: str, value: Any, lo_open: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < 1 if lo_open else 0 <= value < 1):
        raise ConfigError(f"{key}={value!r} is not allowed; use a number in {'(0, 1)' if lo_open else '[0, 1)'}")
    return float(value)
