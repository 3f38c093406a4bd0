"""sfbench.tasks — what is trained: a model, deterministic batches, a loss with an optional lower bound ℓ*, and an
evaluation. The trainer is written against `Task` only (sfbench/tasks/base.py); a new task is one module here plus
one YAML in configs/task/."""

from .base import ConfigError, Task

__all__ = ["Task", "ConfigError"]
