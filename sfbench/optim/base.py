"""What the schedule-free optimizers share: averaging weights [A5], train/eval swaps, SF-Polyak [B1], backends.

`SFSGD` and `SFAdamW` differ only in the preconditioner P_t of [A3] (identity, or Adam's D_t⁻¹), so everything else
lives here. The math of one step is in `sfbench.optim.kernels`; this class computes the per-step scalars (γ_t, c_{t+1})
in float64 Python arithmetic and hands them to a kernel, eager or compiled.

Per-group running scalars are kept *in the param group* (`k`, `weight_sum`, `lr_max`, `train_mode`, `last_lr`,
`last_c`), so `state_dict()` / `load_state_dict()` round-trip them, and the train/eval mode, with no extra code.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import types
import warnings
from collections import defaultdict
from typing import Any, Callable

import torch
from torch.optim import Optimizer

from . import compat, kernels

#: [A5]; `schedulet` and `constant` are docs/theory.md's theorem-indexed weighting and the IAM baselines' EMA.
WEIGHTINGS = ("lr_power", "uniform", "lr", "poly", "schedulet", "constant")
LR_RULES = ("schedule", "polyak")

#: Below this many parameter elements, `fused=None` stays eager: a cold compile costs tens of seconds, while the
#: eager step of a model this small costs milliseconds (docs/benchmarks.md has the measurements behind it).
FUSED_AUTO_MIN_NUMEL = 1 << 20


def check_range(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> None:
    """Raise ValueError naming the argument, its value and the allowed interval unless value lies in it.
    A one-element tensor counts as its number (the reference package accepts a tensor learning rate)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    bad = isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
    if not bad:
        bad = (value <= lo if lo_open else value < lo) or (value >= hi if hi_open else value > hi)
    if bad:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name}={value!r} is out of range; allowed: a number in {interval}")


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {allowed}")


def _fresh_function(fn: Callable) -> Callable:
    """A copy of `fn` with its own code object.

    torch.compile caches compiled graphs on the code object and stops compiling after `recompile_limit` (8) distinct
    guards per code object. Each optimizer instance specialises its kernel on its own parameter shapes, so sharing one
    code object would make the ninth optimizer in a process (a test session, a sweep in one process) silently fall back
    to eager. A fresh code object per instance keeps compiles independent; inductor's on-disk cache still hits, since
    it keys on the generated graph, not on the Python function.
    """
    code = fn.__code__.replace(co_name=f"{fn.__name__}_sfbench")
    return types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)


def default_compile_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sfbench", "inductor")


def compile_supported(device: torch.device) -> tuple[bool, str]:
    """Whether torch.compile can build kernels for `device` here, and if not, why."""
    if device.type == "cpu":
        if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
            return False, "no C++ compiler (g++/c++/clang++) on PATH for inductor's CPU kernels"
        return True, ""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "triton is not installed"
        return True, ""
    return False, f"device type {device.type!r} has no inductor backend here"


def without_lazy_dynamo(method: Callable) -> Callable:
    """`torch.optim.Optimizer`'s `method` minus torch's `_disable_dynamo` wrapper while torch._dynamo isn't imported.

    torch wraps `add_param_group`, `zero_grad`, `state_dict` and `load_state_dict` so that torch.compile never traces
    them, and the wrapper's first call imports torch._dynamo: 3.2 s on the 2-core VM, a quarter of a whole 600-step
    `task=logreg` run (docs/benchmarks.md "start-up"). Until torch._dynamo is imported nothing can be compiling, so the
    wrapper has nothing to do and the plain method runs; once it is (a compiled kernel, `trainer.compile`, a torch
    optimizer elsewhere in the process), torch's wrapped method runs, as without this."""
    plain = getattr(method, "__wrapped__", method)

    @functools.wraps(plain)
    def call(self, *args, **kwargs):
        return (method if "torch._dynamo" in sys.modules else plain)(self, *args, **kwargs)

    return call


class _Optimizer(Optimizer):
    """`torch.optim.Optimizer` whose bookkeeping methods don't import torch._dynamo (`without_lazy_dynamo`)."""

    add_param_group = without_lazy_dynamo(Optimizer.add_param_group)
    zero_grad = without_lazy_dynamo(Optimizer.zero_grad)
    state_dict = without_lazy_dynamo(Optimizer.state_dict)
    load_state_dict = without_lazy_dynamo(Optimizer.load_state_dict)


def decide_fused(fused: bool | None, params: list[torch.Tensor]) -> bool:
    """Whether an optimizer with argument `fused` (True, False, None = auto) over `params` runs compiled kernels:
    auto when torch.compile can build kernels for every device and the model has ≥ FUSED_AUTO_MIN_NUMEL elements."""
    if fused is False:
        return False
    reasons = [why for ok, why in (compile_supported(d) for d in {p.device for p in params}) if not ok]
    if fused is True:
        if reasons:
            raise RuntimeError(f"fused=True needs torch.compile, which can't build kernels here: {'; '.join(reasons)}. "
                               "Use fused=False.")
        return True
    return not reasons and sum(p.numel() for p in params) >= FUSED_AUTO_MIN_NUMEL


def compiled_kernel(cache: dict, name: str, key: tuple) -> Callable:
    """`kernels.<name>` under torch.compile, made once per `key` (its second entry the device) and kept in `cache`."""
    fn = cache.get((name, key))
    if fn is None:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", default_compile_cache_dir())
        # On CUDA, inductor's combo kernels fuse the per-tensor loops horizontally (a handful of launches per
        # step instead of one per tensor): measured on an H100, 72 tensors / 75.6M params, sf_update 1.99 → 1.08
        # ms against fused AdamW's 1.27 (docs/benchmarks.md). The CPU backend has no combo kernels.
        options = {"combo_kernels": True} if "cuda" in key[1] else None
        fn = torch.compile(_fresh_function(getattr(kernels, name)), fullgraph=True, dynamic=False, options=options)
        cache[(name, key)] = fn
    return fn


class ScheduleFreeBase(_Optimizer):
    """Base class of the schedule-free optimizers (ALGORITHMS.md section A; SF-Polyak [B1]).

    Subclasses set `_adam` (whether P_t is Adam's D_t⁻¹) and `_beta_key` (how β is read from a group).
    """

    _adam: bool = False

    #: The bound of ALGORITHMS.md section C a trainer logs next to runs of this optimizer: [C1], SF with any schedule
    #: (exact for `weighting="lr"`, and for `uniform` at a constant step). Baselines without the attribute get [C3].
    theory_bound = "C1"

    def __init__(self, params, defaults: dict, *, foreach: bool | None, fused: bool | None):
        defaults = dict(defaults, k=0, weight_sum=0.0, lr_max=-1.0, train_mode=True, last_lr=0.0, last_c=0.0)
        defaults.setdefault("c", 0.1)        # the `constant` weighting's c_{t+1}
        if fused is not None and not isinstance(fused, bool):
            raise ValueError(f"fused={fused!r} is not allowed; choose True, False or None (auto)")
        if foreach is not None and not isinstance(foreach, bool):
            raise ValueError(f"foreach={foreach!r} is not allowed; choose True, False or None (auto)")
        self._fused_arg = fused
        self._foreach_arg = foreach
        self._compiled: dict[str, Callable] = {}
        self._fused_decision: bool | None = None
        #: Set to True (a trainer logging theory does) to have `step` record ‖g_t‖²_{P_t} in `last_grad_sq_P` (Adam
        #: base, and SF-Polyak, which computes it anyway; None for the SGD base, where it is the plain ‖g‖²).
        self.record_grad_sq = False
        self.last_grad_sq_P: float | None = None
        super().__init__(params, defaults)

    # -- hyperparameters -------------------------------------------------------------------------------------------

    def _beta(self, group: dict) -> float:
        raise NotImplementedError

    def _validate_group(self, group: dict) -> None:
        for name in ("lr", "weight_decay", "r", "weight_lr_power"):
            check_range(name, group[name], 0.0, math.inf, hi_open=True)
        check_choice("weighting", group["weighting"], WEIGHTINGS)
        check_range("alpha", group["alpha"], 0.0, 1.0)
        check_range("c", group["c"], 0.0, 1.0, lo_open=True)
        check_choice("lr_rule", group["lr_rule"], LR_RULES)
        check_range("polyak_floor", group["polyak_floor"], 0.0, math.inf, lo_open=True, hi_open=True)
        warmup = group.get("warmup_steps", 0)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup_steps={warmup!r} is out of range; allowed: an integer ≥ 0 (0: no warm-up)")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if group.get("weighting") is None:
                # The reference's default; SF-Polyak too, as its authors run it (AdamWScheduleP / SGDScheduleP: the
                # `lr_power` weights computed from the scheduled cap, see `_averaging_coefficient`).
                group["weighting"] = "lr_power"
            self._validate_group(group)
            for key in ("lr_rule", "polyak_floor"):   # SF-Polyak's step is one scalar for the whole loss
                values = {g[key] for g in self.param_groups}
                if len(values) > 1:
                    raise ValueError(f"{key} must be the same in every parameter group (SF-Polyak's step is one "
                                     f"scalar for the whole loss); got {sorted(values)}")
        except ValueError:
            self.param_groups.pop()     # a rejected group must not stay behind and be trained
            raise

    @property
    def needs_loss(self) -> bool:
        """Whether `step` needs the minibatch loss (SF-Polyak); trainers pass `loss=` and `lower_bound=` then."""
        return bool(self.param_groups) and self.param_groups[0]["lr_rule"] == "polyak"

    # -- train / eval ----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def eval(self) -> None:
        """Put the parameters at the averaged point x (for evaluation and saving the model); [A1] solved for x."""
        self._swap(to_train=False)

    @torch.no_grad()
    def train(self) -> None:
        """Put the parameters back at y = (1 − β) z + β x, where gradients are taken during training [A1]."""
        self._swap(to_train=True)

    def _swap(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue
            beta = self._beta(group)
            for p in group["params"]:
                state = self.state[p]
                if state:
                    self._check_storage(state, beta)
                if "z" in state:            # x = y + (1 − 1/β)(z − y) and back, as the reference package does
                    p.lerp_(state["z"].to(p.device), 1 - beta if to_train else 1 - 1 / beta)
                elif "x" in state:            # β = 0 storage: exchange y (= z) and x
                    tmp = p.detach().clone()
                    p.copy_(state["x"])
                    state["x"].copy_(tmp)
                elif "u" in state and beta < 1:
                    # x = y − ((1 − β)/β) u  and back.
                    scale = (1 - beta) / beta
                    p.add_(state["u"].to(p.device), alpha=scale if to_train else -scale)
            group["train_mode"] = to_train

    # -- the averaging weights [A5] ----------------------------------------------------------------------------------

    @staticmethod
    def _averaging_coefficient(group: dict, lr: float) -> float:
        """c_{t+1} of [A5] for step t = group['k'] with scheduled step size `lr` (SF-Polyak: the scheduled cap, not the
        step taken, so a zero step still gets its weight); updates the group's running sums."""
        k, mode = group["k"], group["weighting"]
        if mode == "poly":
            return (k + 1) ** (-group["alpha"])
        if mode == "constant":          # x is an exponential moving average of z (the IAM baselines)
            return group["c"]
        if mode == "schedulet":         # docs/theory.md Theorem 1: z_{t+1} weighted by γ_{t+1}, z_0 kept (weight γ_0)
            weight = _next_lr(group, lr)
            if k == 0:
                group["weight_sum"] = lr
            group["weight_sum"] = group["weight_sum"] + weight
            return weight / group["weight_sum"] if group["weight_sum"] > 0 else 0.0
        if mode == "uniform":
            weight = 1.0
        elif mode == "lr":
            weight = lr
        else:  # lr_power: (t+1)^r · (max_{i≤t} γ_i)^p, exactly as schedulefree computes it
            group["lr_max"] = max(lr, group["lr_max"])
            weight = ((k + 1) ** group["r"]) * (group["lr_max"] ** group["weight_lr_power"])
        group["weight_sum"] = group["weight_sum"] + weight
        return weight / group["weight_sum"] if group["weight_sum"] > 0 else 0.0

    # -- backends ----------------------------------------------------------------------------------------------------

    def _decide_fused(self) -> bool:
        if self._fused_decision is not None:
            return self._fused_decision
        decision = decide_fused(self._fused_arg, [p for g in self.param_groups for p in g["params"]])
        self._fused_decision = decision
        return decision

    def _kernel(self, name: str, key: tuple) -> Callable:
        """The compiled kernel `name` for one (group, device, set of parameters with gradients).

        Each key gets its own code object (see `_fresh_function`), so a model with many groups, or parameters that
        start receiving gradients over time (progressive unfreezing), never runs into torch.compile's recompile
        limit; each new key costs one compile (from the on-disk cache when the shapes were seen before).
        """
        return compiled_kernel(self._compiled, name, key)

    def _run(self, name: str, key: tuple, *args, scalars: tuple) -> Any:
        """Run kernel `name` (or its foreach twin) with `scalars` passed as floats (eager) or 0-d tensors (compiled)."""
        if self._decide_fused():
            tensors = tuple(torch.tensor(s, dtype=torch.float64) for s in scalars)
            try:
                return self._kernel(name, key)(*args, *tensors)
            except Exception as err:  # a compiler failure surfaces on the first call, before anything is written
                if not _is_compile_failure(err):
                    raise
                warnings.warn(f"sfbench: torch.compile of the {name} kernel failed ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); using the eager path from now on.",
                              RuntimeWarning, stacklevel=3)
                self._fused_decision = False
        return kernels.eager(name, self._foreach_arg is not False)(*args, *scalars)

    # -- the step ----------------------------------------------------------------------------------------------------

    def _tensors(self, group: dict) -> dict[torch.device, dict[str, list]]:
        """The group's parameters with gradients, by device, with their state (created on first use, or converted
        to the layout of the group's rule, see `_layout`). Sparse gradients go to separate lists (`s*`)."""
        beta = self._beta(group)
        layout = self._layout(group)
        out: dict[torch.device, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        adam, states = self._adam, self.state
        for index, p in enumerate(group["params"]):       # (runs every step: kept lean, ~3 µs a parameter)
            grad = p.grad
            if grad is None:
                continue
            sparse = grad.is_sparse
            if sparse:
                self._check_sparse(group)
            state = states[p]
            if layout not in state:     # new, or stored for another rule or β
                if not state:
                    if layout == "x":
                        state["x"] = p.detach().clone(memory_format=torch.preserve_format)
                    elif layout == "z":
                        state["z"] = p.detach().clone(memory_format=torch.preserve_format)       # z_0 = y_0
                    else:
                        state["u"] = torch.zeros_like(p, memory_format=torch.preserve_format)   # u_0 = z_0 − y_0
                    if adam:
                        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self._check_storage(state, beta)
                self._convert_layout(state, p, layout)
            lists = out[p.device]
            prefix = "s" if sparse else ""
            lists[prefix + "index"].append(index)
            lists[prefix + "y"].append(p.detach())
            lists[prefix + "g"].append(grad)
            lists[prefix + layout].append(state[layout])
            if adam:
                lists["v"].append(state["exp_avg_sq"])
        return out

    def _check_storage(self, state: dict, beta: float) -> None:
        if ("x" in state and beta != 0) or (("u" in state or "z" in state) and beta == 0):
            raise ValueError(
                f"{self._beta_name}={beta!r}: β was changed across 0 after training started. β = 0 (y = z, x kept "
                "in the state) and β > 0 (u = z − y kept) store different things, so a run can't switch between "
                "them; build a new optimizer from the model at x (optimizer.eval()) to change it.")

    def _adam_scalars(self, group: dict) -> tuple[float, float, float]:
        if not self._adam:
            return 0.0, 1.0, 0.0
        beta2 = group["betas"][1]
        return beta2, 1.0 - beta2 ** (group["k"] + 1), group["eps"]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None, *, loss: Any = None, lower_bound: Any = 0.0) -> Any:
        """One step of [A1]–[A5].

        With `lr_rule="schedule"` the step size is the group's `lr` (set it with any `torch.optim.lr_scheduler`).
        With `lr_rule="polyak"` it is SF-Polyak's [B1], capped by the group's `lr`; pass the minibatch loss at y
        (`loss=`, a float or a scalar tensor) and a lower bound ℓ* on it (`lower_bound=`, default 0), or a closure
        that returns the loss. The step actually taken is in `group["last_lr"]` afterwards.
        """
        closure_loss, loss = call_closure(closure, loss)
        for group in self.param_groups:
            if not group["train_mode"]:
                raise RuntimeError(f"{type(self).__name__}.step() was called in eval mode (parameters at x). "
                                   "Call optimizer.train() before training steps and optimizer.eval() before "
                                   "evaluating or saving.")

        work = [(group, self._tensors(group)) for group in self.param_groups]
        polyak_step = None
        self.last_grad_sq_P = None
        # SF-Polyak with the Adam base: eagerly, the first pass writes v_t and g ← P_t g so the update needs no square
        # root; compiled, a read-only first pass and the ordinary Adam update are faster (kernels.polyak_sums_read)
        read_only = self._adam and self._decide_fused()
        if self.param_groups and self.param_groups[0]["lr_rule"] == "polyak":
            polyak_step = self._polyak_step(work, loss, lower_bound, read_only)
        # Adam base: the update kernels return ‖g‖²_P as a by-product (`*_gpg`), summed below. SGD base (P = I): left
        # None — ‖g‖² is the plain gradient norm, which a trainer has already computed.
        with_gpg = self.record_grad_sq and self._adam and polyak_step is None
        gpg_parts = []

        for group_index, (group, by_device) in enumerate(work):
            if polyak_step is None:
                lr = self._scheduled_lr(group)
            else:   # a NaN loss gives a NaN step: divergence must show, not be capped away
                lr = polyak_step if math.isnan(polyak_step) else min(self._scheduled_lr(group), polyak_step)
            c = self._averaging_coefficient(group, self._scheduled_lr(group))     # weights from the scheduled cap
            beta, wd = self._beta(group), group["weight_decay"]
            beta2, bc2, eps = self._adam_scalars(group)
            for device, lists in by_device.items():
                # SF-Polyak's first pass has already replaced g by P g (Adam base): the SGD-base update follows
                vs = lists["v"] if self._adam and (polyak_step is None or read_only) else None
                key = (group_index, str(device), tuple(lists["index"]))
                suffix = "_gpg" if with_gpg else ""
                if lists["z"]:
                    out = self._run("sf_update_z" + suffix, key, lists["y"], lists["g"], lists["z"], vs,
                                    scalars=(c, lr * (beta * (1 - c) - 1), lr, wd, beta2, bc2, eps))
                    gpg_parts.append(out)
                if lists["sg"]:     # sparse gradients (SGD base): the per-tensor eager path, which accepts them
                    storage = "sz" if lists["sz"] else "sx"
                    scalars = (c, lr * (beta * (1 - c) - 1), lr) if storage == "sz" else (c, lr)
                    kernels.eager("sf_update_z" if storage == "sz" else "sf_update_beta0", False)(
                        lists["sy"], lists["sg"], lists[storage], None, *scalars, wd, beta2, bc2, eps)
                if lists["u"]:
                    out = self._run("sf_update" + suffix, key, lists["y"], lists["g"], lists["u"], vs,
                                    scalars=(c, -lr * (1 - beta * (1 - c)), -lr * beta * (1 - c), wd, beta2, bc2, eps))
                    gpg_parts.append(out)
                if lists["x"]:
                    out = self._run("sf_update_beta0" + suffix, key, lists["y"], lists["g"], lists["x"], vs,
                                    scalars=(c, lr, wd, beta2, bc2, eps))
                    gpg_parts.append(out)
            group["scheduled_lr"] = self._scheduled_lr(group)
            group["k"] += 1
            group["last_lr"] = lr
            group["last_c"] = c
        if with_gpg:
            self.last_grad_sq_P = float(sum(float(t) for t in gpg_parts if t is not None))
        return closure_loss

    def _polyak_step(self, work: list, loss: Any, lower_bound: Any, read_only: bool = False) -> float:
        """γ_t of [B1] before the cap: [f(y) − ℓ* + ⟨g, z − y⟩]_+ / max(‖g‖²_P, M), over all groups."""
        if loss is None:
            raise ValueError(f"{type(self).__name__} with lr_rule='polyak' needs the minibatch loss at y: call "
                             "step(loss=loss, lower_bound=lower_bound) (lower_bound defaults to 0), or pass a "
                             "closure that returns the loss.")
        gpg, gu = 0.0, 0.0
        for group_index, (group, by_device) in enumerate(work):
            beta2, bc2, eps = self._adam_scalars(group)
            for device, lists in by_device.items():
                vs = lists["v"] if self._adam else None
                us = lists["u"] or None      # β = 0 (x stored): z − y = 0
                if not lists["g"]:
                    continue
                key = (group_index, str(device), tuple(lists["index"]))
                sums = self._run("polyak_sums_read" if read_only else "polyak_sums", key, lists["g"], us, vs,
                                 scalars=(beta2, bc2, eps))
                sums = sums.tolist()
                gpg, gu = gpg + sums[0], gu + sums[1]
        self.last_grad_sq_P = gpg
        floor = self.param_groups[0]["polyak_floor"]
        numerator = float(loss) - float(lower_bound) + gu
        if math.isnan(numerator) or math.isnan(gpg):
            return math.nan
        return max(numerator, 0.0) / max(gpg, floor)


    # -- drop-in compatibility: warm-up argument, layouts, copies, foreign checkpoints ---------------------------------

    @staticmethod
    def _scheduled_lr(group: dict) -> float:
        """γ_t before SF-Polyak: the group's lr (a float or a one-element tensor, as any lr scheduler leaves it) times
        the reference package's linear warm-up, min(1, (t + 1)/W) for `warmup_steps` = W > 0 (W = 0: none)."""
        lr = float(group["lr"])
        warmup, k = group.get("warmup_steps", 0), group["k"]
        return lr * ((k + 1) / warmup) if k < warmup else lr

    def _layout(self, group: dict) -> str:
        """The state buffer of a group's parameters (`sfbench.optim.kernels`): `x` for β = 0, `u` = z − y for
        SF-Polyak (its reduction reads one array less), `z` otherwise (the reference package's layout)."""
        if self._beta(group) == 0:
            return "x"
        return "u" if group["lr_rule"] == "polyak" else "z"

    def _convert_layout(self, state: dict, p: torch.Tensor, layout: str) -> None:
        """Switch a parameter's state between `z` and `u` = z − y (the rule of its group changed, or a checkpoint in
        the other layout was loaded); p holds y (training mode)."""
        if layout == "z" and "u" in state:
            state["z"] = state.pop("u").add_(p.detach())
        elif layout == "u" and "z" in state:
            state["u"] = state.pop("z").sub_(p.detach())

    def _check_sparse(self, group: dict) -> None:
        if self._adam or group["lr_rule"] == "polyak":
            what = "the Adam base" if self._adam else "SF-Polyak (lr_rule='polyak')"
            raise RuntimeError(f"{type(self).__name__}: {what} does not support sparse gradients (its second moments "
                               "/ step size need dense ones, as in the reference package); SFSGD with "
                               "lr_rule='schedule' accepts them")

    def __getstate__(self) -> dict[str, Any]:
        """What `copy.deepcopy` and pickle keep: torch's three entries plus this class's settings (not compiled
        kernels, which are rebuilt on the copy's first step)."""
        state = super().__getstate__()
        extra = {k: v for k, v in self.__dict__.items()
                 if k not in state and k != "_compiled" and not k.startswith("_optimizer_")}
        return {**state, **extra}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._compiled = {}
        self._fused_decision = None     # decided again for the copy's devices
        for name, default in (("_fused_arg", None), ("_foreach_arg", None), ("record_grad_sq", False),
                              ("last_grad_sq_P", None)):
            self.__dict__.setdefault(name, default)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict of this class, or of `schedulefree.SGDScheduleFree` / `AdamWScheduleFree` (converted
        exactly: their `z` is this class's `z` layout, their group keys map onto ours). Anything else is refused here,
        with the reason, rather than failing at the first step."""
        super().load_state_dict(compat.convert_state_dict(self, state_dict))


    # -- what the theory needs ([C1]) ---------------------------------------------------------------------------------

    @torch.no_grad()
    def distance_sq_at_z(self, origin: list[torch.Tensor]) -> float:
        """‖z − origin‖² in float64, z the base sequence [A3] (z = y + u, or y itself with β = 0; nothing written).
        The online bound's distance R_t ≥ ‖z_t − x*‖ is D + ‖z_t − z_0‖ (docs/theory.md)."""
        params = [(group, p) for group in self.param_groups for p in group["params"]]
        if len(origin) != len(params):
            raise ValueError(f"origin has {len(origin)} tensors; the optimizer has {len(params)} parameters")
        diffs = []
        for (group, p), o in zip(params, origin):
            state, beta = self.state[p], self._beta(group)
            if "x" in state:            # β = 0: y = z in train mode, and the swap exchanges them
                z = p.detach() if group["train_mode"] else state["x"]
                diffs.append(z - o)
            elif "u" in state:          # train: z = y + u; eval (parameters at x): z = x + u/β
                diffs.append(p.detach() - o + state["u"] * (1.0 if group["train_mode"] else 1.0 / beta))
            elif "z" in state:          # the reference's layout: z itself (the parameters hold y or x)
                diffs.append(state["z"].to(o.device) - o)
            else:                       # no step yet: z = z_0 = the parameters
                diffs.append(p.detach() - o)
        norms = [n.double().cpu() for n in torch._foreach_norm(diffs)] if diffs else []
        return float(torch.stack(norms).square().sum()) if norms else 0.0

    def theory_caveats(self) -> list[str]:
        """Why docs/theory.md's online-to-batch bound (Theorem 2) is not a theorem for this optimizer as configured
        (empty: it is, for a convex task with exact D and a bound on the next gradient). Read by the trainer."""
        out = []
        if self._adam:
            out.append("Adam base: the bound is stated in Euclidean D with ‖g‖²_P, and P_t = D_t⁻¹ changes every step "
                       "(not monotone), so no theorem covers it")
        if any(g["weight_decay"] for g in self.param_groups):
            out.append("weight decay > 0: the steps minimise f + λ‖w‖²/2, not the f that is evaluated")
        keys = [(g["lr"], g["weighting"], g["c"], g["alpha"], self._beta(g)) for g in self.param_groups]
        if len(set(keys)) > 1:
            out.append("parameter groups with different lr, weighting or β: not one SGD step on one objective")
        return out

    @torch.no_grad()
    def distance_sq_at_x(self, origin: list[torch.Tensor]) -> float:
        """‖x − origin‖² in float64, with x the averaged point [A4] (recovered as in `eval`, nothing written).

        `origin` lists one tensor per parameter, in the order of `param_groups` (e.g. copies of the initial
        parameters: a trainer logs the distance travelled by x as its estimate of D in [C1]). Multi-tensor ops per
        (group, storage kind), one host sync in all.
        """
        params = [(group, p) for group in self.param_groups for p in group["params"]]
        if len(origin) != len(params):
            raise ValueError(f"origin has {len(origin)} tensors; the optimizer has {len(params)} parameters")
        sums = []
        for group_index, group in enumerate(self.param_groups):
            beta = self._beta(group)
            plain, plain_o, with_u, with_u_o, us = [], [], [], [], []
            start = sum(len(g["params"]) for g in self.param_groups[:group_index])
            for p, o in zip(group["params"], origin[start:start + len(group["params"])]):
                state = self.state[p]
                if group["train_mode"] and "z" in state:     # x = y + (1 − 1/β)(z − y)
                    plain.append(torch.lerp(p.detach(), state["z"], 1 - 1 / beta))
                    plain_o.append(o)
                elif group["train_mode"] and "x" in state:
                    plain.append(state["x"])
                    plain_o.append(o)
                elif group["train_mode"] and "u" in state and beta < 1:
                    with_u.append(p.detach())
                    with_u_o.append(o)
                    us.append(state["u"])
                else:
                    plain.append(p.detach())
                    plain_o.append(o)
            if plain:
                sums += torch._foreach_norm(torch._foreach_sub(plain, plain_o))
            if with_u:
                diffs = torch._foreach_sub(with_u, with_u_o)           # x − o = (y − o) − ((1 − β)/β) u
                torch._foreach_add_(diffs, us, alpha=-(1 - beta) / beta)
                sums += torch._foreach_norm(diffs)
        if len({n.device for n in sums}) > 1:      # parameters on several devices: combine on the host
            sums = [n.cpu() for n in sums]
        return float(torch.stack(sums).double().square().sum()) if sums else 0.0


def call_closure(closure: Callable[[], Any] | None, loss: Any) -> tuple[Any, Any]:
    """`step(closure)`: run the closure with gradients on; its value is the step's return and, unless `loss=` was
    given, SF-Polyak's loss. Returns (closure's value or None, loss)."""
    if closure is None:
        return None, loss
    with torch.enable_grad():
        closure_loss = closure()
    return closure_loss, closure_loss if loss is None else loss


def _next_lr(group: dict, lr: float) -> float:
    """γ_{t+1}, the step size the *next* step will take, for the `schedulet` weighting. sfbench's schedules are pure
    h(t; T), and `Schedule.lr_scheduler` writes `group["lr_lookahead"] = [γ_t, γ_{t+1}]` at each of its steps; without
    it (any other scheduler, or a hand-set lr) the step size is taken to stay as it is (γ_{t+1} = γ_t). Either way the
    average is a valid one and the trainer's bound uses the weights actually applied; [C1] is exact only with the
    look-ahead."""
    lookahead = group.get("lr_lookahead")
    if lookahead is not None and float(lookahead[0]) == lr:
        return float(lookahead[1])
    return lr


def _is_compile_failure(err: Exception) -> bool:
    """Errors raised by dynamo/inductor while compiling (compiler missing or broken, recompile limit, unsupported
    op). They happen before the compiled kernel runs, so nothing has been written and the eager path can take over."""
    return type(err).__module__.startswith(("torch._dynamo", "torch._inductor"))
