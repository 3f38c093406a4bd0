"""`sfbench.theory.predict` and `python -m sfbench.theory predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sfbench.optim import make_schedule
from sfbench.theory import c2_best, closed_form_integrals, sf_bound, sgd_last_iterate_bound
from sfbench.theory.__main__ import main
from sfbench.theory.predict import lr_grid, predict


def run_predict(argv, capsys):
    try:
        main(["predict", *argv])
    except SystemExit as exit_:
        return exit_.code, capsys.readouterr()
    return 0, capsys.readouterr()


@pytest.mark.parametrize("name, options", [("constant", {}), ("cosine", {}), ("wsd", {"decay_frac": 0.2})])
def test_c1_prediction_is_c2_for_named_schedules(name, options):
    """With the discrete A, B → [C2]'s closed forms as T grows: γ* = D/(G√(TB)), bound D G √B/(A √T)."""
    T, D, G = 20000, 3.0, 0.7
    p = predict(make_schedule(name, total_steps=T, **options).array(), D, G, "C1")
    A, B = closed_form_integrals(name, decay_frac=options.get("decay_frac", 0.0))
    best_lr, best = c2_best(T, D, G, A, B)
    assert p.best_lr == pytest.approx(best_lr, rel=2e-3)
    assert p.best_bound == pytest.approx(best, rel=2e-3)


@pytest.mark.parametrize("kind", ["C1", "C3"])
@pytest.mark.parametrize("name", ["constant", "cosine", "wsd", "linear"])
def test_best_lr_minimises_the_bound_of_the_run_itself(kind, name):
    """The predicted γ* is the minimiser of the very bound the trainer logs ([C1] / [C3] with ‖g_t‖ = G)."""
    T, D, G = 400, 2.0, 1.5
    h = make_schedule(name, total_steps=T).array()
    p = predict(h, D, G, kind)

    def logged_bound(lr):
        if kind == "C1":
            return sf_bound(lr * h, np.full(T, G * G), D)[-1]
        return sgd_last_iterate_bound(lr * h, np.full(T, G * G), D)

    grid = np.geomspace(p.best_lr / 30, p.best_lr * 30, 2001)
    values = np.array([logged_bound(lr) for lr in grid])
    assert grid[values.argmin()] == pytest.approx(p.best_lr, rel=5e-3)
    assert values.min() == pytest.approx(p.best_bound, rel=1e-6)
    assert p.bound_at(3 * p.best_lr) == pytest.approx(logged_bound(3 * p.best_lr), rel=1e-9)


def test_lr_grid_is_centred_and_geometric():
    grid = lr_grid(0.1, 5, 3.0)
    assert grid[2] == pytest.approx(0.1) and len(grid) == 5
    assert np.allclose(np.diff(np.log(grid)), np.log(3.0), rtol=1e-2)
    with pytest.raises(ValueError):
        lr_grid(0.1, 5, 1.0)


def test_bad_arguments_to_predict():
    with pytest.raises(ValueError, match="D"):
        predict(np.ones(5), -1.0, 1.0)
    with pytest.raises(ValueError, match="kind"):
        predict(np.ones(5), 1.0, 1.0, "C9")


def test_cli_with_given_d_and_g_needs_no_pilot(in_run_env, capsys):
    code, out = run_predict(["task=logreg", "opt=sf_sgd", "sched=cosine", "trainer.steps=1000", "--D", "4",
                             "--G", "2", "--grid", "5", "--json"], capsys)
    assert code == 0, out.err
    result = json.loads(out.out)
    h = make_schedule("cosine", total_steps=1000).array()
    assert result["best_lr"] == pytest.approx(4 / (2 * np.sqrt((h * h).sum())))
    assert result["grid"][2] == pytest.approx(result["best_lr"], rel=1e-2)
    assert result["sweep_command"].startswith("python -m sfbench -m task=logreg opt=sf_sgd sched=cosine")
    assert "pilot" not in out.err


def test_cli_pilot_estimates_g_and_takes_the_task_d(in_run_env, capsys):
    code, out = run_predict(["task=logreg", "opt=sgd", "sched=wsd", "trainer.steps=500", "logger=none",
                             "--pilot-steps", "20", "--json"], capsys)
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["kind"] == "C3" and result["D_source"] == "task (exact)" and "pilot" in result["G_source"]
    assert result["best_lr"] > 0 and result["best_bound"] > 0
    assert not (in_run_env / "runs").exists()       # the pilot leaves no run record behind


@pytest.mark.parametrize("argv, message", [
    (["task=cifar"], "task='cifar' is not an option"),
    (["task=logreg", "opt.lr=-1", "--D", "1", "--G", "1"], "opt.lr"),
    (["task=logreg", "--D", "-1", "--G", "1"], "--D"),
    (["task=logreg", "opt=sf_polyak", "--D", "1", "--G", "1"], "picks its own step size"),
    (["task=logreg", "--pilot-steps", "0"], "--pilot-steps"),
])
def test_cli_bad_input(in_run_env, capsys, argv, message):
    code, out = run_predict(argv, capsys)
    assert code == 2
    assert message in out.err and "Traceback" not in out.err


def test_cli_gives_no_best_lr_without_an_independent_d(in_run_env, capsys):
    """task=nonconvex knows no D: the distance a pilot travels grows with its lr, so no best lr is predicted from it
    (said so, exit 0); with --D it is, from the same function as the report."""
    base = ["task=nonconvex", "opt=sf_sgd", "sched=constant", "trainer.steps=300", "logger=none", "--pilot-steps", "10"]
    code, out = run_predict([*base, "--json"], capsys)
    assert code == 0, out.err
    result = json.loads(out.out)
    assert result["best_lr"] is None and result["independent"] is False
    assert "no independent prediction" in result["note"] and result["G"] > 0
    code, out = run_predict([*base, "--D", "3", "--json"], capsys)
    result = json.loads(out.out)
    assert code == 0 and result["independent"] and result["D_source"] == "--D"
    h = make_schedule("constant", total_steps=300).array()
    assert result["best_lr"] == pytest.approx(predict(h, 3.0, result["G"], "C1").best_lr)
