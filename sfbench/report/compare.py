"""The report's first figures per task: the methods side by side on one axis.

- `best_runs`: every method's best run — its lr (or cap) with the lowest mean final metric over seeds — as the metric
  over steps, mean over seeds with a min–max band, all methods on one axis.
- `lr_overview`: the final metric against the swept lr, every method a line on one axis (methods whose opt.lr caps an
  adaptive step on a second axis beside it); a diverged run is an × on the top edge, a run that ended above its start
  a hollow marker, and the y range is set by the healthy runs so one bad run does not flatten the rest.

Per-method detail follows in `figures.py`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .figures import COLORS, DPI, by_method, lr_axis, plain_log_y, slug, wrap
from .prediction import best_lr, finals_by_lr
from .runs import Run

WIDTH, HEIGHT = 7.2, 4.4


def _y_axis(ax, values: list[float]) -> None:
    """Log y with plain labels when every value is positive, else linear with ≥ 4 labels."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
    if v.size and np.all(v > 0):
        ax.set_yscale("log")
        lo, hi = float(v.min()), float(v.max())
        pad = (hi / lo) ** 0.06 if hi > lo else 1.1
        ax.set_ylim(lo / pad, hi * pad)
        plain_log_y(ax)
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=6, min_n_ticks=4))


def best_runs(runs: list[Run], task: str, out: Path) -> tuple[Path, list[str]] | None:
    """The figure and the methods drawn in it."""
    methods = by_method(runs, task)
    if not methods:
        return None
    metric = next(r.metric for ms in methods.values() for r in ms)
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    values: list[float] = []
    drawn: list[str] = []
    for i, (method, members) in enumerate(methods.items()):
        lr = best_lr(members)
        if lr is None:
            continue
        chosen = [r for r in members if r.lr == lr and r.status == "completed"]
        series = [r.metrics[["step", metric]].dropna() for r in chosen if metric in r.metrics.columns]
        series = [s for s in series if len(s)]
        if not series:
            continue
        steps = np.array(sorted(set.intersection(*(set(s["step"].tolist()) for s in series))), dtype=np.int64)
        if not len(steps):
            continue
        ys = np.array([s.set_index("step")[metric].reindex(steps).to_numpy(dtype=np.float64) for s in series])
        color = COLORS[i % len(COLORS)]
        what = "cap" if chosen[0].lr_role == "cap" else "lr"
        seeds = f", {len(series)} seeds" if len(series) > 1 else ""
        ax.plot(steps, ys.mean(axis=0), color=color, lw=1.8, label=f"{method} ({what} {lr:g}{seeds})")
        if len(series) > 1:
            ax.fill_between(steps, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.18, lw=0)
        values.extend(ys.ravel().tolist())
        drawn.append(method)
    if not drawn:
        return None
    _y_axis(ax, values)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel(f"{metric} (at x for SF)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="best", frameon=False)
    ax.set_title(wrap(f"{task}: each method at its best lr", WIDTH - 0.4, 11), fontsize=11)
    path = out / f"best_{slug(task)}.png"
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path, drawn


def lr_overview(runs: list[Run], task: str, out: Path) -> tuple[Path, list[str]] | None:
    """The figure and the methods drawn in it."""
    methods = by_method(runs, task)
    if not methods or not any(r.status in ("completed", "diverged") for ms in methods.values() for r in ms):
        return None
    metric = next(r.metric for ms in methods.values() for r in ms)
    roles = [role for role in ("base lr", "cap") if any(ms[0].lr_role == role for ms in methods.values())]
    fig = Figure(figsize=(WIDTH if len(roles) == 1 else WIDTH * 1.5, HEIGHT), dpi=DPI, layout="constrained")
    axes = fig.subplots(1, len(roles), squeeze=False, sharey=True).ravel()
    drawn: list[str] = []
    plotted: list[float] = []           # the means drawn, of (method, lr) cells without a run above its start
    for ax, role in zip(axes, roles):
        swept: list[float] = []
        for i, (method, members) in enumerate(methods.items()):
            if members[0].lr_role != role:
                continue
            color = COLORS[i % len(COLORS)]
            by_lr = finals_by_lr(members)
            lrs = sorted(by_lr)
            swept.extend(r.lr for r in members)
            ax.plot(lrs, [float(np.mean(by_lr[lr])) for lr in lrs], color=color, marker="o", ms=4, lw=1.5,
                    label=method)
            drawn.append(method)
            bad = [r for r in members if r.above_start and r.status == "completed"]
            if bad:
                ax.plot([r.lr for r in bad], [r.final for r in bad], ls="none", marker="o", ms=9, mfc="none",
                        mec=color, mew=1.5)
            diverged = [r.lr for r in members if r.status == "diverged"]
            if diverged:
                ax.plot(diverged, [1.0] * len(diverged), ls="none", marker="x", ms=8, color=color, clip_on=False,
                        transform=ax.get_xaxis_transform())
            plotted.extend(float(np.mean(by_lr[lr])) for lr in lrs
                           if not any(r.above_start for r in members if r.lr == lr))
        lr_axis(ax, swept, [])
        ax.set_xlabel("cap γ_max (opt.lr)" if role == "cap" else "base lr (opt.lr)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8.5, loc="best", frameon=False)
    _y_axis(axes[0], plotted or [r.final for ms in methods.values() for r in ms if math.isfinite(r.final)])
    axes[0].set_ylabel(f"final {metric}")
    fig.suptitle(wrap(f"{task}: final {metric} against the lr, every method (○ ended above its start, × diverged; "
                      f"y range from the healthy runs)", WIDTH * len(roles) - 0.4, 10.5), fontsize=10.5)
    path = out / f"lr_all_{slug(task)}.png"
    fig.savefig(path, dpi=DPI, facecolor="white")
    return path, drawn
