"""sfbench.train — everything one training step does, in one room (DESIGN.md "Rooms").

| module | what |
|---|---|
| `loop.py` | `Trainer`: the loop — batch, loss (+ ℓ*), backward, step, record, evaluation at x, signals, resume |
| `checkpoint.py` | checkpoint files: atomic, durable writes, last.pt + prev.pt, fallback on load, RNG state, `load_model_at_x` |
| `resume.py` | `plan_resume`: which checkpoint to resume from, metrics.jsonl checked against it (`trainer.on_gap`) |
| `online_bound.py` | `OnlineBound`: the [C1]/[C3] accumulators and `theory/bound` each run logs (docs/theory.md C) |
| `distributed.py` | data parallel: process group, batch sharding, gradient averaging, consistent per-step scalars |
| `progress.py` | progress output: a tqdm bar on a terminal, periodic lines in logs |

Depends on tasks (the protocol), tracking, theory and torch; never on Hydra or the CLI.
"""

from .checkpoint import CHECKPOINT, load_model_at_x
from .loop import Trainer, TrainerConfig, resolve_device, seed_everything

__all__ = ["Trainer", "TrainerConfig", "CHECKPOINT", "load_model_at_x", "resolve_device", "seed_everything"]
