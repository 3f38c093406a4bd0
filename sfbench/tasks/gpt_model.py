"""GPT-2 in plain PyTorch, in nanoGPT's style: the GPT task's model, the distillation student and sfbench's own teacher.

The architecture and the parameter names are GPT-2's as transformers writes them: token and position embeddings,
pre-LayerNorm blocks of causal self-attention (PyTorch's `scaled_dot_product_attention`) and an MLP with the
tanh-approximate GELU (`F.gelu(approximate="tanh")`, GPT-2's `gelu_new`), a final LayerNorm and an output head tied to
the token embedding. `save_pretrained` writes, and `GPT2.from_pretrained` reads, transformers' GPT-2 directory
(config.json + weights), so a saved model loads in `transformers.GPT2LMHeadModel` / `AutoModelForCausalLM` and any
GPT-2 checkpoint loads here; transformers is imported only then. The linear layers are `nn.Linear`; transformers'
`Conv1D` stores the same matrices transposed, which loading and saving convert.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import ConfigError, check_positive_int

#: GPT-2's linear layers: transformers stores their weights as (in, out) (`Conv1D`), nn.Linear as (out, in)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int
    block_size: int
    n_layer: int
    n_embd: int
    n_head: int
    dropout: float = 0.0


class Attention(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = c.n_head, c.dropout
        self.c_attn = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.c_proj = nn.Linear(c.n_embd, c.n_embd)
        self.resid_dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in self.c_attn(x).split(c, 2))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(b, t, c)))


class MLP(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(c.n_embd, 4 * c.n_embd)
        self.c_proj = nn.Linear(4 * c.n_embd, c.n_embd)
        self.dropout = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, c: GPTConfig):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(c.n_embd), Attention(c)
        self.ln_2, self.mlp = nn.LayerNorm(c.n_embd), MLP(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    """GPT-2 language model: `model(input_ids)` (batch × time) → logits (batch × time × vocab)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd), wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout), h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd)))
        # GPT-2's initialisation: N(0, 0.02), the residual projections scaled by 1/√(2 · layers); zero biases
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))
            elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
                nn.init.normal_(p, std=0.02)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = t.drop(t.wte(input_ids) + t.wpe(positions))
        for block in t.h:
            h = block(h)
        return F.linear(t.ln_f(h), t.wte.weight)

    # -- transformers' GPT-2 files ------------------------------------------------------------------------------------

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under transformers' GPT-2 names and layouts."""
        state = {k: (v.t() if k.endswith(CONV1D) else v) for k, v in self.state_dict().items()}
        state["lm_head.weight"] = state["transformer.wte.weight"]
        return state

    def save_pretrained(self, directory: str | Path) -> None:
        """transformers' GPT-2 directory (config.json + weights), written through transformers itself."""
        from transformers import GPT2Config, GPT2LMHeadModel

        c = self.config
        hf = GPT2LMHeadModel(GPT2Config(
            vocab_size=c.vocab_size, n_positions=c.block_size, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
            resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, bos_token_id=None, eos_token_id=None,
            tie_word_embeddings=True, activation_function="gelu_pytorch_tanh"))
        hf.load_state_dict({k: v.detach().cpu().contiguous() for k, v in self.hf_state_dict().items()})
        hf.save_pretrained(directory)

    @classmethod
    def from_hf(cls, hf: nn.Module) -> "GPT2":
        """This model with the weights of a transformers GPT-2 (`GPT2LMHeadModel`) and its configuration."""
        c = hf.config
        if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh") or not c.tie_word_embeddings:
            raise ConfigError(f"{getattr(c, 'name_or_path', 'the checkpoint')}: a GPT-2 with a tied head and the tanh "
                              f"GELU is what loads here, not activation {c.activation_function!r}")
        model = cls(GPTConfig(c.vocab_size, c.n_positions, c.n_layer, c.n_embd, c.n_head, c.resid_pdrop))
        state = {k: (v.t() if k.endswith(CONV1D) else v) for k, v in hf.state_dict().items() if k != "lm_head.weight"}
        model.load_state_dict(state)
        return model

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "GPT2":
        from transformers import GPT2LMHeadModel

        return cls.from_hf(GPT2LMHeadModel.from_pretrained(str(directory)))


def gpt2(vocab_size: int, block_size: int, n_layer: int, n_embd: int, n_head: int, dropout: float = 0.0,
         key: str = "model") -> GPT2:
    for name, value in (("n_layer", n_layer), ("n_embd", n_embd), ("n_head", n_head)):
        check_positive_int(f"{key}.{name}", value)
    if n_embd % n_head:
        raise ConfigError(f"{key}.n_embd={n_embd} is not allowed; it must be a multiple of {key}.n_head={n_head}")
    return GPT2(GPTConfig(vocab_size, block_size, n_layer, n_embd, n_head, float(dropout)))


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits of sfbench's GPT-2 or of a transformers causal LM (a hub teacher)."""
    out = model(input_ids=x)
    return out if isinstance(out, torch.Tensor) else out.logits


def next_token_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
