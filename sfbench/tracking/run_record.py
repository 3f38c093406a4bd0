"""The local run record: the run-directory contract of DESIGN.md, always written, whatever else logs.

    RUN_DIR/config.yaml     the resolved configuration (written once, atomically)
    RUN_DIR/metrics.jsonl   one JSON object per logged step, append-only, flushed after every line
    RUN_DIR/summary.json    status ∈ {running, completed, diverged, preempted, failed}, steps done, final metrics;
                            rewritten atomically (temp file + os.replace), so a reader never sees half a file

Resuming after preemption: the trainer reloads its last checkpoint (step S) and calls `truncate_after(S)`, which
drops the metric lines logged after S (and a last line cut short by a crash), so that the resumed run's
metrics.jsonl ends up identical to an uninterrupted run's.

Non-finite values (a diverged loss) are written as JSON's NaN/Infinity extensions, which Python's json reads back.

Faults: a file that can't be read back as written — summary.json or config.yaml that doesn't parse, a
metrics.jsonl line that is not a whole JSON object with a `step` anywhere but at the very end (a torn last line is
what a killed writer leaves and is skipped) — raises `RecordDamaged`, whose message names the file and the remedy;
a write that fails (a full disk) removes its temporary file and raises `RecordWriteError`, whose message names the
path, the bytes it needed and the bytes free (or that the file system is read-only). Temporary files are all named
`.<file>.sfbench-tmp…`, so that the next run can remove the ones a killed process left (`remove_stale_temp_files`)
and never a file of the user's. Once the trainer has `claim`ed the directory, every write first checks it is still
there and the same: a run whose directory was deleted or replaced stops with `RunDirLost` and writes nothing more.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import yaml

from ..files import atomic_write, is_temp_file

STATUSES = ("running", "completed", "diverged", "preempted", "failed")
CONFIG, METRICS, SUMMARY = "config.yaml", "metrics.jsonl", "summary.json"


class RecordDamaged(ValueError):
    """A run-record file can't be read back. `str(err)`: one line naming the file, what is wrong and what to do."""

    def __init__(self, path: str | os.PathLike, problem: str, remedy: str):
        self.path, self.problem, self.remedy = Path(path), problem, remedy
        super().__init__(f"{path} is damaged: {problem}. {remedy}")


class RecordWriteError(OSError):
    """Writing a run-record file failed (a full disk, a quota, a read-only filesystem). The temporary file is gone;
    `str(err)`: one line naming the path, the error, the bytes the write needed and the bytes free there."""

    def __init__(self, path: str | os.PathLike, err: OSError, needed: int | None = None):
        self.path, self.needed = Path(path), needed
        try:
            self.free = shutil.disk_usage(self.path.parent).free
        except OSError:
            self.free = None
        self.hint = ""
        super().__init__(err.errno, err.strerror or str(err))

    @property
    def remedy(self) -> str:
        """What to do about it, by its cause."""
        if self.errno == errno.EROFS:
            return "the file system is read-only: remount it writable (or copy the run directory elsewhere)"
        if self.errno in (errno.EACCES, errno.EPERM):
            return "this user may not write there: fix the directory's permissions"
        return "free some space"

    def __str__(self) -> str:
        if self.errno in (errno.EROFS, errno.EACCES, errno.EPERM):      # not a matter of space
            return f"could not write {self.path}: {self.strerror}{self.hint}"
        sizes = []
        if self.needed is not None:
            sizes.append(f"it needs about {human_bytes(self.needed)}")
        if self.free is not None:
            sizes.append(f"{human_bytes(self.free)} {'is' if self.needed is not None else 'are'} free there")
        sizes_text = f" ({' and '.join(sizes)})" if sizes else ""
        return f"could not write {self.path}: {self.strerror}{sizes_text}{self.hint}"


class RunDirLost(RecordWriteError):
    """The run directory was deleted or replaced while this process wrote it: nothing more is written there."""

    def __init__(self, run_dir: str | os.PathLike, what: str):
        self.what = what
        super().__init__(Path(run_dir) / METRICS, OSError(errno.ENOENT, what))
        self.run_dir = Path(run_dir)

    def __str__(self) -> str:
        return (f"{self.run_dir} {self.what} while this run was writing it; the run stopped and writes nothing more "
                f"there — run the same command again to train it anew")


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def atomic_write_text(path: Path, text: str) -> None:
    """`atomic_write` for the run record: a failure is a `RecordWriteError` naming the path."""
    data = text.encode("utf-8")
    try:
        atomic_write(path, data)
    except OSError as err:
        raise RecordWriteError(path, err, len(data)) from err


def remove_stale_temp_files(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files a killed or failed writer left in `run_dir` and `run_dir/checkpoints`
    (`is_temp_file`); call it only while holding the run directory's lock. Returns what was removed."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if is_temp_file(entry.name) and entry.is_file():
                try:
                    entry.unlink()
                    removed.append(entry)
                except FileNotFoundError:
                    pass
    return removed


def python_number(value: Any) -> Any:
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
        self._claimed: tuple[int, int] | None = None

    def claim(self) -> None:
        """From now on every write first checks that the run directory is still the one it was now (`check`): a
        run whose directory was deleted or replaced under it stops at its next write, never writing into a new
        directory of the same name (which another process may have locked by then)."""
        st = os.stat(self.dir)
        self._claimed = (st.st_dev, st.st_ino)

    def check(self) -> None:
        """Raise `RunDirLost` when the claimed directory is gone or replaced, or metrics.jsonl was unlinked."""
        if self._claimed is None or not self.writable:
            return
        try:
            st = os.stat(self.dir)
        except FileNotFoundError:
            raise RunDirLost(self.dir, "was deleted") from None
        if (st.st_dev, st.st_ino) != self._claimed:
            raise RunDirLost(self.dir, "was replaced by another directory")
        if self._metrics is not None and os.fstat(self._metrics.fileno()).st_nlink == 0:
            raise RunDirLost(self.dir, "lost its metrics.jsonl (deleted)")

    # -- config ------------------------------------------------------------------------------------------------------
    def write_config(self, config: Mapping[str, Any]) -> None:
        if not self.writable:
            return
        self.check()
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
        line = json.dumps({k: python_number(v) for k, v in metrics.items()}) + "\n"
        try:
            if self._metrics is None:
                self.check()
                self._metrics = open(self.dir / METRICS, "a", encoding="utf-8")
            elif self._claimed is not None and os.fstat(self._metrics.fileno()).st_nlink == 0:
                self.check()                # one fstat per line: an unlinked file means the directory went
            self._metrics.write(line)
            self._metrics.flush()
        except OSError as err:
            self.close()
            raise RecordWriteError(self.dir / METRICS, err, len(line.encode())) from err

    def sync(self) -> None:
        """fsync metrics.jsonl: called before a checkpoint, so no checkpoint is ever ahead of the metrics on disk."""
        self.check()
        if self._metrics is not None:
            try:
                os.fsync(self._metrics.fileno())
            except OSError as err:
                raise RecordWriteError(self.dir / METRICS, err) from err

    def truncate_after(self, step: int) -> int:
        """Keep only the lines with `step` ≤ `step` (and drop a torn last line); returns how many lines were kept."""
        self.close()
        path = self.dir / METRICS
        if not path.exists() or not self.writable:
            return 0
        self.check()
        kept = [row for row in iter_metrics(path) if row["step"] <= step]
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
        return len(kept)

    def close(self) -> None:
        """Close metrics.jsonl. A failure to flush its last buffered bytes (a full disk) is dropped here: the write
        that failed has raised already, and a resume drops a torn last line."""
        if self._metrics is not None:
            metrics, self._metrics = self._metrics, None
            try:
                metrics.close()
            except OSError:
                pass

    # -- summary -----------------------------------------------------------------------------------------------------
    def write_summary(self, status: str, **fields: Any) -> dict:
        """Rewrite summary.json atomically with `status` and `fields` merged into what was there (None deletes)."""
        if status not in STATUSES:
            raise ValueError(f"status={status!r} is not allowed; choose one of {', '.join(map(repr, STATUSES))}")
        summary = read_summary(self.dir) or {}
        summary.update({k: python_number(v) for k, v in fields.items()}, status=status, updated=time.time())
        summary = {k: v for k, v in summary.items() if v is not None}      # a field set to None is removed
        if not self.writable:
            return summary
        self.check()
        atomic_write_text(self.dir / SUMMARY, json.dumps(summary, indent=2) + "\n")
        return summary

    def read_summary(self) -> dict | None:
        return read_summary(self.dir)

    def __enter__(self) -> "RunRecord":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


METRICS_REMEDY = ("Delete that line (or the file from there on) and run the same command again: the steps it "
                  "loses are trained again from an earlier checkpoint when one is kept (trainer.on_gap says what "
                  "happens otherwise)")


def iter_metrics(path: str | os.PathLike, skipped: list[str] | None = None) -> Iterator[dict]:
    """The complete lines of a metrics.jsonl; a last line cut short by a crash is skipped. Any other line that is not
    a JSON object with an integer `step` raises `RecordDamaged` naming the file and the line, or, when `skipped` is a
    list, is left out and described in it (`line N …`): a reader that shows what it can, such as the report."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if not raw.endswith(b"\n"):
                break                      # torn write at the end of a killed run
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                problem = "is not a JSON object"
            else:
                if isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool):
                    yield row
                    continue
                problem = "has no integer 'step'"
            message = f"line {number} {problem} ({_preview(raw)})"
            if skipped is None:
                raise RecordDamaged(path, message, METRICS_REMEDY)
            skipped.append(message)


def _preview(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= 40 else text[:37] + "...")


def read_config(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        return {}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise RecordDamaged(path, f"not valid YAML ({str(err).splitlines()[0]})",
                            "Restore it, or remove the run directory and train again") from None
    if not isinstance(config, dict):
        raise RecordDamaged(path, "not a mapping of settings", "Restore it, or remove the run directory and train again")
    return config


SUMMARY_REMEDY = ("Delete it and run the same command again: the run resumes from its checkpoint and writes a new "
                  "summary (only the count of resumes is lost)")


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / SUMMARY
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        summary = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise RecordDamaged(path, f"not valid JSON ({str(err).splitlines()[0]})", SUMMARY_REMEDY) from None
    if not isinstance(summary, dict) or summary.get("status") not in STATUSES:
        raise RecordDamaged(path, "no valid 'status' in it", SUMMARY_REMEDY)
    return summary


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
