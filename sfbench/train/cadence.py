"""When to evaluate: `trainer.eval_every` — a number of steps, 0 (only at the end), or `auto` (the default).

`auto` aims at `AUTO_EVALS` (50) evaluations per run, so that a default run has a curve at x and the [C4] fit has
points: the interval starts at max(1, round(steps / 50)). Evaluation is not always cheap next to a training step
(a language-model task evaluates several batches; a large test set is a full pass), so the cost is measured: after
each evaluation the interval becomes the smallest multiple of the starting one for which evaluating costs at most
`trainer.eval_share` (default 0.1) of the training time between evaluations — measured wall-clock seconds of
evaluating against seconds per training step (logging and the rest of the step included). The first evaluation
only warms up (lazy initialisation, caches); from the second on, an evaluation's cost is the lowest measured since
(contention from other processes only ever adds time), so a burst of load does not stretch the interval. It only grows, so noise cannot make it flap, and it stays on the grid of the starting interval, so runs of one sweep
evaluate at the same steps unless evaluating costs them more. The last step is always evaluated.

With several processes (data parallel) every rank must evaluate at the same steps: the new interval is the
largest any rank asks for (one all-reduce after an evaluation, which all ranks reach together).
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
    """Decides which steps evaluate; `due(step)` before a step's evaluation, `measured(...)` after it."""

    def __init__(self, eval_every, steps: int, share: float = 0.1, start: int = 0):
        spec = check_eval_every(eval_every)
        self.steps, self.share = int(steps), float(share)
        self.auto = spec == "auto"
        self.base = max(1, round(self.steps / AUTO_EVALS)) if self.auto else int(spec)
        self.every = self.base
        self.count = 0
        self.eval_s = 0.0
        self.lowest = math.inf            # the cheapest evaluation after the first
        self.last_step, self.last_time = start, None

    def due(self, step: int) -> bool:
        return step == self.steps or bool(self.every and step % self.every == 0)

    def needed(self, eval_s: float, step_s: float) -> int:
        """The smallest multiple of the starting interval for which one evaluation of `eval_s` seconds costs at most
        `share` of the training time between evaluations (`step_s` seconds a step)."""
        if not self.auto or step_s <= 0 or not math.isfinite(eval_s) or self.share <= 0:
            return self.every
        k = math.ceil(eval_s / (self.share * step_s) / self.base - 1e-9)
        return max(self.every, self.base * max(k, 1))

    def measured(self, step: int, eval_s: float, since_last_s: float, agree=None) -> None:
        """After the evaluation at `step`: it took `eval_s` seconds, and training since the previous evaluation (or the
        start) took `since_last_s` seconds. `agree(int) -> int` makes the ranks of a data-parallel run agree (max)."""
        self.count += 1
        self.eval_s += eval_s
        if self.count >= 2:
            self.lowest = min(self.lowest, eval_s)
        steps_between = step - self.last_step
        self.last_step = step
        if steps_between <= 0 or self.count < 2:
            return
        new = self.needed(self.lowest, since_last_s / steps_between)
        if agree is not None and self.auto:
            new = agree(new)
        self.every = max(self.every, new)

    def summary(self) -> dict:
        return {"eval_every": "auto" if self.auto else self.base, "interval": self.every, "evaluations": self.count,
                "eval_s": self.eval_s}


def max_over_ranks(value: int, device) -> int:
    """The largest `value` over the ranks of a data-parallel run (one all-reduce)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
