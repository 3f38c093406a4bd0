"""Schedule-free around any optimizer (ALGORITHMS.md section A with the base's update as the z-step [A3]; [B1]).

`ScheduleFree(base)` runs the three sequences of [A1]–[A5] with `base` (any `torch.optim.Optimizer`: SGD, AdamW,
Muon, a `MuonAdamW` mix …) taking the step of z:

    y_t     = (1 − β) z_t + β x_t                                   [A1], the point in the parameters while training
    z_{t+1} = base_step(z_t; g_t = ∇f(y_t)) − γ_t λ_y y_t           [A3] with the base's own update
    x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}                   [A4], c from `weighting` [A5]

It equals `schedulefree.ScheduleFreeWrapper` (same arguments, same order) with the default weighting, and adds
sfbench's weightings, the reference's warm-up, SF-Polyak and what a trainer logs next to SF runs ([C1] accumulators,
the distance travelled by x).

How a step works. The parameters hold y; the state holds z (`state[p]["z"]`). Before the base steps, y is turned into
x in place (x = y + (1 − 1/β)(z − y)) and the parameter's storage is exchanged with z's (`p.data`, no copy), so the
base updates z in the parameter's own tensor, with its gradient, as if it were training z. Afterwards the storages
are exchanged back and one pass writes the next y from x and the new z:
y' = x + (1 − β (1 − c))(z' − x). That is 2 passes of 3 arrays on top of the base's step (the reference swaps with
three XOR passes and writes y in two lerps). The base must not keep references to its parameters' storage between
steps (none of torch's optimizers do; CUDA-graph-captured steps would).

The one-pass step (`fused`). Around torch's SGD, Adam and AdamW the wrapper can instead run a compiled kernel that
does all of it in one pass over memory — x from y and z, the base's own update of z (its formulas, reading and
writing its state: `momentum_buffer`, or `step`, `exp_avg`, `exp_avg_sq`), and the new y — so the wrapper costs its
extra state (z) and nothing else: y, g, z and the base's buffers are each read once and written once. The base's state
stays the base's (its `state_dict`, a later generic step and the base's own `step()` continue from it). Steps that need
the generic path take it: SF-Polyak, a trainer recording ‖g‖²_P for the theory, sparse or complex gradients, bases with
step hooks, amsgrad / capturable / differentiable groups, and models below 2²⁰ elements with `fused=None`.

SF-Polyak around a base ([B1] with ‖g‖²_P = ⟨g, Δ⟩, Δ the base's update at lr = 1): the base steps once with its
learning rate set to 1 (from a copy of z), the step size γ = min(cap, [f − ℓ* + ⟨g, z − y⟩]_+ / max(⟨g, Δ⟩, M)) is
computed, and z' = z − γ Δ. Exact for bases whose update is linear in their lr — SGD (with or without momentum),
Adam/AdamW, Muon — and with β1 = 0 (no base momentum) it is SFSGD / SFAdamW's SF-Polyak.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from typing import Any, Callable

import torch
from torch.optim import Optimizer
from torch.optim import optimizer as torch_optimizer

from .base import (LR_RULES, WEIGHTINGS, ScheduleFreeBase, _is_compile_failure, call_closure, check_choice, check_range,
                   compiled_kernel, decide_fused)
from .kernels import _acc

#: Bases whose step `ScheduleFree` can run as one compiled pass together with its own interpolations (`fused`).
_FUSED_BASES = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adam"}

#: The averaging settings and running scalars the wrapper keeps per parameter group of the base.
_SF_SCALARS = dict(k=0, weight_sum=0.0, lr_max=-1.0, last_lr=0.0, last_c=0.0, scheduled_lr=0.0)


def init_as_optimizer(opt: Optimizer, defaults: dict, param_groups: list) -> None:
    """What `torch.optim.Optimizer.__init__` sets, for an optimizer made of other optimizers: `param_groups` is their
    list (the same dicts, so LR schedulers and `zero_grad` act on them), nothing is re-validated."""
    opt.defaults = defaults
    for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
                 "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks",
                 "_optimizer_load_state_dict_post_hooks"):
        setattr(opt, name, OrderedDict())
    opt._patch_step_function()
    opt.state = defaultdict(dict)
    opt.param_groups = param_groups
    opt._warned_capturable_if_run_uncaptured = True


class ScheduleFree(Optimizer):
    """Schedule-free around `base` (module docstring).

    Args:
        base: the optimizer that takes the z-step; its param groups are this optimizer's (`param_groups`), and its
            group `lr` is γ_t (SF-Polyak: the cap).
        weight_decay_at_y: λ_y ≥ 0, decoupled weight decay at y (the base's own `weight_decay` decays at z).
        momentum: β ∈ (0, 1], the interpolation of [A1] (β = 1: x = y).
        weight_lr_power, r: the `lr_power` weighting w_t = (t+1)^r (max_{i≤t} γ_i)^p [A5], as the reference.
        weighting, alpha, c: sfbench's averaging weights (`lr_power`, `uniform`, `lr`, `schedulet`, `poly`, `constant`;
            see `SFSGD`); SF-Polyak's weights come from the scheduled cap, not the step taken, as in `SFSGD`.
        lr_rule: `schedule`, or `polyak` (SF-Polyak: `step(loss=…, lower_bound=…)`), `polyak_floor` its M.
        warmup_steps: the reference optimizers' linear warm-up of γ_t (0: none).
        fused: the one-pass step around SGD / Adam / AdamW (module docstring): None (default) when the model has
            ≥ 2²⁰ elements and torch.compile works here, True whenever the base is one of those, False never.

    The learning rate a weight uses is the group's `lr` times its `d` where the base keeps one (D-Adaptation,
    Prodigy), as in the reference wrapper. The optimizer starts in training mode (the reference wrapper starts in eval
    mode and refuses a step before `train()`; here x = y = z at the start, so the mode makes no difference).
    """

    theory_bound = "C1"

    def __init__(self, base: Optimizer, weight_decay_at_y: float = 0.0, momentum: float = 0.9,
                 weight_lr_power: float = 2.0, r: float = 0.0, *, weighting: str | None = None, alpha: float = 0.5,
                 lr_rule: str = "schedule", polyak_floor: float = 1e-12, warmup_steps: int = 0,
                 c: float = 0.1, fused: bool | None = None):
        if not isinstance(base, Optimizer):
            raise TypeError(f"base={type(base).__name__} is not a torch.optim.Optimizer")
        if isinstance(base, (ScheduleFreeBase, ScheduleFree)):
            raise ValueError(f"base={type(base).__name__} is already schedule-free; wrap its base optimizer instead")
        check_range("momentum", momentum, 0.0, 1.0, lo_open=True)
        check_range("weight_decay_at_y", weight_decay_at_y, 0.0, math.inf, hi_open=True)
        check_range("r", r, 0.0, math.inf, hi_open=True)
        check_range("weight_lr_power", weight_lr_power, 0.0, math.inf, hi_open=True)
        check_range("alpha", alpha, 0.0, 1.0)
        check_range("c", c, 0.0, 1.0, lo_open=True)
        check_choice("lr_rule", lr_rule, LR_RULES)
        if weighting is None:
            weighting = "lr_power"      # the reference's; SF-Polyak too, as its authors run it
        check_choice("weighting", weighting, WEIGHTINGS)
        check_range("polyak_floor", polyak_floor, 0.0, math.inf, lo_open=True, hi_open=True)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"warmup_steps={warmup_steps!r} is out of range; allowed: an integer ≥ 0 (0: no warm-up)")
        if fused is not None and not isinstance(fused, bool):
            raise ValueError(f"fused={fused!r} is not allowed; choose True, False or None (auto)")
        if fused is True and type(base) not in _FUSED_BASES:
            raise ValueError(f"fused=True: the one-pass step exists for torch.optim.SGD, Adam and AdamW bases, not "
                             f"{type(base).__name__}; use fused=None or False (the generic step around any base)")
        self.base = base
        self._fused_arg = fused
        self._fused_decision: bool | None = None
        self._compiled: dict = {}
        self.momentum = momentum
        self.weight_decay_at_y = weight_decay_at_y
        self.sf_defaults = dict(weighting=weighting, alpha=alpha, r=r, weight_lr_power=weight_lr_power,
                                warmup_steps=warmup_steps, c=c)
        self.lr_rule, self.polyak_floor = lr_rule, polyak_floor
        self.train_mode = True
        #: Set by a trainer that logs theory: then `last_grad_sq_P` = ⟨g, Δ⟩/γ after each step (Δ the z-step taken).
        self.record_grad_sq = False
        self.last_grad_sq_P: float | None = None
        init_as_optimizer(self, base.defaults, base.param_groups)
        self.sf_groups = [self._new_sf_group() for _ in base.param_groups]

    def _new_sf_group(self) -> dict:
        return dict(self.sf_defaults, **_SF_SCALARS)

    def add_param_group(self, param_group: dict) -> None:
        """Add a group to the base (its param groups are this optimizer's) with the constructor's SF settings."""
        self.base.add_param_group(param_group)
        self.sf_groups.append(self._new_sf_group())

    @property
    def needs_loss(self) -> bool:
        return self.lr_rule == "polyak"

    def __repr__(self) -> str:
        return (f"ScheduleFree(momentum={self.momentum}, {self.sf_defaults}, lr_rule={self.lr_rule!r}, "
                f"base={self.base!r})")

    # -- train / eval (as the reference wrapper) ---------------------------------------------------------------------

    def _params_with_z(self):
        return [(p, self.state[p]["z"]) for group in self.param_groups for p in group["params"] if "z" in self.state[p]]

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters to x (for evaluating and saving the model)."""
        if self.train_mode:
            for p, z in self._params_with_z():
                p.lerp_(z, 1 - 1 / self.momentum)
        self.train_mode = False

    @torch.no_grad()
    def train(self) -> None:
        """Parameters back to y, where gradients are taken."""
        if not self.train_mode:
            for p, z in self._params_with_z():
                p.lerp_(z, 1 - self.momentum)
        self.train_mode = True

    # -- the step ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _warmup(sf: dict) -> float:
        warmup = sf["warmup_steps"]
        return (sf["k"] + 1) / warmup if sf["k"] < warmup else 1.0

    def _lr(self, group: dict, sf: dict) -> float:
        """γ_t of a group: its lr (times the base's `d`, if any) and the warm-up."""
        return float(group["lr"]) * float(group.get("d", 1.0)) * self._warmup(sf)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None, lower_bound: Any = 0.0) -> Any:
        """One SF step with the base's update; SF-Polyak needs `loss=` (and `lower_bound=`, default 0) or a closure."""
        closure_loss, loss = call_closure(closure, loss)
        if not self.train_mode:
            raise RuntimeError("ScheduleFree.step() was called in eval mode (parameters at x). Call "
                               "optimizer.train() before training steps and optimizer.eval() before evaluating.")
        beta, wd = self.momentum, self.weight_decay_at_y
        work = []       # (group, sf, lr, params with grad, their z)
        for group, sf in zip(self.param_groups, self.sf_groups):
            ps = [p for p in group["params"] if p.grad is not None]
            for p in ps:
                if "z" not in self.state[p]:
                    self.state[p]["z"] = p.detach().clone(memory_format=torch.preserve_format)
            work.append((group, sf, self._lr(group, sf), ps, [self.state[p]["z"] for p in ps]))
        kind = self._fused_kind()
        if kind is not None and self._fused_step(kind, work):
            return closure_loss
        polyak = self.lr_rule == "polyak"
        if polyak and loss is None:
            raise ValueError("ScheduleFree with lr_rule='polyak' needs the minibatch loss at y: call "
                             "step(loss=loss, lower_bound=lower_bound), or pass a closure that returns the loss.")
        gu = self._dot_sum([([p.grad for p in ps], torch._foreach_sub(zs, [p.detach() for p in ps]))
                            for _, _, _, ps, zs in work if ps]) if polyak else 0.0
        for group, sf, lr, ps, zs in work:
            if not ps:
                continue
            ys = [p.detach() for p in ps]
            if wd and not polyak:       # decay at y, before y is turned into x (x doesn't change)
                torch._foreach_sub_(zs, ys, alpha=lr * wd)
                torch._foreach_sub_(ys, ys, alpha=lr * wd * (1 - beta))
            torch._foreach_lerp_(ys, zs, 1 - 1 / beta)          # parameters: y → x
        self._exchange(work)                                   # parameters hold z, the state x
        z_before = None
        if polyak or self.record_grad_sq:
            z_before = [[p.detach().clone() for p in ps] for _, _, _, ps, _ in work]
        caps = [lr for _, _, lr, _, _ in work]
        # The base steps with lr = 1 for SF-Polyak (its update at lr = 1 is Δ), with the warmed-up lr during warm-up
        step_lrs = [1.0 if polyak else float(g["lr"]) * self._warmup(sf) for g, sf in zip(self.param_groups,
                                                                                          self.sf_groups)]
        saved = [group["lr"] for group in self.param_groups]
        changed = polyak or any(sf["k"] < sf["warmup_steps"] for sf in self.sf_groups)
        try:
            if changed:
                for group, lr in zip(self.param_groups, step_lrs):
                    group["lr"] = lr
            self.base.step()
        finally:
            if changed:
                for group, lr in zip(self.param_groups, saved):
                    group["lr"] = lr
        self._exchange(work)                                   # parameters hold x, the state z'
        self.last_grad_sq_P = None
        if z_before is not None:     # Δ = z − z_after, and ⟨g, Δ⟩ per group
            deltas = [torch._foreach_sub(before, zs) for before, (_, _, _, _, zs) in zip(z_before, work)]
            gpgs = [self._dot_sum([([p.grad for p in ps], d)]) for (_, _, _, ps, _), d in zip(work, deltas)]
            if polyak:
                step = self._polyak(loss, lower_bound, sum(gpgs), gu)
                caps = [step if math.isnan(step) else min(cap, step) for cap in caps]
                for (_, _, _, ps, zs), before, lr in zip(work, z_before, caps):
                    if ps:          # z' = z − γ Δ, then the decay at y = x + (1 − β)(z − x)
                        torch._foreach_lerp_(zs, before, 1 - lr)
                        if wd:
                            y_old = torch._foreach_lerp([p.detach() for p in ps], before, 1 - beta)
                            torch._foreach_sub_(zs, y_old, alpha=lr * wd)
                self.last_grad_sq_P = sum(gpgs)
            else:                   # ‖g‖²_P of the step taken: ⟨g, Δ⟩ / γ
                self.last_grad_sq_P = sum(g / lr for g, lr in zip(gpgs, caps) if lr > 0)
        cs = self._coefficients(work)
        for (_, _, _, ps, zs), c in zip(work, cs):
            if ps:      # y' = x + (1 − β (1 − c)) (z' − x): the new average and y in one pass
                torch._foreach_lerp_([p.detach() for p in ps], zs, 1 - beta * (1 - c))
        self._finish(work, caps, cs)
        return closure_loss

    def _coefficients(self, work: list) -> list[float]:
        """c_{t+1} of each group [A5], from the scheduled γ_t (SF-Polyak: the cap); updates the running sums."""
        cs = []
        for group, sf, scheduled, _, _ in work:
            if "lr_lookahead" in group:     # γ_{t+1} for `schedulet`, written by sfbench's schedules
                sf["lr_lookahead"] = group["lr_lookahead"]
            cs.append(ScheduleFreeBase._averaging_coefficient(sf, scheduled))
        return cs

    def _finish(self, work: list, steps: list[float], cs: list[float]) -> None:
        """After a step: the step counters and what a trainer logs (the step taken, the averaging coefficient)."""
        for (group, sf, _, _, _), lr, c in zip(work, steps, cs):
            sf["scheduled_lr"] = self._lr(group, sf)
            sf["k"] += 1
            sf["last_lr"], sf["last_c"] = lr, c
            group["last_lr"] = lr       # what a trainer logs as the step taken
            group["last_c"] = c         # and the averaging coefficient its online bound reads

    # -- the one-pass step around SGD / Adam / AdamW (module docstring) ------------------------------------------------

    def _fused_kind(self) -> str | None:
        """"sgd" or "adam" when this step can run as one compiled pass, else None (the generic path)."""
        kind = _FUSED_BASES.get(type(self.base))
        if kind is None or self._fused_arg is False or self.lr_rule != "schedule" or self.record_grad_sq:
            return None
        if (self.base._optimizer_step_pre_hooks or self.base._optimizer_step_post_hooks
                or torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks):
            return None     # the base's hooks run around its own step(), which this path doesn't call
        for group in self.param_groups:
            if group.get("differentiable") or group.get("capturable") or group.get("amsgrad"):
                return None
        if self._fused_decision is None:
            self._fused_decision = decide_fused(self._fused_arg, [p for g in self.param_groups for p in g["params"]])
        return kind if self._fused_decision else None

    def _fused_step(self, kind: str, work: list) -> bool:
        """One step through `kernels.wrapped_sgd` / `wrapped_adam`; False (nothing written) where a tensor or the
        base's state needs the generic path."""
        plans = []
        for index, (group, sf, lr, ps, zs) in enumerate(work):
            by_device: dict = defaultdict(list)
            for p, z in zip(ps, zs):
                if p.grad.is_sparse or p.is_complex():
                    return False
                by_device[p.device].append((p, z))
            for device, pairs in by_device.items():
                # (torch's SGD without momentum keeps no state: don't create empty entries)
                states = [self.base.state[p] for p, _ in pairs] if kind == "adam" or group["momentum"] != 0 else []
                if kind == "sgd" and group["momentum"] != 0:
                    fresh = {"momentum_buffer" not in s or s["momentum_buffer"] is None for s in states}
                    if len(fresh) > 1:      # some buffers new, some not: torch clones g for the new ones
                        return False
                key = (index, str(device), tuple(id(p) for p, _ in pairs))
                plans.append((index, device, pairs, states, key))
        cs = self._coefficients(work)
        beta, wd_y = self.momentum, self.weight_decay_at_y
        try:
            for index, device, pairs, states, key in plans:
                group, sf, lr, _, _ = work[index]
                c = cs[index]
                ys = [p.detach() for p, _ in pairs]
                gs = [p.grad for p, _ in pairs]
                zs = [z for _, z in pairs]
                sign = -1.0 if group.get("maximize", False) else 1.0
                common = (lr * wd_y * (1 - beta), lr * wd_y, 1 - 1 / beta, 1 - beta * (1 - c), sign)
                if kind == "sgd":
                    self._run_sgd(group, key, ys, gs, zs, states, lr, common)
                else:
                    self._run_adam(group, key, ys, gs, zs, states, lr, common)
        except Exception as err:
            if not _is_compile_failure(err):
                raise
            raise RuntimeError(f"ScheduleFree: torch.compile of the one-pass step failed ({type(err).__name__}: "
                               f"{str(err).splitlines()[0] if str(err) else ''}); construct it with fused=False") \
                from err
        if hasattr(self.base, "_opt_called"):
            self.base._opt_called = True    # what a scheduler attached to the base checks
        self._finish(work, [lr for _, _, lr, _, _ in work], cs)
        return True

    def _run_sgd(self, group: dict, key: tuple, ys, gs, zs, states: list, lr: float, common: tuple) -> None:
        momentum = float(group["momentum"])
        bufs = None
        mb, gc = momentum, 1.0 - float(group["dampening"])
        if momentum != 0:
            if states[0].get("momentum_buffer") is None:     # torch's first step: buf = g (clone), here 0·0 + 1·g
                for state, y in zip(states, ys):
                    state["momentum_buffer"] = torch.zeros_like(y, memory_format=torch.preserve_format)
                mb, gc = 0.0, 1.0
            bufs = [state["momentum_buffer"] for state in states]
        scalars = (*common, float(group["weight_decay"]), mb, gc, momentum, lr)
        tensors = tuple(torch.tensor(s, dtype=torch.float64) for s in scalars)
        compiled_kernel(self._compiled, "wrapped_sgd", key)(ys, gs, zs, bufs, bool(group["nesterov"]), *tensors)

    def _run_adam(self, group: dict, key: tuple, ys, gs, zs, states: list, lr: float, common: tuple) -> None:
        for state, y in zip(states, ys):
            if not state:       # torch's Adam state (its _init_group): the step count on the device only when fused
                on_device = bool(group.get("fused"))
                state["step"] = torch.tensor(0.0, dtype=torch.float32, device=y.device if on_device else "cpu")
                state["exp_avg"] = torch.zeros_like(y, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(y, memory_format=torch.preserve_format)
        steps = [state["step"] for state in states]
        torch._foreach_add_(steps, 1.0)
        beta1, beta2 = (float(b) for b in group["betas"])
        # each parameter's own step count in its bias corrections (float64, as torch), computed where the counts live
        # — no host sync when they are on the device
        counts = torch.stack(steps).double()
        step_sizes = lr / (1 - beta1 ** counts)
        bc2_sqrts = (1 - beta2 ** counts).sqrt()
        wd = float(group["weight_decay"])
        decoupled = bool(group.get("decoupled_weight_decay", False))
        scalars = (*common, 0.0 if decoupled else wd, 1 - lr * wd if decoupled else 1.0, beta1, beta2,
                   float(group["eps"]))
        tensors = tuple(torch.tensor(s, dtype=torch.float64) for s in scalars)
        compiled_kernel(self._compiled, "wrapped_adam", key)(ys, gs, zs, [s["exp_avg"] for s in states],
                                                             [s["exp_avg_sq"] for s in states], step_sizes, bc2_sqrts,
                                                             *tensors)

    def _exchange(self, work: list) -> None:
        """Exchange the storage of each parameter with its state's z (no copy): the base then steps z in place."""
        for _, _, _, ps, zs in work:
            for i, p in enumerate(ps):
                z = zs[i]
                data = p.data
                p.data = z
                zs[i] = data
                self.state[p]["z"] = data

    @staticmethod
    def _dot_sum(pairs: list) -> float:
        """Σ ⟨a, b⟩ over pairs of tensor lists (per-tensor dots summed in float64, one host sync)."""
        parts = [torch.dot(_acc(a).reshape(-1), _acc(b).reshape(-1)).to(torch.float64)
                 for xs, ys in pairs for a, b in zip(xs, ys)]
        return float(torch.stack([t.cpu() for t in parts]).sum()) if parts else 0.0

    def _polyak(self, loss: Any, lower_bound: Any, gpg: float, gu: float) -> float:
        numerator = float(loss) - float(lower_bound) + gu
        if math.isnan(numerator) or math.isnan(gpg):
            return math.nan
        return max(numerator, 0.0) / max(gpg, self.polyak_floor)

    # -- what the theory needs ([C1]) ------------------------------------------------------------------------------

    @torch.no_grad()
    def distance_sq_at_x(self, origin: list[torch.Tensor]) -> float:
        """‖x − origin‖² (float64), x the averaged point, `origin` one tensor per parameter in group order."""
        params = [p for group in self.param_groups for p in group["params"]]
        if len(origin) != len(params):
            raise ValueError(f"origin has {len(origin)} tensors; the optimizer has {len(params)} parameters")
        xs = []
        for p in params:
            z = self.state[p].get("z")
            xs.append(torch.lerp(p.detach(), z, 1 - 1 / self.momentum) if self.train_mode and z is not None
                      else p.detach())
        norms = torch._foreach_norm(torch._foreach_sub(xs, list(origin))) if xs else []
        return float(torch.stack([n.cpu() for n in norms]).double().square().sum()) if xs else 0.0

    @torch.no_grad()
    def distance_sq_at_z(self, origin: list[torch.Tensor]) -> float:
        """‖z − origin‖² (float64), z the base sequence [A3] (before a parameter's first step, z = z_0 = the
        parameters). The online bound's R_t = D + ‖z_t − z_0‖ (docs/theory.md §4)."""
        params = [p for group in self.param_groups for p in group["params"]]
        if len(origin) != len(params):
            raise ValueError(f"origin has {len(origin)} tensors; the optimizer has {len(params)} parameters")
        zs = [self.state[p].get("z", p.detach()) for p in params]
        norms = torch._foreach_norm(torch._foreach_sub(zs, list(origin))) if zs else []
        return float(torch.stack([n.double().cpu() for n in norms]).square().sum()) if zs else 0.0

    def theory_caveats(self) -> list[str]:
        """Why docs/theory.md's online-to-batch bound (Theorem 2) is not a theorem for this optimizer (empty: it is,
        for a convex task with exact D and a bound on the next gradient). Theorem 2 needs z_{t+1} = z_t − γ_t g_t:
        the base must be plain SGD (no momentum, no weight decay, not maximising) with one learning rate."""
        base = self.base
        out = []
        if type(base) is not torch.optim.SGD:
            out.append(f"base {type(base).__name__}: the z-step is not γ·(sub)gradient, so no theorem covers it")
        else:
            if any(g.get("momentum", 0) for g in base.param_groups):
                out.append("base SGD with momentum: the z-step is not γ·(sub)gradient")
            if any(g.get("weight_decay", 0) for g in base.param_groups):
                out.append("weight decay > 0 in the base: the z-step is not γ·(sub)gradient of the f evaluated")
            if any(g.get("maximize", False) for g in base.param_groups):
                out.append("base SGD with maximize=True: the z-step ascends")
        if self.weight_decay_at_y:
            out.append("weight decay > 0: the steps minimise f + λ‖w‖²/2, not the f that is evaluated")
        if len({float(g["lr"]) for g in self.param_groups}) > 1 or \
                len({tuple(sorted(sf.items())) for sf in self._sf_settings()}) > 1:
            out.append("parameter groups with different learning rates or averaging settings")
        return out

    def _sf_settings(self) -> list[dict]:
        keys = ("weighting", "alpha", "r", "weight_lr_power", "warmup_steps", "c")
        return [{k: sf.get(k) for k in keys} for sf in self.sf_groups]

    # -- state dicts ---------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict, plus z (by parameter index, as torch numbers them) and the averaging state."""
        params = [p for group in self.param_groups for p in group["params"]]
        z = {i: self.state[p]["z"] for i, p in enumerate(params) if "z" in self.state[p]}
        return {"base": self.base.state_dict(),
                "schedule_free": {"z": z, "groups": [dict(sf) for sf in self.sf_groups], "train_mode": self.train_mode,
                                  "momentum": self.momentum, "weight_decay_at_y": self.weight_decay_at_y,
                                  "lr_rule": self.lr_rule, "polyak_floor": self.polyak_floor}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load `state_dict()` of this class, or of `schedulefree.ScheduleFreeWrapper` (the base's state dict with z
        in its state and `k`, `lr_max`, `weight_sum` in its groups; saved in eval mode, as its README asks, since
        it doesn't record the mode). Anything else is refused with the reason."""
        if "base" in state_dict and "schedule_free" in state_dict:
            ours = state_dict["schedule_free"]
            base_sd = state_dict["base"]
        else:
            base_sd, ours = self._from_reference(state_dict)
        if len(ours["groups"]) != len(self.param_groups):
            raise ValueError(f"ScheduleFree.load_state_dict: the state dict has {len(ours['groups'])} parameter "
                             f"groups, this optimizer {len(self.param_groups)}")
        self.base.load_state_dict(base_sd)
        params = [p for group in self.param_groups for p in group["params"]]
        self.state = defaultdict(dict)
        for i, z in ours["z"].items():
            p = params[int(i)]
            self.state[p]["z"] = z.to(device=p.device, dtype=p.dtype).clone()
        self.sf_groups = [dict(self._new_sf_group(), **g) for g in ours["groups"]]
        self.train_mode = bool(ours.get("train_mode", False))
        for key in ("momentum", "weight_decay_at_y", "lr_rule", "polyak_floor"):
            if key in ours:
                setattr(self, key, ours[key])

    def _from_reference(self, state_dict: dict) -> tuple[dict, dict]:
        groups, state = state_dict.get("param_groups"), state_dict.get("state")
        if not isinstance(groups, list) or not isinstance(state, dict):
            raise ValueError("ScheduleFree.load_state_dict: not a state dict of ScheduleFree or of schedulefree's "
                             "ScheduleFreeWrapper (it needs 'base' and 'schedule_free', or 'state' and "
                             "'param_groups')")
        if not state or not all("z" in s for s in state.values()):
            raise ValueError("ScheduleFree.load_state_dict: this state dict has no z for some parameters: it is the "
                             "base optimizer's own (load it with optimizer.base.load_state_dict), not a schedule-free "
                             "one")
        keys = ("k", "lr_max", "weight_sum")
        sf_groups = [{k: g[k] for k in keys if k in g} for g in groups]
        base_groups = [{k: v for k, v in g.items() if k not in keys} for g in groups]
        z = {i: s["z"] for i, s in state.items()}
        base_state = {i: {k: v for k, v in s.items() if k != "z"} for i, s in state.items()}
        ours = {"z": z, "groups": sf_groups, "train_mode": False}
        return {**state_dict, "state": base_state, "param_groups": base_groups}, ours

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none)

    def __getstate__(self) -> dict[str, Any]:
        """Copies (deepcopy, pickle) keep the base and the averaging state, not only torch's three entries."""
        return {k: v for k, v in self.__dict__.items()
                if not k.startswith("_optimizer_") and k != "_compiled"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_fused_arg", None)
        self._fused_decision = None     # decided again for the copy's devices
        self._compiled = {}
