"""The GPT model of `task=gpt` / the distillation student and teacher (sfbench/tasks/gpt_model.py), checked against
transformers' own GPT-2 (`GPT2LMHeadModel`) on the same weights: logits, gradients and files."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config
from transformers import GPT2LMHeadModel as HFGPT2LMHeadModel

from sfbench.tasks.base import ConfigError
from sfbench.tasks.gpt_model import GPT2, gpt2, logits_of, next_token_ce

SHAPE = dict(vocab_size=256, block_size=32, n_layer=2, n_embd=48, n_head=3)


def transformers_gpt2(activation="gelu_new", dropout=0.0, vocab_size=256, block_size=32, n_layer=2, n_embd=48,
                      n_head=3):
    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=None,
                        eos_token_id=None, tie_word_embeddings=True, activation_function=activation)
    return HFGPT2LMHeadModel(config)


def batch(seed=0, b=4, t=32, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g), torch.randint(0, vocab, (b, t), generator=g)


@pytest.mark.parametrize("activation", ["gelu_new", "gelu_pytorch_tanh"])
def test_logits_equal_transformers_gpt2_on_the_same_weights(activation):
    torch.manual_seed(1)
    theirs = transformers_gpt2(activation).eval()
    ours = GPT2.from_hf(theirs).eval()
    x, _ = batch(1)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(input_ids=x).logits, rtol=0, atol=1e-5)
    # and the other way: sfbench's weights under transformers' names load into transformers' class
    torch.manual_seed(2)
    mine = gpt2(**SHAPE).eval()
    other = transformers_gpt2(activation).eval()
    other.load_state_dict(mine.hf_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(mine(x), other(input_ids=x).logits, rtol=0, atol=1e-5)


def test_gradients_equal_transformers_gpt2():
    torch.manual_seed(3)
    theirs = transformers_gpt2("gelu_pytorch_tanh").train()
    ours = GPT2.from_hf(theirs).train()
    x, y = batch(3)
    next_token_ce(ours(x), y).backward()
    next_token_ce(theirs(input_ids=x).logits, y).backward()
    grads = dict(ours.named_parameters())
    for name, p in theirs.named_parameters():
        mine = grads[name].grad
        if name.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")):
            mine = mine.t()
        torch.testing.assert_close(mine, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_initialisation_is_gpt2s():
    """N(0, 0.02) for embeddings and linear weights, 0.02/√(2 L) for the residual projections, zero biases, LayerNorm
    at (1, 0)."""
    torch.manual_seed(0)
    n_layer = 4
    model = gpt2(vocab_size=4096, block_size=256, n_layer=n_layer, n_embd=256, n_head=4)
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            assert p.std().item() == pytest.approx(0.02 / math.sqrt(2 * n_layer), rel=0.03), name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight")):
            assert p.std().item() == pytest.approx(0.02, rel=0.03), name
        elif name.endswith("bias"):
            assert not p.any(), name
        elif "ln" in name:
            assert torch.equal(p, torch.ones_like(p)), name
    assert "lm_head.weight" not in dict(model.named_parameters())       # tied (transformers' tests above check it)


def test_causal_and_shape():
    torch.manual_seed(4)
    model = gpt2(**SHAPE).eval()
    x, _ = batch(4, b=2, t=20)
    changed = x.clone()
    changed[:, 12:] = (changed[:, 12:] + 1) % 256
    with torch.no_grad():
        a, b = model(x), model(changed)
    assert a.shape == (2, 20, 256)
    torch.testing.assert_close(a[:, :12], b[:, :12], rtol=0, atol=0)
    assert not torch.allclose(a[:, 12:], b[:, 12:])
    for t in (1, 2, 17):
        with torch.no_grad():
            out = model(x[:, :t])
        torch.testing.assert_close(out, a[:, :t], rtol=0, atol=1e-5)


def test_dropout_only_in_training():
    torch.manual_seed(5)
    model = gpt2(**SHAPE, dropout=0.3)
    x, _ = batch(5)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    plain = gpt2(**SHAPE)
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(plain.train()(x), plain.eval()(x))


def test_save_pretrained_is_an_ordinary_gpt2_checkpoint(tmp_path):
    torch.manual_seed(6)
    model = gpt2(**SHAPE).eval()
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    x, _ = batch(6)
    with torch.no_grad():
        ours = model(x)
        assert torch.equal(GPT2.from_pretrained(tmp_path / "m").eval()(x), ours)
        for loaded in (AutoModelForCausalLM.from_pretrained(tmp_path / "m"),
                       HFGPT2LMHeadModel.from_pretrained(tmp_path / "m")):
            torch.testing.assert_close(loaded.eval()(input_ids=x).logits, ours, rtol=0, atol=1e-5)
            torch.testing.assert_close(logits_of(loaded, x), ours, rtol=0, atol=1e-5)


def test_loads_a_checkpoint_written_by_transformers(tmp_path):
    torch.manual_seed(7)
    theirs = transformers_gpt2("gelu_new").eval()
    theirs.save_pretrained(tmp_path / "t")
    ours = GPT2.from_pretrained(tmp_path / "t").eval()
    x, _ = batch(7)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(input_ids=x).logits, rtol=0, atol=1e-5)


def test_a_checkpoint_of_another_activation_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="'relu'"):
        GPT2.from_hf(transformers_gpt2("relu"))


def test_cross_entropy_helper_is_torch_cross_entropy():
    x, y = batch(9)
    logits = torch.randn(*x.shape, 256)
    torch.testing.assert_close(next_token_ce(logits, y), F.cross_entropy(logits.permute(0, 2, 1), y))
