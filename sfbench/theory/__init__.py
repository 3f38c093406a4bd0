"""sfbench.theory — the bounds each run should follow (ALGORITHMS.md section C); numpy only."""

from .bounds import (c2_best, c2_bound, closed_form_integrals, schedule_integrals, sf_bound, sgd_last_iterate_bound,
                     sgd_last_iterate_curve)

__all__ = ["sf_bound", "schedule_integrals", "closed_form_integrals", "c2_bound", "c2_best",
           "sgd_last_iterate_bound", "sgd_last_iterate_curve"]
