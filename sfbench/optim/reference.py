"""The schedule-free family written literally from docs/theory.md, for reading and as the tests' oracle: `ReferenceSF`
keeps x, y and z explicitly (three copies of the parameters, no storage trick) and applies [A1]–[A5] and SF-Polyak
[B1] as written, one tensor at a time, in whatever dtype it is given. Slow and memory-hungry on purpose.
"""

from __future__ import annotations

from typing import Sequence

import torch


class ReferenceSF:
    """Schedule-free with explicit x, y, z (z_0 = x_0 = y_0 = `params`, copied): read `ref.y`, compute the gradients
    there, call `ref.step(grads, lr, loss=..., lower_bound=..., next_lr=...)`. `base` is "sgd" (P_t = I) or "adam"
    (P_t = D_t⁻¹) [A3]; `weighting`, `r`, `weight_lr_power`, `alpha`, `c` the weights of [A5] (`schedulet` weights
    z_{t+1} by γ_{t+1}, `next_lr`, and keeps z_0 with weight γ_0); `lr_rule` "schedule" or "polyak" ([B1], `lr` the
    cap; the weights come from the cap, as the SFS authors' code does, not from the step taken).
    """

    def __init__(self, params: Sequence[torch.Tensor], *, base: str = "sgd", beta: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0, weighting: str = "lr_power",
                 r: float = 0.0, weight_lr_power: float = 2.0, alpha: float = 0.5, lr_rule: str = "schedule",
                 polyak_floor: float = 1e-12, c: float = 0.1):
        self.z = [p.detach().clone() for p in params]
        self.x = [p.detach().clone() for p in params]
        self.y = [p.detach().clone() for p in params]
        self.v = [torch.zeros_like(p) for p in self.z]
        self.base, self.beta, self.beta2, self.eps, self.wd = base, beta, beta2, eps, weight_decay
        self.weighting, self.r, self.p, self.alpha, self.c = weighting, r, weight_lr_power, alpha, c
        self.lr_rule, self.floor = lr_rule, polyak_floor
        self.t = 0
        self.weight_sum = 0.0
        self.lr_max = -1.0
        self.last_lr = None

    def _precondition(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """P_t g_t of [A3] (updates Adam's v_t first, so P_t includes this step's gradient)."""
        if self.base == "sgd":
            return [g.clone() for g in grads]
        out = []
        for v, g in zip(self.v, grads):
            v.mul_(self.beta2).add_((1 - self.beta2) * g * g)
            D = torch.sqrt(v / (1 - self.beta2 ** (self.t + 1))) + self.eps
            out.append(g / D)
        return out

    def _c_next(self, lr: float, next_lr: float) -> float:
        """c_{t+1} of [A5] from the scheduled step sizes γ_t = `lr` and γ_{t+1} = `next_lr`."""
        t = self.t
        if self.weighting == "poly":
            return (t + 1) ** (-self.alpha)
        if self.weighting == "constant":
            return self.c
        if self.weighting == "schedulet":       # x_{t+1} = Σ_{s≤t+1} γ_s z_s / Σ_{s≤t+1} γ_s
            if t == 0:
                self.weight_sum = lr           # z_0 = x_0 carries the weight γ_0
            self.weight_sum += next_lr
            return next_lr / self.weight_sum if self.weight_sum > 0 else 0.0
        if self.weighting == "uniform":
            w = 1.0
        elif self.weighting == "lr":
            w = lr
        elif self.weighting == "lr_power":
            self.lr_max = max(self.lr_max, lr)
            w = (t + 1) ** self.r * self.lr_max ** self.p
        else:
            raise ValueError(self.weighting)
        self.weight_sum += w
        return w / self.weight_sum if self.weight_sum > 0 else 0.0

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor], lr: float, *, loss: float | None = None,
             lower_bound: float = 0.0, next_lr: float | None = None) -> None:
        """One step with scheduled step size (or cap) `lr`; `next_lr` (default: `lr`) is γ_{t+1} for `schedulet`."""
        Pg = self._precondition(grads)
        c = self._c_next(lr, lr if next_lr is None else next_lr)     # from the schedule, before Polyak picks γ_t
        if self.lr_rule == "polyak":
            # [B1]: γ_t = min{γ_max, [f(y) − ℓ* + β⟨g, z − x⟩]_+ / max(‖g‖²_P, M)}
            inner = sum(float((g * (z - x)).sum()) for g, z, x in zip(grads, self.z, self.x))
            norm_p = sum(float((g * pg).sum()) for g, pg in zip(grads, Pg))
            numerator = float(loss) - lower_bound + self.beta * inner
            lr = min(lr, max(numerator, 0.0) / max(norm_p, self.floor))
        for z, pg, y in zip(self.z, Pg, self.y):
            z.sub_(lr * (pg + self.wd * y))                                       # [A3], weight decay at y
        for x, z, y in zip(self.x, self.z, self.y):
            x.mul_(1 - c).add_(c * z)                                             # [A4]
            y.copy_((1 - self.beta) * z + self.beta * x)                          # [A1] for t + 1
        self.t += 1
        self.last_lr = lr
