"""The report's PEP section: runs of the `sfn_pep` preset (or any config with a `pep:` node, sfbench/pep/job.py)
hold `pep.csv` (worst case per horizon T) instead of a training curve. They are read here, never pooled with
training runs: one figure with every method's worst case over T, and per method the fitted rates T^−a against
1/log(T+1) (sfbench.pep.rates.fit_rates, docs/pep.md), so the page (html.pep_section) says which one the horizons
can tell apart."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .runs import to_float

FIGURE = "pep_worst_cases.png"

#: The training analysis of a sweep with no training runs (only PEP jobs): every table empty.
EMPTY_ANALYSIS = {"metric": {}, "n_runs": 0, "statuses": {}, "methods": [], "runs": [], "left_out": [],
                  "prediction": {"correlations": [], "best_lr": []}, "profiles": None}


def is_pep(run) -> bool:
    """A PEP job's run directory: its config has a `pep:` node with a method."""
    return bool(run.config.get("pep.method"))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def section(runs: list, out: Path) -> dict | None:
    """Read every PEP run, plot the worst cases and fit the rates. None when there is no PEP run."""
    from ..pep.rates import fit_rates

    pep_runs = [r for r in runs if is_pep(r)]
    if not pep_runs:
        return None
    rows, series = [], []
    for run in sorted(pep_runs, key=lambda r: (str(r.config.get("pep.method")), r.name)):
        method = str(run.config["pep.method"])
        label = method + "".join(f", {k}={run.config[f'pep.{k}']}" for k in ("beta", "gamma", "alpha", "c")
                                 if k in run.config and _differs(pep_runs, f"pep.{k}"))
        csv_path = run.path / "pep.csv"
        entry = {"run": run.name, "method": method, "label": label, "status": run.status, "T": [], "n_T": 0,
                 "worst_case": [], "fits": [], "note": None}
        if not csv_path.is_file():
            entry["note"] = "no pep.csv (the job did not finish)"
            rows.append(entry)
            continue
        data = [r for r in _rows(csv_path) if r.get("T")]
        Ts = [int(r["T"]) for r in data]
        wc = [to_float(r.get("worst_case")) for r in data]
        entry.update(T=Ts, n_T=len(Ts), worst_case=wc)
        try:
            fits = fit_rates(Ts, wc, T_min=min(5, max(Ts) - 2) if Ts else 5)
            entry["fits"] = [{"form": f.model, "C": f.C, "a": f.a, "rms_log_residual": f.rms_log,
                              "describe": f.describe()} for f in fits]
        except ValueError as err:
            entry["note"] = f"no rate fit: {err}"
        rows.append(entry)
        if Ts:
            series.append((label, Ts, wc))
    figure = _plot(series, out) if series else None
    return {"runs": rows, "figure": figure,
            "note": ("Worst cases over the horizon T by PEP (sfbench.pep). The initial conditions are relaxations of "
                     "SFN's, so each curve is an upper bound on its worst case; horizons are small (T ≤ 40), so a "
                     "rate is read from the fits' residuals, not from the curve alone (docs/pep.md).")}


def _differs(runs: list, key: str) -> bool:
    return len({str(r.config.get(key)) for r in runs}) > 1


#: methods whose PEP objective is not a suboptimality measure (xz_distance: SFN's ‖x_T − z_T‖², Assumption 2)
OWN_PANEL = {"xz_distance": "‖x_T − z_T‖² (SFN Assumption 2)"}


def _plot(series: list, out: Path) -> str:
    """Worst cases over T on log–log axes; quantities of another kind (OWN_PANEL) on a panel of their own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    panels = {"worst case of the criterion (min ‖∇f‖² or f-gap, PEP)": []}
    for label, Ts, wc in series:
        method = label.split(",")[0]
        panels.setdefault(OWN_PANEL.get(method, next(iter(panels))), []).append((label, Ts, wc))
    panels = {k: v for k, v in panels.items() if v}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), constrained_layout=True,
                             squeeze=False)
    for ax, (ylabel, lines) in zip(axes[0], panels.items()):
        for label, Ts, wc in lines:
            finite = [(t, v) for t, v in zip(Ts, wc) if math.isfinite(v) and v > 0]
            if finite:
                ax.plot(*zip(*finite), marker="o", markersize=3, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.set_xlabel("horizon T")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("PEP worst cases over the horizon (upper bounds: relaxed initial conditions)", fontsize=10)
    fig.savefig(out / FIGURE, dpi=120)
    plt.close(fig)
    return FIGURE
