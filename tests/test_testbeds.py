"""The testbeds where theory is exact: optimum by a direct solver, exact suboptimality logged at x."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfbench.tasks.testbeds import LogRegTask, NonconvexTask, QuadraticTask
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
