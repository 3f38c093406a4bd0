"""Schedule-Free AdamW, and SF-Polyak with the Adam base (ALGORITHMS.md [A1]–[A5] with P_t = D_t⁻¹; [B1])."""

from __future__ import annotations

from .base import ScheduleFreeBase, check_range


class SFAdamW(ScheduleFreeBase):
    r"""Schedule-Free AdamW (Defazio et al. 2024; ALGORITHMS.md section A with the Adam base).

        y_t     = (1 − β1) z_t + β1 x_t                          [A1]
        v_t     = β2 v_{t−1} + (1 − β2) g_t²,  D_t = sqrt(v_t / (1 − β2^{t+1})) + ε
        z_{t+1} = z_t − γ_t (g_t / D_t + λ y_t)                   [A3], decoupled weight decay at y
        x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}            [A4], [A5]

    Arguments mirror `schedulefree.AdamWScheduleFree` (positional order and meaning included):
    `SFAdamW(params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, warmup_steps=0, r=0.0,
    weight_lr_power=2.0, foreach=None)` is a drop-in replacement: with the default `weighting="lr_power"` it takes the
    same steps, keeps the same state (`z`, `exp_avg_sq`), loads the reference's state dicts, and accepts a tensor lr.
    `betas[0]` is the interpolation β of [A1]. The keyword-only arguments (`weighting`, `alpha`, `lr_rule`,
    `polyak_floor`, `fused`, `c`) and `warmup_steps` are those of `SFSGD`; with `lr_rule="polyak"` the norm in [B1] is
    ‖g‖²_P = Σ g² / D_t, and the eager step leaves P_t g_t in `p.grad` (its first pass preconditions the gradient in place,
    as the reference's AdamW always does).
    """

    _adam = True

    def __init__(self, params, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0,
                 foreach: bool | None = None, *, weighting: str | None = None, alpha: float = 0.5,
                 lr_rule: str = "schedule", polyak_floor: float = 1e-12, fused: bool | None = None,
                 c: float = 0.1):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, r=r,
                        weight_lr_power=weight_lr_power, weighting=weighting, alpha=alpha, lr_rule=lr_rule,
                        polyak_floor=polyak_floor, c=c, warmup_steps=warmup_steps, scheduled_lr=0.0)
        super().__init__(params, defaults, foreach=foreach, fused=fused)

    _beta_name = "betas[0]"

    def _beta(self, group: dict) -> float:
        return group["betas"][0]

    def _validate_group(self, group: dict) -> None:
        super()._validate_group(group)
        betas = group["betas"]
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas={betas!r} is not allowed; give two numbers (beta1 in [0, 1], beta2 in [0, 1))")
        check_range("betas[0]", betas[0], 0.0, 1.0)
        check_range("betas[1]", betas[1], 0.0, 1.0, hi_open=True)
        check_range("eps", group["eps"], 0.0, float("inf"), hi_open=True)
