"""Same command, same run: evaluating never changes training, the evaluation cadence comes from the configuration
(never from measured time), and an interrupted run resumed with the default cadence is the uninterrupted one."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli, subprocess_env
from test_cli import interrupt_and_resume

GPT = ["task=gpt", "logger=none", "task.data.block_size=32", "task.data.batch_size=8", "task.eval_batches=2",
       "task.model.n_layer=1", "task.model.n_embd=32", "task.model.n_head=2", "task.model.dropout=0.1",
       "trainer.steps=14", "trainer.ckpt_every=0"]


def rows(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in lines]


def training(run_dir: Path) -> list[tuple]:
    return [(r["step"], r["train/loss"], r["lr"]) for r in rows(run_dir) if "train/loss" in r]


def same_model(a: Path, b: Path) -> bool:
    ma, mb = torch.load(a / "model.pt", weights_only=True), torch.load(b / "model.pt", weights_only=True)
    return ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.parametrize("args", [[*GPT, "opt=sf_adamw"], [*TINY, "opt=sf_polyak", "trainer.ckpt_every=0"]],
                         ids=["gpt-sf_adamw-dropout", "distill-sf_polyak"])
def test_evaluating_never_changes_training(in_run_env, args):
    """`train/loss`, `lr` and `model.pt` are bitwise the same whether the run evaluates at every step, every 7th or
    only at the end (the x ↔ y swap alone rounds the parameters; dropout draws from the generators)."""
    dirs = []
    for every in (1, 7, 0):
        run_dir = in_run_env / f"every{every}"
        assert run_cli([*args, f"trainer.eval_every={every}", f"hydra.run.dir={run_dir}"]) == 0
        dirs.append(run_dir)
    first = training(dirs[0])
    assert len(first) == int([a for a in args if a.startswith("trainer.steps=")][-1].split("=")[1])
    for other in dirs[1:]:
        assert training(other) == first
        assert same_model(dirs[0], other)
    assert sum("eval/loss" in r for r in rows(dirs[0])) > sum("eval/loss" in r for r in rows(dirs[1])) >= 2


def test_the_auto_cadence_ignores_how_long_evaluating_takes(in_run_env, monkeypatch):
    """The same command twice, the second with every evaluation 0.3 s slower (a busy machine): the same evaluation
    steps, the same record (but time), the same model."""
    args = [*GPT, "opt=sf_adamw", "trainer.steps=40", "task.eval_batches=8"]
    assert run_cli([*args, f"hydra.run.dir={in_run_env / 'idle'}"]) == 0
    from sfbench.tasks.gpt import GPTTask

    evaluate = GPTTask.evaluate
    monkeypatch.setattr(GPTTask, "evaluate", lambda self, model: (time.sleep(0.3), evaluate(self, model))[1])
    assert run_cli([*args, f"hydra.run.dir={in_run_env / 'busy'}"]) == 0
    assert rows(in_run_env / "busy") == rows(in_run_env / "idle")
    assert same_model(in_run_env / "idle", in_run_env / "busy")
    summary = json.loads((in_run_env / "busy" / "summary.json").read_text())
    # 40 steps aim at an interval of 1; 8 eval batches cost 8/3 steps, at most 10 % of the training between: 27
    assert summary["evaluation"]["interval"] == 27 and summary["evaluation"]["evaluations"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("args, lines", [([*GPT, "opt=sf_adamw", "trainer.steps=60", "task.eval_batches=1"], 20),
                                         ([*TINY, "opt=sf_polyak", "trainer.steps=60", "trainer.eval_every=auto",
                                           "trainer.ckpt_every=0"], 20)], ids=["gpt", "distill"])
def test_sigterm_and_resume_with_the_default_cadence_is_the_uninterrupted_run(tmp_path, sfbench_env, args, lines):
    run = interrupt_and_resume(args, tmp_path, subprocess_env(sfbench_env), lines=lines)
    assert run["cut_code"] == 0 and run["cut_summary"]["status"] == "preempted", run["cut_out"]
    assert run["again_code"] == 0, run["again_out"]
    assert rows(tmp_path / "cut") == rows(tmp_path / "full")
    assert same_model(tmp_path / "cut", tmp_path / "full")
