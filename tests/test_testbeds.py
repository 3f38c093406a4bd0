"""The testbeds where theory is exact: optimum by a direct solver, exact suboptimality logged at x."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfbench.tasks.testbeds import HingeTask, LADTask, LogRegTask, NonconvexTask, QuadraticTask
from sfbench.tracking import read_summary
from test_cli import metric_rows, only_run, run_cli

RUN = ["logger=none", "trainer.steps=60", "trainer.eval_every=20", "trainer.ckpt_every=0"]


def test_quadratic_optimum_is_the_normal_equations_solution():
    task = QuadraticTask(n=80, d=10, noise=0.3, seed=3)
    task.setup(torch.device("cpu"))
    A, b = task.A.numpy(), task.targets.numpy()
    x = np.linalg.solve(A.T @ A, A.T @ b)                     # independent solver
    np.testing.assert_allclose(task.x_star.numpy(), x, rtol=1e-9, atol=1e-12)
    assert task.f_star == pytest.approx(0.5 * np.mean((A @ x - b) ** 2), rel=1e-12)


def test_interpolating_quadratic_has_zero_optimum():
    task = QuadraticTask(n=20, d=50, noise=0.0)
    task.setup(torch.device("cpu"))
    assert task.f_star < 1e-25


def test_logreg_optimum_is_stationary_and_minimal():
    task = LogRegTask(n=300, d=8, reg=1e-2, seed=1)
    task.setup(torch.device("cpu"))
    A, y, lam = task.A.numpy(), task.targets.numpy(), task.reg
    x = task.x_star.numpy()
    s = 1 / (1 + np.exp(y * (A @ x)))
    grad = -(A.T @ (y * s)) / len(y) + lam * x                 # ∇f by hand
    assert np.linalg.norm(grad) < 1e-10
    rng = np.random.default_rng(0)
    f = lambda w: np.mean(np.logaddexp(0, -y * (A @ w))) + 0.5 * lam * w @ w   # noqa: E731
    assert all(f(x + 1e-3 * rng.standard_normal(8)) > task.f_star for _ in range(20))


@pytest.mark.parametrize("task_name, opt", [("quadratic", "sf_sgd"), ("logreg", "sf_schedulet"),
                                            ("quadratic", "sf_polyak"), ("logreg", "adamw")])
def test_logged_suboptimality_matches_the_saved_x(in_run_env, task_name, opt):
    """The final eval/subopt equals f(x) − f* computed with numpy from model.pt (the model at x)."""
    lr = {"sf_sgd": "opt.lr=0.5", "sf_schedulet": "opt.lr=0.05", "sf_polyak": "opt.lr=10", "adamw": "opt.lr=0.05"}
    assert run_cli([*RUN, f"task={task_name}", f"opt={opt}", lr[opt]]) == 0
    run_dir = only_run(in_run_env)
    summary = read_summary(run_dir)
    assert summary["status"] == "completed"
    rows = metric_rows(run_dir)
    final = rows[-1]
    task = QuadraticTask() if task_name == "quadratic" else LogRegTask()
    task.setup(torch.device("cpu"))
    x = torch.load(run_dir / "model.pt")["w"].numpy()
    A, t = task.A.numpy(), task.targets.numpy()
    if task_name == "quadratic":
        f_x = 0.5 * np.mean((A @ x - t) ** 2)
    else:
        f_x = np.mean(np.logaddexp(0, -t * (A @ x))) + 0.5 * task.reg * x @ x
    assert final["eval/subopt"] == pytest.approx(f_x - task.f_star, rel=1e-9, abs=1e-15)
    assert final["eval/dist_sq"] == pytest.approx(float(np.sum((x - task.x_star.numpy()) ** 2)), rel=1e-9)
    assert summary["task"]["D"] == pytest.approx(float(np.linalg.norm(task.x_star.numpy())), rel=1e-12)
    assert final["eval/subopt"] < rows[0]["train/loss"] - task.f_star       # it made progress
    # full batch: the lower bound handed to SF-Polyak is f* itself, and train/loss is f at y
    assert all(r["train/lower_bound"] == pytest.approx(task.f_star) for r in rows)


def test_nonconvex_logs_gradient_norm_at_x_and_minibatches_are_deterministic(in_run_env):
    args = [*RUN, "task=nonconvex", "opt=sf_sgd", "opt.lr=1.0", "task.batch_size=32"]
    assert run_cli([*args, "hydra.run.dir=a"]) == 0
    assert run_cli([*args, "hydra.run.dir=b"]) == 0
    a, b = metric_rows(in_run_env / "a"), metric_rows(in_run_env / "b")
    assert a == b
    evals = [r for r in a if "eval/grad_norm_sq" in r]
    assert len(evals) == 3 and evals[-1]["eval/grad_norm_sq"] < evals[0]["eval/grad_norm_sq"]
    task = NonconvexTask(reg=0.1, init="normal", init_scale=3.0)
    task.setup(torch.device("cpu"))
    assert task.objective(task.w0) > 0 and task.x_star is None


@pytest.mark.parametrize("args, key", [
    (["task=quadratic", "task.batch_size=1000"], "task.batch_size=1000"),
    (["task=logreg", "task.reg=0"], "task.reg=0"),
    (["task=logreg", "task.label_noise=0.7"], "task.label_noise=0.7"),
    (["task=quadratic", "task.d=0"], "task.d=0"),
    (["task=nonconvex", "task.init=ones"], "task.init='ones'"),
    (["task=lad", "task.noise=-1"], "task.noise=-1"),
    (["task=hinge", "task.label_noise=0.7"], "task.label_noise=0.7"),
    (["task=hinge", "task.reg=-0.1"], "task.reg=-0.1"),
])
def test_bad_testbed_settings(in_run_env, capsys, args, key):
    assert run_cli(["logger=none", *args]) == 2
    assert key in capsys.readouterr().err


def test_underdetermined_quadratic_optimum_is_where_gradient_descent_goes():
    """n < d, random w₀: the minimisers form an affine set; x* (and D, dist_sq) must be the one GD from w₀ reaches."""
    task = QuadraticTask(n=20, d=50, init="normal", seed=2)
    task.setup(torch.device("cpu"))
    A, b, w = task.A.numpy(), task.targets.numpy(), task.w0.numpy().copy()
    L = np.linalg.norm(A, 2) ** 2 / len(b)
    for _ in range(20000):                                     # plain GD in numpy, independent of the solver
        w -= (A.T @ (A @ w - b) / len(b)) / L
    np.testing.assert_allclose(task.x_star.numpy(), w, atol=1e-8)
    assert task.summary()["D"] == pytest.approx(float(np.linalg.norm(task.w0.numpy() - w)), rel=1e-7)


# -- the non-smooth testbeds (LP optimum) -------------------------------------------------------------------------

def numpy_problem(task):
    """f and one subgradient of the LAD / hinge objective, written with numpy (independent of the task's torch code)."""
    A, b = task.A.numpy(), task.targets.numpy()
    n = len(b)
    if task.name == "lad":
        return (lambda w: np.abs(A @ w - b).mean()), (lambda w: A.T @ np.sign(A @ w - b) / n)
    lam = task.reg
    f = lambda w: np.maximum(0.0, 1 - b * (A @ w)).mean() + lam * np.abs(w).sum()            # noqa: E731
    g = lambda w: -(A.T @ (b * (1 - b * (A @ w) > 0))) / n + lam * np.sign(w)                 # noqa: E731
    return f, g


@pytest.mark.parametrize("make", [lambda: LADTask(), lambda: HingeTask(), lambda: LADTask(n=300, d=30, seed=3),
                                  lambda: HingeTask(reg=0.0, seed=2)], ids=["lad", "hinge", "lad-300x30", "hinge-noreg"])
def test_lp_optimum_agrees_with_a_long_subgradient_run(make):
    """f* from linprog equals what 25 000 normalised subgradient steps with geometrically shrinking steps (which
    converge linearly on these sharp, piecewise-linear objectives) reach, to 1e-6 — and nothing gets below it."""
    task = make()
    task.setup(torch.device("cpu"))
    f, g = numpy_problem(task)
    w, step, best = np.zeros(task.d), 1.0, np.inf
    for _ in range(25_000):
        best = min(best, f(w))
        gk = g(w)
        norm = np.linalg.norm(gk)
        if norm == 0:
            break
        w, step = w - step * gk / norm, step * 0.9995
    assert best >= task.f_star - 1e-9                           # the LP optimum is not beaten
    assert best - task.f_star < 1e-6                            # and the long run reaches it
    assert task.f_star == pytest.approx(f(task.x_star.numpy()), rel=1e-14)
    assert task.summary()["D"] == pytest.approx(float(np.linalg.norm(task.x_star.numpy())), rel=1e-12)


@pytest.mark.parametrize("cls", [LADTask, HingeTask])
@pytest.mark.parametrize("batch_size", [None, 16])
def test_lipschitz_constant_and_gradient_bound_hold(cls, batch_size):
    """G (summary) bounds every subgradient the steps can take; `gradient_bound` bounds the next one at w."""
    task = cls(n=200, d=10, batch_size=batch_size, seed=4)
    task.setup(torch.device("cpu"))
    G = task.summary()["G"]
    model = task.model()
    rng = np.random.default_rng(0)
    for k in range(30):
        with torch.no_grad():
            model.w.copy_(torch.as_tensor(rng.standard_normal(10) * 3))
        batch = task.batch(k)
        loss, _ = task.loss(model, batch)
        (grad,) = torch.autograd.grad(loss, model.w)
        norm = float(torch.linalg.vector_norm(grad))
        assert norm <= G * (1 + 1e-12)
        assert norm <= task.gradient_bound(model) * (1 + 1e-12)
    assert task.summary()["convex"] is True and task.summary()["stochastic"] is (batch_size is not None)


@pytest.mark.parametrize("task_name", ["lad", "hinge"])
def test_lp_testbeds_log_the_exact_suboptimality(in_run_env, task_name):
    assert run_cli([*RUN, f"task={task_name}", "opt=sf_sgd", "opt.lr=1.0"]) == 0
    run_dir = only_run(in_run_env)
    final = metric_rows(run_dir)[-1]
    task = LADTask() if task_name == "lad" else HingeTask()
    task.setup(torch.device("cpu"))
    f, _ = numpy_problem(task)
    x = torch.load(run_dir / "model.pt")["w"].numpy()
    assert final["eval/subopt"] == pytest.approx(f(x) - task.f_star, rel=1e-9, abs=1e-15)
    assert 0 < final["eval/subopt"] < f(np.zeros(task.d)) - task.f_star
    assert read_summary(run_dir)["task"]["G"] == pytest.approx(task.summary()["G"])
