"""Sweeps are named by their command, so relaunching one that was cut off trains only its unfinished runs.

The local launcher here (no cluster); the same on Slurm is in test_slurm.py.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import subprocess_env
from test_cli import metric_rows, run_cli
from sfbench.cli.sweep import sweep_dir as _sweep_dir
from sfbench.tracking import read_summary

FAST = ["task=quadratic", "logger=none", "trainer.steps=3", "trainer.eval_every=0"]




# -- the sweep directory -------------------------------------------------------------------------------------------

def test_sweep_dir_from_the_overrides_group_or_the_user():
    a = _sweep_dir(["-m", "opt=sf_adamw,sgd", "opt.lr=0.1,0.2", "task=logreg"])
    assert a == "multirun/opt.lr=0.1,0.2,opt=sf_adamw,sgd,task=logreg"
    # the same sweep written in another order, with another logger or launcher, is the same sweep
    assert _sweep_dir(["task=logreg", "-m", "opt.lr=0.1,0.2", "opt=sf_adamw,sgd", "logger=none",
                       "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "trainer.device=cpu"]) == a
    assert _sweep_dir(["-m", "opt=sf_adamw,sgd", "opt.lr=0.1,0.3", "task=logreg"]) != a
    assert _sweep_dir(["-m", "group=paper_fig2", "opt=sf_adamw,sgd"]) == "multirun/paper_fig2"
    assert _sweep_dir(["-m", "opt=sf_adamw,sgd", "hydra.sweep.dir=mine"]) is None
    assert _sweep_dir(["-m"]) == "multirun/default"
    # an experiment preset names its own group: the directory its docs and header give
    assert _sweep_dir(["-m", "experiment=sfs_distill_shakespeare", "smoke=true"]) == \
        "multirun/sfs_distill_shakespeare_smoke"
    assert _sweep_dir(["-m", "experiment=sfs_distill_shakespeare"]) == "multirun/sfs_distill_shakespeare"
    assert _sweep_dir(["-m", "experiment=sfs_cifar_bound", "group=mine"]) == "multirun/mine"
    long = _sweep_dir(["-m", *[f"+task.k{i}=v{i}" for i in range(30)]])
    assert len(long) <= len("multirun/") + 120


@pytest.mark.slow
def test_same_sweep_same_directory_and_reruns_skip(in_run_env, capsys):
    assert run_cli(["-m", *FAST, "opt=sf_adamw,sgd"]) == 0
    sweeps = sorted(p.name for p in (in_run_env / "multirun").iterdir())
    assert sweeps == ["opt=sf_adamw,sgd,task=quadratic,trainer.eval_every=0,trainer.steps=3"]
    runs = sorted(p.parent.name for p in (in_run_env / "multirun").rglob("summary.json"))
    assert runs == ["opt=sf_adamw,task=quadratic,trainer.eval_every=0,trainer.steps=3",
                    "opt=sgd,task=quadratic,trainer.eval_every=0,trainer.steps=3"]
    capsys.readouterr()
    # the same command, its overrides in another order: the same directory, nothing trains again
    assert run_cli(["-m", "opt=sf_adamw,sgd", *reversed(FAST)]) == 0
    assert capsys.readouterr().err.count("already finished") == 2
    assert len(list((in_run_env / "multirun").iterdir())) == 1


@pytest.mark.slow
def test_group_names_the_sweep_and_a_user_sweep_dir_wins(in_run_env):
    assert run_cli(["-m", *FAST, "group=fig2", "opt=sf_adamw,sgd"]) == 0
    assert len(list((in_run_env / "multirun" / "fig2").rglob("summary.json"))) == 2
    assert read_summary(next((in_run_env / "multirun" / "fig2").rglob("summary.json")).parent)["status"] == \
        "completed"
    assert run_cli(["-m", *FAST, "opt=sf_adamw,sgd", f"hydra.sweep.dir={in_run_env / 'mine'}"]) == 0
    assert len(list((in_run_env / "mine").rglob("summary.json"))) == 2
    assert sorted(p.name for p in (in_run_env / "multirun").iterdir()) == ["fig2"]


# -- hydra/sweeper=grid: limits per choice ---------------------------------------------------------------------------

def test_grid_sweeper_launches_only_the_jobs_under_their_limits(in_run_env, capsys):
    limits = "hydra.sweeper.limits=[{when: {opt: sgd}, key: opt.lr, max: 0.1}]"
    assert run_cli(["-m", *FAST, "hydra/sweeper=grid", "opt=sgd,sf_sgd", "opt.lr=0.01,0.1,1", limits]) == 0
    runs = sorted(p.parent.name.split(",task=")[0] for p in (in_run_env / "multirun").rglob("summary.json"))
    assert runs == ["opt.lr=0.01,opt=sf_sgd", "opt.lr=0.01,opt=sgd", "opt.lr=0.1,opt=sf_sgd", "opt.lr=0.1,opt=sgd",
                    "opt.lr=1,opt=sf_sgd"]
    assert "Launching 5 jobs" in capsys.readouterr().out


@pytest.mark.parametrize("limits, says", [
    ("[{when: {opt: sgd}, key: opt.lr, max: 1e-9}]", "rule out all 2 jobs"),
    ("[{when: opt, key: opt.lr, max: 0.1}]", "is not a limit"),
    ("[{when: {opt: sgd}, key: opt.lr, max: big}]", "not a number"),
])
def test_grid_sweeper_limits_that_make_no_sense_are_one_line(in_run_env, capsys, limits, says):
    code = run_cli(["-m", *FAST, "hydra/sweeper=grid", "opt=sgd", "opt.lr=0.01,0.1",
                    f"hydra.sweeper.limits={limits}"])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "Traceback" not in err, err
    assert not list(in_run_env.rglob("summary.json"))


# -- a sweep whose launcher was killed: the relaunch trains only the rest -----------------------------------------

@pytest.mark.slow
def test_killed_local_sweep_relaunch_trains_only_the_unfinished_runs(tmp_path, sfbench_env):
    env = subprocess_env(sfbench_env)
    args = ["task=logreg", "logger=none", "trainer.steps=6000", "trainer.log_every=20", "trainer.eval_every=2000",
            "trainer.ckpt_every=1000"]
    lrs = ["0.001", "0.002", "0.003", "0.004"]
    command = [sys.executable, "-m", "sfbench", "-m", *args, f"opt.lr={','.join(lrs)}"]
    sweep = tmp_path / _sweep_dir(["-m", *args, f"opt.lr={','.join(lrs)}"])
    run = {lr: sweep / ",".join(sorted([*args[:1], *args[2:], f"opt.lr={lr}"])) for lr in lrs}   # logger: excluded

    launcher = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    third = run[lrs[2]]
    deadline = time.time() + 240
    # kill it (SIGKILL: no checkpoint on the way out) once two runs are done and the third has a checkpoint
    while time.time() < deadline and (read_summary(third) or {}).get("steps_done", 0) < 1000:
        time.sleep(0.05)
    launcher.send_signal(signal.SIGKILL)
    out = launcher.communicate(timeout=60)[0]
    assert [(read_summary(run[lr]) or {}).get("status") for lr in lrs] == ["completed", "completed", "running",
                                                                         None], out
    done_before = {lr: (run[lr] / "metrics.jsonl").stat().st_mtime_ns for lr in lrs[:2]}

    again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("already finished") == 2
    assert again.stderr.count("resuming") == 1 and f"opt.lr={lrs[2]}" in again.stderr.split("resuming")[1][:300]
    summaries = [read_summary(run[lr]) for lr in lrs]
    assert [s["status"] for s in summaries] == ["completed"] * 4
    assert [s["resumes"] for s in summaries] == [0, 0, 1, 0]
    assert {lr: (run[lr] / "metrics.jsonl").stat().st_mtime_ns for lr in lrs[:2]} == done_before

    # the resumed run is the run an uninterrupted process trains
    full = subprocess.run([sys.executable, "-m", "sfbench", *args, f"opt.lr={lrs[2]}", "hydra.run.dir=full"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 0, full.stderr
    assert metric_rows(run[lrs[2]]) == metric_rows(tmp_path / "full")
