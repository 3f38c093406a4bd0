"""The trainer's online theory: the bound on f(x_T) − f* each run logs next to its loss, and what kind of statement
it is (docs/theory.md section C; the derivations are in docs/theory.md).

`sfbench.theory` is numpy only and works on arrays after the fact; this is its torch-side twin that the trainer feeds
once per step, at the cost of a few scalars:

- **SF optimizers** (`optimizer.theory_bound == "C1"`): `theory/bound` is `sfbench.theory.OnlineToBatch`, the
  online-to-batch bound for the averaging weights the optimizer actually applied (its `last_c` and `last_lr` each
  step; docs/theory.md Theorem 2), for the x the trainer evaluates after T steps. For the `schedulet` weighting it is
  [C1], (D² + Σ_{t≤T} γ_t²‖g_t‖²)/(2 Σ_{t≤T} γ_t); for the storage-trick weightings (`lr_power`, `lr`, `uniform`,
  `poly`, `constant`) it is the same theorem with z_0's zero weight and the ratio weight/step made explicit.
- **Baselines** (no `theory_bound`): [C3] (SGD's last iterate) on about 500 evenly spaced steps plus every evaluation
  step and the last one, from the whole history (γ_t, ‖g_t‖²) kept in memory.
- **The gradient not seen yet.** Both bounds on the point after T steps contain the gradient *at* that point, which
  the next step computes: the task's `gradient_bound(model)` (a bound on ‖g‖ there) stands in for it; a task without
  one gets the last observed ‖g‖, and the bound is then a heuristic. [C3] also contains the next step size: the
  scheduled one (any positive value gives a valid bound, since the point does not depend on it).
- **D**: the task's exact `D = ‖x_0 − x*‖` where it knows it (the testbeds' `summary()["D"]`); otherwise the distance
  travelled by x so far, `max_{s ≤ t} ‖x_s − x_0‖` (DoG's r̄ estimate), measured every `d_every` steps and at every
  evaluation — the origin x_0 is a copy of the initial parameters (one extra copy of the model in memory).
  The SF bound also needs R_t ≥ ‖z_t − x*‖ for weightings whose weight/step ratio grows: D + ‖z_t − z_0‖, measured on
  the same cadence and, between measurements (SGD base), bounded by adding the path length γ_t‖g_t‖.

**What kind of statement** (`theory/bound_kind` on every row that has `theory/bound`, and `summary.theory.bound_kind`
with the reasons in `bound_notes`):
- `bound`: a theorem for this run — convex task with exact D and a gradient bound, full-batch gradients, SF with
  the SGD base and no weight decay (any weighting) or plain SGD (no momentum, no weight decay) for [C3], no clipping.
  Then f(x_T) − f* ≤ theory/bound at every logged step (up to a 1e-9 relative rounding allowance).
- `expected`: the same with minibatch gradients: the theorem bounds E[f(x_T)] − f*; one run may exceed it.
- `heuristic`: anything else (Adam base, momentum, weight decay, clipping, nonconvex task, estimated D, no bound on
  the next gradient): the same formula with plug-ins, to compare shapes, not a guarantee.

The step size is the first parameter group's (`lr` as logged); with per-group learning rates the bound is that of
the first group's schedule and is labelled a heuristic.

At the end, `fit` fits the bound to the run's curve ([C4]: loss ≈ C + M·bound) and stores it with the run.

Logged keys (DESIGN.md metric contract): `theory/S1` (Σγ), `theory/S2` (Σγ²‖g‖²), `theory/grad_sq`, `theory/D`,
`theory/G` (the bound used for the next gradient), `theory/bound`, `theory/bound_kind`.
The state (sums, history, r̄) goes into the checkpoint so a resumed run's bound equals an uninterrupted one's.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import torch

from ..theory import ROUNDING_SLACK, OnlineToBatch, sgd_last_iterate_bound
from ..theory.fit import bound_terms, fit_bound, metric_floor
from ..tracking.run_record import METRICS, RunRecord, atomic_write_text, iter_metrics

C3_POINTS = 500
KINDS = ("bound", "expected", "heuristic")


def sgd_caveats(optimizer: Any) -> list[str]:
    """Why [C3] is not a theorem for `optimizer`: it is one for plain SGD (torch.optim.SGD without momentum or weight
    decay, one learning rate) only."""
    if not isinstance(optimizer, torch.optim.SGD):
        return [f"{type(optimizer).__name__}: [C3] is a theorem for plain SGD only"]
    out = []
    groups = optimizer.param_groups
    if any(g.get("momentum", 0) for g in groups):
        out.append("SGD with momentum: [C3] is a theorem for plain SGD only")
    if any(g.get("weight_decay", 0) for g in groups):
        out.append("weight decay > 0: the steps minimise f + λ‖w‖²/2, not the f that is evaluated")
    if len({float(g["lr"]) for g in groups}) > 1:
        out.append("parameter groups with different learning rates")
    return out


class OnlineBound:
    def __init__(self, optimizer: Any, total_steps: int, task_D: float | None, d_every: int = 10, *,
                 task: Any = None, model: torch.nn.Module | None = None, grad_clip: float | None = None):
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
        self.acc = OnlineToBatch(self.task_D if self.task_D is not None else 0.0)
        self.z_dist = 0.0            # an upper bound on ‖z_t − z_0‖ (measured, plus path length since)
        self.origin = None
        if self.task_D is None or self.kind == "C1":
            self.origin = [p.detach().clone() for g in optimizer.param_groups for p in g["params"]]
        if hasattr(optimizer, "record_grad_sq"):
            optimizer.record_grad_sq = True
        self._grad_bound = None
        if task is not None and model is not None and hasattr(task, "gradient_bound"):
            self._grad_bound = lambda: task.gradient_bound(model)
        facts = task.summary() if task is not None else {}
        self.G_source = "task" if self._grad_bound is not None and self._grad_bound() is not None else "last gradient"
        self.notes = self._caveats(facts, grad_clip)
        self.bound_kind = "heuristic" if self.notes else ("expected" if facts.get("stochastic") else "bound")

    def _caveats(self, facts: dict, grad_clip: float | None) -> list[str]:
        out = []
        if not facts.get("convex"):
            out.append("the task does not declare a convex objective")
        if self.task_D is None:
            out.append("D is estimated (distance travelled by x), not the task's exact ‖x_0 − x*‖")
        if self.G_source != "task":
            out.append("no bound on the next gradient from the task: the last observed ‖g‖ stands in for it")
        if grad_clip:
            out.append("gradient clipping: the step is not γ·(sub)gradient")
        if self.kind == "C1":
            out += self.opt.theory_caveats() if hasattr(self.opt, "theory_caveats") else []
        else:
            out += sgd_caveats(self.opt)
        return out

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
        """Call after optimizer step `step` (1-based) taken with step size `lr` and after the scheduler's step;
        `grad_sq` = ‖g‖² actually used (after clipping). Returns the metrics to log. `force`: an evaluation or the
        last step (D and [C3] now)."""
        own = getattr(self.opt, "last_grad_sq_P", None)
        g2 = float(own) if own is not None else float(grad_sq)
        self.S1 += lr
        self.S2 += lr * lr * g2
        out: dict[str, Any] = {"theory/S1": self.S1, "theory/S2": self.S2, "theory/grad_sq": g2}
        measure = force or step % self.d_every == 0 or step == 1
        if self.task_D is None and measure:
            self.r_bar = max(self.r_bar, self._distance())
        D = self.task_D if self.task_D is not None else self.r_bar
        out["theory/D"] = D
        if self.kind == "C1":
            group = self.opt.param_groups[0]
            if self.task_D is None:
                self.acc.D = D           # the estimate grows; the accumulator's D is its latest value
            R_before = D + self.z_dist
            self.acc.step(lr, g2, group.get("last_c", 0.0), R_before)
            self.z_dist += lr * math.sqrt(g2)          # path length: exact triangle inequality for the SGD base
            if measure:
                self.z_dist = math.sqrt(self.opt.distance_sq_at_z(self.origin))
            G = self._next_grad(g2)
            out["theory/G"] = G
            out["theory/bound"] = self.acc.bound(G, D + self.z_dist) * (1 + ROUNDING_SLACK)
        else:
            self.lrs.append(lr)
            self.grad_sqs.append(g2)
            if force or step % self.c3_every == 0 or step == self.total_steps:
                G = self._next_grad(g2)
                out["theory/G"] = G
                out["theory/bound"] = self.c3_bound(D, G) * (1 + ROUNDING_SLACK)
        if "theory/bound" in out:
            out["theory/bound_kind"] = self.bound_kind
        return out

    def _next_grad(self, g2: float) -> float:
        value = self._grad_bound() if self._grad_bound is not None else None
        return float(value) if value is not None else math.sqrt(g2)

    def c3_bound(self, D: float, G: float) -> float:
        """[C3] on the iterate after len(self.lrs) steps: the steps taken, then the next one (the scheduled lr, or the
        last positive one when that is 0) with the gradient bound G at the current iterate (docs/theory.md §4)."""
        nxt = float(self.opt.param_groups[0]["lr"])
        if not nxt > 0:
            nxt = next((x for x in reversed(self.lrs) if x > 0), 1.0)
        return sgd_last_iterate_bound(self.lrs + [nxt], self.grad_sqs + [G * G], D)

    def fit(self, record: RunRecord, f_star: float | None, diverge_above: float | None) -> dict:
        """Fit loss ≈ C + M·bound ([C4], `sfbench.theory.fit_bound`) to the run's curve and store it: the parameters
        are returned (summary.json's `theory.fit`), the fitted curve goes into `RUN/theory_fit.json`.

        The curve is `eval/subopt` (f(x) − f*, what [C1] bounds) where the task logs it at ≥ 8 points, else
        `eval/loss` likewise, else `train/loss` at every logged step (C absorbs the unknown f*)."""
        rows = [r for r in iter_metrics(record.dir / METRICS) if "theory/S1" in r]
        target = next((k for k in ("eval/subopt", "eval/loss") if sum(k in r for r in rows) >= 8), "train/loss")
        rows = [r for r in rows if target in r]
        steps = np.array([r["step"] for r in rows], dtype=np.int64)
        loss = np.array([r[target] for r in rows], dtype=np.float64)
        if self.kind == "C1":
            s1 = np.array([r["theory/S1"] for r in rows])
            s2 = np.array([r["theory/S2"] for r in rows])
            with np.errstate(divide="ignore", invalid="ignore"):
                a, b = 1.0 / (2.0 * s1), s2 / (2.0 * s1)
        else:
            keep = steps <= len(self.lrs)
            if keep.sum() > C3_POINTS:    # [C3] is O(T) per horizon: fit on ~500 of them, not every logged step
                idx = np.flatnonzero(keep)
                keep = np.zeros_like(keep)
                keep[idx[np.unique(np.linspace(0, len(idx) - 1, C3_POINTS).round().astype(int))]] = True
            steps, loss = steps[keep], loss[keep]
            a, b = bound_terms("C3", self.lrs, self.grad_sqs, steps)
        # D free: the overlay should follow the curve (with the task's exact D held fixed, the 1/S1 shape of [C1]
        # misses fast early progress, e.g. full-batch runs converging linearly); `D` in the fit is the effective D
        floor = metric_floor(target, loss, f_star)   # the fit respects the metric's floor
        fit = fit_bound(loss, a, b, diverge_above=diverge_above, C_min=floor)
        out = {"target": target, **fit.to_dict()}
        record.check()
        observed = [v if math.isfinite(v) else None for v in loss.tolist()]
        atomic_write_text(record.dir / "theory_fit.json", json.dumps(
            {**out, "bound": self.kind, "steps": steps.tolist(), "observed": observed,
             "fitted": fit.to_dict(curve=True)["curve"]}, allow_nan=False, default=str) + "\n")
        return out

    def summary(self) -> dict[str, Any]:
        return {"bound": self.kind, "bound_kind": self.bound_kind, "bound_notes": list(self.notes),
                "D": self.task_D if self.task_D is not None else self.r_bar, "D_source": self.d_source,
                "G_source": self.G_source}

    def state_dict(self) -> dict[str, Any]:
        return {"S1": self.S1, "S2": self.S2, "r_bar": self.r_bar, "lrs": list(self.lrs),
                "grad_sqs": list(self.grad_sqs), "acc": self.acc.state_dict(), "z_dist": self.z_dist}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.S1, self.S2, self.r_bar = state["S1"], state["S2"], state["r_bar"]
        self.lrs, self.grad_sqs = list(state["lrs"]), list(state["grad_sqs"])
        if "acc" in state:          # checkpoints written before the online-to-batch bound lack it
            self.acc.load_state_dict(state["acc"])
            self.z_dist = state["z_dist"]
