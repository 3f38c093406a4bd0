"""Muon baselines: `torch.optim.Muon` on the hidden weight matrices and `torch.optim.AdamW` on the rest — vectors and,
when parameters come with names matching `adamw_names`, embeddings and the output head — as one optimizer
(`MuonAdamW`); schedule-free around it (`sf_muon`). `adjust_lr_fn="match_rms_adamw"` lets one lr and weight decay
serve both parts (docs/architecture.md says where each parameter goes and why).
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable

import torch
from torch.optim import Optimizer

from .base import check_choice, check_range
from .torch_internals import init_as_optimizer
from .wrapper import ScheduleFree

ADJUST_LR_FNS = ("original", "match_rms_adamw", "spectral_unclamped")


def parameters_for(make_optimizer: Any, model: torch.nn.Module) -> Iterable:
    """What to pass to an optimizer factory: `model.named_parameters()` when it places parameters by name (its
    target has `takes_named_parameters`, as `MuonAdamW` and `sf_muon`), else `model.parameters()`."""
    target = getattr(make_optimizer, "func", make_optimizer)      # a functools.partial, as Hydra's _partial_ makes
    return model.named_parameters() if getattr(target, "takes_named_parameters", False) else model.parameters()


class Combined(Optimizer):
    """Several optimizers over disjoint parameters as one: `param_groups` is the concatenation of theirs (the same
    dicts, so an LR scheduler or `zero_grad` acts on all), `step` steps each, `state_dict` holds each one's."""

    def __init__(self, optimizers: list[Optimizer]):
        if not optimizers:
            raise ValueError("Combined needs at least one optimizer")
        self.optimizers = list(optimizers)
        init_as_optimizer(self, {}, [g for opt in self.optimizers for g in opt.param_groups])

    @property
    def state(self) -> dict:      # a read-only view of the parts' states
        return {p: s for opt in self.optimizers for p, s in opt.state.items()}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def add_param_group(self, param_group: dict) -> None:
        raise NotImplementedError("add the group to one of .optimizers (Combined routes nothing by itself)")

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        parts = state_dict.get("optimizers") if isinstance(state_dict, dict) else None
        if not isinstance(parts, list) or len(parts) != len(self.optimizers):
            got = "a state dict without 'optimizers'" if parts is None else f"{len(parts)} optimizers"
            raise ValueError(f"{type(self).__name__}.load_state_dict: expected the state of {len(self.optimizers)} "
                             f"optimizers ({', '.join(type(o).__name__ for o in self.optimizers)}), got {got}")
        for opt, part in zip(self.optimizers, parts):
            opt.load_state_dict(part)

    def zero_grad(self, set_to_none: bool = True) -> None:     # the parts' groups, groups added to them later too
        for opt in self.optimizers:
            opt.zero_grad(set_to_none)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}


def split_for_muon(params: Iterable, adamw_names: str) -> tuple[list, list]:
    """(Muon's parameters, AdamW's) from tensors, (name, tensor) pairs or groups with a boolean `use_muon`."""
    items = list(params)
    muon, adamw = [], []
    pattern = re.compile(adamw_names) if adamw_names else None
    for item in items:
        if isinstance(item, dict):
            if "use_muon" not in item:
                raise ValueError("a parameter group for MuonAdamW needs 'use_muon': True or False")
            group = {k: v for k, v in item.items() if k != "use_muon"}
            (muon if item["use_muon"] else adamw).append(group)
            continue
        name, p = item if isinstance(item, tuple) else (None, item)
        by_name = name is not None and pattern is not None and pattern.search(name)
        (muon if p.ndim == 2 and not by_name else adamw).append(p)
    return muon, adamw


class MuonAdamW(Combined):
    """`torch.optim.Muon` on the hidden weight matrices, `torch.optim.AdamW` on the rest (module docstring). `params`:
    tensors, (name, tensor) pairs or groups with `use_muon`; `lr`, `weight_decay` are Muon's and AdamW's unless
    `adamw_lr` / `adamw_weight_decay` are given; `momentum`, `nesterov`, `ns_steps`, `adjust_lr_fn` Muon's."""

    takes_named_parameters = True

    def __init__(self, params, lr: float = 3e-3, momentum: float = 0.95, weight_decay: float = 0.0,
                 nesterov: bool = True, ns_steps: int = 5, adjust_lr_fn: str = "match_rms_adamw",
                 adamw_lr: float | None = None, adamw_betas: tuple[float, float] = (0.9, 0.95),
                 adamw_eps: float = 1e-8, adamw_weight_decay: float | None = None,
                 adamw_names: str = r"emb|wte|wpe|head"):
        adamw_lr = lr if adamw_lr is None else adamw_lr
        adamw_weight_decay = weight_decay if adamw_weight_decay is None else adamw_weight_decay
        betas = tuple(adamw_betas)
        if len(betas) != 2:
            raise ValueError(f"adamw_betas={adamw_betas!r} is not allowed; give two numbers [beta1, beta2]")
        for name, value, hi in (("lr", lr, math.inf), ("momentum", momentum, 1.0), ("weight_decay", weight_decay,
                                math.inf), ("adamw_lr", adamw_lr, math.inf), ("adamw_weight_decay",
                                adamw_weight_decay, math.inf), ("adamw_betas[0]", betas[0], 1.0),
                                ("adamw_betas[1]", betas[1], 1.0)):
            check_range(name, value, 0.0, hi, hi_open=True)
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or not 1 <= ns_steps < 100:
            raise ValueError(f"ns_steps={ns_steps!r} is out of range; allowed: an integer in [1, 99]")
        check_choice("adjust_lr_fn", adjust_lr_fn, ADJUST_LR_FNS)
        muon, adamw = split_for_muon(params, adamw_names)
        parts = [torch.optim.Muon(muon, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                                  ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)] if muon else []
        parts += [torch.optim.AdamW(adamw, lr=adamw_lr, betas=betas, eps=adamw_eps, weight_decay=adamw_weight_decay)
                  ] if adamw else []
        if not parts:
            raise ValueError("MuonAdamW got an empty parameter list")
        super().__init__(parts)


def sf_muon(params, lr: float = 3e-3, momentum: float = 0.9, weight_decay: float = 0.0, *,
            muon_momentum: float = 0.95, adamw_betas: tuple[float, float] = (0.9, 0.95), weighting: str | None = None,
            warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0, **muon_kwargs) -> ScheduleFree:
    """`ScheduleFree(MuonAdamW(params, …))`: `momentum` is β [A1], `weight_decay` applied at y by the wrapper (the base
    decays nothing), `muon_momentum` / `adamw_betas` the base's own, the rest as in `ScheduleFree`."""
    base = MuonAdamW(params, lr=lr, momentum=muon_momentum, weight_decay=0.0, adamw_betas=adamw_betas,
                     adamw_weight_decay=0.0, **muon_kwargs)
    return ScheduleFree(base, weight_decay_at_y=weight_decay, momentum=momentum, weighting=weighting,
                        warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)


sf_muon.takes_named_parameters = True
