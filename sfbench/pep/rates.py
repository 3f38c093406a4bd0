"""Which rate a short sweep of worst cases supports: fits of T^(−a) and of 1/log(T+1) side by side (numpy only).

A PEP sweep reaches T ≤ 40 here, where T^(−a) with a small a and C/log(T+1) can be nearly indistinguishable; reading a
rate off one scaled curve ("T·wc is flat") without comparing the alternatives is how a conclusion gets ahead of the
data. `fit_rates` fits both on the same horizons (least squares in log space, so each point counts by its relative
error) and reports the residuals and what each fit extrapolates to at a far horizon, where they part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class RateFit:
    model: str            # "T^-a" or "1/log(T+1)"
    C: float
    a: float | None       # the fitted exponent (power law only)
    rms_log: float        # root-mean-square residual of log(wc)
    at_far: float         # the fit's value at `far`
    far: int

    def describe(self) -> str:
        shape = f"{self.C:.4g}·T^-{self.a:.3f}" if self.a is not None else f"{self.C:.4g}/log(T+1)"
        return (f"{self.model:<11} {shape:<22} rms log-residual {self.rms_log:.2e}   "
                f"at T={self.far}: {self.at_far:.4g}")


def fit_rates(Ts, values, *, T_min: int = 5, far: int = 1000) -> list[RateFit]:
    """Fit wc ≈ C·T^(−a) and wc ≈ C/log(T+1) to the finite worst cases at horizons ≥ T_min (at least 3 needed)."""
    T = np.asarray(Ts, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    keep = (T >= T_min) & np.isfinite(v) & (v > 0)
    T, v = T[keep], v[keep]
    if len(T) < 3:
        raise ValueError(f"fit_rates needs ≥ 3 finite positive worst cases at T ≥ {T_min}, got {len(T)}")
    y = np.log(v)
    A = np.stack([np.ones_like(T), -np.log(T)], axis=1)          # log wc = log C − a log T
    (logC, a), *_ = np.linalg.lstsq(A, y, rcond=None)
    power_res = y - A @ np.array([logC, a])
    inv_log = -np.log(np.log(T + 1.0))                           # log wc = log C − log log(T+1)
    logC2 = float(np.mean(y - inv_log))
    log_res = y - (logC2 + inv_log)
    rms = lambda r: float(np.sqrt(np.mean(r ** 2)))              # noqa: E731
    return [RateFit("T^-a", math.exp(logC), float(a), rms(power_res), math.exp(logC) * far ** (-a), far),
            RateFit("1/log(T+1)", math.exp(logC2), None, rms(log_res), math.exp(logC2) / math.log(far + 1.0), far)]
