"""Gradient accumulation (`trainer.grad_accum=N`): N micro-batches of size B take the same optimizer step
as one batch of N·B — the same mean gradient and, for SF-Polyak [B1], the loss and ℓ* of the whole batch, not the
last micro-batch's — and a run resumed at an optimizer-step boundary equals an uninterrupted one."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from pathlib import Path

from conftest import subprocess_env
from test_cli import interrupt_and_resume, metric_rows, run_cli

BASE = ["task=logreg", "task.batch_size=24", "logger=none", "trainer.steps=15", "trainer.eval_every=5",
        "trainer.ckpt_every=5"]


def _run(name: str, extra: list[str]):
    assert run_cli([*BASE, *extra, f"hydra.run.dir={name}"]) == 0
    return metric_rows(Path(name)), torch.load(f"{name}/model.pt")


@pytest.mark.parametrize("opt", ["sf_adamw", "sf_polyak", "adamw"])
def test_micro_batches_take_the_whole_batch_step(in_run_env, opt):
    """logreg is float64 end to end: N micro-batches must agree with one batch to 1e-12 (summation order only)."""
    whole_rows, whole = _run("whole", [f"opt={opt}"])
    split_rows, split = _run("split", [f"opt={opt}", "trainer.grad_accum=4"])
    assert len(whole_rows) == len(split_rows) == 15
    for a, b in zip(whole_rows, split_rows):
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-12, abs=1e-12)
        assert b["lr"] == pytest.approx(a["lr"], rel=1e-10, abs=1e-14)          # SF-Polyak: the same step size
        assert b["train/grad_norm_sq"] == pytest.approx(a["train/grad_norm_sq"], rel=1e-10, abs=1e-14)
    for key in whole:
        assert whole[key].dtype == torch.float64
        torch.testing.assert_close(split[key], whole[key], rtol=1e-12, atol=1e-12)


def test_polyak_sees_the_whole_batch_not_the_last_micro_batch(in_run_env):
    """Feeding the last micro-batch's loss instead of the whole batch's would change the step: our step matches the
    whole batch (as the authors' loop, which passes the mean of the micro-batch means); a run fed only the last
    quarter of each batch takes different steps."""
    whole_rows, _ = _run("whole", ["opt=sf_polyak"])
    split_rows, _ = _run("split", ["opt=sf_polyak", "trainer.grad_accum=4"])
    assert [r["lr"] for r in split_rows] == pytest.approx([r["lr"] for r in whole_rows], rel=1e-10)
    quarter_rows, _ = _run("quarter", ["opt=sf_polyak", "task.batch_size=6"])
    assert any(abs(a["lr"] - b["lr"]) > 1e-6 * abs(a["lr"]) for a, b in zip(whole_rows, quarter_rows))


@pytest.mark.slow
def test_resume_at_a_step_boundary_equals_an_uninterrupted_run(tmp_path, sfbench_env):
    """SIGTERM mid-run: the checkpoint is taken at an optimizer-step boundary (never between micro-batches), and the
    re-run's record equals an uninterrupted run's, line for line."""
    env = subprocess_env(sfbench_env)
    args = [*BASE, "opt=sf_polyak", "trainer.grad_accum=3", "trainer.steps=3000", "trainer.eval_every=1000",
            "trainer.ckpt_every=0"]
    run = interrupt_and_resume(args, tmp_path, env, lines=300, poll_s=0.02)
    assert run["cut_summary"]["status"] == "preempted", run["cut_out"]
    assert run["again_code"] == 0 and "resuming" in run["again_out"], run["again_out"]
    assert metric_rows(tmp_path / "cut") == metric_rows(tmp_path / "full")
    assert torch.equal(torch.load(tmp_path / "cut" / "model.pt")["w"], torch.load(tmp_path / "full" / "model.pt")["w"])


def test_batch_not_divisible_by_micro_batches_is_one_clear_line(in_run_env, capsys):
    assert run_cli([*BASE, "trainer.grad_accum=5"]) == 2
    err = capsys.readouterr().err
    assert "24 rows, which 5 micro-batches can't share equally" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "1.5", "-2"])
def test_bad_grad_accum_is_refused(in_run_env, capsys, value):
    assert run_cli([*BASE, f"trainer.grad_accum={value}"]) == 2
    assert "trainer.grad_accum" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_with_micro_batches_equal_one_process(tmp_path, sfbench_env):
    """Data parallel × accumulation: 2 ranks × 2 micro-batches of 6 = one process with the batch of 24."""
    env = subprocess_env(sfbench_env)
    common = [*BASE, "opt=sf_polyak"]
    one = tmp_path / "one"
    two = tmp_path / "two"
    for run_dir, prefix, extra in ((one, [sys.executable], []),
                                   (two, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                          "--nproc_per_node=2"], ["trainer.grad_accum=2"])):
        proc = subprocess.run([*prefix, "-m", "sfbench", *common, *extra, f"hydra.run.dir={run_dir}"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = torch.load(one / "model.pt"), torch.load(two / "model.pt")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-10, atol=1e-12)
    ra, rb = metric_rows(one), metric_rows(two)
    assert [r["lr"] for r in rb] == pytest.approx([r["lr"] for r in ra], rel=1e-9)
