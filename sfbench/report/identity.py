"""What ran: a task's and a method's identity, read from the run configs — never from a class name.

- A **task** is its config choice (`choices.task`: `logreg`, `distill`) plus the `task.*` settings that differ
  between runs of that choice (seeds aside): `logreg` or `logreg · batch_size=16`.
- A **method** is the optimizer's config choice (`choices.opt`: `sf_schedulet`, not its class `SFAdamW`) plus the
  settings that differ between the runs of that choice on one task, other than the learning rate and the seed: the
  schedule when several were run (`sf_adamw · sched=wsd`), then `sched.*` keys among runs of one schedule, `opt.*`
  and any other (`trainer.*`) keys. Two choices are never one method, even when they share a class and every swept
  value.

Records without `choices` (older sfbench) fall back to the class's short name and `sched.name`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

#: config keys that don't make two runs different (besides seeds)
NOT_SETTINGS = ("group", "trainer.device", "trainer.log_every_s")
NOT_SETTING_PREFIXES = ("logger.", "paths.", "hydra.", "choices.")
#: the swept step-size key; methods are compared along it, it is not part of their identity
LR_KEY = "opt.lr"
_MISSING = "<unset>"


def short(target: Any) -> str:
    return str(target).rsplit(".", 1)[-1] if target else "?"


def is_seed_key(key: str) -> bool:
    return key == "seed" or key.endswith(".seed")


def is_setting(key: str) -> bool:
    return not is_seed_key(key) and key not in NOT_SETTINGS and not key.startswith(NOT_SETTING_PREFIXES)


def choice(config: dict, group: str) -> str:
    """The config-group option a run used (`choices.<group>`), else what the record says without it."""
    value = config.get(f"choices.{group}")
    if value not in (None, "", "null"):
        return str(value)
    if group == "sched":
        return str(config.get("sched.name") or "none")
    return short(config.get(f"{group}._target_"))


def lr_is_cap(config: dict) -> bool:
    """True when opt.lr is not a base step size but a cap on an adaptive one (SF-Polyak [B1]: lr_rule=polyak)."""
    rule = config.get("opt.lr_rule")
    return rule not in (None, "", "schedule")


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_value(v) for v in value) + "]"
    return str(value)


def _varying(configs: list[dict], keep) -> list[str]:
    keys = sorted({k for c in configs for k in c if keep(k)})
    return [k for k in keys if len({repr(c.get(k, _MISSING)) for c in configs}) > 1]


def _names(keys: Iterable[str]) -> dict[str, str]:
    """Short names for keys (the last component: `choices.sched` → `sched`), the full key where two would share
    one."""
    keys = list(keys)
    tails = defaultdict(list)
    for k in keys:
        tails[k.rsplit(".", 1)[-1]].append(k)
    return {k: (k.rsplit(".", 1)[-1] if len(tails[k.rsplit(".", 1)[-1]]) == 1 else k) for k in keys}


def label(items: list[tuple[str, Any]]) -> str:
    """`choice · key=value, …` from identity items (the first is the config choice itself)."""
    (_, base), rest = items[0], items[1:]
    if not rest:
        return str(base)
    names = _names(k for k, _ in rest)
    return f"{base} · " + ", ".join(f"{names[k]}={fmt_value(v)}" for k, v in rest)


def task_items(configs: list[dict]) -> list[list[tuple[str, Any]]]:
    """Per config: ("choices.task", its choice), then the `task.*` settings that vary within that choice."""
    by_choice: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(configs):
        by_choice[choice(c, "task")].append(i)
    out: list[list[tuple[str, Any]]] = [[] for _ in configs]
    for name, idx in by_choice.items():
        keys = _varying([configs[i] for i in idx], lambda k: k.startswith("task.") and is_setting(k))
        for i in idx:
            out[i] = [("choices.task", name)] + [(k, configs[i].get(k, _MISSING)) for k in keys]
    return out


def method_items(configs: list[dict], tasks: list[str] | None = None) -> list[list[tuple[str, Any]]]:
    """Per config: ("choices.opt", its choice), then the settings that vary among that choice's runs of one task,
    other than opt.lr and seeds: ("choices.sched", …) when several schedules ran, then sched.* keys among runs of
    one schedule, opt.* keys, any other keys (trainer.*)."""
    tasks = tasks if tasks is not None else task_ids(configs)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, c in enumerate(configs):
        groups[(tasks[i], choice(c, "opt"))].append(i)
    out: list[list[tuple[str, Any]]] = [[] for _ in configs]
    for (_, name), idx in groups.items():
        members = [configs[i] for i in idx]
        by_sched: dict[str, list[dict]] = defaultdict(list)
        for c in members:
            by_sched[choice(c, "sched")].append(c)
        sched_keys = {s: _varying(cs, lambda k: k.startswith("sched.") and is_setting(k)) for s, cs in by_sched.items()}
        other = _varying(members, lambda k: is_setting(k) and k != LR_KEY and not k.startswith(("task.", "sched.")))
        ordered = [k for k in other if k.startswith("opt.")] + [k for k in other if not k.startswith("opt.")]
        for i in idx:
            c = configs[i]
            s = choice(c, "sched")
            items: list[tuple[str, Any]] = [("choices.opt", name)]
            items += [("choices.sched", s)] if len(by_sched) > 1 else []
            items += [(k, c.get(k, _MISSING)) for k in sched_keys[s] + ordered]
            out[i] = items
    return out


def task_ids(configs: list[dict]) -> list[str]:
    """One label per config: the task's choice plus its `task.*` settings that vary within that choice."""
    return [label(items) for items in task_items(configs)]


def method_ids(configs: list[dict], tasks: list[str] | None = None) -> list[str]:
    """One label per config: the optimizer's choice plus the settings that vary among that choice's runs of one
    task, other than opt.lr and seeds (see the module docstring for the order)."""
    return [label(items) for items in method_items(configs, tasks)]
