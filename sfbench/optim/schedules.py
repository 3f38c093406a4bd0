"""Learning-rate schedules as pure functions h(t; T): step t (0-based) of a T-step run uses γ_t = γ · h(t; T).

A pure h(t; T) is known at every step in advance — as an array for the theory's bounds (`Schedule.array`), and γ_{t+1}
for the `schedulet` weighting; torch's schedulers are recursions on the previous lr, so torch supplies only the
`LambdaLR` that drives a run (`Schedule.lr_scheduler`).

With W = `warmup_steps`, D the wsd cool-down length, f = `final_frac`, u clipped to [0, 1]:

    constant        h = 1
    cosine          h = f + (1 − f) · ½ (1 + cos(π u)),  u = (t − W) / (T − W)
    wsd             h = f + (1 − f) · c(u),  u = (t − (T − D)) / D,  c(u) = 1 − u ("linear") or 1 − √u ("1-sqrt")
    linear          h = f + (1 − f) · (1 − u),  u = t / T
    linear_growth   h = t + 1                  (the linearly growing step of SFN Thm 4)
    poly_decay      h = (t + 1)^(−p),  p = `power`

Every schedule takes a warm-up: h is multiplied by min(1, (t + 1)/W) (W = 0: none), or by min(1, t/W) with
`warmup_from_zero` (the first step's lr is 0, as in the recipes that warm up with LambdaLR). With f = 0 the decaying ones
reach 0 at t = T and are still positive at the last step t = T − 1. Past the horizon t is clamped to T.

    sched = make_schedule("wsd", total_steps=1000, warmup_steps=50, decay_frac=0.2)
    h = sched.array()                        # h(0), …, h(999) as a numpy array
    lr_sched = sched.lr_scheduler(opt)       # LambdaLR: lr = base_lr · h(k) after k calls of .step()
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Optional

import numpy as np
import torch

SCHEDULES = ("constant", "cosine", "wsd", "linear", "linear_growth", "poly_decay")
COOLDOWNS = ("linear", "1-sqrt")


def _wsd(s: Schedule, t: np.ndarray) -> np.ndarray:
    u = np.clip((t - (s.total_steps - s.decay_length)) / s.decay_length, 0.0, 1.0)
    return 1.0 - u if s.cooldown == "linear" else 1.0 - np.sqrt(u)


_SHAPES = {   # h before final_frac and warm-up, t a float64 array clamped to [0, T]
    "constant": lambda s, t: np.ones_like(t),
    "cosine": lambda s, t: 0.5 * (1.0 + np.cos(np.pi * np.clip((t - s.warmup_steps) / (s.total_steps - s.warmup_steps),
                                                                0.0, 1.0))),
    "wsd": _wsd,
    "linear": lambda s, t: 1.0 - t / s.total_steps,
    "linear_growth": lambda s, t: t + 1.0,
    "poly_decay": lambda s, t: (t + 1.0) ** (-float(s.power)),
}


def _int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """h(t; T) (module docstring): T = `total_steps`, the wsd cool-down `decay_steps` or `decay_frac` · T. Options a
    schedule doesn't use are validated and ignored, so one set of options can be swept across schedules."""

    name: str
    total_steps: int
    warmup_steps: int = 0
    decay_frac: float = 0.2
    decay_steps: Optional[int] = None
    cooldown: str = "linear"
    final_frac: float = 0.0
    power: float = 0.5
    warmup_from_zero: bool = False   # warm-up h·min(1, t/W), 0 at the first step (as torch's LambdaLR recipes do)

    def __post_init__(self) -> None:
        T, W, D = self.total_steps, self.warmup_steps, self.decay_steps
        checks = [
            ("name", self.name in SCHEDULES, f"choose one of {', '.join(map(repr, SCHEDULES))}"),
            ("total_steps", _int(T) and T >= 1, "it must be an integer >= 1"),
            ("warmup_steps", not _int(T) or (_int(W) and 0 <= W <= T),
             f"it must be an integer in [0, total_steps={T}]"),
            ("warmup_steps", self.name != "cosine" or not (_int(W) and _int(T)) or W < T,
             f"for 'cosine' it must be < total_steps={T} (the decay runs over T - W > 0 steps)"),
            ("decay_frac", _real(self.decay_frac) and 0.0 < self.decay_frac <= 1.0, "it must be in (0, 1]"),
            ("decay_steps", D is None or not _int(T) or (_int(D) and 1 <= D <= T),
             f"it must be None or an integer in [1, total_steps={T}]"),
            ("cooldown", self.cooldown in COOLDOWNS, f"choose one of {', '.join(map(repr, COOLDOWNS))}"),
            ("final_frac", _real(self.final_frac) and 0.0 <= self.final_frac <= 1.0, "it must be in [0, 1]"),
            ("power", _real(self.power) and 0.0 <= self.power < math.inf, "it must be a finite number >= 0"),
            ("warmup_from_zero", isinstance(self.warmup_from_zero, bool), "it must be true or false"),
        ]
        for key, ok, allowed in checks:
            if not ok:
                raise ValueError(f"{key}={getattr(self, key)!r} is not allowed; {allowed}")

    @property
    def decay_length(self) -> int:
        """D, the wsd cool-down in steps: `decay_steps`, else max(1, round(decay_frac · T))."""
        if self.decay_steps is not None:
            return int(self.decay_steps)
        return max(1, int(math.floor(self.decay_frac * self.total_steps + 0.5)))

    def _h(self, t: np.ndarray) -> np.ndarray:
        t = np.minimum(t, self.total_steps)
        h = _SHAPES[self.name](self, t)
        if self.name in ("cosine", "wsd", "linear"):    # f + (1 − f) h, exactly 1 at h = 1 and f at h = 0
            h = h + float(self.final_frac) * (1.0 - h)
        if self.warmup_steps > 0:
            h = np.minimum(1.0, (t + (0.0 if self.warmup_from_zero else 1.0)) / self.warmup_steps) * h
        return h

    def __call__(self, t: float) -> float:
        """h(t; T) at step t ≥ 0."""
        if not _real(t) or not t >= 0:
            raise ValueError(f"t={t!r} is not allowed; the step must be a number >= 0")
        return float(self._h(np.asarray(t, dtype=np.float64)))

    def array(self, n: Optional[int] = None) -> np.ndarray:
        """h(t; T) for t = 0, …, n − 1 as float64 (default n = T; n may exceed T)."""
        n = self.total_steps if n is None else n
        if not _int(n) or n < 0:
            raise ValueError(f"n={n!r} is not allowed; it must be None or an integer >= 0")
        return self._h(np.arange(n, dtype=np.float64))

    def lr_scheduler(self, optimizer: torch.optim.Optimizer, last_epoch: int = -1) -> LookaheadLambdaLR:
        """A `LambdaLR` setting each group's lr to base_lr · h(k) after k calls of `step()` (`last_epoch` for
        resuming, as any LRScheduler), which also writes `group["lr_lookahead"]` (`LookaheadLambdaLR`)."""
        # a plain function, not the Schedule: LambdaLR.state_dict() would try to save and overwrite its fields
        return LookaheadLambdaLR(optimizer, lambda step: self(step), last_epoch=last_epoch)


class LookaheadLambdaLR(torch.optim.lr_scheduler.LambdaLR):
    """`LambdaLR` that also tells the optimizer the next step size: after each `step()` every param group holds
    `lr_lookahead = [lr, base_lr · lr_lambda(last_epoch + 1)]`, which the `schedulet` weighting reads (γ_{t+1})."""

    def step(self, epoch: int | None = None) -> None:  # noqa: D102
        super().step() if epoch is None else super().step(epoch)
        for group, base_lr, fn in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr_lookahead"] = [float(group["lr"]), float(base_lr * fn(self.last_epoch + 1))]


def make_schedule(name: str, total_steps: int, **options) -> Schedule:
    """A validated `Schedule` (options: warmup_steps, decay_frac, decay_steps, cooldown, final_frac, power); a bad
    value raises ValueError naming the argument, its value and what is allowed."""
    return Schedule(name, total_steps, **options)
