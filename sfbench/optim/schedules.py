"""Learning-rate schedules as pure functions h(t; T) (ALGORITHMS.md section B, "Schedules").

The optimizer step t (0-based) uses the step size

    gamma_t = gamma * h(t; T),        t = 0, 1, ..., T - 1,

where gamma is the base learning rate and T = ``total_steps`` is the horizon. Because h depends only on
(t, T) and a few options, a whole schedule can be evaluated as an array before a run starts
(``Schedule.array``), which is what the theory module needs for the bounds [C1]-[C3]; during training the same
function drives an ordinary ``torch.optim.lr_scheduler.LambdaLR`` (``Schedule.lr_scheduler``).

Why not torch's own schedulers (CosineAnnealingLR, LinearLR, SequentialLR ...)? They are stateful and mostly
defined by recursions on the previous lr, so they cannot be evaluated at an arbitrary step or as a whole array
without replaying an optimizer; here torch only supplies LambdaLR, fed by the closed forms below.

Schedules (W = ``warmup_steps``, D = decay steps, f = ``final_frac``, u clipped to [0, 1]):

==================  ==========================================================================================
``constant``        h = 1                                                                  [B "constant"]
``cosine``          h = f + (1 - f) * 1/2 (1 + cos(pi u)),  u = (t - W) / (T - W)        [B "cosine"]
``wsd``             h = f + (1 - f) * c(u), u = (t - (T - D)) / D, c(u) = 1 - u ("linear")  [B "wsd"]
                    or c(u) = 1 - sqrt(u) ("1-sqrt"); i.e. 1 until T - D, then (T - t)/D or 1 - sqrt((t-T+D)/D)
``linear``          h = f + (1 - f) * (1 - u),  u = t / T                                   [B "linear"]
``linear_growth``   h = t + 1   (the linearly growing step of SFN Thm 4)                   [B "linear_growth"]
``poly_decay``      h = (t + 1)^(-p),  p = ``power`` >= 0                                   [B "poly_decay"]
==================  ==========================================================================================

Warm-up [B "warmup"] is an option of every schedule: the value above is multiplied by min(1, (t + 1) / W)
(W = 0: no warm-up). With f = 0 the decaying schedules reach exactly 0 at t = T and are still positive at the
last step t = T - 1 (cosine and linear by 1 - cos(pi/(T-W)) and 1/T, wsd by 1/D).

Steps past the horizon: t is clamped to T, so for t >= T every schedule keeps its value at t = T (the decaying
ones sit at f; linear_growth at T + 1; poly_decay at (T + 1)^(-p)).

Example::

    sched = make_schedule("wsd", total_steps=1000, warmup_steps=50, decay_frac=0.2)
    h = sched.array()                        # numpy array of h(0), ..., h(999)
    lr_sched = sched.lr_scheduler(opt)       # LambdaLR: lr = base_lr * h(k) after k calls of .step()
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Callable, Optional

import numpy as np
import torch

__all__ = ["SCHEDULES", "COOLDOWNS", "Schedule", "LookaheadLambdaLR", "make_schedule"]

#: Valid schedule names (ALGORITHMS.md section B; warm-up is an option of each, not a schedule of its own).
SCHEDULES = ("constant", "cosine", "wsd", "linear", "linear_growth", "poly_decay")

#: Valid shapes of the wsd cool-down.
COOLDOWNS = ("linear", "1-sqrt")


def _choices(values) -> str:
    return ", ".join(repr(v) for v in values)


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule h(t; T) from ALGORITHMS.md section B (see the module docstring for formulas).

    Args:
        name: one of ``SCHEDULES``.
        total_steps: the horizon T >= 1 (number of optimizer steps of the run).
        warmup_steps: W >= 0 (and <= T; < T for ``cosine``): multiply by min(1, (t + 1)/W). All schedules.
        decay_frac: cool-down length of ``wsd`` as a fraction of T, in (0, 1]; D = max(1, round(decay_frac * T)).
        decay_steps: cool-down length of ``wsd`` in steps, in [1, T]; overrides ``decay_frac`` when given.
        cooldown: shape of the ``wsd`` cool-down, ``"linear"`` ((T - t)/D) or ``"1-sqrt"``
            (1 - sqrt((t - T + D)/D)).
        final_frac: f in [0, 1], the value the decaying part ends at (``cosine``, ``wsd``, ``linear``):
            h = f + (1 - f) * (the unfloored value).
        power: p >= 0, the exponent of ``poly_decay``.

    Options a schedule does not use are still validated, then ignored (so one set of options can be swept
    across schedules).

    Calling the schedule gives h at one step; ``array`` gives h at t = 0..n-1 as a numpy array;
    ``lr_scheduler`` wraps it in a ``torch.optim.lr_scheduler.LambdaLR``.
    """

    name: str
    total_steps: int
    warmup_steps: int = 0
    decay_frac: float = 0.2
    decay_steps: Optional[int] = None
    cooldown: str = "linear"
    final_frac: float = 0.0
    power: float = 0.5

    def __post_init__(self) -> None:
        T = self.total_steps
        if self.name not in SCHEDULES:
            raise ValueError(f"name={self.name!r} is not allowed; choose one of {_choices(SCHEDULES)}")
        if not _is_int(T) or T < 1:
            raise ValueError(f"total_steps={T!r} is not allowed; it must be an integer >= 1")
        W = self.warmup_steps
        if not _is_int(W) or not 0 <= W <= T:
            raise ValueError(
                f"warmup_steps={W!r} is not allowed; it must be an integer in [0, total_steps={T}]"
            )
        if self.name == "cosine" and W >= T:
            raise ValueError(
                f"warmup_steps={W!r} is not allowed for 'cosine'; it must be < total_steps={T} "
                "(the decay runs over T - W > 0 steps)"
            )
        if not _is_real(self.decay_frac) or not 0.0 < self.decay_frac <= 1.0:
            raise ValueError(f"decay_frac={self.decay_frac!r} is not allowed; it must be in (0, 1]")
        D = self.decay_steps
        if D is not None and (not _is_int(D) or not 1 <= D <= T):
            raise ValueError(
                f"decay_steps={D!r} is not allowed; it must be None or an integer in [1, total_steps={T}]"
            )
        if self.cooldown not in COOLDOWNS:
            raise ValueError(f"cooldown={self.cooldown!r} is not allowed; choose one of {_choices(COOLDOWNS)}")
        if not _is_real(self.final_frac) or not 0.0 <= self.final_frac <= 1.0:
            raise ValueError(f"final_frac={self.final_frac!r} is not allowed; it must be in [0, 1]")
        if not _is_real(self.power) or not 0.0 <= self.power < math.inf:
            raise ValueError(f"power={self.power!r} is not allowed; it must be a finite number >= 0")

    @property
    def decay_length(self) -> int:
        """D, the ``wsd`` cool-down length in steps: ``decay_steps``, else max(1, round(decay_frac * T))."""
        if self.decay_steps is not None:
            return int(self.decay_steps)
        return max(1, int(math.floor(self.decay_frac * self.total_steps + 0.5)))

    # -- evaluation ---------------------------------------------------------------------------------------

    def _h(self, t: np.ndarray) -> np.ndarray:
        """h(t; T) for an array of steps t >= 0 (float64). The single implementation behind __call__ and array."""
        T, W, f = self.total_steps, self.warmup_steps, float(self.final_frac)
        t = np.minimum(t, T)  # past the horizon, stay at the value at t = T
        rest = _SHAPES[self.name](self, t)
        if self.name in ("cosine", "wsd", "linear"):
            # f + (1 - f) r, written so that r = 1 gives exactly 1 and r = 0 gives exactly f.
            rest = rest + f * (1.0 - rest)
        if W > 0:
            rest = np.minimum(1.0, (t + 1.0) / W) * rest
        return rest

    def __call__(self, t: float) -> float:
        """h(t; T) at step t >= 0 (normally an integer; 0-based, so step t uses gamma * h(t; T))."""
        if not _is_real(t) or not t >= 0:
            raise ValueError(f"t={t!r} is not allowed; the step must be a number >= 0")
        return float(self._h(np.asarray(t, dtype=np.float64)))

    def array(self, n: Optional[int] = None) -> np.ndarray:
        """h(t; T) for t = 0, 1, ..., n - 1 as a float64 numpy array (default n = total_steps; n may exceed T)."""
        n = self.total_steps if n is None else n
        if not _is_int(n) or n < 0:
            raise ValueError(f"n={n!r} is not allowed; it must be None or an integer >= 0")
        return self._h(np.arange(n, dtype=np.float64))

    def lr_scheduler(self, optimizer: torch.optim.Optimizer, last_epoch: int = -1) -> torch.optim.lr_scheduler.LambdaLR:
        """A ``LambdaLR`` that sets each param group's lr to base_lr * h(k; T).

        Right after construction the lr is base_lr * h(0); after the k-th ``scheduler.step()`` (called after
        ``optimizer.step()``, as torch expects) it is base_lr * h(k). ``last_epoch`` is passed through for
        resuming (torch then needs ``initial_lr`` in the param groups, as for any LRScheduler).

        It also writes ``group["lr_lookahead"] = [base_lr * h(k), base_lr * h(k + 1)]``: the step size of the coming
        step and of the one after, which the ``schedulet`` weighting needs (it mixes z_{t+1} into x with the weight
        γ_{t+1}; docs/theory.md). Optimizers that don't know the key ignore it.
        """

        # A plain function (not the Schedule itself) so LambdaLR.state_dict() does not try to save/overwrite
        # our frozen fields: the schedule is rebuilt from its config on resume.
        def lr_lambda(step: int) -> float:
            return self(step)

        return LookaheadLambdaLR(optimizer, lr_lambda, last_epoch=last_epoch)


class LookaheadLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` that also tells the optimizer the next step size: after each ``step()`` every param group holds
    ``lr_lookahead = [lr, base_lr * lr_lambda(last_epoch + 1)]`` (floats). A pure h(t; T) makes the next value known
    in advance; torch's own schedulers can't offer it. State and behaviour are otherwise LambdaLR's."""

    def step(self, epoch: int | None = None) -> None:  # noqa: D102 (LambdaLR.step)
        if epoch is None:
            super().step()
        else:
            super().step(epoch)
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr_lookahead"] = [float(group["lr"]), float(base_lr * fn(self.last_epoch + 1))]


# -- the shapes, before final_frac and warm-up (t is a float64 array already clamped to [0, T]) ---------------


def _constant(s: Schedule, t: np.ndarray) -> np.ndarray:
    """[B constant] h = 1."""
    return np.ones_like(t)


def _cosine(s: Schedule, t: np.ndarray) -> np.ndarray:
    """[B cosine] 1/2 (1 + cos(pi u)), u = (t - W)/(T - W) clipped to [0, 1] (so it is 1 during warm-up)."""
    T, W = s.total_steps, s.warmup_steps
    u = np.clip((t - W) / (T - W), 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * u))


def _wsd(s: Schedule, t: np.ndarray) -> np.ndarray:
    """[B wsd] 1 until T - D, then (T - t)/D = 1 - u ("linear") or 1 - sqrt(u) ("1-sqrt"), u = (t - T + D)/D."""
    T, D = s.total_steps, s.decay_length
    u = np.clip((t - (T - D)) / D, 0.0, 1.0)
    return 1.0 - u if s.cooldown == "linear" else 1.0 - np.sqrt(u)


def _linear(s: Schedule, t: np.ndarray) -> np.ndarray:
    """[B linear] 1 - t/T."""
    return 1.0 - t / s.total_steps


def _linear_growth(s: Schedule, t: np.ndarray) -> np.ndarray:
    """[B linear_growth] t + 1: the linearly growing step gamma_t proportional to t of SFN Thm 4."""
    return t + 1.0


def _poly_decay(s: Schedule, t: np.ndarray) -> np.ndarray:
    """[B poly_decay] (t + 1)^(-p)."""
    return (t + 1.0) ** (-float(s.power))


_SHAPES: dict[str, Callable[[Schedule, np.ndarray], np.ndarray]] = {
    "constant": _constant,
    "cosine": _cosine,
    "wsd": _wsd,
    "linear": _linear,
    "linear_growth": _linear_growth,
    "poly_decay": _poly_decay,
}
assert tuple(_SHAPES) == SCHEDULES


def make_schedule(name: str, total_steps: int, **options) -> Schedule:
    """Build and validate a ``Schedule`` (options: warmup_steps, decay_frac, decay_steps, cooldown, final_frac,
    power; see ``Schedule``). Raises ValueError naming the offending argument, its value and what is allowed."""
    return Schedule(name, total_steps, **options)
