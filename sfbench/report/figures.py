"""The report's figures (PNG). matplotlib through `matplotlib.figure.Figure`, not pyplot: no global state and no
backend switch in the caller's process; PNGs are rendered by Agg whatever the default backend is.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from .data import Run

DPI = 100
_SCHEDULE_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                    "tab:olive", "tab:cyan", "tab:gray")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _lr_colors(lrs) -> dict:
    """Base lr → colour, ordered low (dark) to high (bright)."""
    from matplotlib import colormaps

    values = sorted({lr for lr in lrs if math.isfinite(lr)})
    cmap = colormaps["plasma"]
    cols = cmap(np.linspace(0.0, 0.85, max(len(values), 1)))
    return {lr: cols[i] for i, lr in enumerate(values)}


def _grid(n: int, width: float = 4.4, height: float = 3.4, ncols_max: int = 3):
    ncols = min(ncols_max, max(n, 1))
    nrows = math.ceil(max(n, 1) / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + 0.6), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _setting_labels(groups: dict[tuple, list[Run]]) -> dict[tuple, str]:
    """Label each seed group by the config keys that vary across the groups of one panel (usually opt.lr)."""
    keys = set()
    dicts = {s: dict(s) for s in groups}
    all_keys = set().union(*(d.keys() for d in dicts.values())) if dicts else set()
    for k in all_keys:
        if len({d.get(k) for d in dicts.values()}) > 1:
            keys.add(k)
    keys = sorted(keys, key=lambda k: (k != "opt.lr", k))
    out = {}
    for s, runs in groups.items():
        if not keys:
            out[s] = f"lr={_fmt(runs[0].lr)}"
        else:
            out[s] = ", ".join(("lr" if k == "opt.lr" else k.split(".")[-1]) + "=" + _fmt(_value(runs[0], k))
                               for k in keys[:3])
    return out


def _value(run: Run, key: str):
    return run.config.get(key)


def _by_task_method(runs: list[Run]) -> dict[str, dict[tuple, list[Run]]]:
    out: dict[str, dict[tuple, list[Run]]] = defaultdict(lambda: defaultdict(list))
    for r in runs:
        out[r.task][r.method].append(r)
    return out


def _positive(values) -> bool:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(np.all(v > 0))


def _series(run: Run, key: str) -> pd.Series:
    s = pd.Series(run.column(key).to_numpy(dtype=np.float64), index=run.metrics["step"].to_numpy())
    return s[np.isfinite(s.to_numpy())]


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, facecolor="white")


# ---------------------------------------------------------------------------------------------------------------------
def curves(runs: list[Run], task: str, out: Path) -> Path | None:
    """Observed metric per (optimizer, schedule): mean over seeds, min–max band."""
    methods = _by_task_method(runs)[task]
    if not methods:
        return None
    metric = next(r.metric for ms in methods.values() for r in ms)
    colors = _lr_colors(r.lr for ms in methods.values() for r in ms)
    fig, axes = _grid(len(methods))
    all_values = []
    for ax, (method, members) in zip(axes, sorted(methods.items())):
        groups: dict[tuple, list[Run]] = defaultdict(list)
        for r in members:
            groups[r.setting].append(r)
        labels = _setting_labels(groups)
        plotted = False
        for setting, group in sorted(groups.items(), key=lambda kv: (kv[1][0].lr, labels[kv[0]])):
            frame = pd.concat([_series(r, metric) for r in group], axis=1)
            if frame.empty:
                continue
            frame = frame.sort_index()
            mean, lo, hi = frame.mean(axis=1), frame.min(axis=1), frame.max(axis=1)
            diverged = any(r.status == "diverged" for r in group)
            color = colors.get(group[0].lr, "black")
            label = labels[setting] + (" (diverged)" if diverged else "") + (f" ×{len(group)} seeds"
                                                                            if len(group) > 1 else "")
            ax.plot(mean.index, mean.to_numpy(), color=color, lw=1.6, ls=":" if diverged else "-", label=label)
            if len(group) > 1:
                ax.fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color=color, alpha=0.2, lw=0)
            all_values.extend(frame.to_numpy().ravel().tolist())
            plotted = True
        ax.set_title(f"{method[0]} · {method[1]}")
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize=7, title="base lr", title_fontsize=7)
        else:
            ax.text(0.5, 0.5, f"no {metric} logged", ha="center", va="center", transform=ax.transAxes)
    if _positive(all_values):
        for ax in axes:
            ax.set_yscale("log")
    fig.suptitle(f"{_label(runs, task)}: {metric} — mean over seeds, band = min–max")
    path = out / f"curves_{slug(_label(runs, task))}.png"
    _save(fig, path)
    return path


def _label(runs: list[Run], task: str) -> str:
    return next(r.task_label for r in runs if r.task == task)


def fits(runs: list[Run], task: str, out: Path) -> Path | None:
    """Each run's observed metric (solid) and its fitted [C4] bound (dashed), per (optimizer, schedule)."""
    methods = _by_task_method(runs)[task]
    if not any(r.fit is not None and r.fit.ok for ms in methods.values() for r in ms):
        return None                                   # nothing fitted: the page says why instead of empty axes
    metric = next(r.metric for ms in methods.values() for r in ms)
    colors = _lr_colors(r.lr for ms in methods.values() for r in ms)
    fig, axes = _grid(len(methods))
    all_values = []
    for ax, (method, members) in zip(axes, sorted(methods.items())):
        handles, seen = [], set()
        fitted = 0
        for r in sorted(members, key=lambda r: (r.lr, str(r.seed))):
            if r.fit is None or not r.fit.ok or r.fit_steps is None:
                continue
            color = colors.get(r.lr, "black")
            ax.plot(r.fit_steps, r.fit_observed, color=color, lw=1.2, alpha=0.8)
            ax.plot(r.fit_steps, r.fit.curve, color=color, lw=1.6, ls="--")
            all_values.extend(np.asarray(r.fit_observed).tolist())
            fitted += 1
            if r.lr not in seen:
                seen.add(r.lr)
                handles.append(Line2D([], [], color=color, lw=2, label=f"lr={_fmt(r.lr)}"))
        skipped = len(members) - fitted
        ax.set_title(f"{method[0]} · {method[1]}" + (f"  ({skipped} not fitted)" if skipped else ""))
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if fitted:
            handles += [Line2D([], [], color="gray", lw=1.2, label="observed"),
                        Line2D([], [], color="gray", lw=1.6, ls="--", label="fitted bound")]
            ax.legend(handles=handles, fontsize=7)
        else:
            reasons = {("no theory columns" if r.kind is None else "diverged" if r.status == "diverged"
                        else "fit failed") for r in members}
            ax.text(0.5, 0.5, "no fit: " + ", ".join(sorted(reasons)), ha="center", va="center",
                    transform=ax.transAxes)
    if _positive(all_values):
        for ax in axes:
            ax.set_yscale("log")
    fig.suptitle(f"{_label(runs, task)}: observed {metric} (solid) and fitted bound C + M·bound (dashed)")
    path = out / f"fits_{slug(_label(runs, task))}.png"
    _save(fig, path)
    return path


def lr_sensitivity(runs: list[Run], task: str, best: list[dict], out: Path) -> Path | None:
    """Final metric against base lr, one line per schedule, predicted best lr dashed, observed best starred."""
    members = [r for r in runs if r.task == task]
    if not members:
        return None
    label = _label(runs, task)
    metric = members[0].metric
    optimizers = sorted({r.optimizer for r in members})
    schedules = sorted({r.schedule for r in members})
    color = {s: _SCHEDULE_COLORS[i % len(_SCHEDULE_COLORS)] for i, s in enumerate(schedules)}
    fig, axes = _grid(len(optimizers), width=6.4 if len(optimizers) == 1 else 5.2, height=4.0)
    finals = [r.final for r in members if math.isfinite(r.final)]
    logy = _positive(finals)
    top = (max(finals) * (3.0 if logy else 1.0) + (0 if logy else 0.1 * (np.ptp(finals) or 1))) if finals else 1.0
    for ax, opt in zip(axes, optimizers):
        any_diverged = False
        for sched in schedules:
            group = [r for r in members if r.optimizer == opt and r.schedule == sched]
            if not group:
                continue
            c = color[sched]
            by_lr: dict[float, list[float]] = defaultdict(list)
            for r in group:
                if r.status == "completed" and math.isfinite(r.final):
                    by_lr[r.lr].append(r.final)
            lrs = sorted(by_lr)
            means = [float(np.mean(by_lr[lr])) for lr in lrs]
            ax.plot(lrs, means, "-o", color=c, ms=4, lw=1.6, label=sched)
            for lr in lrs:
                if len(by_lr[lr]) > 1:
                    ax.scatter([lr] * len(by_lr[lr]), by_lr[lr], color=c, s=8, alpha=0.5)
            div = [r.lr for r in group if r.status == "diverged"]
            if div:
                any_diverged = True
                ax.scatter(div, [top] * len(div), marker="x", color=c, s=40)
            row = next((b for b in best if b["task"] == label and b["optimizer"] == opt and b["schedule"] == sched),
                       None)
            if row and math.isfinite(row["predicted"]) and row["predicted"] > 0:
                ax.axvline(row["predicted"], color=c, ls="--", lw=1.2)
                ax.annotate(f"{row['predicted']:.3g}", (row["predicted"], 1.0), xycoords=("data", "axes fraction"),
                            xytext=(2, -4), textcoords="offset points", rotation=90, va="top", ha="left",
                            fontsize=7, color=c)
            if lrs:
                i = int(np.argmin(means))
                ax.scatter([lrs[i]], [means[i]], marker="*", s=160, color=c, edgecolor="black", zorder=5)
        valid = sorted({r.lr for r in members if r.optimizer == opt and r.lr > 0})
        if valid:
            ax.set_xscale("log")
            if len(valid) <= 12:                      # label the swept lrs themselves: 0.03, 0.1, …
                ax.set_xticks(valid)
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
        if logy:
            ax.set_yscale("log")
        ax.set_title(opt)
        ax.set_xlabel("base lr (opt.lr)")
        ax.set_ylabel(f"final {metric}")
        ax.grid(alpha=0.3, which="both")
        extra = [Line2D([], [], color="gray", ls="--", label="predicted best lr"),
                 Line2D([], [], color="gray", marker="*", ls="", ms=10, markeredgecolor="black",
                        label="observed best")]
        if any_diverged:
            extra.append(Line2D([], [], color="gray", marker="x", ls="", label="diverged"))
        handles, _ = ax.get_legend_handles_labels()
        ax.legend(handles=handles + extra, fontsize=7)
    fig.suptitle(f"{label}: final {metric} against base lr")
    path = out / f"lr_{slug(label)}.png"
    _save(fig, path)
    return path


def profile_plot(prof: dict, out: Path) -> Path | None:
    if not prof:
        return None
    fig = Figure(figsize=(7.5, 4.6), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    tau = np.asarray(prof["tau"])
    styles = ("-", "--", ":", "-.")
    methods = sorted(prof["rho"].items())
    for i, (method, rho) in enumerate(methods):
        # identical profiles would hide each other: wider lines underneath, dashes on top
        ax.step(tau, rho, where="post", lw=2.5 + 1.5 * (len(methods) - 1 - i) / max(len(methods) - 1, 1),
                ls=styles[i % len(styles)], label=method, color=_SCHEDULE_COLORS[i % len(_SCHEDULE_COLORS)])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if tau[-1] / tau[0] < 20 else ""))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ  (steps to target ÷ fastest method's steps)")
    ax.set_ylabel("ρ(τ): fraction of tasks")
    ax.set_title(f"Performance profiles over {len(prof['tasks'])} tasks (target: best final + {prof['tol']:g}·|best|)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    path = out / "profiles.png"
    _save(fig, path)
    return path
