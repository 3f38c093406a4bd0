"""Checking a composed config before anything runs (DESIGN.md "Errors"): one message naming the key, the value and
what is allowed, exit status 2.

Unknown options of our config groups are caught before Hydra starts (`check_group_choices`); values are checked by
building every part (task, optimizer, schedule, logger) on dummy inputs (`validate`); every job of a multirun is
composed and validated before any of them trains (`validate_sweep`). A key that is no setting (`trainer.step=20`,
Hydra's "Key 'step' is not in struct") gets one line naming it and the closest settings (`composition_error`,
`did_you_mean`). The trainer's settings are a structured config (`sfbench.train.config.TrainerSettings`, registered
by `config_dir`): OmegaConf refuses a value of the wrong type while composing, and `type_error` makes that one line
naming the key, the value and the type; `validate` checks the ranges and choices.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Any

GROUPS = ("task", "opt", "sched", "logger", "experiment")
REQUIRED_GROUPS = ("task", "opt", "sched", "logger")
TOP_LEVEL = ("task", "opt", "sched", "logger", "seed", "group", "trainer", "paths", "smoke", "pep")
EXIT_BAD_INPUT = 2


def config_dir() -> Path:
    """The Hydra config groups: `sfbench/configs/` in an installed wheel (pyproject.toml force-includes the top-level
    `configs/` there), else `configs/` beside the package (a checkout, an editable install). The structured config
    config.yaml names (`trainer_settings`) is registered in Hydra's ConfigStore first, so that every composition —
    the app, `compose` in scripts and tests — finds it."""
    from hydra.core.config_store import ConfigStore

    from ..train.config import TrainerSettings

    ConfigStore.instance().store(name="trainer_settings", node=TrainerSettings)
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "configs", package.parent / "configs"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise RuntimeError(f"sfbench's configs are missing: neither {package / 'configs'} nor {package.parent / 'configs'} "
                       f"holds config.yaml; reinstall sfbench (pip install . or pip install -e . in the checkout)")


def did_you_mean(key: str, candidates) -> str:
    """'did you mean a or b? ' for the candidates closest to `key` (dotted names), or ''."""
    candidates = sorted({c for c in candidates if c != key and not key.startswith(c + ".")})   # not its parents
    matches = difflib.get_close_matches(key, candidates, n=3, cutoff=0.75)
    if not matches:     # compare the last part within the same parent (task.dat.x: task.data.x is far as a whole)
        parent, _, leaf = key.rpartition(".")
        siblings = {c.rpartition(".")[2]: c for c in candidates if c.rpartition(".")[0] == parent}
        matches = [siblings[m] for m in difflib.get_close_matches(leaf, list(siblings), n=3, cutoff=0.6)]
    return f"did you mean {' or '.join(matches)}? " if matches else ""


def setting_names(cfg) -> set[str]:
    """Every dotted key of a composed config, nested groups included (task, task.data, task.data.batch_size …)."""
    from omegaconf import DictConfig

    names: set[str] = set()
    def walk(node, prefix):
        for key in node.keys() if isinstance(node, DictConfig) else ():
            name = f"{prefix}{key}"
            names.add(name)
            try:
                child = node._get_node(key)
            except Exception:       # noqa: BLE001
                continue
            if isinstance(child, DictConfig):
                walk(child, name + ".")
    walk(cfg, "")
    return names


def validate(cfg) -> dict[str, Any]:
    """Check every value and build every part on dummy inputs; returns the builders. Raises ConfigError
    (an unknown setting with the closest known ones)."""
    from omegaconf.errors import OmegaConfBaseException

    from ..tasks.base import ConfigError

    try:
        return _validate(cfg)
    except OmegaConfBaseException as err:       # a value of the wrong type, found when an interpolation resolves
        line = type_error(err)
        if line is None:
            raise
        raise ConfigError(line) from None
    except ConfigError as err:
        text = str(err)
        match = re.match(r"^([\w.\[\]]+): unknown setting; ", text)
        if match and "did you mean" not in text:
            hint = did_you_mean(match.group(1), setting_names(cfg))
            if hint:
                raise ConfigError(text.replace("unknown setting; ", f"unknown setting; {hint}", 1)) from None
        raise


def _validate(cfg) -> dict[str, Any]:
    import torch
    from omegaconf import DictConfig, OmegaConf

    from ..tasks.base import ConfigError, check_number
    from ..train.cadence import check_eval_every
    from ..train.config import TrainerSettings
    from ..train.resume import GAP_POLICIES

    for key in cfg:
        if key not in TOP_LEVEL:
            raise ConfigError(f"{key}: unknown setting; the top level holds {', '.join(TOP_LEVEL)}")
    if cfg.get("pep") is not None:      # a PEP job (the sfn_pep preset): no training parts to build
        from ..pep.job import check_pep

        return {"pep": check_pep(cfg.pep)}
    for key in ("task", "opt", "sched", "logger", "trainer"):
        node = cfg.get(key)
        if node is None:
            raise ConfigError(f"{key} is missing; it is required (python -m sfbench --help lists the options)")
        if not isinstance(node, DictConfig):
            what = "a group of settings: set them as" if key == "trainer" else "a config group: choose an option with"
            also = "" if key == "trainer" else f" or {key}=<option>"
            raise ConfigError(f"{key}={node!r} is not allowed; {key} is {what} {key}.<name>=…{also}")
    known = set(TrainerSettings.__dataclass_fields__)
    for key in cfg.trainer:
        if key not in known:
            raise ConfigError(f"trainer.{key}: unknown setting; choose among {', '.join(sorted(known))}")
    check_number("seed", cfg.seed, 0, 2 ** 63 - 1, integer=True)
    if not isinstance(cfg.get("smoke", False), bool):
        raise ConfigError(f"smoke={cfg.smoke!r} is not allowed; use true (a preset's small offline form) or false")
    if cfg.get("smoke"):        # the small forms read local stand-ins for hub models and datasets: make them first
        from ..tasks import standins

        standins.ensure(cfg.paths.standins)
    t = cfg.trainer         # the types are TrainerSettings' (OmegaConf checked them); here: ranges and choices
    for key, lo in (("steps", 1), ("ckpt_every", 0), ("bn_recompute_batches", 0), ("log_every", 1), ("grad_accum", 1),
                    ("theory_d_every", 1)):
        check_number(f"trainer.{key}", t[key], lo, integer=True)
    try:
        check_eval_every(t.eval_every)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    check_number("trainer.eval_share", t.eval_share, 0, 1, lo_open=True)
    check_number("trainer.log_every_s", t.log_every_s, 0)
    check_number("trainer.dist_timeout", t.dist_timeout, 0, lo_open=True, hi_open=True)
    if t.precision not in ("fp32", "bf16"):
        raise ConfigError(f"trainer.precision={t.precision!r} is not allowed; choose one of 'fp32', 'bf16'")
    if t.on_gap not in GAP_POLICIES:
        raise ConfigError(f"trainer.on_gap={t.on_gap!r} is not allowed; choose one of "
                          f"{', '.join(map(repr, GAP_POLICIES))} (what a resume does when metrics.jsonl lacks steps)")
    if t.diverge_above is not None:
        check_number("trainer.diverge_above", t.diverge_above, 1, hi_open=True)
    if t.grad_clip is not None:
        check_number("trainer.grad_clip", t.grad_clip, 0, lo_open=True, hi_open=True)
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device):
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
    """hydra.utils.instantiate, with the constructor's own error (unwrapped from Hydra's) as a ConfigError naming the
    key."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from ..tasks.base import ConfigError

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


def check_group_choices(argv: list[str]) -> None:
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
        options = sorted(p.stem for p in (config_dir() / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice in ("null", "") and key in REQUIRED_GROUPS:
                print(f"sfbench: error: {key}={choice or 'null'} is not allowed; {key} is required: choose one of "
                      f"{', '.join(options)}", file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)
            if choice and choice != "null" and choice not in options:
                print(f"sfbench: error: {key}={choice!r} is not an option; choose one of {', '.join(options)}",
                      file=sys.stderr)
                sys.exit(EXIT_BAD_INPUT)


def validate_sweep(overrides: list[str]) -> None:
    """Compose and validate every job of a multirun before any of them trains (Hydra's basic sweeper expansion)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ..tasks.base import ConfigError

    own = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    try:
        parsed = OverridesParser.create().parse_overrides(own)
        jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    except Exception:       # let Hydra report its own syntax errors (exit 2 through main)
        return
    if len(jobs) <= 1:
        return
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        for job in jobs:
            try:
                validate(compose("config", overrides=list(job)))
                continue
            except ConfigError as err:
                message = str(err)
            except Exception as err:    # a value of the wrong type, else Hydra reports it when it launches the job
                message = type_error(err) or type_error(err.__cause__)
                if message is None:
                    return
            print(f"sfbench: error: in the sweep's job {' '.join(job)}: {message}\n(no job was started)",
                  file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)


# -- Hydra's composition errors ----------------------------------------------------------------------------------------


def composition_error(err: Exception, argv: list[str]) -> str:
    """One line for an error Hydra raised while composing the config: for a key that is no setting, the key and the
    closest settings (composed from the same group choices); for a value of the wrong type, `type_error`'s line;
    otherwise Hydra's own first line (and its cause's)."""
    line = type_error(err) or type_error(err.__cause__)
    if line:
        return line
    text = str(err)
    match = (re.search(r"Could not override '([^']+)'", text)
             or re.search(r"Could not delete from config\. '([^']+)' does not exist", text))
    if match:
        key = match.group(1)
        given = next((a for a in argv if "=" in a and a.split("=", 1)[0].lstrip("+~") == key), key)
        names = _names_for(argv)
        hint = did_you_mean(key, names | set(GROUPS)) if names is not None else ""
        parent = key.rpartition(".")[0]
        where = f"{key} is not a setting"
        if not hint and names is not None:
            siblings = sorted(n.rpartition(".")[2] for n in names if n.rpartition(".")[0] == parent)
            hint = f"{parent or 'the top level'} holds {', '.join(siblings[:20])}. " if siblings else ""
        return f"{given}: {where}; {hint}(python -m sfbench [choices] --cfg job shows every setting)"
    lines = [line for line in text.splitlines() if line.strip()][:1]
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        if lines and lines[0].startswith("Error in call to target"):   # a plugin's own message says it all
            lines = []
        lines.append(str(cause).strip().splitlines()[0])
    return " — ".join(lines) or type(err).__name__


def _names_for(argv: list[str]) -> set[str] | None:
    """The settings of the config composed from `argv`'s group choices only (None if that fails too)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()          # hydra.main's instance, left behind by the error
    def is_group(arg: str) -> bool:
        key = arg.split("=", 1)[0].lstrip("+~").removeprefix("override ")
        return key in GROUPS or key.startswith("hydra/")

    groups = [a.split(",")[0] for a in argv if "=" in a and not a.startswith("-") and is_group(a)]  # sweeps: 1st
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return setting_names(compose("config", overrides=groups, return_hydra_config=True))
    except Exception:       # noqa: BLE001 — no suggestions then, only the message
        return None


def type_error(err: BaseException | None) -> str | None:
    """One line for a value OmegaConf refused for a setting of a structured config (`trainer.steps=abc`): the key,
    the value and the type the setting takes; None for any other error."""
    import dataclasses
    import typing

    kind, key = getattr(err, "object_type", None), getattr(err, "key", None)
    hint = typing.get_type_hints(kind).get(key) if dataclasses.is_dataclass(kind) else None
    if hint is None or not getattr(err, "full_key", None):
        return None
    if "does not support deletion" in str(err):
        return f"~{err.full_key}: {err.full_key} can't be removed; set it with {err.full_key}=…"
    kinds = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
    allowed = " or ".join(kinds.get(t, getattr(t, "__name__", str(t))) for t in typing.get_args(hint) or (hint,))
    return f"{err.full_key}={'null' if err.value is None else repr(err.value)} is not allowed; use {allowed}"
