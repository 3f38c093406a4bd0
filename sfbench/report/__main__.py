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
    parser.add_argument("dir", metavar="DIR", help="a run directory or a sweep directory (e.g. multirun/<time>)")
    parser.add_argument("--out", help="output directory (default: DIR/report)")
    parser.add_argument("--metric", default="auto",
                        help="eval/subopt | eval/loss | train/loss | any logged key; default auto: the first of "
                             "eval/subopt, eval/loss, train/loss that the runs log")
    w = parser.add_mutually_exclusive_group()
    w.add_argument("--wandb", dest="wandb", action="store_true", default=None,
                   help="also log the report to one W&B run (default: when the runs used logger=wandb)")
    w.add_argument("--no-wandb", dest="wandb", action="store_false", help="never log to W&B")
    parser.add_argument("--g-param", action="store_true",
                        help="fit a parametric G_t² = G²(t+1)^p instead of the logged gradient norms")
    parser.add_argument("--profile-tol", type=float, default=0.05,
                        help="performance-profile target: best final metric + tol·|best| (default 0.05)")
    args = parser.parse_args(argv)
    try:
        report = build_report(args.dir, args.out, args.metric, wandb=args.wandb, g_param=args.g_param,
                              profile_tol=args.profile_tol)
    except ReportError as e:
        print(f"sfbench.report: {e}", file=sys.stderr)
        return 2
    out_dir = Path(args.out) if args.out else Path(args.dir) / "report"
    print(f"sfbench.report: wrote {out_dir / 'report.html'} ({report['n_runs']} runs)")
    if args.wandb and (report.get("wandb") or {}).get("error"):
        print(f"sfbench.report: W&B logging failed: {report['wandb']['error']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
