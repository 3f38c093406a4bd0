"""sfbench.theory.bounds against docs/theory.md section C: closed forms, the literal sums, and [C1] holding on a
convex problem."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from sfbench.optim import SFSGD, make_schedule
from sfbench.tasks.testbeds import LogRegTask
from sfbench.theory import (c2_best, c2_bound, closed_form_integrals, schedule_integrals, sf_bound,
                            sgd_last_iterate_bound)


def naive_c3(eta, G2, D):
    """[C3] exactly as written, with 1-based t, k (O(T²) here; the library's is O(T))."""
    T = len(eta)
    e = lambda t: eta[t - 1]                                  # noqa: E731
    g = lambda t: G2[t - 1]                                   # noqa: E731
    total_eta = sum(e(t) for t in range(1, T + 1))
    out = D ** 2 / (2 * total_eta) + sum(e(t) ** 2 * g(t) for t in range(1, T + 1)) / (2 * total_eta)
    for k in range(1, T):
        out += 0.5 * (e(k) / sum(e(t) for t in range(k + 1, T + 1))) * (
            sum(e(t) ** 2 * g(t) for t in range(k, T + 1)) / sum(e(t) for t in range(k, T + 1)))
    return out


def test_c3_equals_the_literal_triple_sum():
    rng = np.random.default_rng(0)
    eta, G2 = rng.uniform(0.01, 1, 60), rng.uniform(0.1, 5, 60)
    assert sgd_last_iterate_bound(eta, G2, 2.0) == pytest.approx(naive_c3(eta, G2, 2.0), rel=1e-12)


def test_c3_constant_schedule_closed_form():
    """η_t = η, G_t = G: D²/(2Tη) + ηG²/2 · (1 + H_{T−1})."""
    T, eta, G, D = 500, 0.05, 3.0, 1.5
    harmonic = sum(1 / k for k in range(1, T))
    expected = D ** 2 / (2 * T * eta) + eta * G ** 2 / 2 * (1 + harmonic)
    assert sgd_last_iterate_bound(np.full(T, eta), np.full(T, G ** 2), D) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("name, options, w, d", [
    ("constant", {}, 0.0, 0.0),
    ("cosine", {}, 0.0, 0.0),
    ("wsd", {"decay_frac": 0.2}, 0.0, 0.2),
    ("wsd", {"decay_frac": 0.3, "warmup_steps": 5000}, 0.05, 0.3),
])
def test_c2_matches_c1_at_constant_gradient_norm(name, options, w, d):
    T, gamma, G, D = 100_000, 0.01, 2.0, 3.0
    h = make_schedule(name, total_steps=T, **options).array()
    c1 = sf_bound(gamma * h, np.full(T, G ** 2), D)[-1]
    A, B = schedule_integrals(h)
    assert c2_bound(gamma, T, D, G, A, B) == pytest.approx(c1, rel=1e-12)        # the same sums, exactly
    A_c, B_c = closed_form_integrals(name, w, d)
    assert (A, B) == pytest.approx((A_c, B_c), rel=2e-3)                            # continuum limit
    assert c2_bound(gamma, T, D, G, A_c, B_c) == pytest.approx(c1, rel=2e-3)


def test_c2_best_step_minimises_the_bound():
    T, D, G, A, B = 1000, 2.0, 1.5, 0.6, 0.47
    gamma_star, best = c2_best(T, D, G, A, B)
    assert c2_bound(gamma_star, T, D, G, A, B) == pytest.approx(best, rel=1e-12)
    for factor in (0.5, 0.9, 1.1, 2.0):
        assert c2_bound(factor * gamma_star, T, D, G, A, B) > best


@pytest.mark.parametrize("schedule", ["constant", "wsd", "cosine"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
def test_c1_holds_at_every_step_on_logistic_regression(schedule, beta):
    """SF with the theorem's weighting (`schedulet`), full batch: f(x_T) − f* ≤ (D² + Σ_{t≤T} γ_t²‖g_t‖²)/(2Σ_{t≤T}γ_t)
    with ‖g_t‖ taken at y_t — the sums to T inclusive: γ_T from the schedule, g_T at y_T computed here."""
    task = LogRegTask(n=300, d=10, reg=1e-3, seed=1)
    task.setup(torch.device("cpu"))
    model = task.model()
    opt = SFSGD(model.parameters(), lr=0.5, momentum=beta, weighting="schedulet")
    T = 200
    schedule = make_schedule(schedule, total_steps=T, warmup_steps=10 if schedule == "wsd" else 0)
    sched = schedule.lr_scheduler(opt)
    gam = 0.5 * schedule.array(T + 1)
    D = float(torch.linalg.vector_norm(task.w0 - task.x_star))
    grad_sq, subopt = [], []
    for step in range(T + 1):
        loss, _ = task.loss(model, task.batch(step))
        opt.zero_grad()
        loss.backward()
        grad_sq.append(float(model.w.grad @ model.w.grad))
        if step == T:
            break
        opt.step()
        assert opt.param_groups[0]["last_lr"] == pytest.approx(gam[step], rel=1e-14)
        sched.step()
        opt.eval()
        subopt.append(float(task.objective(model.w.detach())) - task.f_star)
        opt.train()
    num = D ** 2 + np.cumsum(gam ** 2 * np.array(grad_sq))
    bound = num[1:] / (2 * np.cumsum(gam)[1:])          # element T−1: the bound on x_T
    assert np.all(np.array(subopt) <= bound * (1 + 1e-9)), np.max(np.array(subopt) / bound)
    assert subopt[-1] < subopt[0]
    # the naive reading, sums to T − 1 (sf_bound), is a different number
    assert not np.allclose(sf_bound(gam[:T], grad_sq[:T], D), bound)
