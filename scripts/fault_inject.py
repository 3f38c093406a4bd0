#!/usr/bin/env python
"""Fault injection for the run record: SIGKILL training runs at chosen and random moments, re-run each,
and check that the record ends identical to an uninterrupted run's.

    python scripts/fault_inject.py [--task logreg|gpt] [--kills 20] [--seed 0] [--steps N] [--spawn] [--workdir DIR]
                                   [--keep]

The task (`--task`, see TASKS): `logreg` (the default; 200 steps, evaluations every steps/4), or `gpt`, a one-layer
GPT with dropout on the shakespeare text (160 steps) with the default evaluation cadence (`trainer.eval_every=auto`,
whose interval the reference line reports; at 160 steps it is not a divisor of the checkpoint interval, so a re-run
resumes between evaluations); either way 8 checkpoints a run, every steps/8 steps.

First one uninterrupted run (the reference). Then trials: a run of the same command in its own directory is killed
with SIGKILL — and, in some trials, killed again while it resumes — and finally re-run to the end. The moments:

- `checkpoint-write`: as the temporary file of the k-th checkpoint appears (inotify; sfbench's temporary names,
  `.<file>.sfbench-tmp…`, come from `sfbench.files.temp_name`), so the kill lands during
  torch.save / fsync; a temporary file left behind proves it did (counted);
- `after-last-checkpoint`: as the final checkpoint is renamed into place — before model.pt and the `completed`
  summary;
- `model-write`, `after-model`, `fit-write`: while model.pt is written, right after it, while theory_fit.json is;
- `random`: at a uniformly random time within the reference run's duration;
- `resuming`: a re-run killed 0.05–1.5 s after it starts (loading, truncating, the first steps).

Every trial's final re-run must exit 0 with: metrics.jsonl equal to the reference's line for line (without `time/`
keys), summary.json `completed` with the same `steps_done`, final metrics and theory fit, the same model.pt tensors
and config.yaml, and no temporary or lock file left. Exit status 0 when all trials pass, 1 otherwise.

By default each run is a fork of this process that calls `sfbench.cli.main` (imports paid once; the run itself is
the CLI's code path in its own process); `--spawn` starts `python -m sfbench` instead (slower, the whole start-up
included). tests/test_fault_inject.py runs this script in the slow set.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib
import json
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from sfbench.files import is_temp_file, temp_name

IN_CREATE, IN_MOVED_TO = 0x100, 0x80
CHECKPOINTS = 8             # per run: every steps/8 steps
#: per task: the CLI's arguments, the default steps, whether evaluations come every steps/4 (else the default
#: cadence, trainer.eval_every=auto), and the modules a forked run would otherwise import each time
TASKS = {
    "logreg": {"args": ["task=logreg", "logger=none", "trainer.log_every_s=1e9"], "steps": 200, "eval_every": True,
               "imports": []},
    "gpt": {"args": ["task=gpt", "logger=none", "trainer.log_every_s=1e9", "task.data.block_size=32",
                     "task.data.batch_size=8", "task.eval_batches=2", "task.model.n_layer=1", "task.model.n_embd=32",
                     "task.model.n_head=2", "task.model.dropout=0.1"], "steps": 160, "eval_every": False,
            "imports": ["sfbench.tasks.gpt", "sfbench.tasks.gpt_model"]},
}


# -- processes ----------------------------------------------------------------------------------------------------------

class Child:
    """One run of the CLI in its own process (a fork calling sfbench.cli.main, or `python -m sfbench`)."""

    def __init__(self, args: list[str], workdir: Path, log: Path, spawn: bool):
        self.started = time.monotonic()
        self.code: int | None = None
        if spawn:
            with open(log, "ab") as out:
                self.proc = subprocess.Popen([sys.executable, "-m", "sfbench", *args], cwd=workdir, stdout=out,
                                             stderr=subprocess.STDOUT)
            self.pid = self.proc.pid
            return
        self.proc = None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:                                    # the child: the CLI, output to the log, never returns
            code = 1
            try:
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.chdir(workdir)
                from sfbench.cli import main
                main(list(args))
                code = 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except BaseException:      # noqa: BLE001
                traceback.print_exc()
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        self.pid = pid

    def poll(self) -> int | None:
        if self.code is None:
            if self.proc is not None:
                self.code = self.proc.poll()
            else:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def wait(self, timeout: float = 600) -> int:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"run {self.pid} did not end within {timeout} s")
            time.sleep(0.01)
        return self.code

    def kill(self) -> bool:
        """SIGKILL; True if the process was still running (a real kill), False if it had ended already."""
        if self.poll() is not None:
            return False
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return False
        return self.wait() == -signal.SIGKILL


# -- file events ----------------------------------------------------------------------------------------------------------

class Events:
    """inotify on the run directory and its checkpoints/ (created beforehand, so no event is missed)."""

    def __init__(self, run_dir: Path):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.paths = {}
        for path in (run_dir, run_dir / "checkpoints"):
            wd = libc.inotify_add_watch(self.fd, os.fsencode(path), IN_CREATE | IN_MOVED_TO)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path} failed")
            self.paths[wd] = path

    def read(self, timeout: float) -> list[tuple[str, str]]:
        """[(kind, name)], kind 'create' or 'moved', waiting up to `timeout` s."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        events, i = [], 0
        while i + 16 <= len(data):
            _, mask, _, length = struct.unpack_from("iIII", data, i)
            name = data[i + 16:i + 16 + length].rstrip(b"\0").decode()
            events.append(("moved" if mask & IN_MOVED_TO else "create", name))
            i += 16 + length
        return events

    def close(self) -> None:
        os.close(self.fd)


def kill_on(child: Child, run_dir: Path, moment: dict, timeout: float = 600) -> dict:
    """Kill `child` at `moment` ({'kind': 'time', 'after': s} or {'kind': 'event', 'event': (kind, prefix), 'nth': k});
    returns what happened."""
    if moment["kind"] == "time":
        while time.monotonic() - child.started < moment["after"] and child.poll() is None:
            time.sleep(0.002)
        return {"killed": child.kill(), "temp_left": temp_files(run_dir)}
    events = Events(run_dir)
    seen = 0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for kind, name in events.read(0.05):
                if kind == moment["event"][0] and name.startswith(moment["event"][1]):
                    seen += 1
                    if seen == moment["nth"]:
                        killed = child.kill()
                        return {"killed": killed, "temp_left": temp_files(run_dir)}
            if child.poll() is not None:
                return {"killed": False, "temp_left": []}
    finally:
        events.close()
    child.kill()
    raise TimeoutError(f"no {moment} within {timeout} s")


def remaining_checkpoints(run_dir: Path, steps: int, every: int) -> int:
    """How many checkpoints a (re-)run of `run_dir` will write, from the steps its summary says are done (one too
    many when the last kill came between a checkpoint and the summary: that kill moment is then missed, not
    counted)."""
    try:
        done = json.loads((run_dir / "summary.json").read_text()).get("steps_done", 0)
    except (OSError, ValueError):
        done = 0
    return max(1, (steps - done) // every)


def temp_files(run_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob(".*") if is_temp_file(p.name))


def temp_prefix(name: str) -> str:
    """The start of the name of every temporary file sfbench writes for `name` (`.last.pt.sfbench-tmp`)."""
    return temp_name(Path(name))


# -- the plan ---------------------------------------------------------------------------------------------------------------

def moments(name: str, rng: random.Random, checkpoints: int, duration: float) -> dict:
    if name == "checkpoint-write":
        return {"name": name, "kind": "event", "event": ("create", temp_prefix("last.pt")),
                "nth": rng.randint(1, checkpoints)}
    if name == "after-last-checkpoint":
        return {"name": name, "kind": "event", "event": ("moved", "last.pt"), "nth": checkpoints}
    if name == "model-write":
        return {"name": name, "kind": "event", "event": ("create", temp_prefix("model.pt")), "nth": 1}
    if name == "after-model":
        return {"name": name, "kind": "event", "event": ("moved", "model.pt"), "nth": 1}
    if name == "fit-write":
        return {"name": name, "kind": "event", "event": ("create", temp_prefix("theory_fit.json")), "nth": 1}
    if name == "resuming":
        return {"name": name, "kind": "time", "after": rng.uniform(0.05, 1.5)}
    return {"name": "random", "kind": "time", "after": rng.uniform(0.1, 1.0) * duration}


BASE_TRIALS = [["checkpoint-write"], ["after-last-checkpoint"], ["random"], ["checkpoint-write", "resuming"],
               ["model-write"], ["after-model"], ["fit-write"], ["random", "checkpoint-write"],
               ["after-last-checkpoint", "resuming"], ["checkpoint-write", "checkpoint-write"], ["random", "resuming"],
               ["checkpoint-write", "after-last-checkpoint"]]


def plan(rng: random.Random, trial: int) -> list[str]:
    if trial < len(BASE_TRIALS):
        return BASE_TRIALS[trial]
    return [rng.choice(["checkpoint-write", "random", "after-last-checkpoint", "resuming" if k else "random"])
            for k in range(rng.randint(1, 3))]


# -- checking ----------------------------------------------------------------------------------------------------------------

def rows(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        out.append({k: v for k, v in json.loads(line).items() if not k.startswith("time/")})
    return out


def record_problems(run_dir: Path, reference: Path) -> list[str]:
    """What differs from the reference run (everything but the model, compared at the end: no torch ops in a
    process that still forks)."""
    problems = []
    summary = json.loads((run_dir / "summary.json").read_text())
    expected = json.loads((reference / "summary.json").read_text())
    for key in ("status", "steps_done", "total_steps", "final"):
        if summary.get(key) != expected.get(key):
            problems.append(f"summary {key}: {summary.get(key)!r} ≠ {expected.get(key)!r}")
    if (summary.get("theory") or {}).get("fit") != (expected.get("theory") or {}).get("fit"):
        problems.append("summary theory.fit differs")
    if rows(run_dir) != rows(reference):
        got, want = rows(run_dir), rows(reference)
        first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        problems.append(f"metrics.jsonl differs from line {first + 1} ({len(got)} lines, {len(want)} expected)")
    if (run_dir / "config.yaml").read_bytes() != (reference / "config.yaml").read_bytes():
        problems.append("config.yaml differs")
    left = [p.name for p in run_dir.rglob(".*")]
    if left:
        problems.append(f"left behind: {', '.join(left)}")
    return problems


def same_model(a: Path, b: Path) -> bool:
    import torch

    x, y = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# -- main ---------------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="logreg",
                        help="logreg (evaluations every steps/4) or gpt (the default cadence, eval_every=auto)")
    parser.add_argument("--kills", type=int, default=20, help="at least this many SIGKILLs that hit a live run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per run, 8 checkpoints (default: 200 for logreg, 160 for gpt)")
    parser.add_argument("--spawn", action="store_true", help="start `python -m sfbench` instead of forking")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the run directories")
    parser.add_argument("--max-trials", type=int, default=60)
    opts = parser.parse_args(argv)
    task = TASKS[opts.task]
    if opts.steps is None:
        opts.steps = task["steps"]
    if opts.steps <= 0 or opts.steps % CHECKPOINTS:
        parser.error(f"--steps must be a multiple of {CHECKPOINTS} (the number of checkpoints)")
    every = opts.steps // CHECKPOINTS
    started = time.monotonic()
    rng = random.Random(opts.seed)
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="sfbench-faults-"))
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    args = [*task["args"], f"trainer.steps={opts.steps}", f"trainer.ckpt_every={every}", f"seed={opts.seed}",
            *([f"trainer.eval_every={2 * every}"] if task["eval_every"] else [])]
    if not opts.spawn:
        import hydra  # noqa: F401  — imports paid once, before forking (no torch ops here until the end)
        import torch  # noqa: F401

        import sfbench.cli  # noqa: F401

        for module in task["imports"]:
            importlib.import_module(module)

    def start(run_dir: Path, attempt: str) -> Child:
        return Child([*args, f"hydra.run.dir={run_dir}"], workdir, workdir / f"{run_dir.name}.{attempt}.log",
                     opts.spawn)

    reference = workdir / "reference"
    ref = start(reference, "0")
    if ref.wait() != 0:
        print((workdir / "reference.0.log").read_text()[-3000:], file=sys.stderr)
        return 1
    duration = time.monotonic() - ref.started
    cadence = json.loads((reference / "summary.json").read_text()).get("evaluation") or {}
    print(f"fault_inject: reference run of {opts.steps} steps of task={opts.task} (checkpoints every {every}, "
          f"evaluations every {cadence.get('interval', '?')} steps, eval_every={cadence.get('eval_every', '?')}) "
          f"took {duration:.1f} s ({workdir})", flush=True)

    counts: dict[str, int] = {}
    mid_write = kills = trial = 0
    failures, finished = [], []
    while kills < opts.kills and trial < opts.max_trials:
        run_dir = workdir / f"trial{trial:02d}"
        (run_dir / "checkpoints").mkdir(parents=True)
        notes = []
        for attempt, name in enumerate(plan(rng, trial)):
            moment = moments(name, rng, remaining_checkpoints(run_dir, opts.steps, every), duration)
            child = start(run_dir, str(attempt))
            outcome = kill_on(child, run_dir, moment)
            if outcome["killed"]:
                kills += 1
                counts[name] = counts.get(name, 0) + 1
                during = name == "checkpoint-write" and any(Path(t).name.startswith(temp_prefix("last.pt"))
                                                            for t in outcome["temp_left"])
                mid_write += during
                notes.append(f"{name}" + (f" #{moment['nth']}" if "nth" in moment and name == "checkpoint-write"
                                          else "") + (" (a partial checkpoint was left)" if during else ""))
            else:
                notes.append(f"{name}: missed (the run had ended)")
                if child.code != 0:
                    failures.append(f"trial {trial}: attempt {attempt} exited {child.code}")
        final = start(run_dir, "final")
        code = final.wait()
        problems = [f"the final re-run exited {code}"] if code != 0 else record_problems(run_dir, reference)
        status = "ok" if not problems else "FAIL: " + "; ".join(problems)
        print(f"  trial {trial:2d}: {', '.join(notes):90s} → {status}", flush=True)
        if problems:
            failures.append(f"trial {trial}: {'; '.join(problems)} (logs: {workdir}/{run_dir.name}.*.log)")
        else:
            finished.append(run_dir)
        trial += 1

    for run_dir in finished:            # torch only now: no more forks
        if not same_model(run_dir, reference):
            failures.append(f"{run_dir.name}: model.pt differs from the reference's")
    what = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    print(f"fault_inject: {kills} SIGKILLs in {trial} runs ({what}); {mid_write} kills left a partial checkpoint "
          f"file, removed by the re-run", flush=True)
    if kills < opts.kills:
        failures.append(f"only {kills} kills hit a live run in {trial} trials")
    if failures:
        print("fault_inject: FAILED\n  " + "\n  ".join(failures), flush=True)
        return 1
    import resource

    cpu = sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    print(f"fault_inject: all {trial} re-runs ended completed with a record identical to the uninterrupted run's "
          f"(metrics, summary, model.pt, config); {time.monotonic() - started:.0f} s wall, {cpu:.0f} s CPU",
          flush=True)
    if not opts.keep and opts.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
