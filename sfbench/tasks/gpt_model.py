"""Small GPT language models from transformers' GPT-2 classes (the issue asks for those unless a measurement says
otherwise): `GPT2LMHeadModel` with a small `GPT2Config`, dropout off by default (short runs, deterministic)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ConfigError, check_positive_int


def gpt2(vocab_size: int, block_size: int, n_layer: int, n_embd: int, n_head: int, dropout: float = 0.0,
         key: str = "model") -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    for name, value in (("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head)):
        check_positive_int(f"{key}.{name}", value)
    if n_embd % n_head:
        raise ConfigError(f"{key}.n_embd={n_embd} is not allowed; it must be a multiple of {key}.n_head={n_head}")
    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=None,
                        eos_token_id=None, tie_word_embeddings=True)
    return GPT2LMHeadModel(config)


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x).logits


def next_token_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
