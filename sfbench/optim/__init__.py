"""sfbench.optim — the schedule-free family, SF-Polyak and schedules (docs/theory.md), usable on its own::

    opt = SFAdamW(model.parameters(), lr=2e-3)
    sched = make_schedule("wsd", total_steps=T, warmup_steps=100).lr_scheduler(opt)
    opt.train(); ...; opt.step(); sched.step(); ...; opt.eval()   # evaluate / save at x

`ScheduleFree(base)` makes any optimizer schedule-free; `MuonAdamW` is torch's Muon with AdamW for the rest. The
reference package's names are aliases, for migrating.
"""

from .base import LR_RULES, WEIGHTINGS, SFSGD, ScheduleFreeBase, SFAdamW
from .kernels import FUSED_AUTO_MIN_NUMEL
from .muon import MuonAdamW, parameters_for, sf_muon
from .schedules import COOLDOWNS, SCHEDULES, Schedule, make_schedule
from .wrapper import ScheduleFree

SGDScheduleFree, AdamWScheduleFree, ScheduleFreeWrapper = SFSGD, SFAdamW, ScheduleFree

__all__ = ["SFSGD", "SFAdamW", "ScheduleFree", "ScheduleFreeBase", "Schedule", "make_schedule", "SCHEDULES",
           "COOLDOWNS", "WEIGHTINGS", "LR_RULES", "FUSED_AUTO_MIN_NUMEL", "SGDScheduleFree", "AdamWScheduleFree",
           "ScheduleFreeWrapper", "MuonAdamW", "sf_muon", "parameters_for"]
