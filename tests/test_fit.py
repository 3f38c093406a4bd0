"""[C4] fits (sfbench/theory/fit.py): known (C, M, D) and G-param exponents are recovered from synthetic curves.

The curves are built from the bound's definition, loss_T = C + M (D² a_T + b_T), with a, b computed here from
cumulative sums (not through bound_terms), so a wrong a/b in the module would show up as a failed recovery.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from sfbench.theory import sf_bound, sgd_last_iterate_curve
from sfbench.theory.fit import BoundFit, bound_terms, fit_bound

T = 2000
C_TRUE, M_TRUE, D_TRUE = 0.05, 0.7, 2.5
HORIZONS = np.arange(10, T + 1, 10)                      # e.g. the eval steps


def wsd(T: int, base: float = 0.05, decay: float = 0.3) -> np.ndarray:
    t = np.arange(T)
    d = int(decay * T)
    return base * np.where(t < T - d, 1.0, (T - t) / d)


def grad_sq_power(T: int, G: float = 2.0, p: float = -0.3) -> np.ndarray:
    return G ** 2 * np.arange(1, T + 1, dtype=np.float64) ** p


def c1_terms(lrs, gsq, horizons):
    s1, s2 = np.cumsum(lrs)[horizons - 1], np.cumsum(lrs ** 2 * gsq)[horizons - 1]
    return 1 / (2 * s1), s2 / (2 * s1)


def curve(a, b, C=C_TRUE, M=M_TRUE, D=D_TRUE):
    return C + M * (D ** 2 * a + b)


@pytest.fixture(scope="module")
def problem():
    lrs, gsq = wsd(T), grad_sq_power(T)
    a, b = c1_terms(lrs, gsq, HORIZONS)
    return lrs, gsq, a, b, curve(a, b)


# ---------------------------------------------------------------------------------------------------------------------
def test_bound_terms_match_the_bounds():
    rng = np.random.default_rng(0)
    lrs, gsq = wsd(300) * rng.uniform(0.5, 1.5, 300), rng.uniform(0.5, 2.0, 300)
    for D in (0.0, 1.3):
        a, b = bound_terms("C1", lrs, gsq)
        np.testing.assert_allclose(D ** 2 * a + b, sf_bound(lrs, gsq, D), rtol=1e-12)
        hz = np.array([1, 2, 50, 123, 300])
        a3, b3 = bound_terms("C3", lrs, gsq, hz)
        np.testing.assert_allclose(D ** 2 * a3 + b3, sgd_last_iterate_curve(lrs, gsq, D, hz), rtol=1e-12)
    with pytest.raises(ValueError, match="kind"):
        bound_terms("C2", lrs, gsq)
    with pytest.raises(ValueError, match="horizons"):
        bound_terms("C1", lrs, gsq, [0, 5])
    with pytest.raises(ValueError, match="same length"):
        bound_terms("C1", lrs, gsq[:-1])


def test_exact_recovery(problem):
    _, _, a, b, y = problem
    for robust in (True, False):
        fit = fit_bound(y, a, b, robust=robust)
        assert isinstance(fit, BoundFit) and fit.ok and not fit.D_fixed
        assert fit.C == pytest.approx(C_TRUE, rel=1e-6)
        assert fit.M == pytest.approx(M_TRUE, rel=1e-6)
        assert fit.D == pytest.approx(D_TRUE, rel=1e-6)
        np.testing.assert_allclose(fit.curve, y, rtol=1e-8)
        assert fit.n_used == len(y) and fit.n_dropped == 0 and fit.rmse < 1e-8
        assert fit.method == ("huber" if robust else "lsq")
    fit = fit_bound(y, a, b, D=D_TRUE)
    assert fit.D_fixed and fit.D == D_TRUE
    assert (fit.C, fit.M) == (pytest.approx(C_TRUE, rel=1e-6), pytest.approx(M_TRUE, rel=1e-6))


def test_wrong_D_given_is_visible_in_the_fit(problem):
    _, _, a, b, y = problem
    good, bad = fit_bound(y, a, b, D=D_TRUE), fit_bound(y, a, b, D=0.3 * D_TRUE)
    assert bad.rmse > 100 * good.rmse + 1e-6


def test_constraints_hold():
    """A curve that rises like −bound would need M < 0; the fit stays at M ≥ 0 (a constant) and says so."""
    lrs, gsq = wsd(T), grad_sq_power(T)
    a, b = c1_terms(lrs, gsq, HORIZONS)
    fit = fit_bound(1.0 - curve(a, b), a, b)
    assert fit.M >= 0 and fit.ok
    assert fit.M == 0 and "M = 0" in fit.message
    np.testing.assert_allclose(fit.curve, fit.C)


def test_noise_and_spikes(problem):
    """Gaussian noise: (C, M, D) within a few per cent. Spikes on top of it: the robust fit stays where the
    noise-only fit was, plain least squares is pulled away. Spikes alone: the robust fit is exact."""
    _, _, a, b, y = problem
    worst = 0.0
    for seed in range(5):
        rng = np.random.default_rng(seed)
        noisy = y + 1e-3 * rng.standard_normal(len(y))
        spikes = rng.choice(len(y), 6, replace=False)
        bump = 0.5 * y[spikes] + 0.1
        spiky = noisy.copy()
        spiky[spikes] += bump
        clean_spiky = y.copy()
        clean_spiky[spikes] += bump

        base = fit_bound(noisy, a, b)
        rob = fit_bound(spiky, a, b)
        ls = fit_bound(spiky, a, b, robust=False)
        for fit in (base, rob):
            assert fit.C == pytest.approx(C_TRUE, abs=2e-3)
            assert fit.M == pytest.approx(M_TRUE, rel=0.08)
            assert fit.D == pytest.approx(D_TRUE, rel=0.05)
        assert abs(rob.D - base.D) < 0.02 * D_TRUE and abs(rob.M - base.M) < 0.03 * M_TRUE
        worst = max(worst, abs(ls.D - D_TRUE) / D_TRUE)
        exact = fit_bound(clean_spiky, a, b)
        assert (exact.C, exact.M, exact.D) == (pytest.approx(C_TRUE, rel=1e-4), pytest.approx(M_TRUE, rel=1e-4),
                                               pytest.approx(D_TRUE, rel=1e-4))
    assert worst > 0.1                                                   # the spikes do matter without the robust loss


@pytest.mark.parametrize("p_true, D_given", [(-0.3, None), (0.4, None), (-0.6, D_TRUE)])
def test_G_param_recovers_p(p_true, D_given):
    lrs = wsd(T)
    gsq = grad_sq_power(T, G=2.0, p=p_true)
    a, b = c1_terms(lrs, gsq, HORIZONS)
    y = curve(a, b)
    fit = fit_bound(y, a, b, D=D_given, G_param=True, lrs=lrs, horizons=HORIZONS)
    assert fit.method == "huber+G"
    assert fit.p == pytest.approx(p_true, abs=1e-3)
    assert fit.G == pytest.approx(2.0, rel=1e-3)
    assert fit.C == pytest.approx(C_TRUE, rel=1e-4)
    assert fit.M == pytest.approx(M_TRUE, rel=1e-3) and fit.D == pytest.approx(D_TRUE, rel=1e-3)
    # with noise the exponent is still found to within a small fraction of the grid's range [−2, 1] (for p < −1 it
    # would not be: Σ γ_t² (t+1)^p converges, b̃ becomes ∝ a, and p trades off against D)
    rng = np.random.default_rng(3)
    noisy = y + 1e-3 * rng.standard_normal(len(y))
    noisy[rng.choice(len(y), 4, replace=False)] += 0.3
    fit = fit_bound(noisy, a, b, D=D_given, G_param=True, lrs=lrs, horizons=HORIZONS)
    assert fit.p == pytest.approx(p_true, abs=0.2)


def test_G_param_replaces_observed_gradients():
    """The observed ‖g‖² is noisy around G²(t+1)^p: a fit that uses it gets the noise, the G-param fit the law."""
    lrs = wsd(T)
    smooth = grad_sq_power(T, G=2.0, p=-0.5)
    a, b_true = c1_terms(lrs, smooth, HORIZONS)
    y = curve(a, b_true)
    jittered = smooth * np.random.default_rng(1).uniform(0.2, 1.8, T)
    a2, b_obs = c1_terms(lrs, jittered, HORIZONS)
    fit = fit_bound(y, a2, b_obs, G_param=True, lrs=lrs, horizons=HORIZONS)
    assert fit.p == pytest.approx(-0.5, abs=0.02)
    with pytest.raises(ValueError, match="lrs"):
        fit_bound(y, a, b_true, G_param=True)
    with pytest.raises(ValueError, match="horizons"):
        fit_bound(y, a, b_true, G_param=True, lrs=lrs)


def test_divergence_tail_is_ignored(problem):
    _, _, a, b, y = problem
    clean = fit_bound(y, a, b)
    k = 150
    for tail_end in ("nan", "finite"):
        div = y.copy()
        with np.errstate(over="ignore"):
            div[k:] = y[k] * 1.6 ** np.arange(1, len(y) - k + 1)       # blows up ...
        if tail_end == "nan":
            div[k + 30] = np.inf
            div[k + 31:] = np.nan                                       # ... to inf, then NaN
        else:
            div = div[: k + 8]                                          # ... stopped early: no NaN, < 100× first
            assert np.all(div < 100 * abs(div[0]))
        n = len(div)
        fit = fit_bound(div, a[:n], b[:n])
        assert fit.n_used == k and fit.n_dropped == n - k
        assert not fit.used[k:].any()
        assert (fit.C, fit.M, fit.D) == (pytest.approx(clean.C, rel=1e-6), pytest.approx(clean.M, rel=1e-6),
                                         pytest.approx(clean.D, rel=1e-6))
        assert np.all(np.isfinite(fit.curve))                           # the fitted curve continues over the tail
    # a spike in the middle is not a divergence
    spiky = y.copy()
    spiky[80:82] *= 5
    fit = fit_bound(spiky, a, b)
    assert fit.n_used == len(y)


def test_insufficient_points_do_not_raise(problem):
    _, _, a, b, y = problem
    for n in (0, 1, 3):
        fit = fit_bound(y[:n], a[:n], b[:n])
        assert fit.method == "insufficient" and not fit.ok
        assert np.isnan(fit.C) and np.isnan(fit.M) and np.isnan(fit.D)
        assert fit.curve.shape == (n,) and np.all(np.isnan(fit.curve))
    y5 = y[:5].copy()
    y5[[1, 3]] = np.nan
    assert fit_bound(y5, a[:5], b[:5], robust=False).method == "insufficient"
    assert fit_bound(np.full(50, np.nan), a[:50], b[:50]).method == "insufficient"
    g = fit_bound(y[:3], a[:3], b[:3], G_param=True, lrs=wsd(T), horizons=HORIZONS[:3])
    assert g.method == "insufficient" and np.isnan(g.p)
    json.dumps(fit.to_dict(curve=True), allow_nan=False)


def test_to_dict_is_json_safe(problem):
    _, _, a, b, y = problem
    fit = fit_bound(y, a, b)
    d = fit.to_dict()
    assert "curve" not in d and set(d) >= {"C", "M", "D", "rmse", "n_used", "n_dropped", "method"}
    s = json.dumps(fit.to_dict(curve=True), allow_nan=False)
    assert len(json.loads(s)["curve"]) == len(y)
    g = fit_bound(y, a, b, G_param=True, lrs=wsd(T), horizons=HORIZONS).to_dict()
    assert {"p", "G"} <= set(g)


def test_argument_errors(problem):
    _, _, a, b, y = problem
    with pytest.raises(ValueError, match="one length"):
        fit_bound(y, a[:-1], b)
    with pytest.raises(ValueError, match="D="):
        fit_bound(y, a, b, D=-1.0)


def test_fast_enough_for_the_trainer():
    """The trainer fits at the end of every run: well under 100 ms for 10k points (noisy, robust)."""
    n = 10_000
    lrs, gsq = wsd(n), grad_sq_power(n)
    a, b = bound_terms("C1", lrs, gsq)
    y = curve(a, b) + 1e-3 * np.random.default_rng(0).standard_normal(n)
    fit_bound(y, a, b)
    best = min(_timed(lambda: fit_bound(y, a, b)) for _ in range(3))
    assert best < 0.1, best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_m_is_zero_only_when_the_fitted_curve_is_constant():
    """A falling curve made of the D² term alone, beside a gradient term that grows (gradient norms growing with t):
    the best non-negative fit gives the gradient term no weight. Its curve falls, so M must not be reported as 0 with
    "fit is a constant"; M and D are then not identified apart (M → 0, D → ∞ with M·D² fixed), and the fit says so.
    A flat curve is still M = 0 and a constant."""
    lrs = np.full(T, 0.05)
    a, b = c1_terms(lrs, np.arange(1, T + 1, dtype=np.float64) ** 1.5, HORIZONS)
    K = 40.0
    falling = 1.0 + K * a                                  # from 1 + K/(2·0.05·10) = 41 down to 1.2
    fit = fit_bound(falling, a, b, robust=False)
    assert np.nanmax(fit.curve) - np.nanmin(fit.curve) > 30            # the fitted curve falls, as the data does
    np.testing.assert_allclose(fit.curve, falling, rtol=1e-6)
    assert fit.M != 0 and "constant" not in fit.message
    assert "not identified" in fit.message and f"{K:.4g}" in fit.message
    assert json.loads(json.dumps(fit.to_dict()))["M"] is None
    flat = fit_bound(np.full(len(a), 3.0), a, b, robust=False)
    assert flat.M == 0 and "constant" in flat.message
    np.testing.assert_allclose(flat.curve, 3.0)
