"""A run's identity can't be silently lost, and sfbench writes only into its own directories (issue 23, items 2, 5
and 9): a missing, emptied or cut-short config.yaml never lets another configuration resume into the run; a
checkpoint knows the run it belongs to; a directory of the user's files is refused untouched; a moved cache resumes.

Each refusal: exit 2, one line naming the file and the remedy, no traceback, every byte and mtime in the directory
as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from conftest import TINY, run_cli
from sfbench.tracking import read_summary
from test_faults import LOGREG, assert_equal_runs, preempted_run, snapshot


def refused(args: list[str], capsys, *expected: str) -> str:
    capsys.readouterr()
    assert run_cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for text in expected:
        assert text in err, err
    return err


def cut_short(path: Path, how: str) -> None:
    text = path.read_text()
    if how == "missing":
        path.unlink()
    elif how == "empty":
        path.write_text("")
    else:                                            # cut at a line end: still YAML, a shorter configuration
        lines = text.splitlines(keepends=True)
        path.write_text("".join(lines[: len(lines) // 3]))


@pytest.mark.parametrize("how", ["missing", "empty", "truncated"])
@pytest.mark.parametrize("other", [[], ["sched=cosine", "opt.momentum=0.5"], ["opt.lr=0.05"]])
def test_a_lost_config_never_lets_a_run_resume(in_run_env, monkeypatch, capsys, how, other):
    """The same command or another configuration after config.yaml was lost: refused, and nothing is touched."""
    args = [*LOGREG, "trainer.steps=40", "opt=sf_sgd"]
    cut = preempted_run(monkeypatch, args, 25)
    cut_short(cut / "config.yaml", how)
    before = snapshot(cut)
    what = {"missing": "missing", "empty": "empty", "truncated": "no longer matches"}[how]
    refused([*args, *other, "hydra.run.dir=cut"], capsys, str(cut / "config.yaml"), what, "hydra.run.dir")
    assert snapshot(cut) == before
    assert read_summary(cut)["status"] == "preempted"


def test_a_checkpoint_refuses_another_run_even_with_a_consistent_record(in_run_env, monkeypatch, capsys):
    """config.yaml rewritten for another configuration and summary.json (with its digest) gone: the checkpoint's own
    identity still refuses the resume."""
    args = [*LOGREG, "trainer.steps=40", "opt=sf_sgd"]
    cut = preempted_run(monkeypatch, args, 25)
    config = yaml.safe_load((cut / "config.yaml").read_text())
    config["opt"]["lr"] = 0.05
    (cut / "config.yaml").write_text(yaml.safe_dump(config))
    (cut / "summary.json").unlink()
    before = snapshot(cut)
    refused([*args, "opt.lr=0.05", "hydra.run.dir=cut"], capsys, "different configuration", "opt.lr")
    assert snapshot(cut) == before


@pytest.mark.parametrize("names", [[".model.pt.bak", ".summary.json.swp", ".bashrc.tmp-keep"], ["notes.txt"],
                                   ["metrics.jsonl"]])
def test_a_directory_of_the_users_files_is_refused_untouched(in_run_env, capsys, names):
    run_dir = in_run_env / "mine"
    run_dir.mkdir()
    for name in names:
        (run_dir / name).write_text(f"the user's {name}\n")
    before = snapshot(run_dir)
    err = refused([*LOGREG, "trainer.steps=5", "hydra.run.dir=mine"], capsys, str(run_dir))
    assert "no sfbench run record" in err or "config.yaml" in err
    assert snapshot(run_dir) == before
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(names)


def test_an_empty_directory_and_sfbench_leftovers_are_not_refused(in_run_env):
    (in_run_env / "empty").mkdir()
    assert run_cli([*LOGREG, "trainer.steps=5", "hydra.run.dir=empty"]) == 0
    (in_run_env / "left").mkdir()
    (in_run_env / "left" / ".summary.json.sfbench-tmp1a2b").write_bytes(b"")
    assert run_cli([*LOGREG, "trainer.steps=5", "hydra.run.dir=left"]) == 0
    assert read_summary(in_run_env / "left")["status"] == "completed"


def test_a_moved_cache_resumes_the_run(in_run_env, monkeypatch, sfbench_env):
    """The cache (its teacher, its stand-ins) moved elsewhere and SFBENCH_CACHE pointed there: the same command
    resumes, and the run equals the uninterrupted one — paths are not the run's identity."""
    first, moved = in_run_env / "cache-a", in_run_env / "cache-b"
    if Path(sfbench_env["SFBENCH_CACHE"]).is_dir():          # a teacher trained already: spare training it again
        shutil.copytree(sfbench_env["SFBENCH_CACHE"], first)
    monkeypatch.setenv("SFBENCH_CACHE", str(first))
    args = ["task=distill", *TINY, "opt=sf_adamw", "trainer.steps=16", "trainer.eval_every=4",
            "trainer.ckpt_every=4"]
    assert run_cli([*args, "hydra.run.dir=full"]) == 0
    cut = preempted_run(monkeypatch, args, 10)
    first.rename(moved)
    monkeypatch.setenv("SFBENCH_CACHE", str(moved))
    assert run_cli([*args, "hydra.run.dir=cut"]) == 0
    assert read_summary(cut)["status"] == "completed"
    assert_equal_runs(cut, in_run_env / "full")
