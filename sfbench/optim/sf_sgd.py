"""Schedule-Free SGD, and SF-Polyak with the SGD base (ALGORITHMS.md [A1]–[A5] with P_t = I; [B1])."""

from __future__ import annotations

from .base import ScheduleFreeBase, check_range


class SFSGD(ScheduleFreeBase):
    r"""Schedule-Free SGD (Defazio et al. 2024, "The Road Less Scheduled"; ALGORITHMS.md section A).

    Three sequences, with y kept in the parameters during training and x shown by `eval()`:

        y_t     = (1 − β) z_t + β x_t                       [A1]
        z_{t+1} = z_t − γ_t (∇f(y_t) + λ y_t)               [A2], [A3] with P_t = I, decoupled weight decay at y
        x_{t+1} = (1 − c_{t+1}) x_t + c_{t+1} z_{t+1}       [A4], c_{t+1} from `weighting` [A5]

    Arguments mirror `schedulefree.SGDScheduleFree` (positional order and meaning included), so it is a drop-in
    replacement: the same steps (default `weighting`), the same state (`z`), the reference's state dicts load, a tensor
    lr works, and sparse gradients are accepted with `lr_rule="schedule"` (the eager per-tensor path takes them).
    Differences: `momentum` may be 0 or 1 (the reference needs 0 < β < 1), and the optimizer starts in training
    mode — `step()` before the first `train()` is allowed (x = y = z then, so the mode makes no difference); a step in
    eval mode raises, as in the reference.

    Args:
        params: parameters or parameter groups.
        lr: γ, the step size; the group's current `lr` is used at each step, so any `torch.optim.lr_scheduler`
            drives it. With `lr_rule="polyak"` it is the cap γ_max of [B1].
        momentum: β ∈ [0, 1], the interpolation of [A1]. β = 1 is heavy-ball momentum (SFN Thms 1–2), β = 0 plain
            SGD iterates with x their weighted average (Polyak–Ruppert).
        weight_decay: λ ≥ 0, decoupled, applied at y.
        warmup_steps: W ≥ 0, the reference package's linear warm-up: step t uses lr · min(1, (t + 1)/W) (the
            weights of `lr_power` see the warmed-up step, as in the reference). It multiplies whatever a
            `torch.optim.lr_scheduler` sets, so use it *or* a schedule with warm-up (`make_schedule(...,
            warmup_steps=W)`, the same factor), not both.
        r, weight_lr_power: the `lr_power` weighting w_t = (t+1)^r (max_{i≤t} γ_i)^p [A5].
        weighting: `lr_power` (the reference's), `uniform` (w_t = 1), `lr` (w_t = γ_t in the storage-trick
            indexing: z_{t+1} weighted by the step that produced it), `schedulet` (z_{t+1} weighted by γ_{t+1}, the
            step taken *from* it, and z_0 kept: the weighting [C1]'s theorem is stated for, docs/theory.md; it reads
            γ_{t+1} from `Schedule.lr_scheduler`'s look-ahead), `poly` (c_{t+1} = (t+1)^(−alpha), SFN Thm 5),
            `constant` (c_{t+1} = c: x an exponential moving average of z, the IAM baselines). Default `lr_power`.
            With `lr_rule="polyak"` the weights use the scheduled cap γ_max,t, not the step taken.
        alpha: the exponent of `poly` weighting, in [0, 1] (1 is `uniform`, 0 gives x = z).
        c: the `constant` weighting's coefficient, in (0, 1] (default 0.1).
        lr_rule: `schedule` (γ_t = the group's lr) or `polyak` (SF-Polyak [B1]: pass `loss=` to `step`).
        polyak_floor: M of [B1], the floor on ‖g‖² against division by zero.
        foreach: use multi-tensor ops on the eager path (default: yes); `False` runs the same ops tensor by
            tensor, so the two paths give bitwise equal results (on the CPU).
        fused: run the step as one compiled kernel per tensor (torch.compile). None: when the model has
            ≥ 2^20 parameter elements and the device can compile.
    """

    def __init__(self, params, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, foreach: bool | None = None,
                 *, weighting: str | None = None, alpha: float = 0.5, lr_rule: str = "schedule",
                 polyak_floor: float = 1e-12, fused: bool | None = None, c: float = 0.1):
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, r=r, weight_lr_power=weight_lr_power,
                        weighting=weighting, alpha=alpha, lr_rule=lr_rule, polyak_floor=polyak_floor, c=c,
                        warmup_steps=warmup_steps, scheduled_lr=0.0)
        super().__init__(params, defaults, foreach=foreach, fused=fused)

    _beta_name = "momentum"

    def _beta(self, group: dict) -> float:
        return group["momentum"]

    def _validate_group(self, group: dict) -> None:
        super()._validate_group(group)
        check_range("momentum", group["momentum"], 0.0, 1.0)
