"""sfbench.train — everything one training step does, in one room (DESIGN.md "Rooms").

| module | what |
|---|---|
| `loop.py` | `Trainer`: setup and resume, the steps (batch, loss (+ ℓ*), backward, step, record), the end |
| `config.py` | `TrainerSettings`: the settings `trainer.*`, their types and defaults; `TrainerConfig` adds the seed |
| `parts.py` | `Parts`: model, optimizer, schedule, theory accumulators, built from the seed, checkpoint state |
| `evaluation.py` | evaluation at x: the optimizer's `eval()`, BatchNorm recomputed, the model restored bit for bit |
| `signals.py` | stop requests: SIGTERM / SIGUSR1 / SIGUSR2 / Ctrl-C after the step, a second Ctrl-C at once |
| `checkpoint.py` | checkpoints: atomic, durable writes, last.pt + prev.pt, fallback on load, RNG, `load_model_at_x` |
| `resume.py` | `plan_resume`: which checkpoint to resume from, metrics.jsonl checked against it (`trainer.on_gap`) |
| `online_bound.py` | `OnlineBound`: the [C1]/[C3] accumulators, `theory/bound` each run logs, its [C4] fit at the end |
| `distributed.py` | data parallel: process group, batch sharding, gradient averaging, consistent per-step scalars |
| `progress.py` | progress output: a tqdm bar on a terminal, periodic lines in logs |

Depends on tasks (the protocol), tracking, theory and torch; never on Hydra or the CLI. The names below are
imported when first used, so that `sfbench.train.config` (which the CLI registers with Hydra) loads without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {"Trainer": "loop", "resolve_device": "parts", "seed_everything": "parts", "TrainerConfig": "config",
         "TrainerSettings": "config", "CHECKPOINT": "checkpoint", "load_model_at_x": "checkpoint"}
__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
