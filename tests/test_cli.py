"""`python -m sfbench`: bad input, the run directory contract, resume after SIGTERM, divergence, sweeps, W&B."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY, run_cli, subprocess_env
from sfbench.tracking import load_runs, read_summary


def only_run(root: Path) -> Path:
    runs = [p.parent for p in (root / "runs").rglob("summary.json")]
    assert len(runs) == 1, runs
    return runs[0]


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


# -- bad input: exit 2, one message naming the key, no traceback, no run record -----------------------------------

BAD = [
    (["opt.lr=-1"], "opt.lr=-1"),
    (["trainer.steps=0"], "trainer.steps=0"),
    (["trainer.steps=abc"], "trainer.steps='abc'"),
    (["opt=sf_adamw", "opt.betas=[1.5,0.9]"], "opt.betas=[1.5, 0.9]"),
    (["opt=adamw", "opt.betas=[0.9,1.0]"], "opt.betas"),
    (["task.data.batch_size=0"], "task.data.batch_size=0"),
    (["task.data.source=file", "task.data.path=/no/such/file.txt"], "task.data.path='/no/such/file.txt'"),
    (["task=cifar"], "task='cifar' is not an option; choose one of cifar10, distill, gpt"),
    (["opt=sf_adam"], "choose one of adamw, iam, iam_adam, muon, sf_adamw"),   # every option, sorted
    (["opt.lrr=1"], "opt.lrr"),
    (["opt.weighting=linear"], "opt.weighting='linear'"),
    (["sched=wsd", "sched.cooldown=exp"], "sched.cooldown='exp'"),
    (["trainer.precision=fp8"], "trainer.precision='fp8'"),
    (["task.objective=mse"], "task.objective='mse'"),
    (["logger=wandb", "logger.mode=cloud"], "logger.mode='cloud'"),
    (["trainer.diverge_above=0"], "trainer.diverge_above=0"),
    (["opt.betas=abc"], "opt.betas='abc'"),
    (["trainer.eval_every=-1"], "trainer.eval_every=-1"),
    (["seed=-5"], "seed=-5"),
    (["task.seed=-1"], "task.seed=-1"),
    (["task.student.dropout=2"], "task.student.dropout=2"),
    (["task.student=5"], "task.student=5"),
    (["+task.data.blocksize=64"], "task.data.blocksize: unknown setting"),
    (["+trainer.foo=1"], "trainer.foo: unknown setting"),
    (["+foo=1"], "foo: unknown setting"),
    (["trainer=5"], "trainer=5 is not allowed"),
    (["logger=null"], "logger=null is not allowed"),
    (["~sched"], "sched is missing; it is required"),
    (["trainer.device=mps"], "trainer.device='mps'"),
    (["opt=sgd", "opt.momentum=2"], "opt.momentum=2"),
    (["task.data.source=hf", "task.data.hf_dataset=/no/such/dataset"], "task.data"),
    (["experiment=nope"], "experiment='nope' is not an option"),
    (["task.data.train_chars=[0,100]"], "set both character ranges"),
    (["task.data.train_chars=[100,0]", "task.data.val_chars=[0,10]"], "task.data.train_chars=[100, 0] is not allowed"),
    (["task.data.train_chars=[0,5000]", "task.data.val_chars=[5000,99999999]"],
     "task.data.val_chars=[5000, 99999999]: the text has only"),
]


@pytest.mark.parametrize("args, expected", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_clear_message(in_run_env, capsys, args, expected):
    code = run_cli([*TINY, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err
    assert "Traceback" not in err
    runs = in_run_env / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.rglob("*"))


# -- one run: the contract of DESIGN.md ----------------------------------------------------------------------------

def test_tiny_run_writes_the_contract_and_reruns_are_skipped(in_run_env, capsys):
    assert run_cli([*TINY, "opt=sf_polyak"]) == 0
    run_dir = only_run(in_run_env)
    assert {"config.yaml", "metrics.jsonl", "summary.json", "model.pt"} <= {p.name for p in run_dir.iterdir()}
    assert (run_dir / "checkpoints" / "last.pt").exists()
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["steps_done"] == 12
    rows = metric_rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, 13))
    for key in ("lr", "train/loss", "train/grad_norm_sq", "train/lower_bound"):
        assert all(key in r for r in rows)
    assert "eval/loss" in rows[5] and "eval/loss" in rows[11] and "eval/loss" not in rows[0]
    config = (run_dir / "config.yaml").read_text()
    assert "SFSGD" in config and "lr_rule: polyak" in config and "opt: sf_polyak" in config
    # The lr recorded for SF-Polyak is the step it took (capped by opt.lr), not the cap.
    assert all(0 <= r["lr"] <= 10.0 for r in rows) and len({r["lr"] for r in rows}) > 1
    capsys.readouterr()
    assert run_cli([*TINY, "opt=sf_polyak"]) == 0                 # same command, same directory: nothing to do
    assert "already finished" in capsys.readouterr().err
    assert metric_rows(run_dir) == rows


def test_diverging_run_ends_diverged_with_exit_zero(in_run_env):
    """opt.lr=1e4 blows the loss up (finite, ~1e9, on this model): above trainer.diverge_above × the first loss."""
    assert run_cli([*TINY, "opt.lr=1e4", "trainer.steps=40"]) == 0
    run_dir = only_run(in_run_env)
    summary = read_summary(run_dir)
    assert summary["status"] == "diverged" and summary["steps_done"] < 40
    rows = metric_rows(run_dir)
    assert rows[-1]["train/loss"] > 100 * rows[0]["train/loss"]


def test_non_finite_loss_is_diverged_too(in_run_env):
    """With the threshold off, a non-finite loss still ends the run as diverged (SGD at lr 1e30 overflows)."""
    assert run_cli([*TINY, "opt=sgd", "opt.lr=1e30", "trainer.steps=40", "trainer.diverge_above=null"]) == 0
    summary = read_summary(only_run(in_run_env))
    assert summary["status"] == "diverged"
    loss = summary["final"]["train/loss"]
    assert loss != loss or abs(loss) == float("inf")


@pytest.mark.parametrize("opt", ["sf_adamw", "sgd", "sf_schedulet"])
def test_optimizers_and_schedules_run(in_run_env, opt):
    assert run_cli([*TINY, f"opt={opt}", "trainer.steps=10", "trainer.eval_every=0"]) == 0
    run_dir = only_run(in_run_env)
    assert read_summary(run_dir)["status"] == "completed"
    lrs = [r["lr"] for r in metric_rows(run_dir)]
    if opt in ("sgd", "sf_schedulet"):        # cosine / wsd: the lr decays over the run
        assert lrs[0] > lrs[-1]


def wandb_history(run_dir: Path) -> list[dict]:
    """The history W&B recorded for a run, read back with W&B's own reader (`wandb leet inspect --json`)."""
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1, offline
    proc = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(offline[0])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return [r["history"]["item"] for r in records if r["type"] == "history"]


@pytest.mark.slow
def test_local_multirun_is_read_by_load_runs_and_logged_to_wandb(in_run_env):
    tiny = [a for a in TINY if a != "logger=none"]
    assert run_cli(["-m", *tiny, "logger=wandb", "trainer.steps=4", "trainer.eval_every=0",
                    "opt=sf_adamw,sf_polyak,adamw"]) == 0
    sweeps = list((in_run_env / "multirun").iterdir())
    assert len(sweeps) == 1
    frame = load_runs(sweeps[0])
    assert frame["run"].nunique() == 3
    assert set(frame["choices.opt"]) == {"sf_adamw", "sf_polyak", "adamw"}
    assert set(frame["status"]) == {"completed"}
    assert frame.groupby("run")["step"].max().tolist() == [4, 4, 4]
    for run in frame["run"].unique():
        history = wandb_history(sweeps[0] / run)
        assert [h["step"] for h in history] == [1, 2, 3, 4]
        ours = frame[frame["run"] == run].sort_values("step")
        assert [h["train/loss"] for h in history] == pytest.approx(list(ours["train/loss"]), rel=1e-6)
        assert [h["lr"] for h in history] == pytest.approx(list(ours["lr"]), rel=1e-6)


# -- preemption and resume (real processes, real signals) -----------------------------------------------------------

def _cli(args, cwd, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "sfbench", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def interrupt_and_resume(args, tmp_path, env, lines: int, sig=signal.SIGTERM, poll_s: float = 0.05) -> dict:
    """Run ARGS uninterrupted into `full`; run them into `cut`, send `sig` once its metrics.jsonl has `lines`
    lines, then run the same command again. Returns each stage's output and exit status, and the cut's summary."""
    full = _cli([*args, "hydra.run.dir=full"], tmp_path, env)
    out, _ = full.communicate(timeout=300)
    assert full.returncode == 0, out
    cut = _cli([*args, "hydra.run.dir=cut"], tmp_path, env)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < lines):
        time.sleep(poll_s)
    cut.send_signal(sig)
    cut_out, _ = cut.communicate(timeout=120)
    cut_summary = read_summary(tmp_path / "cut")
    again = _cli([*args, "hydra.run.dir=cut"], tmp_path, env)
    again_out, _ = again.communicate(timeout=300)
    return {"cut_out": cut_out, "cut_code": cut.returncode, "cut_summary": cut_summary,
            "again_out": again_out, "again_code": again.returncode}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2])
def test_signal_then_rerun_equals_uninterrupted(tmp_path, sfbench_env, sig):
    env = subprocess_env(sfbench_env)
    args = [*TINY, "opt=sf_adamw", "trainer.steps=60", "trainer.ckpt_every=0", "trainer.eval_every=20"]
    run = interrupt_and_resume(args, tmp_path, env, lines=15, sig=sig)
    assert run["cut_code"] == 0, run["cut_out"]
    summary = run["cut_summary"]
    assert summary["status"] == "preempted" and 15 <= summary["steps_done"] < 60, run["cut_out"]
    assert run["again_code"] == 0, run["again_out"]
    assert "resuming" in run["again_out"]
    summary = read_summary(tmp_path / "cut")
    assert summary["status"] == "completed" and summary["resumes"] == 1
    assert metric_rows(tmp_path / "cut") == metric_rows(tmp_path / "full")


# -- W&B offline: checked with W&B's own reader -------------------------------------------------------------------

@pytest.mark.slow
def test_wandb_offline_history_has_loss_and_lr(in_run_env):
    args = [a for a in TINY if a != "logger=none"] + ["logger=wandb", "trainer.steps=5", "trainer.eval_every=0"]
    assert run_cli(args) == 0
    run_dir = only_run(in_run_env)
    history = wandb_history(run_dir)
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5]
    assert all(isinstance(h["train/loss"], float) and isinstance(h["lr"], float) for h in history)
    assert (run_dir / "wandb_id.txt").exists()


@pytest.mark.slow
def test_progress_bar_on_a_terminal_and_log_lines_otherwise(tmp_path, sfbench_env):
    import os
    import pty

    env = subprocess_env(sfbench_env)
    args = [sys.executable, "-m", "sfbench", *TINY, "trainer.steps=8", "trainer.eval_every=0"]
    primary, secondary = pty.openpty()
    proc = subprocess.Popen([*args, "hydra.run.dir=tty"], cwd=tmp_path, env=env, stdin=secondary,
                            stdout=secondary, stderr=secondary)
    os.close(secondary)
    chunks = []
    while True:
        try:
            data = os.read(primary, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, screen
    assert "8/8" in screen and "step/s" in screen and "loss=" in screen and "lr=" in screen   # tqdm's bar

    plain = subprocess.run([*args, "hydra.run.dir=plain", "trainer.log_every_s=0"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0, plain.stderr
    lines = [line for line in plain.stderr.splitlines() if line.startswith("sfbench: step ")]
    assert len(lines) == 8 and "steps/s" in lines[-1] and "eta" in lines[-1] and "\r" not in plain.stderr


def test_bf16_autocast_run(in_run_env):
    assert run_cli([*TINY, "trainer.precision=bf16", "trainer.steps=6"]) == 0
    run_dir = only_run(in_run_env)
    assert read_summary(run_dir)["status"] == "completed"
    assert all(r["train/loss"] == r["train/loss"] for r in metric_rows(run_dir))


@pytest.mark.slow
def test_compiled_model_run_matches_eager(in_run_env):
    """trainer.compile=true (torch.compile of the student) trains to the same losses as eager, to float tolerance."""
    assert run_cli([*TINY, "trainer.steps=6", "hydra.run.dir=eager"]) == 0
    assert run_cli([*TINY, "trainer.steps=6", "trainer.compile=true", "hydra.run.dir=compiled"]) == 0
    eager, compiled = metric_rows(in_run_env / "eager"), metric_rows(in_run_env / "compiled")
    assert [r["train/loss"] for r in compiled] == pytest.approx([r["train/loss"] for r in eager], rel=1e-4)


def test_bad_input_never_touches_an_existing_directory(in_run_env, capsys):
    mine = in_run_env / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    assert run_cli([*TINY, "opt.lr=-1", f"hydra.run.dir={mine}"]) == 2
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "sub").is_dir()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "sub"]


def test_too_short_data_is_a_config_error_before_training(in_run_env, capsys):
    short = in_run_env / "short.txt"
    short.write_text("twelve bytes")
    code = run_cli([*TINY, "task.data.source=file", f"task.data.path={short}"])
    err = capsys.readouterr().err
    assert code == 2 and "task.data" in err and "too short" in err and "Traceback" not in err
    assert "training the distillation teacher" not in err


def test_experiment_preset_applies(in_run_env, capsys):
    assert run_cli(["experiment=distill_toy_comparison", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "group: distill_toy_comparison" in out and "steps: 1000" in out and "lr_rule: polyak" in out


def test_sweep_with_one_bad_value_starts_no_job(in_run_env, capsys):
    code = run_cli(["-m", *TINY, "trainer.steps=3", "opt.lr=0.001,-1,0.002"])
    err = capsys.readouterr().err
    assert code == 2 and "opt.lr=-1" in err and "no job was started" in err
    assert not list(in_run_env.rglob("summary.json"))


def test_rerun_with_another_logger_is_the_same_run(in_run_env, capsys):
    assert run_cli([*TINY, "trainer.steps=2"]) == 0
    args = [a for a in TINY if a != "logger=none"] + ["logger=wandb", "logger.mode=disabled", "trainer.steps=2"]
    assert run_cli(args) == 0
    assert "already finished" in capsys.readouterr().err


def test_logged_lr_is_the_scheduled_step_for_torch_optimizers(in_run_env):
    """AdamW + cosine through LambdaLR: the lr logged at step t is base · h(t − 1), the one the step used."""
    from sfbench.optim import make_schedule

    assert run_cli([*TINY, "opt=adamw", "trainer.steps=10", "trainer.eval_every=0"]) == 0
    rows = metric_rows(only_run(in_run_env))
    expected = 0.003 * make_schedule("cosine", total_steps=10).array()
    assert [r["lr"] for r in rows] == pytest.approx(list(expected), rel=1e-12, abs=1e-15)


@pytest.mark.slow
def test_signal_during_setup_stops_before_training_and_rerun_completes(tmp_path, sfbench_env):
    env = subprocess_env(sfbench_env)
    env["SFBENCH_CACHE"] = str(tmp_path / "cache")          # a cold cache: the teacher trains during setup
    args = [*TINY, "task.teacher.steps=400", "trainer.steps=5", "hydra.run.dir=run"]
    proc = _cli(args, tmp_path, env)
    for line in proc.stdout:
        if "training the distillation teacher" in line:
            proc.send_signal(signal.SIGTERM)
            break
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "preempted" and summary["steps_done"] == 0
    assert not (tmp_path / "run" / "metrics.jsonl").exists() or not metric_rows(tmp_path / "run")
    again = _cli(args, tmp_path, env)
    out = again.communicate(timeout=300)[0]
    assert again.returncode == 0, out
    assert "reusing the teacher" in out and read_summary(tmp_path / "run")["status"] == "completed"


def test_load_model_at_x_from_a_checkpoint_equals_the_final_model(in_run_env):
    """Checkpoints hold the training state at y; load_model_at_x must give exactly the model.pt written at x."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sfbench.train import load_model_at_x

    assert run_cli([*TINY, "opt=sf_adamw", "trainer.steps=6", "trainer.eval_every=0"]) == 0
    run_dir = only_run(in_run_env)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    task = instantiate(cfg.task)
    task.setup(torch.device("cpu"))
    model = load_model_at_x(run_dir / "checkpoints" / "last.pt", task.model(), instantiate(cfg.opt))
    final = torch.load(run_dir / "model.pt")
    assert final.keys() == model.state_dict().keys()
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert any(not torch.equal(checkpoint[k], final[k]) for k in final)     # y ≠ x: the test can tell them apart


def test_run_directory_with_another_config_is_refused_but_new_settings_are_not(in_run_env, capsys):
    """Re-running into a run directory checks its config.yaml: a changed value is refused (exit 2, nothing touched);
    a setting the old record lacks (added by a newer sfbench, e.g. trainer.theory) is not a different run."""
    import yaml

    args = ["task=logreg", "logger=none", "trainer.steps=5", "hydra.run.dir=runs/r"]
    assert run_cli(args) == 0
    config_path = in_run_env / "runs" / "r" / "config.yaml"
    config = yaml.safe_load(config_path.read_text())
    del config["trainer"]["theory"], config["trainer"]["theory_d_every"]
    config_path.write_text(yaml.safe_dump(config))
    summary_path = in_run_env / "runs" / "r" / "summary.json"     # a record as an older sfbench wrote it: no digest
    summary_path.write_text(json.dumps({k: v for k, v in json.loads(summary_path.read_text()).items()
                                        if k != "config_digest"}))
    capsys.readouterr()
    assert run_cli(args) == 0
    assert "already finished" in capsys.readouterr().err
    config["task"]["n"] = 123
    config_path.write_text(yaml.safe_dump(config))
    before = (in_run_env / "runs" / "r" / "summary.json").read_text()
    assert run_cli(args) == 2
    err = capsys.readouterr().err
    assert "different configuration" in err and "task.n" in err
    assert (in_run_env / "runs" / "r" / "summary.json").read_text() == before
