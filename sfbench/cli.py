"""`python -m sfbench [overrides]`: compose (Hydra) → validate → run → return the sweep metric.

Bad input stops before any training with one message naming the key, the value and what is allowed, exit status 2,
and no run directory left behind (DESIGN.md "Errors"): unknown group options are caught before Hydra starts, other
composition errors (unknown keys, bad override syntax) are Hydra's message with our exit status, and values are
checked here by building every part (task, optimizer, schedule, logger) on dummy inputs before anything is loaded.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"
GROUPS = ("task", "opt", "sched", "logger", "experiment")
REQUIRED_GROUPS = ("task", "opt", "sched", "logger")
TOP_LEVEL = ("task", "opt", "sched", "logger", "seed", "group", "trainer", "paths")
EXIT_BAD_INPUT = 2
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
        # The process was asked to stop: don't start the sweep's next job (local launcher); exit cleanly.
        sys.exit(0)
    final = summary.get("final", {}) if summary else {}
    value = final.get("eval/loss", final.get("train/loss"))
    return float(value) if value is not None else None


def _check_same_config(run_dir: Path, resolved: dict) -> None:
    from .tracking.run_record import flatten, read_config

    old = read_config(run_dir)
    if not old or not (run_dir / "summary.json").exists():
        return
    volatile = ("trainer.device", "trainer.log_every_s", "logger.", "choices.logger")
    a = {k: v for k, v in flatten(old).items() if not k.startswith(volatile)}
    b = {k: v for k, v in flatten(resolved).items() if not k.startswith(volatile)}
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
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
    from omegaconf import OmegaConf

    _task_started = False
    argv = sys.argv[1:] if argv is None else argv
    _check_group_choices(argv)
    if not OmegaConf.has_resolver("sfbench_run_name"):
        OmegaConf.register_new_resolver("sfbench_run_name", _run_name)
    if "-m" in argv or "--multirun" in argv:
        _validate_sweep([a for a in argv if not a.startswith("-")])
    app = hydra.main(version_base=None, config_path="configs", config_name="config")(run)
    sys.argv = [sys.argv[0]] + argv
    try:
        app()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:   # Hydra's own composition errors
            sys.exit(EXIT_BAD_INPUT)
        raise
