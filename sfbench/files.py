"""Files sfbench writes whole: atomic writes (a temporary file beside the target, renamed onto it) and the rule for
the temporary files' names, so that a killed writer's leftovers can be told from a user's files, and the lock a
cache entry is built under. Shared by every room (the run record, checkpoints, caches, stand-ins, PEP results); it
imports nothing from sfbench."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

TEMP_MARK = ".sfbench-tmp"


def temp_name(path: Path) -> str:
    """The prefix of every temporary file written next to `path`: a name only sfbench makes, so that
    `remove_stale_temp_files` never takes a file of the user's (`.model.pt.bak`, `.bashrc.tmp-keep`)."""
    return f".{path.name}{TEMP_MARK}"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, fsync: bool = True) -> Iterator[BinaryIO]:
    """A binary file for `path`'s new content: a temporary file beside it (`temp_name`), flushed, fsynced (unless
    `fsync` is False) and renamed onto `path` when the block ends, so readers see the old file or the whole new one;
    removed when the block (or the write) fails."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=temp_name(path), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):      # gone already, or a read-only file system: the next start removes it
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | memoryview | str, fsync: bool = True) -> None:
    """Write `data` (a str as UTF-8) to `path` through `atomic_file`."""
    with atomic_file(path, fsync) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


#: the temporary names of earlier versions: `.<record file>.tmp<pid or mkstemp letters>`
_EARLIER_TEMP = re.compile(r"\.(config\.yaml|metrics\.jsonl|summary\.json|model\.pt|theory_fit\.json|wandb_id\.txt|last\.pt|"
                           r"prev\.pt|slurm\.json)\.tmp[A-Za-z0-9_]*")


def is_temp_file(name: str) -> bool:
    """A temporary file sfbench wrote: `.<file>.sfbench-tmp…` (`temp_name`), or an earlier version's exact form;
    never a name of the user's (`.model.pt.bak`, `.summary.json.swp`, `.bashrc.tmp-keep`)."""
    return (name.startswith(".") and TEMP_MARK in name) or _EARLIER_TEMP.fullmatch(name) is not None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` (created with its folder) for the block: one process at a time builds a cache
    entry; the kernel drops the lock when a holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
