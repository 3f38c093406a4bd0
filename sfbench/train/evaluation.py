"""Evaluation at x: optimizers with `train()`/`eval()` (the SF family) are evaluated at x — `eval()` before, `train()`
after — with BatchNorm statistics recomputed there; the model is then restored bit for bit, so evaluating never
changes training."""

from __future__ import annotations

import contextlib

import torch

from ..tasks.base import Task
from .checkpoint import rng_state, set_rng_state


def autocast(precision: str, device: torch.device):
    """bf16 autocast on `device` for precision "bf16", autocast off otherwise."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


class Evaluation:
    """Evaluation at x for one task: `evaluate` a model there, or hold it there (`at_x`) for a body."""

    def __init__(self, task: Task, precision: str, device: torch.device, bn_batches: int):
        self.task, self.precision, self.device, self.bn_batches = task, precision, device, bn_batches

    @contextlib.contextmanager
    def at_x(self, model, opt):
        """The model at x (the optimizer's `eval()`, BatchNorm statistics recomputed there) for the body, then back
        exactly as it was: parameters and buffers bit for bit (the x ↔ y swap alone rounds y), the random number
        generators too. So evaluating never changes training, at the cost of one copy of the model while it runs."""
        kept = {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items()}
        rng = rng_state()
        swap = hasattr(opt, "eval") and hasattr(opt, "train")
        try:
            if swap:
                opt.eval()
            with torch.no_grad():
                self.recompute_batchnorm(model)
            model.eval()
            yield
        finally:
            model.train()
            if swap:
                opt.train()
            with torch.no_grad():
                for name, t in model.state_dict(keep_vars=True).items():
                    t.copy_(kept[name])
            set_rng_state(rng)

    @torch.no_grad()
    def evaluate(self, model, opt) -> dict[str, float]:
        with self.at_x(model, opt), autocast(self.precision, self.device):
            metrics = self.task.evaluate(model)
        return {k: float(v) for k, v in metrics.items()}

    def recompute_batchnorm(self, model) -> None:
        """BatchNorm statistics were gathered at y; recompute them at x (docs/theory.md A, RLS README)."""
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or self.bn_batches <= 0:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None                  # cumulative average over the batches below
        model.train()
        with autocast(self.precision, self.device):
            for batch in self.task.bn_batches(self.bn_batches):
                self.task.loss(model, batch)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
