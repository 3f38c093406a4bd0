"""AlgoPerf-style performance profiles over tasks: how many steps each method needs to reach a task's target."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from .runs import Run


def steps_to_target(run: Run, target: float) -> float:
    values = run.column(run.metric).to_numpy(dtype=np.float64) if run.metric else np.zeros(0)
    hit = np.flatnonzero(np.isfinite(values) & (values <= target))
    return float(run.metrics["step"].iloc[hit[0]]) if hit.size else float("inf")


def profiles(runs: list[Run], tol: float = 0.05) -> dict | None:
    """AlgoPerf-style performance profiles over tasks, or None with fewer than two tasks.

    Per task the target is best + tol·|best| (best: the lowest final metric of any run); a method's steps-to-target
    on a task is the fewest over its settings (its tuned lr), each setting's the median over seeds; ratio = steps /
    fastest method's steps (∞ when never reached); ρ_m(τ) = share of tasks with ratio ≤ τ.
    """
    tasks = sorted({r.task for r in runs})
    if len(tasks) < 2:
        return None
    methods = sorted({r.method for r in runs})
    targets, steps = {}, {m: {} for m in methods}
    for task in tasks:
        members = [r for r in runs if r.task == task]
        finals = [r.final for r in members if math.isfinite(r.final)]
        if not finals:
            targets[task] = float("nan")
            for m in methods:
                steps[m][task] = float("inf")
            continue
        best = min(finals)
        target = best + tol * abs(best)
        targets[task] = target
        for m in methods:
            settings: dict[tuple, list[float]] = defaultdict(list)
            for r in members:
                if r.method == m:
                    settings[r.setting].append(steps_to_target(r, target))
            steps[m][task] = min((float(np.median(v)) for v in settings.values()), default=float("inf"))
    ratios = {m: {} for m in methods}
    for task in tasks:
        fastest = min(steps[m][task] for m in methods)
        for m in methods:
            s = steps[m][task]
            ratios[m][task] = s / fastest if math.isfinite(s) and math.isfinite(fastest) and fastest > 0 else \
                (1.0 if math.isfinite(s) and s == fastest else float("inf"))
    finite = [v for m in methods for v in ratios[m].values() if math.isfinite(v)]
    tau_max = max(2.0, 1.5 * max(finite, default=1.0))
    tau = np.unique(np.concatenate([np.geomspace(1.0, tau_max, 200), finite]))
    rho = {m: [float(np.mean([ratios[m][t] <= x for t in tasks])) for x in tau] for m in methods}
    return {"tol": tol, "tasks": tasks, "targets": targets, "steps": steps, "ratios": ratios,
            "tau": tau.tolist(), "rho": rho}
