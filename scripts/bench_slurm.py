"""Launch overhead on Slurm: time from submission to the first training step, and a sweep's wall time.

    sudo slurm/local-cluster.sh start          # a one-node cluster on this machine (or run on a real cluster)
    python scripts/bench_slurm.py [--repeats 3] [--write PAGE.md]   # results kept in docs/benchmarks.md

Measured, for one `task=logreg` run (start-up dominated; the training itself is ~0.3 s):

- `local`: `python -m sfbench …` started here, no Slurm — the floor (interpreter, imports, validation, setup).
- `sbatch`: `sbatch --wrap "python -m sfbench …"` — Slurm's scheduling and launch added.
- `hydra-submitit`: `python -m sfbench -m hydra/launcher=slurm …` (one run) — our launcher: composing and validating
  the sweep, submitit's pickling, sbatch, the job's own start-up (unpickling, Hydra in the job), the first step.
  Split into launcher → sbatch done (RUN/slurm.json's `submitted`), → job started (submitit log's first line),
  → first step. Then how long the launcher takes to return after the run's summary is final.

Then a 4-run sweep (one job array, 2 at a time on 2 CPUs; and the same sweep with the local launcher): its wall time
against the sum and the maximum of its runs' `wall_s` (training time in summary.json). The first step is when metrics.jsonl gets its first line (polled
every 5 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN = ["task=logreg", "logger=none", "trainer.steps=300", "trainer.eval_every=0"]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=30"]
POLL = 0.005


def first_line_time(path_glob, root: Path, deadline: float) -> float:
    while time.time() < deadline:
        for path in root.glob(path_glob):
            try:
                if path.stat().st_size > 0:
                    return time.time()
            except FileNotFoundError:
                pass
        time.sleep(POLL)
    raise TimeoutError(f"no {path_glob} under {root}")


def wait(proc: subprocess.Popen, timeout: float = 600) -> None:
    out = proc.communicate(timeout=timeout)[0]
    if proc.returncode != 0:
        raise RuntimeError(f"{proc.args} failed:\n{out[-3000:]}")


def popen(args, cwd) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def bench_local(work: Path) -> dict:
    t0 = time.time()
    proc = popen([sys.executable, "-m", "sfbench", *RUN, "hydra.run.dir=local"], work)
    first = first_line_time("local/metrics.jsonl", work, t0 + 300)
    wait(proc)
    return {"first_step": first - t0}


def bench_sbatch(work: Path) -> dict:
    command = " ".join([sys.executable, "-m", "sfbench", *RUN, "hydra.run.dir=sbatch"])
    t0 = time.time()
    out = subprocess.run(["sbatch", "--parsable", "--cpus-per-task=1", f"--output={work}/sbatch.log",
                          f"--chdir={work}", "--wrap", command], capture_output=True, text=True, check=True)
    submitted = time.time()
    job = out.stdout.strip().split(";")[0]
    first = first_line_time("sbatch/metrics.jsonl", work, t0 + 300)
    while subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
        time.sleep(0.1)
    return {"sbatch": submitted - t0, "first_step": first - t0}


def _submitit_start(log_dir: Path) -> float | None:
    for log in log_dir.rglob("*_log.out"):
        match = re.search(r"submitit INFO \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - Starting", log.read_text())
        if match:
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return None


def bench_hydra(work: Path) -> dict:
    sweep = work / "sweep"
    t0 = time.time()
    proc = popen([sys.executable, "-m", "sfbench", "-m", *SLURM, *RUN, f"hydra.sweep.dir={sweep}"], work)
    first = first_line_time("*/metrics.jsonl", sweep, t0 + 300)
    wait(proc)
    end = time.time()
    run_dir = next(sweep.glob("*/summary.json")).parent
    submitted = json.loads((run_dir / "slurm.json").read_text())["submitted"]
    started = _submitit_start(sweep / ".submitit")
    summary_final = (run_dir / "summary.json").stat().st_mtime
    return {"launcher_to_sbatch": submitted - t0, "sbatch_to_job_start": (started or submitted) - submitted,
            "job_start_to_first_step": first - (started or submitted), "first_step": first - t0,
            "return_after_done": end - summary_final, "total": end - t0}


def bench_sweep(work: Path, launcher: list[str]) -> dict:
    sweep = work / f"sweep4-{len(launcher)}"
    args = [sys.executable, "-m", "sfbench", "-m", *launcher, "task=logreg", "logger=none", "trainer.eval_every=0",
            "trainer.steps=8000", "opt=sf_adamw,sgd", "opt.lr=0.001,0.002", f"hydra.sweep.dir={sweep}"]
    t0 = time.time()
    wait(popen(args, work))
    wall = time.time() - t0
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    assert len(summaries) == 4 and all(s["status"] == "completed" for s in summaries), summaries
    walls = [s["wall_s"] for s in summaries]
    return {"wall": wall, "sum_wall_s": sum(walls), "max_wall_s": max(walls)}


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=Path, help="write the results as a Markdown page (docs/slurm_bench.md)")
    args = parser.parse_args()
    if shutil.which("sbatch") is None or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        sys.exit("bench_slurm: no Slurm cluster here; start the local one: sudo slurm/local-cluster.sh start")
    nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %c CPUs %m MB %T"], capture_output=True,
                           text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench_slurm_") as tmp:
        work = Path(tmp)
        os.environ.setdefault("SFBENCH_CACHE", str(work / "cache"))
        (work / "warm").mkdir()
        bench_local(work / "warm")              # once, unmeasured: the page cache warm for every launch below
        local, sbatch, hydra = [], [], []
        for i in range(args.repeats):
            for rows, fn in ((local, bench_local), (sbatch, bench_sbatch), (hydra, bench_hydra)):
                sub = work / f"{fn.__name__}{i}"
                sub.mkdir()
                rows.append(fn(sub))
        sweep = bench_sweep(work, SLURM)
        local_sweep = bench_sweep(work, [])

    lines = [
        f"Machine: {platform.node()}, {os.cpu_count()}-core VM, Slurm node `{nodes}`; "
        f"{args.repeats} repeats (medians).",
        "",
        "| launch | submission → first training step (s) |",
        "|---|---|",
        f"| local `python -m sfbench` (no Slurm) | {median(local, 'first_step'):.2f} |",
        f"| `sbatch --wrap \"python -m sfbench …\"` | {median(sbatch, 'first_step'):.2f} |",
        f"| `python -m sfbench -m hydra/launcher=slurm …` (1 run) | {median(hydra, 'first_step'):.2f} |",
        "",
        "The hydra-submitit launch, step by step (s):",
        "",
        "| launcher start → sbatch done | sbatch → job starts | job start → first step | run done → launcher "
        "returns |",
        "|---|---|---|---|",
        f"| {median(hydra, 'launcher_to_sbatch'):.2f} | {median(hydra, 'sbatch_to_job_start'):.2f} | "
        f"{median(hydra, 'job_start_to_first_step'):.2f} | {median(hydra, 'return_after_done'):.2f} |",
        "",
        "A 4-run sweep (`opt=sf_adamw,sgd opt.lr=0.001,0.002`, 8000 logreg steps each). Slurm: one job array, "
        "`cpus_per_task=1`, 2 jobs at a time on the 2 CPUs; local: Hydra's basic launcher, one run after another in "
        "one process. `wall_s` is a run's training time (summary.json):",
        "",
        "| launcher | sweep wall time (s) | sum of the runs' `wall_s` | longest run's `wall_s` | wall / sum |",
        "|---|---|---|---|---|",
        *(f"| {name} | {r['wall']:.1f} | {r['sum_wall_s']:.1f} | {r['max_wall_s']:.1f} | "
          f"{r['wall'] / r['sum_wall_s']:.2f} |" for name, r in (("slurm", sweep), ("local", local_sweep))),
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        header = (
            "# Slurm launch overhead\n\n"
            "Measured with `python scripts/bench_slurm.py --write docs/slurm_bench.md` on the local one-node cluster "
            "(`slurm/local-cluster.sh`: slurmctld, slurmd and the jobs on the same 2-core VM, which may run other "
            "work). One `task=logreg` run is almost all start-up, so the first table is the "
            "launch overhead itself: the local row is the floor (interpreter, torch and Hydra imports, validation, "
            "task setup), `sbatch` adds Slurm's scheduling and job launch (this cluster schedules every 2 s; on a "
            "real cluster the queue wait dominates everything here), and the Hydra launcher adds composing and "
            "validating the sweep, submitit's pickling, and Hydra's start-up inside the job. The launcher notices a "
            "finished run within about a second (it polls for submitit's result file).\n\n")
        args.write.write_text(header + text + "\n")


if __name__ == "__main__":
    main()
