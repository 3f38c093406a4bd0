"""The evaluation cadence (sfbench/train/cadence.py): `trainer.eval_every=auto` aims at ~50 evaluations a run and
stretches the interval, on the grid of the starting one, when the task states that evaluating would cost more than
`trainer.eval_share` of the training — from the configuration, never from a measured time; numbers and 0 are taken
as they are."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from sfbench.train.cadence import AUTO_EVALS, EvalCadence, check_eval_every


def due_steps(c: EvalCadence) -> list[int]:
    return [s for s in range(1, c.steps + 1) if c.due(s)]


def test_fixed_and_end_only():
    assert due_steps(EvalCadence(200, 600)) == [200, 400, 600]
    assert due_steps(EvalCadence(0, 600)) == [600]
    assert due_steps(EvalCadence(7, 20)) == [7, 14, 20]
    assert due_steps(EvalCadence(200, 600, eval_cost=1e6)) == [200, 400, 600]   # a number is a number, whatever it costs


@pytest.mark.parametrize("steps", [600, 1000, 37, 10])
def test_auto_aims_at_50_evaluations_when_evaluating_is_cheap(steps):
    c = EvalCadence("auto", steps, eval_cost=0.0)
    assert c.base == max(1, round(steps / AUTO_EVALS)) == c.every
    n = len(due_steps(c))
    assert abs(n - min(AUTO_EVALS, steps)) <= 1 if steps >= AUTO_EVALS else n == steps


def test_auto_stretches_by_the_stated_cost():
    """600 steps aim at an interval of 12; an evaluation costing 6 training steps may take at most 0.1 of the training
    between evaluations, so the interval needs ≥ 60 steps: 60 = 5 × 12, on the grid of the starting interval."""
    c = EvalCadence("auto", 600, share=0.1, eval_cost=6.0)
    assert c.every == 60 and 6.0 <= 0.1 * c.every and 6.0 > 0.1 * (c.every - c.base)
    assert due_steps(c)[:3] == [60, 120, 180] and due_steps(c)[-1] == 600
    assert EvalCadence("auto", 600, share=0.1, eval_cost=1.2).every == 12      # exactly at the share: kept


def test_measured_time_is_reported_and_never_acted_on():
    c = EvalCadence("auto", 600, eval_cost=0.5)
    before = due_steps(c)
    for seconds in (0.001, 50.0, 0.002):
        c.measured(seconds)
    assert due_steps(c) == before and c.summary()["evaluations"] == 3 and c.summary()["eval_s"] == pytest.approx(50.003)


@pytest.mark.parametrize("bad", [-1, 2.5, "often", True, None])
def test_bad_values(bad):
    with pytest.raises(ValueError, match="trainer.eval_every"):
        check_eval_every(bad)
    assert check_eval_every("auto") == "auto" and check_eval_every(5) == 5



@pytest.mark.parametrize("bad", ["often", "-3", "1.5"])
def test_cli_refuses_a_bad_cadence(in_run_env, capsys, bad):
    assert run_cli(["task=quadratic", "logger=none", f"trainer.eval_every={bad}"]) == 2
    err = capsys.readouterr().err
    assert "trainer.eval_every" in err and "auto" in err and "Traceback" not in err
    assert not (in_run_env / "runs").exists() or not any((in_run_env / "runs").rglob("summary.json"))


def test_default_run_has_a_curve(in_run_env):
    """The default cadence on a testbed (evaluating is cheap): ~50 evaluations at multiples of the interval, and
    the run's own [C4] fit is made on eval/subopt."""
    assert run_cli(["task=quadratic", "logger=none", "trainer.steps=200"]) == 0
    [run] = [p.parent for p in (in_run_env / "runs").rglob("summary.json")]
    summary = json.loads((run / "summary.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in rows if "eval/subopt" in r]
    assert summary["evaluation"]["eval_every"] == "auto" and summary["evaluation"]["at"] == "x"
    assert len(evals) == summary["evaluation"]["evaluations"] >= 20
    assert all(s % 4 == 0 for s in evals[:-1]) and evals[-1] == 200
    assert summary["theory"]["fit"]["target"] == "eval/subopt" and summary["theory"]["fit"]["method"] == "huber"
    assert summary["theory"]["fit"]["C"] >= 0


@pytest.mark.slow
def test_data_parallel_ranks_evaluate_together(tmp_path, sfbench_env):
    """Two gloo processes with the auto cadence: every rank must reach each evaluation (they swap to x together);
    the interval comes from the configuration, the same on every rank, so the run completes on one grid."""
    import subprocess
    import sys

    from conftest import subprocess_env

    run_dir = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "sfbench", "task=logreg", "task.batch_size=32", "logger=none", "trainer.steps=100",
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True,
                          env=subprocess_env(sfbench_env), cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in rows if "eval/subopt" in r]
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert len(evals) == summary["evaluation"]["evaluations"] >= 10 and evals[-1] == 100
    assert all(s % 2 == 0 for s in evals)                     # on the grid of the starting interval (100 / 50)
    assert proc.stdout.count("sfbench: run directory:") == 1   # rank 0 alone says where the run is
