"""Per run: the observed final value, the predicted final value (the logged bound) and the [C4] fit of the bound to
the run's curve. The bounds come from sfbench.theory.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from sfbench.theory.fit import BoundFit, bound_terms, fit_bound, metric_floor

from .runs import Run, to_float

THEORY_C1 = ("theory/S1", "theory/S2")
THEORY_C3 = ("lr", "theory/grad_sq")
#: fewer evaluated points than this: the [C4] fit uses the smoothed training loss instead (as the trainer's own fit)
MIN_FIT_POINTS = 8
#: the smoothed training loss: the mean over this many equal blocks of steps
SMOOTH_BINS = 50
#: the [C4] fit frees D (else held at the task's D) when that lowers its rmse below this share
D_FREE_GAIN = 0.75

def _kind(run: Run) -> str | None:
    kind = run.theory.get("bound")
    cols = run.metrics.columns
    has_c1 = all(c in cols for c in THEORY_C1)
    has_c3 = all(c in cols for c in THEORY_C3)
    if kind == "C1" and has_c1 or kind == "C3" and has_c3:
        return kind
    if kind is None:
        return "C1" if has_c1 else "C3" if has_c3 else None
    return None


def observe(run: Run, metric: str) -> None:
    """Fill run.metric, run.final, run.predicted, run.kind."""
    run.metric = metric
    values = run.column(metric).to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    if run.status == "diverged":
        run.final = float("inf")
    elif finite.any():
        run.final = float(values[np.flatnonzero(finite)[-1]])
    else:
        final = (run.summary.get("final") or {}).get(metric)
        run.final = to_float(final)
        if not math.isfinite(run.final):
            live = run.status in ("running", "preempted")
            run.nothing_logged = f"no finite {metric} logged" + (" yet" if live else "")
    if run.status != "diverged" and finite.any() and values[np.flatnonzero(finite)[0]] < run.final:
        run.above_start = True
        run.notes.append(f"ended above its start: {metric} {values[np.flatnonzero(finite)[0]]:.4g} at the first "
                         f"evaluation, {run.final:.4g} at the end")
    run.kind = _kind(run)
    bound = run.column("theory/bound").to_numpy(dtype=np.float64)
    ok = np.isfinite(bound)
    if ok.any():
        run.predicted = float(bound[np.flatnonzero(ok)[-1]])
    elif run.kind == "C1":                              # no logged bound: (D² + S2)/(2 S1) at the last step
        D, _ = run.D
        s1 = run.column("theory/S1").dropna()
        s2 = run.column("theory/S2").dropna()
        if len(s1) and len(s2) and math.isfinite(D) and float(s1.iloc[-1]) > 0:
            run.predicted = (D ** 2 + float(s2.iloc[-1])) / (2 * float(s1.iloc[-1]))
    if run.kind is None:
        run.notes.append("no theory columns logged (theory/S1, theory/S2 for [C1]; lr, theory/grad_sq for [C3]): "
                         "no bound fitted, no prediction")


def smoothed_train(run: Run, bins: int = SMOOTH_BINS) -> tuple[np.ndarray, np.ndarray]:
    """The training loss as the means of `bins` equal blocks of its logged steps: (block's mean step, rounded;
    block mean). Fewer logged steps than `bins`: the values themselves. Non-finite values end the series."""
    if "train/loss" not in run.metrics.columns:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    steps = run.metrics["step"].to_numpy(dtype=np.float64)
    y = run.metrics["train/loss"].to_numpy(dtype=np.float64)
    have = ~np.isnan(y)
    steps, y = steps[have], y[have]
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        steps, y = steps[: bad[0]], y[: bad[0]]
    if len(y) <= bins:
        return steps.astype(np.int64), y
    starts = np.unique(np.linspace(0, len(y), bins + 1).round().astype(np.int64)[:-1])
    counts = np.diff(np.append(starts, len(y)))
    mean_y = np.add.reduceat(y, starts) / counts
    mean_step = np.round(np.add.reduceat(steps, starts) / counts).astype(np.int64)
    return mean_step, mean_y


def fit_series(run: Run) -> tuple[np.ndarray, np.ndarray, str]:
    """(steps, values, name) the [C4] fit uses: the run's metric at its logged points, or — when the metric has
    fewer than MIN_FIT_POINTS of them (few evaluations) and the run logs more training losses — the smoothed
    training loss (`smoothed_train`)."""
    rows = run.metrics[run.metrics[run.metric].notna()] if run.metric in run.metrics.columns else run.metrics[:0]
    steps = rows["step"].to_numpy(dtype=np.int64)
    y = rows[run.metric].to_numpy(dtype=np.float64) if len(rows) else np.zeros(0)
    if len(steps) >= MIN_FIT_POINTS or run.metric == "train/loss":
        if run.metric == "train/loss" and len(steps) > SMOOTH_BINS:
            s, v = smoothed_train(run)
            return s, v, "train/loss (smoothed)"
        return steps, y, run.metric
    s, v = smoothed_train(run)
    if len(s) > len(steps):
        return s, v, "train/loss (smoothed)"
    return steps, y, run.metric


def stored_fit(run: Run) -> tuple[BoundFit, np.ndarray, np.ndarray, str] | None:
    """The fit the trainer made at the end of the run (RUN/theory_fit.json): (fit, steps, observed, target), or None
    when there is none or it can't be read."""
    try:
        data = json.loads((run.path / "theory_fit.json").read_text())
        num = (lambda v: float("nan") if v is None else float(v))
        fit = BoundFit(C=num(data["C"]), M=num(data["M"]), D=num(data["D"]),
                       curve=np.array([num(v) for v in data["fitted"]]), rmse=num(data["rmse"]),
                       n_used=int(data["n_used"]), n_dropped=int(data["n_dropped"]), method=str(data["method"]),
                       D_fixed=bool(data.get("D_fixed")), p=data.get("p"), G=data.get("G"),
                       message=str(data.get("message") or ""))
        steps = np.asarray(data["steps"], dtype=np.int64)
        observed = np.array([num(v) for v in data["observed"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (len(steps) == len(observed) == len(fit.curve)):
        return None
    return fit, steps, observed, str(data.get("target") or run.metric)


def fit_run(run: Run, *, g_param: bool = False) -> None:
    """The [C4] fit of the run: the one the trainer stored at the run's end (`stored_fit`) where there is one, so the
    run's record and the report show the same fit; else (a live or older run, or `g_param`) fitted here: the run's
    metric (or its smoothed training loss, see `fit_series`) against its bound terms, with C held at or above the
    metric's floor. Diverged runs and runs without theory are not fitted."""
    if run.status == "diverged":
        run.notes.append("diverged: shown, not fitted")
        return
    if run.kind is None or run.metric is None:
        return
    stored = None if g_param else stored_fit(run)
    if stored is not None:
        run.fit, run.fit_steps, run.fit_observed, run.fit_target = stored
        if not run.fit.ok:
            run.notes.append(f"fit: {run.fit.message or run.fit.method}")
        return
    steps, y, target = fit_series(run)
    if len(steps) == 0:
        return
    if target != run.metric:
        n_eval = int(run.column(run.metric).notna().sum())
        run.notes.append(f"{n_eval} evaluation(s) of {run.metric}: fitted on the smoothed training loss")
    lrs = run.per_step("lr")
    if run.kind == "C1":
        s1, s2 = run.per_step("theory/S1"), run.per_step("theory/S2")
        s1 = s1[steps - 1] if s1 is not None else np.full(len(steps), np.nan)
        s2 = s2[steps - 1] if s2 is not None else np.full(len(steps), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(s1 > 0, 1.0 / (2 * s1), np.nan)
            b = np.where(s1 > 0, s2 / (2 * s1), np.nan)
    else:
        gsq = run.per_step("theory/grad_sq")
        if lrs is None or gsq is None:
            run.notes.append("[C3] needs per-step lr and theory/grad_sq; none logged")
            return
        a, b = bound_terms("C3", lrs, gsq, horizons=steps)
    D, source = run.D
    D_fixed = D if source == "task" and math.isfinite(D) else None
    kwargs: dict[str, Any] = {}
    if g_param:
        if lrs is None:
            run.notes.append("G-param fit needs the per-step lr column; fitted with the observed gradients")
        else:
            kwargs = {"G_param": True, "lrs": lrs, "kind": run.kind, "horizons": steps}
    floor = metric_floor(run.metric if target == run.metric else "train/loss", y, run.f_star)
    run.fit = fit_bound(y, a, b, D=D_fixed, C_min=floor, **kwargs)
    if D_fixed is not None and run.fit.ok:
        # the task's D is the Euclidean ‖x_0 − x*‖; a preconditioned (Adam-base) or stochastic run's bound may need
        # another: free D when that fits markedly better (rmse ≥ 25 % lower), and say so
        free = fit_bound(y, a, b, D=None, C_min=floor, **kwargs)
        tol = 1e-12 * float(np.nanmax(np.abs(y))) if len(y) else 0.0
        if free.ok and free.M > 0 and free.rmse < D_FREE_GAIN * run.fit.rmse - tol:
            run.notes.append(f"D fitted ({free.D:.3g}): the task's D = {D_fixed:.3g} fits worse (rmse "
                             f"{run.fit.rmse:.3g} vs {free.rmse:.3g})")
            run.fit = free
    run.fit_steps, run.fit_observed, run.fit_target = steps, y, target
    if not run.fit.ok:
        run.notes.append(f"fit: {run.fit.message or run.fit.method}")

