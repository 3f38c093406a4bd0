"""The update rules of the schedule-free family, each written once (docs/theory.md's notation), and how they run.

The state is the reference package's z, except where another one is needed: x for β = 0 (y = z loses it); u = z − y
for SF-Polyak, whose first pass then reads g, u, v, not g, y, z, v (its step measured 1.94–2.02× fused AdamW's with
z, 1.81–1.85× with u; `scripts/bench_optim.py`, 2 CPU cores). Each rule is a function of one parameter's tensors and
the step's scalars, in the reference's op order, run per tensor (`foreach=False`); once on `TensorList`s, whose
methods are torch's `_foreach_*` ops (`foreach=True`: the same ops, so both eager paths round alike); or compiled
(`fused`), one pass over each parameter's memory. docs/architecture.md says why each choice.
"""

from __future__ import annotations

import functools
import math
import operator
import os
import types
from typing import Callable

import torch

#: Below this many elements, `fused=None` stays eager: a cold compile takes tens of seconds, an eager step milliseconds.
FUSED_AUTO_MIN_NUMEL = 1 << 20


class TensorList(list):
    """Tensors whose Tensor methods are torch's multi-tensor ops: `xs.mul(ys)` is `torch._foreach_mul(xs, ys)`."""

    is_sparse = False

    def __getattr__(self, name: str) -> Callable:
        op = getattr(torch, "_foreach_" + name)

        def call(*args, **kwargs):
            out = op(self, *args, **kwargs)
            return self if out is None else TensorList(out)
        return call

    def mul_(self, other):
        # torch's in-place multi-tensor multiply rounds a Python number to a half-precision list's dtype first (the
        # single-tensor op keeps it in float32); as a 0-d tensor it is multiplied as the single-tensor op does
        if isinstance(other, float) and any(t.dtype in (torch.float16, torch.bfloat16) for t in self):
            other = torch.tensor(other, dtype=torch.float64)
        torch._foreach_mul_(self, other)
        return self


def inner(a, b) -> torch.Tensor:
    """Σ a·b as a float64 0-d tensor (summed in float32 for float32 and half tensors); lists: the sums, in order."""
    if isinstance(a, TensorList):
        return functools.reduce(operator.add, map(inner, a, b))
    if a.dtype in (torch.float16, torch.bfloat16):
        a, b = a.float(), b.float()
    return torch.dot(a.reshape(-1), b.reshape(-1)).double()


def _axpy(x, a, y, y2=None, inplace: bool = True):
    """x + a·y (a·y·y2 with `y2`), in place unless told otherwise: `alpha=` / `value=` for a number, as the reference
    rounds; a product for a tensor (compiled: passed as `alpha=`, inductor's disk cache replayed its first value)."""
    if isinstance(a, torch.Tensor):
        t = y.mul(a) if y2 is None else y.mul(y2).mul(a)
        return x.add_(t) if inplace else x.add(t)
    if y2 is not None:
        return x.addcmul_(y, y2, value=a)
    return x.add_(y, alpha=a) if inplace else x.add(y, alpha=a)


def sf_update(y, g, s, v, c, a1, a2, wd, beta2, bc2, eps, *, store: str = "z", gpg: bool = False) -> tuple:
    """One step of [A1]–[A4] on one parameter with d = P g + λ y, `v` Adam's second moment (None: SGD base), `s` the
    state `store` names (the storage trick of the reference package for z):
    z: y ← y + c (z − y) + a1 d,  z ← z + a2 d,        a1 = γ (β (1 − c) − 1), a2 = −γ;
    u = z − y: y ← y + c u + a1 d,  u ← (1 − c) u + a2 d,   a1 = −γ (1 − β (1 − c)), a2 = −γ β (1 − c);
    x (β = 0): y ← y + a1 d,  x ← x + c (y − x),    a1 = −γ.
    Returns (‖g‖²_P,) when `gpg` (Adam base), else ()."""
    out = ()
    if v is None:                                   # SGD base: d = g + λ y
        d = g if not isinstance(wd, torch.Tensor) and wd == 0 else y.mul(wd).add_(g) if g.is_sparse else \
            _axpy(g, wd, y, inplace=False)
    else:                                           # Adam base: v ← β2 v + (1 − β2) g²,  d = g / D + λ y
        _axpy(v.mul_(beta2), 1 - beta2, g, g)
        d = g.div(v.div(bc2).sqrt_().add_(eps))
        out = (inner(g, d),) if gpg else ()
        if isinstance(wd, torch.Tensor) or wd != 0:
            _axpy(d, wd, y)
    if store == "z":
        y.lerp_(s, c)
        _axpy(y, a1, d)
        _axpy(s, a2, d)
    elif store == "u":
        _axpy(_axpy(y, c, s), a1, d)
        _axpy(s.mul_(1 - c), a2, d)
    else:
        _axpy(y, a1, d)
        s.lerp_(y, c)
    return out


def polyak_sums(g, u, v, beta2, bc2, eps) -> tuple:
    """SF-Polyak's first pass [B1] on one parameter, nothing written: (‖g‖²_P, ⟨g, u⟩), u = z − y, as float64 0-d
    tensors, P from this step's second moment β2 v + (1 − β2) g² (which `sf_update` then writes); (‖g‖²_P,) for u None
    (β = 0: z = y)."""
    pg = g if v is None else g.div(_axpy(v.mul(beta2 / bc2), (1 - beta2) / bc2, g, g).sqrt_().add_(eps))
    return (inner(g, pg),) if u is None else (inner(g, pg), inner(g, u))


def averaging_coefficient(group: dict, lr: float) -> float:
    """c_{t+1} of [A5] for step t = group['k'] with scheduled step size `lr` (SF-Polyak: the scheduled cap, not the
    step taken, so a zero step still gets its weight); updates the group's running sums."""
    k, mode = group["k"], group["weighting"]
    if mode == "poly":
        return (k + 1) ** (-group["alpha"])
    if mode == "constant":          # x is an exponential moving average of z (the IAM baselines)
        return group["c"]
    if mode == "schedulet":         # docs/theory.md Theorem 1: z_{t+1} weighted by γ_{t+1}, z_0 kept (weight γ_0)
        # γ_{t+1} from `Schedule.lr_scheduler`'s look-ahead; without it the step is taken to stay as it is
        lookahead = group.get("lr_lookahead")
        weight = float(lookahead[1]) if lookahead is not None and float(lookahead[0]) == lr else lr
        if k == 0:
            group["weight_sum"] = lr
    elif mode in ("uniform", "lr"):
        weight = 1.0 if mode == "uniform" else lr
    else:  # lr_power: (t+1)^r · (max_{i≤t} γ_i)^p, exactly as schedulefree computes it
        group["lr_max"] = max(lr, group["lr_max"])
        weight = ((k + 1) ** group["r"]) * (group["lr_max"] ** group["weight_lr_power"])
    group["weight_sum"] = group["weight_sum"] + weight
    return weight / group["weight_sum"] if group["weight_sum"] > 0 else 0.0


def warmed_up(group: dict, lr: float) -> float:
    """The reference package's linear warm-up: `lr` · min(1, (t + 1)/W) at step t = group['k'], W = `warmup_steps`."""
    warmup, k = group.get("warmup_steps", 0), group["k"]
    return lr * ((k + 1) / warmup) if k < warmup else lr


def polyak_step(loss: float, lower_bound: float, gpg: float, gu: float, floor: float) -> float:
    """γ_t of [B1] before the cap: [f(y) − ℓ* + ⟨g, z − y⟩]_+ / max(‖g‖²_P, M); NaN in, NaN out (divergence shows)."""
    numerator = float(loss) - float(lower_bound) + gu
    return math.nan if math.isnan(numerator) or math.isnan(gpg) else max(numerator, 0.0) / max(gpg, floor)


def each(rule: Callable, lists: list, scalars, flags: dict) -> torch.Tensor | None:
    """`rule` on each parameter (None for an input it doesn't take), its sums stacked and added (a stack: inductor
    keeps the reductions fast then) or None: the per-tensor eager path and what torch.compile compiles."""
    scalars, total = scalars.unbind() if isinstance(scalars, torch.Tensor) else scalars, None
    for i in range(len(lists[0])):
        out = rule(*(None if t is None else t[i] for t in lists), *scalars, **flags)
        if out:
            total = torch.stack(out) if total is None else total + torch.stack(out)
    return total


def compiled(cache: dict, rule: Callable, key: tuple, flags: dict) -> Callable:
    """`each(rule, …, flags)` compiled for one key (its second entry the device), kept in `cache`, with its own copy of
    `each`'s code object: torch.compile stops after 8 graphs per code object, which many groups would pass."""
    fn = cache.get((rule, key, *flags.items()))
    if fn is None:
        from .. import cache_root
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "inductor"))
        fresh = types.FunctionType(each.__code__.replace(co_name=f"each_{rule.__name__}"), each.__globals__)
        # on CUDA, combo kernels fuse the per-tensor loops horizontally (a few launches a step, not one per tensor)
        step = torch.compile(fresh, fullgraph=True, dynamic=False,
                             options={"combo_kernels": True} if "cuda" in key[1] else None)
        fn = cache[(rule, key, *flags.items())] = lambda lists, scalars: step(
            rule, lists, torch.tensor(scalars, dtype=torch.float64), flags)
    return fn

