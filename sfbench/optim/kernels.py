"""Per-step update kernels of the schedule-free family (ALGORITHMS.md [A1]–[A5], [B1]).

Storage. Training keeps `y` in the model's parameters (gradients are taken there, [A2]) and one buffer of optimizer
state per parameter, `u = z − y`, instead of the reference package's `z`. The two carry the same information
(z = y + u) and cost the same memory, but `u` is what SF-Polyak's numerator needs (⟨g, z − y⟩, [B1]), so its extra
reduction pass reads three arrays instead of four. With `d = P g + λ y` (preconditioned gradient plus decoupled
weight decay at y) and `c = c_{t+1}`, one step of [A1]–[A4] becomes

    y ← y + c·u − γ (1 − β (1 − c)) d          (the RLS storage trick, rewritten with u)
    u ← (1 − c) (u − γ β d)                    (z' − y' for z' = z − γ d)

and the averaged point is `x = y − ((1 − β)/β) u` (β > 0). For β = 0 the average can't be recovered from y and z
(they are equal), so the state holds `x` itself and the step is `y ← y − γ d; x ← x + c (y − x)`.

Every kernel is written as a plain loop over the tensors of one device, with out-of-place temporaries, so that:
- run eagerly it is the readable path (the `foreach=False` path of the optimizers);
- under `torch.compile` inductor fuses each tensor's loop body into a single pass over memory: the fast path;
- `foreach_*` variants do the same with `torch._foreach_*` ops (fewer kernel launches, more passes over memory).

Scalar arguments may be Python floats (eager) or 0-d float64 CPU tensors (compiled: tensors don't trigger a
recompile when their value changes, and 0-d tensors don't change the parameters' dtype). `vs is None` selects the SGD
base (P = I); otherwise `vs` holds Adam's second moments and P = D⁻¹ with D = sqrt(v / bc2) + eps ([A3]).
"""

from __future__ import annotations

import torch

Tensors = list[torch.Tensor]


def _preconditioned(g: torch.Tensor, v: torch.Tensor, beta2, bc2, eps) -> torch.Tensor:
    """P_t g of the Adam base [A3], after v ← β2 v + (1 − β2) g² in place."""
    v.mul_(beta2).add_((1 - beta2) * g * g)
    return g / ((v / bc2).sqrt() + eps)


def _direction(y: torch.Tensor, g: torch.Tensor, v: torch.Tensor | None, wd, beta2, bc2, eps) -> torch.Tensor:
    """d = P_t g + λ y [A3] (P = I for the SGD base)."""
    return (g if v is None else _preconditioned(g, v, beta2, bc2, eps)) + wd * y


def sf_update(ys: Tensors, gs: Tensors, us: Tensors, vs: Tensors | None, c, ay, au, wd, beta2, bc2, eps) -> None:
    """One SF step in place for β > 0: `ay = −γ (1 − β (1 − c))`, `au = −γ β (1 − c)` (module docstring)."""
    for i in range(len(ys)):
        y, g, u = ys[i], gs[i], us[i]
        d = _direction(y, g, None if vs is None else vs[i], wd, beta2, bc2, eps)
        y.add_(c * u + ay * d)
        u.mul_(1 - c).add_(au * d)


def sf_update_beta0(ys: Tensors, gs: Tensors, xs: Tensors, vs: Tensors | None, c, lr, wd, beta2, bc2, eps) -> None:
    """One SF step in place for β = 0: y = z is plain SGD/Adam, `xs` the running weighted average [A4]."""
    for i in range(len(ys)):
        y, g, x = ys[i], gs[i], xs[i]
        d = _direction(y, g, None if vs is None else vs[i], wd, beta2, bc2, eps)
        y.sub_(lr * d)
        x.add_(c * (y - x))


def _foreach_direction(ys: Tensors, gs: Tensors, vs: Tensors | None, wd, beta2, bc2, eps,
                       gpg: list | None = None) -> Tensors:
    """`_direction` for all tensors at once (multi-tensor ops: a few launches/dispatches in all, not per tensor).
    With `gpg` (a list, Adam base), appends ‖g‖²_P = Σ g·(P g) as a float64 tensor, from P g before weight decay."""
    if vs is None:
        return torch._foreach_add(gs, ys, alpha=wd) if wd else list(gs)
    torch._foreach_mul_(vs, beta2)
    torch._foreach_addcmul_(vs, gs, gs, value=1 - beta2)
    denom = torch._foreach_div(vs, bc2)
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, eps)
    d = torch._foreach_div(gs, denom)
    if gpg is not None:
        gpg.append(_gpg_foreach(gs, d))
    if wd:
        torch._foreach_add_(d, ys, alpha=wd)
    return d


def foreach_update(ys: Tensors, gs: Tensors, us: Tensors, vs: Tensors | None, c, ay, au, wd, beta2, bc2,
                   eps, gpg: list | None = None) -> None:
    """`sf_update` with multi-tensor ops: the eager default (`foreach=None/True`); same math, other rounding order.
    `gpg`: see `_foreach_direction`."""
    d = _foreach_direction(ys, gs, vs, wd, beta2, bc2, eps, gpg)
    torch._foreach_add_(ys, us, alpha=c)
    torch._foreach_add_(ys, d, alpha=ay)
    torch._foreach_mul_(us, 1 - c)
    torch._foreach_add_(us, d, alpha=au)


def foreach_update_beta0(ys: Tensors, gs: Tensors, xs: Tensors, vs: Tensors | None, c, lr, wd, beta2, bc2,
                         eps, gpg: list | None = None) -> None:
    """`sf_update_beta0` with multi-tensor ops."""
    d = _foreach_direction(ys, gs, vs, wd, beta2, bc2, eps, gpg)
    torch._foreach_add_(ys, d, alpha=-lr)
    torch._foreach_add_(xs, torch._foreach_sub(ys, xs), alpha=c)


def sf_update_gpg(ys: Tensors, gs: Tensors, us: Tensors, vs: Tensors, c, ay, au, wd, beta2, bc2, eps) -> torch.Tensor:
    """`sf_update` (Adam base) that also returns ‖g‖²_{P_t} = Σ g²/D_t (float64), summed in the same pass over g and
    D_t that the update makes anyway — what [C1] needs per step, for the price of a multiply and a sum per tensor."""
    total = torch.zeros((), dtype=torch.float64, device=gs[0].device)
    for i in range(len(ys)):
        y, g, u = ys[i], gs[i], us[i]
        pg = _preconditioned(g, vs[i], beta2, bc2, eps)
        total = total + (_acc(g) * _acc(pg)).sum().to(torch.float64)
        d = pg + wd * y
        y.add_(c * u + ay * d)
        u.mul_(1 - c).add_(au * d)
    return total


def _gpg_foreach(gs: Tensors, pgs: Tensors) -> torch.Tensor:
    """Σ g·(P g) over all tensors in two multi-tensor launches (entries ≥ 0, so the L1 norm is the sum)."""
    prods = torch._foreach_mul([_acc(g) for g in gs], [_acc(p) for p in pgs])
    return torch.stack(torch._foreach_norm(prods, 1)).to(torch.float64).sum()


def foreach_update_gpg(*args) -> torch.Tensor:
    """Eager twin of `sf_update_gpg`: `foreach_update` (same rounding as a run that doesn't ask for ‖g‖²_P) plus the
    sum, taken once over all tensors."""
    gpg: list = []
    foreach_update(*args, gpg)
    return gpg[0]


def foreach_update_beta0_gpg(*args) -> torch.Tensor:
    """Eager twin of `sf_update_beta0_gpg` (see `foreach_update_gpg`)."""
    gpg: list = []
    foreach_update_beta0(*args, gpg)
    return gpg[0]


def sf_update_beta0_gpg(ys: Tensors, gs: Tensors, xs: Tensors, vs: Tensors, c, lr, wd, beta2, bc2, eps) -> torch.Tensor:
    """`sf_update_beta0` (Adam base) that also returns ‖g‖²_{P_t}, as `sf_update_gpg`."""
    total = torch.zeros((), dtype=torch.float64, device=gs[0].device)
    for i in range(len(ys)):
        y, g, x = ys[i], gs[i], xs[i]
        pg = _preconditioned(g, vs[i], beta2, bc2, eps)
        total = total + (_acc(g) * _acc(pg)).sum().to(torch.float64)
        y.sub_(lr * (pg + wd * y))
        x.add_(c * (y - x))
    return total


def _acc(t: torch.Tensor) -> torch.Tensor:
    """The tensor in a dtype fit for summing millions of squares: float16/bfloat16 would overflow or round badly."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def polyak_sums(gs: Tensors, us: Tensors | None, vs: Tensors | None, beta2, bc2, eps) -> torch.Tensor:
    """SF-Polyak's two reductions [B1], without writing anything: returns `[‖g‖²_P, ⟨g, z − y⟩]` (float64).

    For the Adam base, P uses v_t, i.e. the second moment *including* this step's gradient, as [A3] does; it is
    recomputed here rather than stored so that the update kernel stays the same for both learning-rate rules.
    Half-precision inputs are summed in float32, per-tensor sums are combined in float64.
    """
    total = torch.zeros(2, dtype=torch.float64, device=gs[0].device)
    for i in range(len(gs)):
        g = _acc(gs[i])
        if vs is None:
            gpg = (g * g).sum()
        else:
            denom = ((beta2 * _acc(vs[i]) + (1 - beta2) * g * g) / bc2).sqrt() + eps
            gpg = (g * g / denom).sum()
        gu = (g * _acc(us[i])).sum() if us is not None else torch.zeros((), dtype=g.dtype, device=g.device)
        total = total + torch.stack([gpg.to(torch.float64), gu.to(torch.float64)])
    return total


def foreach_polyak_sums(gs: Tensors, us: Tensors | None, vs: Tensors | None,
                        beta2: float, bc2: float, eps: float) -> torch.Tensor:
    """`polyak_sums` for the eager default: BLAS dots (no temporaries) for the SGD base; for the Adam base,
    ‖g‖²_P by multi-tensor ops over all tensors at once (a handful of dispatches instead of several per tensor;
    it allocates two temporaries the size of the gradients)."""
    flat = [_acc(g).reshape(-1) for g in gs]
    if vs is None:
        gpg = sum(torch.dot(g, g).to(torch.float64) for g in flat)
    else:
        denom = torch._foreach_mul([_acc(v).reshape(-1) for v in vs], beta2)     # v_t = β2 v + (1 − β2) g²
        torch._foreach_addcmul_(denom, flat, flat, 1 - beta2)
        torch._foreach_div_(denom, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, eps)
        ratio = torch._foreach_mul(flat, flat)
        torch._foreach_div_(ratio, denom)
        gpg = torch.stack(torch._foreach_norm(ratio, 1)).to(torch.float64).sum()   # entries ≥ 0: L1 norm = sum
    gu = 0.0 if us is None else sum(torch.dot(g, _acc(u).reshape(-1)).to(torch.float64) for g, u in zip(flat, us))
    device = gs[0].device
    return torch.stack([torch.as_tensor(gpg, dtype=torch.float64, device=device),
                        torch.as_tensor(gu, dtype=torch.float64, device=device)])
