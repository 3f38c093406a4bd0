"""report.html: one static page (no scripts, no external resources) with the PNGs beside it, relative links."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1240px;
       color: #1a1a1a; background: #fff; line-height: 1.4; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
h3 { margin-bottom: 0.3em; }
.meta { color: #555; font-size: 0.92em; } .path { word-break: break-all; font-family: monospace; }
figure { margin: 12px 0 20px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; margin-top: 4px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 8px 0 16px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
tr.diverged td { color: #888; } tr.failed td { color: #888; }
ul.notes { font-size: 0.9em; color: #444; }
"""


def fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if math.isnan(x):
            return "–"
        if math.isinf(x):
            return "∞" if x > 0 else "−∞"
        return f"{x:.{digits}g}"
    return str(x)


def table(columns: list[str], rows: Iterable[list[Any]], left: int = 1, row_class=None, left_last: bool = False) -> str:
    """An HTML table; the first `left` columns (and the last with `left_last`) left-aligned, numbers right."""
    def align(i: int) -> str:
        return "l" if i < left or (left_last and i == len(columns) - 1) else ""

    head = "".join(f'<th class="{align(i)}">{html.escape(c)}</th>' for i, c in enumerate(columns))
    body = []
    for j, row in enumerate(rows):
        cls = f' class="{row_class[j]}"' if row_class and row_class[j] else ""
        cells = "".join(f'<td class="{align(i)}">{html.escape(fmt(v))}</td>' for i, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(fig: dict, caption: str) -> str:
    return (f'<figure><img src="{html.escape(fig["file"])}" alt="{html.escape(fig["title"])}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _no_fit_reason(runs: list[dict]) -> str:
    if runs and all(r["bound"] is None for r in runs):
        return ("the runs log no theory columns (theory/S1, theory/S2 for [C1]; lr and theory/grad_sq for [C3]); "
                "a trainer that logs them makes this section appear.")
    reasons = sorted({n for r in runs for n in r["notes"]})
    return "; ".join(reasons) or "no run could be fitted."


def render(report: dict) -> str:
    e = html.escape
    parts = [(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sfbench report — "
              f"{e(report['source_name'])}</title><style>{CSS}</style></head><body>")]
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(report["statuses"].items()))
    metrics = ", ".join(f"{t}: <code>{e(m)}</code>" for t, m in report["metric"].items())
    parts.append(f"<h1>sfbench report</h1>"
                 f"<p class=\"meta\"><span class=\"path\">{e(report['source'])}</span><br>"
                 f"{report['n_runs']} runs ({e(statuses)}); "
                 f"metric {metrics}; generated {e(report['generated'])}</p>")
    if report["warnings"]:
        parts.append("<ul class=\"notes\">" + "".join(f"<li>{e(w)}</li>" for w in report["warnings"]) + "</ul>")

    figs = report["figures"]
    best = report["prediction"]["best_lr"]
    for task in report["tasks"]:
        parts.append(f"<h2>{e(task)}</h2>")
        captions = {
            "curves": "Observed metric per (optimizer, schedule): one line per base lr, the mean over seeds, the band "
                      "their min–max; dotted: a run that diverged.",
            "fits": "Each run's observed curve (solid) and the bound fitted to it, C + M·(D²·a<sub>T</sub> + "
                    "b<sub>T</sub>) (dashed, same colour) — ALGORITHMS.md [C4]. Parameters in the table below.",
            "lr": "Final metric against base lr, one line per schedule (completed runs, mean over seeds); dashed "
                  "vertical: predicted best lr; ★: observed best; ×: diverged.",
        }
        for kind, caption in captions.items():
            fig = next((f for f in figs if f.get("task") == task and f["kind"] == kind), None)
            if fig is not None:
                parts.append(_figure(fig, caption))
            elif kind == "fits":
                parts.append("<p class=\"meta\">No fitted bounds for this task: "
                             + e(_no_fit_reason([r for r in report["runs"] if r["task"] == task])) + "</p>")
        rows = [b for b in best if b["task"] == task]
        if rows:
            parts.append("<h3>Predicted vs observed best learning rate</h3>")
            parts.append(table(["optimizer", "schedule", "bound", "rule", "predicted best lr", "observed best lr",
                                "ratio pred/obs", "[C2] γ*", "D", "G²", "B = mean h²", "B from", "T"],
                               [[b["optimizer"], b["schedule"], b["bound"], b["rule"], b["predicted"], b["observed"],
                                 b["ratio"], b["predicted_C2"], b["D"], b["G2"], b["B"], b["B_source"], b["T"]]
                                for b in rows], left=2))
        corr = [c for c in report["prediction"]["correlations"] if c["task"] == task]
        if corr:
            parts.append("<h3>Prediction quality: Spearman ρ(final bound, final metric)</h3>")
            parts.append(table(["scope", "optimizer", "schedule", "ρ", "p-value", "runs"],
                               [[c["scope"], c["optimizer"] or "all", c["schedule"] or "all", c["rho"], c["pvalue"],
                                 c["n"]] for c in corr], left=3))
        runs = [r for r in report["runs"] if r["task"] == task]
        fitted = [r for r in runs if r["fit"]]
        if fitted:
            parts.append("<h3>Fitted bounds [C4]</h3>")
            parts.append(table(["run", "bound", "C", "M", "D", "D from", "p", "G", "rmse", "points used", "dropped",
                                "method"],
                               [[r["run"], r["bound"], r["fit"]["C"], r["fit"]["M"], r["fit"]["D"],
                                 "given" if r["fit"]["D_fixed"] else "fitted", r["fit"].get("p"), r["fit"].get("G"),
                                 r["fit"]["rmse"], r["fit"]["n_used"], r["fit"]["n_dropped"], r["fit"]["method"]]
                                for r in fitted], left=2))
    prof = report.get("profiles")
    if prof:
        parts.append("<h2>Performance profiles</h2>")
        for fig in figs:
            if fig["kind"] == "profiles":
                parts.append(_figure(fig, "AlgoPerf-style performance profile: for each task the target is the best "
                                          f"final metric of any run + {prof['tol']:g}·|best|; a method's steps to reach "
                                          "it (its best setting, median over seeds) divided by the fastest "
                                          "method's; ρ(τ) is the fraction of tasks with ratio ≤ τ (never reached: ∞)."))
        methods = sorted(prof["steps"])
        parts.append(table(["method"] + [f"{t}: steps (ratio)" for t in prof["tasks"]],
                           [[m] + [f"{fmt(prof['steps'][m][t])} ({fmt(prof['ratios'][m][t], 3)})"
                                   for t in prof["tasks"]] for m in methods]))
        parts.append("<p class=\"meta\">targets: " + ", ".join(f"{e(t)} = {fmt(v)}" for t, v in
                                                              prof["targets"].items()) + "</p>")

    parts.append("<h2>Runs</h2>")
    runs = report["runs"]
    parts.append(table(["run", "task", "optimizer", "schedule", "base lr", "seed", "status", "steps", "final metric",
                        "final bound", "notes"],
                       [[r["run"], r["task"], r["optimizer"], r["schedule"], r["lr"], r["seed"], r["status"],
                         f"{fmt(r['steps_done'])}/{fmt(r['steps'])}", r["final"], r["predicted"],
                         "; ".join(r["notes"])] for r in runs],
                       left=4, left_last=True,
                       row_class=[r["status"] if r["status"] in ("diverged", "failed") else "" for r in runs]))

    parts.append("<h2>How these numbers are made</h2><ul class=\"notes\">"
                 + "".join(f"<li>{e(n)}</li>" for n in report["method_notes"]) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write(report: dict, out: Path) -> Path:
    path = Path(out) / "report.html"
    path.write_text(render(report), encoding="utf-8")
    return path
