"""The local run record: the run-directory contract of DESIGN.md, always written, whatever else logs.

    RUN_DIR/config.yaml     the resolved configuration (written once, atomically)
    RUN_DIR/metrics.jsonl   one JSON object per logged step, append-only, flushed after every line
    RUN_DIR/summary.json    status ∈ {running, completed, diverged, preempted, failed}, steps done, final metrics;
                            rewritten atomically (temp file + os.replace), so a reader never sees half a file

Resuming after preemption: the trainer reloads its last checkpoint (step S) and calls `truncate_after(S)`, which
drops the metric lines logged after S (and a last line cut short by a crash), so that the resumed run's
metrics.jsonl ends up identical to an uninterrupted run's.

Non-finite values (a diverged loss) are written as JSON's NaN/Infinity extensions, which Python's json reads back.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

STATUSES = ("running", "completed", "diverged", "preempted", "failed")
CONFIG, METRICS, SUMMARY = "config.yaml", "metrics.jsonl", "summary.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the whole new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _plain(value: Any) -> Any:
    """Numbers from torch/numpy as Python numbers, so json can write them."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (ValueError, RuntimeError):
            pass
    return value


class RunRecord:
    """Writer of one run directory (DESIGN.md "Run directory")."""

    def __init__(self, run_dir: str | os.PathLike, writable: bool = True):
        """`writable=False`: a reader that ignores writes (the other ranks of a data-parallel run: only rank 0 writes);
        `write_summary` then returns what the summary would be without writing it."""
        self.dir = Path(run_dir)
        self.writable = writable
        if writable:
            self.dir.mkdir(parents=True, exist_ok=True)
        self._metrics = None

    # -- config ------------------------------------------------------------------------------------------------------
    def write_config(self, config: Mapping[str, Any]) -> None:
        if not self.writable:
            return
        atomic_write_text(self.dir / CONFIG, yaml.safe_dump(dict(config), sort_keys=False))

    def read_config(self) -> dict:
        return read_config(self.dir)

    # -- metrics -----------------------------------------------------------------------------------------------------
    def log(self, metrics: Mapping[str, Any]) -> None:
        """Append one line (must contain `step`) and flush it to the OS, so a killed run loses at most this line."""
        if "step" not in metrics:
            raise ValueError(f"a metrics line needs a 'step' key; got keys {sorted(metrics)}")
        if not self.writable:
            return
        if self._metrics is None:
            self._metrics = open(self.dir / METRICS, "a", encoding="utf-8")
        self._metrics.write(json.dumps({k: _plain(v) for k, v in metrics.items()}) + "\n")
        self._metrics.flush()

    def truncate_after(self, step: int) -> int:
        """Keep only the lines with `step` ≤ `step` (and drop a torn last line); returns how many lines were kept."""
        self.close()
        path = self.dir / METRICS
        if not path.exists() or not self.writable:
            return 0
        kept = [row for row in iter_metrics(path) if row["step"] <= step]
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
        return len(kept)

    def close(self) -> None:
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None

    # -- summary -----------------------------------------------------------------------------------------------------
    def write_summary(self, status: str, **fields: Any) -> dict:
        """Rewrite summary.json atomically with `status` and `fields` merged into what was there (None deletes)."""
        if status not in STATUSES:
            raise ValueError(f"status={status!r} is not allowed; choose one of {', '.join(map(repr, STATUSES))}")
        summary = read_summary(self.dir) or {}
        summary.update({k: _plain(v) for k, v in fields.items()}, status=status, updated=time.time())
        summary = {k: v for k, v in summary.items() if v is not None}      # a field set to None is removed
        if not self.writable:
            return summary
        atomic_write_text(self.dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
        return summary

    def read_summary(self) -> dict | None:
        return read_summary(self.dir)

    def __enter__(self) -> "RunRecord":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_metrics(path: str | os.PathLike) -> Iterator[dict]:
    """The complete lines of a metrics.jsonl; a last line cut short by a crash is skipped."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break                      # torn write at the end of a killed run
            line = line.strip()
            if line:
                yield json.loads(line)


def read_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / CONFIG
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {} if path.exists() else {}


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'opt': {'lr': 1}} → {'opt.lr': 1}; lists are kept as values."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def find_runs(path: str | os.PathLike) -> list[Path]:
    """Run directories at or below `path` (a directory holding metrics.jsonl or summary.json), sorted."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no run or sweep directory at {root}")
    if (root / METRICS).exists() or (root / SUMMARY).exists():
        return [root]
    found = {p.parent for name in (METRICS, SUMMARY) for p in root.rglob(name)}
    return sorted(found)


def load_runs(path: str | os.PathLike):
    """One run or a whole sweep directory as one pandas DataFrame: a row per logged step.

    Columns: `run` (the run directory relative to `path`), `status`, the flattened config (`opt.lr`, `task.name`, …;
    a config key that collides with a metric key gets a `config.` prefix), then the metrics (`step`, `lr`,
    `train/loss`, …). A run with no metrics yet contributes one row with its config and status.
    """
    import pandas as pd

    root = Path(path)
    frames = []
    for run_dir in find_runs(root):
        metrics_path = run_dir / METRICS
        rows = list(iter_metrics(metrics_path)) if metrics_path.exists() else []
        frame = pd.DataFrame(rows) if rows else pd.DataFrame([{}])
        config = flatten(read_config(run_dir))
        summary = read_summary(run_dir) or {}
        leading = {"run": str(run_dir.relative_to(root)) if run_dir != root else ".",
                   "status": summary.get("status")}
        for key, value in config.items():
            leading["config." + key if key in frame.columns or key in ("run", "status") else key] = value
        lead = pd.DataFrame([leading] * len(frame), index=frame.index)
        for column in lead.columns:
            if isinstance(leading[column], (list, dict)):
                lead[column] = [leading[column]] * len(frame)
        frames.append(pd.concat([lead, frame], axis=1))
    if not frames:
        raise FileNotFoundError(f"no runs under {root} (looked for {METRICS} / {SUMMARY})")
    return pd.concat(frames, ignore_index=True)
