"""The bound every run logs (docs/theory.md [C1], [C3]; sfbench.train.online_bound) and the fit stored with it ([C4]).

Here on full-batch logistic regression (convex, exact f* and D), through the CLI and the trainer: the SGD base at
three base steps, where the bound is tight enough (suboptimality/bound up to ~0.25) that a wrong bound would be
caught, and the Adam base, which is logged as a heuristic. The non-smooth problems, every schedule, β and averaging
mode are in tests/test_online_to_batch.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from sfbench.optim import SFSGD, SFAdamW, make_schedule
from sfbench.tasks.testbeds import LogRegTask, QuadraticTask
from sfbench.theory import sgd_last_iterate_bound
from sfbench.train import CHECKPOINT, Trainer, TrainerConfig

from test_cli import metric_rows, only_run, run_cli

STEPS = 150


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train(tmp_path, task, make_opt, sched="constant", steps=STEPS, name="run", **cfg):
    config = TrainerConfig(**{"steps": steps, "eval_every": 1, "ckpt_every": 0, "log_every_s": 1e9, **cfg})
    schedule = make_schedule(sched, total_steps=steps) if sched else None
    trainer = Trainer(config, task, make_opt, schedule.lr_scheduler if schedule else None, tmp_path / name,
                      {"name": name})
    return trainer.run(), rows_of(tmp_path / name)


@pytest.mark.parametrize("sched", ["constant", "wsd", "cosine"])
def test_logreg_schedulet_suboptimality_below_logged_bound(in_run_env, sched):
    """Through the CLI: task=logreg full batch, SF-SGD with the theorem's weighting, exact D: a "bound" that holds."""
    assert run_cli(["task=logreg", "opt=sf_sgd", "opt.weighting=schedulet", f"sched={sched}", "logger=none",
                    f"trainer.steps={STEPS}", "trainer.eval_every=1"]) == 0
    run_dir = only_run(in_run_env)
    rows = metric_rows(run_dir)
    assert len(rows) == STEPS
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["theory"]["bound"] == "C1" and summary["theory"]["D_source"] == "task"
    assert summary["theory"]["bound_kind"] == "bound" and summary["theory"]["bound_notes"] == []
    assert summary["theory"]["D"] == pytest.approx(summary["task"]["D"])
    for r in rows:
        assert r["theory/bound_kind"] == "bound" and r["eval/subopt"] <= r["theory/bound"], r


def test_adam_schedulet_is_logged_as_a_heuristic(in_run_env):
    """`opt=sf_schedulet` (Adam base): the P-norm formula is logged, labelled a heuristic with the reason."""
    assert run_cli(["task=logreg", "opt=sf_schedulet", "logger=none", "trainer.steps=30", "trainer.eval_every=10"]) == 0
    run_dir = only_run(in_run_env)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["theory"]["bound_kind"] == "heuristic"
    assert any("Adam base" in note for note in summary["theory"]["bound_notes"])
    assert all(r["theory/bound_kind"] == "heuristic" for r in metric_rows(run_dir))


@pytest.mark.parametrize("lr", [0.5, 5.0, 50.0])
@pytest.mark.parametrize("sched", ["constant", "wsd", "cosine"])
def test_sgd_base_bound_holds_and_is_not_vacuous(tmp_path, sched, lr):
    task = LogRegTask()         # the task=logreg default: n=500, d=20, λ=1e-3, 10% labels flipped
    summary, rows = train(tmp_path, task, lambda ps: SFSGD(ps, lr=lr, weighting="schedulet"), sched)
    assert summary["theory"]["bound_kind"] == "bound"
    ratios = [r["eval/subopt"] / r["theory/bound"] for r in rows]
    assert max(ratios) <= 1.0
    assert max(ratios) > 0.05     # a bound 20× too loose everywhere would not be a test (measured: 0.09–0.25)
    if lr <= 5:   # where the D² term dominates, D/3 in place of D breaks [C1]: D is doing real work
        D = summary["theory"]["D"]
        gam = np.array([r["lr"] for r in rows])
        nxt = lr * make_schedule(sched, total_steps=STEPS).array(STEPS + 1)[1:]
        g2 = np.array([r["theory/grad_sq"] for r in rows])
        G2 = np.array([r["theory/G"] for r in rows]) ** 2
        wrong = ((D / 3) ** 2 + np.cumsum(gam ** 2 * g2) + nxt ** 2 * G2) / (2 * (gam[0] + np.cumsum(nxt)))
        assert any(r["eval/subopt"] > w for r, w in zip(rows, wrong))


def test_adam_norm_matches_the_optimizer_state_at_every_step():
    """At every step t, ‖g_t‖²_P = Σ g_t² / (sqrt(v_t / (1 − β2^{t+1})) + ε) with v_t as stored after the step —
    computed here from the state, independently of the update kernel that reports it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).double()
    opt = SFAdamW(model.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-6, weighting="lr")
    opt.record_grad_sq = True
    for t in range(6):
        inp = torch.randn(8, 5, dtype=torch.float64)
        opt.zero_grad()
        model(inp).square().mean().backward()
        opt.step()
        expected = sum(float((p.grad ** 2 / ((opt.state[p]["exp_avg_sq"] / (1 - 0.99 ** (t + 1))).sqrt() + 1e-6))
                             .sum()) for p in model.parameters())
        assert opt.last_grad_sq_P == pytest.approx(expected, rel=1e-12), t


def test_adam_base_logs_the_preconditioned_norm(tmp_path):
    """‖g‖²_P (Adam base, [C1]) is Σ g² / (sqrt(v_t / (1 − β2^{t+1})) + ε) with v_t including g_t."""
    task = LogRegTask(n=200, d=8, seed=0)
    summary, rows = train(tmp_path, task, lambda ps: SFAdamW(ps, lr=0.01, weighting="lr"), steps=3)
    task.setup(torch.device("cpu"))
    w = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(task.objective(w), w)
    v = (1 - 0.999) * g * g
    expected = float((g * g / ((v / (1 - 0.999)).sqrt() + 1e-8)).sum())
    assert rows[0]["theory/grad_sq"] == pytest.approx(expected, rel=1e-9)
    assert rows[0]["theory/grad_sq"] != pytest.approx(rows[0]["train/grad_norm_sq"], rel=1e-3)


def test_baselines_log_c3_at_checkpoints_of_the_run(tmp_path):
    task = QuadraticTask(n=50, d=20, noise=0.1, seed=0)
    summary, rows = train(tmp_path, task, lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.0), "cosine",
                          steps=120, eval_every=40)
    assert summary["theory"]["bound"] == "C3"
    lrs = [r["lr"] for r in rows]
    g2 = [r["theory/grad_sq"] for r in rows]
    assert all(g == pytest.approx(r["train/grad_norm_sq"]) for g, r in zip(g2, rows))
    logged = [(r["step"], r["theory/bound"], r["theory/G"]) for r in rows if "theory/bound" in r]
    assert {40, 80, 120} <= {s for s, _, _ in logged}
    schedule = 0.02 * make_schedule("cosine", total_steps=120).array(121)
    for step, bound, G in logged:      # [C3] on the iterate after `step` steps: one more step and its gradient bound
        nxt = schedule[step] if schedule[step] > 0 else lrs[step - 1]
        assert bound == pytest.approx(sgd_last_iterate_bound(lrs[:step] + [nxt], g2[:step] + [G * G],
                                                             summary["theory"]["D"]), rel=1e-8)
    # plain SGD's last iterate on a convex problem stays below its [C3] bound
    for r in rows:
        if "theory/bound" in r and "eval/subopt" in r:
            assert r["eval/subopt"] <= r["theory/bound"]


def test_distance_estimate_without_task_D(tmp_path):
    """No D from the task: D is max_s ‖x_s − x_0‖ (x the averaged point for SF), non-decreasing."""
    task = LogRegTask(n=200, d=8, seed=0)
    original = task.summary
    task.summary = lambda: {k: v for k, v in original().items() if k != "D"}
    summary, rows = train(tmp_path, task, lambda ps: SFSGD(ps, lr=2.0, momentum=0.9, weighting="lr"),
                          steps=40, theory_d_every=1)
    assert summary["theory"]["D_source"] == "distance"
    ds = [r["theory/D"] for r in rows]
    assert all(b >= a for a, b in zip(ds, ds[1:])) and ds[-1] > 0
    # at the end the estimate is at least the distance of the final x from x_0 (the saved model is x)
    x_final = torch.load(tmp_path / "run" / "model.pt")["w"]
    assert ds[-1] >= float(torch.linalg.vector_norm(x_final - task.w0)) - 1e-12
    assert summary["theory"]["bound_kind"] == "heuristic"
    assert any("D is estimated" in note for note in summary["theory"]["bound_notes"])


@pytest.mark.parametrize("make_opt", [lambda ps: SFSGD(ps, lr=1.0, weighting="lr"),
                                      lambda ps: torch.optim.SGD(ps, lr=0.5, momentum=0.9)], ids=["C1", "C3"])
def test_resumed_run_logs_the_same_theory(tmp_path, make_opt):
    """Preempted and resumed: the accumulators (and [C3]'s history) come back from the checkpoint, the metrics equal
    an uninterrupted run."""
    def make():
        task = LogRegTask(n=200, d=8, seed=0)
        task.summary = (lambda s=task.summary: {k: v for k, v in s().items() if k != "D"})
        return task

    full, rows_full = train(tmp_path, make(), make_opt, steps=30, name="full", ckpt_every=10)
    cfg = TrainerConfig(steps=30, eval_every=1, ckpt_every=10, log_every_s=1e9)
    schedule = make_schedule("constant", total_steps=30)
    trainer = Trainer(cfg, make(), make_opt, schedule.lr_scheduler, tmp_path / "cut", {"name": "cut"})
    original_after = trainer.record.log
    def stop_at_17(metrics):
        original_after(metrics)
        if metrics["step"] == 17:
            trainer.stops.request(15)
    trainer.record.log = stop_at_17
    assert trainer.run()["status"] == "preempted"
    assert (tmp_path / "cut" / CHECKPOINT).exists()
    again = Trainer(cfg, make(), make_opt, schedule.lr_scheduler, tmp_path / "cut", {"name": "cut"})
    assert again.run()["status"] == "completed"
    rows_cut = rows_of(tmp_path / "cut")
    keys = ("theory/S1", "theory/S2", "theory/D", "theory/bound", "eval/subopt")
    assert [[r.get(k) for k in keys] for r in rows_cut] == [[r.get(k) for k in keys] for r in rows_full]
    assert sum("theory/bound" in r for r in rows_cut) >= 3


def test_fit_is_stored_with_the_run(tmp_path):
    task = LogRegTask(n=300, d=10, seed=1)
    summary, rows = train(tmp_path, task, lambda ps: SFSGD(ps, lr=5.0, weighting="lr"), "wsd")
    fit = summary["theory"]["fit"]
    assert fit["target"] == "eval/subopt" and fit["n_used"] == STEPS and fit["M"] >= 0
    stored = json.loads((tmp_path / "run" / "theory_fit.json").read_text())
    assert stored["steps"] == [r["step"] for r in rows]
    fitted, observed = np.array(stored["fitted"]), np.array(stored["observed"])
    # the fitted bound follows the curve far better than a constant does
    assert np.mean((fitted - observed) ** 2) < 0.25 * np.var(observed)


def test_theory_off_logs_nothing_and_a_bad_value_is_refused(tmp_path, in_run_env, capsys):
    task = LogRegTask(n=100, d=5, seed=0)
    summary, rows = train(tmp_path, task, lambda ps: SFSGD(ps, lr=1.0), steps=5, theory=False)
    assert not any(k.startswith("theory/") for r in rows for k in r) and summary.get("theory") is None
    for bad, key in (("trainer.theory=maybe", "trainer.theory"), ("trainer.theory_d_every=0", "trainer.theory_d_every")):
        assert run_cli(["task=logreg", "logger=none", bad]) == 2
        assert key in capsys.readouterr().err
    assert not (in_run_env / "runs").exists() or not any((in_run_env / "runs").iterdir())


def test_diverged_run_still_gets_a_fit_or_a_clear_insufficient(tmp_path):
    task = LogRegTask(n=100, d=5, seed=0)
    summary, rows = train(tmp_path, task, lambda ps: torch.optim.SGD(ps, lr=1e6), steps=20)
    assert summary["status"] == "diverged" and summary["steps_done"] == 1
    fit = summary["theory"]["fit"]       # one finite point before the blow-up: no fit, said so, nothing raised
    assert fit["method"] == "insufficient" and "a fit needs" in fit["message"] and fit["C"] is None
    stored = json.loads((tmp_path / "run" / "theory_fit.json").read_text())
    assert stored["observed"][-1] is None or math.isfinite(stored["observed"][-1])   # valid JSON, NaN as null
