"""Checkpoint files: atomic writes, RNG state, and the model at x from any checkpoint.

A checkpoint (`RUN/checkpoints/last.pt`) holds the *training* state — parameters at y, optimizer state, scheduler,
the online theory accumulators, RNG states and the step — so a resumed run is bit-exact (loop.py says why y, not x).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

CHECKPOINT = "checkpoints/last.pt"


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model_at_x(checkpoint: str | os.PathLike, model: torch.nn.Module,
                    make_optimizer: Callable[[Iterable], torch.optim.Optimizer]) -> torch.nn.Module:
    """Load a checkpoint into `model` and move it to the evaluation point x (for SF optimizers)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    opt = make_optimizer(model.parameters())
    opt.load_state_dict(state["optimizer"])
    if hasattr(opt, "eval"):
        opt.eval()
    return model
