"""Testbeds where theory is exact: least squares, logistic regression, and a smooth nonconvex objective.

Data are generated from the seed (Gaussian features), everything is float64, and the optimum is computed by a direct
solver before training, so runs log exact quantities:

- `task=quadratic`: f(w) = 1/(2n) ‖A w − b‖², b = A w♯ + σ ε. x* from least squares (`torch.linalg.lstsq`), f* = f(x*);
  with σ = 0 and n ≤ d the problem interpolates (f* = 0). Convex and smooth.
- `task=logreg`: f(w) = 1/n Σ log(1 + exp(−y_i a_iᵀ w)) + λ/2 ‖w‖², labels from a planted w♯ with a fraction
  flipped. x* by Newton's method to machine precision (λ > 0 makes it unique). Convex and Lipschitz on bounded sets.
- `task=nonconvex`: logistic loss plus the nonconvex regulariser λ Σ_j w_j² / (1 + w_j²) — smooth, bounded below by 0;
  no x*, so it logs ‖∇f‖² (at y each step through the trainer's grad norm in full-batch mode, at x in evaluation).

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

    def summary(self) -> dict[str, Any]:
        out = {"n": self.n, "d": self.d, "batch_size": self.batch_size, "L": self.smoothness()}
        if self.f_star is not None:
            out["f_star"] = self.f_star
        if self.x_star is not None:
            out["D"] = float(torch.linalg.vector_norm(self.w0 - self.x_star))
        return out

    def smoothness(self) -> float:
        raise NotImplementedError


class QuadraticTask(_Testbed):
    """Least squares f(w) = 1/(2n)‖Aw − b‖², b = A w♯ + σ ε (`noise` = σ; 0 with n ≤ d interpolates)."""

    name = "quadratic"

    def __init__(self, n: int = 200, d: int = 50, noise: float = 0.0, batch_size: int | None = None, seed: int = 0,
                 init: str = "zeros", init_scale: float = 1.0):
        super().__init__(n, d, batch_size, seed, init, init_scale)
        self.noise = float(check_number("task.noise", noise, 0, hi_open=True))

    def _make_targets(self, g):
        self.w_planted = torch.randn(self.d, generator=g, dtype=F64)
        self.targets = self.A @ self.w_planted + self.noise * torch.randn(self.n, generator=g, dtype=F64)

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


class NonconvexTask(LogRegTask):
    """Logistic loss + λ Σ w_j²/(1 + w_j²): smooth, nonconvex, bounded below by 0. No x*: logs ‖∇f‖²."""

    name = "nonconvex"

    def objective(self, w, idx=None):
        A, y = (self.A, self.targets) if idx is None else (self.A[idx], self.targets[idx])
        return F.softplus(-y * (A @ w)).mean() + self.reg * (w ** 2 / (1 + w ** 2)).sum()

    def _solve(self):
        return None, None

    def smoothness(self):
        return float(torch.linalg.matrix_norm(self.A.cpu(), ord=2) ** 2 / (4 * self.n) + 2 * self.reg)
