"""`python -m sfbench.theory COMMAND …` — command lines built on the theory module.

    python -m sfbench.theory predict task=logreg opt=sf_schedulet sched=wsd trainer.steps=2000 --grid 5

`sfbench.theory` is numpy/scipy only and imports no training or CLI code (DESIGN.md "Rooms"). A command that needs
more — `predict` composes a run's config and may run a short pilot through the trainer — lives in the app layer and
registers itself under the entry-point group `sfbench.theory.commands` (pyproject.toml); this module only finds the
registered commands and dispatches to them. Each entry point names a `(help, add_arguments, run)` triple.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

GROUP = "sfbench.theory.commands"
EXIT_BAD_INPUT = 2


def _commands() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def main(argv: list[str] | None = None) -> None:
    commands = _commands()
    ap = argparse.ArgumentParser(prog="python -m sfbench.theory", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    runners = {}
    for name, ep in sorted(commands.items()):
        help_line, add_arguments, runner = ep.load()
        add_arguments(sub.add_parser(name, help=help_line))
        runners[name] = runner
    args = ap.parse_args(argv)
    if args.command is None:
        if not commands:
            print(f"sfbench.theory: error: no commands are registered under the entry-point group {GROUP!r}; "
                  f"install sfbench (pip install -e . in the checkout) so its entry points exist", file=sys.stderr)
        else:
            ap.print_usage(sys.stderr)
            print(f"sfbench.theory: error: choose a command: {', '.join(sorted(commands))}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    runners[args.command](args)


if __name__ == "__main__":
    main()
