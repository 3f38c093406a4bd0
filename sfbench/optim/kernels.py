"""Per-step update kernels of the schedule-free family (ALGORITHMS.md [A1]–[A5], [B1]).

Storage. Training keeps `y` in the model's parameters (gradients are taken there, [A2]) and one buffer of optimizer
state per parameter. Which buffer depends on how the step size is chosen:

- `z` (the base iterate), for a scheduled step size (`lr_rule="schedule"`): the reference package's layout, so
  `optimizer.state[p]["z"]` means what it means in `schedulefree` and its checkpoints convert exactly. With
  `d = P g + λ y` (preconditioned gradient plus decoupled weight decay at y) and `c = c_{t+1}`, one step is the
  RLS storage trick
      y ← y + c (z − y) + γ (β (1 − c) − 1) d,        z ← z − γ d.
- `u = z − y`, for SF-Polyak (`lr_rule="polyak"`): its step size needs ⟨g, z − y⟩ [B1] before anything is written,
  and with u that reduction reads g and u (and v) instead of g, z and y: one pass over memory less per step. Then
      y ← y + c u − γ (1 − β (1 − c)) d,               u ← (1 − c) (u − γ β d).
  The optimizer converts between the two (z = y + u) when the rule of a group changes.
- `x` (the average itself) for β = 0, where y = z and x can't be recovered from them:
      y ← y − γ d,                                     x ← x + c (y − x).

In every layout the averaged point is recoverable from the training state: `x = y + (1 − 1/β)(z − y)`.

Two kinds of kernels:

- **Eager** (`eager(name, foreach)`): each update is written once as a sequence of tensor operations over lists,
  run either with multi-tensor `torch._foreach_*` ops (`foreach=True`, the eager default) or with the same ops one
  tensor at a time (`foreach=False`). The two therefore round identically — bitwise equal results on the CPU, where
  PyTorch's multi-tensor ops loop over the same per-tensor kernels (on CUDA, PyTorch's fused multi-tensor kernels
  may round a division by a scalar differently from the single-tensor kernel; not checked, no GPU here). The op
  sequence of the `z` layout is the reference package's, so the eager paths also take the reference's steps.
- **Compiled** (`sf_*`, `polyak_*`): plain loops over the tensors of one device with out-of-place temporaries, which
  `torch.compile` (inductor) turns into one fused pass over memory per tensor: the fast path (`fused=True`).
  Scalar arguments are then 0-d float64 CPU tensors (a change of value doesn't recompile).

`vs is None` selects the SGD base (P = I); otherwise `vs` holds Adam's second moments and P = D⁻¹ with
D = sqrt(v / bc2) + eps ([A3]).

SF-Polyak takes two passes (its step size multiplies every update, so the reductions must finish first). For the
Adam base the first pass also finishes the preconditioning — it writes v_t and overwrites the gradient with P_t g_t
(as the reference package's AdamW does with its gradients) — so that the second pass is the SGD-base update with
g := P g and the square root and division are computed once per element, not twice.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

Tensors = list[torch.Tensor]


def _acc(t: torch.Tensor) -> torch.Tensor:
    """The tensor in a dtype fit for summing millions of squares: float16/bfloat16 would overflow or round badly."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


# -- compiled kernels (one fused loop per tensor under torch.compile) -------------------------------------------------


def _preconditioned(g: torch.Tensor, v: torch.Tensor, beta2, bc2, eps) -> torch.Tensor:
    """P_t g of the Adam base [A3], after v ← β2 v + (1 − β2) g² in place."""
    v.mul_(beta2).add_((1 - beta2) * g * g)
    return g / ((v / bc2).sqrt() + eps)


def _direction(y: torch.Tensor, g: torch.Tensor, v: torch.Tensor | None, wd, beta2, bc2, eps) -> torch.Tensor:
    """d = P_t g + λ y [A3] (P = I for the SGD base)."""
    return (g if v is None else _preconditioned(g, v, beta2, bc2, eps)) + wd * y


def sf_update_z(ys: Tensors, gs: Tensors, zs: Tensors, vs: Tensors | None, c, ay, lr, wd, beta2, bc2, eps) -> None:
    """One SF step in place, `z` layout: `ay = γ (β (1 − c) − 1)`, `lr = γ` (module docstring)."""
    for i in range(len(ys)):
        y, g, z = ys[i], gs[i], zs[i]
        d = _direction(y, g, None if vs is None else vs[i], wd, beta2, bc2, eps)
        y.add_(c * (z - y) + ay * d)
        z.sub_(lr * d)


def sf_update_z_gpg(ys: Tensors, gs: Tensors, zs: Tensors, vs: Tensors, c, ay, lr, wd, beta2, bc2,
                    eps) -> torch.Tensor:
    """`sf_update_z` (Adam base) that also returns ‖g‖²_{P_t} = Σ g²/D_t (float64), summed in the same pass over g
    and D_t that the update makes anyway — what [C1] needs per step, for a multiply and a sum per tensor."""
    total = torch.zeros((), dtype=torch.float64, device=gs[0].device)
    for i in range(len(ys)):
        y, g, z = ys[i], gs[i], zs[i]
        pg = _preconditioned(g, vs[i], beta2, bc2, eps)
        total = total + (_acc(g) * _acc(pg)).sum().to(torch.float64)
        d = pg + wd * y
        y.add_(c * (z - y) + ay * d)
        z.sub_(lr * d)
    return total


def sf_update(ys: Tensors, gs: Tensors, us: Tensors, vs: Tensors | None, c, ay, au, wd, beta2, bc2, eps) -> None:
    """One SF step in place, `u` layout: `ay = −γ (1 − β (1 − c))`, `au = −γ β (1 − c)` (module docstring)."""
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


def sf_update_beta0_gpg(ys: Tensors, gs: Tensors, xs: Tensors, vs: Tensors, c, lr, wd, beta2, bc2,
                        eps) -> torch.Tensor:
    """`sf_update_beta0` (Adam base) that also returns ‖g‖²_{P_t}, as `sf_update_z_gpg`."""
    total = torch.zeros((), dtype=torch.float64, device=gs[0].device)
    for i in range(len(ys)):
        y, g, x = ys[i], gs[i], xs[i]
        pg = _preconditioned(g, vs[i], beta2, bc2, eps)
        total = total + (_acc(g) * _acc(pg)).sum().to(torch.float64)
        y.sub_(lr * (pg + wd * y))
        x.add_(c * (y - x))
    return total


def polyak_sums(gs: Tensors, us: Tensors | None, vs: Tensors | None, beta2, bc2, eps) -> torch.Tensor:
    """SF-Polyak's first pass [B1]: returns `[‖g‖²_P, ⟨g, z − y⟩]` (float64).

    For the Adam base it also writes v_t = β2 v + (1 − β2) g² (P uses v_t, the second moment *including* this step's
    gradient, as [A3] does) and replaces g by P_t g in place: the update pass then needs no square root or division.
    Half-precision inputs are summed in float32, per-tensor sums are combined in float64.
    """
    total = torch.zeros(2, dtype=torch.float64, device=gs[0].device)
    for i in range(len(gs)):
        g = gs[i]
        ga = _acc(g)
        gu = (ga * _acc(us[i])).sum() if us is not None else torch.zeros((), dtype=ga.dtype, device=g.device)
        if vs is None:
            gpg = (ga * ga).sum()
        else:
            pg = _preconditioned(g, vs[i], beta2, bc2, eps)
            gpg = (ga * _acc(pg)).sum()
            g.copy_(pg)
        total = total + torch.stack([gpg.to(torch.float64), gu.to(torch.float64)])
    return total


def polyak_sums_read(gs: Tensors, us: Tensors | None, vs: Tensors | None, beta2, bc2, eps) -> torch.Tensor:
    """`polyak_sums` without writing anything, for the compiled path: v_t and P_t are recomputed here and again by the
    Adam update kernel. Compiled, this read-only pass is ~2.5× faster than `polyak_sums` with its two in-place writes
    (inductor's CPU code for mutated inputs; docs/benchmarks.md), which more than pays for the second square root."""
    total = torch.zeros(2, dtype=torch.float64, device=gs[0].device)
    for i in range(len(gs)):
        g = _acc(gs[i])
        if vs is None:
            gpg = (g * g).sum()
        else:
            gpg = (g * g / _preconditioner_denominator(g, vs[i], beta2, bc2, eps)).sum()
        gu = (g * _acc(us[i])).sum() if us is not None else torch.zeros((), dtype=g.dtype, device=g.device)
        total = total + torch.stack([gpg.to(torch.float64), gu.to(torch.float64)])
    return total


def _preconditioner_denominator(g: torch.Tensor, v: torch.Tensor, beta2, bc2, eps) -> torch.Tensor:
    """D_t = sqrt((β2 v + (1 − β2) g²) / bc2) + eps [A3], with v_t including this step's gradient (not written)."""
    return ((beta2 * _acc(v) + (1 - beta2) * g * g) / bc2).sqrt() + eps


# -- ScheduleFree(base) in one pass, for the bases whose update is written out here (optim/wrapper.py) ---------------


def _wrapped_x(y: torch.Tensor, z: torch.Tensor, ay, az, xc) -> tuple[torch.Tensor, torch.Tensor]:
    """The wrapper's decay at y (z ← z − az·y, y ← y − ay·y) and then x = y + (1 − 1/β)(z − y) [A1], in registers."""
    z1 = z - az * y
    y1 = y - ay * y
    return y1 + xc * (z1 - y1), z1


def wrapped_sgd(ys: Tensors, gs: Tensors, zs: Tensors, bufs: Tensors | None, nesterov: bool, ay, az, xc, yc, sign,
                wd, mb, gc, momentum, lr) -> None:
    """`ScheduleFree(torch.optim.SGD)` in one pass: x from y and z [A1], the base's SGD step of z with the gradient
    taken at y [A3] (torch's op order: maximize `sign`, weight decay `wd` at z, momentum buffer
    `buf ← mb·buf + gc·g` — mb = 0, gc = 1 on the buffer's first step, as torch clones g there — and Nesterov's
    g + momentum·buf), then y' = x + yc (z' − x) with yc = 1 − β (1 − c) [A4]."""
    for i in range(len(ys)):
        y, g, z = ys[i], gs[i], zs[i]
        x, z1 = _wrapped_x(y, z, ay, az, xc)
        d = sign * g + wd * z1
        if bufs is not None:
            buf = mb * bufs[i] + gc * d
            d = d + momentum * buf if nesterov else buf
            bufs[i].copy_(buf)
        z2 = z1 - lr * d
        z.copy_(z2)
        y.copy_(x + yc * (z2 - x))


def wrapped_adam(ys: Tensors, gs: Tensors, zs: Tensors, ms: Tensors, vs: Tensors, step_sizes: torch.Tensor,
                 bc2_sqrts: torch.Tensor, ay, az, xc, yc, sign, wd, decay, beta1, beta2, eps) -> None:
    """`ScheduleFree(torch.optim.Adam / AdamW)` in one pass, as `wrapped_sgd` with torch's Adam step of z: coupled
    weight decay `wd` (Adam) or the decoupled `decay` = 1 − γ λ (AdamW), m ← lerp(m, g, 1 − β1), v ← β2 v + (1 − β2) g²,
    z ← z − (γ / bc1) m / (sqrt(v) / sqrt(bc2) + eps); `step_sizes[i]` = γ / bc1 and `bc2_sqrts[i]` = sqrt(bc2) of
    tensor i's own Adam step count (float64)."""
    for i in range(len(ys)):
        y, g, z, m, v = ys[i], gs[i], zs[i], ms[i], vs[i]
        x, z1 = _wrapped_x(y, z, ay, az, xc)
        g1 = sign * g + wd * z1
        m1 = m + (1 - beta1) * (g1 - m)
        v1 = beta2 * v + (1 - beta2) * g1 * g1
        z2 = decay * z1 - step_sizes[i] * m1 / (v1.sqrt() / bc2_sqrts[i] + eps)
        m.copy_(m1)
        v.copy_(v1)
        z.copy_(z2)
        y.copy_(x + yc * (z2 - x))


# -- eager kernels: one op sequence, run with multi-tensor ops or tensor by tensor ------------------------------------


class _ForeachOps:
    """The list operations of the eager kernels as PyTorch multi-tensor (`_foreach_*`) ops."""

    mul_ = staticmethod(torch._foreach_mul_)
    add_ = staticmethod(torch._foreach_add_)
    add = staticmethod(torch._foreach_add)
    mul = staticmethod(torch._foreach_mul)
    sub = staticmethod(torch._foreach_sub)
    sub_ = staticmethod(torch._foreach_sub_)
    addcmul_ = staticmethod(torch._foreach_addcmul_)
    div = staticmethod(torch._foreach_div)
    div_ = staticmethod(torch._foreach_div_)
    sqrt_ = staticmethod(torch._foreach_sqrt_)
    lerp_ = staticmethod(torch._foreach_lerp_)

    @staticmethod
    def norm1(xs: Tensors) -> Tensors:
        return list(torch._foreach_norm(xs, 1))


def _each(method: str, out_of_place: bool = False) -> Callable:
    """`method` applied tensor by tensor; the second argument is a list (zipped) or a scalar (shared)."""
    def op(xs: Tensors, *args, **kwargs):
        if args and isinstance(args[0], (list, tuple)):
            others = list(zip(*[a if isinstance(a, (list, tuple)) else [a] * len(xs) for a in args]))
            results = [getattr(x, method)(*other, **kwargs) for x, other in zip(xs, others)]
        else:
            results = [getattr(x, method)(*args, **kwargs) for x in xs]
        return results if out_of_place else None
    return op


class _LoopOps:
    """The same list operations, one tensor at a time with the single-tensor ops."""

    @staticmethod
    def mul_(xs: Tensors, scalar) -> None:
        # PyTorch's CPU multi-tensor multiply by a scalar rounds the scalar to a half-precision list's dtype first
        # (the single-tensor op keeps it in float32): do the same, so the two paths stay bitwise equal.
        for x in xs:
            s = float(torch.tensor(scalar, dtype=x.dtype)) if x.dtype in (torch.float16, torch.bfloat16) else scalar
            x.mul_(s)

    @staticmethod
    def add(xs: Tensors, others: Tensors, alpha=1) -> Tensors:
        # x + alpha·o; a sparse x (a sparse gradient plus weight decay) can't be the first operand of add
        return [x.add(o, alpha=alpha) if not x.is_sparse else (o * alpha).add_(x) for x, o in zip(xs, others)]

    add_ = staticmethod(_each("add_"))
    mul = staticmethod(_each("mul", out_of_place=True))
    sub = staticmethod(_each("sub", out_of_place=True))
    sub_ = staticmethod(_each("sub_"))
    addcmul_ = staticmethod(_each("addcmul_"))
    div = staticmethod(_each("div", out_of_place=True))
    div_ = staticmethod(_each("div_"))
    sqrt_ = staticmethod(_each("sqrt_"))
    lerp_ = staticmethod(_each("lerp_"))

    @staticmethod
    def norm1(xs: Tensors) -> Tensors:
        return [torch.linalg.vector_norm(x, 1) for x in xs]


def _sum_f64(F, gs: Tensors, pgs: Tensors) -> torch.Tensor:
    """Σ g·(P g) over all tensors (float64); entries are ≥ 0, so the L1 norm of the products is their sum."""
    prods = [a * b for a, b in zip(map(_acc, gs), map(_acc, pgs))]
    return torch.stack(F.norm1(prods)).to(torch.float64).sum()


def _eager_denominator(F, gs: Tensors, vs: Tensors, beta2, bc2, eps) -> Tensors:
    """D_t = sqrt(v_t / bc2) + eps [A3], after v ← β2 v + (1 − β2) g² in place (the reference package's op order)."""
    F.mul_(vs, beta2)
    F.addcmul_(vs, gs, gs, value=1 - beta2)
    denom = F.div(vs, bc2)
    F.sqrt_(denom)
    F.add_(denom, eps)
    return denom


def _eager_direction(F, ys: Tensors, gs: Tensors, vs: Tensors | None, wd, beta2, bc2, eps,
                     gpg: list | None = None) -> Tensors:
    """d = P g + λ y for all tensors (the reference package's op order). With `gpg` (a list, Adam base), appends
    ‖g‖²_P = Σ g·(P g) as a float64 tensor, from P g before weight decay."""
    if vs is None:
        return F.add(gs, ys, alpha=wd) if wd else list(gs)
    d = F.div(gs, _eager_denominator(F, gs, vs, beta2, bc2, eps))
    if gpg is not None:
        gpg.append(_sum_f64(F, gs, d))
    if wd:
        F.add_(d, ys, alpha=wd)
    return d


def _eager_update_z(F, ys, gs, zs, vs, c, ay, lr, wd, beta2, bc2, eps, gpg=None) -> None:
    d = _eager_direction(F, ys, gs, vs, wd, beta2, bc2, eps, gpg)
    F.lerp_(ys, zs, c)
    F.add_(ys, d, alpha=ay)
    F.sub_(zs, d, alpha=lr)


def _eager_update_u(F, ys, gs, us, vs, c, ay, au, wd, beta2, bc2, eps, gpg=None) -> None:
    d = _eager_direction(F, ys, gs, vs, wd, beta2, bc2, eps, gpg)
    F.add_(ys, us, alpha=c)
    F.add_(ys, d, alpha=ay)
    F.mul_(us, 1 - c)
    F.add_(us, d, alpha=au)


def _eager_update_beta0(F, ys, gs, xs, vs, c, lr, wd, beta2, bc2, eps, gpg=None) -> None:
    d = _eager_direction(F, ys, gs, vs, wd, beta2, bc2, eps, gpg)
    F.add_(ys, d, alpha=-lr)
    F.add_(xs, F.sub(ys, xs), alpha=c)


def _with_gpg(update: Callable) -> Callable:
    """The eager twin of a `*_gpg` kernel: the same update (same rounding as without it) plus ‖g‖²_P."""
    def run(F, *args) -> torch.Tensor:
        gpg: list = []
        update(F, *args, gpg)
        return gpg[0]
    return run


def _eager_polyak_sums(F, gs: Tensors, us: Tensors | None, vs: Tensors | None, beta2, bc2, eps) -> torch.Tensor:
    """`polyak_sums` eagerly: BLAS dots for ‖g‖² and ⟨g, u⟩; for the Adam base ‖g‖²_P by list ops over all tensors,
    then g ← P g in place (as `polyak_sums`)."""
    flat = [_acc(g).reshape(-1) for g in gs]
    gu = 0.0 if us is None else sum(torch.dot(g, _acc(u).reshape(-1)).to(torch.float64) for g, u in zip(flat, us))
    if vs is None:
        gpg = sum(torch.dot(g, g).to(torch.float64) for g in flat)
    else:
        denom = _eager_denominator(F, gs, vs, beta2, bc2, eps)
        ratio = F.mul(flat, flat)
        F.div_(ratio, [_acc(d).reshape(-1) for d in denom])
        gpg = torch.stack(F.norm1(ratio)).to(torch.float64).sum()      # entries ≥ 0: L1 norm = sum
        F.div_(gs, denom)
    device = gs[0].device
    return torch.stack([torch.as_tensor(gpg, dtype=torch.float64, device=device),
                        torch.as_tensor(gu, dtype=torch.float64, device=device)])


def _eager_polyak_sums_read(F, gs: Tensors, us: Tensors | None, vs: Tensors | None, beta2, bc2, eps) -> torch.Tensor:
    """`polyak_sums_read` eagerly (the compiled path's fallback): the same sums, nothing written."""
    flat = [_acc(g).reshape(-1) for g in gs]
    gu = 0.0 if us is None else sum(torch.dot(g, _acc(u).reshape(-1)).to(torch.float64) for g, u in zip(flat, us))
    if vs is None:
        gpg = sum(torch.dot(g, g).to(torch.float64) for g in flat)
    else:
        gpg = sum((g * g / _preconditioner_denominator(g, v.reshape(-1), beta2, bc2, eps)).sum().to(torch.float64)
                  for g, v in zip(flat, vs))
    device = gs[0].device
    return torch.stack([torch.as_tensor(gpg, dtype=torch.float64, device=device),
                        torch.as_tensor(gu, dtype=torch.float64, device=device)])


_EAGER = {
    "sf_update_z": _eager_update_z,
    "sf_update_z_gpg": _with_gpg(_eager_update_z),
    "sf_update": _eager_update_u,
    "sf_update_beta0": _eager_update_beta0,
    "sf_update_beta0_gpg": _with_gpg(_eager_update_beta0),
    "polyak_sums": _eager_polyak_sums,
    "polyak_sums_read": _eager_polyak_sums_read,
}


def eager(name: str, foreach: bool) -> Callable:
    """The eager twin of compiled kernel `name`, with multi-tensor ops (`foreach`) or tensor by tensor."""
    return functools.partial(_EAGER[name], _ForeachOps if foreach else _LoopOps)
