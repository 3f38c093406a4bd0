"""What a run or a sweep says when it ends: its result, its status, where it is and how to see it.

    sfbench: completed 600/600 steps in 9.0 s — final eval/subopt 0.00233 at x (eval/loss 0.448); bound [C1] fitted
    sfbench: run directory: runs/opt=sf_polyak,task=logreg
    sfbench: report: python -m sfbench.report runs/opt=sf_polyak,task=logreg

A multirun ends with one table across its runs (read back from their run directories, so Slurm jobs count too)
and the report command for the sweep directory. Plain stdout lines: they are the result, not progress.
"""

from __future__ import annotations

import math
import os
import shlex
from pathlib import Path
from typing import Any

#: the metric a run is summarised by: the first of these in its final metrics, else its first eval/* key
PRIMARY = ("eval/subopt", "eval/loss", "eval/acc", "train/loss")


def primary_metric(final: dict) -> str | None:
    for key in PRIMARY:
        if isinstance(final.get(key), (int, float)):
            return key
    return next((k for k in sorted(final) if k.startswith("eval/") and isinstance(final[k], (int, float))), None)


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}" if math.isfinite(x) else str(x)
    return str(x)


def _where(path: Path) -> str:
    """The path as the user would type it: relative to the working directory when it is below it."""
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def report_command(path: Path) -> str:
    return f"python -m sfbench.report {shlex.quote(_where(path))}"


def fit_state(summary: dict) -> str:
    theory = summary.get("theory") if isinstance(summary.get("theory"), dict) else {}
    fit = theory.get("fit") if isinstance(theory.get("fit"), dict) else None
    if not theory:
        return "no theory"
    if fit is None:
        return "not fitted"
    if fit.get("method") == "insufficient" or fit.get("C") is None:
        return "too few points to fit"
    return f"fitted on {fit.get('target')}" if fit.get("target") else "fitted"


def describe_run(summary: dict | None, run_dir: Path) -> list[str]:
    """The lines a finished (or stopped) run prints."""
    summary = summary or {}
    status = summary.get("status", "unknown")
    done, total = summary.get("steps_done"), summary.get("total_steps")
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    head = f"sfbench: {status} {_num(done)}/{_num(total)} steps"
    if isinstance(summary.get("wall_s"), (int, float)):
        head += f" in {summary['wall_s']:.1f} s"
    key = primary_metric(final)
    evaluation = summary.get("evaluation") if isinstance(summary.get("evaluation"), dict) else {}
    at = evaluation.get("at")
    if status == "diverged":
        head += f" — the loss diverged ({_num(final.get('train/loss'))} at step {_num((done or 0) + 1)})"
    elif key is not None:
        where = f" at {at}" if at and key.startswith("eval/") else ""
        others = [k for k in ("eval/loss", "eval/acc") if k != key and isinstance(final.get(k), (int, float))]
        head += f" — final {key} {_num(final[key])}{where}"
        if others:
            head += " (" + ", ".join(f"{k} {_num(final[k])}" for k in others) + ")"
    above = summary.get("ended_above_start")
    if isinstance(above, dict):
        head += f" — ended above its start ({above.get('metric')} {_num(above.get('first'))} at the first evaluation)"
    theory = summary.get("theory") if isinstance(summary.get("theory"), dict) else {}
    if theory.get("bound"):
        kind = {"bound": "a theorem for this run", "expected": "a bound on the expected value",
                "heuristic": "a heuristic"}.get(theory.get("bound_kind"), theory.get("bound_kind"))
        value = final.get("theory/bound")
        head += f"; bound [{theory['bound']}]" + (f" ({kind})" if kind else "") \
            + (f" {_num(value)} at the end" if isinstance(value, (int, float)) else "") + f", {fit_state(summary)}"
    lines = [head, f"sfbench: run directory: {_where(run_dir)}"]
    if status == "preempted":
        lines.append("sfbench: stopped early; run the same command again to resume from its checkpoint")
    else:
        lines.append(f"sfbench: report: {report_command(run_dir)}")
    return lines


def print_run(summary: dict | None, run_dir: Path) -> None:
    print("\n".join(describe_run(summary, run_dir)), flush=True)


# -- a multirun -------------------------------------------------------------------------------------------------------
def _short_names(names: list[str]) -> list[str]:
    """Run directory names (override lists `k=v,k=v`) without the overrides every run shares."""
    def parts(name: str) -> list[str]:
        out: list[str] = []
        for piece in name.split(","):
            if "=" in piece or not out:
                out.append(piece)
            else:
                out[-1] += "," + piece          # a value with a comma (a list) belongs to the previous override
        return out

    split = [parts(n) for n in names]
    common = set.intersection(*(set(p) for p in split)) if len(split) > 1 else set()
    return [",".join(p for p in ps if p not in common) or name for ps, name in zip(split, names)]


def sweep_rows(sweep: Path) -> list[dict]:
    from ..report.identity import lr_is_cap
    from ..tracking import find_runs, read_config, read_summary

    rows = []
    for d in find_runs(sweep):
        try:
            summary = read_summary(d) or {}
        except ValueError:
            summary = {}
        try:
            config = read_config(d) or {}
        except Exception:          # noqa: BLE001 — an unreadable config still gets its row
            config = {}
        final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
        key = primary_metric(final)
        pep = config.get("pep") if isinstance(config.get("pep"), dict) else None
        if pep:         # a PEP job (sfn_pep): its method and the worst case at the largest T, no optimizer or lr
            key = "pep/worst_case" if isinstance(final.get("pep/worst_case"), (int, float)) else None
        opt = config.get("opt") if isinstance(config.get("opt"), dict) else {}
        rows.append({"run": str(d.relative_to(sweep)) if d != sweep else d.name,
                     "method": f"pep {pep.get('method')}" if pep else (config.get("choices") or {}).get("opt") or "?",
                     "lr": None if pep else opt.get("lr"),
                     "cap": not pep and lr_is_cap({"opt.lr_rule": opt.get("lr_rule")}),
                     "status": summary.get("status", "unknown"),
                     "above_start": isinstance(summary.get("ended_above_start"), dict),
                     "steps": f"{_num(summary.get('steps_done'))}/{_num(summary.get('total_steps'))}",
                     "metric": key, "final": final.get(key) if key else None,
                     "fit": f"PEP, T ≤ {final.get('pep/T')}" if pep else fit_state(summary)})
    return rows


def describe_sweep(sweep: Path) -> list[str]:
    rows = sweep_rows(sweep)
    if not rows:
        return [f"sfbench: sweep directory {_where(sweep)} holds no runs"]
    names = _short_names([r["run"] for r in rows])
    metrics = sorted({r["metric"] for r in rows if r["metric"]})
    table = [["run", "method", "lr", "status", "steps", " / ".join(metrics) or "final", "bound"]]
    for name, r in zip(names, rows):
        lr = "–" if r["lr"] is None else _num(r["lr"]) + (" (cap)" if r["cap"] else "")
        table.append([name, r["method"], lr, r["status"] + (" (above its start)" if r.get("above_start") else ""),
                      r["steps"],
                      _num(r["final"]) if r["final"] is not None else "–", r["fit"]])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    lines = [f"sfbench: sweep {_where(sweep)}: {len(rows)} runs ("
             + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ")"]
    for i, row in enumerate(table):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.append(f"sfbench: report: {report_command(sweep)}")
    return lines


def print_sweep(sweep: Path) -> None:
    print("\n".join(describe_sweep(sweep)), flush=True)


def sweep_dir_of(argv: list[str]) -> Path | None:
    """The hydra.sweep.dir=… in argv (the one sfbench adds, or the user's)."""
    for arg in reversed(argv):
        if arg.startswith("hydra.sweep.dir="):
            value = arg.split("=", 1)[1].strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            return Path(os.path.expanduser(value))
    return None
