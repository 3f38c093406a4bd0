"""Stop signals (SIGTERM, SIGUSR1, SIGUSR2) from a job's start to its end: taken before submitit's handler, given to
the Trainer, and, once it has checkpointed, handed to submitit's requeue once — with Slurm's answer to whether the
job is at its time limit.

Requeue without loss (slurm/README.md): submitit installs its own SIGUSR2 handler in every job; on a time-limit
warning (`--signal=USR2@signal_delay_s`) or a preemption signal it re-pickles the job (the launcher's `checkpoint`),
runs `scontrol requeue` and exits. submitit's checkpoint holds no training state, so the Trainer takes the signal
first: it finishes the step and writes RUN/checkpoints/last.pt; only then does the job reach submitit's handler, here,
and the requeued job resumes from the run directory bit-exactly. We use submitit's mechanism rather than a
`trap … scontrol requeue` of our own because the Hydra launcher already waits on submitit's result files and counts
time-outs (`max_num_timeout`), so a requeued job stays the same sweep job. Under the local launcher the handlers are
the defaults (not callables) and nothing happens.

Time-out or preemption: submitit (1.5) calls a signal a time-out once the job has run min(80 %, limit − 10 min) of
its time limit — so with a limit of 10 minutes or less every signal, preemptions too, counts against
`max_num_timeout`, and with longer ones a preemption late in the job does. Slurm knows better: a signal is the
time-limit warning when the job's time left (`squeue -o %L`) is within `signal_delay_s` plus slurmctld's 30 s check
interval and a margin; otherwise it is a preemption. That answer replaces submitit's guess for this call
(`has_timed_out` of the handler's object); where squeue can't tell, submitit's own stays.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading

#: slurmctld checks time limits every 30 s and may send the warning up to that much early; plus a margin
WARNING_SLACK_S = 60
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def parse_time_left(text: str) -> float | None:
    """Seconds in squeue's `%L` ([days-][hours:]minutes:seconds); None for UNLIMITED, NOT_SET, INVALID, …"""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", text.strip())
    if m is None:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def slurm_time_left_s() -> float | None:
    """This Slurm job's time left, from squeue; None outside Slurm or when squeue can't say."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    return parse_time_left(lines[0]) if out.returncode == 0 and lines else None


def at_time_limit(signal_delay_s: float, time_left_s: float | None) -> bool | None:
    """Whether a signal now is the time-limit warning (None: unknown)."""
    if time_left_s is None:
        return None
    return time_left_s <= signal_delay_s + WARNING_SLACK_S


class StopSignals:
    """SIGTERM, SIGUSR1 and SIGUSR2 from the job's first moment to its last, so none reaches submitit's handler
    twice (a burst — Slurm signals every task of a step, a preemption may repeat — re-entered it while it pickled
    the job: "A temporary saved file already exists", one rank exited and the other waited for the time limit).

    Until a Trainer takes them (`forward_to`) they are recorded, and the Trainer stops after its first step (or
    before training) with a checkpoint; outside a submitit job, where the handler before was the default, one
    arriving with nobody to take it ends the process as it would have. `hand_on` gives the Trainer's stop signal to
    submitit once, and later ones are ignored until the process exits."""

    def __init__(self):
        self.first: int | None = None
        self.previous: dict[int, object] = {}
        self.target = None

    def install(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread() and not self.previous:
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._on)
        return self

    def _on(self, signum, frame) -> None:
        if self.first is None:
            self.first = signum
        if self.target is not None:
            self.target(signum)
        elif not callable(self.previous.get(signum)):     # no submitit here: what the signal did before
            self.release()
            os.kill(os.getpid(), signum)

    def forward_to(self, request_stop) -> None:
        """From now on a stop signal calls `request_stop(signum)`; one that came before is passed at once."""
        self.target = request_stop
        if self.first is not None:
            request_stop(self.first)

    def release(self) -> None:
        """The handlers from before, back (a job with no Trainer: a PEP job)."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def close(self) -> None:
        """The run is over: the handlers from before are back, nothing is pending."""
        self.release()
        self.first, self.target = None, None

    def hand_on(self, signum: int | None, signal_delay_s: float) -> None:
        """Give `signum`, which the Trainer acted on, to the handler that was there before — submitit's requeue in a
        Slurm job — with Slurm's answer to whether the job is at its time limit. Stop signals are ignored from then
        on (the process exits through that handler); with no such handler nothing happens."""
        handler = self.previous.get(signum) if signum is not None else None
        if not callable(handler):
            return
        for sig in self.previous:
            signal.signal(sig, signal.SIG_IGN)
        self.previous = {}
        owner = getattr(handler, "__self__", None)
        if owner is not None and callable(getattr(owner, "has_timed_out", None)):
            timed_out = at_time_limit(signal_delay_s, slurm_time_left_s())
            if timed_out is not None:
                owner.has_timed_out = lambda: timed_out
        handler(signum, None)


_stop_signals: StopSignals | None = None


def stop_signals() -> StopSignals:
    """This process's `StopSignals`, installed on first use (the Slurm launcher's job entry, else the CLI's run)."""
    global _stop_signals
    if _stop_signals is None:
        _stop_signals = StopSignals()
    return _stop_signals.install()
