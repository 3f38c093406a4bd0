"""The report's figures (PNG). matplotlib through `matplotlib.figure.Figure`, not pyplot: no global state and no
backend switch in the caller's process; PNGs are rendered by Agg whatever the default backend is.

One panel per method (identity.py: the optimizer's config choice plus what varies within it), never per optimizer
class; titles are wrapped to their panel's width so nothing is clipped.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter
from matplotlib.transforms import blended_transform_factory

from .fits import smoothed_train
from .prediction import finals_by_lr
from .runs import Run, group_by

DPI = 100
PANEL_W, PANEL_H = 4.6, 3.6
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
          "tab:cyan", "tab:gray")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def wrap(text: str, width_in: float, fontsize: float) -> str:
    """`text` broken into lines that fit `width_in` inches at `fontsize` points (≈ 0.6 em per character)."""
    chars = max(12, int(width_in * 72 / (0.6 * fontsize)))
    return "\n".join(textwrap.wrap(text, chars, break_long_words=True, break_on_hyphens=False)) or text


def _lr_colors(lrs) -> dict:
    """Base lr → colour, ordered low (dark) to high (bright)."""
    from matplotlib import colormaps

    values = sorted({lr for lr in lrs if math.isfinite(lr)})
    cmap = colormaps["plasma"]
    cols = cmap(np.linspace(0.0, 0.85, max(len(values), 1)))
    return {lr: cols[i] for i, lr in enumerate(values)}


def _grid(n: int, width: float = PANEL_W, height: float = PANEL_H, ncols_max: int = 3, sharey: bool = False):
    ncols = min(ncols_max, max(n, 1))
    nrows = math.ceil(max(n, 1) / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows + 0.8), dpi=DPI, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _lr_name(run: Run) -> str:
    return "cap" if run.lr_role == "cap" else "lr"


def by_method(runs: list[Run], task: str) -> dict[str, list[Run]]:
    """The runs of `task` by method, methods sorted."""
    return dict(sorted(group_by([r for r in runs if r.task == task], lambda r: r.method).items()))


def _positive(values) -> bool:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(np.all(v > 0))


def _series(run: Run, key: str) -> pd.Series:
    s = pd.Series(run.column(key).to_numpy(dtype=np.float64), index=run.metrics["step"].to_numpy())
    return s[np.isfinite(s.to_numpy())]


def _title(ax, method: str, members: list[Run], extra: str = "") -> None:
    """The method (wrapped to the panel) and, smaller, what it is: class · schedule(s)."""
    scheds = sorted({r.schedule for r in members})
    what = f"{members[0].optimizer} · {', '.join(scheds)}" + (f" · {extra}" if extra else "")
    ax.set_title(wrap(method, PANEL_W - 0.3, 10) + "\n" + wrap(what, PANEL_W - 0.3, 8), fontsize=9.5)


def _suptitle(fig: Figure, text: str, ncols: int, width: float = PANEL_W) -> None:
    fig.suptitle(wrap(text, width * ncols - 0.4, 11), fontsize=11)


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, facecolor="white")


def _ticks(axes, log_y: bool) -> None:
    """Step axes in whole steps; y log with plain labels, or linear with at least four labels."""
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log_y:
            ax.set_yscale("log")
            plain_log_y(ax)
        else:
            ax.yaxis.set_major_locator(MaxNLocator(nbins=6, min_n_ticks=4))


# ---------------------------------------------------------------------------------------------------------------------
def train_overlay(run: Run, metric: str) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The smoothed training loss in the metric's units, or None where it is a different quantity: the loss itself
    next to eval/loss, minus the task's f* next to eval/subopt (f − f*)."""
    if metric not in ("eval/loss", "eval/subopt"):
        return None
    steps, values = smoothed_train(run)
    if not len(steps):
        return None
    if metric == "eval/subopt":
        if not math.isfinite(run.f_star):
            return None
        return steps, values - run.f_star, "train/loss − f*, smoothed"
    return steps, values, "train/loss, smoothed"


def curves(runs: list[Run], task: str, out: Path) -> Path | None:
    """Per method: the evaluated metric at x (mean over seeds, min–max band) and the smoothed training loss."""
    methods = by_method(runs, task)
    if not methods:
        return None
    metric = next(r.metric for ms in methods.values() for r in ms)
    colors = _lr_colors(r.lr for ms in methods.values() for r in ms)
    fig, axes = _grid(len(methods))
    all_values, positive_only = [], []
    any_train = False
    for ax, (method, members) in zip(axes, sorted(methods.items())):
        groups = group_by(members, lambda r: r.setting)
        handles, plotted = [], False
        for setting, group in sorted(groups.items(), key=lambda kv: kv[1][0].lr):
            color = colors.get(group[0].lr, "black")
            frame = pd.concat([_series(r, metric) for r in group], axis=1).sort_index()
            diverged = any(r.status == "diverged" for r in group)
            name = f"{_lr_name(group[0])}={_fmt(group[0].lr)}" + (" (diverged)" if diverged else "") + \
                (f" ×{len(group)} seeds" if len(group) > 1 else "")
            if not frame.empty:
                mean = frame.mean(axis=1)
                few = len(mean) <= 15
                ax.plot(mean.index, mean.to_numpy(), color=color, lw=1.7, ls=":" if diverged else "-",
                        marker="o" if few else None, ms=3)
                if len(group) > 1:
                    ax.fill_between(mean.index, frame.min(axis=1).to_numpy(), frame.max(axis=1).to_numpy(),
                                    color=color, alpha=0.2, lw=0)
                all_values.extend(frame.to_numpy().ravel().tolist())
                plotted = True
            for r in group:
                tr = train_overlay(r, metric)
                if tr is not None:
                    s, v, _ = tr
                    keep = v > 0 if metric == "eval/subopt" else np.isfinite(v)
                    ax.plot(s[keep], v[keep], color=color, lw=0.9, ls="--", alpha=0.5)
                    positive_only.extend(v[keep].tolist())
                    any_train = True
            handles.append(Line2D([], [], color=color, lw=2, label=name))
        _title(ax, method, members)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        if handles:
            style = [Line2D([], [], color="gray", lw=1.7, label=f"{metric} at x")]
            if any_train:
                tr_name = "train/loss − f* (smoothed)" if metric == "eval/subopt" else "train/loss (smoothed)"
                style.append(Line2D([], [], color="gray", lw=1.0, ls="--", label=tr_name))
            ax.legend(handles=handles + style, fontsize=7)
        if not plotted:
            ax.text(0.5, 0.5, f"no {metric} logged", ha="center", va="center", transform=ax.transAxes)
    _ticks(axes, _positive(all_values + positive_only))
    ncols = min(3, len(methods))
    _suptitle(fig, f"{task}: {metric} evaluated at x (solid; mean over seeds, band = min–max)"
                   + (" and the smoothed training loss (dashed)" if any_train else ""), ncols)
    path = out / f"curves_{slug(task)}.png"
    _save(fig, path)
    return path


def fits(runs: list[Run], task: str, out: Path) -> Path | None:
    """Each run's fitted series (solid) and its fitted [C4] bound (dashed), one panel per method."""
    methods = by_method(runs, task)
    if not any(r.fit is not None and r.fit.ok for ms in methods.values() for r in ms):
        return None                                   # nothing fitted: the page says why instead of empty axes
    metric = next(r.metric for ms in methods.values() for r in ms)
    colors = _lr_colors(r.lr for ms in methods.values() for r in ms)
    fig, axes = _grid(len(methods))
    all_values = []
    for ax, (method, members) in zip(axes, sorted(methods.items())):
        handles, seen, targets = [], set(), set()
        fitted, raw_drawn = 0, False
        for r in sorted(members, key=lambda r: (r.lr, str(r.seed))):
            if r.fit is None or not r.fit.ok or r.fit_steps is None:
                continue
            color = colors.get(r.lr, "black")
            few = len(r.fit_steps) <= 15
            ax.plot(r.fit_steps, r.fit_observed, color=color, lw=1.2, alpha=0.85, marker="o" if few else None, ms=3)
            ax.plot(r.fit_steps, r.fit.curve, color=color, lw=1.6, ls="--")
            all_values.extend(np.asarray(r.fit_observed).tolist() + np.asarray(r.fit.curve).tolist())
            if r.bound_kind == "bound" and (r.fit_target or metric) == "eval/subopt":
                raw = _series(r, "theory/bound")       # a theorem here: the bound itself beside f − f*
                ax.plot(raw.index, raw.to_numpy(), color=color, lw=1.1, ls=":")
                all_values.extend(raw.to_numpy().tolist())
                raw_drawn = True
            targets.add(r.fit_target or metric)
            fitted += 1
            if r.lr not in seen:
                seen.add(r.lr)
                handles.append(Line2D([], [], color=color, lw=2, label=f"{_lr_name(r)}={_fmt(r.lr)}"))
        skipped = len(members) - fitted
        _title(ax, method, members, f"{skipped} of {len(members)} not fitted" if skipped else "")
        ax.set_xlabel("step")
        ax.set_ylabel(wrap(" / ".join(sorted(targets)) or metric, PANEL_H, 9), fontsize=9)
        ax.grid(alpha=0.3)
        if fitted:
            handles += [Line2D([], [], color="gray", lw=1.2, label="observed"),
                        Line2D([], [], color="gray", lw=1.6, ls="--", label="fitted C + M·bound")]
            if raw_drawn:
                handles.append(Line2D([], [], color="gray", lw=1.1, ls=":", label="the bound (a theorem for this run)"))
            ax.legend(handles=handles, fontsize=7)
        else:
            reasons = {("no theory columns" if r.kind is None else "diverged" if r.status == "diverged"
                        else "fit failed") for r in members}
            ax.text(0.5, 0.5, wrap("no fit: " + ", ".join(sorted(reasons)), PANEL_W - 0.6, 9), ha="center",
                    va="center", transform=ax.transAxes, fontsize=9)
    _ticks(axes, _positive(all_values))
    _suptitle(fig, f"{task}: observed (solid) and the fitted bound C + M·bound [C4] (dashed)", min(3, len(methods)))
    path = out / f"fits_{slug(task)}.png"
    _save(fig, path)
    return path


def lr_axis(ax, swept: list[float], extra: list[float]) -> None:
    """Log x axis over the swept values and `extra` (predictions), labelled over its whole range: the swept values
    first, then 1-2-5 steps (decades only over more than three decades) where they don't crowd a label."""
    values = sorted({v for v in swept + extra if v > 0 and math.isfinite(v)})
    if not values:
        return
    ax.set_xscale("log")
    lo, hi = values[0] / 1.8, values[-1] * 1.8
    ax.set_xlim(lo, hi)
    ticks = sorted({v for v in swept if v > 0})
    if len(ticks) > 8:
        ticks = []
    mantissas = (1.0,) if math.log10(hi / lo) > 3 else (1.0, 2.0, 5.0)
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in mantissas:
            v = m * 10.0 ** k
            if lo <= v <= hi and all(abs(math.log10(v / t)) > 0.22 for t in ticks):
                ticks.append(v)
    ax.set_xticks(sorted(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _mantissa(v: float) -> float:
    return round(v / 10.0 ** math.floor(math.log10(v) + 1e-9), 6) if v > 0 else 0.0


def plain_log_y(ax) -> None:
    """Log y with plain numbers (0.4, not 4×10⁻¹), labelled over the whole axis: every minor tick too when the axis
    spans under a decade; the 2s and 5s when fewer than four powers of ten fall inside it (a 0.0015–0.05 axis would
    otherwise carry the single label 0.01, a 0.008–1.1 axis three)."""
    lo, hi = ax.get_ylim()
    fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(fmt)
    decades = (math.floor(math.log10(hi) + 1e-9) - math.ceil(math.log10(lo) - 1e-9) + 1) if lo > 0 else 2
    if lo > 0 and hi / lo < 10:
        # enough significant digits that neighbouring ticks differ (6.15 and 6.2 on a 6.1–6.3 axis, not 6.2 twice)
        digits = max(2, math.ceil(-math.log10((hi - lo) / hi)) + 1) if hi > lo else 3
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.{digits}g}"))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    elif decades < 4:           # at least four labels: with only 2–3 powers of ten inside, the 2s and 5s too
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}" if _mantissa(v) in (2.0, 5.0) else ""))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def lr_sensitivity(runs: list[Run], task: str, best: list[dict], out: Path) -> Path | None:
    """Final metric against opt.lr, one panel per method (shared y), the predicted best lr as a dashed line with a ▼
    on the top edge, the observed best starred, diverged runs as × on the top edge. Methods whose opt.lr is a cap
    (SF-Polyak) get their own x label and no prediction."""
    members = [r for r in runs if r.task == task]
    if not members:
        return None
    metric = members[0].metric
    methods = sorted({r.method for r in members})
    finals = [r.final for r in members if r.finished]
    if not finals and not any(r.status == "diverged" for r in members):
        return None                     # no run has finished yet (a live sweep): nothing to set against the lr
    fig, axes = _grid(len(methods), width=PANEL_W, height=PANEL_H + 0.2, sharey=True)
    logy = _positive(finals)            # over the plotted values only
    for i, (ax, method) in enumerate(zip(axes, methods)):
        group = [r for r in members if r.method == method]
        c = COLORS[i % len(COLORS)]
        top = blended_transform_factory(ax.transData, ax.transAxes)
        by_lr = finals_by_lr(group)
        lrs = sorted(by_lr)
        means = [float(np.mean(by_lr[lr])) for lr in lrs]
        handles = []
        if lrs:
            ax.plot(lrs, means, "-o", color=c, ms=4, lw=1.6)
            handles.append(Line2D([], [], color=c, marker="o", lw=1.6, label="final, mean over seeds"))
            for lr in lrs:
                if len(by_lr[lr]) > 1:
                    ax.scatter([lr] * len(by_lr[lr]), by_lr[lr], color=c, s=8, alpha=0.5)
            j = int(np.argmin(means))
            ax.scatter([lrs[j]], [means[j]], marker="*", s=170, color=c, edgecolor="black", zorder=5)
            handles.append(Line2D([], [], color=c, marker="*", ls="", ms=11, markeredgecolor="black",
                                  label=f"observed best {_fmt(lrs[j])}"))
        div = sorted({r.lr for r in group if r.status == "diverged" and math.isfinite(r.lr)})
        if div:
            ax.scatter(div, [0.96] * len(div), marker="x", color="black", s=40, transform=top, clip_on=False)
            handles.append(Line2D([], [], color="black", marker="x", ls="", label="diverged"))
        row = next((b for b in best if b["task"] == task and b["method"] == method), None)
        extra = []
        swept = sorted({r.lr for r in group if math.isfinite(r.lr) and r.lr > 0})
        if row and row.get("predicted") is not None and math.isfinite(row["predicted"]) and row["predicted"] > 0:
            pred = row["predicted"]
            on_axis = not swept or (swept[0] / 10 <= pred <= swept[-1] * 10)
            name = f"predicted best {_fmt(pred)} [{row['rule']}]"
            if on_axis:
                extra.append(pred)
                ax.axvline(pred, color=c, ls="--", lw=1.2)
                ax.plot([pred], [1.0], marker="v", ms=9, color=c, transform=top, clip_on=False)
                handles.append(Line2D([], [], color=c, ls="--", marker="v", label=name))
            else:
                handles.append(Line2D([], [], color=c, ls="--",
                                      label=name + (" (off the axis →)" if pred > swept[-1] else " (← off the axis)")))
        elif group[0].lr_role == "cap":
            handles.append(Line2D([], [], color="none", label="adaptive step: no lr prediction"))
        lr_axis(ax, swept, extra)
        if logy:
            ax.set_yscale("log")
        _title(ax, method, group)
        ax.set_xlabel("cap γ_max (opt.lr)" if group[0].lr_role == "cap" else "base lr (opt.lr)")
        ax.set_ylabel(f"final {metric}")
        ax.tick_params(axis="y", which="both", labelleft=True)
        ax.grid(alpha=0.3, which="both")
        if handles:
            ax.legend(handles=handles, fontsize=7)
    if logy:
        for ax in axes:                      # after every panel is drawn: the shared y limits are final
            plain_log_y(ax)
    _suptitle(fig, f"{task}: final {metric} against the swept step size, per method", min(3, len(methods)))
    path = out / f"lr_{slug(task)}.png"
    _save(fig, path)
    return path


def profile_plot(prof: dict, out: Path) -> Path | None:
    if not prof:
        return None
    fig = Figure(figsize=(8.5, 4.8), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    tau = np.asarray(prof["tau"])
    styles = ("-", "--", ":", "-.")
    methods = sorted(prof["rho"].items())
    for i, (method, rho) in enumerate(methods):
        # identical profiles would hide each other: wider lines underneath, dashes on top
        ax.step(tau, rho, where="post", lw=2.5 + 1.5 * (len(methods) - 1 - i) / max(len(methods) - 1, 1),
                ls=styles[i % len(styles)], label=method, color=COLORS[i % len(COLORS)])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if tau[-1] / tau[0] < 20 else ""))
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ  (steps to target ÷ fastest method's steps)")
    ax.set_ylabel("ρ(τ): fraction of tasks")
    ax.set_title(wrap(f"Performance profiles over {len(prof['tasks'])} tasks (target: best final + "
                      f"{prof['tol']:g}·|best|)", 8.0, 11), fontsize=11)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    path = out / "profiles.png"
    _save(fig, path)
    return path
