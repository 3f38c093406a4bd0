"""Stop requests of a run: SIGTERM, SIGUSR1 / SIGUSR2 (the requeue signals clusters and Slurm's `--signal` send before
a time limit or preemption) and SIGINT (Ctrl-C) ask the loop to stop after the current step with a checkpoint; a
second Ctrl-C raises `StopNow` at once — or, while a write is in progress (`writing`), as soon as it is done."""

from __future__ import annotations

import contextlib
import os
import signal
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once (at the last checkpoint), without the step boundary the first one waits for."""


class Stops:
    """The stop request of one run (`signal`: the first signal received, or None) and its signal handlers."""

    def __init__(self):
        self.signal: int | None = None
        self.loud = True                 # Ctrl-C prints what happens (rank 0 of a data-parallel run only)
        self._hold = 0                   # > 0: a write is in progress; a second Ctrl-C waits for it
        self._abort_pending = False

    def request(self, signum: int) -> None:
        if self.signal is None:
            self.signal = signum

    def install(self) -> dict:
        """Take the stop signals (from the main thread only); returns the handlers to `restore`."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}

    @staticmethod
    def restore(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signal is not None:     # Ctrl-C after a stop request
            if self._hold:
                self._abort_pending = True
                return
            raise StopNow()
        self.request(signum)
        if signum == signal.SIGINT and self.loud:
            try:        # not print(): the handler may run while the main code is inside a write to stderr
                os.write(2, b"\nsfbench: Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to stop "
                            b"at once, at the last checkpoint)\n")
            except OSError:
                pass

    @contextlib.contextmanager
    def writing(self):
        """A write in progress: a second Ctrl-C during it stops the run once it is done, not in the middle."""
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
            if not self._hold and self._abort_pending:
                self._abort_pending = False
                raise StopNow()
