"""What a run trains and checkpoints (`Parts`: the model, optimizer, schedule and theory accumulators), built from
the seed on the run's device, so that the same command builds the same run, and a checkpoint restores it exactly."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ..optim.muon import parameters_for
from ..tasks.base import ConfigError, Task
from .checkpoint import rng_state, set_rng_state
from .config import TrainerConfig
from .online_bound import OnlineBound


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={spec!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


@dataclass
class Parts:
    model: torch.nn.Module
    opt: Any
    sched: Any
    theory: OnlineBound | None

    @classmethod
    def build(cls, task: Task, make_optimizer: Callable, make_scheduler: Callable | None, cfg: TrainerConfig,
              device: torch.device) -> Parts:
        """The task set up, then the model (from the seed), optimizer, schedule and theory accumulators."""
        seed_everything(cfg.seed)
        task.setup(device)
        seed_everything(cfg.seed)
        model = task.model().to(device)
        opt = make_optimizer(parameters_for(make_optimizer, model))     # named where it places by name
        sched = make_scheduler(opt) if make_scheduler is not None else None
        theory = None
        if cfg.theory:     # before loading a checkpoint: the origin x_0 is the seeded initial model
            theory = OnlineBound(opt, cfg.steps, task.summary().get("D"), cfg.theory_d_every, task=task, model=model,
                                 grad_clip=cfg.grad_clip)
        return cls(model, opt, sched, theory)

    def state_dict(self) -> dict:
        """The training state a checkpoint holds besides its step: parameters at y, optimizer, schedule, theory
        accumulators and the random number generators."""
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict() if self.sched is not None else None,
                "theory": self.theory.state_dict() if self.theory is not None else None, "rng": rng_state()}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None and state["scheduler"] is not None:
            self.sched.load_state_dict(state["scheduler"])
        if self.theory is not None and state.get("theory") is not None:
            self.theory.load_state_dict(state["theory"])
        set_rng_state(state["rng"])
