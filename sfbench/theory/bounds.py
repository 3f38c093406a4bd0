"""Convergence bounds a run should follow (ALGORITHMS.md section C), from arrays of step sizes and gradient norms.

Everything is numpy and vectorised: [C1] for a whole run is two cumulative sums; [C3] at one horizon is O(T) through
suffix sums (the triple sum written in [C3] would be O(T²) per horizon, O(T³) for a curve).

Conventions: `gammas[t]`, `grad_sq[t]` for steps t = 0 … T−1 (‖g_t‖² taken at y_t; with an Adam base pass ‖g_t‖²_P).
"""

from __future__ import annotations

import math

import numpy as np


def sf_bound(gammas, grad_sq, D: float) -> np.ndarray:
    """[C1] (SF with any schedule, `lr` weights): f(x_T) − f* ≤ (D² + Σ_{t<T} γ_t²‖g_t‖²) / (2 Σ_{t<T} γ_t),
    for every T = 1 … len(gammas): element T−1 of the result is the bound after T steps."""
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
