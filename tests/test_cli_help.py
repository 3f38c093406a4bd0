"""`--help` / `--hydra-help` through sfbench's `get_help` (sfbench/cli/help.py): the text Hydra's own makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra._internal.hydra import Hydra

import sfbench.cli.help as fast_help
from test_cli import run_cli

HYDRAS_OWN = Hydra.get_help
INSTALL = fast_help.install


def help_text(argv, capsys, monkeypatch, ours: bool) -> str:
    monkeypatch.setattr(Hydra, "get_help", HYDRAS_OWN)          # install() below, or not, on a clean class
    monkeypatch.setattr(fast_help, "install", INSTALL if ours else (lambda: None))
    capsys.readouterr()
    assert run_cli(argv) == 0
    out = capsys.readouterr().out
    assert (Hydra.get_help is fast_help.get_help) == ours
    return out


@pytest.mark.parametrize("argv", [["--help"], ["task=logreg", "opt=sf_polyak", "--help"], ["--hydra-help"]])
def test_help_text_is_hydras(argv, capsys, monkeypatch, in_run_env):
    theirs = help_text(argv, capsys, monkeypatch, ours=False)
    ours = help_text(argv, capsys, monkeypatch, ours=True)
    assert ours == theirs
    if argv[-1] == "--help":
        tasks = ", ".join(sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "task").glob("*.yaml")))
        assert f"task: {tasks}\n" in ours and "\nhydra/launcher: " not in ours   # every task config, listed
    else:
        assert "\nhydra/launcher: " in ours and "slurm" in ours      # Hydra's groups, the Slurm launcher among them


def test_template_placeholders_and_unknown_ones():
    """Only used placeholders are filled; an unknown one fails as in Hydra (string.Template's KeyError)."""
    from omegaconf import OmegaConf

    class Loader:
        calls = []

        def get_group_options(self, group, kind):
            self.calls.append((group, kind))
            raise AssertionError("no group listing was asked for")

    class Fake:
        config_loader = Loader()

        def format_args_help(self, parser):
            return "FLAGS"

    cfg = OmegaConf.create({"a": 1})
    text = fast_help.get_help(Fake(), OmegaConf.create({"template": "x $FLAGS_HELP $CONFIG$$"}), cfg, None, False)
    assert text == "x FLAGS a: 1\n$" and Loader.calls == []
    with pytest.raises(KeyError):
        fast_help.get_help(Fake(), OmegaConf.create({"template": "$NOPE"}), cfg, None, False)
