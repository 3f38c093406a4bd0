"""Predictions before running: the best base step size and the final bound for a schedule and horizon.

With γ_t = γ·h_t (h the schedule's shape, t = 0 … T−1) and a constant gradient norm G, every bound of section C is
`t1/γ + γ·t23`:

- **[C1]** (SF optimizers): t1 = D²/(2 Σh), t23 = G² Σh² / (2 Σh) — the discrete [C2]: Σh = T·A, Σh² = T·B, so
  γ* = D/(G √(Σh²)) = D/(G √(T B)) and the bound there is D G √(Σh²)/Σh = D G √B/(A √T).
- **[C3]** (SGD-type baselines): t1 = D²/(2 Σh) and t23 = [C3] at γ = 1 with D = 0 (the last two terms), so
  γ* = √(t1/t23) ("the best base step is sqrt(t1/(t2+t3))").

Either way the best bound is 2√(t1·t23). numpy only; the command line that composes a config and runs a pilot is
`sfbench.theory.__main__`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bounds import sgd_last_iterate_bound


@dataclass
class Prediction:
    kind: str            # "C1" | "C3"
    T: int
    D: float
    G: float
    t1: float            # bound(γ) = t1/γ + γ·t23
    t23: float
    A: float             # mean of h, and of h² ([C2]'s A and B)
    B: float

    @property
    def best_lr(self) -> float:
        return math.sqrt(self.t1 / self.t23) if self.t23 > 0 else math.inf

    @property
    def best_bound(self) -> float:
        return 2.0 * math.sqrt(self.t1 * self.t23)

    def bound_at(self, lr: float) -> float:
        return self.t1 / lr + lr * self.t23 if lr > 0 else math.inf


def predict(h, D: float, G: float, kind: str = "C1") -> Prediction:
    """The bound as a function of the base step for the schedule shape `h` (length T), see the module docstring."""
    h = np.asarray(h, dtype=np.float64)
    if h.ndim != 1 or len(h) == 0 or not np.all(np.isfinite(h)) or np.any(h < 0) or h.sum() <= 0:
        raise ValueError("h must be a non-empty 1-D array of finite step-size multipliers ≥ 0, not all zero")
    for name, value in (("D", D), ("G", G)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name}={value!r}: must be a finite number > 0")
    if kind not in ("C1", "C3"):
        raise ValueError(f"kind={kind!r} is not allowed; choose 'C1' (SF) or 'C3' (SGD-type baselines)")
    s1 = float(h.sum())
    t1 = D * D / (2.0 * s1)
    if kind == "C1":
        t23 = G * G * float((h * h).sum()) / (2.0 * s1)
    else:
        t23 = sgd_last_iterate_bound(h, np.full(len(h), G * G), 0.0)
    return Prediction(kind, len(h), float(D), float(G), t1, float(t23), float(h.mean()), float((h * h).mean()))


def lr_grid(center: float, points: int = 5, factor: float = 3.0) -> list[float]:
    """`points` base steps spaced by `factor` geometrically, centred on `center` (for a Hydra sweep)."""
    if points < 1 or factor <= 1 or not (math.isfinite(center) and center > 0):
        raise ValueError("lr_grid needs points ≥ 1, factor > 1 and a finite center > 0")
    k = np.arange(points) - (points - 1) / 2.0
    return [float(f"{center * factor ** float(e):.3g}") for e in k]
