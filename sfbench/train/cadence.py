"""When to evaluate: `trainer.eval_every` — a number of steps, 0 (only at the end), or `auto` (the default).

`auto` aims at `AUTO_EVALS` (50) evaluations per run, so that a default run has a curve at x and the [C4] fit has
points: the interval starts at max(1, round(steps / 50)). An evaluation is not always cheap next to a training step
(a language-model task evaluates several batches, CIFAR-10 the whole test set), so the interval is the smallest
multiple of the starting one for which evaluating costs at most `trainer.eval_share` (default 0.1) of the training
between evaluations — with the cost the task states from its configuration (`Task.eval_cost`, in training steps),
never a measured time: the same command evaluates at the same steps on a busy machine and an idle one, and every rank
of a data-parallel run at the same steps without talking. The last step is always evaluated.
"""

from __future__ import annotations

import math

AUTO_EVALS = 50


def check_eval_every(value) -> int | str:
    """`value` as the trainer takes it: "auto" or an int ≥ 0; raises ValueError with the allowed values."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise ValueError(f"trainer.eval_every={value!r} is not allowed; use auto (about {AUTO_EVALS} evaluations, "
                         f"fewer when evaluating is expensive), a number of steps ≥ 1, or 0 (only at the end)")
    return int(value)


class EvalCadence:
    """Which steps evaluate (`due(step)`), decided from the configuration alone; `measured` counts evaluations."""

    def __init__(self, eval_every, steps: int, share: float = 0.1, eval_cost: float = 1.0):
        spec = check_eval_every(eval_every)
        self.steps, self.share = int(steps), float(share)
        self.auto = spec == "auto"
        self.base = max(1, round(self.steps / AUTO_EVALS)) if self.auto else int(spec)
        self.every = self.base
        if self.auto and self.share > 0 and math.isfinite(eval_cost) and eval_cost > 0:
            # the smallest multiple k of the base interval with eval_cost ≤ share · k · base
            self.every = self.base * max(1, math.ceil(eval_cost / (self.share * self.base) - 1e-9))
        self.count, self.eval_s = 0, 0.0

    def due(self, step: int) -> bool:
        return step == self.steps or bool(self.every and step % self.every == 0)

    def measured(self, eval_s: float) -> None:
        """After an evaluation that took `eval_s` seconds (reported, never acted on)."""
        self.count += 1
        self.eval_s += eval_s

    def summary(self) -> dict:
        return {"eval_every": "auto" if self.auto else self.base, "interval": self.every, "evaluations": self.count,
                "eval_s": self.eval_s}
