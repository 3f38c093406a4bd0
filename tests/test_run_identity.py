"""A run's identity can't be silently lost, and sfbench writes only into its own directories: a missing, emptied or cut-short config.yaml never lets another configuration resume into the run; a
checkpoint knows the run it belongs to; a directory of the user's files is refused untouched; a moved cache resumes.

Each refusal: exit 2, one line naming the file and the remedy, no traceback, every byte and mtime in the directory
as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY, run_cli
from sfbench.tracking import read_summary
from sfbench.tracking.run_record import RunRecord
from test_faults import LOGREG, assert_equal_runs, hold_lock, preempted_run, snapshot


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


# -- a run directory that goes away or can't be written ------------------------------------------------------------

def _at_step(monkeypatch, step: int, action) -> None:
    original = RunRecord.log

    def log(self, metrics):
        original(self, metrics)
        if metrics["step"] == step:
            action(self.dir)
    monkeypatch.setattr(RunRecord, "log", log)


def _stops_with_one_line(args, capsys, *expected: str) -> str:
    capsys.readouterr()
    assert run_cli(args) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("sfbench: error: ")
    for text in expected:
        assert text in last, err
    return last


def test_a_deleted_run_directory_stops_the_run_at_its_next_write(in_run_env, monkeypatch, capsys):
    """The directory removed mid-run: the run stops at the next metrics line (exit 1, one line naming it) and never
    makes the directory again; the same command then trains the run anew, equal to an uninterrupted one."""
    args = [*LOGREG, "trainer.steps=40"]
    assert run_cli([*args, "hydra.run.dir=full"]) == 0
    with monkeypatch.context() as m:
        _at_step(m, 25, shutil.rmtree)
        _stops_with_one_line([*args, "hydra.run.dir=gone"], capsys, str(in_run_env / "gone"), "was deleted")
    assert not (in_run_env / "gone").exists()
    assert run_cli([*args, "hydra.run.dir=gone"]) == 0
    assert_equal_runs(in_run_env / "gone", in_run_env / "full")


def test_a_replaced_run_directory_is_never_written_by_the_old_run(in_run_env, monkeypatch, capsys):
    """Deleted and made again by someone else, who now holds its lock: the old run stops at its next write (exit 1)
    and the new directory keeps exactly what its owner put there — one writer."""
    held = []

    def replace(run_dir: Path) -> None:
        shutil.rmtree(run_dir)
        held.append(hold_lock(run_dir))
        (run_dir / "notes.txt").write_text("the new owner's\n")

    with monkeypatch.context() as m:
        _at_step(m, 25, replace)
        try:
            run_dir = in_run_env / "swapped"
            _stops_with_one_line([*LOGREG, "trainer.steps=40", "hydra.run.dir=swapped"], capsys, str(run_dir),
                                 "was replaced")
            assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "notes.txt"]
            assert (run_dir / "notes.txt").read_text() == "the new owner's\n"
        finally:
            for proc in held:
                proc.kill()
                proc.wait()


def test_a_deleted_metrics_file_stops_the_run(in_run_env, monkeypatch, capsys):
    with monkeypatch.context() as m:
        _at_step(m, 25, lambda run_dir: (run_dir / "metrics.jsonl").unlink())
        _stops_with_one_line([*LOGREG, "trainer.steps=40", "hydra.run.dir=r"], capsys, "lost its metrics.jsonl")
    assert read_summary(in_run_env / "r")["status"] == "failed"


def _mount_allowed(path: Path) -> bool:
    return os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(path), str(path)],
                                                capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="a read-only bind mount needs root")
def test_a_run_directory_turned_read_only_stops_at_the_checkpoint_and_resumes(in_run_env, monkeypatch, capsys):
    """The run directory remounted read-only mid-run: the next write that opens a file (the checkpoint at step 30)
    fails — exit 1, one line naming the path and saying the file system is read-only; nothing half-written stays.
    The same command on the read-only directory is one line too (exit 1 or 2), and once it is writable again the
    run resumes to the uninterrupted run."""
    args = [*LOGREG, "trainer.steps=40"]
    assert run_cli([*args, "hydra.run.dir=full"]) == 0
    run_dir = in_run_env / "ro"
    mounted = []

    def read_only(path: Path) -> None:
        if not _mount_allowed(path):
            pytest.skip("mount --bind is not allowed here")
        mounted.append(path)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)

    try:
        with monkeypatch.context() as m:
            _at_step(m, 25, read_only)
            _stops_with_one_line([*args, "hydra.run.dir=ro"], capsys, f"{run_dir}/checkpoints/last.pt",
                                 "Read-only file system", "remount it writable", "resumes from step 20")
        capsys.readouterr()
        code = run_cli([*args, "hydra.run.dir=ro"])
        err = capsys.readouterr().err.strip()
        assert code in (1, 2) and "Traceback" not in err and len(err.splitlines()) == 1, err
        assert str(run_dir) in err and "read-only" in err.lower(), err
    finally:
        for path in mounted:
            subprocess.run(["umount", str(path)], check=True)
    assert not [p for p in run_dir.rglob(".*") if p.name != ".lock"]
    assert run_cli([*args, "hydra.run.dir=ro"]) == 0
    assert_equal_runs(run_dir, in_run_env / "full")
