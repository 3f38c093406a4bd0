"""transformers' GPT-2 language model with a lean forward for training: the same modules, weights, config and files
(`save_pretrained`, `from_pretrained`, hub configs all unchanged), a shorter path through them.

Profiled on the CPU default of `task=gpt` (3 layers × 96, batch 16 × 128 bytes), transformers' `forward` spends its
time around the arithmetic rather than in it: a KV cache it builds and concatenates into on every training step
(GPT-2's config has `use_cache=True`), the causal-mask machinery (which decides, every call, that SDPA's `is_causal`
will do), decorators that merge config defaults and collect outputs, config attribute look-ups through
transformers' `__getattribute__`, and per-layer dispatch to the attention function. `forward` here takes the
plain training and evaluation call — `model(input_ids)` / `model(input_ids=x)`, nothing else asked for — straight
through the model's own submodules: embeddings, then per block `ln_1 → c_attn → SDPA(is_causal) → c_proj`, `ln_2 →
mlp`, then `ln_f → lm_head`; the operations, their order and their dropout calls are those of transformers' path, so
logits and gradients are the same to the last bit (tests/test_gpt_model.py). Any other argument (an attention
mask, a cache, `labels`, `output_hidden_states`, `use_cache=True`, generation) goes to transformers' `forward`
unchanged, as does a model with another attention implementation or cross-attention.

The activation. GPT-2's is the tanh approximation of GELU, which PyTorch's CPU kernel computes slowly (its vectorised
tanh). Every block whose config names a tanh GELU gets `sfbench.tasks.gelu.GELUTanh` as its `act` module, so
transformers' own `forward` and the lean one use it alike: a one-pass C kernel built at run time where a C compiler is
found, PyTorch's operations in four passes elsewhere (sfbench/tasks/gelu.py).

The class keeps transformers' name so that `save_pretrained` writes `"architectures": ["GPT2LMHeadModel"]` and the
directory is an ordinary GPT-2 checkpoint for any loader. The activation is a config choice made in
`sfbench.tasks.gpt_model.gpt2` (`gelu_pytorch_tanh`, the same function as GPT-2's `gelu_new`), computed by `GELUTanh`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel as _GPT2LMHeadModel
from transformers.modeling_outputs import CausalLMOutputWithCrossAttentions

from sfbench.tasks.gelu import GELUTanh

# `forward` keyword arguments the lean path accepts, with the values that leave its result unchanged
_NEUTRAL = {"cache": (None,), "past_key_values": (None,), "attention_mask": (None,), "token_type_ids": (None,),
            "position_ids": (None,), "inputs_embeds": (None,), "encoder_hidden_states": (None,),
            "encoder_attention_mask": (None,), "labels": (None,), "use_cache": (None, False),
            "output_attentions": (None, False), "output_hidden_states": (None, False), "return_dict": (None, True)}


def _neutral(kwargs: dict) -> bool:
    for key, value in kwargs.items():
        if key == "logits_to_keep":
            if not (type(value) is int and value == 0):
                return False
        elif not any(value is v for v in _NEUTRAL.get(key, ())):
            return False
    return True


#: The activation names of GPT-2's tanh-approximate GELU in transformers' configs (the same function).
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")
class GPT2LMHeadModel(_GPT2LMHeadModel):
    """`transformers.GPT2LMHeadModel` whose plain `forward(input_ids)` skips transformers' per-call machinery, with
    `GELUTanh` as the blocks' activation."""

    def __init__(self, config):
        super().__init__(config)
        if config.activation_function in TANH_GELUS:
            for block in self.transformer.h:
                block.mlp.act = GELUTanh()

    def lean_ok(self) -> bool:
        """Whether this model's configuration is one the lean path computes exactly as transformers does."""
        c = self.config
        return (c._attn_implementation == "sdpa" and not c.add_cross_attention and not c.reorder_and_upcast_attn
                and not (self.transformer.gradient_checkpointing and self.training))

    def forward(self, input_ids: torch.LongTensor | None = None, *args, **kwargs):
        if args or input_ids is None or input_ids.dim() != 2 or not _neutral(kwargs) or not self.lean_ok():
            return super().forward(input_ids, *args, **kwargs)
        return CausalLMOutputWithCrossAttentions(logits=self.lean_logits(input_ids))

    def lean_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Logits of `input_ids` (batch × time), causal self-attention over the whole window, no cache."""
        t = self.transformer
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device).unsqueeze(0)
        h = t.drop(t.wte(input_ids) + t.wpe(positions))
        for block in t.h:
            h = _block(block, h, self.training)
        return self.lm_head(t.ln_f(h))


def _block(block, h: torch.Tensor, training: bool) -> torch.Tensor:
    """transformers' `GPT2Block.forward` (self-attention through SDPA, no mask, no cache), operation for operation."""
    attn = block.attn
    q, k, v = attn.c_attn(block.ln_1(h)).split(attn.split_size, dim=2)
    heads = (*q.shape[:-1], -1, attn.head_dim)
    q, k, v = (z.view(heads).transpose(1, 2) for z in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_dropout.p if training else 0.0,
                                       scale=attn.scaling, is_causal=q.shape[2] > 1)
    y = y.transpose(1, 2).reshape(*h.shape[:-1], -1)
    h = attn.resid_dropout(attn.c_proj(y)) + h
    return h + block.mlp(block.ln_2(h))
