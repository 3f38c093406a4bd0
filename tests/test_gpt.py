"""task=gpt: a small GPT on text, against a unigram model of the same data."""

from __future__ import annotations

import pytest

from sfbench.tracking import read_summary
from test_cli import metric_rows, only_run, run_cli

SMALL = ["task=gpt", "logger=none", "task.data.block_size=32", "task.data.batch_size=8", "task.eval_batches=4",
         "task.model.n_layer=1", "task.model.n_embd=48", "task.model.n_head=2", "trainer.bn_recompute_batches=0"]


def test_gpt_beats_a_unigram_model(in_run_env):
    assert run_cli([*SMALL, "opt=sf_adamw", "opt.lr=0.01", "trainer.steps=150", "trainer.eval_every=50"]) == 0
    run_dir = only_run(in_run_env)
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and 2.5 < summary["task"]["unigram_ce"] < 4.0
    evals = [r for r in metric_rows(run_dir) if "eval/loss" in r]
    assert evals[-1]["eval/loss"] < evals[-1]["eval/unigram_ce"] < evals[0]["eval/loss"] + 10
    assert evals[-1]["eval/ppl"] == pytest.approx(2.718281828 ** evals[-1]["eval/loss"], rel=1e-6)


def test_gpt_with_a_local_tokenizer_and_text_file(in_run_env):
    from test_distill import TEXT, make_hub_dir

    tok_dir = make_hub_dir(in_run_env)            # a tokenizer directory (and a model, unused here)
    text = in_run_env / "corpus.txt"
    text.write_text(TEXT)
    assert run_cli([*SMALL, "task.data.source=file", f"task.data.path={text}", f"task.data.tokenizer={tok_dir}",
                    "task.data.block_size=8", "trainer.steps=5", "trainer.eval_every=0"]) == 0
    summary = read_summary(only_run(in_run_env))
    assert summary["status"] == "completed" and summary["task"]["vocab_size"] < 100


def test_gpt_model_settings_are_checked(in_run_env, capsys):
    assert run_cli([*SMALL, "task.model.n_embd=50", "task.model.n_head=3"]) == 2
    assert "task.model.n_embd=50" in capsys.readouterr().err
