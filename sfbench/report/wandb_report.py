"""The report as ONE W&B run (job_type "report") in the sweep's group: figures, tables, W&B line plots of each run's
fitted curve against its observed one and of the lr sensitivity (`line_plots`).

Online when a W&B account is configured, else offline under OUT/wandb/ (the same rule as the training sink,
`sfbench.tracking.wandb_sink.resolve_mode`); upload an offline report later with `wandb sync OUT/wandb/offline-run-*`.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sfbench.tracking.wandb_sink import resolve_mode

from .figures import slug

WANDB_SINK = "sfbench.tracking.wandb_sink.WandbSink"


def wanted(runs) -> bool:
    """The runs were logged to W&B (logger=wandb), so their report goes there too."""
    return any(r.config.get("logger._target_") == WANDB_SINK for r in runs)


def logger_setting(runs, key: str, default=None):
    """`logger.<key>` of the first run logged with the W&B sink that sets it, else `default`."""
    for r in runs:
        if r.config.get("logger._target_") == WANDB_SINK and r.config.get(f"logger.{key}") is not None:
            return r.config[f"logger.{key}"]
    return default


def group_of(runs, fallback: str) -> str:
    groups = [r.config.get("group") for r in runs if r.config.get("group")]
    if not groups:
        return fallback
    return max(set(groups), key=groups.count)


def _rows(records: list[dict], columns: list[str]) -> list[list[Any]]:
    return [[rec.get(c) for c in columns] for rec in records]


def log_report(report: dict, runs, out: Path, *, mode: str | None = None) -> dict:
    """Log to one W&B run; returns {"mode", "dir", "id", "group"}. Raises on W&B errors (the caller reports them)."""
    import wandb

    out = Path(out).absolute()
    mode = resolve_mode(mode or logger_setting(runs, "mode", "auto"))
    if mode == "disabled":
        return {"mode": mode, "dir": None, "id": None, "group": None}
    group = group_of(runs, report["source_name"])
    settings = wandb.Settings(save_code=False, console="off", silent=True, quiet=True, init_timeout=60,
                              reinit="finish_previous")
    # one W&B run per report directory: a report made again continues it (a new step) instead of adding a run
    run_id = "report-" + hashlib.sha1(str(out).encode()).hexdigest()[:16]
    run = wandb.init(project=logger_setting(runs, "project", "sfbench"), entity=logger_setting(runs, "entity"),
                     dir=out, group=group, job_type="report", name=f"report-{group}", mode=mode, id=run_id,
                     resume="allow",
                     config={"source": report["source"], "metric": report["metric"], "n_runs": report["n_runs"]},
                     settings=settings)
    try:
        images = {f"report/{Path(f['file']).stem}": wandb.Image(str(out / f["file"]), caption=f["title"])
                  for f in report["figures"]}
        best_cols = ["task", "method", "lr_role", "optimizer", "schedule", "bound", "rule", "predicted", "observed",
                     "ratio", "predicted_C2", "D", "G2", "B", "T"]
        corr_cols = ["task", "scope", "method", "rho", "ci_low", "ci_high", "n", "pvalue"]
        pred = report["prediction"]
        tables = {
            "report/best_lr": wandb.Table(columns=best_cols, data=_rows(pred["best_lr"], best_cols)),
            "report/correlations": wandb.Table(columns=corr_cols, data=_rows(
                [{**c, "ci_low": (c.get("ci") or [None, None])[0], "ci_high": (c.get("ci") or [None, None])[1]}
                 for c in pred["correlations"]], corr_cols)),
        }
        run_cols = ["run", "task", "method", "optimizer", "schedule", "lr", "seed", "status", "final", "predicted",
                    "bound", "bound_kind", "fit_target"]
        fit_cols = ["C", "M", "D", "p", "G", "rmse", "n_used", "method"]
        tables["report/runs"] = wandb.Table(
            columns=run_cols + [f"fit_{c}" for c in fit_cols],
            data=[[r.get(c) for c in run_cols] + [(r["fit"] or {}).get(c) for c in fit_cols] for r in report["runs"]])
        curve_rows = []
        for r in runs:
            if r.fit is not None and r.fit.ok and r.fit_steps is not None:
                for step, obs, fitted in zip(r.fit_steps, r.fit_observed, r.fit.curve):
                    curve_rows.append([r.name, int(step), _plain(obs), _plain(fitted)])
        tables["report/fitted_curves"] = wandb.Table(columns=["run", "step", "observed", "fitted"], data=curve_rows)
        run.log({**images, **tables, **line_plots(wandb, runs, pred["best_lr"])})
        summary = {f"spearman/{c['task']}/{c['method'] or 'all'}": c["rho"]
                   for c in pred["correlations"] if c["rho"] is not None}
        run.summary.update(summary)
        info = {"mode": mode, "id": run.id, "group": group, "dir": _run_dir(run, out, mode)}
    finally:
        run.finish()
    if mode == "offline":
        print(f"sfbench.report: W&B report run (offline) at {info['dir']}")
        print(f"sfbench.report: upload it with: wandb sync {info['dir']}")
    else:
        print(f"sfbench.report: W&B report run {getattr(run, 'url', None) or info['id']} (group {group})")
    return info


def line_plots(wandb, runs, best: list[dict]) -> dict:
    """W&B line plots (custom charts, interactive in the app), not only PNGs:

    - `report/fit/<run>`: the run's fitted series (observed) against its fitted bound C + M·bound, over steps;
    - `report/lr/<task>`: final metric against log10(opt.lr), one line per method (completed runs, mean over
      seeds), the legend naming each method's predicted best lr;
    - `report/cap/<task>`: the same for the methods whose opt.lr is a cap on an adaptive step (SF-Polyak), on their
      own axis: a cap is not a base lr.
    """
    charts = {}
    for r in runs:
        if r.fit is None or not r.fit.ok or r.fit_steps is None:
            continue
        steps = [int(s) for s in r.fit_steps]
        observed = [_plain(v) for v in r.fit_observed]
        fitted = [_plain(v) for v in r.fit.curve]
        target = r.fit_target or r.metric
        charts[chart_key("report/fit/", r.name, charts)] = wandb.plot.line_series(
            xs=[steps, steps], ys=[observed, fitted], keys=[f"observed {target}", "fitted C + M·bound"],
            title=f"{r.task} · {r.method} · {'cap' if r.lr_role == 'cap' else 'lr'}={r.lr:g}: observed vs fitted "
                  f"[C4]", xname="step")
    # base lrs and SF-Polyak's caps are different quantities: one chart each, never one x axis
    by_axis: dict[tuple[str, str], dict[str, dict[float, list[float]]]] = \
        defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in runs:
        if r.finished and r.lr > 0:
            by_axis[(r.task, "cap" if r.lr_role == "cap" else "lr")][r.method][r.lr].append(r.final)
    for (task, role), methods in sorted(by_axis.items()):
        xs, ys, keys = [], [], []
        for method, by_lr in sorted(methods.items()):
            lrs = sorted(by_lr)
            xs.append([math.log10(lr) for lr in lrs])
            ys.append([float(np.mean(by_lr[lr])) for lr in lrs])
            row = next((b for b in best if b["task"] == task and b["method"] == method), {})
            pred = row.get("predicted")
            keys.append(method + (f" (predicted best {pred:.3g})" if isinstance(pred, float) and pred > 0 else ""))
        metric = next((rr.metric for rr in runs if rr.task == task), "metric")
        swept = "the cap γ_max (opt.lr; adaptive step, no prediction)" if role == "cap" else "the base lr (opt.lr)"
        charts[chart_key(f"report/{role}/", task, charts)] = wandb.plot.line_series(
            xs=xs, ys=ys, keys=keys, title=f"{task}: final {metric} against log10 of {swept}, per method",
            xname="log10 cap γ_max" if role == "cap" else "log10 base lr")
    return charts


#: longest chart-key tail: W&B names each chart's table artifact `run-<id>-<key>_table`, at most 128 characters
KEY_TAIL = 60


def chart_key(prefix: str, name: str, taken) -> str:
    """`prefix` + the name as a W&B key: its slug, or — when longer than KEY_TAIL (a Hydra run directory named by
    all its overrides) — the slug's head and a hash of the whole name, so the key stays unique and its artifact
    name legal."""
    tail = slug(name)
    if len(tail) > KEY_TAIL:
        tail = tail[:KEY_TAIL - 9] + "_" + hashlib.sha1(name.encode()).hexdigest()[:8]
    key, i = prefix + tail, 1
    while key in taken:
        i += 1
        key = f"{prefix}{tail}_{i}"
    return key


def _plain(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _run_dir(run, out: Path, mode: str) -> str | None:
    """The offline-run-*/run-* folder of this run."""
    try:
        sync_dir = run.settings.sync_dir
    except Exception:            # noqa: BLE001 — a settings attribute that this wandb version lacks
        sync_dir = None
    if sync_dir:
        return str(Path(sync_dir).absolute())
    prefix = "offline-run-" if mode == "offline" else "run-"
    found = sorted((out / "wandb").glob(f"{prefix}*-{run.id}"))
    return str(found[-1]) if found else None
