"""sfbench.report on synthetic sweeps whose answer is known by construction.

The synthetic problem: steps t = 1 … T with step sizes γ_t = lr·h(t) (constant, cosine, wsd), squared gradient norms
G²(1 + small noise), and D = 1, so every run's [C1] bound is (D² + S2)/(2 S1); the observed metric is M·bound
exactly (M = 0.5). Hence: the final metric ranks runs exactly as the final bound does (Spearman ρ = 1), each run's
fit recovers M with C = 0 and the given D, and [C2]'s best base step D/(G√(Σh²)) is within one lr-grid step of the
observed best. A shuffled sweep (finals permuted between runs) must score the ρ that scipy gives on the permuted
numbers, which is far from 1.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from html import escape as html_escape
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from conftest import isolate_wandb
from sfbench.report import build_report
from sfbench.tracking import RunRecord

ROOT = Path(__file__).resolve().parents[1]
T = 300
EVAL_EVERY = 10
LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
SCHEDULES = ("constant", "cosine", "wsd")
SEEDS = (0, 1)
D_TRUE, G_TRUE, M_TRUE = 1.0, 1.0, 0.5
TASK = "sfbench.tasks.testbeds.LogRegTask"


def h_of(schedule: str, T: int = T) -> np.ndarray:
    t = np.arange(T, dtype=np.float64)
    if schedule == "constant":
        return np.ones(T)
    if schedule == "cosine":
        return 0.5 * (1 + np.cos(np.pi * t / T))
    if schedule == "wsd":
        decay = int(0.2 * T)
        return np.where(t < T - decay, 1.0, (T - t) / decay)
    raise ValueError(schedule)


CHOICES = {"sfbench.optim.SFSGD": "sf_sgd", "torch.optim.SGD": "sgd"}


def write_run(run_dir: Path, *, schedule: str, lr: float, seed: int, task: str = TASK, opt: str = "sfbench.optim.SFSGD",
              theory: bool = True, curve=None, status: str = "completed", diverge_at: int | None = None,
              kind: str = "C1", group: str = "synthetic", logger: str = "sfbench.tracking.sinks.NullSink",
              opt_choice: str | None = None, opt_extra: dict | None = None, eval_every: int = EVAL_EVERY,
              task_extra: dict | None = None) -> dict:
    """One run directory as the trainer writes it (with the theory columns when `theory`), `choices` included.
    Returns what it wrote: steps, gammas, grad_sq, bound (per step) and the metric at eval steps."""
    rng = np.random.default_rng(1000 * seed + int(lr * 1000) + len(schedule))
    gam = lr * h_of(schedule)
    gsq = G_TRUE ** 2 * (1 + 0.05 * rng.uniform(-1, 1, T))
    s1, s2 = np.cumsum(gam), np.cumsum(gam ** 2 * gsq)
    bound = (D_TRUE ** 2 + s2) / (2 * s1)
    metric = M_TRUE * bound if curve is None else curve
    rec = RunRecord(run_dir)
    task_choice = "logreg" if task == TASK else task.rsplit(".", 1)[-1]
    rec.write_config({"task": {"_target_": task, "seed": seed, **(task_extra or {})},
                      "opt": {"_target_": opt, "lr": lr, "weighting": "lr_power", **(opt_extra or {})},
                      "sched": {"name": schedule, "warmup_steps": 0, "decay_frac": 0.2},
                      "trainer": {"steps": T, "eval_every": eval_every}, "seed": seed, "group": group,
                      "logger": {"_target_": logger, "project": "sfbench", "mode": "auto"},
                      "choices": {"task": task_choice, "opt": opt_choice or CHOICES.get(opt, opt.rsplit(".", 1)[-1]),
                                  "sched": schedule, "logger": "none", "experiment": None}})
    last = T if diverge_at is None else diverge_at
    with rec:
        for step in range(1, last + 1):
            i = step - 1
            row = {"step": step, "lr": gam[i], "train/loss": metric[i] * (1 + 0.01 * rng.standard_normal()),
                   "train/grad_norm_sq": gsq[i]}
            if diverge_at is not None and step == diverge_at:
                rec.log({"step": step, "train/loss": float("inf")})
                break
            if theory:
                row.update({"theory/S1": s1[i], "theory/S2": s2[i], "theory/grad_sq": gsq[i], "theory/D": D_TRUE})
                if kind == "C1" or step % eval_every == 0 or step == T:
                    row["theory/bound"] = bound[i]
            if step % eval_every == 0 or step == T:
                row.update({"eval/loss": metric[i] + 0.3, "eval/subopt": metric[i]})
            rec.log(row)
    summary = {"steps_done": last - 1 if diverge_at else T, "total_steps": T,
               "final": {"eval/subopt": float(metric[last - 1])}, "task": {"D": D_TRUE, "f_star": 0.3}}
    if theory:
        summary["theory"] = {"bound": kind, "D": D_TRUE, "D_source": "task", "fit": {}}
    rec.write_summary(status, **summary)
    return {"gammas": gam, "grad_sq": gsq, "bound": bound, "metric": metric}


def write_sweep(root: Path, *, permute: np.ndarray | None = None, diverged: bool = True) -> dict:
    """3 schedules × 5 lrs × 2 seeds; `permute` reassigns the metric curves (a shuffled sweep). Returns, per run
    name, what was written."""
    keys = [(s, lr, seed) for s in SCHEDULES for lr in LRS for seed in SEEDS]
    written = {}
    # the bounds first, so a permutation can hand run i the curve of run permute[i]
    curves = {}
    for s, lr, seed in keys:
        gam = lr * h_of(s)
        rng = np.random.default_rng(1000 * seed + int(lr * 1000) + len(s))
        gsq = G_TRUE ** 2 * (1 + 0.05 * rng.uniform(-1, 1, T))
        curves[(s, lr, seed)] = M_TRUE * (D_TRUE ** 2 + np.cumsum(gam ** 2 * gsq)) / (2 * np.cumsum(gam))
    for i, key in enumerate(keys):
        s, lr, seed = key
        curve = curves[keys[permute[i]]] if permute is not None else None
        name = f"opt.lr={lr},sched={s},seed={seed}"
        written[name] = write_run(root / name, schedule=s, lr=lr, seed=seed, curve=curve)
    if diverged:
        name = "opt.lr=10.0,sched=constant,seed=0"
        written[name] = write_run(root / name, schedule="constant", lr=10.0, seed=0, status="diverged",
                                  diverge_at=25)
    return written


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep") / "multirun" / "2026-01-01_00-00-00"
    written = write_sweep(root)
    report = build_report(root, wandb=False)
    return root, written, report


def _final(written: dict, name: str, key: str) -> float:
    return float(written[name][key][-1])


# ---------------------------------------------------------------------------------------------------------------------
def test_report_files_and_statuses(sweep):
    root, written, _ = sweep
    out = root / "report"
    assert (out / "report.html").is_file() and (out / "report.json").is_file()
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["n_runs"] == len(written) == 31
    assert on_disk["statuses"] == {"completed": 30, "diverged": 1}
    assert on_disk["metric"] == {"logreg": "eval/subopt"}                  # --metric auto picks the suboptimality
    div = [r for r in on_disk["runs"] if r["status"] == "diverged"]
    assert len(div) == 1 and div[0]["fit"] is None and div[0]["lr"] == 10.0
    assert any("diverged" in n for n in div[0]["notes"])
    html = (out / "report.html").read_text()
    assert "opt.lr=10.0,sched=constant,seed=0" in html and "diverged" in html


def test_every_referenced_png_exists(sweep):
    root, _, report = sweep
    out = root / "report"
    html = (out / "report.html").read_text()
    srcs = re.findall(r'<img[^>]*\bsrc="([^"]+)"', html)
    kinds = {f["kind"] for f in report["figures"]}
    assert kinds == {"best", "lr_all", "curves", "fits", "lr"}             # one task: no performance profile
    assert sorted(srcs) == sorted(f["file"] for f in report["figures"])
    # comparison first: the methods side by side, then the per-method detail
    order = [f["kind"] for f in sorted(report["figures"], key=lambda f: html.index(f["file"]))]
    assert order[:2] == ["best", "lr_all"]
    for src in srcs:
        path = out / src
        assert path.is_file(), src
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", src


def test_fits_recover_the_construction(sweep):
    _, _, report = sweep
    fitted = [r for r in report["runs"] if r["status"] == "completed"]
    assert len(fitted) == 30
    for r in fitted:
        fit = r["fit"]
        assert r["bound"] == "C1"
        assert fit["method"] == "huber" and fit["D_fixed"] and fit["D"] == D_TRUE
        assert fit["M"] == pytest.approx(M_TRUE, rel=1e-6)
        assert abs(fit["C"]) < 1e-6 * r["final"] + 1e-12
        assert fit["n_used"] == T // EVAL_EVERY


def test_spearman_is_one_when_the_metric_follows_the_bound(sweep):
    _, written, report = sweep
    corr = report["prediction"]["correlations"]
    overall = [c for c in corr if c["scope"] == "overall"]
    assert len(overall) == 1
    assert overall[0]["n"] == 30                                           # the diverged run is left out
    assert overall[0]["rho"] == pytest.approx(1.0)
    per = {c["schedule"]: c for c in corr if c["scope"] == "method"}
    assert set(per) == set(SCHEDULES)
    for sched, c in per.items():
        assert c["method"] == f"sf_sgd · sched={sched}"                   # the schedule varies within the choice
        assert c["n"] == len(LRS) * len(SEEDS) and c["rho"] == pytest.approx(1.0)
        assert c["ci"] == pytest.approx([1.0, 1.0])                        # every resample ranks alike: ρ = 1
    # the predicted final value is the final logged bound
    for r in report["runs"]:
        if r["status"] == "completed":
            assert r["predicted"] == pytest.approx(_final(written, r["run"], "bound"))
            assert r["final"] == pytest.approx(M_TRUE * r["predicted"])


def test_shuffled_sweep_scores_low(tmp_path):
    n = len(SCHEDULES) * len(LRS) * len(SEEDS)
    perm = np.random.default_rng(7).permutation(n)
    root = tmp_path / "shuffled"
    written = write_sweep(root, permute=perm, diverged=False)
    report = build_report(root, wandb=False)
    names = sorted(written)
    pred = [_final(written, k, "bound") for k in names]
    obs = [_final(written, k, "metric") for k in names]
    expected = spearmanr(pred, obs).statistic
    assert expected < 0.8                                                  # the shuffle really breaks the ranking
    [overall] = [c for c in report["prediction"]["correlations"] if c["scope"] == "overall"]
    assert overall["rho"] == pytest.approx(expected, abs=1e-9)
    assert overall["rho"] < 0.8


def test_best_lr_prediction(sweep):
    _, written, report = sweep
    rows = {b["schedule"]: b for b in report["prediction"]["best_lr"]}
    assert set(rows) == set(SCHEDULES)
    step = math.sqrt(LRS[1] / LRS[0] * LRS[2] / LRS[1])                    # the grid is ≈ geometric, ×√10 per 2
    for sched, b in rows.items():
        runs = [k for k in written if f"sched={sched}," in k and "lr=10.0" not in k]
        G2 = np.mean(np.concatenate([written[k]["grad_sq"] for k in runs]))
        h = h_of(sched)
        expected = D_TRUE / math.sqrt(G2 * np.sum(h ** 2))                 # [C2]: D / (G √(T·B)), T·B = Σ h²
        assert b["rule"] == "C2" and b["bound"] == "C1"
        assert b["predicted"] == pytest.approx(expected, rel=1e-6)
        assert b["G2"] == pytest.approx(G2, rel=1e-9)
        assert b["B"] == pytest.approx(np.mean(h ** 2), rel=1e-9) and b["T"] == T
        # the observed best is the lr with the lowest mean final metric
        finals = {lr: np.mean([_final(written, f"opt.lr={lr},sched={sched},seed={s}", "metric") for s in SEEDS])
                  for lr in LRS}
        assert b["observed"] == min(finals, key=finals.get)
        # the bound is symmetric in log γ about γ*, so the best grid lr is within half a grid step of it
        assert 1 / step <= b["ratio"] <= step
        assert b["ratio"] == pytest.approx(b["predicted"] / b["observed"])


def test_runs_without_theory_are_reported_not_crashed(tmp_path):
    root = tmp_path / "old"
    for lr in (0.03, 0.1, 0.3):
        write_run(root / f"lr={lr}", schedule="constant", lr=lr, seed=0, theory=False)
    report = build_report(root, wandb=False)
    assert all(r["fit"] is None and r["bound"] is None for r in report["runs"])
    assert any("no theory columns" in w for w in report["warnings"])
    html = (root / "report" / "report.html").read_text()
    assert "no theory columns" in html
    for f in report["figures"]:
        assert (root / "report" / f["file"]).is_file()


def test_partial_and_broken_runs(tmp_path):
    """A run still starting (no metrics yet), a failed one without config, a preempted one and a metrics file with a
    corrupt line: the report lists them all and compares only what it can."""
    root = tmp_path / "mixed"
    write_run(root / "ok-0.1", schedule="constant", lr=0.1, seed=0)
    write_run(root / "ok-0.3", schedule="constant", lr=0.3, seed=0)
    write_run(root / "preempted", schedule="constant", lr=0.03, seed=0, status="preempted")
    rec = RunRecord(root / "starting")
    rec.write_config({"task": {"_target_": TASK}, "opt": {"_target_": "sfbench.optim.SFSGD", "lr": 1.0},
                      "sched": {"name": "constant"}, "trainer": {"steps": T}, "seed": 0,
                      "choices": {"task": "logreg", "opt": "sf_sgd", "sched": "constant"}})
    rec.write_summary("running", steps_done=0)
    RunRecord(root / "failed").write_summary("failed", steps_done=0, error="boom")
    write_run(root / "corrupt", schedule="constant", lr=0.01, seed=0)
    path = root / "corrupt" / "metrics.jsonl"
    lines = path.read_text().splitlines(True)
    lines[5] = '{"step": 6, "lr": \n'
    path.write_text("".join(lines))
    report = build_report(root, wandb=False)
    runs = {r["run"]: r for r in report["runs"]}
    assert report["statuses"] == {"completed": 3, "preempted": 1, "running": 1, "failed": 1}
    assert runs["corrupt"]["fit"]["method"] == "huber" and "unreadable" in " ".join(runs["corrupt"]["notes"])
    assert runs["starting"]["fit"] is None and runs["failed"]["fit"] is None
    assert report["tasks"] == ["logreg"] and report["profiles"] is None
    [overall] = [c for c in report["prediction"]["correlations"] if c["scope"] == "overall"]
    assert overall["n"] == 3                                               # the completed runs only
    html = (root / "report" / "report.html").read_text()
    assert all(name in html for name in runs)


def _early(run_dir: Path, lines: int, status: str = "running") -> None:
    """A run of a live sweep: its first `lines` metric lines, no final metrics yet."""
    write_run(run_dir, schedule="constant", lr=0.1, seed=0, status=status)
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(path.read_text().splitlines(True)[:lines]))
    RunRecord(run_dir).write_summary(status, final=None, steps_done=lines)


def _live_one_early(root: Path) -> dict:
    _early(root / "early", 3)
    return {}


def _live_nothing_logged(root: Path) -> dict:
    rec = RunRecord(root / "started")
    rec.write_config({"task": {"_target_": TASK}, "opt": {"_target_": "sfbench.optim.SFSGD", "lr": 1.0},
                      "sched": {"name": "constant"}, "trainer": {"steps": T}, "seed": 0,
                      "choices": {"task": "logreg", "opt": "sf_sgd", "sched": "constant"}})
    rec.write_summary("running", steps_done=0)
    (root / "started" / "metrics.jsonl").write_text("")
    return {"started": "no finite train/loss logged yet"}


def _live_mixed(root: Path) -> dict:
    write_run(root / "done-0.1", schedule="constant", lr=0.1, seed=0)
    write_run(root / "done-0.3", schedule="constant", lr=0.3, seed=0)
    _early(root / "early", 1)
    RunRecord(root / "unreadable").write_config({"task": {"_target_": TASK}})
    (root / "unreadable" / "metrics.jsonl").mkdir()             # unreadable as a file, whoever runs the test
    write_run(root / "nan", schedule="constant", lr=1.0, seed=0, curve=[float("nan")] * T)
    return {"early": "no finite eval/subopt logged yet", "unreadable": "metrics.jsonl unreadable (IsADirectoryError",
            "nan": "no finite eval/subopt logged"}


@pytest.mark.parametrize("make", [_live_one_early, _live_nothing_logged, _live_mixed])
def test_a_live_sweep_is_reported_and_what_cannot_be_is_listed(tmp_path, make):
    """A sweep still running (one early run; a run that logged nothing yet; finished runs beside an early, an
    unreadable and an all-NaN run): the report is written (exit 0), every figure drawn, and each run left out of the
    plots is named with its reason — on stderr, in report.json and on the page."""
    root = tmp_path / "live"
    expected = make(root)
    out = _cli(root, "--no-wandb")
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    report = json.loads((root / "report" / "report.json").read_text())
    assert not [w for w in report["warnings"] if w.startswith("figure")]
    assert {r["run"] for r in report["left_out"]} == set(expected)
    page = (root / "report" / "report.html").read_text()
    for r in report["left_out"]:
        assert r["reason"].startswith(expected[r["run"]].split(" (")[0])
        assert expected[r["run"]] in r["reason"]
        assert f"left out of the plots: {r['run']} ({r['status']})" in out.stderr
        assert html_escape(r["reason"]) in page
    for f in report["figures"]:
        assert (root / "report" / f["file"]).is_file()
    assert report["figures"]


def test_g_param_option(tmp_path):
    root = tmp_path / "g"
    for lr in (0.03, 0.1, 0.3):
        write_run(root / f"lr={lr}", schedule="wsd", lr=lr, seed=0)
    report = build_report(root, wandb=False, g_param=True)
    for r in report["runs"]:
        assert r["fit"]["method"] == "huber+G" and -2.0 <= r["fit"]["p"] <= 1.0
        # the gradients are G²(1 ± 5 %) noise, constant on average: the fitted law is close to flat
        assert abs(r["fit"]["p"]) < 0.1 and r["fit"]["G"] == pytest.approx(G_TRUE, rel=0.1)


def _exp_curve(rate: float, floor: float = 0.1) -> np.ndarray:
    return floor + np.exp(-np.arange(1, T + 1) / rate)


def test_performance_profiles_across_tasks(tmp_path):
    """Two tasks, two methods: SF (constant) is twice as fast on task A, the SGD baseline ([C3] theory) twice as
    fast on task B; each reaches the same final value, so each wins one task and has ratio ≈ 2 on the other."""
    root = tmp_path / "tasks"
    fast, slow = _exp_curve(20.0), _exp_curve(40.0)
    for task, sf_curve, sgd_curve in (("tasks.A", fast, slow), ("tasks.B", slow, fast)):
        for seed in (0, 1):
            write_run(root / f"{task}-sf-{seed}", schedule="constant", lr=0.1, seed=seed, task=task, curve=sf_curve)
            write_run(root / f"{task}-sgd-{seed}", schedule="cosine", lr=0.1, seed=seed, task=task,
                      opt="torch.optim.SGD", curve=sgd_curve, kind="C3")
    report = build_report(root, wandb=False)
    prof = report["profiles"]
    assert prof is not None and sorted(prof["tasks"]) == ["A", "B"]
    sf, sgd = "sf_sgd", "sgd"
    assert prof["ratios"][sf]["A"] == 1.0 and prof["ratios"][sgd]["B"] == 1.0
    for ratio in (prof["ratios"][sf]["B"], prof["ratios"][sgd]["A"]):
        assert 1.6 <= ratio <= 2.4                                        # 2, up to the eval grid of 10 steps
    tau = np.asarray(prof["tau"])
    for m in (sf, sgd):
        rho = np.asarray(prof["rho"][m])
        assert rho[tau < 1.5].max() == 0.5 and rho[-1] == 1.0
        assert np.all(np.diff(rho) >= 0)
    assert "profiles.png" in [f["file"] for f in report["figures"]]
    # the [C3] runs were fitted from per-step lr and theory/grad_sq
    c3 = [r for r in report["runs"] if r["optimizer"] == "SGD"]
    assert c3 and all(r["bound"] == "C3" and r["fit"] and r["fit"]["n_used"] > 3 for r in c3)
    best = {b["method"]: b for b in report["prediction"]["best_lr"]}
    assert best["sgd"]["rule"] == "C3" and best["sf_sgd"]["rule"] == "C2"


# ---------------------------------------------------------------------------------------------------------------------
# method identity: config choices, never classes
# ---------------------------------------------------------------------------------------------------------------------
SF_ADAM = "sfbench.optim.SFAdamW"
#: three config choices built on one class (as configs/opt/ ships them), swept over the same lrs
ONE_CLASS = {"sf_adamw": {"weighting": "lr_power"},
             "sf_schedulet": {"weighting": "lr"},
             "sf_polyak_adam": {"weighting": "uniform", "lr_rule": "polyak"}}


def test_choices_sharing_a_class_are_never_merged(tmp_path):
    """sf_adamw, sf_schedulet and sf_polyak_adam are all SFAdamW: three methods in every table, panel and
    correlation, each with its own runs; SF-Polyak's opt.lr is a cap with no best-lr prediction. Even two choices
    whose configs are identical key for key (a copy of a config under another name) stay apart."""
    root = tmp_path / "one_class"
    lrs = (0.01, 0.03, 0.1)
    for choice, extra in {**ONE_CLASS, "sf_adamw_copy": ONE_CLASS["sf_adamw"]}.items():
        for lr in lrs:
            write_run(root / f"{choice}-{lr}", schedule="constant", lr=lr, seed=0, opt=SF_ADAM, opt_choice=choice,
                      opt_extra=extra)
    report = build_report(root, wandb=False)
    names = {"sf_adamw", "sf_schedulet", "sf_polyak_adam", "sf_adamw_copy"}
    assert {m["method"] for m in report["methods"]} == names
    assert all(m["optimizer"] == "SFAdamW" and m["runs"] == len(lrs) for m in report["methods"])
    for r in report["runs"]:                                               # each run in its own choice's method
        assert r["method"] == r["run"].split("-")[0] == r["choice"]
    per = [c for c in report["prediction"]["correlations"] if c["scope"] == "method"]
    assert sorted(c["method"] for c in per) == sorted(names) and all(c["n"] == len(lrs) for c in per)
    best = {b["method"]: b for b in report["prediction"]["best_lr"]}
    assert set(best) == names
    assert best["sf_polyak_adam"]["lr_role"] == "cap" and best["sf_polyak_adam"]["predicted"] is None
    assert best["sf_polyak_adam"]["rule"] is None and best["sf_polyak_adam"]["observed"] in lrs
    assert best["sf_adamw"]["lr_role"] == "base lr" and best["sf_adamw"]["predicted"] > 0
    html = (root / "report" / "report.html").read_text()
    for name in names:
        assert html.count(f"<td class=\"l\">{name}</td>") >= 3          # methods, best-lr and correlation rows
    assert "cap γ_max (opt.lr)" in html


def test_identity_labels():
    """What varies within a choice (schedule, other opt keys, trainer keys) names the method; lr and seed never do;
    task settings name the task, not the method."""
    from sfbench.report.identity import method_ids, task_ids

    def cfg(opt, sched="constant", lr=0.1, seed=0, wd=0.0, bs=None, steps=600):
        return {"choices.opt": opt, "choices.sched": sched, "choices.task": "logreg", "opt._target_": SF_ADAM,
                "opt.lr": lr, "opt.weight_decay": wd, "sched.name": sched, "seed": seed, "task.seed": seed,
                "task.batch_size": bs, "trainer.steps": steps, "logger.mode": "offline" if seed else "online"}

    configs = [cfg("sf_adamw", lr=0.1), cfg("sf_adamw", lr=0.3, seed=1), cfg("sf_adamw", sched="wsd"),
               cfg("adamw", wd=0.1), cfg("adamw", wd=0.0)]
    assert method_ids(configs) == ["sf_adamw · sched=constant", "sf_adamw · sched=constant", "sf_adamw · sched=wsd",
                                   "adamw · weight_decay=0.1", "adamw · weight_decay=0"]
    batches = [cfg("sf_adamw", bs=16), cfg("sf_adamw", bs=64, lr=0.3)]
    assert task_ids(batches) == ["logreg · batch_size=16", "logreg · batch_size=64"]
    assert method_ids(batches) == ["sf_adamw", "sf_adamw"]
    # a record without choices (older sfbench): the class's short name
    assert method_ids([{"opt._target_": SF_ADAM, "opt.lr": 0.1}]) == ["SFAdamW"]


# ---------------------------------------------------------------------------------------------------------------------
# fits on default-cadence runs, the metric's floor, rank-correlation intervals
# ---------------------------------------------------------------------------------------------------------------------
def test_few_evaluations_fit_the_smoothed_training_loss(tmp_path):
    """Three evaluations (every 100 of 300 steps) are too few for [C4]: the fit uses the training loss, averaged
    over blocks of steps, and succeeds; with many evaluations the metric itself is fitted."""
    root = tmp_path / "few"
    for lr in (0.03, 0.1, 0.3):
        write_run(root / f"few-{lr}", schedule="wsd", lr=lr, seed=0, eval_every=100)
        write_run(root / f"many-{lr}", schedule="wsd", lr=lr, seed=0, opt_choice="sf_sgd_many")
    report = build_report(root, wandb=False)
    for r in report["runs"]:
        assert r["fit"]["method"] == "huber", r
        if r["run"].startswith("few"):
            assert r["fit_target"] == "train/loss (smoothed)" and r["fit"]["n_used"] == 50
            assert any("fitted on the smoothed training loss" in n for n in r["notes"])
            # the train loss here is the metric's curve × (1 ± 1 % noise): its bound shape is recovered
            assert r["fit"]["M"] == pytest.approx(M_TRUE, rel=0.05)
        else:
            assert r["fit_target"] == "eval/subopt" and r["fit"]["n_used"] == T // EVAL_EVERY
    assert {f["kind"] for f in report["figures"]} >= {"curves", "fits", "lr"}


def test_smoothed_train_is_block_means(tmp_path):
    from sfbench.report import load
    from sfbench.report.fits import smoothed_train

    written = write_run(tmp_path / "r", schedule="cosine", lr=0.1, seed=3)
    [run] = load(tmp_path / "r")
    steps, values = smoothed_train(run, bins=30)
    raw = run.metrics["train/loss"].to_numpy()
    assert len(steps) == 30 and np.array_equal(steps, np.arange(1, T + 1).reshape(30, -1).mean(axis=1).round())
    assert np.allclose(values, raw.reshape(30, -1).mean(axis=1))
    assert np.allclose(raw, written["metric"], rtol=0.05)


def test_fitted_suboptimality_respects_its_floor(tmp_path):
    """A suboptimality curve that flattens faster than the bound pulls an unconstrained fit's C below 0, so the
    fitted curve would cross 0 (impossible for f − f*); the report holds C ≥ 0 and the curve stays ≥ 0."""
    from sfbench.theory.fit import bound_terms, fit_bound

    gam = 0.1 * np.ones(T)
    s1, s2 = np.cumsum(gam), np.cumsum(gam ** 2)
    bound = (1.0 + s2) / (2 * s1)
    curve = np.maximum(0.8 * bound - 0.06, 1e-4)                           # hits ~0 before T
    root = tmp_path / "floor"
    write_run(root / "r", schedule="constant", lr=0.1, seed=0, curve=curve)
    [r] = build_report(root, wandb=False)["runs"]
    eval_steps = np.arange(EVAL_EVERY, T + 1, EVAL_EVERY)
    a, b = bound_terms("C1", gam, np.ones(T), eval_steps)
    free = fit_bound(curve[eval_steps - 1], a, b, D=D_TRUE)
    assert free.C < 0 and np.nanmin(free.curve) < 0                       # what the floor prevents
    assert r["fit"]["C"] >= 0
    fitted = json.loads((root / "report" / "report.json").read_text())["runs"][0]["fit"]
    assert fitted["C"] >= 0 and fitted["M"] > 0


def test_spearman_interval():
    from scipy.stats import rankdata

    from sfbench.report.prediction import _resampled_ranks, spearman

    rng = np.random.default_rng(5)
    values = rng.integers(0, 6, size=25).astype(float)                    # many ties, then more from resampling
    idx = rng.integers(0, 25, size=(300, 25))
    assert np.array_equal(_resampled_ranks(values, idx), rankdata(values[idx], axis=-1))

    x = np.arange(30.0)
    perfect = spearman(x, x ** 2)
    assert perfect["rho"] == 1.0 and perfect["ci"] == [1.0, 1.0] and perfect["n"] == 30
    few = spearman([1, 2, 3, 4], [1, 2, 4, 3])
    assert few["n"] == 4 and few["ci"][0] < 0.2 < few["rho"] <= few["ci"][1]   # four runs: the interval is wide
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(300), rng.standard_normal(300)
    noise = spearman(a, b)
    lo, hi = noise["ci"]
    # independent samples: the interval covers 0 and has the width ±1.96/√(n−1) of Spearman's ρ under independence
    assert lo < 0 < hi and hi - lo == pytest.approx(2 * 1.96 / math.sqrt(299), rel=0.25)
    assert lo <= noise["rho"] <= hi
    assert math.isnan(spearman([1, 2], [2, 1])["rho"])


def test_spearman_interval_of_few_runs_is_the_whole_range():
    """3–4 runs: resampling keeps a perfect ranking perfect (the percentile interval would read [1, 1]), and no
    ranking of 4 runs passes an exact permutation test at 5 %: the interval is [−1, 1]. From 5 runs on, a perfect
    ranking is significant (p = 2/5! < 0.05) and the bootstrap interval is used."""
    from itertools import permutations

    from sfbench.report.prediction import MIN_CI_RUNS, spearman

    def exact_p(n: int) -> float:                     # two-sided exact permutation p-value of ρ = 1
        base = np.arange(n)
        rhos = [spearmanr(base, np.array(p)).statistic for p in permutations(range(n))]
        return float(np.mean(np.abs(rhos) >= 1 - 1e-12))

    assert exact_p(MIN_CI_RUNS - 1) > 0.05 > exact_p(MIN_CI_RUNS)
    for n in (3, 4):
        x = np.arange(n, dtype=float)
        for y in (x ** 2, -x):
            out = spearman(x, y)
            assert abs(out["rho"]) == pytest.approx(1.0) and out["ci"] == [-1.0, 1.0] and out["n"] == n
    five = spearman(np.arange(5.0), np.arange(5.0) ** 3)
    assert five["rho"] == pytest.approx(1.0) and five["ci"] == pytest.approx([1.0, 1.0])


def test_log_y_axes_are_labelled_over_their_range():
    """A log axis spanning 0.0015–0.05 holds one power of ten: it gets its 2s and 5s labelled too, each label the
    value at its tick; a wide axis labels only its powers of ten."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from sfbench.report.figures import plain_log_y

    def labels(lo: float, hi: float) -> dict[float, str]:
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ax.plot([0, 1], [lo, hi])
        ax.set_yscale("log")
        ax.set_ylim(lo, hi)
        plain_log_y(ax)
        fig.canvas.draw()
        ticks = ax.yaxis.get_major_ticks() + ax.yaxis.get_minor_ticks()
        return {t.get_loc(): t.label1.get_text() for t in ticks
                if t.label1.get_visible() and t.label1.get_text() and lo <= t.get_loc() <= hi}

    narrow = labels(0.0015, 0.05)
    assert len(narrow) >= 5, narrow
    for loc, text in narrow.items():
        assert float(text) == pytest.approx(loc, rel=1e-6)
    assert {0.002, 0.005, 0.01, 0.02} <= {round(v, 6) for v in narrow}
    wide = labels(1e-4, 1.0)
    assert {round(v, 8) for v in wide} == {1e-4, 1e-3, 1e-2, 1e-1, 1.0}


def test_wandb_line_plots_keep_caps_on_their_own_axis(tmp_path):
    """The report run's W&B lr-sensitivity line plots: base-lr methods on one chart, SF-Polyak (opt.lr is a cap) on
    another; every line is its method's final metrics against log10(opt.lr), and every fit chart is the run's
    evaluated metric against its fitted curve."""
    from types import SimpleNamespace

    from sfbench.report import analyze, load
    from sfbench.report.runs import comparable_runs
    from sfbench.report.wandb_report import line_plots

    root = tmp_path / "lines"
    lrs = (0.01, 0.03, 0.1)
    written = {}
    for choice, extra in ONE_CLASS.items():
        for lr in lrs:
            written[(choice, lr)] = write_run(root / f"{choice}-{lr}", schedule="constant", lr=lr, seed=0, opt=SF_ADAM,
                                              opt_choice=choice, opt_extra=extra)
    runs = load(root)
    result = analyze(runs)
    fake = SimpleNamespace(plot=SimpleNamespace(line_series=lambda **kw: kw))
    charts = line_plots(fake, comparable_runs(runs), result["prediction"]["best_lr"])
    assert {k for k in charts if not k.startswith("report/fit/")} == {"report/lr/logreg", "report/cap/logreg"}
    lines = {"lr": ("sf_adamw", "sf_schedulet"), "cap": ("sf_polyak_adam",)}
    for role, methods in lines.items():
        chart = charts[f"report/{role}/logreg"]
        assert [k.split(" ")[0] for k in chart["keys"]] == list(methods)
        for method, xs, ys in zip(methods, chart["xs"], chart["ys"]):
            assert xs == pytest.approx([math.log10(lr) for lr in lrs])
            assert ys == pytest.approx([written[(method, lr)]["metric"][-1] for lr in lrs])
    assert "cap" in charts["report/cap/logreg"]["xname"] and "predicted" not in charts["report/cap/logreg"]["keys"][0]
    assert all("predicted best" in k for k in charts["report/lr/logreg"]["keys"])
    fits = {k: v for k, v in charts.items() if k.startswith("report/fit/")}
    assert len(fits) == len(ONE_CLASS) * len(lrs)
    # long names (Hydra's, every override) become short keys that stay distinct
    from sfbench.report.wandb_report import KEY_TAIL, chart_key

    long = "opt.lr=0.1,opt.weighting=lr,opt=sf_sgd,sched=constant,task.batch_size=16,task=logreg,trainer.steps="
    keys = {chart_key("report/fit/", long + str(n), {}) for n in (1000, 2000)}
    assert len(keys) == 2 and all(len(k) <= len("report/fit/") + KEY_TAIL for k in keys)
    assert chart_key("report/fit/", "a", {"report/fit/a": 1}) == "report/fit/a_2"
    steps = np.arange(EVAL_EVERY, T + 1, EVAL_EVERY)
    for (choice, lr), w in written.items():
        chart = fits[f"report/fit/{choice}-{lr}"]
        assert chart["xs"][0] == list(steps) and chart["ys"][0] == pytest.approx(w["metric"][steps - 1])
        assert len(chart["ys"][1]) == len(steps)


def test_report_does_not_import_training_code():
    """DESIGN.md rooms: sfbench.report depends on theory, tracking and matplotlib, never on training code."""
    code = ("import sys, sfbench.report, sfbench.report.figures, sfbench.report.wandb_report; "
            "bad = [m for m in ('torch', 'sfbench.train', 'sfbench.optim', 'sfbench.tasks', 'sfbench.cli', "
            "'matplotlib.pyplot') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------------------------------
def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "sfbench.report", *map(str, args)], check=False, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_cli_missing_or_empty_dir(tmp_path, make):
    target = tmp_path / "nothing"
    if make == "empty":
        target.mkdir()
    out = _cli(target)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(target) in lines[0]
    assert not (target / "report").exists()


def test_cli_unknown_metric(sweep):
    root, _, _ = sweep
    out = _cli(root, "--metric", "eval/nope", "--out", root / "r2", "--no-wandb")
    assert out.returncode == 2 and "Traceback" not in out.stderr and "eval/nope" in out.stderr


# ---------------------------------------------------------------------------------------------------------------------
# W&B, offline, no account
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    isolate_wandb(tmp_path, monkeypatch)
    return dict(os.environ)


@pytest.mark.slow
def test_wandb_offline_summary_run(tmp_path, wandb_offline, capsys):
    """Runs logged with the W&B sink → the CLI logs one offline report run, prints its folder, which exists and
    holds the run's transaction log, in the sweep's group with job_type "report"."""
    root = tmp_path / "wb"
    for s in ("constant", "cosine"):
        for lr in (0.03, 0.1, 0.3):
            # run directories named as Hydra names them: every override (W&B caps artifact names at 128 characters)
            write_run(root / f"opt.lr={lr},opt.weighting=lr,opt=sf_sgd,sched={s},task.batch_size=16,task=logreg,"
                             f"trainer.steps=1000", schedule=s, lr=lr, seed=0, group="wbgroup",
                      logger="sfbench.tracking.wandb_sink.WandbSink")
    from sfbench.report.__main__ import main

    assert main([str(root)]) == 0                     # no --wandb: the runs' logger config asks for W&B
    out = capsys.readouterr()
    m = re.search(r"\(offline\) at (.+)$", out.out, re.MULTILINE)
    assert m, out.out + out.err
    run_dir = Path(m.group(1))
    assert run_dir.is_dir() and run_dir.name.startswith("offline-run-")
    assert run_dir.is_relative_to(root / "report")
    [log] = list(run_dir.glob("*.wandb"))
    assert log.stat().st_size > 0
    report = json.loads((root / "report" / "report.json").read_text())
    assert report["wandb"]["mode"] == "offline" and report["wandb"]["group"] == "wbgroup"
    assert Path(report["wandb"]["dir"]) == run_dir
    # what W&B itself reads back from the transaction log
    inspect = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                             check=False, capture_output=True, text=True, timeout=120, env=wandb_offline)
    assert inspect.returncode == 0, inspect.stderr
    records = [json.loads(line) for line in inspect.stdout.splitlines() if line.strip()]
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run.get("run_group") == "wbgroup" and run.get("job_type") == "report"
    items: dict = {}
    for r in records:
        if r["type"] == "history":
            items.update(r["history"]["item"])
    logged = {k.split(".")[0] for k in items}
    figures = {f"report/{Path(f['file']).stem}" for f in report["figures"]}
    assert figures and figures <= logged
    assert all(items[f"{k}._type"] == "image-file" for k in figures)
    for table in ("report/best_lr", "report/correlations", "report/runs", "report/fitted_curves"):
        assert items[f"{table}._type"] == "table-file"
    assert items["report/runs.nrows"] == 6
    assert items["report/fitted_curves.nrows"] == 6 * (T // EVAL_EVERY)   # every run's fitted curve
    # W&B line plots, not only PNGs: observed against fitted per run, and the lr sensitivity
    config = {}
    for r in records:
        if r["type"] == "config":
            config.update({u["key"] if "key" in u else k: u for k, u in r["config"].get("update", {}).items()})
    charts = {k.removeprefix("_wandb.visualize."): v for k, v in config.items() if k.startswith("_wandb.visualize.")}
    fits = {k for k in charts if k.startswith("report/fit/")}
    assert len(fits) == 6 and "report/lr/logreg" in charts
    for key in fits | {"report/lr/logreg"}:
        assert charts[key]["panel_config"]["panelDefId"] == "wandb/lineseries/v0"
        assert items[f"{key}_table._type"] == "table-file"
    # each fit chart holds two lines (observed, fitted) of one point per evaluation
    assert {items[f"{k}_table.nrows"] for k in fits} == {2 * (T // EVAL_EVERY)}
    # the report made again continues the same W&B run (one run per report directory, not one per call)
    first_id = report["wandb"]["id"]
    assert main([str(root)]) == 0
    assert json.loads((root / "report" / "report.json").read_text())["wandb"]["id"] == first_id
    assert first_id == run.get("run_id", first_id)


def _select(filters: list[dict], config: dict, group: str) -> bool:
    """Evaluate a W&B run-set filter (v2 format, equality only) on a run's nested config, as the W&B server would."""
    for f in filters:
        key, value = f["key"], f["value"]
        assert f["op"] == "="
        if key["section"] == "run":
            assert key["name"] == "group"
            have = group
        else:
            head, middle, *rest = key["name"].split(".")
            assert middle == "value"                              # nested configs: <top>.value.<rest>
            have = config.get(head)
            for part in rest:
                have = have.get(part) if isinstance(have, dict) else None
        if have != value:
            return False
    return True


@pytest.mark.slow
def test_wandb_dashboard_spec_offline(tmp_path, wandb_offline, capsys, monkeypatch):
    """--wandb-dashboard without an account writes the dashboard's spec: per method a run set that selects exactly
    that method's runs (checked by evaluating its filters on the run configs), a line plot of the metric with
    theory/bound, lr sensitivity; a prediction table with every method. --publish-dashboard saves it."""
    import yaml

    root = tmp_path / "dash"
    lrs = (0.01, 0.03, 0.1)
    for choice, extra in ONE_CLASS.items():
        for lr in lrs:
            write_run(root / f"{choice}-{lr}", schedule="constant", lr=lr, seed=0, opt=SF_ADAM, opt_choice=choice,
                      opt_extra=extra, group="dashgroup", logger="sfbench.tracking.wandb_sink.WandbSink")
    from sfbench.report.__main__ import main

    assert main([str(root), "--wandb-dashboard", "--no-wandb"]) == 0
    out = capsys.readouterr().out
    spec_path = root / "report" / "wandb_dashboard.json"
    assert f"wrote its spec to {spec_path}" in out
    assert f"--publish-dashboard {spec_path} --wandb-entity YOUR_ENTITY" in out
    assert "select no runs" not in out                                    # the runs were logged to W&B
    data = json.loads(spec_path.read_text())
    report = json.loads((root / "report" / "report.json").read_text())
    assert data["group"] == "dashgroup" and data["project"] == "sfbench" and report["wandb_dashboard"]["mode"] == "offline"
    blocks = data["spec"]["spec"]["blocks"]
    configs = {d.name: (yaml.safe_load((d / "config.yaml").read_text()), d.name) for d in root.iterdir()
               if (d / "config.yaml").is_file()}
    methods = {m["method"]: m for m in report["methods"]}
    every = [b for b in blocks if b["type"] == "panel-grid"]
    # comparison first: each method at its best lr, then every method against the lr, then one grid per method
    [at_best, *_] = every
    best = {b["method"]: b["observed"] for b in report["prediction"]["best_lr"]}
    assert sorted(r["name"] for r in at_best["metadata"]["runSets"]) == \
        sorted(f"{m} @ {best[m]:.3g}" for m in methods)
    for runset in at_best["metadata"]["runSets"]:
        method = runset["name"].split(" @ ")[0]
        selected = {name for name, (cfg, _) in configs.items()
                    if _select(runset["filters"]["filters"], cfg, cfg["group"])}
        assert selected == {f"{method}-{best[method]}"}                   # the method's best run, only
    grids = [b for b in every if [r["name"] for r in b["metadata"]["runSets"]] in [[m] for m in methods]]
    assert len(grids) == len(methods) == 3 and every.index(grids[0]) > every.index(at_best)
    for grid in grids:
        [runset] = grid["metadata"]["runSets"]
        selected = {name for name, (cfg, _) in configs.items()
                    if _select(runset["filters"]["filters"], cfg, cfg["group"])}
        method = runset["name"]
        assert selected == {f"{method}-{lr}" for lr in lrs}               # exactly its runs: never pooled
        panels = grid["metadata"]["panelBankSectionConfig"]["panels"]
        lines = [p["config"] for p in panels if p["viewType"] == "Run History Line Plot"]
        assert any(c["metrics"] == ["eval/subopt", "theory/bound"] and c["xAxis"] == "step" for c in lines)
        [scatter] = [p["config"] for p in panels if p["viewType"] == "Scatter Plot"]
        assert scatter["xAxis"] == "config:opt.value.lr" and scatter["yAxis"] == "summary:eval/subopt"
    text = json.dumps([b for b in blocks if b["type"] not in ("panel-grid",)])
    for b in report["prediction"]["best_lr"]:
        assert f"| {b['method']} |" in text
        if b["predicted"] is not None:
            assert f"{b['predicted']:.3g}" in text
    assert "none (adaptive step)" in text                                  # SF-Polyak: a cap, no prediction

    # publishing: the spec is loaded back into a wandb_workspaces Report and saved under the given entity
    import wandb_workspaces.reports.v2 as wr

    saved = []
    monkeypatch.setattr(wr.Report, "save", lambda self, **kw: saved.append(self) or self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: f"https://wandb.example/{self.entity}/{self.project}"))
    assert main(["--publish-dashboard", str(spec_path), "--wandb-entity", "me"]) == 0
    assert "W&B dashboard saved: https://wandb.example/me/sfbench" in capsys.readouterr().out
    [dash] = saved
    grids = [b for b in dash.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 3 + 3 and all(r.entity == "me" and r.project == "sfbench" for g in grids for r in g.runsets)
    assert main(["--publish-dashboard", str(tmp_path / "nope.json")]) == 2

    # runs trained with logger=none: the spec is written, and the user is told its run sets will be empty
    quiet = tmp_path / "quiet"
    for lr in lrs:
        write_run(quiet / f"sf_adamw-{lr}", schedule="constant", lr=lr, seed=0, opt=SF_ADAM, opt_choice="sf_adamw")
    assert main([str(quiet), "--wandb-dashboard"]) == 0
    out = capsys.readouterr().out
    assert (quiet / "report" / "wandb_dashboard.json").is_file() and "select no runs" in out and "logger=wandb" in out


# ---------------------------------------------------------------------------------------------------------------------
# a real browser
# ---------------------------------------------------------------------------------------------------------------------
def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


def _screenshot(browser: str, page: Path, png: Path) -> None:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--hide-scrollbars", "--window-size=1280,2000",
           f"--screenshot={png}", page.absolute().as_uri()]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and png.is_file(), out.stderr[-2000:]


def _colored_pixels(png: Path) -> tuple[np.ndarray, int]:
    import matplotlib.image as mpimg

    img = mpimg.imread(png)[..., :3].astype(np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    saturation = img.max(axis=2) - img.min(axis=2)                       # grey text and borders: ≈ 0
    return img, int((saturation > 0.25).sum())


@pytest.mark.slow
def test_report_renders_in_chromium(sweep, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("Chromium not found, and CI is set: install it (apt-get install -y chromium)")
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    root, _, _ = sweep
    out = root / "report"
    page = out / "report.html"
    shot = tmp_path / "report.png"
    _screenshot(browser, page, shot)
    img, colored = _colored_pixels(shot)
    assert img.shape[0] >= 1000 and img.shape[1] >= 1000
    assert img.var() > 0
    assert (img.min(axis=2) < 0.9).mean() > 0.01                         # not a blank white page
    # the same page with its images broken: whatever colour the page has without the PNGs
    control = out / "report_noimg.html"
    control.write_text(re.sub(r'src="([^"]+)"', r'src="missing-\1"', page.read_text()))
    try:
        shot2 = tmp_path / "control.png"
        _screenshot(browser, control, shot2)
    finally:
        control.unlink()
    _, colored_without = _colored_pixels(shot2)
    # the plots' coloured lines come from the PNGs: without them the page has (almost) none
    assert colored > 5000 and colored > 10 * (colored_without + 100), (colored, colored_without)


@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="a read-only bind mount needs root")
def test_a_sweep_on_a_read_only_file_system(tmp_path):
    """Reading is fine, writing the report there is not: one line naming the path and the remedy (exit 1); with
    --out elsewhere the report is written."""
    root = tmp_path / "ro"
    write_run(root / "a", schedule="constant", lr=0.1, seed=0)
    if subprocess.run(["mount", "--bind", str(root), str(root)], capture_output=True).returncode != 0:
        pytest.skip("mount --bind is not allowed here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(root)], check=True)
        out = _cli(root, "--no-wandb")
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        [line] = out.stderr.strip().splitlines()
        assert f"could not write {root / 'report'}: Read-only file system" in line and "--out" in line
        elsewhere = _cli(root, "--no-wandb", "--out", tmp_path / "out")
        assert elsewhere.returncode == 0, elsewhere.stderr
        assert (tmp_path / "out" / "report.html").is_file()
    finally:
        subprocess.run(["umount", str(root)], check=True)


@pytest.mark.slow
def test_a_four_method_sweep_is_compared_first_in_chromium(tmp_path):
    """Four methods (three sharing SFAdamW, one SF-Polyak whose lr is a cap) × three lrs: the page opens with the two
    comparison figures, each drawing every method, and Chromium renders them (their colours come from the PNGs)."""
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail("Chromium not found, and CI is set: install it (apt-get install -y chromium)")
        pytest.skip("Chromium not installed (apt-get install -y chromium)")
    root = tmp_path / "four"
    choices = {**ONE_CLASS, "sf_adamw_copy": ONE_CLASS["sf_adamw"]}
    for choice, extra in choices.items():
        for lr in (0.01, 0.03, 0.1):
            write_run(root / f"{choice}-{lr}", schedule="constant", lr=lr, seed=0, opt=SF_ADAM, opt_choice=choice,
                      opt_extra=extra)
    report = build_report(root, wandb=False)
    first = report["figures"][:2]
    assert [f["kind"] for f in first] == ["best", "lr_all"]
    for fig in first:
        assert sorted(fig["methods"]) == sorted(choices), fig
    page = root / "report" / "report.html"
    html_text = page.read_text()
    assert html_text.index(first[0]["file"]) < html_text.index(first[1]["file"]) < html_text.index("curves_")
    shot = tmp_path / "page.png"
    _screenshot(browser, page, shot)
    img, colored = _colored_pixels(shot)
    top = img[:1400]                                 # the comparison figures come right after the methods table
    assert int(((top.max(axis=2) - top.min(axis=2)) > 0.25).sum()) > 3000, colored
