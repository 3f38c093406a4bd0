"""The trainer's online theory: the accumulators of ALGORITHMS.md [C1] / [C3] and the bound each run should follow.

`sfbench.theory` is numpy only and works on arrays after the fact; this is its torch-side twin that the trainer feeds
once per step, at the cost of a few scalars:

- **[C1]** (SF optimizers, `optimizer.theory_bound == "C1"`): `S1 = Σ_{t<T} γ_t`, `S2 = Σ_{t<T} γ_t² ‖g_t‖²_P`
  (P-norm for the Adam base, read from the optimizer's `last_grad_sq_P`; the Euclidean norm otherwise), and
  `theory/bound = (D² + S2) / (2 S1)` at every logged step.
- **[C3]** (baselines: SGD-momentum, AdamW — any optimizer without `theory_bound`): the last-iterate bound needs the
  whole history (γ_t, ‖g_t‖²), so those are kept in memory (two floats per step) and the O(T) bound of
  `sfbench.theory.sgd_last_iterate_bound` is evaluated on about 500 evenly spaced steps plus every evaluation step
  and the last one, so a run pays O(500 T) in total, not O(T²).
- **D**: the task's exact `D = ‖x_0 − x*‖` where it knows it (the testbeds' `summary()["D"]`); otherwise the distance
  travelled by x so far, `max_{s ≤ t} ‖x_s − x_0‖` (DoG's r̄ estimate), measured every `d_every` steps and at every
  evaluation — the origin x_0 is a copy of the initial parameters (one extra copy of the model in memory).

The step size is the first parameter group's (`lr` as logged); with per-group learning rates the bound is that of
the first group's schedule.

Logged keys (DESIGN.md metric contract): `theory/S1`, `theory/S2`, `theory/grad_sq`, `theory/D`, `theory/bound`.
The state (sums, history, r̄) goes into the checkpoint so a resumed run's bound equals an uninterrupted one's.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..theory import sgd_last_iterate_bound

C3_POINTS = 500


class OnlineBound:
    def __init__(self, optimizer: Any, total_steps: int, task_D: float | None, d_every: int = 10):
        self.opt = optimizer
        self.kind = getattr(optimizer, "theory_bound", "C3")
        self.task_D = None if task_D is None else float(task_D)
        self.d_every = max(1, int(d_every))
        self.c3_every = max(1, total_steps // C3_POINTS)
        self.total_steps = total_steps
        self.S1 = self.S2 = 0.0
        self.r_bar = 0.0
        self.lrs: list[float] = []
        self.grad_sqs: list[float] = []
        self.origin = None
        if self.task_D is None:
            self.origin = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
        if hasattr(optimizer, "record_grad_sq"):
            optimizer.record_grad_sq = True

    @property
    def d_source(self) -> str:
        return "task" if self.task_D is not None else "distance"

    def _distance(self) -> float:
        if hasattr(self.opt, "distance_sq_at_x"):
            return math.sqrt(self.opt.distance_sq_at_x(self.origin))
        params = [p.detach() for g in self.opt.param_groups for p in g["params"]]
        with torch.no_grad():       # multi-tensor ops, one host sync
            norms = torch._foreach_norm(torch._foreach_sub(params, self.origin))
            return math.sqrt(float(torch.stack(norms).double().square().sum())) if norms else 0.0

    def after_step(self, step: int, lr: float, grad_sq: float, force: bool = False) -> dict[str, float]:
        """Call after optimizer step `step` (1-based) taken with step size `lr`; `grad_sq` = ‖g‖² actually used
        (after clipping). Returns the metrics to log. `force`: an evaluation or the last step (D and [C3] now)."""
        own = getattr(self.opt, "last_grad_sq_P", None)
        g2 = float(own) if own is not None else float(grad_sq)
        self.S1 += lr
        self.S2 += lr * lr * g2
        out = {"theory/S1": self.S1, "theory/S2": self.S2, "theory/grad_sq": g2}
        if self.kind == "C3":
            self.lrs.append(lr)
            self.grad_sqs.append(g2)
        if self.origin is not None and (force or step % self.d_every == 0 or step == 1):
            self.r_bar = max(self.r_bar, self._distance())
        D = self.task_D if self.task_D is not None else self.r_bar
        out["theory/D"] = D
        if self.kind == "C1":
            out["theory/bound"] = (D * D + self.S2) / (2 * self.S1) if self.S1 > 0 else math.inf
        elif force or step % self.c3_every == 0 or step == self.total_steps:
            out["theory/bound"] = sgd_last_iterate_bound(self.lrs, self.grad_sqs, D)
        return out

    def summary(self) -> dict[str, Any]:
        return {"bound": self.kind, "D": self.task_D if self.task_D is not None else self.r_bar,
                "D_source": self.d_source}

    def state_dict(self) -> dict[str, Any]:
        return {"S1": self.S1, "S2": self.S2, "r_bar": self.r_bar, "lrs": list(self.lrs),
                "grad_sqs": list(self.grad_sqs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.S1, self.S2, self.r_bar = state["S1"], state["S2"], state["r_bar"]
        self.lrs, self.grad_sqs = list(state["lrs"]), list(state["grad_sqs"])
