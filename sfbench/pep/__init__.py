"""sfbench.pep — Performance Estimation Problems for schedule-free SGD on L-smooth nonconvex functions.

docs/theory.md section D (SFN's nonconvex rates), with the method of [A1]–[A5]. Built on PEPit and cvxpy only (no
torch, no training code). `worst_case(method, T, ...)` solves one PEP (cached as JSON under
`${SFBENCH_CACHE:-~/.cache/sfbench}/pep/`); `python -m sfbench.pep --method sf_constant --T 1-20` sweeps T.
"""

from .problems import (ANCHORS, DEFAULT_SOLVER, LINEAR_AVERAGINGS, METHODS, SOLVERS, build, cache_dir, cache_path,
                       coefficients, scalings, sweep, worst_case)
from .rates import RateFit, fit_rates

__all__ = ["worst_case", "sweep", "fit_rates", "RateFit", "coefficients", "scalings", "build", "cache_dir", "cache_path", "METHODS",
           "LINEAR_AVERAGINGS", "SOLVERS", "DEFAULT_SOLVER", "ANCHORS"]
