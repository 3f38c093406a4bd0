"""The distillation task's other paths (hub teacher, KL objective) and the trainer's BatchNorm handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import TINY
from sfbench.tasks.base import Task
from sfbench.tracking import read_summary
from sfbench.train import Trainer, TrainerConfig
from test_cli import metric_rows, only_run, run_cli

TEXT = ("the quick brown fox jumps over the lazy dog . a stitch in time saves nine . " * 60 +
        "all that glitters is not gold . brevity is the soul of wit . " * 60)


def make_hub_dir(root: Path) -> Path:
    """A tiny causal LM + tokenizer directory in the hub layout (what from_pretrained reads), made here."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([TEXT], trainers.WordLevelTrainer(special_tokens=["[UNK]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    out = root / "tiny-teacher"
    fast.save_pretrained(out)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_positions=64, n_embd=16, n_layer=1, n_head=2)) \
        .save_pretrained(out)
    return out


def test_hub_teacher_from_a_local_directory(in_run_env):
    hub = make_hub_dir(in_run_env)
    text = in_run_env / "corpus.txt"
    text.write_text(TEXT)
    args = [*TINY, "opt=sf_polyak", f"task.teacher.name_or_path={hub}", "task.data.source=file",
            f"task.data.path={text}", "task.data.block_size=16", "trainer.steps=6", "trainer.eval_every=0"]
    assert run_cli(args) == 0
    run_dir = only_run(in_run_env)
    summary = read_summary(run_dir)
    assert summary["status"] == "completed"
    assert summary["task"]["teacher"]["name_or_path"] == str(hub)
    assert summary["task"]["vocab_size"] == json.loads((hub / "config.json").read_text())["vocab_size"]
    rows = metric_rows(run_dir)
    assert all(r["train/lower_bound"] > 0 for r in rows)      # the teacher's CE on each batch


def test_missing_hub_teacher_is_a_clear_error(in_run_env, capsys):
    code = run_cli([*TINY, f"task.teacher.name_or_path={in_run_env / 'nope'}"])
    err = capsys.readouterr().err
    assert code == 2 and "task.teacher.name_or_path" in err and "Traceback" not in err
    assert not (in_run_env / "runs").exists() or not any((in_run_env / "runs").rglob("summary.json"))


def test_kl_objective_has_zero_lower_bound(in_run_env):
    assert run_cli([*TINY, "opt=sf_polyak", "task.objective=kl", "trainer.steps=6"]) == 0
    run_dir = only_run(in_run_env)
    rows = metric_rows(run_dir)
    assert all(r["train/lower_bound"] == 0.0 and r["train/loss"] >= 0 for r in rows)
    assert rows[-1]["eval/loss"] >= 0 and rows[-1]["eval/ce"] > 0


class _BNTask(Task):
    """Regression with a BatchNorm layer: lets the trainer's recompute-at-x be checked exactly."""

    name = "bn"

    def setup(self, device):
        self.device = device
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 3, generator=g) * 2 + 1
        self.y = self.x.sum(1, keepdim=True)

    def model(self):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))

    def batch(self, step):
        idx = torch.arange(16) + 16 * (step % 4)
        return self.x[idx], self.y[idx]

    def loss(self, model, batch):
        x, y = batch
        return ((model(x) - y) ** 2).mean(), None

    def evaluate(self, model):
        self.seen_running_mean = model[1].running_mean.clone()
        self.seen_first_layer = model[0].weight.detach().clone()
        return {"eval/loss": float(((model(self.x) - self.y) ** 2).mean())}


def test_batchnorm_statistics_are_recomputed_at_x(tmp_path):
    """Before evaluating at x, running statistics are the exact average over the recompute batches at x."""
    from sfbench.optim import SFAdamW

    task = _BNTask()
    cfg = TrainerConfig(steps=5, eval_every=0, ckpt_every=0, bn_recompute_batches=4, log_every_s=1e9)
    trainer = Trainer(cfg, task, lambda ps: SFAdamW(ps, lr=0.05), None, tmp_path, {"task": "bn"})
    assert trainer.run()["status"] == "completed"
    # Recompute by hand: the first layer at x (what evaluate saw), the 4 batches, cumulative mean of batch means.
    with torch.no_grad():
        w = task.seen_first_layer
        model = task.model()
        state = torch.load(tmp_path / "model.pt")      # the final model at x
        model.load_state_dict(state)
        torch.testing.assert_close(model[0].weight, w)
        means = [model[0](task.batch(i)[0]).mean(0) for i in range(4)]
        torch.testing.assert_close(task.seen_running_mean, torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)


def test_help_lists_the_groups():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sfbench", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    for word in ("task: cifar10, distill", "opt:", "sf_polyak", "sched:", "wsd", "logger:"):
        assert word in out.stdout, out.stdout


@pytest.mark.slow
def test_teacher_outputs_are_cached_across_runs(in_run_env, monkeypatch, tmp_path):
    """objective=ce queries the teacher only for ℓ*; a second run with the same data, seed and batch shape reads
    every ℓ* from the cache (no teacher forward in the loop) and logs exactly the same metrics."""
    monkeypatch.setenv("SFBENCH_CACHE", str(tmp_path / "fresh-cache"))
    args = [*TINY, "opt=sf_polyak", "trainer.steps=10", "trainer.eval_every=0"]
    assert run_cli([*args, "hydra.run.dir=first"]) == 0
    assert run_cli([*args, "opt.lr=5", "hydra.run.dir=second"]) == 0     # another optimizer setting, same batches
    first, second = (read_summary(in_run_env / d)["task"]["teacher_cache"] for d in ("first", "second"))
    assert first == {"hits": 0, "misses": 10} and second == {"hits": 10, "misses": 0}
    lb = lambda d: [r["train/lower_bound"] for r in metric_rows(in_run_env / d)]   # noqa: E731
    assert lb("first") == lb("second")
    assert run_cli([*args, "task.data.val_frac=0.1", "hydra.run.dir=split"]) == 0  # another split: other batches
    assert read_summary(in_run_env / "split")["task"]["teacher_cache"] == {"hits": 0, "misses": 10}
    assert run_cli([*args, "trainer.precision=bf16", "hydra.run.dir=bf16"]) == 0    # autocast: computed live
    assert read_summary(in_run_env / "bf16")["task"]["teacher_cache"] == {"hits": 0, "misses": 0}


def test_teacher_is_not_reused_across_different_splits(tmp_path):
    """A teacher trained on a larger training split has seen part of a smaller split's validation data."""
    from sfbench.tasks.distill import DistillTask

    common = dict(student={"n_layer": 1, "n_embd": 16, "n_head": 2},
                  teacher={"n_layer": 1, "n_embd": 16, "n_head": 2, "steps": 3, "lr": 0.003, "batch_size": 2},
                  cache_dir=str(tmp_path))
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    data = {"source": "file", "path": str(text), "tokenizer": "bytes", "block_size": 8, "batch_size": 2}
    keys = set()
    for val_frac in (0.05, 0.5):
        task = DistillTask(data=dict(data, val_frac=val_frac), **common)
        task.setup(torch.device("cpu"))
        keys.add(task.teacher_info["key"])
    assert len(keys) == 2


def test_tasks_built_without_a_cache_dir_follow_sfbench_cache(tmp_path, monkeypatch):
    """Tasks built in code (no config's `paths.cache_dir`) use the same rule as the config: `$SFBENCH_CACHE`, else
    `~/.cache/sfbench` (an empty value counts as unset); an explicit `cache_dir` wins."""
    from sfbench.tasks.distill import DistillTask
    from sfbench.tasks.gpt import GPTTask

    (tmp_path / "t.txt").write_text(TEXT)
    data = {"source": "file", "path": str(tmp_path / "t.txt"), "tokenizer": "bytes", "block_size": 8,
            "batch_size": 2, "val_frac": 0.1}
    small = {"n_layer": 1, "n_embd": 16, "n_head": 2}
    teacher = dict(small, steps=3, lr=0.003, batch_size=2)
    for make in (lambda **kw: GPTTask(data=data, model=small, **kw),
                 lambda **kw: DistillTask(data=data, student=small, teacher=teacher, **kw)):
        monkeypatch.setenv("SFBENCH_CACHE", str(tmp_path / "env-cache"))
        assert make().cache_dir == tmp_path / "env-cache"
        assert make(cache_dir=str(tmp_path / "explicit")).cache_dir == tmp_path / "explicit"
        for unset in ("", None):
            if unset is None:
                monkeypatch.delenv("SFBENCH_CACHE")
            else:
                monkeypatch.setenv("SFBENCH_CACHE", unset)
            assert make().cache_dir == Path("~/.cache/sfbench").expanduser()


@pytest.mark.parametrize("damage", [pytest.param("weights cut short", marks=pytest.mark.slow),
                                    pytest.param("info.json emptied", marks=pytest.mark.slow), "killed save left behind"])
def test_a_damaged_cached_teacher_is_trained_again(in_run_env, monkeypatch, capsys, damage):
    """The cached teacher damaged (a copy cut short, info.json lost) is found by its saved digests and trained
    again, to the same bytes; a save that was killed leaves a temporary folder that is cleared. Every later run is
    the same run."""
    monkeypatch.setenv("SFBENCH_CACHE", str(in_run_env / "cache"))
    args = ["task=distill", *TINY, "trainer.steps=4", "trainer.eval_every=0", "trainer.ckpt_every=0"]
    assert run_cli([*args, "hydra.run.dir=first"]) == 0
    [teacher] = [p for p in (in_run_env / "cache" / "teachers").iterdir() if p.is_dir()]
    saved = {p.name: p.read_bytes() for p in teacher.iterdir()}
    weights = next(p for p in teacher.iterdir() if p.suffix == ".safetensors")
    if damage == "weights cut short":
        weights.write_bytes(saved[weights.name][: len(saved[weights.name]) // 2])
    elif damage == "info.json emptied":
        (teacher / "info.json").write_text("")
    else:
        stale = teacher.with_name(f".{teacher.name}.sfbench-tmp4242")
        stale.mkdir()
        (stale / weights.name).write_bytes(b"half")
    capsys.readouterr()
    assert run_cli([*args, "hydra.run.dir=second"]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if damage == "killed save left behind":
        assert "reusing the teacher" in err and not stale.exists()
    else:
        assert f"the teacher cached at {teacher} is damaged" in err and "training it again" in err
    assert {p.name: p.read_bytes() for p in teacher.iterdir() if p.name != "info.json"} == \
        {k: v for k, v in saved.items() if k != "info.json"}
    assert metric_rows(in_run_env / "second") == metric_rows(in_run_env / "first")
    assert not [p for p in teacher.parent.iterdir() if "tmp" in p.name]
