"""Runs → the numbers of the report: per-run fits [C4], predicted best learning rates [C2]/[C3], rank correlations,
performance profiles. No plotting here (figures.py) and nothing from the training code: run directories are read
with sfbench.tracking, the bounds come from sfbench.theory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sfbench.theory import closed_form_integrals, schedule_integrals
from sfbench.theory.fit import BoundFit, bound_terms, fit_bound, metric_floor
from sfbench.theory.predict import predict
from sfbench.tracking import find_runs, flatten, read_config, read_summary

from .identity import choice, is_setting, label, lr_is_cap, method_items, short, task_items

#: --metric auto: the first of these that the runs of a task log
AUTO_METRICS = ("eval/subopt", "eval/loss", "train/loss")
THEORY_C1 = ("theory/S1", "theory/S2")
THEORY_C3 = ("lr", "theory/grad_sq")
#: fewer evaluated points than this: the [C4] fit uses the smoothed training loss instead (as the trainer's own fit)
MIN_FIT_POINTS = 8
#: the smoothed training loss: the mean over this many equal blocks of steps
SMOOTH_BINS = 50
#: the [C4] fit frees D (else held at the task's D) when that lowers its rmse below this share
D_FREE_GAIN = 0.75
#: bootstrap resamples for the rank-correlation intervals
BOOTSTRAP = 2000
#: fewer runs than this: the rank correlation's interval is [−1, 1] (see `spearman`)
MIN_CI_RUNS = 5


class ReportError(Exception):
    """A problem with the input the user can fix (missing or empty directory, unknown metric): exit status 2."""


_short = short


def _float(x, default=float("nan")) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return x


@dataclasses.dataclass
class Run:
    """One run directory, read."""

    path: Path
    name: str                        # relative to the report's DIR
    config: dict                     # flattened (opt.lr, sched.name, …)
    summary: dict
    metrics: pd.DataFrame            # one row per logged step, sorted by step
    notes: list[str] = dataclasses.field(default_factory=list)
    logged_bound_kind: str | None = None   # the last theory/bound_kind string in metrics.jsonl, if any
    unreadable: str | None = None    # why the run can't be compared at all (a file unreadable, no config.yaml)
    # filled by identify()
    task_id: str = ""
    method_id: str = ""
    method_key: list = dataclasses.field(default_factory=list)   # (config key, value): what selects the method
    task_key: list = dataclasses.field(default_factory=list)
    # filled by analyze()
    metric: str | None = None
    final: float = float("nan")      # observed final metric
    predicted: float = float("nan")  # the run's final theory/bound
    kind: str | None = None          # "C1" | "C3" | None (no theory columns)
    fit: BoundFit | None = None
    fit_steps: np.ndarray | None = None
    fit_observed: np.ndarray | None = None
    fit_target: str | None = None    # what was fitted: the metric, or "train/loss (smoothed)"
    nothing_logged: str | None = None  # no finite value of the metric yet (a live sweep's early run)
    above_start: bool = False        # the final metric is above its first logged value (a run that got worse)

    @property
    def left_out(self) -> str | None:
        """Why the run is in no plot: `unreadable`, or `nothing_logged`; None when it is plotted."""
        return self.unreadable or self.nothing_logged

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or "unknown")

    @property
    def task(self) -> str:
        """The task's identity (identity.py): its config name, plus task settings that vary within it."""
        return self.task_id or choice(self.config, "task")

    @property
    def task_label(self) -> str:
        return self.task

    @property
    def task_class(self) -> str:
        return _short(self.config.get("task._target_"))

    @property
    def optimizer(self) -> str:
        """The optimizer's class (short name): shown for information, never used to group runs."""
        return _short(self.config.get("opt._target_"))

    @property
    def opt_choice(self) -> str:
        return choice(self.config, "opt")

    @property
    def schedule(self) -> str:
        return str(self.config.get("sched.name") or "none")

    @property
    def method(self) -> str:
        """The method's identity (identity.py): the optimizer's config choice plus the settings that vary within
        it across the sweep, lr and seed aside."""
        return self.method_id or self.opt_choice

    @property
    def lr(self) -> float:
        return _float(self.config.get("opt.lr"))

    @property
    def lr_role(self) -> str:
        """"cap" when opt.lr caps an adaptive step (SF-Polyak), else "base lr"."""
        return "cap" if lr_is_cap(self.config) else "base lr"

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def horizon(self) -> int | None:
        T = self.config.get("trainer.steps") or self.summary.get("total_steps")
        return int(T) if T else None

    @property
    def setting(self) -> tuple:
        """The config without the seed: runs with equal settings are seeds of one another."""
        return tuple(sorted((k, repr(v)) for k, v in self.config.items() if is_setting(k)))

    @property
    def theory(self) -> dict:
        t = self.summary.get("theory")
        return t if isinstance(t, dict) else {}

    @property
    def bound_kind(self) -> str | None:
        """What the logged bound is for this run, as the trainer says (`theory.bound_kind`: e.g. a theorem, an
        expectation, a heuristic); None when the record does not say."""
        kind = self.theory.get("bound_kind") or self.logged_bound_kind
        return str(kind) if kind else None

    @property
    def f_star(self) -> float:
        task = self.summary.get("task")
        return _float(task.get("f_star")) if isinstance(task, dict) else float("nan")

    @property
    def D(self) -> tuple[float, str | None]:
        """(D, source): the summary's theory.D (source theory.D_source), else the task's exact D."""
        if self.theory.get("D") is not None:
            return _float(self.theory["D"]), self.theory.get("D_source") or "distance"
        task = self.summary.get("task")
        if isinstance(task, dict) and task.get("D") is not None:
            return _float(task["D"]), "task"
        return float("nan"), None

    def column(self, key: str) -> pd.Series:
        return self.metrics[key] if key in self.metrics.columns else pd.Series(np.nan, index=self.metrics.index)


def identify(runs: list[Run]) -> None:
    """Fill every run's task and method identity (identity.py) from the configs of all runs together."""
    configs = [r.config for r in runs]
    tasks = task_items(configs)
    task_labels = [label(t) for t in tasks]
    methods = method_items(configs, task_labels)
    for r, t, tl, m in zip(runs, tasks, task_labels, methods):
        r.task_key, r.task_id, r.method_key, r.method_id = t, tl, m, label(m)


# ---------------------------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------------------------
def load(path: str | Path) -> list[Run]:
    """Every run directory at or below `path`; raises ReportError for a missing or empty directory."""
    root = Path(path)
    if not root.is_dir():
        raise ReportError(f"no run or sweep directory at {root}")
    dirs = find_runs(root)
    if not dirs:
        raise ReportError(f"no runs under {root} (a run directory holds metrics.jsonl or summary.json)")
    runs = []
    for d in dirs:
        unreadable = None
        try:
            rows, notes = _read_metrics(d / "metrics.jsonl")
        except (OSError, UnicodeDecodeError) as e:      # a directory, no permission, an I/O error, not text
            rows, notes = [], []
            unreadable = f"metrics.jsonl unreadable ({type(e).__name__}: {getattr(e, 'strerror', None) or e})"
        bound_kind = next((r["theory/bound_kind"] for r in reversed(rows)
                           if isinstance(r.get("theory/bound_kind"), str)), None)
        frame = pd.DataFrame(rows)
        frame = frame.drop(columns=[c for c in frame.columns if frame[c].dtype == object
                                    and frame[c].map(lambda v: isinstance(v, str)).any()])
        if "step" in frame.columns:
            frame = frame.sort_values("step", kind="stable").drop_duplicates("step", keep="last")
            frame = frame.reset_index(drop=True)
        else:
            frame = pd.DataFrame({"step": pd.Series(dtype=float)})
        frame = frame.apply(pd.to_numeric, errors="coerce")
        try:
            config = flatten(read_config(d))
        except Exception as e:                          # noqa: BLE001 — one bad file shouldn't stop the report
            config = {}
            unreadable = unreadable or f"config.yaml unreadable ({type(e).__name__})"
        try:
            summary = read_summary(d) or {}
        except (ValueError, OSError) as e:
            summary, notes = {}, notes + [f"summary.json unreadable ({e})"]
        name = str(d.relative_to(root)) if d != root else d.name
        if not config:
            unreadable = unreadable or "no config.yaml (the task, optimizer and schedule are unknown)"
        runs.append(Run(path=d, name=name, config=config, summary=summary, metrics=frame, notes=notes,
                        logged_bound_kind=bound_kind, unreadable=unreadable))
    identify(runs)
    return runs


def _read_metrics(path: Path) -> tuple[list[dict], list[str]]:
    """The metric rows of a run, skipping lines that don't parse (counted in a note). Not `iter_metrics`, which
    raises on a corrupt line in the middle of a file: one bad line shouldn't hide a whole run from the report."""
    if not path.exists():
        return [], []
    rows, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break                                   # torn last line of a killed run (as iter_metrics)
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
            else:
                bad += 1
    return rows, [f"metrics.jsonl: {bad} unreadable line(s) skipped"] if bad else []


def resolve_metric(runs: list[Run], metric: str) -> dict[str, str]:
    """The metric per task: `metric`, or with "auto" the first of AUTO_METRICS a run of the task logs."""
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        by_task[run.task].append(run)
    out = {}
    for task, members in by_task.items():
        logged = set().union(*(set(r.metrics.columns) for r in members))
        if metric == "auto":
            # a task whose runs logged nothing yet gets the last fallback; its runs say "no finite … logged"
            out[task] = next((m for m in AUTO_METRICS if m in logged), AUTO_METRICS[-1])
        else:
            out[task] = metric
    if metric != "auto" and not any(metric in r.metrics.columns for r in runs):
        logged = sorted(set().union(*(set(r.metrics.columns) for r in runs)) - {"step"})
        raise ReportError(f"--metric {metric}: no run under this directory logs it; logged keys: "
                          f"{', '.join(logged) or '(none)'}")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# per run: observed final value, predicted final value, the [C4] fit
# ---------------------------------------------------------------------------------------------------------------------
def _per_step(run: Run, key: str) -> np.ndarray | None:
    """`key` at every step 1 … last logged step (forward-filled over unlogged steps), or None."""
    if key not in run.metrics.columns:
        return None
    s = pd.Series(run.metrics[key].to_numpy(), index=run.metrics["step"].to_numpy()).dropna()
    if s.empty:
        return None
    steps = np.arange(1, int(run.metrics["step"].max()) + 1)
    return s.reindex(steps).ffill().bfill().to_numpy(dtype=np.float64)


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
        run.final = _float(final)
        if not math.isfinite(run.final):
            run.nothing_logged = f"no finite {metric} logged" + (" yet" if run.status in ("running", "preempted") else "")
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
    lrs = _per_step(run, "lr")
    if run.kind == "C1":
        s1, s2 = _per_step(run, "theory/S1"), _per_step(run, "theory/S2")
        s1 = s1[steps - 1] if s1 is not None else np.full(len(steps), np.nan)
        s2 = s2[steps - 1] if s2 is not None else np.full(len(steps), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(s1 > 0, 1.0 / (2 * s1), np.nan)
            b = np.where(s1 > 0, s2 / (2 * s1), np.nan)
    else:
        gsq = _per_step(run, "theory/grad_sq")
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


# ---------------------------------------------------------------------------------------------------------------------
# across runs: best learning rates, rank correlations, performance profiles
# ---------------------------------------------------------------------------------------------------------------------
def _comparable(run: Run) -> bool:
    """Runs whose final value is the metric at the horizon: completed, with a finite final value."""
    return run.status == "completed" and math.isfinite(run.final)


def _resampled_ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank, as scipy's rankdata) of `values[idx]` within each row of `idx`,
    by counting per row how many values are below each one — O(rows·(n + distinct values)), no per-row sort."""
    uniq, code = np.unique(values, return_inverse=True)
    k, b = len(uniq), idx.shape[0]
    codes = code[idx]
    counts = np.bincount((codes + k * np.arange(b)[:, None]).ravel(), minlength=b * k).reshape(b, k)
    below = np.cumsum(counts, axis=1) - counts
    rows = np.arange(b)[:, None]
    return below[rows, codes] + (counts[rows, codes] + 1) / 2.0


def spearman(pred, obs, *, n_boot: int = BOOTSTRAP, level: float = 0.95, seed: int = 0) -> dict:
    """Spearman ρ of paired values with n, scipy's p-value and a percentile bootstrap interval (pairs resampled
    with replacement, `n_boot` times; resamples whose ranks are constant are skipped). Fewer than 3 finite pairs, or
    constant values: NaNs. 3–4 pairs: the interval is [−1, 1] (MIN_CI_RUNS)."""
    from scipy.stats import spearmanr

    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(pred) & np.isfinite(obs)
    pred, obs = pred[ok], obs[ok]
    n = int(ok.sum())
    nan = float("nan")
    out = {"rho": nan, "pvalue": nan, "n": n, "ci": [nan, nan], "ci_level": level}
    if n < 3 or np.ptp(pred) == 0 or np.ptp(obs) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(pred, obs)
    out.update(rho=float(res.statistic), pvalue=float(res.pvalue))
    if n < MIN_CI_RUNS:
        # resamples of ≤ 4 distinct pairs keep a perfect ranking perfect, so the percentile interval would read
        # [1, 1]; and no ranking of 4 runs is significant (exact permutation p ≥ 2/4! ≈ 0.083 for ρ = ±1):
        # the honest interval is the whole range
        out["ci"] = [-1.0, 1.0]
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    rp, ro = _resampled_ranks(pred, idx), _resampled_ranks(obs, idx)
    rp -= rp.mean(axis=1, keepdims=True)
    ro -= ro.mean(axis=1, keepdims=True)
    den = np.sqrt((rp * rp).sum(axis=1) * (ro * ro).sum(axis=1))
    good = den > 0
    if good.sum() >= 10:
        rhos = np.clip((rp * ro).sum(axis=1)[good] / den[good], -1.0, 1.0)
        alpha = (1 - level) / 2
        out["ci"] = [float(np.quantile(rhos, alpha)), float(np.quantile(rhos, 1 - alpha))]
    return out


def independent(run: Run) -> bool:
    """Whether the run's bound is a prediction made without its outcome: D is the task's own (the testbeds), not the
    distance x travelled in the run itself, which grows with the lr and makes any prediction follow the grid."""
    return run.D[1] == "task"


NO_INDEPENDENT_D = ("no independent prediction: D is the distance x travelled in these runs, which grows with the lr "
                    "(give a known D to python -m sfbench.theory predict --D … --G …)")


def _scope_correlation(members: list[Run]) -> dict:
    """ρ over the runs with an independent prediction, given only from MIN_CI_RUNS of them on."""
    usable = [r for r in members if independent(r)]
    out = spearman([r.predicted for r in usable], [r.final for r in usable])
    note = None
    if len(usable) < len(members):
        note = f"{len(members) - len(usable)} run(s) left out: {NO_INDEPENDENT_D}"
    if len(usable) < MIN_CI_RUNS:
        out.update(rho=float("nan"), pvalue=float("nan"), ci=[float("nan"), float("nan")])
        note = "; ".join(filter(None, [note, f"{len(usable)} run(s) with an independent prediction: ρ needs "
                                             f"≥ {MIN_CI_RUNS}"]))
    return {**out, "note": note}


def correlations(runs: list[Run]) -> list[dict]:
    """Spearman ρ of (predicted final bound, observed final metric), with n and a bootstrap interval: per task over
    its completed runs, and per (task, method) — over the runs whose prediction is independent (`independent`), and
    only from MIN_CI_RUNS such runs on."""
    out = []
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if _comparable(run):
            by_task[run.task].append(run)
    for task, members in sorted(by_task.items()):
        out.append({"task": task, "scope": "overall", "method": None, "optimizer": None, "schedule": None,
                    **_scope_correlation(members)})
        by_method: dict[str, list[Run]] = defaultdict(list)
        for r in members:
            by_method[r.method].append(r)
        for method, group in sorted(by_method.items()):
            out.append({"task": task, "scope": "method", "method": method, "optimizer": group[0].optimizer,
                        "schedule": group[0].schedule, **_scope_correlation(group)})
    return out


def _schedule_B(group: list[Run]) -> tuple[float, np.ndarray | None, str]:
    """B = mean h², h = logged lr / base lr (median over the runs), else [C2]'s closed form; and one h array."""
    Bs, h_one = [], None
    for r in group:
        lrs = _per_step(r, "lr")
        if lrs is not None and r.lr > 0 and r.horizon and len(lrs) >= r.horizon:
            h = lrs[: r.horizon] / r.lr
            Bs.append(schedule_integrals(h)[1])
            h_one = h if h_one is None else h_one
    if Bs:
        return float(np.median(Bs)), h_one, "logged lr"
    r = group[0]
    try:
        T = r.horizon or 1
        w = _float(r.config.get("sched.warmup_steps"), 0.0) / T
        d = _float(r.config.get("sched.decay_frac"), 0.0)
        return closed_form_integrals(r.schedule, w, d if r.schedule == "wsd" else 0.0)[1], None, "closed form"
    except ValueError:
        return float("nan"), None, "unknown"


def best_lrs(runs: list[Run]) -> list[dict]:
    """Per (task, method): the predicted best base lr and the observed one (lowest mean final metric over seeds
    among the completed runs). Methods whose opt.lr caps an adaptive step (SF-Polyak) get the observed best cap and
    no prediction: [C2]/[C3] predict a base step size for a schedule, not a cap."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.task, run.method)].append(run)
    out = []
    for (task, method), group in sorted(groups.items()):
        healthy = [r for r in group if r.status != "diverged"]
        role = group[0].lr_role
        g2 = [r.column("theory/grad_sq").dropna().to_numpy(dtype=np.float64) for r in healthy]
        g2 = np.concatenate(g2) if g2 else np.zeros(0)
        g2 = g2[np.isfinite(g2)]
        G2 = float(g2.mean()) if g2.size else float("nan")
        Ds = [r.D[0] for r in group if math.isfinite(r.D[0])]
        D = float(np.median(Ds)) if Ds else float("nan")
        Ts = [r.horizon for r in group if r.horizon]
        T = int(np.median(Ts)) if Ts else None
        kinds = {r.kind for r in group if r.kind}
        kind = kinds.pop() if len(kinds) == 1 else None
        by_lr: dict[float, list[float]] = defaultdict(list)
        for r in group:
            if _comparable(r):
                by_lr[r.lr].append(r.final)
        observed = min(by_lr, key=lambda lr: float(np.mean(by_lr[lr]))) if by_lr else float("nan")
        row = {"task": task, "method": method, "optimizer": group[0].optimizer, "schedule": group[0].schedule,
               "lr_role": role, "bound": kind, "observed": observed, "D": D, "G2": G2, "T": T, "n_lrs": len(by_lr),
               "observed_by": observed_by(group)}
        none = {"rule": None, "predicted": float("nan"), "predicted_C2": float("nan"), "ratio": float("nan"),
                "B": float("nan"), "B_source": None}
        if role == "cap":
            out.append({**row, **none, "note": "opt.lr is the cap of an adaptive step: no best-lr prediction"})
            continue
        if not all(independent(r) for r in group):
            out.append({**row, **none, "D": float("nan"), "note": NO_INDEPENDENT_D})
            continue
        B, h, B_source = _schedule_B(healthy or group)
        pred = pred_c2 = float("nan")
        rule = "C2"
        if h is not None and G2 > 0 and math.isfinite(D) and D > 0 and h.sum() > 0:
            # the function python -m sfbench.theory predict uses: [C1] (= [C2] for the logged h), or [C3]
            pred = pred_c2 = predict(h, D, math.sqrt(G2), "C1").best_lr
            if kind == "C3":
                pred, rule = predict(h, D, math.sqrt(G2), "C3").best_lr, "C3"
        elif T and G2 > 0 and B > 0 and math.isfinite(D):           # no logged lr: [C2]'s closed form of the shape
            pred = pred_c2 = D / (math.sqrt(G2) * math.sqrt(T * B))
        out.append({**row, "rule": rule, "predicted": pred, "predicted_C2": pred_c2,
                    "ratio": pred / observed if observed and math.isfinite(observed) else float("nan"),
                    "B": B, "B_source": B_source, "note": None})
    return out


def observed_by(group: list[Run]) -> str:
    """How the observed best lr was found: `grid` (the sweep's values), or the tuning sweeper and its trial count
    (e.g. `tune_lr: 20 trials`, hydra/sweeper=tune_lr: Optuna's TPE) — the tuned lr the prediction is set beside."""
    sweepers = {str(r.config.get("choices.hydra/sweeper")) for r in group if r.config.get("choices.hydra/sweeper")}
    if not sweepers:
        return "grid"
    return f"{', '.join(sorted(sweepers))}: {len(group)} trials"


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
    statuses: dict[str, int] = defaultdict(int)
    for run in every:
        statuses[run.status] += 1
    return {
        "metric": dict(metrics),
        "n_runs": len(every),
        "statuses": dict(statuses),
        "methods": methods_table(runs),
        "runs": [run_record(r) for r in every],
        "left_out": [{"run": r.name, "status": r.status, "reason": r.left_out} for r in every if r.left_out],
        "prediction": {"correlations": correlations(runs), "best_lr": best_lrs(runs)},
        "profiles": profiles(runs, profile_tol),
    }


def methods_table(runs: list[Run]) -> list[dict]:
    """One row per (task, method): what it is (choice, class, schedule, what opt.lr means) and how its runs fared."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for r in runs:
        groups[(r.task, r.method)].append(r)
    out = []
    for (task, method), group in sorted(groups.items()):
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


def comparable_runs(runs: list[Run]) -> list[Run]:
    """The runs that enter plots and comparisons: those read whole, with a config (task, optimizer, schedule
    known). A run that has logged no finite value of its metric yet stays (its panel says so), listed in left_out."""
    return [r for r in runs if r.unreadable is None]


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
