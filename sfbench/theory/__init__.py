"""sfbench.theory — the bounds each run should follow (docs/theory.md section C) and their fits [C4]; numpy/scipy only.

`python -m sfbench.theory predict …` predicts the best base learning rate and the final bound before a run.
"""

from .bounds import (ROUNDING_SLACK, OnlineToBatch, c2_best, c2_bound, closed_form_integrals, online_to_batch_curve,
                     schedule_integrals, sf_bound, sgd_last_iterate_bound, sgd_last_iterate_curve)
from .fit import BoundFit, bound_terms, fit_bound

__all__ = ["OnlineToBatch", "online_to_batch_curve", "ROUNDING_SLACK", "sf_bound", "schedule_integrals",
           "closed_form_integrals", "c2_bound", "c2_best", "sgd_last_iterate_bound",
           "sgd_last_iterate_curve", "bound_terms", "fit_bound", "BoundFit"]
