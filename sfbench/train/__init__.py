"""sfbench.train — everything one training step does, in one room (DESIGN.md "Rooms").

| module | what |
|---|---|
| `loop.py` | `Trainer`: setup and resume, the steps (batch, loss (+ ℓ*), backward, step, record), the end |
| `config.py` | `TrainerConfig`: the trainer's settings (`trainer.*`) |
| `evaluation.py` | evaluation at x: the optimizer's `eval()`, BatchNorm recomputed, the model restored bit for bit |
| `signals.py` | stop requests: SIGTERM / SIGUSR1 / SIGUSR2 / Ctrl-C after the step, a second Ctrl-C at once |
| `finish.py` | the end of a run: the [C4] fit of the bound to the curve, a run that ended above its start |
| `checkpoint.py` | checkpoints: atomic, durable writes, last.pt + prev.pt, fallback on load, RNG, `load_model_at_x` |
| `resume.py` | `plan_resume`: which checkpoint to resume from, metrics.jsonl checked against it (`trainer.on_gap`) |
| `online_bound.py` | `OnlineBound`: the [C1]/[C3] accumulators and `theory/bound` each run logs (docs/theory.md C) |
| `distributed.py` | data parallel: process group, batch sharding, gradient averaging, consistent per-step scalars |
| `progress.py` | progress output: a tqdm bar on a terminal, periodic lines in logs |

Depends on tasks (the protocol), tracking, theory and torch; never on Hydra or the CLI.
"""

from .checkpoint import CHECKPOINT, load_model_at_x
from .config import TrainerConfig
from .loop import Trainer, resolve_device, seed_everything

__all__ = ["Trainer", "TrainerConfig", "CHECKPOINT", "load_model_at_x", "resolve_device", "seed_everything"]
