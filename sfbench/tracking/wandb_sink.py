"""The W&B sink: streams a run's metrics to Weights & Biases, online or offline (DESIGN.md "The way data flows").

Every metric is plotted against our own `step` (`define_metric`), never wandb's internal `_step`, and the run id
is kept in RUN_DIR/wandb_id.txt, so a run that is preempted and requeued continues the same W&B run.

Offline (mode="offline", or mode="auto" with no W&B account configured, as on a cluster without internet) the
run is written under RUN_DIR/wandb/. Upload it later from a machine that can reach W&B:

    wandb sync RUN_DIR/wandb/offline-run-*

A resumed run leaves one offline-run-* directory per segment, all with the same id; `wandb sync` (0.31) uploads
the segments of one run one after another in order of start time, so this one glob syncs the whole run.
`wandb leet RUN_DIR/wandb` browses an offline run in the terminal without uploading it.

Training never fails because of W&B: the first error is reported in one line on stderr and the sink goes quiet.
"""

from __future__ import annotations

import netrc
import os
import secrets
import string
import sys
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from .run_record import atomic_write_text, python_number

MODES = ("auto", "online", "offline", "disabled")
ID_FILE = "wandb_id.txt"
_ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


def resolve_mode(mode: str = "auto") -> str:
    """"auto" → what WANDB_MODE says if set, else "online" when an account is configured, else "offline"."""
    if mode != "auto":
        return mode
    env = _ENV_MODES.get(os.environ.get("WANDB_MODE", "").strip().lower())
    return env or ("online" if has_account() else "offline")


def has_account() -> bool:
    """Credentials where wandb looks for them: WANDB_API_KEY (or an identity token file), else a netrc entry for
    the W&B host (what `wandb login` writes; NETRC names the file, default ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = os.path.expanduser(os.environ.get("NETRC") or "~/.netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def run_id(run_dir: Path) -> str:
    """The W&B run id stored in RUN_DIR/wandb_id.txt, created (atomically) on first use."""
    path = Path(run_dir) / ID_FILE
    if path.exists() and (stored := path.read_text(encoding="utf-8").strip()):
        return stored
    # wandb.util.generate_id is gone in wandb 0.31; this is the same format (8 base-36 characters).
    new = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, new + "\n")
    return new


class WandbSink:
    """`logger=wandb`: one W&B run per run directory (the Sink protocol of sinks.py)."""

    def __init__(self, project: str = "sfbench", entity: str | None = None, mode: str = "auto", tags=(),
                 notes: str | None = None):
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not allowed; choose one of {', '.join(map(repr, MODES))}")
        self.project, self.entity, self.mode, self.tags, self.notes = project, entity, mode, list(tags), notes
        self.run = None                    # None: not started, disabled, or gone quiet after an error

    def start(self, run_dir: Path, config: Mapping[str, Any], *, group: str, job_type: str, name: str) -> None:
        mode = resolve_mode(self.mode)
        if mode == "disabled":
            return
        run_dir = Path(run_dir).absolute()
        self.run = self._guard("wandb.init", self._init, run_dir, config, group, job_type, name, mode)
        if self.run is not None and mode == "offline":
            print(f"wandb: W&B is offline; to upload this run later: wandb sync {run_dir}/wandb/offline-run-*",
                  file=sys.stderr)

    def _init(self, run_dir, config, group, job_type, name, mode):
        import wandb                       # lazily: the package imports (and runs with logger=none) without wandb

        settings = wandb.Settings(
            save_code=False,
            console="off",                 # stdout/stderr already go to the Slurm/Hydra logs; no need to wrap them
            silent=mode == "offline",      # offline: start()'s one line says it all; online: keep the URL
            quiet=True,
            init_timeout=60,
            reinit="finish_previous",      # Hydra multirun runs jobs in one process: never log into an older run
        )
        run = wandb.init(project=self.project, entity=self.entity, dir=run_dir, config=dict(config), group=group,
                         job_type=job_type, name=name, id=run_id(run_dir), resume="allow", mode=mode,
                         tags=self.tags, notes=self.notes, settings=settings)
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        return run

    def log(self, metrics: Mapping[str, Any]) -> None:
        # No step=: wandb's own _step restarts on resume; "step" in the metrics is the x axis (define_metric).
        if self.run is not None:
            self._guard("wandb log", self.run.log, {k: python_number(v) for k, v in metrics.items()})

    def summary(self, fields: Mapping[str, Any]) -> None:
        if self.run is not None:
            self._guard("wandb summary", self.run.summary.update, {k: python_number(v) for k, v in fields.items()})

    def finish(self, status: str) -> None:
        if self.run is None:
            return
        run, self.run = self.run, None

        def _finish():
            run.summary["status"] = status
            if status == "preempted" and hasattr(run, "mark_preempting"):
                run.mark_preempting()
            run.finish(exit_code=0 if status in ("completed", "diverged", "preempted") else 1)

        self._guard("wandb finish", _finish)

    def _guard(self, what: str, fn, *args):
        """fn(*args); on an error, warn once and go quiet for the rest of the run."""
        try:
            return fn(*args)
        except Exception as e:
            self.run = None
            message = " ".join(str(e).split())
            print(f"warning: {what} failed ({type(e).__name__}: {message}); W&B logging is off for this run",
                  file=sys.stderr)
            return None
