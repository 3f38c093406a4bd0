"""`python -m sfbench [overrides]`: compose (Hydra) → validate → run → return the sweep metric.

Bad input stops before any training with one message naming the key, the value and what is allowed, exit status 2,
and no run directory left behind (DESIGN.md "Errors"; `validate.py`). Sweeps (`-m`) go to a directory named by the
sweep command (`sweep.py`), so relaunching a sweep that was cut off trains only its unfinished runs.
`hydra/launcher=slurm` submits one job array per sweep through submitit (the Hydra plugin
`hydra_plugins/sfbench_launcher`); a job warned of its time limit or preempted (SIGUSR1/2) checkpoints, is requeued by
submitit and resumes from its run directory (`requeue.py`, slurm/README.md).

Faults: the run directory's lock is taken (rank 0) before its config is compared with the one asked for,
so a second process on a live run is refused (exit 2, naming the holder) before it writes anything; a damaged record
(`RecordDamaged`) is exit 2 with the file and the remedy; a failed write (a full disk) is exit 1 with one line; Ctrl-C
stops like SIGTERM (exit 0), a second one at once (exit 130); a key that is no setting gets the closest ones.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from .outcome import print_run, print_sweep, sweep_dir_of
from .requeue import stop_signals
from .sweep import register_resolvers, sweep_dir, sweep_value
from .validate import (EXIT_BAD_INPUT, GROUPS, check_group_choices, composition_error, config_dir, validate,
                       validate_sweep)

EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
_task_started = False
_lock = None            # the run directory's lock while this process trains it (sfbench.tracking.lock)


def _fail(message: str, run_dir: Path | None = None) -> None:
    """Print one clear message, remove the run directory if it is empty (Hydra made it for this invocation and
    nothing was written: Hydra's own files are switched off), exit with status 2. A directory with anything in it —
    an earlier run, the user's own files — is never touched."""
    _release_lock()
    if run_dir is not None and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
    print(f"sfbench: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


# -- validation ------------------------------------------------------------------------------------------------------


def run(cfg) -> float | None:
    """The Hydra task function: one run. SIGTERM/USR1/USR2 are taken from its start to its end (requeue.py)."""
    global _task_started
    _task_started = True
    stops = stop_signals()
    try:
        return _run(cfg)
    finally:
        stops.close()


def _run(cfg) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from ..tasks.base import ConfigError

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        parts = validate(cfg)
    except ConfigError as err:
        _fail(str(err), run_dir)
    choices = {k: v for k, v in hc.runtime.choices.items() if k in GROUPS}
    if hc.runtime.choices.get("hydra/sweeper") not in (None, "basic"):     # e.g. tune_lr: the report marks tuned lrs
        choices["hydra/sweeper"] = hc.runtime.choices["hydra/sweeper"]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["choices"] = choices
    from ..tracking.ownership import check_run_dir
    from ..tracking.run_record import RecordDamaged
    try:
        check_run_dir(run_dir)      # a directory of someone else's files: refused before anything is written there
    except RecordDamaged as err:
        _fail(str(err))
    _take_lock(run_dir)             # before the config check: two processes can't both pass it
    try:
        return _train(cfg, hc, run_dir, parts, resolved)
    finally:
        _release_lock()


def _take_lock(run_dir: Path) -> None:
    global _lock
    from ..tracking.lock import RunLocked, acquire
    from ..tracking.run_record import RecordWriteError
    from ..train.distributed import env_rank

    if env_rank() != 0:             # data parallel: rank 0 writes the run and holds its lock
        return
    try:
        _lock = acquire(run_dir)
    except RunLocked as err:
        _fail(str(err))
    except RecordWriteError as err:     # a read-only file system, no permission
        print(f"sfbench: error: {err}; {err.remedy}, or train elsewhere with hydra.run.dir=…", file=sys.stderr)
        sys.exit(EXIT_FAILED)


def _release_lock() -> None:
    global _lock
    from ..tracking.lock import release

    release(_lock)
    _lock = None


def _train(cfg, hc, run_dir: Path, parts: dict, resolved: dict) -> float | None:
    from omegaconf import OmegaConf

    from ..tasks.base import ConfigError
    from ..tracking.run_record import RecordDamaged, RecordWriteError
    from ..train import Trainer, TrainerConfig
    from ..train.distributed import PeerLost

    from ..tracking.ownership import check_same_run
    try:
        check_same_run(run_dir, resolved)   # the run there, if any, must be this configuration's (ownership.py)
    except RecordDamaged as err:
        _fail(str(err))
    stops = stop_signals()
    if "pep" in parts:                  # a PEP job (configs/experiment/sfn_pep.yaml): sfbench.pep, not the trainer
        from ..pep.job import run_pep

        stops.release()                 # signals do what they did before (submitit requeues a PEP job as it is)
        if stops.first is not None:
            os.kill(os.getpid(), stops.first)
        return run_pep(cfg, run_dir, resolved)
    multirun = hc.mode is not None and hc.mode.name == "MULTIRUN"
    group = cfg.group or (Path(hc.sweep.dir).name if multirun else "default")
    trainer_cfg = TrainerConfig(**resolved["trainer"], seed=cfg.seed)
    schedule = parts["schedule"]
    trainer = Trainer(trainer_cfg, parts["task"], parts["make_optimizer"], schedule.lr_scheduler, run_dir,
                      resolved, sink=parts["sink"], run_name=run_dir.name, group=group)
    stops.forward_to(trainer.stops.request)
    try:
        summary = trainer.run()
    except ConfigError as err:          # found while loading data or the teacher
        _fail(str(err), run_dir)
    except RecordDamaged as err:        # the record can't be resumed as it is: nothing was written
        _fail(str(err))
    except RecordWriteError as err:     # a full disk: the summary says failed (when it could be written)
        print(f"sfbench: error: {err}", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    except PeerLost as err:             # data parallel: a rank stalled or is gone (the summary says failed)
        signum = trainer.stops.signal
        pending = f"; {signal.Signals(signum).name} came while it waited" if signum else ""
        print(f"sfbench: error: {err}{pending}; the run resumes from its last checkpoint — run the same command "
              f"again", file=sys.stderr)
        sys.exit(EXIT_FAILED)
    if int(os.environ.get("RANK", "0")) == 0:    # the result, its status and where it is (outcome.py)
        print_run(summary, run_dir)
    if summary and summary.get("status") == "preempted":
        if getattr(trainer, "stopped_at_once", False):       # a second Ctrl-C
            sys.exit(EXIT_INTERRUPTED)
        # The run is checkpointed: the signal goes to the handler from before the Trainer's — submitit's in a
        # Slurm job, which requeues it; the requeued job resumes from run_dir (and takes the lock released first).
        _release_lock()
        stops.hand_on(trainer.stops.signal, float(OmegaConf.select(hc, "launcher.signal_delay_s", default=120)))
        # Otherwise (and after Ctrl-C): don't start the sweep's next job (local launcher); exit cleanly.
        sys.exit(0)
    return sweep_value(summary)


def main(argv: list[str] | None = None) -> None:
    global _task_started
    import hydra

    _task_started = False
    argv = list(sys.argv[1:] if argv is None else argv)
    if {"--help", "-h", "--hydra-help"} & set(argv):
        from .help import install      # the same help text, without listing every group twice (help.py)

        install()
    check_group_choices(argv)
    register_resolvers()
    if "-m" in argv or "--multirun" in argv:
        validate_sweep([a for a in argv if not a.startswith("-")])
        directory = sweep_dir(argv)
        if directory is not None:
            # a Hydra override (not a config value): it travels in hydra.overrides.hydra to every job, Slurm ones too.
            # Beside the other overrides: argparse takes them as one block of positional arguments.
            at = max((i + 1 for i, a in enumerate(argv) if "=" in a and not a.startswith("-")), default=0)
            argv.insert(at, f"hydra.sweep.dir='{directory}'")
    app = hydra.main(version_base=None, config_path=str(config_dir()), config_name="config")(run)
    sys.argv = [sys.argv[0]] + argv
    # Hydra's errors reach us as exceptions (not as its printed report), so that a key that is no setting gets one
    # line naming the closest ones; errors inside a run are re-raised as they are
    full_error = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:   # Hydra's own composition errors
            sys.exit(EXIT_BAD_INPUT)
        raise
    except KeyboardInterrupt:                       # Ctrl-C outside training (which handles its own)
        print("\nsfbench: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as err:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        if _task_started or not isinstance(err, (HydraException, OmegaConfBaseException)):
            raise                                   # a defect, not bad input: the traceback is the report
        print(f"sfbench: error: {composition_error(err, argv)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    finally:
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
    multirun = "-m" in argv or "--multirun" in argv
    inspecting = any(a in ("-c", "-h", "-i", "--help", "--hydra-help") or a.startswith(("--cfg", "--info"))
                     for a in argv)
    if multirun and not inspecting:
        where = sweep_dir_of(argv)
        if where is not None and where.is_dir():
            print_sweep(where)              # one table across the sweep's runs, and the report command
