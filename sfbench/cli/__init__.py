"""The app layer (DESIGN.md "Rooms"): `python -m sfbench [overrides]` composes the config with Hydra, validates it,
and runs the trainer; `-m` sweeps locally or on Slurm.

| module | what |
|---|---|
| `app.py` | `main` (the command line) and `run` (Hydra's task function: one run) |
| `validate.py` | group options before Hydra starts; every value, by building each part on dummy inputs; whole sweeps |
| `sweep.py` | run and sweep directory names (relaunch = resume), the Slurm job recorded in a run directory |
| `predict.py` | `python -m sfbench.theory predict`: the config, the pilot run, then `sfbench.theory.predict` |

The Slurm launcher is a Hydra plugin of its own, `hydra_plugins/sfbench_launcher/` (found by Hydra's discovery).
"""

from .app import main, run

__all__ = ["main", "run"]
