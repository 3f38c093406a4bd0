"""sfbench.report — run or sweep directories → figures, report.html, report.json (and optionally one W&B run).

    python -m sfbench.report DIR [--out OUT] [--metric auto|eval/subopt|eval/loss|train/loss] [--wandb]
                                 [--wandb-dashboard]

or from Python: `build_report(DIR)`. Depends on sfbench.theory, sfbench.tracking and matplotlib only (DESIGN.md
"Rooms"); what the page shows and how to read it: docs/report.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path

from . import compare, figures, fits, html, pep, prediction, wandb_report
from .analysis import analyze, json_safe
from .runs import AUTO_METRICS, ReportError, comparable_runs, load

__all__ = ["ReportError", "analyze", "build_report", "load"]


def _notes(report: dict, g_param: bool) -> list[str]:
    tol = report["profiles"]["tol"] if report["profiles"] else None
    notes = [
        ("Methods: a method is the optimizer's config choice (opt=sf_schedulet, not its class) plus the settings "
         "that differ between that choice's runs in this directory other than opt.lr and the seed (the schedule "
         "when several were run, then sched.*, opt.*, trainer.* keys); a task is its config choice plus the task "
         "settings that differ within it. Two choices are never pooled in a panel, line, table row or "
         "correlation. Runs recorded without choices fall back to the class name."),
        ("Metric: " + ", ".join(f"{t}: {m}" for t, m in report["metric"].items())
         + ("" if report["metric_arg"] != "auto" else
            f" (--metric auto: the first of {', '.join(AUTO_METRICS)} that the task's runs log)") + "."),
        ("Observed final value: the last finite logged value of the metric; only completed runs enter the "
         "correlations, the learning-rate plots' lines and the observed best lr. Diverged runs are shown (curves, × in "
         "the lr plot) but never fitted."),
        ("Fits [C4]: loss_T ≈ C + M·(D²·a_T + b_T) by sfbench.theory.fit.fit_bound (Huber loss, M ≥ 0, D ≥ 0, C ≥ "
         "the metric's floor: 0 for eval/subopt and squared norms, f* for eval/loss when the task knows it, 0 for a "
         "series that is never negative; a non-finite loss or a divergence ends the fitted curve). The fitted series "
         f"is the metric at its logged points, or — with fewer than {fits.MIN_FIT_POINTS} of them — the training "
         f"loss as the means of {fits.SMOOTH_BINS} equal blocks of steps, each at its block's mean step. [C1] runs: "
         "a = 1/(2·S1), b = S2/(2·S1) from the logged theory/S1, theory/S2; [C3] runs: a, b from the per-step lr "
         "and theory/grad_sq. D is held at the task's exact D when the run's summary has it (theory.D_source = "
         f"task) unless fitting it lowers the rmse by ≥ {1 - fits.D_FREE_GAIN:.0%} (the Euclidean ‖x_0 − x*‖ is not "
         "the D of a preconditioned or stochastic run's bound; the runs table notes it), and fitted otherwise."
         + (" G-param: the observed ‖g_t‖² replaced by G²·(t+1)^p, p fitted over [−2, 1]." if g_param else "")),
        ("Predicted final value (for Spearman ρ): the run's last logged theory/bound. The interval is a percentile "
         f"bootstrap ({prediction.BOOTSTRAP} resamples of the runs with replacement, fixed seed); with fewer than "
         f"{prediction.MIN_CI_RUNS} runs it is [−1, 1]: resampling 3–4 runs keeps a perfect ranking perfect, and no "
         "ranking of 4 runs is significant (exact permutation p ≥ 2/4! ≈ 0.083)."),
        ("Predicted best base lr: [C2] γ* = D/(G·√(T·B)) for [C1] (schedule-free) runs; for [C3] (baseline) runs the "
         "[C3] optimum √(t1/(t2+t3)) with the same constant G (the [C2] value is listed beside it). B = mean of h² "
         "with h = logged lr / base lr (median over the method's runs; [C2]'s closed form if no lr was logged); "
         "T = trainer.steps; D = summary theory.D, else task.D; G² = the mean logged theory/grad_sq over all steps of "
         "the method's non-diverged runs, all base lrs pooled. Methods whose opt.lr caps an adaptive step "
         "(opt.lr_rule = polyak) get no prediction."),
        "Observed best base lr: the lr with the lowest final metric (mean over seeds) among completed runs.",
    ]
    if tol is not None:
        notes.append(f"Performance profiles: target per task = best final metric + {tol:g}·|best|; steps to target = "
                     "first logged step at or below it; a method at its best setting.")
    return notes


def _warnings(runs) -> list[str]:
    out = []
    no_theory = [r.name for r in runs if r.config and r.kind is None]
    if no_theory:
        out.append(f"{len(no_theory)} of {len(runs)} runs log no theory columns (theory/S1, theory/S2, "
                   f"theory/grad_sq): no bound fitted and no prediction for them (see the notes in the runs table)")
    diverged = [r.name for r in runs if r.status == "diverged"]
    if diverged:
        out.append(f"{len(diverged)} diverged run(s), shown but excluded from fits and correlations")
    unfinished = [r.name for r in runs if r.status not in ("completed", "diverged")]
    if unfinished:
        out.append(f"{len(unfinished)} run(s) not completed (running/preempted/failed): shown, fitted on what they "
                   f"logged, not used in correlations or best-lr choices")
    failed_fits = [r.name for r in runs if r.fit is not None and not r.fit.ok]
    if failed_fits:
        out.append(f"{len(failed_fits)} fit(s) failed (too few usable points, or M = 0: see the runs table's notes)")
    return out


def _one_line(e: Exception) -> str:
    """An error as one line: its type and message."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def build_report(path, out=None, metric: str = "auto", *, wandb: bool | None = None, g_param: bool = False,
                 profile_tol: float = 0.05, wandb_mode: str | None = None, dashboard: bool = False,
                 wandb_entity: str | None = None, wandb_project: str | None = None) -> dict:
    """Write OUT/report.html, OUT/report.json and the PNGs for the run or sweep directory `path`.

    out: default `path`/report. metric: a logged key, or "auto". wandb: True → log to one W&B run; None → only when
    the runs were logged with the W&B sink; False → never. dashboard: also build the W&B dashboard
    (wandb_dashboard.py; saved online, its spec written to OUT offline). Returns the report (what report.json
    holds).
    Raises ReportError for a missing/empty directory or a metric no run logs.
    """
    started = time.perf_counter()
    root = Path(path)
    runs = load(root)
    out = Path(out) if out is not None else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    pep_section = pep.section(runs, out)            # PEP jobs (sfn_pep): worst cases over T, not training curves
    runs = [r for r in runs if not pep.is_pep(r)]
    result = (analyze(runs, metric, g_param=g_param, profile_tol=profile_tol) if runs or pep_section is None
              else pep.EMPTY_ANALYSIS)
    every, runs = runs, comparable_runs(runs)
    tasks = sorted({r.task for r in runs})
    figs = []
    best = result["prediction"]["best_lr"]
    not_drawn = []

    def draw(kind: str, title: str, task: str | None, make) -> None:
        """One figure; one that can't be drawn is named in the warnings, and the report goes on without it."""
        try:
            p = make()
        except OSError:                 # the output can't be written: the whole report can't (__main__ says so)
            raise
        except Exception as e:          # noqa: BLE001 — the rest of the report stands; the reason is reported
            not_drawn.append(f"figure '{title}' not drawn ({_one_line(e)})")
            return
        methods = None
        if isinstance(p, tuple):        # a comparison figure also says which methods it draws
            p, methods = p
        if p is not None:
            figs.append({"file": p.name, "title": title, "task": task, "kind": kind,
                         **({"methods": methods} if methods is not None else {})})

    for task in tasks:
        draw("best", f"{task}: each method at its best lr", task, lambda: compare.best_runs(runs, task, out))
        draw("lr_all", f"{task}: final metric against the lr, every method", task,
             lambda: compare.lr_overview(runs, task, out))
        draw("curves", f"{task}: evaluated metric and training loss", task, lambda: figures.curves(runs, task, out))
        draw("fits", f"{task}: fitted bounds", task, lambda: figures.fits(runs, task, out))
        draw("lr", f"{task}: learning-rate sensitivity", task, lambda: figures.lr_sensitivity(runs, task, best, out))
    draw("profiles", "performance profiles", None, lambda: figures.profile_plot(result["profiles"], out))

    report = {
        "source": str(root.absolute()), "source_name": root.absolute().name,
        "generated": _dt.datetime.now().isoformat(timespec="seconds"),
        "metric_arg": metric, "tasks": tasks,
        **result, "figures": figs, "warnings": _warnings(every) + not_drawn, "wandb": None, "pep": pep_section,
    }
    report["method_notes"] = _notes(report, g_param)

    def attach(key: str, failed: str, make) -> None:
        """report[key] = make(); on an error the report stands without it, the error recorded there and warned of."""
        try:
            report[key] = make()
        except Exception as e:     # noqa: BLE001 — the report stands without W&B; the error is reported
            report[key] = {"error": _one_line(e)}
            report["warnings"].append(f"{failed} ({_one_line(e)})")

    if wandb if wandb is not None else wandb_report.wanted(runs):
        attach("wandb", "W&B logging failed",
               lambda: wandb_report.log_report(json_safe(report), runs, out, mode=wandb_mode))
    report["wandb_dashboard"] = None
    if dashboard:
        from . import wandb_dashboard
        attach("wandb_dashboard", "W&B dashboard failed", lambda: wandb_dashboard.make(
            json_safe(report), runs, out, entity=wandb_entity, project=wandb_project, mode=wandb_mode))
    report["seconds"] = time.perf_counter() - started
    safe = json_safe(report)
    (out / "report.json").write_text(json.dumps(safe, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    html.write(safe, out)
    return safe
