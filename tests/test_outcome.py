"""The end of a run and of a sweep says what happened (sfbench/cli/outcome.py): the final metric at x, the status,
the run directory and the report command; a multirun ends with one table across its runs."""

from __future__ import annotations

import re

from conftest import run_cli
from sfbench.cli.outcome import _short_names, describe_run


def test_a_run_ends_with_its_result(in_run_env, capsys):
    assert run_cli(["task=logreg", "opt=sf_sgd", "logger=none", "trainer.steps=40"]) == 0
    out = capsys.readouterr().out.splitlines()
    [run] = [p.parent for p in (in_run_env / "runs").rglob("summary.json")]
    rel = str(run.relative_to(in_run_env))
    head = next(line for line in out if line.startswith("sfbench: completed"))
    assert re.search(r"completed 40/40 steps in [\d.]+ s — final eval/subopt [\d.e+-]+ at x", head), head
    # the fit's series: eval/subopt with ≥ 8 evaluations, else the smoothed training loss — the auto cadence thins
    # evaluations when they are slow against the steps (a loaded machine), so either may be the one reported
    assert "bound [C1]" in head and re.search(r"fitted on (eval/subopt|train/loss)", head), head
    assert f"sfbench: run directory: {rel}" in out
    assert f"sfbench: report: python -m sfbench.report {rel}" in out


def test_a_sweep_ends_with_a_table(in_run_env, capsys):
    args = ["-m", "task=quadratic", "opt=sf_sgd,adamw", "opt.lr=0.01,0.1", "logger=none", "trainer.steps=20",
            "group=t"]
    assert run_cli(args) == 0
    out = capsys.readouterr().out.splitlines()
    start = next(i for i, line in enumerate(out) if line.startswith("sfbench: sweep multirun/t: 4 runs"))
    assert "4 completed" in out[start]
    header = out[start + 1].split()
    assert header == ["run", "method", "lr", "status", "steps", "eval/subopt", "bound"]
    rows = [line.split() for line in out[start + 3:start + 7]]
    assert sorted((r[1], r[2]) for r in rows) == [("adamw", "0.01"), ("adamw", "0.1"), ("sf_sgd", "0.01"),
                                                  ("sf_sgd", "0.1")]
    assert all(r[3] == "completed" and r[4] == "20/20" for r in rows)
    # the run column keeps only what differs between the runs
    assert sorted(r[0] for r in rows) == ["opt.lr=0.01,opt=adamw", "opt.lr=0.01,opt=sf_sgd", "opt.lr=0.1,opt=adamw",
                                          "opt.lr=0.1,opt=sf_sgd"]
    assert out[start + 7] == "sfbench: report: python -m sfbench.report multirun/t"


def test_diverged_and_preempted_runs(tmp_path):
    diverged = describe_run({"status": "diverged", "steps_done": 24, "total_steps": 100,
                             "final": {"train/loss": float("inf")}}, tmp_path / "r")
    assert "diverged 24/100 steps — the loss diverged (inf at step 25)" in diverged[0]
    assert diverged[-1].startswith("sfbench: report: python -m sfbench.report ")
    preempted = describe_run({"status": "preempted", "steps_done": 50, "total_steps": 100,
                              "final": {"eval/loss": 1.5}, "evaluation": {"at": "x"}}, tmp_path / "r")
    assert "preempted 50/100 steps — final eval/loss 1.5 at x" in preempted[0]
    assert "resume" in preempted[-1]


def test_short_names():
    assert _short_names(["a=1,b=2,c=[1,2]", "a=1,b=3,c=[1,2]"]) == ["b=2", "b=3"]
    assert _short_names(["only=1"]) == ["only=1"]


def test_sweep_table_marks_caps(tmp_path):
    """SF-Polyak's opt.lr caps an adaptive step ([B1], lr_rule=polyak): the sweep table says so; a base lr is bare."""
    from sfbench.cli.outcome import describe_sweep
    from sfbench.tracking import RunRecord

    for choice, rule in (("sf_polyak", "polyak"), ("sf_sgd", None)):
        rec = RunRecord(tmp_path / f"opt={choice}")
        rec.write_config({"opt": {"_target_": "sfbench.optim.SFSGD", "lr": 10.0, "lr_rule": rule},
                          "choices": {"opt": choice}})
        rec.write_summary("completed", steps_done=5, total_steps=5, final={"eval/subopt": 0.5})
    lines = describe_sweep(tmp_path)
    rows = {line.split()[1]: line for line in lines[3:5]}
    assert "10 (cap)" in rows["sf_polyak"] and "(cap)" not in rows["sf_sgd"] and " 10 " in rows["sf_sgd"]
