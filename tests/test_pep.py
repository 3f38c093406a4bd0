"""sfbench.pep: PEPs for schedule-free SGD on L-smooth nonconvex functions (docs/theory.md section D, [A1]–[A5]).

The checks are against theory and independent constructions, not against numbers this module printed:
GD's closed form and PEPit's own GD example, heavy-ball written out by hand (SF with β = 1, [A] properties), the
bound holding on concrete smooth functions run in numpy, and the solver cross-checked by a second solver.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from sfbench.pep import coefficients, problems, sweep, worst_case
from sfbench.pep.__main__ import main as cli_main
from sfbench.pep.__main__ import parse_horizons

REL = 1e-5          # interior-point (Clarabel) accuracy on these small SDPs is ~1e-8; leave room


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty PEP cache: no test passes because another one solved first."""
    monkeypatch.setenv("SFBENCH_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- (1) GD: poly averaging with α = 0 is x = z = y

@pytest.mark.parametrize("T", [1, 2, 3, 4])
def test_poly_alpha0_is_gradient_descent_closed_form(T):
    """α = 0 gives c ≡ 1, so x = z = y ([A] properties): plain GD with γ = 1/L, whose exact nonconvex worst case is
    min_t ‖∇f(x_t)‖² ≤ 4 L Δ / (3 T) (Abbaszadehpeivasti, de Klerk, Zamani 2021; PEPit's GD example)."""
    for beta in (1.0, 0.3):                     # β cannot matter when x = z
        res = worst_case("sf_poly", T, alpha=0.0, beta=beta, gamma=1.0, use_cache=False)
        assert res["status"] == "optimal"
        assert res["value"] == pytest.approx(4.0 / (3.0 * T), rel=REL)


def test_poly_alpha0_matches_pepit_gd_example_other_step_and_scale():
    """Same PEP as PEPit's own example (independently written) at a step other than 1/L and L, Δ ≠ 1."""
    from PEPit.examples.nonconvex_optimization.gradient_descent import wc_gradient_descent

    L, gamma, T, delta = 2.0, 0.7, 3, 1.0       # the example fixes Δ = 1
    ref, _ = wc_gradient_descent(L=L, gamma=gamma / L, n=T, wrapper="cvxpy", solver="CLARABEL", verbose=-1)
    ours = worst_case("sf_poly", T, alpha=0.0, gamma=gamma / L, L=L, delta=delta, use_cache=False)
    assert ours["value"] == pytest.approx(ref, rel=REL)
    # The SDP is homogeneous in (Gram, f-values): the worst case is linear in Δ.
    ours3 = worst_case("sf_poly", T, alpha=0.0, gamma=gamma / L, L=L, delta=3.0, use_cache=False)
    assert ours3["value"] == pytest.approx(3.0 * ref, rel=REL)


# ------------------------------------------------------ (2) β = 1 is heavy-ball momentum (SFN Thms 1–2, [A] props)

def _heavy_ball_pep(T: int, a, b) -> float:
    """x_{t+1} = x_t − a_t g_t + b_t (x_t − x_{t−1}), gradients at the x_t, same class, metric and initial condition."""
    from PEPit import PEP
    from PEPit.functions import SmoothFunction

    problem = PEP()
    func = problem.declare_function(SmoothFunction, L=1.0)
    x_prev = x = problem.set_initial_point()
    g, f0 = func.oracle(x)
    problem.set_performance_metric(g ** 2)
    for t in range(T):
        x_prev, x = x, x - a[t] * g + b[t] * (x - x_prev)
        g, fx = func.oracle(x)
        problem.set_performance_metric(g ** 2)
    problem.set_initial_condition(f0 - fx <= 1.0)
    return problem.solve(wrapper="cvxpy", solver="CLARABEL", verbose=0)


@pytest.mark.parametrize("method,gamma", [("sf_constant", 1.0), ("sf_constant", 0.5), ("sf_linear", 0.25)])
def test_beta1_uniform_is_heavy_ball(method, gamma):
    """With β = 1 and uniform averaging c_{t+1} = 1/(t+1): a_t = γ_t/(t+1), b_t = (t−1)/(t+1) ([A] properties)."""
    T = 4
    gammas, cs = coefficients(method, T, gamma=gamma)
    assert np.allclose(cs, 1.0 / np.arange(1, T + 1))
    a = [gammas[t] / (t + 1) for t in range(T)]
    b = [(t - 1) / (t + 1) for t in range(T)]
    ref = _heavy_ball_pep(T, a, b)
    res = worst_case(method, T, beta=1.0, gamma=gamma, use_cache=False)
    assert res["value"] == pytest.approx(ref, rel=REL)


@pytest.mark.parametrize("method", ["sf_constant", "sf_linear"])
@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
def test_first_step_is_a_gradient_step(method, beta):
    """c_1 = 1 gives x_1 = z_1 = y_1 = x_0 − γ_0 g_0 for every β: T = 1 is GD's T = 1, worst case 4/3 at γ = 1/L."""
    assert worst_case(method, 1, beta=beta, gamma=1.0, use_cache=False)["value"] == pytest.approx(4 / 3, rel=REL)


def test_sf_differs_from_gd_after_the_first_step():
    """Not everything collapses to GD: at T = 3 uniform averaging changes the worst case."""
    sf = worst_case("sf_constant", 3, beta=1.0, gamma=1.0, use_cache=False)["value"]
    assert abs(sf - 4.0 / 9.0) > 1e-2


def _rls_form_pep(T: int, beta: float, gammas, cs) -> float:
    """SF in the (y, z) form of RLS's storage trick ([A] "Storage trick"), written independently of [A1]/[A4]:
    y_{t+1} = (1 − c) y_t + c z_t − γ_t (1 − β (1 − c)) g_t,  z_{t+1} = z_t − γ_t g_t,  x_T = (y_T − (1 − β) z_T)/β."""
    from PEPit import PEP
    from PEPit.functions import SmoothFunction

    problem = PEP()
    func = problem.declare_function(SmoothFunction, L=1.0)
    y = z = problem.set_initial_point()
    g, f0 = func.oracle(y)
    problem.set_performance_metric(g ** 2)
    for t in range(T):
        c, gam = float(cs[t]), float(gammas[t])
        y, z = (1 - c) * y + c * z - gam * (1 - beta * (1 - c)) * g, z - gam * g
        g, _ = func.oracle(y)
        problem.set_performance_metric(g ** 2)
    x = (1.0 / beta) * (y - (1 - beta) * z)
    problem.set_initial_condition(f0 - func.value(x) <= 1.0)
    return problem.solve(wrapper="cvxpy", solver="CLARABEL", verbose=0)


@pytest.mark.parametrize("method,beta", [("sf_constant", 0.7), ("sf_poly", 0.3), ("sf_linear", 0.9)])
def test_general_beta_matches_storage_trick_form(method, beta):
    """For β ∈ (0, 1) (x_T is then not a gradient point): the same worst case as the (y, z) recursion."""
    T, gamma = 3, (0.25 if method == "sf_linear" else 1.0)
    gammas, cs = coefficients(method, T, gamma=gamma, alpha=0.5)
    ref = _rls_form_pep(T, beta, gammas, cs)
    res = worst_case(method, T, beta=beta, gamma=gamma, alpha=0.5, use_cache=False)
    assert res["value"] == pytest.approx(ref, rel=REL)


@pytest.mark.parametrize("gamma", [0.25, 0.5])
def test_xz_distance_at_T2_is_a_gd_gradient(gamma):
    """Assumption 2's PEP at T = 2 by hand: with β = 1, γ_t = γ(t+1), c = 1/(t+1): x_1 = z_1 = x_0 − γ g_0,
    z_2 = z_1 − 2γ g_1, x_2 = (x_1 + z_2)/2 = x_1 − γ g_1 (two GD steps of size γ) and x_2 − z_2 = γ g_1, so the worst
    case is γ² max ‖∇f(x_1)‖² over GD runs with f(x_0) − f(x_2) ≤ 1; and at T = 1, x_1 = z_1 gives 0."""
    from PEPit import PEP
    from PEPit.functions import SmoothFunction

    problem = PEP()
    func = problem.declare_function(SmoothFunction, L=1.0)
    x0 = problem.set_initial_point()
    g0, f0 = func.oracle(x0)
    x1 = x0 - gamma * g0
    g1, _ = func.oracle(x1)
    x2 = x1 - gamma * g1
    problem.set_initial_condition(f0 - func.value(x2) <= 1.0)
    problem.set_performance_metric(g1 ** 2)
    ref = gamma ** 2 * problem.solve(wrapper="cvxpy", solver="CLARABEL", verbose=0)
    assert worst_case("xz_distance", 2, beta=1.0, gamma=gamma, use_cache=False)["value"] == pytest.approx(ref, rel=REL)
    assert worst_case("xz_distance", 1, beta=1.0, gamma=gamma, use_cache=False)["value"] == pytest.approx(0, abs=1e-7)


def test_linear_growth_coefficients():
    """[A5] with w_t = γ_t = γ(t+1): c_{t+1} = 2/(t+2), and c_1 = 1 for every averaging."""
    gammas, cs = coefficients("sf_linear", 5, gamma=0.5, averaging="lr")
    assert np.allclose(gammas, 0.5 * np.arange(1, 6))
    assert np.allclose(cs, 2.0 / (np.arange(5) + 2.0))
    _, cs_poly = coefficients("sf_poly", 5, gamma=1.0, alpha=0.5)
    assert cs_poly[0] == 1.0 and np.allclose(cs_poly, np.arange(1, 6) ** -0.5)


# --------------------------------------------------- the PEP value bounds concrete runs on smooth functions (numpy)

def _smooth_function(rng, d: int = 3, m: int = 5):
    """A random L-smooth nonconvex f = Σ a_i cos(⟨w_i, x⟩ + b_i) + ½ xᵀQx, scaled so that L ≤ 1 (the bound
    Σ |a_i| ‖w_i‖² + ‖Q‖ on the Hessian's norm is made 1)."""
    a, w, b = rng.normal(size=m), rng.normal(size=(m, d)) * 2.0, rng.uniform(0, 2 * np.pi, m)
    Q = rng.normal(size=(d, d))
    Q = (Q + Q.T) / 2
    s = 1.0 / (np.sum(np.abs(a) * np.sum(w ** 2, axis=1)) + np.max(np.abs(np.linalg.eigvalsh(Q))))

    def f(x):
        return s * (np.sum(a * np.cos(w @ x + b)) + 0.5 * x @ Q @ x)

    def grad(x):
        return s * (-(a * np.sin(w @ x + b)) @ w + Q @ x)

    return f, grad


def _run_sf(f, grad, x0, gammas, cs, beta):
    """[A1]–[A4] in numpy. Returns (min_t ‖∇f(y_t)‖² for t = 0 … T, f(x_0) − f(x_T), ‖x_T − z_T‖²)."""
    x = z = y = x0.copy()
    g = grad(y)
    norms = [g @ g]
    for gam, c in zip(gammas, cs):
        z = z - gam * g
        x = (1 - c) * x + c * z
        y = (1 - beta) * z + beta * x
        g = grad(y)
        norms.append(g @ g)
    return min(norms), f(x0) - f(x), float((x - z) @ (x - z))


@pytest.mark.parametrize("method,beta,gamma,alpha", [("sf_constant", 1.0, 1.0, 0.5), ("sf_constant", 0.8, 1.0, 0.5),
                                                     ("sf_poly", 0.3, 1.0, 0.5), ("xz_distance", 1.0, 0.25, 0.5),
                                                     ("sf_increasing", 1.0, 1.0, 0.5), ("sf_increasing", 0.6, 0.5, 0.0)])
def test_worst_case_bounds_concrete_runs(method, beta, gamma, alpha):
    """For any 1-smooth f, metric ≤ W · (f(x_0) − f(x_T)) with W the PEP value at Δ = 1 (the SDP is homogeneous in
    Δ). A wrong iterate in the PEP (β, c, γ_t, where f(x_T) is taken) would let some run exceed it."""
    T = 4
    W = worst_case(method, T, beta=beta, gamma=gamma, alpha=alpha, use_cache=False)["value"]
    assert math.isfinite(W) and W > 0
    gammas, cs = coefficients(method, T, gamma=gamma, alpha=alpha)
    rng = np.random.default_rng(0)
    worst_ratio = 0.0
    for _ in range(300):
        f, grad = _smooth_function(rng)
        x0 = rng.normal(size=3) * 3.0
        gmin, drop, xz = _run_sf(f, grad, x0, gammas, cs, beta)
        metric = xz if method == "xz_distance" else gmin
        assert metric <= W * max(drop, 0.0) * (1 + 1e-6) + 1e-12
        if drop > 0:
            worst_ratio = max(worst_ratio, metric / drop)
    assert worst_ratio > 0.0          # the runs did exercise the bound


# ------------------------------------------------------------- anchor="lower": f(x_0) − inf f ≤ Δ, relaxed

@pytest.mark.parametrize("method,beta,gamma", [("sf_constant", 1.0, 1.0), ("sf_constant", 0.6, 1.0),
                                               ("sf_linear", 1.0, 1.0)])
def test_lower_anchor_is_tighter_and_bounded(method, beta, gamma):
    """f_i ≥ f_low + ‖g_i‖²/(2L) at x_T gives f(x_0) − f(x_T) ≤ Δ: a subset of the "final" feasible set, so a value
    no larger; and ‖g_0‖² ≤ 2L (f(x_0) − f_low) ≤ 2LΔ bounds the min even where "final" is unbounded (sf_linear with
    γ = 1/L from T = 10 on)."""
    T = 10 if method == "sf_linear" else 6
    final = worst_case(method, T, beta=beta, gamma=gamma)["value"]
    lower = worst_case(method, T, beta=beta, gamma=gamma, anchor="lower")["value"]
    assert lower <= final * (1 + 1e-6)
    assert 0 < lower <= 2.0 * (1 + 1e-6)
    if method == "sf_linear":
        assert final == math.inf and math.isfinite(lower)


@pytest.mark.parametrize("T", [1, 2, 3])
def test_lower_anchor_gd_within_nesterov_bound(T):
    """GD with γ = 1/L (sf_poly, α = 0) when f ≥ f*: Nesterov's bound min_{t≤T} ‖∇f(x_t)‖² ≤ 2L(f(x_0) − f*)/(T+1)
    follows from the descent lemma and f(x_T) − f* ≥ ‖∇f(x_T)‖²/(2L), both implied by anchor="lower"; at T = 1 it is
    below the "final" worst case 4/3, so the lower-bound conditions do bite."""
    lower = worst_case("sf_poly", T, alpha=0.0, anchor="lower")["value"]
    assert 0 < lower <= 2.0 / (T + 1) * (1 + 1e-6)
    if T == 1:
        assert lower < 4.0 / 3.0 - 0.1


def test_lower_anchor_bounds_concrete_runs_of_functions_bounded_below():
    """Runs on 1-smooth f = Σ a_i cos(⟨w_i, x⟩ + b_i) ≥ −Σ|a_i| (times the scale): metric ≤ W (f(x_0) − inf f)."""
    T, beta = 4, 0.7
    W = worst_case("sf_constant", T, beta=beta, anchor="lower")["value"]
    gammas, cs = coefficients("sf_constant", T, gamma=1.0)
    rng = np.random.default_rng(1)
    for _ in range(300):
        a, w, b = rng.normal(size=5), rng.normal(size=(5, 3)) * 2.0, rng.uniform(0, 2 * np.pi, 5)
        s = 1.0 / np.sum(np.abs(a) * np.sum(w ** 2, axis=1))

        def f(x, a=a, w=w, b=b, s=s):
            return s * np.sum(a * np.cos(w @ x + b))

        def grad(x, a=a, w=w, b=b, s=s):
            return s * (-(a * np.sin(w @ x + b)) @ w)

        x0 = rng.normal(size=3) * 3.0
        gmin, _, _ = _run_sf(f, grad, x0, gammas, cs, beta)
        assert gmin <= W * (f(x0) + s * np.sum(np.abs(a))) * (1 + 1e-6) + 1e-12


# ------------------------------------------------------------------------------ (3) monotone in T for sf_constant

def test_sf_constant_worst_case_non_increasing_in_T():
    values = [worst_case("sf_constant", T, beta=1.0, gamma=1.0)["value"] for T in range(1, 7)]
    assert all(math.isfinite(v) and v > 0 for v in values)
    for prev, cur in itertools.pairwise(values):
        assert cur <= prev * (1 + 1e-6)
    assert values[-1] < 0.5 * values[0]           # and it does decrease


# --------------------------------------------------------------------------------------------------- (4) the cache

def test_cache_hit_does_not_solve_again(tmp_path, monkeypatch):
    first = worst_case("sf_poly", 3, beta=0.5, gamma=1.0, alpha=0.25)
    assert first["cached"] is False
    files = list((tmp_path / "cache" / "pep").glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["result"]["value"] == first["value"]

    def boom(key):
        raise AssertionError(f"solved again: {key}")

    monkeypatch.setattr(problems, "_solve", boom)
    again = worst_case("sf_poly", 3, beta=0.5, gamma=1.0, alpha=0.25)
    assert again["cached"] is True
    assert again["value"] == first["value"] and again["status"] == first["status"]
    assert again["wall_s"] == first["wall_s"]           # the wall time of the solve that produced it
    # sf_constant does not use alpha: a different alpha is the same PEP, so the same cache entry.
    monkeypatch.undo()
    monkeypatch.setenv("SFBENCH_CACHE", str(tmp_path / "cache"))
    worst_case("sf_constant", 2, alpha=0.3)
    monkeypatch.setattr(problems, "_solve", boom)
    assert worst_case("sf_constant", 2, alpha=0.9)["cached"] is True
    # Any parameter the PEP does depend on is a miss.
    for kwargs in ({"beta": 0.5}, {"gamma": 0.5}, {"L": 2.0}, {"delta": 2.0}, {"solver": "SCS"}, {"anchor": "lower"}):
        with pytest.raises(AssertionError, match="solved again"):
            worst_case("sf_constant", 2, alpha=0.3, **kwargs)
    with pytest.raises(AssertionError, match="solved again"):
        worst_case("sf_poly", 3, beta=0.5, gamma=1.0, alpha=0.5)


def test_cache_skipped_and_corrupt_file_resolved(tmp_path):
    res = worst_case("sf_constant", 2)
    path = problems.cache_path({k: res[k] for k in ("method", "T", "beta", "gamma", "alpha", "averaging", "L",
                                                    "delta", "solver", "anchor")})
    assert path.exists()
    path.write_text("{not json")
    again = worst_case("sf_constant", 2)
    assert again["cached"] is False and again["value"] == pytest.approx(res["value"], rel=1e-9)
    assert worst_case("sf_constant", 2, use_cache=False)["cached"] is False


def test_invalid_arguments_raise_value_error():
    for args, kwargs in [(("nope", 3), {}), (("sf_constant", 0), {}), (("sf_constant", 2.5), {}),
                         (("sf_constant", 3), {"beta": 1.5}), (("sf_constant", 3), {"gamma": 0.0}),
                         (("sf_poly", 3), {"alpha": -0.1}), (("sf_linear", 3), {"averaging": "foo"}),
                         (("sf_constant", 3), {"solver": "MOSEK"}),
                         (("sf_constant", 3), {"anchor": "x"}), (("sf_constant", 3), {"L": float("nan")})]:
        with pytest.raises(ValueError):
            worst_case(*args, **kwargs)


def test_unbounded_worst_case_is_reported_as_inf():
    """The linear-growth step with γ = 1/L has no finite worst case by T = 10 (heavy-ball with constant step 1/L
    and momentum (t−1)/(t+1) → 1 can increase f); the result says so instead of failing."""
    res = worst_case("sf_linear", 10, gamma=1.0)
    assert res["value"] == math.inf and res["status"].startswith("unbounded")
    assert worst_case("sf_linear", 10, gamma=1.0)["cached"] is True


# --------------------------------------------------------------------------------------------------------- (5) CLI

@pytest.mark.parametrize("argv,message", [
    (["--method", "sf_constant", "--T", "1-x"], "malformed T range"),
    (["--method", "sf_constant", "--T", "5-2"], "end is below the start"),
    (["--method", "sf_constant", "--T", "0-3"], "T must be >= 1"),
    (["--method", "sf_constant", "--T", "1,,3"], "malformed T"),
    (["--method", "sf_constant", "--T", "1-999"], "above the limit"),
    (["--method", "sgd", "--T", "1-3"], "invalid choice"),
    (["--method", "sf_poly", "--T", "1-3", "--alpha", "1"], "must be in (0, 1)"),
    (["--method", "sf_poly", "--T", "1-3", "--alpha", "0"], "must be in (0, 1)"),
    (["--method", "sf_poly", "--T", "1-3", "--alpha", "abc"], "expected a number"),
    (["--method", "sf_constant", "--T", "1-3", "--beta", "2"], "must be in [0, 1]"),
    (["--method", "sf_constant", "--T", "1-3", "--gamma", "-1"], "must be in (0, inf)"),
    (["--method", "sf_constant", "--T", "1-3", "--solver", "mosek"], "invalid choice"),
    (["--method", "sf_constant", "--T", "1-3", "--anchor", "start"], "invalid choice"),
    (["--method", "sf_constant"], "required"),
])
def test_cli_rejects_bad_input(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli_main([*argv, "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err


def test_cli_bad_input_subprocess_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sfbench.pep", "--method", "sf_poly", "--T", "1-3",
                           "--alpha", "1.5", "--out", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert "alpha" in proc.stderr and "Traceback" not in proc.stderr


def test_parse_horizons():
    assert parse_horizons("1-5") == [1, 2, 3, 4, 5]
    assert parse_horizons("1-10:4,2,2") == [1, 2, 5, 9]
    assert parse_horizons("7") == [7]


def test_cli_writes_table_csv_and_png(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(["--method", "sf_poly", "--T", "1-3", "--alpha", "0.5", "--beta", "0.5", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "T^0.5*wc" in text and "T*wc" in text
    csv_path = out / "pep_sf_poly_beta0.5_gamma1_alpha0.5.csv"
    rows = csv_path.read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith("method,T,")
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(",")))
    assert float(last["T^0.5*wc"]) == pytest.approx(math.sqrt(3) * float(last["worst_case"]))
    png = out / "pep_sf_poly_beta0.5_gamma1_alpha0.5.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Second run: every horizon from the cache.
    assert cli_main(["--method", "sf_poly", "--T", "1-3", "--alpha", "0.5", "--beta", "0.5", "--out", str(out),
                     "--no-plot"]) == 0
    assert "0 solved, 3 from the cache" in capsys.readouterr().out


# -------------------------------------------------------------------------------------------------------- (6) slow

@pytest.mark.slow
def test_sf_constant_T1_to_8_sweep():
    """T = 1 … 8 at SFN's β = 1, γ = 1/L: finite, decreasing, accurate (PEPit's dual bound ≈ the solver's primal
    value), and a first-order solver (SCS) agrees with the interior-point one at the longest horizon."""
    rows = sweep("sf_constant", range(1, 9), beta=1.0, gamma=1.0)
    values = [r["value"] for r in rows]
    assert all(r["status"] in ("optimal", "optimal_inaccurate") for r in rows)
    assert all(math.isfinite(v) and v > 0 for v in values)
    assert all(cur <= prev * (1 + 1e-6) for prev, cur in itertools.pairwise(values))
    for r in rows:
        assert r["value"] == pytest.approx(r["primal_value"], rel=1e-4)
        assert r["scaled"]["T*wc"] == pytest.approx(r["T"] * r["value"])
    scs = worst_case("sf_constant", 8, beta=1.0, gamma=1.0, solver="SCS", use_cache=False)
    assert scs["value"] == pytest.approx(values[-1], rel=1e-3)


# ------------------------------------------------------------------- SFN's increasing-c averaging; fitted rates

def test_increasing_c_coefficients_and_limits():
    """c_{t+1} = 1 − (1 − c)(t+1)^(−α): α = 0 is the constant (EMA, IAM) coefficient c, growth toward 1 otherwise;
    c = 1 is x = z, plain gradient descent, whose exact worst case is 4LΔ/(3T)."""
    _, cs = coefficients("sf_increasing", 6, gamma=1.0, alpha=0.0, c=0.1)
    assert np.allclose(cs, 0.1)
    _, cs = coefficients("sf_increasing", 6, gamma=1.0, alpha=0.5, c=0.1)
    assert cs[0] == pytest.approx(0.1) and np.all(np.diff(cs) > 0) and cs[-1] < 1
    assert np.allclose(cs, 1 - 0.9 * np.arange(1, 7) ** -0.5)
    for T in (2, 3):
        res = worst_case("sf_increasing", T, alpha=0.7, c=1.0, use_cache=False)
        assert res["value"] == pytest.approx(4.0 / (3.0 * T), rel=REL)
    with pytest.raises(ValueError, match="sf_increasing needs"):
        worst_case("sf_increasing", 2, alpha=-1.0)


def test_increasing_c_cache_key_carries_c(tmp_path):
    a = worst_case("sf_increasing", 2, alpha=0.5, c=0.1)
    b = worst_case("sf_increasing", 2, alpha=0.5, c=0.3)
    assert a["c"] == 0.1 and b["c"] == 0.3 and not b["cached"] and a["value"] != b["value"]
    assert worst_case("sf_increasing", 2, alpha=0.5, c=0.1)["cached"] is True


def test_fit_rates_tells_a_power_law_from_an_inverse_log():
    """On exact T^(−0.3) data the power fit is exact and the 1/log fit is not, and the reverse on C/log(T+1); both
    extrapolate to T = 1000 from their own form."""
    from sfbench.pep import fit_rates

    T = np.arange(5, 41)
    power, inv_log = fit_rates(T, 2.0 * T ** -0.3)
    assert power.a == pytest.approx(0.3, rel=1e-10) and power.rms_log < 1e-12 < inv_log.rms_log
    assert power.at_far == pytest.approx(2.0 * 1000 ** -0.3, rel=1e-9)
    power, inv_log = fit_rates(T, 0.6 / np.log(T + 1.0))
    assert inv_log.C == pytest.approx(0.6, rel=1e-10) and inv_log.rms_log < 1e-12 < power.rms_log
    with pytest.raises(ValueError, match="needs"):
        fit_rates([5, 6], [1.0, 0.9])


def test_cli_increasing_c_prints_fitted_rates(tmp_path, capsys):
    assert cli_main(["--method", "sf_increasing", "--T", "1-6", "--alpha", "0.5", "--c", "0.1", "--out",
                     str(tmp_path), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "fitted rates on T = 5 … 6" not in out            # fewer than 3 horizons ≥ 5: no fit printed
    assert (tmp_path / "pep_sf_increasing_beta1_gamma1_alpha0.5_c0.1.csv").exists()
    assert cli_main(["--method", "sf_increasing", "--T", "1-8", "--alpha", "0.5", "--out", str(tmp_path),
                     "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "fitted rates on T = 5 … 8" in out and "T^-a" in out and "1/log(T+1)" in out
