"""Where a run's metrics go besides the run record: the sink protocol (W&B is one), and a no-op sink.

The trainer calls, in order: `start(...)` once, `log(metrics)` for each logged step (metrics always hold "step"),
`summary(fields)` when final numbers are known, `finish(status)` once. A sink must never make training fail:
implementations catch their own errors, warn once, and go quiet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Protocol


class Sink(Protocol):
    def start(self, run_dir: Path, config: Mapping[str, Any], *, group: str, job_type: str, name: str) -> None: ...

    def log(self, metrics: Mapping[str, Any]) -> None: ...

    def summary(self, fields: Mapping[str, Any]) -> None: ...

    def finish(self, status: str) -> None: ...


class NullSink:
    """`logger=none`: nothing besides the local run record."""

    def start(self, run_dir, config, *, group, job_type, name):
        pass

    def log(self, metrics):
        pass

    def summary(self, fields):
        pass

    def finish(self, status):
        pass
