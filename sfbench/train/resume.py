"""Resuming a run: which checkpoint to resume from, and whether `metrics.jsonl` covers it.

A checkpoint at step S is written after the metric lines of steps ≤ S (and metrics.jsonl is fsynced first), so on a
healthy record every step the run logs up to S is there. A record can still lose lines: a file truncated or deleted
by hand, a copy that stopped short, a disk error. Resuming from S over such a gap would end `completed` with steps
missing, so `plan_resume` checks, and:

- **repairs** the gap when a kept checkpoint precedes it: it resumes from `prev.pt` instead, and the steps from there
  on are trained — and logged — again (bit-exact: batches are a pure function of the step);
- otherwise acts on `trainer.on_gap`: `stop` (the default) ends the run with exit status 2 and a message naming the
  missing steps; `record` goes on from S and records the missing ranges in summary.json (`metrics_gaps`), saying so
  (later resumes accept the recorded ranges); `restart` removes the checkpoints and trains the run again from step 0.

A damaged `last.pt` falls back to `prev.pt` (`checkpoint.load_checkpoint`); the steps a run logs are those of
`logged_steps`, the loop's rule (every `log_every`-th step and the last one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..tracking.run_record import METRICS, RecordDamaged, iter_metrics
from .checkpoint import CHECKPOINT, PREVIOUS, Loaded, load_checkpoint, previous_checkpoint

GAP_POLICIES = ("stop", "record", "restart")


class MetricsGap(RecordDamaged):
    """metrics.jsonl lacks steps its checkpoint covers and no kept checkpoint precedes them (`trainer.on_gap=stop`)."""


@dataclass
class ResumePlan:
    loaded: Loaded | None               # the checkpoint to resume from; None: train from step 0
    rows: list[dict] = field(default_factory=list)      # the metric lines kept (steps ≤ the checkpoint's)
    gaps: list[list[int]] = field(default_factory=list)  # missing ranges going on anyway (trainer.on_gap=record)
    keep_previous: bool = True          # whether the current last.pt may become prev.pt at the next save

    @property
    def step(self) -> int:
        return self.loaded.step if self.loaded is not None else 0


def logged_steps(log_every: int, total_steps: int, upto: int) -> range | list[int]:
    """The steps ≤ `upto` that a run logs for sure: every `log_every`-th and the last (evaluation steps in between
    are logged too, but only where the task's evaluation reports `eval/loss`)."""
    steps = list(range(log_every, upto + 1, log_every))
    if upto >= total_steps and (not steps or steps[-1] != total_steps):
        steps.append(total_steps)
    return steps


def missing_ranges(rows: list[dict], expected: list[int]) -> list[list[int]]:
    """The expected steps absent from `rows`, as [first, last] ranges of consecutive expected steps."""
    have = {row["step"] for row in rows}
    ranges: list[list[int]] = []
    previous_missing = False
    for step in expected:
        if step in have:
            previous_missing = False
            continue
        if previous_missing:
            ranges[-1][1] = step
        else:
            ranges.append([step, step])
        previous_missing = True
    return ranges


def format_ranges(ranges: list[list[int]]) -> str:
    parts = [f"{a}" if a == b else f"{a}–{b}" for a, b in ranges[:6]]
    return ", ".join(parts) + (f" and {len(ranges) - 6} more ranges" if len(ranges) > 6 else "")


def _rows_upto(path: Path, step: int) -> list[dict]:
    if not path.exists():
        return []
    rows, last = [], 0
    for row in iter_metrics(path):
        if row["step"] > step:
            continue
        if row["step"] <= last:
            raise RecordDamaged(path, f"step {row['step']} appears twice or out of order (two processes wrote it?)",
                                "Which copy is right can't be told: remove the run directory and train the run again")
        rows.append(row)
        last = row["step"]
    return rows


def plan_resume(run_dir: Path, *, log_every: int, total_steps: int, on_gap: str, device,
                log: Callable[[str], None], accepted: list | None = None) -> ResumePlan:
    """Choose the checkpoint to resume from and check the metrics against it (module docstring). Reads only: the
    caller applies the plan (and `restart` removes the checkpoints once the caller goes ahead). `accepted`: ranges
    an earlier resume already went on over (summary.json's `metrics_gaps`), not reported again."""
    if on_gap not in GAP_POLICIES:
        raise ValueError(f"on_gap={on_gap!r}: choose one of {', '.join(GAP_POLICIES)}")
    loaded = load_checkpoint(run_dir, device, log)
    if loaded is None:
        return ResumePlan(None)
    metrics = run_dir / METRICS
    rows = _rows_upto(metrics, loaded.step)
    known = {step for a, b in (accepted or []) for step in range(int(a), int(b) + 1)}
    gaps = missing_ranges(rows, [s for s in logged_steps(log_every, total_steps, loaded.step) if s not in known])
    from_last = loaded.path == run_dir / CHECKPOINT
    if not gaps:
        return ResumePlan(loaded, rows, keep_previous=from_last)
    what = (f"{metrics} lacks the lines of steps {format_ranges(gaps)}, which {loaded.path.name} (step {loaded.step}) "
            f"covers")
    previous = previous_checkpoint(run_dir, device) if from_last else None
    if previous is not None and previous.step < gaps[0][0]:
        log(f"sfbench: {what}; resuming from the previous checkpoint {PREVIOUS.split('/')[-1]} (step "
            f"{previous.step}) instead, so that they are trained and logged again")
        return ResumePlan(previous, [r for r in rows if r["step"] <= previous.step], keep_previous=False)
    if on_gap == "record":
        log(f"sfbench: warning: {what}, and no kept checkpoint precedes them; going on from step {loaded.step} as "
            f"trainer.on_gap=record asks: summary.json lists the missing steps under metrics_gaps")
        return ResumePlan(loaded, rows, gaps=gaps, keep_previous=from_last)
    if on_gap == "restart":
        log(f"sfbench: {what}; training the run again from step 0 as trainer.on_gap=restart asks")
        return ResumePlan(None)
    raise MetricsGap(metrics, f"it lacks the lines of steps {format_ranges(gaps)}, which {loaded.path.name} (step "
                              f"{loaded.step}) covers, and no kept checkpoint precedes them",
                     "Run the same command with trainer.on_gap=record to go on and record the gap in summary.json, "
                     "or with trainer.on_gap=restart to train the run again from step 0")
