#!/usr/bin/env python
"""How long `python -m sfbench.report` takes on a 15-run sweep (floor: under 30 s on 2 cores).

The sweep is docs/results.md's "3 × 5 sweep on logistic regression" (SF-SGD with lr weighting, constant / wsd / cosine
× 5 base lrs, minibatches of 16, 1000 steps, default evaluation cadence: 50 evaluations a run), trained once into
`--dir` (skipped when it is there: relaunching a sweep resumes it). Then the report is built `--rounds` times into a
fresh output directory each time, in a child process per round (`python -m sfbench.report`, as a user runs it:
imports included), and the script prints wall-clock and CPU seconds (user + sys of the child) per round and their
medians, plus the report's own timing (report.json `seconds`, after imports). `--wandb` adds the offline W&B report
run (the line plots and tables) to each round.

    python scripts/bench_report.py                       # sweep into /tmp/sfbench-bench-report, 3 rounds
    python scripts/bench_report.py --dir multirun/… --rounds 5 --wandb

On a shared machine wall-clock time includes waiting for the CPU: the CPU seconds are the cost of the report
itself; both are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWEEP = ["-m", "task=logreg", "task.batch_size=16", "opt=sf_sgd", "opt.weighting=lr", "sched=constant,wsd,cosine",
         "trainer.steps=1000", "logger=none", "opt.lr=0.21,0.631,1.89,5.68,17.0"]


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "sfbench-bench-report"),
                    help="where the sweep is trained (its multirun/ is below it), or a sweep directory to report on")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--wandb", action="store_true", help="also log the offline W&B report run each round")
    args = ap.parse_args()

    root = Path(args.dir)
    given = root.is_dir() and not (root / "multirun").exists() and any(root.rglob("summary.json"))
    if not given:                       # train it (a relaunch resumes the sweep and skips its finished runs)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sfbench", *SWEEP, "group=bench-report"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL)
        print(f"sweep trained (or found) in {time.perf_counter() - t0:.1f} s")
        sweep = root / "multirun" / "bench-report"
    else:
        sweep = root
    n = sum(1 for _ in sweep.rglob("summary.json"))
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
    rows = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory() as out:
            cpu0, t0 = child_cpu(), time.perf_counter()
            subprocess.run([sys.executable, "-m", "sfbench.report", str(sweep), "--out", out,
                            "--wandb" if args.wandb else "--no-wandb"], check=True, env=env, stdout=subprocess.DEVNULL)
            wall, cpu = time.perf_counter() - t0, child_cpu() - cpu0
            report = json.loads((Path(out) / "report.json").read_text())
        rows.append((wall, cpu, report["seconds"], len(report["figures"]),
                     sum(1 for r in report["runs"] if r["fit"] and r["fit"]["method"] != "insufficient")))
        print(f"round {i + 1}: wall {wall:.1f} s, CPU {cpu:.1f} s, in-report {report['seconds']:.1f} s, "
              f"{rows[-1][3]} figures, {rows[-1][4]}/{n} fitted")
    med = [statistics.median(c) for c in zip(*rows)][:3]
    print(f"\n| runs | W&B | wall (median) | CPU user+sys (median) | in-report (median) | rounds | cores |\n"
          f"|---:|---|---:|---:|---:|---:|---:|\n"
          f"| {n} | {'offline run' if args.wandb else 'off'} | {med[0]:.1f} s | {med[1]:.1f} s | {med[2]:.1f} s | "
          f"{args.rounds} | {os.cpu_count()} |")


if __name__ == "__main__":
    main()
