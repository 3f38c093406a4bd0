"""Schedule-Free SGD and AdamW with SF-Polyak ([A1]–[A5], [B1] of docs/theory.md), which differ only in P_t, and what
they share: hyperparameters, train/eval, and the step that runs `sfbench.optim.kernels`' rules (eager or compiled).
Running scalars live in the param groups (`k`, `weight_sum`, `lr_max`, `train_mode`, `last_lr`, `last_c`,
`scheduled_lr`), so state dicts round-trip them; per parameter the state holds `z` (`u` or `x`, kernels says when)
and, for the Adam base, `exp_avg_sq`.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import torch

from . import compat, kernels
from .kernels import averaging_coefficient, polyak_step, warmed_up
from .torch_internals import LeanOptimizer

#: [A5]; `schedulet` and `constant` are docs/theory.md's theorem-indexed weighting and the IAM baselines' EMA.
WEIGHTINGS = ("lr_power", "uniform", "lr", "poly", "schedulet", "constant")
LR_RULES = ("schedule", "polyak")
RUNNING_SCALARS = dict(k=0, weight_sum=0.0, lr_max=-1.0, last_lr=0.0, last_c=0.0, scheduled_lr=0.0)


def check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
    """ValueError naming the argument, its value and the interval, unless it lies in it (a 1-element tensor counts)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
    if bad or (value <= lo if lo_open else value < lo) or (value >= hi if hi_open else value > hi):
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name}={value!r} is out of range; allowed: a number in {interval}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(repr(c) for c in choices)}")


def check_sf(settings: dict) -> None:
    """The averaging settings SFSGD, SFAdamW and ScheduleFree share."""
    for name in ("r", "weight_lr_power"):
        check_range(name, settings[name], 0.0, math.inf, hi_open=True)
    check_choice("weighting", settings["weighting"], WEIGHTINGS)
    check_range("alpha", settings["alpha"], 0.0, 1.0)
    check_range("c", settings["c"], 0.0, 1.0, lo_open=True)
    warmup = settings.get("warmup_steps", 0)
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup_steps={warmup!r} is out of range; allowed: an integer ≥ 0 (0: no warm-up)")


def require_loss(owner: str, loss: Any) -> None:
    if loss is None:
        raise ValueError(f"{owner} with lr_rule='polyak' needs the minibatch loss at y: call step(loss=loss, "
                         "lower_bound=lower_bound) (lower_bound defaults to 0), or pass a closure that returns it.")


class ScheduleFreeMixin:
    """What SFSGD, SFAdamW and ScheduleFree share, around their `_swap(to_train)`, `_training()` and `_points(which)`
    (x or z of every parameter, in `param_groups` order, nothing written)."""

    #: The bound a trainer logs next to runs of this optimizer: [C1], SF with any schedule (docs/theory.md).
    theory_bound = "C1"

    @torch.no_grad()
    def eval(self) -> None:
        """Put the parameters at the averaged point x (for evaluation and saving the model); [A1] solved for x."""
        self._swap(to_train=False)

    @torch.no_grad()
    def train(self) -> None:
        """Put the parameters back at y = (1 − β) z + β x, where gradients are taken during training [A1]."""
        self._swap(to_train=True)

    def _begin(self, closure: Callable[[], Any] | None, loss: Any) -> tuple[Any, Any]:
        """`step`'s start: (the closure's value, run with gradients on, or None; the loss); refuses eval mode."""
        closure_loss = None
        if closure is not None:
            with torch.enable_grad():
                closure_loss = closure()
        if not self._training():
            raise RuntimeError(f"{type(self).__name__}.step() was called in eval mode (parameters at x). Call "
                               "optimizer.train() before training steps and optimizer.eval() before evaluating or "
                               "saving.")
        return closure_loss, closure_loss if loss is None else loss

    def distance_sq_at_x(self, origin: list[torch.Tensor]) -> float:
        """‖x − origin‖² (float64), `origin` one tensor per parameter: the distance x travelled, [C1]'s D estimate."""
        return self._distance_sq("x", origin)

    def distance_sq_at_z(self, origin: list[torch.Tensor]) -> float:
        """‖z − origin‖² (float64): the online bound's R_t = D + ‖z_t − z_0‖ (docs/theory.md)."""
        return self._distance_sq("z", origin)

    @torch.no_grad()
    def _distance_sq(self, which: str, origin: list[torch.Tensor]) -> float:
        points = self._points(which)
        if len(origin) != len(points):
            raise ValueError(f"origin has {len(origin)} tensors; the optimizer has {len(points)} parameters")
        if not points:
            return 0.0
        norms = torch._foreach_norm(torch._foreach_sub([p.to(o.device) for p, o in zip(points, origin)], list(origin)))
        return float(torch.stack([n.double().cpu() for n in norms]).square().sum())


class ScheduleFreeBase(ScheduleFreeMixin, LeanOptimizer):
    """Base class of SFSGD and SFAdamW: subclasses set `_adam` (P_t is Adam's D_t⁻¹) and `_beta` (β of a group)."""

    _adam: bool = False
    _beta_name = "momentum"

    def __init__(self, params, defaults: dict, *, foreach: bool | None, fused: bool | None):
        for name, value in (("fused", fused), ("foreach", foreach)):
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name}={value!r} is not allowed; choose True, False or None (auto)")
        self._fused_arg, self._foreach_arg, self._compiled, self._fused_decision = fused, foreach, {}, None
        #: Set (a trainer logging theory does) to have `step` record ‖g_t‖²_{P_t} in `last_grad_sq_P`: Adam base, and
        #: SF-Polyak, which computes it anyway; None for the SGD base, where it is the plain ‖g‖².
        self.record_grad_sq, self.last_grad_sq_P = False, None
        super().__init__(params, dict(defaults, train_mode=True, **RUNNING_SCALARS))

    def _beta(self, group: dict) -> float:
        return group["momentum"]

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if group.get("weighting") is None:  # the reference's; SF-Polyak's too, as its authors run it
                group["weighting"] = "lr_power"
            for name in ("lr", "weight_decay"):
                check_range(name, group[name], 0.0, math.inf, hi_open=True)
            check_sf(group)
            self._validate_group(group)
            check_choice("lr_rule", group["lr_rule"], LR_RULES)
            check_range("polyak_floor", group["polyak_floor"], 0.0, math.inf, lo_open=True, hi_open=True)
            for key in ("lr_rule", "polyak_floor"):   # SF-Polyak's step is one scalar for the whole loss
                values = {g[key] for g in self.param_groups}
                if len(values) > 1:
                    raise ValueError(f"{key} must be the same in every parameter group (SF-Polyak's step is one "
                                     f"scalar for the whole loss); got {sorted(values)}")
        except ValueError:
            self.param_groups.pop()     # a rejected group must not stay behind and be trained
            raise

    def _validate_group(self, group: dict) -> None:
        check_range("momentum", group["momentum"], 0.0, 1.0)

    @property
    def needs_loss(self) -> bool:
        """Whether `step` needs the minibatch loss (SF-Polyak); trainers pass `loss=` and `lower_bound=` then."""
        return bool(self.param_groups) and self.param_groups[0]["lr_rule"] == "polyak"

    def _store(self, group: dict) -> str:
        """The state a group's parameters keep (kernels): x for β = 0, u = z − y for SF-Polyak, else z."""
        return "x" if self._beta(group) == 0 else "u" if group["lr_rule"] == "polyak" else "z"

    def _check(self, state: dict, beta: float) -> None:
        if ("x" in state) != (beta == 0) and state.keys() & {"x", "z", "u"}:
            raise ValueError(f"{self._beta_name}={beta!r}: β was changed across 0 after training started. β = 0 (y = "
                             "z, x kept in the state) and β > 0 (z kept) store different things, so a run can't switch "
                             "between them; build a new optimizer from the model at x (optimizer.eval()) to change it.")

    def _training(self) -> bool:
        return all(group["train_mode"] for group in self.param_groups)

    def _swap(self, to_train: bool) -> None:
        for group in (g for g in self.param_groups if g["train_mode"] != to_train):
            beta = self._beta(group)
            for p in group["params"]:
                state = self.state[p]
                self._check(state, beta)
                if "z" in state:        # x = y + (1 − 1/β)(z − y) and back, as the reference package does
                    p.lerp_(state["z"].to(p.device), 1 - beta if to_train else 1 - 1 / beta)
                elif "u" in state:      # x = y − ((1 − β)/β) u and back
                    p.add_(state["u"].to(p.device), alpha=(1 - beta) / beta * (1 if to_train else -1))
                elif "x" in state:      # β = 0: exchange y (= z) and x
                    y = p.detach().clone()
                    p.copy_(state["x"])
                    state["x"].copy_(y)
            group["train_mode"] = to_train

    def _gather(self, group: dict) -> dict:
        """The group's parameters with gradients by device: lists y, g, s (the stored z, u or x), v (Adam base),
        state made on first use; and whether a gradient is sparse. (Runs every step: kept lean.)"""
        store, adam, states, out = self._store(group), self._adam, self.state, {}
        for index, p in enumerate(group["params"]):
            grad = p.grad
            if grad is None:
                continue
            state = states[p]
            if store not in state:     # new, kept for the other rule (z = y + u), or β changed across 0
                self._check(state, self._beta(group))
                if "u" in state or "z" in state:
                    state[store] = state.pop("u").add_(p) if store == "z" else state.pop("z").sub_(p)
                else:                   # z_0 = x_0 = y_0, u_0 = 0
                    state[store] = (torch.zeros_like if store == "u" else torch.clone)(
                        p.detach(), memory_format=torch.preserve_format)
                if adam and "exp_avg_sq" not in state:
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            lists = out.get(p.device)
            if lists is None:
                lists = out[p.device] = dict(index=[], y=[], g=[], s=[], v=[] if adam else None, sparse=False)
            if grad.is_sparse:
                if adam or group["lr_rule"] == "polyak":
                    what = "the Adam base" if adam else "SF-Polyak (lr_rule='polyak')"
                    raise RuntimeError(f"{type(self).__name__}: {what} does not support sparse gradients (as in the "
                                       "reference package); SFSGD with lr_rule='schedule' accepts them")
                lists["sparse"] = True
            for key, value in (("index", index), ("y", p), ("g", grad), ("s", state[store])):
                lists[key].append(value)
            if adam:
                lists["v"].append(state["exp_avg_sq"])
        return out

    def _decide_fused(self) -> bool:
        """`fused` if given; auto: when every parameter is on a CPU or CUDA device and the model has at least
        FUSED_AUTO_MIN_NUMEL elements (where torch.compile can't build kernels, the first step warns, then runs eager)."""
        if self._fused_decision is None:
            params = [p for g in self.param_groups for p in g["params"]]
            auto = all(p.device.type in ("cpu", "cuda") for p in params) and sum(map(torch.numel, params)) >= \
                kernels.FUSED_AUTO_MIN_NUMEL
            self._fused_decision = auto if self._fused_arg is None else self._fused_arg
        return self._fused_decision

    def _run(self, rule: Callable, key: tuple, lists: dict, tensors: list, scalars: tuple, **flags):
        """`rule` over one device's lists, compiled or eager: its sums stacked (float64), or None."""
        if self._decide_fused() and not lists["sparse"]:
            try:
                return kernels.compiled(self._compiled, rule, key, flags)(tensors, scalars)
            except Exception as err:  # dynamo / inductor failing to compile: before anything is written
                if not type(err).__module__.startswith(("torch._dynamo", "torch._inductor")):
                    raise
                warnings.warn(f"sfbench: torch.compile of the {rule.__name__}_{key[0]} kernel failed "
                              f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); using the "
                              "eager path from now on.", RuntimeWarning, stacklevel=4)
                self._fused_decision = False
        if self._foreach_arg is False or lists["sparse"]:
            return kernels.each(rule, tensors, scalars, flags)
        out = rule(*(None if t is None else kernels.TensorList(t) for t in tensors), *scalars, **flags)
        return torch.stack(out) if out else None

    def _adam_scalars(self, group: dict) -> tuple[float, float, float]:     # β2, 1 − β2^{t+1}, ε
        if not self._adam:
            return 0.0, 1.0, 0.0
        return group["betas"][1], 1.0 - group["betas"][1] ** (group["k"] + 1), group["eps"]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None, lower_bound: Any = 0.0) -> Any:
        """One step of [A1]–[A5] with the group's `lr` (any `torch.optim.lr_scheduler` sets it) or, with
        `lr_rule="polyak"`, SF-Polyak's step [B1] capped by it: pass the minibatch loss at y (`loss=`, or a closure that
        returns it) and a lower bound ℓ* (`lower_bound=`, default 0). The step taken is in `group["last_lr"]`."""
        closure_loss, loss = self._begin(closure, loss)
        work = [(group, (self._store(group), str(device), i, tuple(lists["index"])), lists)
                for i, group in enumerate(self.param_groups) for device, lists in self._gather(group).items()]
        self.last_grad_sq_P, step = None, None
        if self.needs_loss:      # [B1]: the sums over all groups first, then one step size for all
            sums = [0.0, 0.0]
            for group, key, lists in work:
                u = None if key[0] == "x" else lists["s"]
                out = self._run(kernels.polyak_sums, key, lists, [lists["g"], u, lists["v"]], self._adam_scalars(group))
                for i, value in enumerate(out.tolist()):
                    sums[i] += value
            self.last_grad_sq_P = sums[0]
            require_loss(type(self).__name__, loss)
            step = polyak_step(loss, lower_bound, *sums, self.param_groups[0]["polyak_floor"])
        # Adam base: ‖g‖²_P comes out of the update itself. SGD base (P = I): None, it is the plain gradient norm.
        gpg = self.record_grad_sq and self._adam and step is None
        parts = []
        for group in self.param_groups:
            scheduled = warmed_up(group, float(group["lr"]))
            lr = scheduled if step is None or scheduled <= step else step     # a NaN step is taken, not capped
            c = averaging_coefficient(group, scheduled)                           # weights from the scheduled cap
            beta, store = self._beta(group), self._store(group)
            a1, a2 = {"z": (lr * (beta * (1 - c) - 1), -lr), "u": (-lr * (1 - beta * (1 - c)), -lr * beta * (1 - c)),
                      "x": (-lr, 0.0)}[store]
            scalars = (c, a1, a2, group["weight_decay"], *self._adam_scalars(group))
            for _, key, lists in (w for w in work if w[0] is group):
                parts.append(self._run(kernels.sf_update, key, lists, [lists["y"], lists["g"], lists["s"],
                                                                        lists["v"]], scalars, store=store, gpg=gpg))
            group.update(k=group["k"] + 1, scheduled_lr=scheduled, last_lr=lr, last_c=c)
        if gpg:
            self.last_grad_sq_P = float(sum(float(t[0]) for t in parts))
        return closure_loss

    def __getstate__(self) -> dict[str, Any]:
        """What `copy.deepcopy` and pickle keep: torch's entries and this class's settings, not compiled kernels."""
        return {k: v for k, v in self.__dict__.items() if k != "_compiled" and not k.startswith("_optimizer_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._compiled, self._fused_decision = {}, None     # decided again for the copy's devices
        for name, default in (("_fused_arg", None), ("_foreach_arg", None), ("record_grad_sq", False),
                              ("last_grad_sq_P", None)):     # a pickle from before these settings were kept
            self.__dict__.setdefault(name, default)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class (older ones included), or of `schedulefree.SGDScheduleFree` /
        `AdamWScheduleFree` (converted exactly, `sfbench.optim.compat`); anything else is refused with the reason."""
        super().load_state_dict(compat.convert_state_dict(self, state_dict))

    def _points(self, which: str) -> list[torch.Tensor]:
        """x or z of every parameter in group order, from the training state (nothing written)."""
        out = []
        for group in self.param_groups:
            beta, train = self._beta(group), group["train_mode"]
            for p in group["params"]:
                state, y = self.state[p], p.detach()    # the parameters: y in train mode, x in eval mode
                if "z" in state:     # x = y + (1 − 1/β)(z − y)
                    out.append(state["z"] if which == "z" else torch.lerp(y, state["z"], 1 - 1 / beta) if train else y)
                elif "u" in state:   # train: z = y + u, x = y − ((1 − β)/β) u; eval: z = x + u/β
                    u = state["u"]
                    out.append((y + u if train else y + u / beta) if which == "z" else
                               y - (1 - beta) / beta * u if train else y)
                elif "x" in state:   # β = 0: y = z in train mode, and the swap exchanges y and x
                    out.append(state["x"] if (which == "x") == train else y)
                else:                # no step yet: x = y = z = the parameters
                    out.append(y)
        return out

    def theory_caveats(self) -> list[str]:
        """Why docs/theory.md's online-to-batch bound (Theorem 2) is not a theorem for this optimizer as configured
        (empty: it is, for a convex task with exact D and a bound on the next gradient). Read by the trainer."""
        out = ["Adam base: the bound is stated in Euclidean D with ‖g‖²_P, and P_t = D_t⁻¹ changes every step (not "
               "monotone), so no theorem covers it"] if self._adam else []
        if any(g["weight_decay"] for g in self.param_groups):
            out.append("weight decay > 0: the steps minimise f + λ‖w‖²/2, not the f that is evaluated")
        if len({(g["lr"], g["weighting"], g["c"], g["alpha"], self._beta(g)) for g in self.param_groups}) > 1:
            out.append("parameter groups with different lr, weighting or β: not one SGD step on one objective")
        return out


class SFSGD(ScheduleFreeBase):
    r"""Schedule-Free SGD (Defazio et al. 2024, "The Road Less Scheduled"), in the notation of docs/theory.md:

        y_t     = (1 − β) z_t + β x_t                       [A1], in the parameters while training (x after `eval()`)
        z_{t+1} = z_t − γ_t (∇f(y_t) + λ y_t)               [A2], [A3] with P_t = I, decoupled weight decay at y
        x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}       [A4], c_{t+1} from `weighting` [A5]

    A drop-in for `schedulefree.SGDScheduleFree` (same arguments in the same order, same steps with the default
    weighting, same state `z`; its state dicts load; a tensor lr and sparse gradients work). Differences: β may be 0 or
    1, and the optimizer starts in training mode (x = y = z at the start, so a `step()` before `train()` is allowed).

    Args:
        lr: γ; the group's current `lr` is used at each step, so any `torch.optim.lr_scheduler` drives it. With
            `lr_rule="polyak"` it is the cap γ_max of [B1].
        momentum: β ∈ [0, 1]. β = 1: heavy-ball momentum (SFN Thms 1–2); β = 0: SGD iterates, x their average.
        weight_decay: λ ≥ 0, at y. warmup_steps: W, the reference's warm-up lr · min(1, (t + 1)/W) (use it *or* a
            schedule with warm-up: they multiply).
        weighting: `lr_power` (the reference's: w_t = (t+1)^r (max_{i≤t} γ_i)^p, `r`, `weight_lr_power` = p),
            `uniform`, `lr` (z_{t+1} weighted by γ_t), `schedulet` (z_{t+1} weighted by γ_{t+1} and z_0 kept: the
            weighting [C1]'s theorem is stated for; γ_{t+1} from `Schedule.lr_scheduler`), `poly` (c_{t+1} =
            (t+1)^(−alpha)), `constant` (c_{t+1} = `c`: the IAM baselines). SF-Polyak's weights use the cap.
        lr_rule: `schedule`, or `polyak` (SF-Polyak [B1]: pass `loss=` to `step`), `polyak_floor` its M.
        foreach: multi-tensor ops on the eager path (default); False runs the same ops tensor by tensor.
        fused: the same update compiled (one pass over memory per tensor). None: on a CPU or CUDA device for models
            of ≥ 2^20 elements (a cold compile takes tens of seconds; where it fails, a warning, then eager).
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, foreach: bool | None = None,
                 *, weighting: str | None = None, alpha: float = 0.5, lr_rule: str = "schedule",
                 polyak_floor: float = 1e-12, fused: bool | None = None, c: float = 0.1):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, r=r, weight_lr_power=weight_lr_power,
                        weighting=weighting, alpha=alpha, lr_rule=lr_rule, polyak_floor=polyak_floor, c=c,
                        warmup_steps=warmup_steps)
        super().__init__(params, defaults, foreach=foreach, fused=fused)


class SFAdamW(ScheduleFreeBase):
    r"""Schedule-Free AdamW (Defazio et al. 2024), in the notation of docs/theory.md:

        y_t     = (1 − β1) z_t + β1 x_t                          [A1]
        v_t     = β2 v_{t−1} + (1 − β2) g_t²,  D_t = sqrt(v_t / (1 − β2^{t+1})) + ε
        z_{t+1} = z_t − γ_t (g_t / D_t + λ y_t)                   [A3], decoupled weight decay at y
        x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}            [A4], [A5]

    A drop-in for `schedulefree.AdamWScheduleFree` (same arguments in the same order, same steps with the default
    weighting, same state `z`, `exp_avg_sq`; its state dicts load). `betas[0]` is β of [A1]; the other arguments
    are `SFSGD`'s. With `lr_rule="polyak"`, ‖g‖²_P = Σ g² / D_t in [B1].
    """

    _adam = True
    _beta_name = "betas[0]"

    def __init__(self, params, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                 foreach: bool | None = None, *, weighting: str | None = None, alpha: float = 0.5,
                 lr_rule: str = "schedule", polyak_floor: float = 1e-12, fused: bool | None = None,
                 c: float = 0.1):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, r=r,
                        weight_lr_power=weight_lr_power, weighting=weighting, alpha=alpha, lr_rule=lr_rule,
                        polyak_floor=polyak_floor, c=c, warmup_steps=warmup_steps)
        super().__init__(params, defaults, foreach=foreach, fused=fused)

    def _beta(self, group: dict) -> float:
        return group["betas"][0]

    def _validate_group(self, group: dict) -> None:
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas={betas!r} is not allowed; give two numbers (beta1 in [0, 1], beta2 in [0, 1))")
        check_range("betas[0]", betas[0], 0.0, 1.0)
        check_range("betas[1]", betas[1], 0.0, 1.0, hi_open=True)
        check_range("eps", group["eps"], 0.0, float("inf"), hi_open=True)
