"""One writer per run directory (DESIGN.md "One writer per run directory"): the process that writes a run holds an
exclusive lock on `RUN/.lock` for as long as it writes; a second process is refused before it writes anything, with
a message naming the holder.

The lock is `flock(2)` on an open file, not a pid file: the kernel drops it when the holder's last descriptor closes,
so a process killed with SIGKILL (or a node that reboots) leaves no lock behind, and nothing has to guess whether a
recorded pid is still alive. The file's content (host, pid, start time, Slurm job, command) is only there to name the
holder in the refusal; an unlocked file with stale content is simply taken over.

- **Slurm requeue**: the requeued job is the same run. Slurm starts it only once the first incarnation has ended, so
  the lock is free; if a process of the old incarnation is still on its way out, a holder recorded with the same Slurm
  job id is waited for (up to `SAME_JOB_WAIT_S`) instead of refused.
- **Data parallel**: only rank 0 writes a run and takes the lock (`sfbench.train.distributed.env_rank`); the other
  ranks never touch it.
- **Within one process** the lock is re-entrant (the CLI takes it before checking the directory's config, the Trainer
  takes it again for API users), and a forked child does not inherit it.
- **Release** unlinks the file while still holding the lock; a contender that locked the unlinked file notices that
  the path no longer names its file and tries again, so two processes never both hold "the" lock.
- **Filesystems without flock** (some network filesystems mounted without it): a warning, and the run goes on
  unlocked — the old behaviour — rather than refusing every run.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .run_record import RecordWriteError

LOCK = ".lock"
SAME_JOB_WAIT_S = 120.0      # how long a requeued Slurm job waits for its previous incarnation to let go


class RunLocked(Exception):
    """Another process holds the run directory's lock. `str(err)` is the one-line message for the user."""

    def __init__(self, run_dir: Path, holder: dict | None):
        self.run_dir, self.holder = run_dir, holder or {}
        super().__init__(_refusal(run_dir, self.holder))


@dataclass
class RunLock:
    run_dir: Path
    fd: int | None                  # None: the filesystem can't lock; nothing is held
    pid: int = field(default_factory=os.getpid)
    depth: int = 1

    @property
    def path(self) -> Path:
        return self.run_dir / LOCK


_held: dict[str, RunLock] = {}


def slurm_job() -> str | None:
    """This process's Slurm job as `ARRAY_TASK` or `JOB` (the id a requeued job keeps), or None outside Slurm."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def describe_self() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "slurm_job": slurm_job(),
            "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0),
            "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300]}


def read_holder(run_dir: str | os.PathLike) -> dict | None:
    """What the holder wrote into the lock file (None if there is no lock file or it is empty or unreadable)."""
    try:
        text = (Path(run_dir) / LOCK).read_text(encoding="utf-8")
        holder = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def acquire(run_dir: str | os.PathLike, same_job_wait_s: float = SAME_JOB_WAIT_S) -> RunLock:
    """Take the run directory's lock or raise `RunLocked`. Re-entrant within a process (release as often)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(run_dir)
    held = _held.get(key)
    if held is not None and held.pid == os.getpid():
        held.depth += 1
        return held
    mine = describe_self()
    deadline, told = None, False
    while True:
        fd, holder = _try_lock(run_dir / LOCK)
        if fd is not None:
            break
        if holder is _NO_FLOCK:
            print(f"sfbench: warning: can't lock {run_dir} (this filesystem does not support flock); make sure only "
                  f"one process writes this run directory", file=sys.stderr)
            lock = _held[key] = RunLock(run_dir, None)
            return lock
        same_job = holder and mine["slurm_job"] is not None and holder.get("slurm_job") == mine["slurm_job"]
        if not same_job:
            raise RunLocked(run_dir, holder)
        deadline = deadline or time.monotonic() + same_job_wait_s
        if time.monotonic() > deadline:
            raise RunLocked(run_dir, holder)
        if not told:
            print(f"sfbench: {run_dir} is still held by the previous incarnation of Slurm job {mine['slurm_job']} "
                  f"(pid {holder.get('pid')} on {holder.get('host')}); waiting up to {same_job_wait_s:.0f} s for it "
                  f"to exit", file=sys.stderr)
            told = True
        time.sleep(0.5)
    payload = json.dumps(mine).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, payload, 0)
    lock = _held[key] = RunLock(run_dir, fd)
    return lock


_NO_FLOCK = object()


def _try_lock(path: Path) -> tuple[int | None, object]:
    """(fd, None) when locked; (None, holder info) when another process holds it; (None, _NO_FLOCK) when the
    filesystem can't lock."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:         # a read-only file system, no permission: the run can't be written here
            raise RecordWriteError(path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = None
            for _ in range(20):         # the holder writes its details just after locking: give it a moment
                holder = read_holder(path.parent)
                if holder:
                    break
                time.sleep(0.01)
            return None, holder
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None, _NO_FLOCK
            raise
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, None
        os.close(fd)            # we locked a file its holder unlinked on release: try the new one
    raise OSError(f"could not lock {path}: it keeps being replaced")


def release(lock: RunLock | None) -> None:
    """Give the lock up (the file is removed); a no-op for None and for a lock inherited across fork."""
    if lock is None or lock.pid != os.getpid() or lock.depth <= 0:
        return
    lock.depth -= 1
    if lock.depth > 0:
        return
    _held.pop(os.path.realpath(lock.run_dir), None)
    if lock.fd is None:
        return
    try:
        if os.stat(lock.path).st_ino == os.fstat(lock.fd).st_ino:
            os.unlink(lock.path)
    except OSError:
        pass
    os.close(lock.fd)
    lock.fd = None


def _refusal(run_dir: Path, holder: dict) -> str:
    pid, host = holder.get("pid"), holder.get("host")
    if pid is None:
        who = "another process (it is just starting and has not said who it is)"
        stop = "stop that process"
    else:
        here = host == socket.gethostname()
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"])) if holder.get("started") else "?"
        job = f", Slurm job {holder['slurm_job']}" if holder.get("slurm_job") else ""
        who = f"pid {pid} on {host} (since {since}{job})"
        if holder.get("slurm_job"):
            stop = f"stop it with scancel {holder['slurm_job']} (it checkpoints and stops)"
        elif here:
            stop = f"stop it with kill {pid} (it checkpoints and stops)"
        else:
            stop = f"stop it on {host} with kill {pid} (it checkpoints and stops)"
    return (f"{run_dir} is being written by {who}; a run directory has one writer at a time. Wait for that run to "
            f"end, {stop} and run the same command again to resume, or train elsewhere with hydra.run.dir=…")
