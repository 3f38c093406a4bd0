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
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85em; margin: 8px 0 16px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
td.run { text-align: left; overflow-wrap: anywhere; min-width: 14em; max-width: 28em; }
td.note { text-align: left; max-width: 30em; }
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


def table(columns: list[str], rows: Iterable[list[Any]], left: int = 1, row_class=None, left_last: bool = False,
          run_col: int | None = None) -> str:
    """An HTML table in a horizontally scrolling box; the first `left` columns (and the last with `left_last`)
    left-aligned, numbers right; column `run_col` (a run directory name) breaks anywhere instead of widening."""
    def align(i: int) -> str:
        if i == run_col:
            return "run"
        if left_last and i == len(columns) - 1:
            return "note"
        return "l" if i < left else ""

    head = "".join(f'<th class="{"l" if align(i) else ""}">{html.escape(c)}</th>' for i, c in enumerate(columns))
    body = []
    for j, row in enumerate(rows):
        cls = f' class="{row_class[j]}"' if row_class and row_class[j] else ""
        cells = "".join(f'<td class="{align(i)}">{html.escape(fmt(v))}</td>' for i, v in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<div class=\"scroll\"><table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"


def _figure(fig: dict, caption: str) -> str:
    return (f'<figure><img src="{html.escape(fig["file"])}" alt="{html.escape(fig["title"])}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _no_fit_reason(runs: list[dict]) -> str:
    if runs and all(r["bound"] is None for r in runs):
        return ("the runs log no theory columns (theory/S1, theory/S2 for [C1]; lr and theory/grad_sq for [C3]); "
                "a trainer that logs them makes this section appear.")
    reasons = sorted({n for r in runs for n in r["notes"]})
    return "; ".join(reasons) or "no run could be fitted."


def interval(c: dict) -> str:
    lo, hi = (c.get("ci") or [None, None])[:2]
    if lo is None or hi is None:
        return "–"
    return f"[{fmt(lo, 2)}, {fmt(hi, 2)}]"


def bound_label(kind: Any, bound_kind: Any) -> str:
    """[C1] / [C3] with what the trainer says it is (theorem, expectation, heuristic) when the record says."""
    if kind is None:
        return "–"
    return f"{kind} ({bound_kind})" if bound_kind else str(kind)


def pep_section(section: dict) -> str:
    """The page's PEP section (report.html)."""
    e = html.escape
    parts = ["<h2>PEP worst cases</h2>", f"<p class=\"meta\">{e(section['note'])}</p>"]
    if section.get("figure"):
        parts.append(_figure({"file": section["figure"], "title": "PEP worst cases"},
                             "Worst case over the horizon T, one line per method (log–log). Each run's own "
                             "pep.png shows its worst case scaled by the rate it is claimed to have (flat when "
                             "tight)."))
    rows = []
    for r in section["runs"]:
        fits = {f["form"]: f for f in r["fits"]}
        power, inv_log = fits.get("T^-a"), fits.get("1/log(T+1)")
        rows.append([r["run"], r["label"], r["status"], f"{min(r['T'])}–{max(r['T'])}" if r["T"] else "",
                     r["worst_case"][-1] if r["worst_case"] else None,
                     power["a"] if power else None, power["rms_log_residual"] if power else None,
                     inv_log["rms_log_residual"] if inv_log else None, r["note"] or ""])
    parts.append(table(["run", "method", "status", "T", "worst case at largest T", "fitted a in T^−a",
                        "rms log-residual T^−a", "rms log-residual 1/log(T+1)", "note"], rows, left=3,
                       left_last=True, run_col=0))
    return "\n".join(parts)


def render(report: dict) -> str:
    e = html.escape
    parts = [(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>sfbench report — "
              f"{e(report['source_name'])}</title><style>{CSS}</style></head><body>")]
    statuses = ", ".join(f"{n} {s}" for s, n in sorted(report["statuses"].items()))
    metrics = ", ".join(f"{e(t)}: <code>{e(m)}</code>" for t, m in report["metric"].items())
    fitted = sum(1 for r in report["runs"] if r["fit"] and r["fit"].get("method") != "insufficient")
    fittable = sum(1 for r in report["runs"] if r["status"] != "diverged" and r["bound"])
    if not report["runs"] and report.get("pep"):
        parts.append(f"<h1>sfbench report</h1><p class=\"meta\"><span class=\"path\">{e(report['source'])}</span><br>"
                     f"{len(report['pep']['runs'])} PEP runs; generated {e(report['generated'])}</p>")
    else:
        parts.append(f"<h1>sfbench report</h1>"
                     f"<p class=\"meta\"><span class=\"path\">{e(report['source'])}</span><br>"
                     f"{report['n_runs']} runs ({e(statuses)}); {len(report.get('methods') or [])} method(s); "
                     f"bound fitted for {fitted} of {fittable} run(s) with theory; "
                     f"metric {metrics}; generated {e(report['generated'])}"
                     + (f" in {report['seconds']:.1f} s" if report.get("seconds") is not None else "") + "</p>")
    if report["warnings"]:
        parts.append("<ul class=\"notes\">" + "".join(f"<li>{e(w)}</li>" for w in report["warnings"]) + "</ul>")
    if report.get("left_out"):
        parts.append(f"<p>Left out of the plots ({len(report['left_out'])}):</p><ul class=\"notes\">"
                     + "".join(f"<li>{e(r['run'])} ({e(r['status'])}): {e(r['reason'])}</li>"
                               for r in report["left_out"]) + "</ul>")

    figs = report["figures"]
    best = report["prediction"]["best_lr"]
    for task in report["tasks"]:
        parts.append(f"<h2>{e(task)}</h2>")
        methods = [m for m in report.get("methods") or [] if m["task"] == task]
        if methods:
            parts.append("<h3>Methods</h3>")
            parts.append(table(["method", "optimizer (config)", "class", "schedule", "swept", "values", "runs",
                                "fitted", "bound"],
                               [[m["method"], m["choice"], m["optimizer"], ", ".join(m["schedules"]),
                                 "cap γ_max (opt.lr)" if m["lr_role"] == "cap" else "base lr (opt.lr)",
                                 ", ".join(fmt(v, 3) for v in m["lrs"]), m["runs"], m["fitted"],
                                 bound_label(m["bound"], m.get("bound_kind"))] for m in methods], left=5))
        captions = {
            "best": "Every method at its best lr (the one with the lowest mean final metric over seeds), on one axis: "
                    "the evaluated metric over steps, mean over seeds with their min–max band.",
            "lr_all": "The final metric against the swept lr, every method a line (mean over seeds); methods whose "
                      "opt.lr caps an adaptive step on their own axis. ○: a run that ended above its first "
                      "evaluation; ×: diverged. The y range is set by the healthy runs.",
            "curves": "One panel per method. Solid: the evaluated metric at x (the averaged point; the iterate for "
                      "baselines), mean over seeds with their min–max band; dashed: the smoothed training loss "
                      "(block means of the minibatch loss at y, minus f* next to f − f*). One colour per step size; "
                      "dotted: a run that diverged.",
            "fits": "Each run's fitted series (solid: the evaluated metric, or the smoothed training loss where a "
                    "run has fewer than 8 evaluations) and the bound fitted to it, C + M·(D²·a<sub>T</sub> + "
                    "b<sub>T</sub>) with C at or above the metric's floor (dashed, same colour) — docs/theory.md "
                    "[C4]. Parameters in the table below.",
            "lr": "Final metric against the swept step size, one panel per method (completed runs, mean over seeds; "
                  "y shared): dashed line and ▼: predicted best lr; ★: observed best; ×: diverged. SF-Polyak's "
                  "opt.lr is a cap on an adaptive step: its own axis, no prediction.",
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
            parts.append(table(["method", "swept", "bound", "rule", "predicted best", "observed best",
                                "observed by", "ratio pred/obs", "[C2] γ*", "D", "G²", "B = mean h²", "B from", "T",
                                "note"],
                               [[b["method"], "cap" if b.get("lr_role") == "cap" else "base lr", b["bound"],
                                 b["rule"] or "none", b["predicted"], b["observed"],
                                 b.get("observed_by", "grid"), b["ratio"],
                                 b["predicted_C2"], b["D"], b["G2"], b["B"], b["B_source"], b["T"], b.get("note") or ""]
                                for b in rows], left=2, left_last=True))
        corr = [c for c in report["prediction"]["correlations"] if c["task"] == task]
        if corr:
            parts.append("<h3>Prediction quality: Spearman ρ(final bound, final metric)</h3>")
            level = corr[0].get("ci_level") or 0.95
            parts.append(table(["scope", "method", "runs (n)", "ρ", f"{level:.0%} bootstrap interval", "note"],
                               [[c["scope"], c["method"] or "all methods", c["n"], c["rho"], interval(c),
                                 c.get("note") or ""] for c in corr], left=2, left_last=True))
            parts.append("<p class=\"meta\">ρ is computed over the runs whose bound is an independent prediction "
                         "(D the task's own, not the distance travelled in the run itself), and given from 5 such "
                         "runs in a scope on; with few runs the interval is wide. Resamples with constant ranks are "
                         "skipped.</p>")
        runs = [r for r in report["runs"] if r["task"] == task]
        fitted_runs = [r for r in runs if r["fit"]]
        if fitted_runs:
            parts.append("<h3>Fitted bounds [C4]</h3>")
            parts.append(table(["run", "method", "lr", "bound", "fitted on", "C", "M", "D", "D from", "p", "G",
                                "rmse", "points used", "dropped", "fit"],
                               [[r["run"], r["method"], r["lr"], bound_label(r["bound"], r.get("bound_kind")),
                                 r.get("fit_target") or r["metric"], r["fit"]["C"], r["fit"]["M"], r["fit"]["D"],
                                 "given" if r["fit"]["D_fixed"] else "fitted", r["fit"].get("p"), r["fit"].get("G"),
                                 r["fit"]["rmse"], r["fit"]["n_used"], r["fit"]["n_dropped"], r["fit"]["method"]]
                                for r in fitted_runs], left=2, run_col=0))
    prof = report.get("profiles")
    if prof:
        parts.append("<h2>Performance profiles</h2>")
        for fig in figs:
            if fig["kind"] == "profiles":
                parts.append(_figure(fig, "AlgoPerf-style performance profile: for each task the target is the best "
                                          f"final metric of any run + {prof['tol']:g}·|best|; a method's steps to "
                                          "reach it (its best setting, median over seeds) divided by the fastest "
                                          "method's; ρ(τ) is the fraction of tasks with ratio ≤ τ (never reached: ∞)."))
        methods = sorted(prof["steps"])
        parts.append(table(["method"] + [f"{t}: steps (ratio)" for t in prof["tasks"]],
                           [[m] + [f"{fmt(prof['steps'][m][t])} ({fmt(prof['ratios'][m][t], 3)})"
                                   for t in prof["tasks"]] for m in methods]))
        parts.append("<p class=\"meta\">targets: " + ", ".join(f"{e(t)} = {fmt(v)}" for t, v in
                                                              prof["targets"].items()) + "</p>")

    if report.get("pep"):
        parts.append(pep_section(report["pep"]))
    if not report["runs"] and report.get("pep"):       # only PEP jobs: no training runs to list or explain
        parts.append("</body></html>\n")
        return "\n".join(parts)
    parts.append("<h2>Runs</h2>")
    runs = report["runs"]
    parts.append(table(["run", "task", "method", "lr", "seed", "status", "steps", "final metric", "final bound",
                        "bound", "notes"],
                       [[r["run"], r["task"], r.get("method"), r["lr"], r["seed"],
                         r["status"] + (" (above its start)" if r.get("above_start") else ""),
                         f"{fmt(r['steps_done'])}/{fmt(r['steps'])}", r["final"], r["predicted"],
                         bound_label(r["bound"], r.get("bound_kind")), "; ".join(r["notes"])] for r in runs],
                       left=3, left_last=True, run_col=0,
                       row_class=[r["status"] if r["status"] in ("diverged", "failed") else
                                  "diverged" if r.get("above_start") else "" for r in runs]))

    parts.append("<h2>How these numbers are made</h2><ul class=\"notes\">"
                 + "".join(f"<li>{e(n)}</li>" for n in report["method_notes"]) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write(report: dict, out: Path) -> Path:
    path = Path(out) / "report.html"
    path.write_text(render(report), encoding="utf-8")
    return path
