"""The report's run model: a run directory read into a `Run` (config, summary, metrics), and the identity of its task
and method (identity.py). Run directories are read with sfbench.tracking, never with the training code.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sfbench.theory.fit import BoundFit
from sfbench.tracking import find_runs, flatten, iter_metrics, read_config, read_summary

from .identity import choice, is_setting, label, lr_is_cap, method_items, short, task_items

#: --metric auto: the first of these that the runs of a task log
AUTO_METRICS = ("eval/subopt", "eval/loss", "train/loss")


class ReportError(Exception):
    """A problem with the input the user can fix (missing or empty directory, unknown metric): exit status 2."""


def to_float(x, default=float("nan")) -> float:
    """`x` as a float, `default` when it is none."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return default


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
    # filled by analysis.analyze() (fits.observe, fits.fit_run)
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
    def finished(self) -> bool:
        """Completed with a finite final value: its final value is the metric at the horizon (the runs compared)."""
        return self.status == "completed" and math.isfinite(self.final)

    @property
    def status(self) -> str:
        return str(self.summary.get("status") or "unknown")

    @property
    def task(self) -> str:
        """The task's identity (identity.py): its config name, plus task settings that vary within it."""
        return self.task_id or choice(self.config, "task")

    @property
    def optimizer(self) -> str:
        """The optimizer's class (short name): shown for information, never used to group runs."""
        return short(self.config.get("opt._target_"))

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
        return to_float(self.config.get("opt.lr"))

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
        return to_float(task.get("f_star")) if isinstance(task, dict) else float("nan")

    @property
    def D(self) -> tuple[float, str | None]:
        """(D, source): the summary's theory.D (source theory.D_source), else the task's exact D."""
        if self.theory.get("D") is not None:
            return to_float(self.theory["D"]), self.theory.get("D_source") or "distance"
        task = self.summary.get("task")
        if isinstance(task, dict) and task.get("D") is not None:
            return to_float(task["D"]), "task"
        return float("nan"), None

    def column(self, key: str) -> pd.Series:
        return self.metrics[key] if key in self.metrics.columns else pd.Series(np.nan, index=self.metrics.index)

    def per_step(self, key: str) -> np.ndarray | None:
        """`key` at every step 1 … last logged step (forward-filled over unlogged steps), or None."""
        if key not in self.metrics.columns:
            return None
        s = pd.Series(self.metrics[key].to_numpy(), index=self.metrics["step"].to_numpy()).dropna()
        if s.empty:
            return None
        steps = np.arange(1, int(self.metrics["step"].max()) + 1)
        return s.reindex(steps).ffill().bfill().to_numpy(dtype=np.float64)


def identify(runs: list[Run]) -> None:
    """Fill every run's task and method identity (identity.py) from the configs of all runs together."""
    configs = [r.config for r in runs]
    tasks = task_items(configs)
    task_labels = [label(t) for t in tasks]
    methods = method_items(configs, task_labels)
    for r, t, tl, m in zip(runs, tasks, task_labels, methods):
        r.task_key, r.task_id, r.method_key, r.method_id = t, tl, m, label(m)


def _frame(rows: list[dict]) -> pd.DataFrame:
    """The metric rows as numbers, one row per step (the last logged wins); columns holding strings left out."""
    frame = pd.DataFrame(rows)
    frame = frame.drop(columns=[c for c in frame.columns if frame[c].dtype == object
                                and frame[c].map(lambda v: isinstance(v, str)).any()])
    if "step" in frame.columns:
        frame = frame.sort_values("step", kind="stable").drop_duplicates("step", keep="last").reset_index(drop=True)
    else:
        frame = pd.DataFrame({"step": pd.Series(dtype=float)})
    return frame.apply(pd.to_numeric, errors="coerce")


def read_run(d: Path, name: str) -> Run:
    """One run directory. A damaged metric line is skipped (counted in the run's notes) and an unreadable file
    noted: one bad file shouldn't hide a whole run, or stop the report."""
    unreadable, skipped = None, []
    try:
        rows = list(iter_metrics(d / "metrics.jsonl", skipped)) if (d / "metrics.jsonl").exists() else []
    except OSError as e:                                # a directory, no permission, an I/O error
        rows, skipped = [], []
        unreadable = f"metrics.jsonl unreadable ({type(e).__name__}: {e.strerror or e})"
    notes = [f"metrics.jsonl: {len(skipped)} unreadable line(s) skipped"] if skipped else []
    bound_kind = next((r["theory/bound_kind"] for r in reversed(rows)
                       if isinstance(r.get("theory/bound_kind"), str)), None)
    try:
        config = flatten(read_config(d))
    except Exception as e:                              # noqa: BLE001 — one bad file shouldn't stop the report
        config = {}
        unreadable = unreadable or f"config.yaml unreadable ({type(e).__name__})"
    try:
        summary = read_summary(d) or {}
    except (ValueError, OSError) as e:
        summary, notes = {}, notes + [f"summary.json unreadable ({e})"]
    if not config:
        unreadable = unreadable or "no config.yaml (the task, optimizer and schedule are unknown)"
    return Run(path=d, name=name, config=config, summary=summary, metrics=_frame(rows), notes=notes,
               logged_bound_kind=bound_kind, unreadable=unreadable)


def load(path: str | Path) -> list[Run]:
    """Every run directory at or below `path`; raises ReportError for a missing or empty directory."""
    root = Path(path)
    if not root.is_dir():
        raise ReportError(f"no run or sweep directory at {root}")
    dirs = find_runs(root)
    if not dirs:
        raise ReportError(f"no runs under {root} (a run directory holds metrics.jsonl or summary.json)")
    runs = [read_run(d, str(d.relative_to(root)) if d != root else d.name) for d in dirs]
    identify(runs)
    return runs


def comparable_runs(runs: list[Run]) -> list[Run]:
    """The runs that enter plots and comparisons: those read whole, with a config (task, optimizer, schedule
    known). A run that has logged no finite value of its metric yet stays (its panel says so), listed in left_out."""
    return [r for r in runs if r.unreadable is None]


def group_by(runs: list[Run], key) -> dict[Any, list[Run]]:
    """The runs by `key(run)`, keys in the order first seen."""
    out: dict[Any, list[Run]] = defaultdict(list)
    for r in runs:
        out[key(r)].append(r)
    return out


def resolve_metric(runs: list[Run], metric: str) -> dict[str, str]:
    """The metric per task: `metric`, or with "auto" the first of AUTO_METRICS a run of the task logs."""
    out = {}
    for task, members in group_by(runs, lambda r: r.task).items():
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
