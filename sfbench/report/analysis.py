"""The report's numbers: every run observed and fitted (fits.py), then compared (prediction.py, profiles.py) —
what report.json holds, before `json_safe` makes it strict JSON.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from .fits import fit_run, observe
from .prediction import best_lrs, correlations
from .profiles import profiles
from .runs import Run, comparable_runs, group_by, identify, resolve_metric


def analyze(runs: list[Run], metric: str = "auto", *, g_param: bool = False, profile_tol: float = 0.05) -> dict:
    """Observe, fit and compare every run; returns the report's numbers (report.json before JSON cleaning)."""
    every = runs
    runs = comparable_runs(every)
    if not all(r.method_id for r in every):
        identify(every)
    metrics = resolve_metric(runs, metric)
    for run in runs:
        observe(run, metrics[run.task])
        fit_run(run, g_param=g_param)
    return {
        "metric": dict(metrics),
        "n_runs": len(every),
        "statuses": dict(Counter(r.status for r in every)),
        "methods": methods_table(runs),
        "runs": [run_record(r) for r in every],
        "left_out": [{"run": r.name, "status": r.status, "reason": r.left_out} for r in every if r.left_out],
        "prediction": {"correlations": correlations(runs), "best_lr": best_lrs(runs)},
        "profiles": profiles(runs, profile_tol),
    }


def methods_table(runs: list[Run]) -> list[dict]:
    """One row per (task, method): what it is (choice, class, schedule, what opt.lr means) and how its runs fared."""
    out = []
    for (task, method), group in sorted(group_by(runs, lambda r: (r.task, r.method)).items()):
        fits = [r for r in group if r.fit is not None]
        kinds = sorted({k for k in (r.bound_kind for r in group) if k})
        out.append({"task": task, "method": method, "choice": group[0].opt_choice, "optimizer": group[0].optimizer,
                    "schedules": sorted({r.schedule for r in group}), "lr_role": group[0].lr_role,
                    "lrs": sorted({r.lr for r in group if math.isfinite(r.lr)}), "runs": len(group),
                    "fitted": sum(1 for r in fits if r.fit.ok), "bound": next((r.kind for r in group if r.kind), None),
                    "bound_kind": ", ".join(kinds) or None,
                    # the config (key, value) pairs that select this method's runs: its task's, then its own
                    "select": [[k, v] for k, v in group[0].task_key + group[0].method_key],
                    "metric": group[0].metric})
    return out



def run_record(run: Run) -> dict:
    D, source = run.D
    return {"run": run.name, "task": run.task, "method": run.method, "choice": run.opt_choice,
            "optimizer": run.optimizer, "schedule": run.schedule, "lr": run.lr, "lr_role": run.lr_role,
            "seed": run.seed, "status": run.status, "steps_done": run.summary.get("steps_done"),
            "steps": run.horizon, "metric": run.metric, "final": run.final, "above_start": run.above_start,
            "predicted": run.predicted,
            "bound": run.kind, "bound_kind": run.bound_kind, "D": D, "D_source": source,
            "fit_target": run.fit_target, "fit": run.fit.to_dict() if run.fit is not None else None,
            "notes": list(run.notes) + ([f"left out of the plots: {run.left_out}"] if run.left_out else [])}


def json_safe(obj: Any) -> Any:
    """NaN/±inf → None (strict JSON), numpy scalars → Python numbers, tuples → lists."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        obj = float(obj)
        return obj if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj
