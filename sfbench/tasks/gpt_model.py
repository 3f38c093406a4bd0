"""Small GPT language models from transformers' GPT-2 classes: `GPT2LMHeadModel` with a small `GPT2Config`, dropout
off by default (short runs, deterministic).

Two choices make it run at the speed of a hand-written PyTorch GPT (nanoGPT; docs/benchmarks.md "GPT model"):
- the activation is `gelu_pytorch_tanh`, the tanh-approximate GELU — the same function as GPT-2's `gelu_new`, which
  transformers computes from eight separate tensor operations (logits agree to float rounding) — computed on the CPU
  by `sfbench.tasks.gelu.GELUTanh`, a one-pass C kernel where a C compiler is found (PyTorch's kernel elsewhere);
- the class is `sfbench.tasks.gpt2_fast.GPT2LMHeadModel`, transformers' class with a lean `forward(input_ids)`
  (no KV cache, mask machinery or output decorators in training; the same operations otherwise).
Both leave the model an ordinary GPT-2: `save_pretrained` writes a standard GPT-2 directory that
`transformers.GPT2LMHeadModel` / `AutoModelForCausalLM` load, and this class loads any GPT-2 checkpoint.

transformers is imported when a model is built, not with this module (`python -m sfbench task=logreg` never loads it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ConfigError, check_positive_int

ACTIVATION = "gelu_pytorch_tanh"


def model_class() -> type:
    """sfbench's GPT-2 LM class (imports transformers on first use)."""
    from .gpt2_fast import GPT2LMHeadModel

    return GPT2LMHeadModel


def gpt2(vocab_size: int, block_size: int, n_layer: int, n_embd: int, n_head: int, dropout: float = 0.0,
         key: str = "model") -> torch.nn.Module:
    from transformers import GPT2Config

    for name, value in (("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head)):
        check_positive_int(f"{key}.{name}", value)
    if n_embd % n_head:
        raise ConfigError(f"{key}.n_embd={n_embd} is not allowed; it must be a multiple of {key}.n_head={n_head}")
    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=None,
                        eos_token_id=None, tie_word_embeddings=True, activation_function=ACTIVATION)
    return model_class()(config)


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x).logits


def next_token_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
