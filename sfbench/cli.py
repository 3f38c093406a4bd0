"""`python -m sfbench [overrides]`: compose (Hydra) → validate → run → return the sweep metric.

Bad input stops before any training with one message naming the key, the value and what is allowed, exit status 2,
and no run directory left behind (DESIGN.md "Errors"): unknown group options are caught before Hydra starts, other
composition errors (unknown keys, bad override syntax) are Hydra's message with our exit status, and values are
checked here by building every part (task, optimizer, schedule, logger) on dummy inputs before anything is loaded.

Sweeps (`-m`) go to `multirun/<group>` or `multirun/<the sweep's overrides>`: the same command maps to the same
directory, so relaunching a sweep that was cut off trains only its unfinished runs. `hydra/launcher=slurm` submits
one job array per sweep through submitit (`SlurmLauncher` below: finished runs are not submitted again, runs still
queued or running from an earlier launch are waited for, not submitted twice); a job warned of its time limit or
preempted (SIGUSR2) checkpoints, is requeued by submitit and resumes from its run directory (`run`, slurm/README.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
GROUPS = ("task", "opt", "sched", "logger", "experiment")
REQUIRED_GROUPS = ("task", "opt", "sched", "logger")
TOP_LEVEL = ("task", "opt", "sched", "logger", "seed", "group", "trainer", "paths")
EXIT_BAD_INPUT = 2
SWEEP_ROOT = "multirun"
SLURM_RECORD = "slurm.json"   # in a run directory: the Slurm job submitted for it (written by SlurmLauncher)
FINISHED = ("completed", "diverged")   # the Trainer skips these run directories; SlurmLauncher doesn't submit them
_task_started = False


def _run_name(override_dirname: str) -> str:
    """A directory name for a run from its overrides: deterministic, filesystem-safe, bounded."""
    if not override_dirname:
        return "default"
    name = re.sub(r"[^A-Za-z0-9_.,=+\-\[\]]", "_", override_dirname)
    if len(name) > 120:
        name = name[:100] + "-" + hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
    return name


def _fail(message: str, run_dir: Path | None = None) -> None:
    """Print one clear message, remove the run directory if it is empty (Hydra made it for this invocation and
    nothing was written: Hydra's own files are switched off), exit with status 2. A directory with anything in it —
    an earlier run, the user's own files — is never touched."""
    if run_dir is not None and run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()
    print(f"sfbench: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


# -- validation ------------------------------------------------------------------------------------------------------

def validate(cfg) -> dict[str, Any]:
    """Check every value and build every part on dummy inputs; returns the builders. Raises ConfigError."""
    import torch
    from omegaconf import DictConfig, OmegaConf

    from .tasks.base import ConfigError, check_number
    from .train import TrainerConfig

    for key in cfg:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{key}: unknown setting; the top level holds {', '.join(TOP_LEVEL)}")
    for key in ("task", "opt", "sched", "logger", "trainer"):
        node = cfg.get(key)
        if node is None:
            raise ConfigError(f"{key} is missing; it is required (python -m sfbench --help lists the options)")
        if not isinstance(node, DictConfig):
            what = "a config group: choose an option with" if key != "trainer" else "a group of settings: set them as"
            raise ConfigError(f"{key}={node!r} is not allowed; {key} is {what} {key}.<name>=… or {key}=<option>")
    known = {f.name for f in TrainerConfig.__dataclass_fields__.values()} - {"seed"}
    for key in cfg.trainer:
        if key not in known:
            raise ConfigError(f"trainer.{key}: unknown setting; choose among {', '.join(sorted(known))}")
    check_number("seed", cfg.seed, 0, 2 ** 63 - 1, integer=True)
    t = cfg.trainer
    check_number("trainer.steps", t.steps, 1, integer=True)
    for key in ("eval_every", "ckpt_every", "bn_recompute_batches"):
        check_number(f"trainer.{key}", t[key], 0, integer=True)
    check_number("trainer.log_every", t.log_every, 1, integer=True)
    check_number("trainer.theory_d_every", t.theory_d_every, 1, integer=True)
    if not isinstance(t.theory, bool):
        raise ConfigError(f"trainer.theory={t.theory!r} is not allowed; use true (log [C1]/[C3] bounds) or false")
    check_number("trainer.log_every_s", t.log_every_s, 0)
    if t.precision not in ("fp32", "bf16"):
        raise ConfigError(f"trainer.precision={t.precision!r} is not allowed; choose one of 'fp32', 'bf16'")
    if not isinstance(t.compile, bool):
        raise ConfigError(f"trainer.compile={t.compile!r} is not allowed; use true or false")
    if t.diverge_above is not None:
        check_number("trainer.diverge_above", t.diverge_above, 1, hi_open=True)
    if t.grad_clip is not None:
        check_number("trainer.grad_clip", t.grad_clip, 0, lo_open=True, hi_open=True)
    if not isinstance(t.device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device):
        raise ConfigError(f"trainer.device={t.device!r} is not allowed; use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if t.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={t.device!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")

    opt = cfg.opt
    check_number("opt.lr", opt.get("lr"), 0, hi_open=True)
    for key in ("weight_decay", "eps"):
        if key in opt:
            check_number(f"opt.{key}", opt[key], 0, hi_open=True)
    if "momentum" in opt:
        check_number("opt.momentum", opt.momentum, 0, 1)
    if "betas" in opt:
        betas = OmegaConf.to_object(opt.betas) if OmegaConf.is_config(opt.betas) else opt.betas
        if not isinstance(betas, (list, tuple)) or len(betas) != 2:
            raise ConfigError(f"opt.betas={betas!r} is not allowed; give two numbers, [beta1, beta2]")
        for i, b in enumerate(betas):
            try:
                check_number(f"opt.betas[{i}]", b, 0, 1, hi_open=(i == 1))
            except ConfigError as err:
                raise ConfigError(f"opt.betas={betas!r} is not allowed: {str(err).split(' is not allowed; ')[1]} "
                           f"for betas[{i}]") from None
    make_optimizer = _build("opt", opt)
    try:
        make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise ConfigError(_prefixed("opt", err)) from None
    make_schedule = _build("sched", cfg.sched)
    try:
        schedule = make_schedule(total_steps=t.steps)
    except (ValueError, TypeError) as err:
        raise ConfigError(_prefixed("sched", err)) from None
    task = _build("task", cfg.task)
    sink = _build("logger", cfg.logger)
    return dict(make_optimizer=make_optimizer, schedule=schedule, task=task, sink=sink)


def _build(group: str, node) -> Any:
    """hydra.utils.instantiate, with the constructor's own error (unwrapped from Hydra's) as a ConfigError naming the key."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from .tasks.base import ConfigError

    try:
        return instantiate(node)
    except InstantiationException as err:
        cause = err.__cause__ or err
        if isinstance(cause, ConfigError):
            raise ConfigError(str(cause)) from None
        raise ConfigError(_prefixed(group, cause)) from None
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(_prefixed(group, err)) from None


def _prefixed(group: str, err: Exception) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    text = re.sub(r"^Error in call to target '[^']*':\s*", "", text)
    text = re.sub(r"^\w+Error\('?(.*?)'?\)$", r"\1", text)
    if re.match(r"^[A-Za-z_][\w\[\]]*=", text):
        return f"{group}.{text}"
    return f"{group}: {text}"


# -- the app ---------------------------------------------------------------------------------------------------------

def run(cfg) -> float | None:
    """The Hydra task function: one run."""
    global _task_started
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from .tasks.base import ConfigError
    from .train import Trainer, TrainerConfig

    _task_started = True
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    try:
        parts = validate(cfg)
    except ConfigError as err:
        _fail(str(err), run_dir)
    choices = {k: v for k, v in hc.runtime.choices.items() if k in GROUPS}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved["choices"] = choices
    _check_same_config(run_dir, resolved)
    if cfg.group:
        group = cfg.group
    elif hc.mode is not None and hc.mode.name == "MULTIRUN":
        group = Path(hc.sweep.dir).name
    else:
        group = "default"
    trainer_cfg = TrainerConfig(**{k: v for k, v in resolved["trainer"].items()}, seed=cfg.seed)
    schedule = parts["schedule"]
    trainer = Trainer(trainer_cfg, parts["task"], parts["make_optimizer"], schedule.lr_scheduler, run_dir,
                      resolved, sink=parts["sink"], run_name=run_dir.name, group=group)
    try:
        summary = trainer.run()
    except ConfigError as err:          # found while loading data or the teacher
        _fail(str(err), run_dir)
    if summary and summary.get("status") == "preempted":
        # The run is checkpointed. Give the signal to the handler the Trainer borrowed it from: under submitit
        # (hydra/launcher=slurm) that one requeues the job and exits, and the requeued job resumes from run_dir.
        _hand_on_signal(getattr(trainer, "stop_signal", None) or getattr(trainer, "_stop_signal", None))
        # Otherwise: don't start the sweep's next job (local launcher); exit cleanly.
        sys.exit(0)
    return _sweep_value(summary)


def _sweep_value(summary: dict | None) -> float | None:
    final = summary.get("final", {}) if summary else {}
    value = final.get("eval/loss", final.get("train/loss"))
    return float(value) if value is not None else None


def _hand_on_signal(signum: int | None) -> None:
    """Pass a stop signal the Trainer acted on to the handler that was installed before it (the Trainer restores
    its predecessors when it returns).

    Requeue without loss (slurm/README.md): submitit installs its own SIGUSR2 handler in every job; on a time-limit
    warning (`--signal=USR2@signal_delay_s`) or a preemption signal it re-pickles the job (the launcher's
    `checkpoint`), runs `scontrol requeue` and exits. submitit's checkpoint holds no training state, so the Trainer
    takes the signal first: it finishes the step and writes RUN/checkpoints/last.pt; only then does the job reach
    submitit's handler, here, and the requeued job resumes from the run directory bit-exactly. We use submitit's
    mechanism rather than a `trap … scontrol requeue` of our own because the Hydra launcher already waits on
    submitit's result files and counts time-outs (`max_num_timeout`), so a requeued job stays the same sweep job.
    Under the local launcher the handlers are the defaults (not callables) and nothing happens.
    """
    if signum is None:
        return
    handler = signal.getsignal(signum)
    if callable(handler):
        handler(signum, None)


def _check_same_config(run_dir: Path, resolved: dict) -> None:
    from .tracking.run_record import flatten, read_config

    old = read_config(run_dir)
    if not old or not (run_dir / "summary.json").exists():
        return
    volatile = ("trainer.device", "trainer.log_every_s", "logger.", "choices.logger")
    a = {k: v for k, v in flatten(old).items() if not k.startswith(volatile)}
    b = {k: v for k, v in flatten(resolved).items() if not k.startswith(volatile)}
    # a setting the old record lacks was added by a newer sfbench (e.g. trainer.theory): not a different run
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k in a)
    if diff:
        print(f"sfbench: error: {run_dir} holds a run with a different configuration (differs at: "
              f"{', '.join(diff[:5])}); pick another directory with hydra.run.dir=… or remove it", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _check_group_choices(argv: list[str]) -> None:
    """Unknown options of our config groups, before Hydra starts (so no directory is created)."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        if key.lstrip("+").startswith("~") and key.lstrip("+~") in REQUIRED_GROUPS:
            print(f"sfbench: error: {key}: {key.lstrip('+~')} is required and can't be removed", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        key = key.lstrip("+~")
        if key.startswith("override "):
            key = key[len("override "):]
        if key not in GROUPS or "(" in value:
            continue
        options = sorted(p.stem for p in (CONFIG_DIR / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice in ("null", "") and key in REQUIRED_GROUPS:
                print(f"sfbench: error: {key}={choice or 'null'} is not allowed; {key} is required: choose one of "
                      f"{', '.join(options)}", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            if choice and choice != "null" and choice not in options:
                print(f"sfbench: error: {key}={choice!r} is not an option; choose one of {', '.join(options)}",
                      file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)


def _validate_sweep(overrides: list[str]) -> None:
    """Compose and validate every job of a multirun before any of them trains (Hydra's basic sweeper expansion)."""
    from hydra import compose, initialize_config_module
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .tasks.base import ConfigError

    own = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(own)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:       # let Hydra report its own syntax errors (exit 2 through main)
        return
    if len(jobs) <= 1:
        return
    with initialize_config_module(config_module="sfbench.configs", version_base=None):
        for job in jobs:
            try:
                cfg = compose("config", overrides=list(job))
                validate(cfg)
            except ConfigError as err:
                print(f"sfbench: error: in the sweep's job {' '.join(job)}: {err}\n(no job was started)",
                      file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            except Exception:   # composition errors: Hydra reports them when it launches the job
                return


def main(argv: list[str] | None = None) -> None:
    global _task_started
    import hydra

    _task_started = False
    argv = list(sys.argv[1:] if argv is None else argv)
    _check_group_choices(argv)
    _register_resolvers()
    if "-m" in argv or "--multirun" in argv:
        _validate_sweep([a for a in argv if not a.startswith("-")])
        sweep_dir = _sweep_dir(argv)
        if sweep_dir is not None:
            # a Hydra override (not a config value): it travels in hydra.overrides.hydra to every job, Slurm ones too.
            # Beside the other overrides: argparse takes them as one block of positional arguments.
            at = max((i + 1 for i, a in enumerate(argv) if "=" in a and not a.startswith("-")), default=0)
            argv.insert(at, f"hydra.sweep.dir='{sweep_dir}'")
        _register_slurm_launcher()
    app = hydra.main(version_base=None, config_path="configs", config_name="config")(run)
    sys.argv = [sys.argv[0]] + argv
    try:
        app()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:   # Hydra's own composition errors
            sys.exit(EXIT_BAD_INPUT)
        raise


def _register_resolvers() -> None:
    """`${sfbench_run_name:…}` in config.yaml (Slurm jobs get it with Hydra's singleton state)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sfbench_run_name"):
        OmegaConf.register_new_resolver("sfbench_run_name", _run_name)


# -- sweeps: a directory named by the command, relaunch = resume -------------------------------------------------------

def _override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~").removeprefix("override ")


def _sweep_dir(argv: list[str]) -> str | None:
    """The sweep directory for `python -m sfbench -m ARGS`: multirun/<group> when `group=NAME` is given, else
    multirun/<the sweep's own overrides, sorted> (the keys left out of run names — logger, device, … — and Hydra's
    own overrides such as hydra/launcher=… left out too). The same command gives the same directory, so relaunching a
    sweep that was cut off finds its finished runs. None when the user set hydra.sweep.dir (theirs wins).

    It can't be a `${…}` in config.yaml: Hydra resolves hydra.sweep.dir again inside every job, where
    hydra.overrides.task holds that job's overrides only, not the sweep's."""
    import yaml

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    keys = [_override_key(a) for a in overrides]
    if "hydra.sweep.dir" in keys:
        return None
    for arg, key in zip(overrides, keys):
        value = arg.split("=", 1)[1]
        if key == "group" and value not in ("", "null") and "," not in value:
            return f"{SWEEP_ROOT}/{_run_name(value)}"
    config = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())
    excluded = set(config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"])
    own = sorted(a for a, k in zip(overrides, keys) if not (k == "hydra" or k.startswith(("hydra.", "hydra/")))
                 and k not in excluded)
    return f"{SWEEP_ROOT}/{_run_name(','.join(own))}"


# hydra/launcher=slurm's _target_. Hydra instantiates launchers only from classes named under the `hydra_plugins`
# namespace package (Plugins._instantiate), and this project installs only `sfbench*` (pyproject.toml); so before a
# multirun the class below is put in a module of that name and registered with Plugins.register, Hydra's API for
# registering a plugin by hand. Jobs never need it: they are handed the plugin's own SlurmLauncher (see `launch`).
SLURM_LAUNCHER = "hydra_plugins.sfbench.SlurmLauncher"


def _register_slurm_launcher() -> None:
    import types

    from hydra.core.plugins import Plugins

    module_name, name = SLURM_LAUNCHER.rsplit(".", 1)
    module = sys.modules.get(module_name)
    if module is None:
        module = types.ModuleType(module_name, "sfbench's Hydra launcher, registered by sfbench.cli")
        setattr(module, name, _slurm_launcher_class())
        sys.modules[module_name] = module
    plugins = Plugins.instance()
    if SLURM_LAUNCHER not in plugins.class_name_to_class:
        plugins.register(getattr(module, name))


def _slurm_launcher_class():
    import copy

    from hydra_plugins.hydra_submitit_launcher import submitit_launcher

    class SlurmLauncher(submitit_launcher.SlurmLauncher):
        """hydra-submitit-launcher's Slurm launcher (one job array per sweep) that knows which runs need a job.

        Before submitting, each job's run directory is looked at: a finished run (completed, diverged) is not
        submitted again — a relaunched sweep would otherwise spend a queue slot and a Python start-up per finished
        run only for the Trainer to skip it; a run whose Slurm job from an earlier launch is still queued or running
        (the launcher was killed, its jobs were not) is not submitted twice — two jobs would write one run
        directory — but waited for like the new ones. The rest is submitted as one array, and each job's id is
        written to RUN/slurm.json. `launch` is the plugin's (v1.2) with these steps added: the plugin submits and
        waits in one method, so it can't be extended in between.
        """

        def launch(self, job_overrides, initial_job_idx):
            from hydra.core.singleton import Singleton
            from hydra.core.utils import filter_overrides
            from submitit.slurm.slurm import SlurmJob

            from .tracking import read_summary

            assert self.config is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            returns: list = [None] * len(job_overrides)
            waiting, submit, finished, queue = [], [], 0, {}
            for pos, overrides in enumerate(job_overrides):
                idx = initial_job_idx + pos
                run_dir = self._run_dir(overrides, idx)
                summary = read_summary(run_dir) if run_dir is not None else None
                if summary and summary.get("status") in FINISHED:
                    print(f"sfbench: {run_dir} already finished ({summary['status']}); not submitted again",
                          file=sys.stderr)
                    returns[pos] = self._finished(overrides, summary)
                    finished += 1
                    continue
                live = _live_slurm_job(run_dir, queue)
                if live is not None:
                    print(f"sfbench: {run_dir} is still {live['state'].lower()} as Slurm job {live['job_id']} "
                          f"(an earlier launch); waiting for it instead of submitting it again", file=sys.stderr)
                    waiting.append((pos, SlurmJob(folder=live["folder"], job_id=live["job_id"], tasks=[0])))
                    continue
                submit.append((pos, idx, list(overrides), run_dir))
            print(f"sfbench: sweep {sweep_dir}: {len(job_overrides)} runs — {finished} finished, "
                  f"{len(waiting)} still in Slurm from an earlier launch, {len(submit)} to submit", file=sys.stderr)
            if submit:
                executor = self._executor()
                folder = os.path.abspath(str(self.params["submitit_folder"]))
                for _, idx, overrides, _ in submit:
                    submitit_launcher.log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                job_params = [(overrides, "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
                              for _, idx, overrides, _ in submit]
                # the jobs get the plugin's class (same state): importable there, unlike this registered one
                in_job = copy.copy(self)
                in_job.__class__ = submitit_launcher.SlurmLauncher
                jobs = executor.map_array(in_job, *zip(*job_params))
                for (pos, _, _, run_dir), job in zip(submit, jobs):
                    if run_dir is not None:
                        _write_slurm_record(run_dir, job.job_id, folder)
                    waiting.append((pos, job))
            watcher = _job_state_watcher()
            for pos, job in sorted(waiting, key=lambda item: item[0]):
                if watcher is not None:
                    job.watcher = watcher
                returns[pos] = job.results()[0]
            return returns

        def _executor(self):
            """The plugin's executor set-up (BaseSubmititLauncher.launch), unchanged."""
            import submitit
            from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
            from omegaconf import OmegaConf

            init_keys = {"max_num_timeout", "submitit_folder"}
            executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                             **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
                                             if "max_num_timeout" in self.params else {})
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v
                                          for k, v in self.params.items() if k not in init_keys})
            return executor

        def _run_dir(self, overrides, idx: int) -> Path | None:
            """The directory the job will train in: hydra.sweep.dir / hydra.sweep.subdir of its own config, resolved
            as Hydra's run_job does. None when it can't be known here (a subdir using ${hydra:job.id}, …)."""
            from hydra.core.hydra_config import HydraConfig
            from omegaconf import OmegaConf, open_dict

            try:
                config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(config.hydra.job):
                    config.hydra.job.num = idx
                previous = HydraConfig.instance().cfg
                HydraConfig.instance().set_config(config)
                try:
                    return Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
                        OmegaConf.select(config, "hydra.sweep.subdir"))
                finally:
                    HydraConfig.instance().cfg = previous
            except Exception:       # noqa: BLE001 — not knowing only means the run is submitted
                return None

        def _finished(self, overrides, summary: dict):
            from hydra.core.utils import JobReturn, JobStatus

            return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, working_dir=os.getcwd(),
                             task_name=str(self.config.hydra.job.name), _return_value=_sweep_value(summary))

    SlurmLauncher.__module__, SlurmLauncher.__qualname__ = SLURM_LAUNCHER.rsplit(".", 1)
    return SlurmLauncher


def _job_state_watcher():
    """None where Slurm keeps accounting (submitit asks sacct how its jobs are doing). On a cluster without it —
    slurm/local-cluster.sh runs no slurmdbd — sacct fails on every call and submitit, not knowing a job's state,
    would wait forever for a job that died without writing its result; this watcher asks squeue instead (which
    remembers finished jobs for MinJobAge seconds), so such a job ends the sweep with submitit's usual error."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    if not re.search(r"^AccountingStorageType\s*=\s*accounting_storage/none", config, re.MULTILINE):
        return None

    class SqueueWatcher(SlurmInfoWatcher):
        def _make_command(self):
            ids = {x.split("_")[0] for x in self._registered - self._finished}
            return ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T|%N", "-j", ",".join(sorted(ids))] if ids else None

        def read_info(self, string):
            text = string.decode() if isinstance(string, bytes) else string
            info = {}
            for line in text.splitlines():
                job_id, state, nodes = (line.split("|") + ["", ""])[:3]
                info[job_id] = {"JobID": job_id, "State": state, "NodeList": nodes}
            for job_id in self._registered - self._finished - set(info):    # gone from squeue: long finished
                info[job_id] = {"JobID": job_id, "State": "COMPLETED", "NodeList": ""}
            return info

    return SqueueWatcher(delay_s=60)


def _write_slurm_record(run_dir: Path, job_id: str, folder: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"job_id": str(job_id), "folder": folder, "workdir": os.getcwd(), "submitted": time.time()}
    tmp = run_dir / f".{SLURM_RECORD}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, run_dir / SLURM_RECORD)


def _live_slurm_job(run_dir: Path | None, queue: dict) -> dict | None:
    """The Slurm job recorded in RUN/slurm.json if it is still queued or running (in `queue`, from the same working
    directory), with its state; else None."""
    if run_dir is None or not (run_dir / SLURM_RECORD).exists():
        return None
    try:
        record = json.loads((run_dir / SLURM_RECORD).read_text())
        if "user" not in queue:
            queue.update(user=_slurm_queue())
        state, workdir = queue["user"][record["job_id"]]
    except (OSError, ValueError, KeyError):
        return None
    if os.path.realpath(workdir) != os.path.realpath(record.get("workdir", "")):
        return None
    return {**record, "state": state}


def _slurm_queue() -> dict[str, tuple[str, str]]:
    """This user's queued and running jobs, one squeue call: {job id (array tasks as A_i): (state, working dir)}."""
    import getpass

    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%Z"], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        out, why = None, str(err)
    if out is None or out.returncode != 0:
        # Failing open would resubmit runs whose jobs are alive: two jobs writing one run directory. Stop instead.
        why = why if out is None else (out.stderr.strip() or f"exit status {out.returncode}")
        print(f"sfbench: error: squeue failed ({why}); can't tell which runs of this sweep still have a job queued or "
              f"running, so nothing was submitted. Try again when squeue answers.", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    jobs = {}
    for line in out.stdout.splitlines():
        job_id, state, workdir = (line.split("|", 2) + ["", ""])[:3]
        jobs[job_id] = (state, workdir)
    return jobs

