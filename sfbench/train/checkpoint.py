"""Checkpoint files: atomic writes, the previous good checkpoint, RNG state, and the model at x from any checkpoint.

A checkpoint (`RUN/checkpoints/last.pt`) holds the *training* state — parameters at y, optimizer state, scheduler,
the online theory accumulators, RNG states and the step — so a resumed run is bit-exact (loop.py says why y, not x).

Writes are atomic and durable: the state goes to `.last.pt.sfbench-tmp…` (through a Python file object, so a full disk
is an `OSError` with its errno, not torch's opaque writer error), is fsynced, and replaces the old file in one
rename. Before that rename the old `last.pt` becomes `prev.pt` (a hard link, so `last.pt` never disappears), so a
damaged or unreadable `last.pt` — a disk error, a truncated copy — falls back to the checkpoint before it
(`load_checkpoint`). A write that fails removes its temporary file and raises `RecordWriteError` naming the path and
the bytes it needed.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from ..files import atomic_file, temp_name
from ..tracking.run_record import RecordDamaged, RecordWriteError

CHECKPOINT = "checkpoints/last.pt"
PREVIOUS = "checkpoints/prev.pt"
STATE_KEYS = ("step", "model", "optimizer", "rng")


def state_bytes(obj: Any) -> int:
    """About how many bytes `torch.save(obj)` writes: the tensors' storages (each once) plus a little per object."""
    seen, total, stack = set(), 4096, [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            storage = item.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes() + 512
        elif isinstance(item, dict):
            stack.extend(item.values())
            total += 64 * len(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
            total += 16 * len(item)
        else:
            total += 64
    return total


class _Writes:
    """A file for torch.save that remembers the OSError of a failed write: torch's zip writer reports a write that
    failed part-way (a full disk) as its own RuntimeError ("unexpected pos …"), which says nothing of the cause."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self):
        try:
            return self.f.flush()
        except OSError as err:
            self.error = err
            raise


def atomic_torch_save(obj: Any, path: Path, before_replace: Callable[[], None] | None = None) -> None:
    """`torch.save(obj)` to `path` through `atomic_file` (fsynced); `before_replace` runs once `obj` is written, before
    the rename. On any failure the temporary file is removed, and an OS error (however torch reported it) becomes a
    `RecordWriteError` naming `path`."""
    writes = None
    try:
        path.parent.mkdir(exist_ok=True)     # checkpoints/; never the run directory, which must exist
        with atomic_file(path) as f:
            writes = _Writes(f)
            torch.save(obj, writes)
            if before_replace is not None:
                before_replace()
    except BaseException as err:
        cause = err if isinstance(err, OSError) else writes.error if writes is not None else None
        if cause is not None and not isinstance(err, KeyboardInterrupt):
            raise RecordWriteError(path, cause, state_bytes(obj)) from err
        raise


def save_checkpoint(state: dict, run_dir: Path, keep_previous: bool = True) -> None:
    """Write `RUN/checkpoints/last.pt`; the one it replaces becomes `prev.pt` (unless `keep_previous` is False: the
    current last.pt is known to be damaged and must not become the fallback)."""
    last, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS

    def keep_as_previous() -> None:
        link = prev.with_name(f"{temp_name(prev)}{os.getpid()}")
        _remove(link)
        try:
            os.link(last, link)
            os.replace(link, prev)
        except OSError:             # no hard links here: rename (a crash in between leaves prev.pt only)
            _remove(link)
            os.replace(last, prev)

    atomic_torch_save(state, last, keep_as_previous if keep_previous and last.exists() else None)


def _remove(path: Path) -> None:
    """Best effort: a temporary file that can't be removed (a read-only file system) goes at the next start."""
    try:
        path.unlink()
    except OSError:
        pass


@dataclass
class Loaded:
    state: dict
    path: Path
    step: int


def read_checkpoint(path: Path, device) -> dict:
    """A checkpoint's state, or `RecordDamaged` saying why it can't be used."""
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as err:        # noqa: BLE001 — torch reports damage as RuntimeError, EOFError, UnpicklingError …
        first = (str(err).splitlines() or [""])[0].strip()
        raise RecordDamaged(path, f"unreadable ({type(err).__name__}{': ' + first[:120] if first else ''})",
                            CHECKPOINT_REMEDY) from None
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS):
        raise RecordDamaged(path, "not a training checkpoint (keys missing)", CHECKPOINT_REMEDY)
    return state


CHECKPOINT_REMEDY = ("Restore it from a copy, or delete the run directory's checkpoints/ folder (and metrics.jsonl) "
                     "to train this run again from step 0")


def load_checkpoint(run_dir: Path, device, log=print) -> Loaded | None:
    """The newest usable checkpoint of a run: last.pt, else prev.pt (saying why), else None when there is none.
    When checkpoints exist but none can be read: `RecordDamaged` for last.pt."""
    last, prev = run_dir / CHECKPOINT, run_dir / PREVIOUS
    problems = []
    for path in (last, prev):
        if not path.exists():
            continue
        try:
            state = read_checkpoint(path, device)
        except RecordDamaged as err:
            problems.append(err)
            continue
        if path == prev:
            why = problems[0].problem if problems else "missing"
            log(f"sfbench: {last} is {why}; resuming from the previous checkpoint {prev.name} "
                f"(step {int(state['step'])}) instead")
        return Loaded(state, path, int(state["step"]))
    if problems:
        raise problems[0]
    return None


def previous_checkpoint(run_dir: Path, device) -> Loaded | None:
    """prev.pt if it exists and is readable (the resume check rolls back to it to re-train a gap in the metrics)."""
    path = run_dir / PREVIOUS
    if not path.exists():
        return None
    try:
        state = read_checkpoint(path, device)
    except RecordDamaged:
        return None
    return Loaded(state, path, int(state["step"]))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model_at_x(checkpoint: str | os.PathLike, model: torch.nn.Module,
                    make_optimizer: Callable[[Iterable], torch.optim.Optimizer]) -> torch.nn.Module:
    """Load a checkpoint into `model` and move it to the evaluation point x (for SF optimizers)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    opt = make_optimizer(model.parameters())
    opt.load_state_dict(state["optimizer"])
    if hasattr(opt, "eval"):
        opt.eval()
    return model
