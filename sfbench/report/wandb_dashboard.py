"""A saved W&B report — the sweep's dashboard — built with the `wandb-workspaces` package
(`wandb_workspaces.reports.v2`).

    python -m sfbench.report DIR --wandb-dashboard [--wandb-entity E] [--wandb-project P]
    python -m sfbench.report --publish-dashboard OUT/wandb_dashboard.json [--wandb-entity E]

What it holds, per task:

- first, the methods side by side: each method at its best lr on one line plot, and final metric against opt.lr
  with every method on one scatter (methods whose opt.lr is a cap on their own);
- one section per method (identity.py: the optimizer's config choice plus what varies within it), whose run set
  selects exactly that method's runs by their config (`choices.opt`, the varying keys, the task) and the sweep's W&B
  group: the evaluated metric with `theory/bound` overlaid (log y, one pair of lines per run), the training loss
  (W&B's smoothing), and final metric against opt.lr (log–log scatter: the method's lr sensitivity);
- the prediction table: predicted and observed best lr, their ratio, the rule, Spearman ρ with its bootstrap
  interval and n — the numbers of report.json, written into the dashboard as a Markdown table.

A W&B *report* rather than a workspace: a workspace has one run set for all its panels, a report has one per panel
grid, which is what "panels grouped by method" needs.

Online (an account is configured): the report is saved and its URL printed. Offline (no account, `WANDB_MODE=offline`,
or a network error on save): its spec — the JSON the W&B API stores — is written to `OUT/wandb_dashboard.json`
with the command that publishes it later; `--publish-dashboard FILE` loads that spec and saves it, once the runs
have been uploaded with `wandb sync`.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

from sfbench.tracking.wandb_sink import resolve_mode

from .wandb_report import group_of, logger_setting, wanted

SPEC_FILE = "wandb_dashboard.json"
MISSING = "<unset>"


def _nested(key: str) -> str:
    """A dotted config key as W&B stores a nested config: `opt.weight_decay` → `opt.value.weight_decay` (the form the
    app itself writes into run-set filters)."""
    head, *rest = key.split(".")
    return ".".join([head, "value", *rest])


def _filters(select: list, group: str | None):
    from wandb_workspaces import expr

    out = []
    for key, value in select:
        if value == MISSING or value is None:
            continue
        out.append(expr.Config(_nested(key)) == value)
    if group:
        out.append(expr.Metric("Group") == group)
    return expr.And(*out) if out else ""


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}g}" if math.isfinite(x) else "–"
    return str(x)


def prediction_markdown(report: dict, task: str) -> str:
    """The task's prediction table: one row per method."""
    corr = {c["method"]: c for c in report["prediction"]["correlations"] if c["task"] == task and c["method"]}
    overall = next((c for c in report["prediction"]["correlations"]
                    if c["task"] == task and c["scope"] == "overall"), None)
    lines = ["| method | swept | predicted best | observed best | ratio | rule | Spearman ρ [95 % interval] (n) |",
             "|---|---|---|---|---|---|---|"]

    def rho(c):
        if not c or c.get("rho") is None:
            return f"– (n = {c['n'] if c else 0})"
        lo, hi = (c.get("ci") or [None, None])[:2]
        return f"{_fmt(c['rho'], 2)} [{_fmt(lo, 2)}, {_fmt(hi, 2)}] (n = {c['n']})"

    for b in report["prediction"]["best_lr"]:
        if b["task"] != task:
            continue
        cap = b.get("lr_role") == "cap"
        lines.append(f"| {b['method']} | {'cap γ_max' if cap else 'base lr'} | {_fmt(b['predicted'])} | "
                     f"{_fmt(b['observed'])} | {_fmt(b['ratio'])} | "
                     f"{b['rule'] or 'none (adaptive step)'} | {rho(corr.get(b['method']))} |")
    if overall:
        lines.append(f"| all methods | | | | | | {rho(overall)} |")
    return "\n".join(lines)


def build(report: dict, *, entity: str, project: str, group: str | None, scoped: bool = False):
    """The dashboard as a `wandb_workspaces.reports.v2.Report` (nothing is sent). `scoped`: run sets name the
    entity and project themselves — their conversion looks the project up on the W&B server, so only online; an
    unscoped run set reads the report's own project."""
    import wandb_workspaces.reports.v2 as wr

    methods = report.get("methods") or []
    blocks: list = [wr.P(f"sfbench sweep {report['source']}: {report['n_runs']} runs, "
                         + ", ".join(f"{t}: {m}" for t, m in report["metric"].items())
                         + ". Made by `python -m sfbench.report --wandb-dashboard`; the same numbers as report.html.")]
    where = {"entity": entity, "project": project} if scoped else {}
    for task in report["tasks"]:
        metric = report["metric"].get(task, "eval/loss")
        blocks.append(wr.H2(task))
        blocks += _comparison(wr, report, task, metric, [m for m in methods if m["task"] == task], group, where)
        for m in (m for m in methods if m["task"] == task):
            runset = wr.Runset(name=m["method"], filters=_filters(m["select"], group), **where)
            swept = "cap γ_max (opt.lr)" if m["lr_role"] == "cap" else "base lr (opt.lr)"
            panels = [
                wr.LinePlot(title=f"{m['method']}: {metric} at x and theory/bound", x="step",
                            y=[metric, "theory/bound"], log_y=True, title_x="step",
                            title_y=f"{metric} · theory/bound"),
                wr.LinePlot(title=f"{m['method']}: train/loss (smoothed)", x="step", y=["train/loss"], log_y=True,
                            smoothing_type="exponential", smoothing_factor=0.9, title_x="step"),
                wr.ScatterPlot(title=f"{m['method']}: final {metric} against {swept}", x=wr.Config("opt.lr"),
                               y=wr.SummaryMetric(metric), log_x=True, log_y=True),
            ]
            blocks += [wr.H3(f"{m['method']} — {m['optimizer']}, {', '.join(m['schedules'])}"),
                       wr.PanelGrid(runsets=[runset], panels=panels)]
        blocks += [wr.H3(f"{task}: predicted vs observed"), wr.MarkdownBlock(text=prediction_markdown(report, task))]
    title = f"sfbench · {report['source_name']}"[:128]
    return wr.Report(project=project, entity=entity, title=title,
                     description="Per method: the evaluated metric with theory/bound, lr sensitivity; predictions.",
                     blocks=blocks, width="fluid")


def _comparison(wr, report: dict, task: str, metric: str, methods: list[dict], group: str | None,
                where: dict) -> list:
    """The methods side by side, first: each at its best lr (one run set per method, its observed best lr) on one
    line plot; then final metric against opt.lr with every method on one scatter (caps on a scatter of their own)."""
    best = {b["method"]: b["observed"] for b in report["prediction"]["best_lr"]
            if b["task"] == task and b.get("observed") is not None}
    at_best = [wr.Runset(name=f"{m['method']} @ {_fmt(best[m['method']])}", **where,
                         filters=_filters(m["select"] + [["opt.lr", best[m["method"]]]], group))
               for m in methods if m["method"] in best]
    out = [wr.H3(f"{task}: the methods side by side")]
    if at_best:
        out.append(wr.PanelGrid(runsets=at_best, panels=[
            wr.LinePlot(title=f"{task}: each method at its best lr — {metric}", x="step", y=[metric], log_y=True,
                        title_x="step", title_y=metric)]))
    for role, swept in (("base lr", "base lr (opt.lr)"), ("cap", "cap γ_max (opt.lr)")):
        members = [m for m in methods if m["lr_role"] == role]
        if members:
            out.append(wr.PanelGrid(
                runsets=[wr.Runset(name=f"{m['method']} (all lrs)", filters=_filters(m["select"], group), **where)
                         for m in members],
                panels=[wr.ScatterPlot(title=f"{task}: final {metric} against {swept}, every method",
                                       x=wr.Config("opt.lr"), y=wr.SummaryMetric(metric), log_x=True, log_y=True)]))
    return out


def spec(dashboard) -> dict:
    """The JSON W&B stores for the report (`ReportViewspec`)."""
    return dashboard._to_model().model_dump(by_alias=True, exclude_none=True, mode="json")


def from_spec(data: dict, entity: str | None = None):
    """A Report from a spec written by `write_spec`, with its entity (and its run sets') set to `entity` if given."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces.reports.v2 import internal

    dashboard = wr.Report._from_model(internal.ReportViewspec.model_validate(data["spec"]))
    entity = entity or data.get("entity") or None
    if entity:
        dashboard.entity = entity
        for block in dashboard.blocks:
            for runset in getattr(block, "runsets", None) or []:
                runset.entity = entity
                runset.project = runset.project or dashboard.project
    return dashboard


def publish_command(path: Path, entity: str | None) -> str:
    return (f"python -m sfbench.report --publish-dashboard {shlex.quote(str(path))}"
            + ("" if entity else " --wandb-entity YOUR_ENTITY"))


def make(report: dict, runs, out: Path, *, entity: str | None = None, project: str | None = None,
         mode: str | None = None) -> dict:
    """Build the dashboard; save it online, else write its spec. Returns {"mode", "url" | "spec", …} and prints
    the URL or how to publish."""
    entity = entity or logger_setting(runs, "entity")
    project = project or logger_setting(runs, "project", "sfbench")
    group = group_of(runs, report["source_name"])
    mode = resolve_mode(mode or logger_setting(runs, "mode", "auto"))
    dashboard = build(report, entity=entity or "", project=project, group=group)
    info: dict[str, Any] = {"mode": mode, "entity": entity, "project": project, "group": group,
                            "sections": sum(1 for m in report.get("methods") or [])}
    if mode == "online":
        try:
            if not entity:
                import wandb

                entity = wandb.Api().default_entity
            dashboard = build(report, entity=entity, project=project, group=group, scoped=True)
            dashboard.save()
            info.update(entity=entity, url=dashboard.url)
            print(f"sfbench.report: W&B dashboard saved: {dashboard.url}")
            return info
        except Exception as e:        # noqa: BLE001 — no network or no rights: keep the spec, say how to publish
            info["error"] = f"{type(e).__name__}: {' '.join(str(e).split())}"
            print(f"sfbench.report: saving the W&B dashboard failed ({info['error']}); writing its spec instead")
    path = Path(out) / SPEC_FILE
    data = {"format": "sfbench W&B dashboard (wandb_workspaces.reports.v2 ReportViewspec)", "entity": entity,
            "project": project, "group": group, "source": report["source"], "spec": spec(dashboard)}
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    info.update(spec=str(path))
    print(f"sfbench.report: W&B dashboard (offline): wrote its spec to {path}")
    print("sfbench.report: to publish it: wandb login; upload the runs (wandb sync RUN/wandb/offline-run-* for each "
          f"run, and the report run); then {publish_command(path, entity)}")
    if not wanted(runs):
        info["note"] = "the runs were not logged to W&B (logger=wandb): the dashboard's run sets select no runs"
        print(f"sfbench.report: note: {info['note']}; rerun the sweep with logger=wandb to fill it")
    return info


def publish(path: Path, entity: str | None = None) -> str:
    """Save a dashboard spec written offline; returns its URL."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    dashboard = from_spec(data, entity)
    if not dashboard.entity:
        raise ValueError(f"{path} names no W&B entity; pass --wandb-entity YOUR_ENTITY")
    dashboard.save()
    return dashboard.url
