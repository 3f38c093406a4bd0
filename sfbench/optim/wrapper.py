"""Schedule-free around any optimizer: `ScheduleFree(base)`, in the shape of the reference's `ScheduleFreeWrapper`.

`base` (SGD, AdamW, Muon, `MuonAdamW` …) takes the step of z; with Δ_t its update for the gradient g_t at y_t:

    y_t     = (1 − β) z_t + β x_t                                   [A1], in the parameters while training
    z_{t+1} = z_t − Δ_t(g_t) − γ_t λ_y y_t                          [A3] with the base's update, decay λ_y at y
    x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}                   [A4], c from `weighting` [A5]

With the default weighting it takes the reference wrapper's steps; it adds sfbench's weightings, the warm-up,
SF-Polyak ([B1] with ‖g‖²_P = ⟨g, Δ⟩, Δ the base's update at lr = 1) and what a trainer logs (docs/architecture.md
says how a step works). For the fastest step with an SGD or Adam base, use `SFSGD` / `SFAdamW`: one fused pass.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable

import torch
from torch.optim import Optimizer

from .base import LR_RULES, RUNNING_SCALARS, ScheduleFreeBase, ScheduleFreeMixin, check_choice, check_range, check_sf, \
    require_loss
from .kernels import TensorList, averaging_coefficient, inner, polyak_step, warmed_up
from .torch_internals import init_as_optimizer


def _dot(pairs: list) -> float:
    """Σ ⟨a, b⟩ over pairs of tensor lists, in float64 (summed on the host: the tensors may be on several devices)."""
    return float(sum(inner(x, y).cpu() for a, b in pairs for x, y in zip(a, b)))


class ScheduleFree(ScheduleFreeMixin, Optimizer):
    """Schedule-free around `base` (module docstring).

    `base`'s param groups are this optimizer's, their `lr` (times the base's `d`, if any: D-Adaptation, Prodigy) is
    γ_t; `weight_decay_at_y` λ_y decays at y (the base's own `weight_decay` at z); `momentum` β ∈ (0, 1] of [A1]; the
    other arguments are `SFSGD`'s. It starts in training mode (x = y = z then, so a step before `train()` is fine).
    """

    def __init__(self, base: Optimizer, weight_decay_at_y: float = 0.0, momentum: float = 0.9,
                 weight_lr_power: float = 2.0, r: float = 0.0, *, weighting: str | None = None, alpha: float = 0.5,
                 lr_rule: str = "schedule", polyak_floor: float = 1e-12, warmup_steps: int = 0, c: float = 0.1):
        if not isinstance(base, Optimizer):
            raise TypeError(f"base={type(base).__name__} is not a torch.optim.Optimizer")
        if isinstance(base, (ScheduleFreeBase, ScheduleFree)):
            raise ValueError(f"base={type(base).__name__} is already schedule-free; wrap its base optimizer instead")
        check_range("momentum", momentum, 0.0, 1.0, lo_open=True)
        check_range("weight_decay_at_y", weight_decay_at_y, 0.0, math.inf, hi_open=True)
        check_choice("lr_rule", lr_rule, LR_RULES)
        check_range("polyak_floor", polyak_floor, 0.0, math.inf, lo_open=True, hi_open=True)
        # the reference's weighting; SF-Polyak's too, as its authors run it
        self.sf_defaults = dict(weighting=weighting or "lr_power", alpha=alpha, r=r, weight_lr_power=weight_lr_power,
                                warmup_steps=warmup_steps, c=c)
        check_sf(self.sf_defaults)
        self.base, self.momentum, self.weight_decay_at_y = base, momentum, weight_decay_at_y
        self.lr_rule, self.polyak_floor, self.train_mode = lr_rule, polyak_floor, True
        #: Set by a trainer that logs theory: then `last_grad_sq_P` = ⟨g, Δ⟩/γ after each step (Δ the z-step taken).
        self.record_grad_sq, self.last_grad_sq_P = False, None
        init_as_optimizer(self, base.defaults, base.param_groups)
        self.state: dict = defaultdict(dict)
        self.sf_groups = [dict(self.sf_defaults, **RUNNING_SCALARS) for _ in base.param_groups]

    def add_param_group(self, param_group: dict) -> None:
        """Add a group to the base (its param groups are this optimizer's) with the constructor's SF settings."""
        self.base.add_param_group(param_group)
        self.sf_groups.append(dict(self.sf_defaults, **RUNNING_SCALARS))

    @property
    def needs_loss(self) -> bool:
        return self.lr_rule == "polyak"

    def _training(self) -> bool:
        return self.train_mode

    def _swap(self, to_train: bool) -> None:       # y = x + (1 − β)(z − x) and back, as the reference wrapper
        if self.train_mode != to_train:
            for p in (p for p in self._params() if "z" in self.state[p]):
                p.lerp_(self.state[p]["z"], 1 - self.momentum if to_train else 1 - 1 / self.momentum)
        self.train_mode = to_train

    def _points(self, which: str) -> list[torch.Tensor]:
        out = []
        for p in self._params():
            y, z = p.detach(), self.state[p].get("z")
            if z is None or (which == "x" and not self.train_mode):    # no step yet (x = y = z), or x in eval mode
                out.append(y)
            else:
                out.append(z if which == "z" else torch.lerp(y, z, 1 - 1 / self.momentum))
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None, lower_bound: Any = 0.0) -> Any:
        """One SF step with the base's update; SF-Polyak needs `loss=` (and `lower_bound=`, default 0) or a closure."""
        closure_loss, loss = self._begin(closure, loss)
        polyak, beta, wd = self.lr_rule == "polyak", self.momentum, self.weight_decay_at_y
        if polyak:
            require_loss("ScheduleFree", loss)
        work = []       # (group, sf, scheduled γ_t, params with gradients, their z)
        for group, sf in zip(self.param_groups, self.sf_groups):
            ps = [p for p in group["params"] if p.grad is not None]
            for p in (p for p in ps if "z" not in self.state[p]):
                self.state[p]["z"] = p.detach().clone(memory_format=torch.preserve_format)
            lr = warmed_up(sf, float(group["lr"]) * float(group.get("d", 1.0)))     # d: D-Adaptation's, Prodigy's
            work.append((group, sf, lr, ps, [self.state[p]["z"] for p in ps]))
        active = [w for w in work if w[3]]
        gu = _dot([([p.grad for p in ps], torch._foreach_sub(zs, ps)) for *_, ps, zs in active]) if polyak else 0.0
        for _, _, lr, ps, zs in active:
            if wd and not polyak:       # decay at y, before y is turned into x (x doesn't change)
                torch._foreach_sub_(zs, ps, alpha=lr * wd)
                torch._foreach_sub_(ps, ps, alpha=lr * wd * (1 - beta))
            torch._foreach_lerp_(ps, zs, 1 - 1 / beta)              # parameters: y → x
        self._exchange(work)                                        # parameters hold z, the state x
        before = [[p.detach().clone() for p in ps] for *_, ps, _ in work] if polyak or self.record_grad_sq else None
        saved = [group["lr"] for group in self.param_groups]
        try:            # the base steps at lr = 1 for SF-Polyak (its update is then Δ), at the warmed-up lr otherwise
            for group, sf in zip(self.param_groups, self.sf_groups):
                group["lr"] = 1.0 if polyak else warmed_up(sf, group["lr"])
            self.base.step()
        finally:
            for group, lr in zip(self.param_groups, saved):
                group["lr"] = lr
        self._exchange(work)                                        # parameters hold x, the state z'
        steps, self.last_grad_sq_P = [lr for _, _, lr, _, _ in work], None
        if before is not None:      # Δ = z − z', and ⟨g, Δ⟩ per group
            gpgs = [_dot([([p.grad for p in ps], torch._foreach_sub(b, zs))]) for (*_, ps, zs), b in zip(work, before)]
            if polyak:
                step = polyak_step(loss, lower_bound, sum(gpgs), gu, self.polyak_floor)
                steps = [cap if cap <= step else step for cap in steps]     # a NaN step is taken, not capped
                for (*_, ps, zs), b, lr in zip(work, before, steps):
                    if ps:          # z' = z − γ Δ, then the decay at y = x + (1 − β)(z − x)
                        torch._foreach_lerp_(zs, b, 1 - lr)
                        if wd:
                            torch._foreach_sub_(zs, torch._foreach_lerp(ps, b, 1 - beta), alpha=lr * wd)
            self.last_grad_sq_P = sum(gpgs) if polyak else sum(g / lr for g, lr in zip(gpgs, steps) if lr > 0)
        for (group, sf, scheduled, ps, zs), lr in zip(work, steps):
            if "lr_lookahead" in group:     # γ_{t+1} for `schedulet`, written by sfbench's schedules
                sf["lr_lookahead"] = group["lr_lookahead"]
            c = averaging_coefficient(sf, scheduled)        # from the scheduled γ_t (SF-Polyak: the cap)
            if ps:      # y' = x + (1 − β (1 − c)) (z' − x): the new average and y in one pass
                torch._foreach_lerp_(ps, zs, 1 - beta * (1 - c))
            sf.update(k=sf["k"] + 1, scheduled_lr=scheduled, last_lr=lr, last_c=c)
            group["last_lr"], group["last_c"] = lr, c     # what a trainer logs, and its online bound reads
        return closure_loss

    def _exchange(self, work: list) -> None:
        """Exchange the storage of each parameter with its state's z (no copy): the base then steps z in place."""
        for *_, ps, zs in work:
            for i, p in enumerate(ps):
                data, p.data = p.data, zs[i]
                zs[i] = self.state[p]["z"] = data

    def theory_caveats(self) -> list[str]:
        """Why docs/theory.md's Theorem 2 is no theorem here (empty: it is, on a convex task with exact D); it needs
        z_{t+1} = z_t − γ_t g_t: a plain SGD base (no momentum, weight decay, maximize), one lr, one set of weights."""
        groups = self.base.param_groups
        extras = [key for key in ("momentum", "weight decay", "maximize") if any(g.get(key.replace(" ", "_"))
                                                                                 for g in groups)]
        out = [f"base {type(self.base).__name__}{' with ' + ', '.join(extras) if extras else ''}: the z-step is not "
               "γ·(sub)gradient, so no theorem covers it"] if type(self.base) is not torch.optim.SGD or extras else []
        if self.weight_decay_at_y:
            out.append("weight decay > 0: the steps minimise f + λ‖w‖²/2, not the f that is evaluated")
        if len({float(g["lr"]) for g in groups}) > 1 or len({tuple(sf[k] for k in self.sf_defaults)
                                                             for sf in self.sf_groups}) > 1:
            out.append("parameter groups with different learning rates or averaging settings")
        return out

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict, plus z (by parameter index, as torch numbers them) and the averaging state."""
        z = {i: self.state[p]["z"] for i, p in enumerate(self._params()) if "z" in self.state[p]}
        return {"base": self.base.state_dict(), "schedule_free": {
            "z": z, "groups": [dict(sf) for sf in self.sf_groups], "train_mode": self.train_mode,
            **{key: getattr(self, key) for key in ("momentum", "weight_decay_at_y", "lr_rule", "polyak_floor")}}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load `state_dict()` of this class, or of `schedulefree.ScheduleFreeWrapper` (the base's state dict with z
        in its state and `k`, `lr_max`, `weight_sum` in its groups; saved in eval mode, as its README asks, since
        it doesn't record the mode). Anything else is refused with the reason."""
        if "base" in state_dict and "schedule_free" in state_dict:
            base_sd, ours = state_dict["base"], state_dict["schedule_free"]
        else:    # the reference wrapper's: z in the base's state, the running sums in its groups
            groups, state, keys = state_dict.get("param_groups"), state_dict.get("state"), ("k", "lr_max", "weight_sum")
            if not isinstance(groups, list) or not isinstance(state, dict):
                raise ValueError("ScheduleFree.load_state_dict: not a state dict of ScheduleFree or of schedulefree's "
                                 "ScheduleFreeWrapper (it needs 'base' and 'schedule_free', or 'state' and "
                                 "'param_groups')")
            if not state or not all("z" in s for s in state.values()):
                raise ValueError("ScheduleFree.load_state_dict: this state dict has no z for some parameters: it is "
                                 "the base optimizer's own (load it with optimizer.base.load_state_dict), not a "
                                 "schedule-free one")
            base_sd = {**state_dict, "state": {i: {k: v for k, v in s.items() if k != "z"} for i, s in state.items()},
                       "param_groups": [{k: v for k, v in g.items() if k not in keys} for g in groups]}
            ours = {"z": {i: s["z"] for i, s in state.items()}, "train_mode": False,
                    "groups": [{k: g[k] for k in keys if k in g} for g in groups]}
        if len(ours["groups"]) != len(self.param_groups):
            raise ValueError(f"ScheduleFree.load_state_dict: the state dict has {len(ours['groups'])} parameter "
                             f"groups, this optimizer {len(self.param_groups)}")
        self.base.load_state_dict(base_sd)
        params, self.state = self._params(), defaultdict(dict)
        for i, z in ours["z"].items():
            self.state[params[int(i)]]["z"] = z.to(device=params[int(i)].device, dtype=params[int(i)].dtype).clone()
        self.sf_groups = [{**self.sf_defaults, **RUNNING_SCALARS, **g} for g in ours["groups"]]
        self.train_mode = bool(ours.get("train_mode", False))
        for key in ("momentum", "weight_decay_at_y", "lr_rule", "polyak_floor"):
            setattr(self, key, ours.get(key, getattr(self, key)))

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none)

    def __getstate__(self) -> dict[str, Any]:
        """Copies (deepcopy, pickle) keep the base and the averaging state, not only torch's three entries."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}
