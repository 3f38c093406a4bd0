"""[C4] Fitting a bound to a loss curve (docs/theory.md C4; Schaipp et al. 2025): loss_T ≈ C + M · bound_T.

Every bound of section C is affine in D²:

    bound_T(D) = D² · a_T + b_T          [C1]  a_T = 1/(2 S1_T),       b_T = S2_T/(2 S1_T)
                                         [C3]  a_T = 1/(2 Σ_{t≤T} η_t), b_T = [C3] evaluated with D = 0

so the model  loss_T ≈ C + M (D² a_T + b_T)  is linear in (C, M, K = M·D²) when D is free, and in (C, M) when D is
given. Constraints M ≥ 0 and K ≥ 0 (so D² = K/M ≥ 0) make it a bounded linear least-squares problem, solved with
`scipy.optimize.lsq_linear` (three unknowns: exact and well under a millisecond for 10k points).

Robust fits (the default):

1. points with a non-finite a_T or b_T are dropped; a non-finite loss, or one above `diverge_above` × |first loss|
   (the trainer's own divergence rule), ends the curve: it and everything after it are dropped;
2. Huber loss by iteratively reweighted least squares (each step one `lsq_linear`), the scale σ re-estimated from the
   median absolute deviation of the residuals, so an isolated loss spike has a bounded pull on the fit;
3. a divergence tail the threshold did not catch — a run of ≥ 2 consecutive points at the end of the curve that all
   lie more than 4σ above the fit and above the lowest loss seen before them — is dropped and the fit redone.

Why IRLS and not `scipy.optimize.least_squares(loss="soft_l1")`: the model is linear, so each IRLS step is an exact
bounded linear solve; that keeps the bounds exact, needs no starting point, and lets the G-param grid below reuse
one fixed scale σ so that its objectives compare across exponents.

G-param (`G_param=True`): the observed ‖g_t‖² in b is replaced by G_t² = G² (t+1)^p (t = 0 … T−1 the step index),
b_T = G² · b̃_T(p), with b̃ computed from the per-step step sizes `lrs`. For each p of a grid over [−2, 1] the
linear solve gives (C, M·D², M·G²); the best p (Huber objective at one fixed σ) is refined by a bounded scalar search.
With D given, M and G follow; with D free only M·D² and M·G² are identified, so G is normalised to reproduce the
observed b (G² = ⟨b, b̃⟩/⟨b̃, b̃⟩ over the used points; G = 1 when b has no finite values). Note that p is only
weakly identified by a noisy curve, and not at all for p < −1 with a constant step: Σ γ_t² (t+1)^p then converges,
b̃ becomes proportional to a, and p trades off against D.

Fits of ≤ 3 usable points return `method="insufficient"` with NaN parameters; nothing here raises on bad data
(only on bad arguments: mismatched lengths, an unknown kind, a negative D).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from .bounds import sgd_last_iterate_curve

__all__ = ["KINDS", "BoundFit", "bound_terms", "fit_bound", "metric_floor"]

KINDS = ("C1", "C3")
_HUBER_K = 1.345            # Huber's constant: 95 % efficiency at Gaussian noise
_TAIL_K = 4.0               # a divergence tail lies this many σ above the fit
_MIN_POINTS = 4             # ≤ 3 usable points: "insufficient"


# ---------------------------------------------------------------------------------------------------------------------
# the bound's two terms
# ---------------------------------------------------------------------------------------------------------------------
def _horizons(horizons, n: int) -> np.ndarray:
    if horizons is None:
        return np.arange(1, n + 1)
    h = np.asarray(horizons)
    if h.ndim != 1 or (h.size and (np.any(h != np.round(h)) or h.min() < 1 or h.max() > n)):
        raise ValueError(f"horizons must be step counts in 1 … {n} (the number of per-step values); "
                         f"got {np.asarray(horizons)[:5]}…")
    return h.astype(np.int64)


def bound_terms(kind: str, lrs, grad_sq, horizons=None) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) with bound_T(D) = D² a_T + b_T, from the per-step step sizes and squared gradient norms.

    `lrs[t]`, `grad_sq[t]` for steps t = 0 … N−1; `horizons` are step counts T ∈ 1 … N (default: every T); element i
    of a and b belongs to the bound after `horizons[i]` steps (with the trainer's 1-based `step` column, the horizon
    of a logged row is its `step`). "C1": O(N) for all horizons. "C3": O(N) per horizon (suffix sums in
    `sgd_last_iterate_bound`), so pass the horizons you need (e.g. the eval steps) for long runs.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed; choose one of {', '.join(map(repr, KINDS))}")
    lrs = np.asarray(lrs, dtype=np.float64)
    grad_sq = np.asarray(grad_sq, dtype=np.float64)
    if lrs.ndim != 1 or lrs.shape != grad_sq.shape:
        raise ValueError(f"lrs and grad_sq must be 1-D arrays of the same length; got shapes {lrs.shape} and "
                         f"{grad_sq.shape}")
    h = _horizons(horizons, len(lrs))
    s1 = np.cumsum(lrs)[h - 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(s1 > 0, 1.0 / (2.0 * s1), np.nan)
        if kind == "C1":
            s2 = np.cumsum(lrs ** 2 * grad_sq)[h - 1]
            b = np.where(s1 > 0, s2 / (2.0 * s1), np.nan)
        else:
            b = sgd_last_iterate_curve(lrs, grad_sq, 0.0, h) if len(h) else np.zeros(0)
            b = np.where(s1 > 0, b, np.nan)
    return a, b


def metric_floor(key: str, values, f_star: float | None = None) -> float | None:
    """The value a logged metric cannot go below, for `fit_bound(C_min=…)`: 0 for f(x) − f* (`eval/subopt`) and
    squared norms, f* for the full loss when the task knows it (not above the lowest observed value), 0 for a series
    that is never negative (every loss here); None when nothing is known (C free)."""
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    if key == "eval/subopt" or key.endswith(("dist_sq", "grad_norm_sq")):
        return 0.0
    if key == "eval/loss" and f_star is not None and math.isfinite(f_star):
        return min(float(f_star), float(finite.min())) if finite.size else float(f_star)
    return 0.0 if finite.size and float(finite.min()) >= 0 else None


# ---------------------------------------------------------------------------------------------------------------------
# the result
# ---------------------------------------------------------------------------------------------------------------------
def _num(x) -> float | None:
    """A JSON-safe float: NaN and ±inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@dataclasses.dataclass
class BoundFit:
    """loss_T ≈ C + M (D² a_T + b_T), fitted; with G-param, b_T = G² b̃_T(p).

    `curve` is the fitted loss at every input point (NaN where a or b is not finite), `used` marks the points the fit
    used, `rmse` is over those. `method`: "lsq" | "huber" (+ "+G" with G-param) | "insufficient".
    """

    C: float
    M: float
    D: float
    curve: np.ndarray
    rmse: float
    n_used: int
    n_dropped: int
    method: str
    D_fixed: bool = False
    p: float | None = None              # G-param exponent: G_t² = G² (t+1)^p
    G: float | None = None              # G-param scale (see the module docstring for its normalisation)
    used: np.ndarray | None = None
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.method != "insufficient" and math.isfinite(self.C) and math.isfinite(self.M)

    def to_dict(self, curve: bool = False) -> dict[str, Any]:
        """Plain JSON-safe numbers (NaN/inf as None); `curve=True` adds the fitted curve as a list."""
        out: dict[str, Any] = {"C": _num(self.C), "M": _num(self.M), "D": _num(self.D), "D_fixed": self.D_fixed,
                               "rmse": _num(self.rmse), "n_used": int(self.n_used), "n_dropped": int(self.n_dropped),
                               "method": self.method}
        if self.p is not None:
            out.update(p=_num(self.p), G=_num(self.G))
        if self.message:
            out["message"] = self.message
        if curve:
            out["curve"] = [_num(v) for v in np.asarray(self.curve, dtype=np.float64)]
        return out


# ---------------------------------------------------------------------------------------------------------------------
# the solvers
# ---------------------------------------------------------------------------------------------------------------------
def _lsq(X: np.ndarray, y: np.ndarray, lower: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """argmin ‖√w (y − Xθ)‖ subject to θ ≥ lower, columns scaled to unit norm for conditioning."""
    from scipy.optimize import lsq_linear      # imported when a fit runs, not with the trainer

    if w is not None:
        sw = np.sqrt(w)
        X, y = X * sw[:, None], y * sw
    norms = np.sqrt(np.einsum("ij,ij->j", X, X))
    norms[norms == 0] = 1.0
    res = lsq_linear(X / norms, y, bounds=(lower * norms, np.full(len(norms), np.inf)), method="bvls")
    return res.x / norms


def _mad_sigma(r: np.ndarray, floor: float) -> float:
    med = np.median(r)
    return max(1.4826 * float(np.median(np.abs(r - med))), floor)


def _huber_objective(r: np.ndarray, sigma: float) -> float:
    c = _HUBER_K * sigma
    ar = np.abs(r)
    return float(np.sum(np.where(ar <= c, 0.5 * r * r, c * ar - 0.5 * c * c)))


def _huber_irls(X, y, lower, sigma, theta=None, max_iter=100):
    """Huber regression at a fixed scale σ by IRLS; returns (θ, objective)."""
    theta = _lsq(X, y, lower) if theta is None else theta
    c = _HUBER_K * sigma
    for _ in range(max_iter):
        r = y - X @ theta
        ar = np.abs(r)
        w = np.where(ar <= c, 1.0, c / np.maximum(ar, 1e-300))
        new = _lsq(X, y, lower, w)
        step = float(np.max(np.abs(X @ (new - theta)))) if len(y) else 0.0
        theta = new
        if step <= 1e-9 * sigma:
            break
    return theta, _huber_objective(y - X @ theta, sigma)


def _solve(X, y, lower, robust: bool, sigma: float | None = None, floor: float = 0.0):
    """Least squares (robust=False) or Huber with σ from the MAD of the residuals, re-estimated once.

    Returns (θ, objective, σ)."""
    theta = _lsq(X, y, lower)
    r = y - X @ theta
    if not robust:
        return theta, float(r @ r), float("nan")
    if sigma is not None:
        theta, obj = _huber_irls(X, y, lower, sigma, theta)
        return theta, obj, sigma
    sigma = _mad_sigma(r, floor)
    theta, _ = _huber_irls(X, y, lower, sigma, theta)
    sigma = _mad_sigma(y - X @ theta, floor)
    theta, obj = _huber_irls(X, y, lower, sigma, theta)
    return theta, obj, sigma


def _divergence_tail(y: np.ndarray, r: np.ndarray, sigma: float) -> int:
    """Start index of a divergence tail (≥ 2 trailing points > 4σ above the fit and above the best loss before
    them), or len(y) when there is none."""
    n = len(y)
    start = n
    while start > 0 and r[start - 1] > _TAIL_K * sigma:
        start -= 1
    while start < n - 1 and start > 0:
        if np.all(y[start:] > np.min(y[:start]) + _TAIL_K * sigma):
            break
        start += 1
    if n - start < 2 or start == 0:
        return n
    return start


# ---------------------------------------------------------------------------------------------------------------------
# the fit
# ---------------------------------------------------------------------------------------------------------------------
def _usable(loss, a, b, robust: bool, diverge_above: float | None) -> np.ndarray:
    n = len(loss)
    used = np.isfinite(loss) & np.isfinite(a) & np.isfinite(b)
    if robust:
        cut = n
        bad = ~np.isfinite(loss)
        if bad.any():
            cut = int(np.argmax(bad))
        finite = np.flatnonzero(np.isfinite(loss))
        if diverge_above is not None and finite.size:
            ref = abs(float(loss[finite[0]]))
            if ref > 0:
                over = np.isfinite(loss) & (np.abs(loss) > diverge_above * ref)
                if over.any():
                    cut = min(cut, int(np.argmax(over)))
        used &= np.arange(n) < cut
    return used


def _insufficient(n: int, used: np.ndarray, D, G_param: bool, message: str) -> BoundFit:
    nan = float("nan")
    return BoundFit(C=nan, M=nan, D=nan if D is None else float(D), curve=np.full(n, nan), rmse=nan,
                    n_used=int(used.sum()), n_dropped=int(n - used.sum()), method="insufficient",
                    D_fixed=D is not None, p=nan if G_param else None, G=nan if G_param else None, used=used,
                    message=message)


def fit_bound(loss, a, b, *, D: float | None = None, robust: bool = True, G_param: bool = False, lrs=None,
              kind: str = "C1", horizons=None, diverge_above: float | None = 100.0, p_grid=None,
              C_min: float | None = None) -> BoundFit:
    """Fit loss_T ≈ C + M (D² a_T + b_T) (docs/theory.md [C4]); see the module docstring for the method.

    loss, a, b: one value per point (e.g. per logged eval step; a, b from `bound_terms`).
    D: given → fit (C, M) only; None → fit (C, M, D).
    robust: drop a divergence (non-finite loss or |loss| > `diverge_above` × |first loss|, and a trailing run of
        outliers above the fit) and use a Huber loss; False: plain least squares on the finite points.
    G_param: replace the observed ‖g_t‖² in b by G² (t+1)^p, p on `p_grid` (default 61 points over [−2, 1]) then
        refined; needs `lrs` (per step, t = 0 … N−1), `kind` ("C1" | "C3") and the points' `horizons` (step counts;
        default 1 … len(loss) when len(lrs) == len(loss)).
    C_min: a floor the metric cannot go below (0 for f(x) − f*, f* for the full loss): C ≥ C_min, so with M ≥ 0 and
        a bound ≥ 0 the fitted curve never crosses it. None: C is free.
    """
    loss = np.asarray(loss, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64) if b is not None else np.full(loss.shape, np.nan)
    if loss.ndim != 1 or a.shape != loss.shape or b.shape != loss.shape:
        raise ValueError(f"loss, a and b must be 1-D arrays of one length; got shapes {loss.shape}, {a.shape}, "
                         f"{b.shape}")
    if D is not None and not (math.isfinite(D) and D >= 0):
        raise ValueError(f"D={D!r}: must be a finite number ≥ 0 (or None to fit it)")
    if C_min is not None and not math.isfinite(C_min):
        raise ValueError(f"C_min={C_min!r}: must be a finite number (or None for a free C)")
    c_lo = -np.inf if C_min is None else float(C_min)
    n = len(loss)

    if G_param:
        if lrs is None:
            raise ValueError("G_param=True needs lrs (the step size of every step t = 0 … N−1)")
        lrs = np.asarray(lrs, dtype=np.float64)
        if horizons is None and len(lrs) != n:
            raise ValueError(f"G_param=True: {n} points but {len(lrs)} step sizes; pass horizons (the step count "
                             f"of each point)")
        h = _horizons(horizons, len(lrs)) if horizons is not None else np.arange(1, n + 1)
        if len(h) != n:
            raise ValueError(f"horizons has {len(h)} entries for {n} points")
        steps = np.arange(1, len(lrs) + 1, dtype=np.float64)        # t + 1

        def b_tilde(p: float) -> np.ndarray:
            return bound_terms(kind, lrs, steps ** p, h)[1]

        b_check = b_tilde(0.0)
    else:
        b_check = b
    used = _usable(loss, a, b_check, robust, diverge_above)
    if used.sum() < _MIN_POINTS:
        return _insufficient(n, used, D, G_param, f"{int(used.sum())} usable points; a fit needs ≥ {_MIN_POINTS}")

    y_all = loss
    floor = 1e-10 * float(np.max(np.abs(y_all[used]))) + 1e-300
    one = np.ones(n)

    def design(bcol: np.ndarray):
        """Columns and lower bounds: D free → θ = (C, J, K) on [1, b, a]; D given → (C, J, M) on [1, b, D² a],
        except without G-param, where J = M and the design is [1, D² a + b] → (C, M)."""
        if D is None:
            return np.column_stack([one, bcol, a]), np.array([c_lo, 0.0, 0.0])
        if G_param:
            return np.column_stack([one, bcol, D ** 2 * a]), np.array([c_lo, 0.0, 0.0])
        return np.column_stack([one, D ** 2 * a + bcol]), np.array([c_lo, 0.0])

    def fit_on(mask, bcol, sigma=None):
        X, lower = design(bcol)
        theta, obj, sig = _solve(X[mask], y_all[mask], lower, robust, sigma, floor)
        return theta, obj, sig, X

    def choose_p(mask):
        """Alternate: at fixed IRLS weights, the best p by weighted least squares (grid, then a bounded scalar
        search between the grid neighbours); then Huber weights at that p; until p settles."""
        grid = np.linspace(-2.0, 1.0, 61) if p_grid is None else np.asarray(p_grid, dtype=np.float64)
        y = y_all[mask]
        w = np.ones(len(y))
        best_p = None
        for _ in range(6):
            def sse(p: float, w=w) -> float:
                X, lower = design(b_tilde(p))
                theta = _lsq(X[mask], y, lower, w)
                r = y - X[mask] @ theta
                return float(w @ (r * r))

            objs = [sse(p) for p in grid]
            i = int(np.argmin(objs))
            new_p, best_obj = float(grid[i]), float(objs[i])
            lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
            if hi > lo:
                from scipy.optimize import minimize_scalar

                res = minimize_scalar(sse, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
                if res.fun <= best_obj:
                    new_p = float(res.x)
            if not robust or (best_p is not None and abs(new_p - best_p) < 1e-5):
                best_p = new_p
                break
            best_p = new_p
            X, lower = design(b_tilde(best_p))
            theta, _, sigma = _solve(X[mask], y, lower, True, None, floor)
            ar = np.abs(y - X[mask] @ theta)
            c = _HUBER_K * sigma
            w = np.where(ar <= c, 1.0, c / np.maximum(ar, 1e-300))
        return best_p

    p = None
    for _ in range(2):                                     # second pass only when a divergence tail was dropped
        if G_param:
            p = choose_p(used)
            bcol = b_tilde(p)
        else:
            bcol = b
        theta, _, sigma, X = fit_on(used, bcol)
        if not robust:
            break
        idx = np.flatnonzero(used)
        r = y_all[idx] - X[idx] @ theta
        start = _divergence_tail(y_all[idx], r, sigma)
        if start == len(idx):
            break
        used = used.copy()
        used[idx[start:]] = False
        if used.sum() < _MIN_POINTS:
            return _insufficient(n, used, D, G_param, "too few points before the divergence")

    with np.errstate(invalid="ignore", over="ignore"):
        curve = X @ theta
    curve = np.where(np.isfinite(a) & np.isfinite(bcol), curve, np.nan)
    resid = y_all[used] - curve[used]
    rmse = float(np.sqrt(np.mean(resid ** 2)))

    G = None
    C = float(theta[0])
    if D is None:
        J, K = float(theta[1]), float(theta[2])             # J = M (or M G²), K = M D²
        if G_param:
            bb = b_tilde(p)
            ok = used & np.isfinite(b) & np.isfinite(bb)
            G2 = float(b[ok] @ bb[ok] / (bb[ok] @ bb[ok])) if ok.any() and (bb[ok] @ bb[ok]) > 0 else 1.0
            G2 = G2 if G2 > 0 else 1.0
            G = math.sqrt(G2)
            M = J / G2
        else:
            M = J
        Dfit = math.sqrt(K / M) if M > 0 else float("nan")
    else:
        Dfit = float(D)
        if G_param:
            J, M = float(theta[1]), float(theta[2])
            G = math.sqrt(J / M) if M > 0 else float("nan")
        else:
            M = float(theta[1])
    method = ("huber" if robust else "lsq") + ("+G" if G_param else "")
    message = ""
    if not np.any(theta[1:] > 0):
        message = "M = 0: the bound's shape does not explain the curve (fit is a constant)"
    elif not M > 0:
        # one term carries the whole curve, the other none: the fit is the limit M → 0 with D (free) or G (G-param,
        # D given) → ∞, so they are not identified apart — and the curve is not a constant
        if D is None:
            M, Dfit = float("nan"), float("inf")
            message = (f"the curve is C + the D² term alone (M·D² = {float(theta[2]):.4g}): M and D are not "
                       f"identified apart")
        else:
            M, G = float("nan"), float("inf")
            message = (f"the curve is C + the gradient term alone (M·G² = {float(theta[1]):.4g}): M and G are not "
                       f"identified apart")
    return BoundFit(C=C, M=M, D=Dfit, curve=curve, rmse=rmse, n_used=int(used.sum()), n_dropped=int(n - used.sum()),
                    method=method, D_fixed=D is not None, p=p, G=G, used=used, message=message)
