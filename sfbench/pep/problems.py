"""Performance Estimation Problems (PEP) for schedule-free SGD on L-smooth nonconvex functions (docs/theory.md D).

One PEP = one horizon T and one set of hyperparameters. The method is SF with the SGD base, [A1]–[A5]:

    y_t = (1 − β) z_t + β x_t,  g_t = ∇f(y_t),  z_{t+1} = z_t − γ_t g_t,  x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1},

started at z_0 = x_0 = y_0. The worst case is taken over all L-smooth (not necessarily convex) f — PEPit's
`SmoothFunction`, whose interpolation conditions make the SDP value exact — under the initial condition
f(x_0) − f(x_T) ≤ Δ, the normalisation of PEPit's nonconvex gradient-descent example (the class has no minimiser to
anchor a distance to). The metric is min_{0≤t≤T} ‖∇f(y_t)‖² over every gradient the method evaluates, y_T included,
expressed as in that example: one `set_performance_metric` per gradient (PEPit maximises the minimum of them).

That initial condition (``anchor="final"``, the default) only looks at the last point. SFN's theorems assume
f(x_0) − inf f ≤ Δ instead, which is stronger for methods that are not descent methods. ``anchor="lower"`` imposes
the necessary conditions of that assumption: a scalar f_low with f(x_0) − f_low ≤ Δ and f_i ≥ f_low + ‖g_i‖²/(2L) at
every point evaluated (since f(x − g/L) ≤ f(x) − ‖g‖²/(2L)). Its value is ≤ the "final" one and ≥ the exact worst
case over functions with f(x_0) − inf f ≤ Δ; it is a relaxation, not proven exact here.

Methods (SFN = Brown, "Analysis of Schedule-Free Nonconvex Optimization", arXiv 2508.06743):

- ``sf_constant``: γ_t = γ, `uniform` averaging c_{t+1} = 1/(t+1) [A5]. SFN Thm 3 proves O(1/log T); its PEP
  figure suggests O(1/T).
- ``sf_linear``: γ_t = γ (t+1) (schedule `linear_growth`, [B]) with `uniform` averaging (read from SFN: its Thm 5
  "generalise[s] the averaging weight" of Thms 3–4 to a polynomial one; the formulas are missing from the text we
  have); ``averaging="lr"`` (c_{t+1} = γ_t / Σ_{i≤t} γ_i = 2/(t+2)) is available as a variant. Claimed
  O(log T / T) under Assumption 2.
- ``sf_poly``: γ_t = γ, `poly` averaging c_{t+1} = (t+1)^(−α) [A5]; SFN Thm 5 claims O(T^{−(1−α)}) for α ∈ (0, 1).
  α = 0 is plain gradient descent (x = z = y, [A] properties), α = 1 is ``sf_constant``.
- ``sf_increasing``: γ_t = γ, averaging coefficients that *grow*, c_{t+1} = 1 − (1 − c)(t+1)^(−α) (c = c_1 ∈ [0, 1],
  α ≥ 0): SFN Thm 5's "increasing c-averaging" case as docs/theory.md reads it (c_t growing; the formula itself is
  stripped from the text we have, so this family is our reconstruction). α = 0 is the `constant` weighting (an
  exponential moving average, the IAM baselines with β = 1); as t grows c → 1 and the method tends to gradient descent
  on z, so O(1/T) up to a logarithm is the natural claim to test. (The other reading — weights growing polynomially,
  w_t = (t+1)^α, c_{t+1} = w_t / Σ_{s≤t} w_s — is RLS's `r` weighting; its c's decrease like (α+1)/(t+1).)
- ``xz_distance``: SFN Assumption 2 for the ``sf_linear`` method: the worst case of ‖x_T − z_T‖² under the same
  initial condition. ‖x_t − z_t‖ ≤ C t means ‖x_T − z_T‖² / T² stays bounded.

With β = 1 SF is heavy-ball momentum ([A] properties; SFN Thms 1–2). SFN's analysis "restricts to [β = 1, read
from the formula-stripped text] to eliminate the penalty in Lemma 1", hence the default here.

A value of `inf` (status "unbounded") means the SDP has no finite optimum: for every M some L-smooth f has
‖∇f(y_t)‖² ≥ M at every visited point and still meets the initial condition, so no guarantee of this form exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sfbench import cache_root
from ..files import atomic_write

#: The PEPs this module builds (see the module docstring).
METHODS = ("sf_constant", "sf_linear", "sf_poly", "sf_increasing", "xz_distance")
#: Averaging for the linearly growing step ("uniform": c_{t+1} = 1/(t+1); "lr": c_{t+1} = γ_t / Σ_{i≤t} γ_i, [A5]).
LINEAR_AVERAGINGS = ("uniform", "lr")
#: Initial conditions: "final": f(x_0) − f(x_T) ≤ Δ (PEPit's GD example); "lower": f(x_0) − f_low ≤ Δ with
#: f_i ≥ f_low + ‖g_i‖²/(2L) at every evaluated point (see the module docstring).
ANCHORS = ("final", "lower")
#: cvxpy solvers accepted (both ship with the project's dependencies); None means DEFAULT_SOLVER.
SOLVERS = ("CLARABEL", "SCS")
DEFAULT_SOLVER = "CLARABEL"
#: Bumped whenever a change would alter a cached value (the PEP, the solver call, the result's fields).
CACHE_VERSION = 2          # unchanged by `sf_increasing`: its keys carry a field (c) no older entry has

_OK = ("optimal", "optimal_inaccurate")
_UNBOUNDED = ("unbounded", "unbounded_inaccurate")


# ----------------------------------------------------------------------------------------------------------------
# Hyperparameters and claimed rates
# ----------------------------------------------------------------------------------------------------------------

def coefficients(method: str, T: int, *, gamma: float, alpha: float = 0.5,
                 averaging: str = "uniform", c: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Step sizes γ_t and averaging coefficients c_{t+1} for t = 0 … T−1 ([A3], [A5]); arrays of length T."""
    t = np.arange(T, dtype=np.float64)
    if method == "sf_constant":
        return np.full(T, float(gamma)), 1.0 / (t + 1.0)
    if method in ("sf_linear", "xz_distance"):
        gammas = float(gamma) * (t + 1.0)
        if averaging == "uniform":
            return gammas, 1.0 / (t + 1.0)
        return gammas, gammas / np.cumsum(gammas)            # "lr": w_t = γ_t, so c_{t+1} = 2/(t+2)
    if method == "sf_poly":
        return np.full(T, float(gamma)), (t + 1.0) ** (-float(alpha))
    if method == "sf_increasing":
        return np.full(T, float(gamma)), 1.0 - (1.0 - float(c)) * (t + 1.0) ** (-float(alpha))
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


def scalings(method: str, alpha: float = 0.5) -> list[tuple[str, Callable[[int], float]]]:
    """The claimed rates of SFN (docs/theory.md D) as multipliers: `(label, m)` with `m(T) · worst case` flat in T
    when the worst case decays at that rate (bounded is what the claim needs; flat means the rate is tight).
    The first entry is the claim the method is there to check; `T·wc` is always included for comparison.
    Logarithms are ln(T+1) so that T = 1 stays finite."""
    if method == "sf_constant":
        return [("T*wc", float), ("log(T+1)*wc", lambda T: math.log(T + 1.0))]
    if method == "sf_linear":
        return [("T/log(T+1)*wc", lambda T: T / math.log(T + 1.0)), ("T*wc", float)]
    if method == "sf_poly":
        return [(f"T^{1.0 - alpha:g}*wc", lambda T: float(T) ** (1.0 - alpha)), ("T*wc", float)]
    if method == "sf_increasing":
        return [("T*wc", float), ("T/log(T+1)*wc", lambda T: T / math.log(T + 1.0))]
    if method == "xz_distance":
        return [("wc/T^2", lambda T: 1.0 / T ** 2), ("wc/T", lambda T: 1.0 / T)]
    raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------

def _finite(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def normalise_solver(solver: str | None) -> str:
    """Upper-case solver name; None gives DEFAULT_SOLVER. Raises ValueError for anything not in SOLVERS."""
    if solver is None:
        return DEFAULT_SOLVER
    name = str(solver).upper()
    if name not in SOLVERS:
        raise ValueError(f"solver {solver!r} not supported; expected one of {', '.join(SOLVERS)}")
    return name


def _validate(method, T, beta, gamma, alpha, L, delta, averaging, solver, anchor="final", c=0.1) -> dict:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T!r}")
    beta, gamma, alpha = _finite("beta", beta), _finite("gamma", gamma), _finite("alpha", alpha)
    L, delta = _finite("L", L), _finite("delta", delta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if gamma <= 0.0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if L <= 0.0 or delta <= 0.0:
        raise ValueError(f"L and delta must be > 0, got L={L}, delta={delta}")
    if method == "sf_poly" and not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (SFN Thm 5 claims its rate for (0, 1)), got {alpha}")
    c = _finite("c", c)
    if method == "sf_increasing" and not (alpha >= 0.0 and 0.0 <= c <= 1.0):
        raise ValueError(f"sf_increasing needs alpha >= 0 and c in [0, 1], got alpha={alpha}, c={c}")
    if averaging not in LINEAR_AVERAGINGS:
        raise ValueError(f"averaging must be one of {', '.join(LINEAR_AVERAGINGS)}, got {averaging!r}")
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")
    # The key holds only what the PEP depends on, so an unused --alpha does not miss the cache.
    key = {"method": method, "T": int(T), "beta": beta, "gamma": gamma,
           "alpha": alpha if method in ("sf_poly", "sf_increasing") else None,
           "averaging": averaging if method in ("sf_linear", "xz_distance") else None,
           "L": L, "delta": delta, "solver": normalise_solver(solver), "anchor": anchor}
    if method == "sf_increasing":
        key["c"] = c
    return key


# ----------------------------------------------------------------------------------------------------------------
# Cache: one JSON file per (method, T, parameters)
# ----------------------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """`${SFBENCH_CACHE:-~/.cache/sfbench}/pep` (read from the environment at each call)."""
    return cache_root() / "pep"


def cache_path(key: dict, directory: Path | None = None) -> Path:
    blob = json.dumps({"version": CACHE_VERSION, **key}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return (directory or cache_dir()) / f"{key['method']}_T{key['T']}_{digest}.json"


def _cache_read(path: Path, key: dict) -> dict | None:
    try:
        with open(path) as fh:
            stored = json.load(fh)
    except (OSError, ValueError):
        return None
    if stored.get("key") != {"version": CACHE_VERSION, **key}:     # hash collision or stale format
        return None
    return stored.get("result")


def _cache_write(path: Path, key: dict, result: dict) -> None:
    """Written atomically: parallel sweeps never read half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps({"key": {"version": CACHE_VERSION, **key}, "result": result}, indent=1), fsync=False)


# ----------------------------------------------------------------------------------------------------------------
# Building and solving one PEP
# ----------------------------------------------------------------------------------------------------------------

def _interpolate(beta: float, x, z):
    """[A1] y = (1 − β) z + β x, returning the very same PEPit Point when y equals x or z (β ∈ {0, 1}, or x is z):
    PEPit recognises a point already evaluated only by its decomposition, and two copies of one point would get two
    unrelated gradients in the nonconvex interpolation conditions."""
    if x is z or beta == 0.0:
        return z
    if beta == 1.0:
        return x
    return (1.0 - beta) * z + beta * x


def build(key: dict):
    """The PEPit problem for `key` (as made by `_validate`). Returns `(problem, n_points)`."""
    from PEPit import PEP, Expression
    from PEPit.functions import SmoothFunction

    method, T, beta = key["method"], key["T"], key["beta"]
    gammas, cs = coefficients(method, T, gamma=key["gamma"], alpha=key["alpha"] or 0.0,
                              averaging=key["averaging"] or "uniform", c=key.get("c", 0.1))
    problem = PEP()
    func = problem.declare_function(SmoothFunction, L=key["L"])
    x0 = problem.set_initial_point()
    g, f0 = func.oracle(x0)                                        # y_0 = x_0 = z_0
    x = z = y = x0
    fy = f0
    grads, values = [g], [f0]
    for t in range(T):
        z = z - float(gammas[t]) * g                               # [A3], SGD base
        c = float(cs[t])
        x = z if c == 1.0 else (1.0 - c) * x + c * z                # [A4]; c_1 = 1 gives x_1 = z_1
        y = _interpolate(beta, x, z)                               # [A1]
        g, fy = func.oracle(y)                                     # [A2], deterministic
        grads.append(g)
        values.append(fy)
    if y is x:
        fx = fy
    else:                                                          # x_T is not a gradient point: one more point
        gx, fx = func.oracle(x)
    if key["anchor"] == "final":
        problem.set_initial_condition(f0 - fx <= key["delta"])      # f(x_0) − f(x_T) ≤ Δ
    else:
        f_low = Expression()                                       # a lower bound of f, a free scalar
        problem.set_initial_condition(f0 - f_low <= key["delta"])
        points = list(zip(grads, values)) + ([] if y is x else [(gx, fx)])
        for gi, fi in points:
            problem.add_constraint(fi - f_low >= gi ** 2 / (2.0 * key["L"]))
    if method == "xz_distance":
        problem.set_performance_metric((x - z) ** 2)
    else:
        for g in grads:                                            # min_t ‖∇f(y_t)‖², t = 0 … T
            problem.set_performance_metric(g ** 2)
    return problem, len(func.list_of_points)


def _solve(key: dict) -> dict:
    """Build and solve one PEP (no cache). Returns value (inf when the SDP is unbounded: no worst-case guarantee),
    the solver's primal value, status and wall time (building + solving)."""
    import cvxpy
    import PEPit  # noqa: F401  (imported before the clock starts: the first solve should not pay for it)

    start = time.perf_counter()
    problem, n_points = build(key)
    value, status = None, "unknown"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                            # cvxpy's "solution may be inaccurate"
        try:
            value = problem.solve(wrapper="cvxpy", solver=key["solver"], verbose=0)
            status = str(problem.wrapper.prob.status)
        except cvxpy.error.SolverError as exc:
            status = f"solver_error: {exc}"
    wall = time.perf_counter() - start
    primal = None
    if status in _OK:
        primal = float(problem.wrapper.prob.value)
        value = float(value)
    elif status in _UNBOUNDED:
        value = math.inf
    else:
        value = math.nan
    return {"value": value, "primal_value": primal, "status": status, "wall_s": wall, "n_points": n_points}


def worst_case(method: str, T: int, *, beta: float = 1.0, gamma: float = 1.0, alpha: float = 0.5,
               L: float = 1.0, delta: float = 1.0, solver: str | None = None, averaging: str = "uniform",
               anchor: str = "final", c: float = 0.1, use_cache: bool = True) -> dict:
    """Worst case of one PEP (see the module docstring for the methods; docs/theory.md [A1]–[A5], section D).

    `gamma` is the base step (γ = 1/L with the defaults L = 1, gamma = 1): γ_t = gamma (`sf_constant`, `sf_poly`,
    `sf_increasing`) or gamma·(t+1) (`sf_linear`, `xz_distance`). `alpha` is used by `sf_poly` and `sf_increasing`,
    `c` (= c_1) by `sf_increasing` only, `averaging` by `sf_linear` and `xz_distance` only.
    `solver`: "CLARABEL" (default) or "SCS", through PEPit's cvxpy wrapper. `anchor`: "final" (default,
    f(x_0) − f(x_T) ≤ Δ) or "lower" (f(x_0) − inf f ≤ Δ, relaxed; see the module docstring).

    Returns a dict with `value` (the dual bound PEPit reports; `inf` when the SDP is unbounded, i.e. the method has
    no finite worst case; `nan` when the solver failed), `primal_value`, `status` (cvxpy's), `wall_s` (of the
    solve that produced it), `cached` (whether it came from the JSON cache), `n_points` and the parameters.
    Results whose solve failed are not cached.
    """
    key = _validate(method, T, beta, gamma, alpha, L, delta, averaging, solver, anchor, c)
    path = cache_path(key)
    if use_cache:
        hit = _cache_read(path, key)
        if hit is not None:
            return {**key, **hit, "cached": True}
    result = _solve(key)
    if use_cache and (result["status"] in _OK or result["status"] in _UNBOUNDED):
        try:
            _cache_write(path, key, result)
        except OSError as exc:                                     # a read-only cache must not lose the result
            warnings.warn(f"sfbench.pep: could not write the cache {path}: {exc}", RuntimeWarning, stacklevel=2)
    return {**key, **result, "cached": False}


def sweep(method: str, Ts, *, progress: Callable[[dict], None] | None = None, **kwargs) -> list[dict]:
    """`worst_case` for each T in `Ts`, in order, each result extended with the `scalings` of `method`
    (key `scaled`: label → multiplier(T) · value). `progress(result)` is called after each T."""
    rows = []
    alpha = float(kwargs.get("alpha", 0.5))
    for T in Ts:
        res = worst_case(method, T, **kwargs)
        res["scaled"] = {label: m(res["T"]) * res["value"] for label, m in scalings(method, alpha)}
        rows.append(res)
        if progress is not None:
            progress(res)
    return rows
