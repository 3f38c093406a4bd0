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

from sfbench.theory import (
    closed_form_integrals,
    schedule_integrals,
    sgd_last_iterate_bound,
)
from sfbench.theory.fit import BoundFit, bound_terms, fit_bound
from sfbench.tracking import find_runs, flatten, read_config, read_summary

#: --metric auto: the first of these that the runs of a task log
AUTO_METRICS = ("eval/subopt", "eval/loss", "train/loss")
THEORY_C1 = ("theory/S1", "theory/S2")
THEORY_C3 = ("lr", "theory/grad_sq")
#: config keys that don't make two runs different methods (besides the seed itself)
_NOT_A_SETTING = ("group", "trainer.device", "trainer.log_every_s")
_NOT_A_SETTING_PREFIX = ("logger.", "paths.", "hydra.")


class ReportError(Exception):
    """A problem with the input the user can fix (missing or empty directory, unknown metric): exit status 2."""


def _short(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "?"


def _float(x, default=float("nan")) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return x


def _is_seed_key(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


@dataclasses.dataclass
class Run:
    """One run directory, read."""

    path: Path
    name: str                        # relative to the report's DIR
    config: dict                     # flattened (opt.lr, sched.name, …)
    summary: dict
    metrics: pd.DataFrame            # one row per logged step, sorted by step
    notes: list[str] = dataclasses.field(default_factory=list)
    # filled by analyze()
    metric: str | None = None
    final: float = float("nan")      # observed final metric
    predicted: float = float("nan")  # the run's final theory/bound
    kind: str | None = None          # "C1" | "C3" | None (no theory columns)
    fit: BoundFit | None = None
    fit_steps: np.ndarray | None = None
    fit_observed: np.ndarray | None = None

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or "unknown")

    @property
    def task(self) -> str:
        return str(self.config.get("task._target_") or "?")

    @property
    def task_label(self) -> str:
        return _short(self.task)

    @property
    def optimizer(self) -> str:
        return _short(self.config.get("opt._target_"))

    @property
    def schedule(self) -> str:
        return str(self.config.get("sched.name") or "none")

    @property
    def method(self) -> tuple[str, str]:
        return self.optimizer, self.schedule

    @property
    def lr(self) -> float:
        return _float(self.config.get("opt.lr"))

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
        return tuple(sorted((k, repr(v)) for k, v in self.config.items()
                            if not _is_seed_key(k) and k not in _NOT_A_SETTING
                            and not k.startswith(_NOT_A_SETTING_PREFIX)))

    @property
    def theory(self) -> dict:
        t = self.summary.get("theory")
        return t if isinstance(t, dict) else {}

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
        rows, notes = _read_metrics(d / "metrics.jsonl")
        frame = pd.DataFrame(rows)
        if "step" in frame.columns:
            frame = frame.sort_values("step", kind="stable").drop_duplicates("step", keep="last")
            frame = frame.reset_index(drop=True)
        else:
            frame = pd.DataFrame({"step": pd.Series(dtype=float)})
        frame = frame.apply(pd.to_numeric, errors="coerce")
        try:
            config = flatten(read_config(d))
        except Exception as e:                          # noqa: BLE001 — one bad file shouldn't stop the report
            config, notes = {}, notes + [f"config.yaml unreadable ({type(e).__name__})"]
        try:
            summary = read_summary(d) or {}
        except ValueError as e:
            summary, notes = {}, notes + [f"summary.json unreadable ({e})"]
        name = str(d.relative_to(root)) if d != root else d.name
        if not config:
            notes.append("no config.yaml: listed here, left out of the plots and comparisons")
        runs.append(Run(path=d, name=name, config=config, summary=summary, metrics=frame, notes=notes))
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
    if metric == "auto" and not any(m in r.metrics.columns for r in runs for m in AUTO_METRICS):
        logged = sorted(set().union(*(set(r.metrics.columns) for r in runs)) - {"step"})
        raise ReportError(f"--metric auto: no run logs any of {', '.join(AUTO_METRICS)}; pass --metric with one "
                          f"of the logged keys: {', '.join(logged) or '(none)'}")
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
            run.notes.append(f"no finite {metric} logged")
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


def fit_run(run: Run, *, g_param: bool = False) -> None:
    """The [C4] fit of the run's metric against its bound terms; diverged runs and runs without theory are skipped."""
    if run.status == "diverged":
        run.notes.append("diverged: shown, not fitted")
        return
    if run.kind is None or run.metric not in run.metrics.columns:
        return
    rows = run.metrics[run.metrics[run.metric].notna()]
    steps = rows["step"].to_numpy(dtype=np.int64)
    y = rows[run.metric].to_numpy(dtype=np.float64)
    if len(steps) == 0:
        return
    lrs = _per_step(run, "lr")
    if run.kind == "C1":
        s1 = rows["theory/S1"].to_numpy(dtype=np.float64)
        s2 = rows["theory/S2"].to_numpy(dtype=np.float64)
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
    run.fit = fit_bound(y, a, b, D=D_fixed, **kwargs)
    run.fit_steps, run.fit_observed = steps, y
    if not run.fit.ok:
        run.notes.append(f"fit: {run.fit.message or run.fit.method}")


# ---------------------------------------------------------------------------------------------------------------------
# across runs: best learning rates, rank correlations, performance profiles
# ---------------------------------------------------------------------------------------------------------------------
def _comparable(run: Run) -> bool:
    """Runs whose final value is the metric at the horizon: completed, with a finite final value."""
    return run.status == "completed" and math.isfinite(run.final)


def _spearman(pred, obs) -> tuple[float, float, int]:
    from scipy.stats import spearmanr

    pred, obs = np.asarray(pred, dtype=np.float64), np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(pred) & np.isfinite(obs)
    n = int(ok.sum())
    if n < 3 or np.ptp(pred[ok]) == 0 or np.ptp(obs[ok]) == 0:
        return float("nan"), float("nan"), n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = spearmanr(pred[ok], obs[ok])
    return float(res.statistic), float(res.pvalue), n


def correlations(runs: list[Run]) -> list[dict]:
    """Spearman ρ of (predicted final bound, observed final metric): per task over all its runs, and per
    (task, optimizer, schedule)."""
    out = []
    by_task: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if _comparable(run):
            by_task[run.task].append(run)
    for task, members in sorted(by_task.items()):
        rho, p, n = _spearman([r.predicted for r in members], [r.final for r in members])
        out.append({"task": _short(task), "scope": "overall", "optimizer": None, "schedule": None,
                    "rho": rho, "pvalue": p, "n": n})
        by_method: dict[tuple, list[Run]] = defaultdict(list)
        for r in members:
            by_method[r.method].append(r)
        for (opt, sched), group in sorted(by_method.items()):
            rho, p, n = _spearman([r.predicted for r in group], [r.final for r in group])
            out.append({"task": _short(task), "scope": "schedule", "optimizer": opt, "schedule": sched,
                        "rho": rho, "pvalue": p, "n": n})
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
    """Per (task, optimizer, schedule): the predicted best base lr and the observed one (lowest mean final metric
    over seeds among the completed runs)."""
    groups: dict[tuple, list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.task, *run.method)].append(run)
    out = []
    for (task, opt, sched), group in sorted(groups.items()):
        healthy = [r for r in group if r.status != "diverged"]
        g2 = [r.column("theory/grad_sq").dropna().to_numpy(dtype=np.float64) for r in healthy]
        g2 = np.concatenate(g2) if g2 else np.zeros(0)
        g2 = g2[np.isfinite(g2)]
        G2 = float(g2.mean()) if g2.size else float("nan")
        Ds = [r.D[0] for r in group if math.isfinite(r.D[0])]
        D = float(np.median(Ds)) if Ds else float("nan")
        Ts = [r.horizon for r in group if r.horizon]
        T = int(np.median(Ts)) if Ts else None
        B, h, B_source = _schedule_B(healthy or group)
        kinds = {r.kind for r in group if r.kind}
        kind = kinds.pop() if len(kinds) == 1 else None
        pred_c2 = (D / (math.sqrt(G2) * math.sqrt(T * B))
                   if T and G2 > 0 and B > 0 and math.isfinite(D) else float("nan"))
        pred, rule = pred_c2, "C2"
        if kind == "C3" and h is not None and G2 > 0 and math.isfinite(D):
            # [C3] with η = γ h: bound(γ) = t1/γ + γ (t2 + t3), best at sqrt(t1 / (t2 + t3)) (ALGORITHMS.md [C3])
            t1 = D ** 2 / (2 * h.sum())
            t23 = sgd_last_iterate_bound(h, np.full(len(h), G2), 0.0)
            pred, rule = (math.sqrt(t1 / t23), "C3") if t23 > 0 else (float("nan"), "C3")
        by_lr: dict[float, list[float]] = defaultdict(list)
        for r in group:
            if _comparable(r):
                by_lr[r.lr].append(r.final)
        observed = min(by_lr, key=lambda lr: float(np.mean(by_lr[lr]))) if by_lr else float("nan")
        out.append({"task": _short(task), "optimizer": opt, "schedule": sched, "bound": kind, "rule": rule,
                    "predicted": pred, "predicted_C2": pred_c2, "observed": observed,
                    "ratio": pred / observed if observed and math.isfinite(observed) else float("nan"),
                    "D": D, "G2": G2, "B": B, "B_source": B_source, "T": T, "n_lrs": len(by_lr)})
    return out


def steps_to_target(run: Run, target: float) -> float:
    values = run.column(run.metric).to_numpy(dtype=np.float64) if run.metric else np.zeros(0)
    hit = np.flatnonzero(np.isfinite(values) & (values <= target))
    return float(run.metrics["step"].iloc[hit[0]]) if hit.size else float("inf")


def profiles(runs: list[Run], tol: float = 0.05) -> dict | None:
    """AlgoPerf-style performance profiles over tasks, or None with fewer than two tasks.

    Per task the target is best + tol·|best| (best: the lowest final metric of any run); a method's (optimizer,
    schedule) steps-to-target on a task is the fewest over its settings (its tuned lr), each setting's the median
    over seeds; ratio = steps / fastest method's steps (∞ when never reached); ρ_m(τ) = share of tasks with ratio ≤ τ.
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
            targets[_short(task)] = float("nan")
            for m in methods:
                steps[m][task] = float("inf")
            continue
        best = min(finals)
        target = best + tol * abs(best)
        targets[_short(task)] = target
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
    label = {m: f"{m[0]}/{m[1]}" for m in methods}
    return {"tol": tol, "tasks": [_short(t) for t in tasks], "targets": targets,
            "steps": {label[m]: {_short(t): steps[m][t] for t in tasks} for m in methods},
            "ratios": {label[m]: {_short(t): ratios[m][t] for t in tasks} for m in methods},
            "tau": tau.tolist(), "rho": {label[m]: rho[m] for m in methods}}


def analyze(runs: list[Run], metric: str = "auto", *, g_param: bool = False, profile_tol: float = 0.05) -> dict:
    """Observe, fit and compare every run; returns the report's numbers (report.json before JSON cleaning)."""
    every = runs
    runs = comparable_runs(every)
    if not runs:
        raise ReportError("none of the runs has a config.yaml; nothing to compare")
    metrics = resolve_metric(runs, metric)
    for run in runs:
        observe(run, metrics[run.task])
        fit_run(run, g_param=g_param)
    statuses: dict[str, int] = defaultdict(int)
    for run in every:
        statuses[run.status] += 1
    return {
        "metric": {_short(t): m for t, m in metrics.items()},
        "n_runs": len(every),
        "statuses": dict(statuses),
        "runs": [run_record(r) for r in every],
        "prediction": {"correlations": correlations(runs), "best_lr": best_lrs(runs)},
        "profiles": profiles(runs, profile_tol),
    }


def comparable_runs(runs: list[Run]) -> list[Run]:
    """The runs that enter plots and comparisons: those with a config (task, optimizer, schedule known)."""
    return [r for r in runs if r.config]


def run_record(run: Run) -> dict:
    D, source = run.D
    return {"run": run.name, "task": run.task_label, "optimizer": run.optimizer, "schedule": run.schedule,
            "lr": run.lr, "seed": run.seed, "status": run.status,
            "steps_done": run.summary.get("steps_done"), "steps": run.horizon, "metric": run.metric,
            "final": run.final, "predicted": run.predicted, "bound": run.kind, "D": D, "D_source": source,
            "fit": run.fit.to_dict() if run.fit is not None else None, "notes": list(run.notes)}


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
