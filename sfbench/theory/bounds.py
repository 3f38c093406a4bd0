"""Convergence bounds a run should follow (docs/theory.md section C), from arrays of step sizes and gradient norms.

Everything is numpy and vectorised: [C1] for a whole run is two cumulative sums; [C3] at one horizon is O(T) through
suffix sums (the triple sum written in [C3] would be O(T²) per horizon, O(T³) for a curve).

Conventions: `gammas[t]`, `grad_sq[t]` for steps t = 0 … T−1 (‖g_t‖² taken at y_t; with an Adam base pass ‖g_t‖²_P).

Which of these is a theorem for which run, and with which indexing, is derived line by line in docs/theory.md:
`OnlineToBatch` is the bound the trainer logs for SF optimizers (any averaging weights; [C1] exactly for the
`schedulet` weighting); `sgd_last_iterate_bound` is [C3], to be called with one more step than the optimizer has
taken (the bound on the iterate after T steps contains η_{T+1} and the gradient there).
"""

from __future__ import annotations

import math

import numpy as np


def sf_bound(gammas, grad_sq, D: float) -> np.ndarray:
    """The [C1] expression (D² + Σ_{t<T} γ_t²‖g_t‖²) / (2 Σ_{t<T} γ_t) for every T = 1 … len(gammas) (element T−1).

    This is the *shape* the fits [C4] and predictions [C2] use. As a bound it is off by one step: the theorem
    (docs/theory.md, Theorem 1) bounds f(x_T) − f* for the `schedulet` weighting by the same expression with the
    sums running to T *inclusive* (one more step size and one more gradient). The bound each run logs is
    `OnlineToBatch`, which handles that last term and any other averaging weights."""
    gammas, grad_sq = np.asarray(gammas, dtype=np.float64), np.asarray(grad_sq, dtype=np.float64)
    s1 = np.cumsum(gammas)
    s2 = np.cumsum(gammas ** 2 * grad_sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(s1 > 0, (D ** 2 + s2) / (2 * s1), np.inf)


def schedule_integrals(h) -> tuple[float, float]:
    """A = ∫₀¹ h and B = ∫₀¹ h² of [C2], from a schedule sampled at t = 0 … T−1 (the discrete means)."""
    h = np.asarray(h, dtype=np.float64)
    return float(h.mean()), float((h ** 2).mean())


#: [C2]'s closed forms of (A, B) for named shapes (w: warm-up fraction, d: linear decay fraction).
def closed_form_integrals(name: str, warmup_frac: float = 0.0, decay_frac: float = 0.0) -> tuple[float, float]:
    if name == "constant":
        return 1.0, 1.0
    if name == "cosine":
        return 0.5, 3.0 / 8.0
    if name == "wsd":
        s = warmup_frac + decay_frac
        return 1.0 - s / 2.0, 1.0 - 2.0 * s / 3.0
    raise ValueError(f"name={name!r}: [C2] closed forms exist for 'constant', 'cosine', 'wsd'")


def c2_bound(gamma: float, T: int, D: float, G: float, A: float, B: float) -> float:
    """[C2]: D²/(2γTA) + γG²B/(2A) for γ_t = γ h(t/T) and constant gradient norm G."""
    return D ** 2 / (2 * gamma * T * A) + gamma * G ** 2 * B / (2 * A)


def c2_best(T: int, D: float, G: float, A: float, B: float) -> tuple[float, float]:
    """[C2]'s best base step γ* = D/(G√(TB)) and the bound there, D G √B / (A √T)."""
    return D / (G * math.sqrt(T * B)), D * G * math.sqrt(B) / (A * math.sqrt(T))


def sgd_last_iterate_bound(etas, grad_sq, D: float) -> float:
    """[C3] (SGD last iterate, any schedule; Defazio et al. 2023) at the horizon T = len(etas), in O(T):

        D²/(2 Σ_{t≤T} η_t) + Σ η_t² G_t² / (2 Σ η_t) + ½ Σ_{k=1}^{T−1} [η_k / Σ_{t=k+1}^T η_t] [Σ_{t=k}^T η_t² G_t² / Σ_{t=k}^T η_t]
    """
    eta = np.asarray(etas, dtype=np.float64)
    q = eta ** 2 * np.asarray(grad_sq, dtype=np.float64)
    S = np.cumsum(eta[::-1])[::-1]          # S[k] = Σ_{t ≥ k} η_t  (0-based k ↔ t = k + 1)
    Q = np.cumsum(q[::-1])[::-1]
    first = D ** 2 / (2 * S[0]) + Q[0] / (2 * S[0])
    if len(eta) < 2:
        return float(first)
    third = 0.5 * np.sum(eta[:-1] / S[1:] * Q[:-1] / S[:-1])
    return float(first + third)


def sgd_last_iterate_curve(etas, grad_sq, D: float, horizons) -> np.ndarray:
    """[C3] at each horizon in `horizons` (e.g. the logged steps): O(T) each."""
    etas, grad_sq = np.asarray(etas), np.asarray(grad_sq)
    return np.array([sgd_last_iterate_bound(etas[:T], grad_sq[:T], D) for T in horizons])


#: Relative allowance for float64 rounding added to every bound the trainer logs as a theorem: the inequalities
#: below are tight in simple cases (|w| from w₀ = 1 before the iterates cross 0: equality), so the computed f(x_T)
#: and the computed bound may otherwise differ by an ulp in the wrong direction.
ROUNDING_SLACK = 1e-9


def _times(a: float, r: float) -> float:
    """a·r with 0·∞ = 0 (a coefficient that is exactly 0 needs no distance bound)."""
    return 0.0 if a == 0.0 else a * r


class _Chain:
    """One choice of telescoping coefficients ρ'_s ∈ [0, ω_s/γ_s] for `OnlineToBatch` (docs/theory.md, Theorem 2).

    `cap` (a number m > 0, `math.inf`, or "greedy") says how far ρ' may rise when ω_s/γ_s rises: up to m / Σ_{r≤s} γ_r
    (the coefficient the theorem's own weighting would have, times m), without limit, or whichever of raising and
    holding costs less now. Every choice gives a valid bound; `OnlineToBatch` keeps several and reports the least."""

    def __init__(self, D: float, cap):
        self.D, self.cap = D, cap
        self.omega = 1.0      # ω of the newest z in x (x_0 = z_0: weight 1)
        self.rho = None       # ρ' of the latest step; None while z has not moved (z = z_0)
        self.P = 0.0          # 2 × the telescoped distance part: ρ'_0 D² + Σ (ρ'_s − ρ'_{s−1})_+ R_s²
        self.Q = 0.0          # 2 × the gradient part: Σ ρ'_s γ_s² ‖g_s‖² + 2 Σ (ω_s − ρ'_s γ_s) ‖g_s‖ R_s

    def step(self, gamma: float, g: float, c: float, R: float, total: float) -> None:
        w, started = self.omega, self.rho is not None
        prev = self.rho if started else 0.0
        if not started:
            R = self.D                               # before z moves, ‖z_t − u‖ = D exactly
        full = w / gamma if gamma > 0 else math.inf
        if full <= prev:                             # ρ' may drop for free (drop the −ρ' d² surplus)
            rho = full
        elif gamma == 0:                             # a zero step: hold, Cauchy–Schwarz for ⟨g, z − u⟩
            rho = prev
        elif self.cap == "greedy":                   # raise (pay (ρ − ρ_prev) R²) or hold (Cauchy–Schwarz)?
            raise_cost = _times(full - prev, R * R)
            rho = full if raise_cost <= 2.0 * _times((w - prev * gamma) * g, R) else prev
        else:
            rho = max(prev, min(full, self.cap / total if total > 0 else math.inf))
        if rho > prev:
            self.P += _times(rho - prev, R * R)
        if rho < full:
            self.Q += 2.0 * _times((w - rho * gamma) * g, R)
        self.Q += rho * gamma * gamma * g * g if gamma > 0 else 0.0
        if gamma > 0 or started:
            self.rho = rho
        keep = 1.0 - c                               # renormalise: old weights × (1 − c), the new z gets c
        self.P *= keep
        self.Q *= keep
        if self.rho is not None:
            self.rho *= keep
        self.omega = c

    def bound(self, G: float, R: float | None) -> float:
        w = self.omega
        if self.rho is None:                         # z_T = z_0: ⟨g_T, z_T − u⟩ ≤ G D
            last = 2.0 * _times(w * G, self.D)
        elif self.rho > 0:                           # max over 0 ≤ d ≤ R of 2 ω G d − ρ' d²
            d = w * G / self.rho
            if R is not None:
                d = min(d, float(R))
            last = 2.0 * w * G * d - self.rho * d * d
        else:
            last = 2.0 * _times(w * G, math.inf if R is None else float(R))
        return 0.5 * (self.P + self.Q + last)


class OnlineToBatch:
    """The online-to-batch bound on f(x_T) − f(u) of schedule-free with the SGD base and ANY averaging coefficients
    (docs/theory.md, Theorem 2), kept in O(1) memory and time per step.

    The method, in the theorem's indexing: x_0 = z_0; at step t = 0, 1, …: y_t = (1 − β) z_t + β x_t,
    g_t ∈ ∂f(y_t), z_{t+1} = z_t − γ_t g_t, x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}. So x_T = Σ_{s≤T} ω_s z_s with
    ω_T = c_T, ω_s = c_s Π_{r=s+1..T} (1 − c_r) and c_0 = 1: every averaging mode is a sequence of c's (the RLS
    storage trick's c_1 = 1 gives z_0 the weight 0; the `schedulet` weighting keeps it). For convex f and any u,

        f(x_T) − f(u) ≤ Σ_{s≤T} ω_s ⟨g_s, z_s − u⟩                                          (Theorem 1, any β)

    and each term is bounded from what a run knows: ⟨g_s, z_s − u⟩ = (d_s² − d_{s+1}²)/(2γ_s) + γ_s‖g_s‖²/2 with
    d_s = ‖z_s − u‖ (telescoped with coefficients ρ'_s ≤ ω_s/γ_s, Abel summation), the rest by Cauchy–Schwarz with
    R_s ≥ d_s, and the one gradient not computed yet, g_T at y_T, by a bound G ≥ ‖g_T‖. β does not enter.
    Several choices of ρ' are carried along (`CAPS`); each gives a valid bound and the least is reported.

    Use: `step(gamma, grad_sq, c, R)` once per optimizer step (R ≥ ‖z_t − u‖ before the step, e.g. D + ‖z_t − z_0‖;
    `math.inf` when unknown), then `bound(G, R)` for x after the steps so far (R ≥ ‖z_T − u‖ now; None: not used).
    With u = x* and D = ‖z_0 − x*‖ this bounds f(x_T) − f*; for the `schedulet` weighting it is at most [C1]
    (D² + Σ_{t≤T} γ_t²‖g_t‖²)/(2 Σ_{t≤T} γ_t) with ‖g_T‖ ≤ G (equal when R does not bind). Σ ω = 1 throughout.
    """

    #: ρ' may rise to m / Σγ for these m (1: the theorem's weighting), without limit, or greedily.
    CAPS = (1.0, 2.0, 4.0, math.inf, "greedy")

    def __init__(self, D: float):
        self.total = 0.0          # Σ_{s≤t} γ_s, the scale of the caps
        self.chains = [_Chain(float(D), cap) for cap in self.CAPS]

    @property
    def D(self) -> float:
        return self.chains[0].D

    @D.setter
    def D(self, value: float) -> None:
        for chain in self.chains:
            chain.D = float(value)

    def step(self, gamma: float, grad_sq: float, c: float, R: float = math.inf) -> None:
        gamma, c, R = float(gamma), float(c), float(R)
        g = math.sqrt(max(float(grad_sq), 0.0))
        self.total += gamma
        for chain in self.chains:
            chain.step(gamma, g, c, R, self.total)

    def bound(self, G: float, R: float | None = None) -> float:
        """The bound on f(x_T) − f(u) after the steps fed so far; G ≥ ‖g_T‖ (the next gradient), R ≥ ‖z_T − u‖."""
        return min(chain.bound(float(G), R) for chain in self.chains)

    def state_dict(self) -> dict:
        return {"total": self.total, "chains": [dict(vars(c)) for c in self.chains]}

    def load_state_dict(self, state: dict) -> None:
        self.total = state["total"]
        for chain, saved in zip(self.chains, state["chains"]):
            vars(chain).update(saved)


def online_to_batch_curve(gammas, grad_sq, cs, D: float, next_grad_sq, R=None) -> np.ndarray:
    """`OnlineToBatch` over a whole run: element T−1 bounds f(x_T) − f* after T steps.

    `gammas`, `grad_sq`, `cs`: γ_t, ‖g_t‖² and c_{t+1} for t = 0 … T−1; `next_grad_sq[t]` ≥ ‖g_{t+1}‖² (the gradient
    at y_{t+1}, not computed by step t); `R[t]` ≥ ‖z_t − x*‖ for t = 0 … T (default D + the path length
    Σ_{s<t} γ_s ‖g_s‖, valid for the SGD base)."""
    gammas, grad_sq, cs = (np.asarray(a, dtype=np.float64) for a in (gammas, grad_sq, cs))
    next_grad_sq = np.asarray(next_grad_sq, dtype=np.float64)
    if R is None:
        R = D + np.concatenate([[0.0], np.cumsum(gammas * np.sqrt(grad_sq))])
    acc, out = OnlineToBatch(D), []
    for t in range(len(gammas)):
        acc.step(gammas[t], grad_sq[t], cs[t], R[t])
        out.append(acc.bound(math.sqrt(next_grad_sq[t]), R[t + 1]))
    return np.array(out)
