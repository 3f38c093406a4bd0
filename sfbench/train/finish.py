"""What the end of a run adds to its record: the bound fitted to the run's curve ([C4]) and whether the evaluated
metric ended above its first evaluation."""

from __future__ import annotations

import json
import math

import numpy as np

from ..theory.fit import bound_terms, fit_bound, metric_floor
from ..tracking.run_record import RunRecord, atomic_write_text, iter_metrics
from .online_bound import OnlineBound


def fit_theory(record: RunRecord, theory: OnlineBound, f_star: float | None, diverge_above: float | None) -> dict:
    """Fit loss ≈ C + M·bound ([C4], `sfbench.theory.fit_bound`) to the run's curve and store it:
    the parameters are returned (summary.json's `theory.fit`), the fitted curve goes into `RUN/theory_fit.json`.

    The curve is `eval/subopt` (f(x) − f*, what [C1] bounds) where the task logs it at ≥ 8 points, else
    `eval/loss` likewise, else `train/loss` at every logged step (C absorbs the unknown f*)."""
    rows = [r for r in iter_metrics(record.dir / "metrics.jsonl") if "theory/S1" in r]
    target = next((k for k in ("eval/subopt", "eval/loss") if sum(k in r for r in rows) >= 8), "train/loss")
    rows = [r for r in rows if target in r]
    steps = np.array([r["step"] for r in rows], dtype=np.int64)
    loss = np.array([r[target] for r in rows], dtype=np.float64)
    if theory.kind == "C1":
        s1 = np.array([r["theory/S1"] for r in rows])
        s2 = np.array([r["theory/S2"] for r in rows])
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = 1.0 / (2.0 * s1), s2 / (2.0 * s1)
    else:
        keep = steps <= len(theory.lrs)
        if keep.sum() > 500:    # [C3] is O(T) per horizon: fit on ~500 of them, not every logged step
            idx = np.flatnonzero(keep)
            keep = np.zeros_like(keep)
            keep[idx[np.unique(np.linspace(0, len(idx) - 1, 500).round().astype(int))]] = True
        steps, loss = steps[keep], loss[keep]
        a, b = bound_terms("C3", theory.lrs, theory.grad_sqs, steps)
    # D free: the overlay should follow the curve (with the task's exact D held fixed, the 1/S1 shape of [C1]
    # misses fast early progress, e.g. full-batch runs converging linearly); `D` in the fit is the effective D
    floor = metric_floor(target, loss, f_star)   # the fit respects the metric's floor
    fit = fit_bound(loss, a, b, diverge_above=diverge_above, C_min=floor)
    out = {"target": target, **fit.to_dict()}
    record.check()
    observed = [v if math.isfinite(v) else None for v in loss.tolist()]
    atomic_write_text(record.dir / "theory_fit.json", json.dumps(
        {**out, "bound": theory.kind, "steps": steps.tolist(), "observed": observed,
         "fitted": fit.to_dict(curve=True)["curve"]}, allow_nan=False, default=str) + "\n")
    return out


def above_start(record: RunRecord, final: dict) -> dict | None:
    """The evaluated metric (eval/subopt, else eval/loss) at the end against its first evaluation: {metric, first,
    final} when the run ended above where it started — a run that got worse, flagged beside its status."""
    key = next((k for k in ("eval/subopt", "eval/loss") if k in final), None)
    if key is None:
        return None
    first = next((r[key] for r in iter_metrics(record.dir / "metrics.jsonl") if key in r), None)
    end = final[key]
    if isinstance(first, (int, float)) and isinstance(end, (int, float)) and end > first:
        return {"metric": key, "first": first, "final": end}
    return None
