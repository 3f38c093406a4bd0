"""Testbeds where theory is exact: least squares, logistic regression, a smooth nonconvex objective, and two convex
Lipschitz non-smooth ones (least absolute deviations, hinge loss) whose optimum is a linear program.

Data are generated from the seed (Gaussian features), everything is float64, and the optimum is computed by a direct
solver before training, so runs log exact quantities:

- `task=quadratic`: f(w) = 1/(2n) ‖A w − b‖², b = A w♯ + σ ε. x* from least squares (`torch.linalg.lstsq`), f* = f(x*);
  with σ = 0 and n ≤ d the problem interpolates (f* = 0). Convex and smooth.
- `task=logreg`: f(w) = 1/n Σ log(1 + exp(−y_i a_iᵀ w)) + λ/2 ‖w‖², labels from a planted w♯ with a fraction
  flipped. x* by Newton's method to machine precision (λ > 0 makes it unique). Convex and Lipschitz on bounded sets.
- `task=nonconvex`: logistic loss plus the nonconvex regulariser λ Σ_j w_j² / (1 + w_j²) — smooth, bounded below by 0;
  no x*, so it logs ‖∇f‖² (at y each step through the trainer's grad norm in full-batch mode, at x in evaluation).
- `task=lad`: least absolute deviations f(w) = 1/n Σ |a_iᵀw − b_i|, b = A w♯ + σ ε; `task=hinge`: the hinge loss
  f(w) = 1/n Σ max(0, 1 − y_i a_iᵀw) + λ‖w‖₁, labels from a planted w♯ with a fraction flipped. Convex, G-Lipschitz
  and non-smooth — exactly [C1]'s assumptions (docs/theory.md C: the setting where its indexing matters). f* and x*
  from `scipy.optimize.linprog` (HiGHS); G known in closed form (`summary()["G"]`).

Each logs, at evaluation (parameters at x for SF optimizers): `eval/loss` = f(x), `eval/subopt` = f(x) − f* and
`eval/dist_sq` = ‖x − x*‖² (convex ones), `eval/grad_norm_sq` = ‖∇f(x)‖². `summary()` records f*, D = ‖w₀ − x*‖ and
the smoothness constant L, which the theory module uses. Full batch (`batch_size: null`) or minibatches sampled from
(seed, step). The lower bound ℓ* handed to SF-Polyak is f* in full-batch mode and 0 (the losses are ≥ 0) otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .base import ConfigError, Task, check_choice, check_number, check_positive_int

F64 = torch.float64


class _Linear(torch.nn.Module):
    """w ∈ R^d as a module, so the trainer and the optimizers see one ordinary parameter."""

    def __init__(self, w0: torch.Tensor):
        super().__init__()
        self.w = torch.nn.Parameter(w0.clone())


class _Testbed(Task):
    kind = "testbed"
    #: whether the objective is convex (the online bounds can then be theorems; docs/theory.md)
    convex = True

    def __init__(self, n: int, d: int, batch_size: int | None, seed: int = 0, init: str = "zeros",
                 init_scale: float = 1.0):
        self.n = check_positive_int("task.n", n)
        self.d = check_positive_int("task.d", d)
        self.batch_size = None if batch_size is None else check_positive_int("task.batch_size", batch_size)
        if self.batch_size is not None and self.batch_size > self.n:
            raise ConfigError(f"task.batch_size={batch_size} is not allowed; it can't exceed task.n={n} "
                              "(null: full batch)")
        self.seed = check_positive_int("task.seed", seed, 0)
        self.init = check_choice("task.init", init, ("zeros", "normal"))
        self.init_scale = float(check_number("task.init_scale", init_scale, 0, hi_open=True))
        self.device = None

    # -- data and the optimum ----------------------------------------------------------------------------------------
    def eval_cost(self) -> float:
        """One forward pass: a third of a step (a model this small costs its calls, not its rows)."""
        return 1 / 3

    def setup(self, device: torch.device) -> None:
        if self.device == device:
            return
        self.device = device
        g = torch.Generator().manual_seed(self.seed)
        self.A = torch.randn(self.n, self.d, generator=g, dtype=F64) / math.sqrt(self.d)
        self._make_targets(g)
        w0 = torch.zeros(self.d, dtype=F64)
        if self.init == "normal":
            w0 = torch.randn(self.d, generator=g, dtype=F64) * self.init_scale
        self.w0 = w0
        self.x_star, self.f_star = self._solve()
        self.A, self.targets = self.A.to(device), self.targets.to(device)
        self.w0 = self.w0.to(device)
        if self.x_star is not None:
            self.x_star = self.x_star.to(device)

    def _make_targets(self, g: torch.Generator) -> None:
        raise NotImplementedError

    def _solve(self) -> tuple[torch.Tensor | None, float | None]:
        raise NotImplementedError

    def objective(self, w: torch.Tensor, idx: torch.Tensor | None = None) -> torch.Tensor:
        """f(w) on all data (idx None) or the rows idx."""
        raise NotImplementedError

    def model(self) -> torch.nn.Module:
        return _Linear(self.w0)

    def batch(self, step: int):
        if self.batch_size is None:
            return None
        g = torch.Generator().manual_seed((self.seed << 32) + step)
        return torch.randint(0, self.n, (self.batch_size,), generator=g).to(self.device)

    def loss(self, model, batch):
        loss = self.objective(model.w, batch)
        if batch is None and self.f_star is not None:
            return loss, self.f_star
        return loss, 0.0

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        w = model.w.detach()
        with torch.enable_grad():
            v = w.clone().requires_grad_(True)
            f = self.objective(v)
            (grad,) = torch.autograd.grad(f, v)
        out = {"eval/loss": f.item(), "eval/grad_norm_sq": float(grad @ grad)}
        if self.f_star is not None:
            out["eval/subopt"] = f.item() - self.f_star
        if self.x_star is not None:
            out["eval/dist_sq"] = float((w - self.x_star) @ (w - self.x_star))
        return out

    def gradient_bound(self, model) -> float:
        """A bound on ‖g‖ for the gradient the next step takes at the current w (what the online bound needs for the
        gradient it has not seen, docs/theory.md): full batch, the norm of ∇f(w) itself (the next step's gradient,
        computed here once more — an O(nd) product on these sizes); minibatches, the largest per-sample gradient
        norm, which bounds the norm of any average of them."""
        w = model.w.detach()
        if self.batch_size is None:
            with torch.enable_grad():
                v = w.clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.objective(v), v)
            return float(torch.linalg.vector_norm(grad))
        return float(self._per_sample_grad_norms(w).max())

    def _per_sample_grad_norms(self, w: torch.Tensor) -> torch.Tensor:
        """Upper bounds on ‖∇ f_i(w)‖ for each sample i (f = mean of the f_i)."""
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        out = {"n": self.n, "d": self.d, "batch_size": self.batch_size, "L": self.smoothness(),
               "convex": self.convex, "stochastic": self.batch_size is not None}
        if self.f_star is not None:
            out["f_star"] = self.f_star
        if self.x_star is not None:
            out["D"] = float(torch.linalg.vector_norm(self.w0 - self.x_star))
        return out

    def smoothness(self) -> float:
        raise NotImplementedError


def _planted_linear_targets(task, g) -> None:
    """b = A w♯ + σ ε with w♯ and ε standard normal (`task.noise` = σ): the regression testbeds' targets."""
    task.w_planted = torch.randn(task.d, generator=g, dtype=F64)
    task.targets = task.A @ task.w_planted + task.noise * torch.randn(task.n, generator=g, dtype=F64)


class QuadraticTask(_Testbed):
    """Least squares f(w) = 1/(2n)‖Aw − b‖², b = A w♯ + σ ε (`noise` = σ; 0 with n ≤ d interpolates)."""

    name = "quadratic"

    def __init__(self, n: int = 200, d: int = 50, noise: float = 0.0, batch_size: int | None = None, seed: int = 0,
                 init: str = "zeros", init_scale: float = 1.0):
        super().__init__(n, d, batch_size, seed, init, init_scale)
        self.noise = float(check_number("task.noise", noise, 0, hi_open=True))

    def _make_targets(self, g):
        _planted_linear_targets(self, g)

    def _solve(self):
        """The minimiser gradient methods reach from w₀: the minimum-norm solution plus w₀'s component in the null
        space of A (for n < d the minimisers form an affine set and (stochastic) gradient steps never leave
        w₀ + row space of A)."""
        lstsq = lambda rhs: torch.linalg.lstsq(self.A, rhs.unsqueeze(1), driver="gelsd").solution.squeeze(1)  # noqa
        x = lstsq(self.targets) + self.w0 - lstsq(self.A @ self.w0)
        return x, float(self.objective(x))

    def objective(self, w, idx=None):
        A, b = (self.A, self.targets) if idx is None else (self.A[idx], self.targets[idx])
        return 0.5 * ((A @ w - b) ** 2).mean()

    def smoothness(self):
        return float(torch.linalg.matrix_norm(self.A.cpu(), ord=2) ** 2 / self.n)

    def _per_sample_grad_norms(self, w):
        return torch.linalg.vector_norm(self.A, dim=1) * (self.A @ w - self.targets).abs()     # ‖a_i‖ |a_iᵀw − b_i|


class LogRegTask(_Testbed):
    """ℓ2-regularised logistic regression; labels from a planted w♯ with `label_noise` of them flipped."""

    name = "logreg"

    def __init__(self, n: int = 500, d: int = 20, reg: float = 1e-3, label_noise: float = 0.1,
                 batch_size: int | None = None, seed: int = 0, init: str = "zeros", init_scale: float = 1.0):
        super().__init__(n, d, batch_size, seed, init, init_scale)
        self.reg = float(check_number("task.reg", reg, 0, lo_open=True, hi_open=True))
        self.label_noise = float(check_number("task.label_noise", label_noise, 0, 0.5))

    def _make_targets(self, g):
        self.w_planted = torch.randn(self.d, generator=g, dtype=F64) * 3
        y = torch.sign(self.A @ self.w_planted)
        y[y == 0] = 1
        flip = torch.rand(self.n, generator=g, dtype=F64) < self.label_noise
        self.targets = torch.where(flip, -y, y)

    def objective(self, w, idx=None):
        A, y = (self.A, self.targets) if idx is None else (self.A[idx], self.targets[idx])
        return F.softplus(-y * (A @ w)).mean() + 0.5 * self.reg * (w @ w)

    def _solve(self):
        """Newton's method with backtracking, to a gradient norm of 1e-13 (d is small)."""
        w = torch.zeros(self.d, dtype=F64)
        A, y = self.A, self.targets
        for _ in range(100):
            margins = y * (A @ w)
            s = torch.sigmoid(-margins)
            grad = -(A.T @ (y * s)) / self.n + self.reg * w
            if float(grad @ grad) < 1e-26:
                break
            hess = (A.T * (s * (1 - s))) @ A / self.n + self.reg * torch.eye(self.d, dtype=F64)
            step = torch.linalg.solve(hess, grad)
            t, f0 = 1.0, float(self.objective(w))
            while float(self.objective(w - t * step)) > f0 - 0.25 * t * float(grad @ step) and t > 1e-12:
                t /= 2
            w = w - t * step
        return w, float(self.objective(w))

    def smoothness(self):
        return float(torch.linalg.matrix_norm(self.A.cpu(), ord=2) ** 2 / (4 * self.n) + self.reg)

    def _per_sample_grad_norms(self, w):
        # ∇f_i = −y_i a_i σ(−y_i a_iᵀw) + λ w
        margins = self.targets * (self.A @ w)
        return torch.linalg.vector_norm(self.A, dim=1) * torch.sigmoid(-margins) + self.reg * torch.linalg.vector_norm(w)


class NonconvexTask(LogRegTask):
    """Logistic loss + λ Σ w_j²/(1 + w_j²): smooth, nonconvex, bounded below by 0. No x*: logs ‖∇f‖²."""

    name = "nonconvex"
    convex = False

    def objective(self, w, idx=None):
        A, y = (self.A, self.targets) if idx is None else (self.A[idx], self.targets[idx])
        return F.softplus(-y * (A @ w)).mean() + self.reg * (w ** 2 / (1 + w ** 2)).sum()

    def _solve(self):
        return None, None

    def smoothness(self):
        return float(torch.linalg.matrix_norm(self.A.cpu(), ord=2) ** 2 / (4 * self.n) + 2 * self.reg)


class _LPTestbed(_Testbed):
    """Convex, Lipschitz, piecewise-linear objectives: the optimum is a linear program.

    x* is the LP's solution and f* = f(x*) evaluated in float64 (not the LP's objective value): f(x*) ≥ min f always,
    so a solver tolerance can only make the logged f(x) − f* smaller, never overstate it, and D = ‖w₀ − x*‖ goes with
    the same x* — the online-to-batch theorem holds for any comparator point (docs/theory.md), so the bound on
    f(x) − f(x*) is exact for it even if x* were off in the last digits.
    """

    def _lp(self) -> tuple:
        """(c, A_ub, b_ub, bounds) of the LP in the variables (w, auxiliaries); w comes first."""
        raise NotImplementedError

    def _solve(self):
        import numpy as np
        from scipy.optimize import linprog

        c, A_ub, b_ub, bounds = self._lp()
        res = linprog(c, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs",
                      options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
        if res.status != 0:
            raise RuntimeError(f"{self.name}: linprog failed ({res.message}); try another task.seed")
        x = torch.as_tensor(np.asarray(res.x[: self.d]), dtype=F64)
        return x, float(self.objective(x))

    def smoothness(self):
        return None             # not smooth: [C1]'s Lipschitz setting, no L

    def lipschitz(self) -> float:
        """G: a bound on ‖g‖ for every (sub)gradient a step can take — full batch: min(mean_i ‖a_i‖, ‖A‖₂/√n), since
        ‖Aᵀs‖/n ≤ both for |s_i| ≤ 1; minibatches: max_i ‖a_i‖ (any average of per-sample subgradients)."""
        rows = torch.linalg.vector_norm(self.A, dim=1)
        if self.batch_size is None:
            return float(min(rows.mean(), torch.linalg.matrix_norm(self.A.cpu(), ord=2) / math.sqrt(self.n)))
        return float(rows.max())

    def summary(self):
        return {**super().summary(), "G": self.lipschitz()}


class LADTask(_LPTestbed):
    """Least absolute deviations f(w) = 1/n Σ |a_iᵀw − b_i|, b = A w♯ + σ ε (`noise` = σ)."""

    name = "lad"

    def __init__(self, n: int = 500, d: int = 20, noise: float = 0.5, batch_size: int | None = None, seed: int = 0,
                 init: str = "zeros", init_scale: float = 1.0):
        super().__init__(n, d, batch_size, seed, init, init_scale)
        self.noise = float(check_number("task.noise", noise, 0, hi_open=True))

    def _make_targets(self, g):
        _planted_linear_targets(self, g)

    def objective(self, w, idx=None):
        A, b = (self.A, self.targets) if idx is None else (self.A[idx], self.targets[idx])
        return (A @ w - b).abs().mean()

    def _lp(self):
        """min 1/n Σ t_i  s.t.  −t ≤ A w − b ≤ t, in (w, t)."""
        import numpy as np

        A, b, n = self.A.numpy(), self.targets.numpy(), self.n
        eye = np.eye(n)
        A_ub = np.block([[A, -eye], [-A, -eye]])
        return (np.r_[np.zeros(self.d), np.full(n, 1.0 / n)], A_ub, np.r_[b, -b],
                [(None, None)] * self.d + [(0, None)] * n)

    def _per_sample_grad_norms(self, w):
        return torch.linalg.vector_norm(self.A, dim=1)         # ∂|r_i| · a_i has norm ≤ ‖a_i‖


class HingeTask(_LPTestbed):
    """Hinge loss f(w) = 1/n Σ max(0, 1 − y_i a_iᵀw) + λ‖w‖₁ (`reg` = λ); labels from a planted w♯, `label_noise` of
    them flipped (so the data are not separable and the minimum is attained)."""

    name = "hinge"

    def __init__(self, n: int = 500, d: int = 20, reg: float = 1e-3, label_noise: float = 0.1,
                 batch_size: int | None = None, seed: int = 0, init: str = "zeros", init_scale: float = 1.0):
        super().__init__(n, d, batch_size, seed, init, init_scale)
        self.reg = float(check_number("task.reg", reg, 0, hi_open=True))
        self.label_noise = float(check_number("task.label_noise", label_noise, 0, 0.5))

    _make_targets = LogRegTask._make_targets

    def objective(self, w, idx=None):
        A, y = (self.A, self.targets) if idx is None else (self.A[idx], self.targets[idx])
        return torch.relu(1 - y * (A @ w)).mean() + self.reg * w.abs().sum()

    def _lp(self):
        """min 1/n Σ ξ_i + λ Σ s_j  s.t.  ξ_i ≥ 1 − y_i a_iᵀw, ξ ≥ 0, −s ≤ w ≤ s, in (w, ξ, s)."""
        import numpy as np

        A, y, n, d = self.A.numpy(), self.targets.numpy(), self.n, self.d
        YA = y[:, None] * A
        A_ub = np.block([[-YA, -np.eye(n), np.zeros((n, d))],
                         [np.eye(d), np.zeros((d, n)), -np.eye(d)],
                         [-np.eye(d), np.zeros((d, n)), -np.eye(d)]])
        b_ub = np.r_[-np.ones(n), np.zeros(2 * d)]
        c = np.r_[np.zeros(d), np.full(n, 1.0 / n), np.full(d, self.reg)]
        return c, A_ub, b_ub, [(None, None)] * d + [(0, None)] * (n + d)

    def lipschitz(self):
        return super().lipschitz() + self.reg * math.sqrt(self.d)     # + ‖λ sign(w)‖ ≤ λ √d

    def _per_sample_grad_norms(self, w):
        return torch.linalg.vector_norm(self.A, dim=1) + self.reg * math.sqrt(self.d)
