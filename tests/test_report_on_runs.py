"""The report on real sweeps run through the CLI: a best-lr prediction only where it is independent of the swept
grid, the same number as `python -m sfbench.theory predict` for the same inputs, and each run's fit the one its
record holds."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import subprocess_env
from sfbench.report import build_report
from sfbench.theory.__main__ import main as theory_main

pytestmark = pytest.mark.slow


def sweep(tmp_path, env, name, args):
    out = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "sfbench", "-m", *args, "logger=none", f"hydra.sweep.dir={out}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return build_report(out, wandb=False)


def test_nonconvex_grids_1000x_apart_get_no_prediction_on_either(tmp_path, sfbench_env):
    """task=nonconvex has no exact D: D would be the distance x travelled in the swept runs, which grows with the lr,
    so a prediction would follow the grid (about 1.4× its median, whatever the grid). On grids 1,000× apart the
    report withholds the prediction on both, says why, and leaves the runs out of ρ."""
    env = subprocess_env(sfbench_env)
    common = ["task=nonconvex", "opt=sf_sgd", "sched=constant", "trainer.steps=150", "trainer.eval_every=50"]
    for name, grid in (("small", "0.001,0.003,0.01"), ("large", "1,3,10")):
        report = sweep(tmp_path, env, name, [*common, f"opt.lr={grid}"])
        [row] = report["prediction"]["best_lr"]
        assert row["predicted"] is None and row["rule"] is None and "no independent prediction" in row["note"]
        assert row["observed"] is not None
        for corr in report["prediction"]["correlations"]:
            assert corr["rho"] is None and "no independent prediction" in corr["note"]
        html = (tmp_path / name / "report" / "report.html").read_text()
        assert "no independent prediction" in html


def test_the_report_and_theory_predict_agree_for_the_same_inputs(tmp_path, sfbench_env, capsys, monkeypatch):
    """task=logreg knows its D exactly: the report's predicted best lr equals `theory predict` given the report's D
    and G (one function), to float precision."""
    env = subprocess_env(sfbench_env)
    args = ["task=logreg", "opt=sf_sgd", "sched=cosine", "trainer.steps=200", "trainer.eval_every=50"]
    report = sweep(tmp_path, env, "logreg", [*args, "opt.lr=0.3,1,3"])
    [row] = report["prediction"]["best_lr"]
    assert row["rule"] == "C2" and row["predicted"] > 0 and row["note"] is None
    monkeypatch.chdir(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        theory_main(["predict", *args, "logger=none", "--D", repr(row["D"]), "--G", repr(math.sqrt(row["G2"])),
                     "--json"])
    except SystemExit as exit_:
        assert exit_.code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["best_lr"] == pytest.approx(row["predicted"], rel=1e-9)


def test_the_report_shows_the_fit_the_run_stored(tmp_path, sfbench_env):
    """The report's fit of a finished run is the trainer's (summary.json theory.fit, theory_fit.json): the same C, M, D
    and curve, not a second computation that could disagree with it."""
    env = subprocess_env(sfbench_env)
    report = sweep(tmp_path, env, "lad", ["task=lad", "opt=sf_sgd", "trainer.steps=300", "opt.lr=0.1,0.3"])
    for run in report["runs"]:
        stored = json.loads((tmp_path / "lad" / run["run"] / "summary.json").read_text())["theory"]["fit"]
        curve = json.loads((tmp_path / "lad" / run["run"] / "theory_fit.json").read_text())
        for key in ("C", "M", "D", "rmse", "n_used", "method"):
            assert run["fit"][key] == stored[key], key
        assert run["fit_target"] == stored["target"] == curve["target"]


def test_a_run_that_ends_above_its_start_is_flagged(tmp_path, sfbench_env):
    """A step size far too large: the run does not diverge by the loss test (trainer.diverge_above raised) but ends
    above its first evaluation. summary.json says so, the run's closing line and the sweep table say so, and the
    report flags it; a healthy run is not flagged."""
    env = subprocess_env(sfbench_env)
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, "-m", "sfbench", "-m", "task=quadratic", "opt=sgd", "sched=constant",
                           "trainer.steps=60", "trainer.eval_every=10", "trainer.diverge_above=null",
                           "opt.momentum=0.0", "opt.lr=0.01,60", "logger=none", f"hydra.sweep.dir={out}"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = {p.parent.name: json.loads(p.read_text()) for p in out.rglob("summary.json")}
    bad = next(s for name, s in summaries.items() if "opt.lr=60" in name)
    good = next(s for name, s in summaries.items() if "opt.lr=0.01" in name)
    assert bad["status"] == "completed" and bad["ended_above_start"]["final"] > bad["ended_above_start"]["first"]
    assert "ended_above_start" not in good
    assert "ended above its start" in proc.stdout + proc.stderr and "(above its start)" in proc.stdout
    report = build_report(out, wandb=False)
    flags = {r["run"]: r["above_start"] for r in report["runs"]}
    assert [name for name, flag in flags.items() if flag] == [n for n in flags if "opt.lr=60" in n]
    assert "(above its start)" in (out / "report" / "report.html").read_text()
