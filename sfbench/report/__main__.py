"""python -m sfbench.report DIR [--out OUT] [--metric …] [--wandb] — see sfbench/report/__init__.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import ReportError, build_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sfbench.report",
        description="Figures, report.html and report.json for a run or sweep directory: loss curves, fitted "
                    "bounds [C4], learning-rate sensitivity with predicted best lrs, prediction quality, "
                    "performance profiles (several tasks), run statuses.")
    parser.add_argument("dir", metavar="DIR", nargs="?",
                        help="a run directory or a sweep directory (e.g. multirun/<sweep>)")
    parser.add_argument("--out", help="output directory (default: DIR/report)")
    parser.add_argument("--metric", default="auto",
                        help="eval/subopt | eval/loss | train/loss | any logged key; default auto: the first of "
                             "eval/subopt, eval/loss, train/loss that the runs log")
    w = parser.add_mutually_exclusive_group()
    w.add_argument("--wandb", dest="wandb", action="store_true", default=None,
                   help="also log the report to one W&B run (default: when the runs used logger=wandb)")
    w.add_argument("--no-wandb", dest="wandb", action="store_false", help="never log to W&B")
    parser.add_argument("--wandb-dashboard", "--wandb-workspace", dest="dashboard", action="store_true",
                        help="also build a W&B dashboard (a saved W&B report: per method the metric with "
                             "theory/bound, lr sensitivity, the prediction table); online it is saved and its URL "
                             "printed, offline its spec is written to OUT/wandb_dashboard.json with how to publish it")
    parser.add_argument("--wandb-entity", help="W&B entity for the dashboard (default: the runs' logger.entity, "
                                               "else your default entity)")
    parser.add_argument("--wandb-project", help="W&B project (default: the runs' logger.project, else sfbench)")
    parser.add_argument("--publish-dashboard", metavar="SPEC",
                        help="save a dashboard spec written offline (OUT/wandb_dashboard.json) to W&B; no DIR")
    parser.add_argument("--g-param", action="store_true",
                        help="fit a parametric G_t² = G²(t+1)^p instead of the logged gradient norms")
    parser.add_argument("--profile-tol", type=float, default=0.05,
                        help="performance-profile target: best final metric + tol·|best| (default 0.05)")
    args = parser.parse_args(argv)
    if args.publish_dashboard:
        return _publish(args.publish_dashboard, args.wandb_entity)
    if not args.dir:
        print("sfbench.report: DIR is required (a run or sweep directory), unless --publish-dashboard SPEC is given",
              file=sys.stderr)
        return 2
    try:
        report = build_report(args.dir, args.out, args.metric, wandb=args.wandb, g_param=args.g_param,
                              profile_tol=args.profile_tol, dashboard=args.dashboard,
                              wandb_entity=args.wandb_entity, wandb_project=args.wandb_project)
    except ReportError as e:
        print(f"sfbench.report: {e}", file=sys.stderr)
        return 2
    except OSError as e:                # a read-only file system, no permission, a full disk: where, and what to do
        where = e.filename or (args.out or Path(args.dir) / "report")
        print(f"sfbench.report: could not write {where}: {e.strerror or e}; pass --out with a directory you can "
              f"write to", file=sys.stderr)
        return 1
    out_dir = Path(args.out) if args.out else Path(args.dir) / "report"
    fitted = sum(1 for r in report["runs"] if r["fit"] and r["fit"]["method"] != "insufficient")
    with_theory = sum(1 for r in report["runs"] if r["bound"] and r["status"] != "diverged")
    print(f"sfbench.report: wrote {out_dir / 'report.html'} ({report['n_runs']} runs, "
          f"{len(report['methods'])} methods, {len(report['figures'])} figures, bound fitted for {fitted} of "
          f"{with_theory} runs with theory"
          + (f"; {len(report['pep']['runs'])} PEP runs" if report.get("pep") else "")
          + f"; {report['seconds']:.1f} s)")
    left_out = report.get("left_out") or []
    for r in left_out[:10]:
        print(f"sfbench.report: left out of the plots: {r['run']} ({r['status']}) — {r['reason']}", file=sys.stderr)
    if len(left_out) > 10:
        print(f"sfbench.report: … and {len(left_out) - 10} more left out (report.json lists each, with the reason)",
              file=sys.stderr)
    for w in report["warnings"]:
        if w.startswith("figure "):
            print(f"sfbench.report: {w}", file=sys.stderr)
    if args.dashboard and (report.get("wandb_dashboard") or {}).get("error"):
        print(f"sfbench.report: W&B dashboard failed: {report['wandb_dashboard']['error']}", file=sys.stderr)
        return 1
    if args.wandb and (report.get("wandb") or {}).get("error"):
        print(f"sfbench.report: W&B logging failed: {report['wandb']['error']}", file=sys.stderr)
        return 1
    return 0


def _publish(spec: str, entity: str | None) -> int:
    from .wandb_dashboard import publish

    path = Path(spec)
    if not path.is_file():
        print(f"sfbench.report: --publish-dashboard {spec}: no such file (python -m sfbench.report DIR "
              f"--wandb-dashboard writes it offline)", file=sys.stderr)
        return 2
    try:
        url = publish(path, entity)
    except ValueError as e:
        print(f"sfbench.report: {e}", file=sys.stderr)
        return 2
    except Exception as e:        # noqa: BLE001 — network, login, rights: one line, not a traceback
        print(f"sfbench.report: publishing the dashboard failed ({type(e).__name__}: {' '.join(str(e).split())}); "
              f"log in with `wandb login` and check the entity", file=sys.stderr)
        return 1
    print(f"sfbench.report: W&B dashboard saved: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
