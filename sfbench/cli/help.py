"""`python -m sfbench --help` (and `--hydra-help`) without the slow part of Hydra's help.

Hydra's `Hydra.get_help` fills every placeholder of the help template up front: `$HYDRA_CONFIG_GROUPS` and
`$APP_CONFIG_GROUPS` each walk the whole config-group tree — some 40 groups, almost all Hydra's own `hydra/*` — and
each `get_group_options` call deep-copies the config repository, so on 2 CPU cores `--help` spent about 70% of its
time listing groups, twice, most of them for a section sfbench's template doesn't show. `get_help` below makes the
same text from the same calls: it fills only the placeholders the template uses, walks only the part of the tree a
placeholder lists, and asks for each group's options once. tests/test_cli_help.py checks the text against Hydra's own
`get_help` for both templates.
"""

from __future__ import annotations

import string
from functools import lru_cache


def _is_hydra_group(name: str) -> bool:
    return name == "hydra" or name.startswith("hydra/")


def _config_groups(options, hydra: bool) -> str:
    """Hydra's `format_config_groups` (compact) for the Hydra groups or for the application's."""
    from hydra.core.object_type import ObjectType

    def walk(parent: str) -> list[str]:
        found = []
        for group in options(parent, ObjectType.GROUP):
            name = f"{parent}/{group}" if parent else group
            if _is_hydra_group(name) != hydra:      # the whole subtree falls on the same side
                continue
            if options(name, ObjectType.CONFIG):
                found.append(name)
            if options(name, ObjectType.GROUP):
                found.extend(walk(name))
        return found

    return "".join(f"{group}: {', '.join(sorted(options(group, ObjectType.CONFIG)))}\n"
                   for group in sorted(walk("")))


def get_help(self, help_cfg, cfg, args_parser, resolve: bool) -> str:
    """Drop-in for `hydra._internal.hydra.Hydra.get_help`."""
    from omegaconf import OmegaConf

    template = string.Template(help_cfg.template)
    used = {m.group("named") or m.group("braced") for m in template.pattern.finditer(template.template)}
    options = lru_cache(maxsize=None)(lambda group, kind: tuple(self.config_loader.get_group_options(group, kind)))
    fill = {"FLAGS_HELP": lambda: self.format_args_help(args_parser),
            "HYDRA_CONFIG_GROUPS": lambda: _config_groups(options, hydra=True),
            "APP_CONFIG_GROUPS": lambda: _config_groups(options, hydra=False),
            "CONFIG": lambda: OmegaConf.to_yaml(cfg, resolve=resolve)}
    return template.substitute({key: make() for key, make in fill.items() if key in used})


def install() -> None:
    """Use `get_help` for this process's help output (called by `main` only when help is asked for)."""
    from hydra._internal.hydra import Hydra

    Hydra.get_help = get_help
