"""sfbench.optim — the schedule-free family, SF-Polyak and schedules (ALGORITHMS.md sections A and B).

Usable on its own (it depends on torch and numpy only)::

    from sfbench.optim import SFAdamW, make_schedule
    opt = SFAdamW(model.parameters(), lr=2e-3)
    sched = make_schedule("wsd", total_steps=T, warmup_steps=100).lr_scheduler(opt)
    opt.train(); ...; opt.step(); sched.step(); ...; opt.eval()   # evaluate / save at x

`ScheduleFree(base_optimizer)` makes any optimizer schedule-free. Baselines are PyTorch's own `torch.optim.SGD`
(momentum), `torch.optim.AdamW` and `torch.optim.Muon` (with AdamW for the rest: `MuonAdamW`), used as they are.
"""

from .base import FUSED_AUTO_MIN_NUMEL, LR_RULES, WEIGHTINGS, ScheduleFreeBase
from .schedules import COOLDOWNS, SCHEDULES, Schedule, make_schedule
from .sf_adamw import SFAdamW
from .sf_sgd import SFSGD
from .muon import MuonAdamW, parameters_for, sf_muon
from .wrapper import ScheduleFree

#: The reference package's names, for migrating with an import line: `from sfbench.optim import AdamWScheduleFree`.
SGDScheduleFree, AdamWScheduleFree, ScheduleFreeWrapper = SFSGD, SFAdamW, ScheduleFree

__all__ = ["SFSGD", "SFAdamW", "ScheduleFree", "ScheduleFreeBase", "Schedule", "make_schedule", "SCHEDULES",
           "COOLDOWNS", "WEIGHTINGS", "LR_RULES", "FUSED_AUTO_MIN_NUMEL", "SGDScheduleFree", "AdamWScheduleFree",
           "ScheduleFreeWrapper", "MuonAdamW", "sf_muon", "parameters_for"]
