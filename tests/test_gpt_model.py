"""The GPT model of `task=gpt` / the distillation student and teacher (sfbench/tasks/gpt_model.py, gpt2_fast.py).

Checked against transformers itself: the model sfbench built before (transformers' `GPT2LMHeadModel`, GPT-2's
`gelu_new`) and transformers' own `forward` on the same instance. The lean forward must give the same logits and
gradients (bit for bit against transformers' forward, to float rounding against `gelu_new`), and the model must stay
an ordinary GPT-2 checkpoint for transformers' loaders.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2Config
from transformers import GPT2LMHeadModel as HFGPT2LMHeadModel

from conftest import gelu_tanh_f64

from sfbench.tasks.gelu import GELUTanh, native_kernel
from sfbench.tasks.gpt_model import gpt2, logits_of, model_class, next_token_ce

SHAPE = dict(vocab_size=256, block_size=32, n_layer=2, n_embd=48, n_head=3)


def previous_model(vocab_size, block_size, n_layer, n_embd, n_head, dropout=0.0):
    """What `gpt2()` built before: transformers' class and GPT-2's default activation (`gelu_new`)."""
    config = GPT2Config(vocab_size=vocab_size, n_positions=block_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
                        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=None,
                        eos_token_id=None, tie_word_embeddings=True)
    assert config.activation_function == "gelu_new"
    return HFGPT2LMHeadModel(config)


def batch(seed=0, b=4, t=32, vocab=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (b, t), generator=g), torch.randint(0, vocab, (b, t), generator=g)


def loss_and_grads(model, x, y, forward=None):
    model.zero_grad(set_to_none=True)
    logits = (forward or logits_of)(model, x)
    loss = next_token_ce(logits, y)
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_same_initial_weights_as_the_previous_model():
    torch.manual_seed(3)
    old = previous_model(**SHAPE)
    torch.manual_seed(3)
    new = gpt2(**SHAPE)
    assert type(new) is model_class() and isinstance(new, HFGPT2LMHeadModel)
    old_sd, new_sd = old.state_dict(), new.state_dict()
    assert old_sd.keys() == new_sd.keys()
    assert all(torch.equal(old_sd[k], new_sd[k]) for k in old_sd)


@pytest.mark.parametrize("train", [True, False])
def test_logits_and_gradients_match_the_previous_model_to_float_rounding(train):
    torch.manual_seed(0)
    old = previous_model(**SHAPE)
    new = gpt2(**SHAPE)
    new.load_state_dict(old.state_dict())
    old.train(train), new.train(train)
    x, y = batch()
    a, ga = loss_and_grads(old, x, y)
    b, gb = loss_and_grads(new, x, y)
    scale = a.abs().max().item()
    err = (a - b).abs().max().item()
    assert err <= 1e-5 * max(scale, 1.0), err          # gelu_new vs PyTorch's fused tanh GELU: rounding only
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lean_forward_is_transformers_forward_bit_for_bit_with_dropout():
    """Same instance, same RNG state: the lean path and transformers' `forward` (with its dropout calls, in the
    same order) give identical logits and gradients."""
    torch.manual_seed(1)
    model = gpt2(**SHAPE, dropout=0.1)
    model.train()
    x, y = batch(1)

    def theirs(m, inputs):
        return HFGPT2LMHeadModel.forward(m, input_ids=inputs).logits

    torch.manual_seed(7)
    a, ga = loss_and_grads(model, x, y)
    torch.manual_seed(7)
    b, gb = loss_and_grads(model, x, y, forward=theirs)
    assert torch.equal(a, b)
    assert all(torch.equal(ga[n], gb[n]) for n in ga)
    torch.manual_seed(8)
    c, _ = loss_and_grads(model, x, y)
    assert not torch.equal(a, c)        # dropout is on: a different RNG state gives other logits
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x).logits, theirs(model, x))      # positional input_ids too


def test_other_arguments_take_transformers_path():
    torch.manual_seed(2)
    model = gpt2(**SHAPE).eval()
    reference = HFGPT2LMHeadModel(copy.deepcopy(model.config)).eval()      # transformers' class, same config
    reference.load_state_dict(model.state_dict())
    for block in reference.transformer.h:      # and the same activation module, so that the arithmetic is the same
        block.mlp.act = GELUTanh()
    x, _ = batch(2)
    mask = torch.ones_like(x)
    mask[:, :5] = 0
    with torch.no_grad():
        out = model(input_ids=x, labels=x)
        assert out.loss is not None
        torch.testing.assert_close(out.loss, reference(input_ids=x, labels=x).loss, rtol=0, atol=0)
        masked = model(input_ids=x, attention_mask=mask).logits
        assert torch.equal(masked, reference(input_ids=x, attention_mask=mask).logits)
        assert not torch.allclose(masked, model(input_ids=x).logits)
        cached = model(input_ids=x, use_cache=True)
        assert cached.past_key_values is not None
        assert model(input_ids=x).past_key_values is None        # the lean path keeps no KV cache
        hidden = model(input_ids=x, output_hidden_states=True).hidden_states
        assert hidden is not None and len(hidden) == SHAPE["n_layer"] + 1
        generated = model.generate(x[:1, :8], max_new_tokens=4, do_sample=False, pad_token_id=0)
        expected = reference.generate(x[:1, :8], max_new_tokens=4, do_sample=False, pad_token_id=0)
        assert torch.equal(generated, expected)


def test_save_pretrained_is_an_ordinary_gpt2_checkpoint(tmp_path):
    torch.manual_seed(4)
    model = gpt2(**SHAPE).eval()
    model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert config["activation_function"] == "gelu_pytorch_tanh"
    x, _ = batch(4)
    with torch.no_grad():
        ours = model(input_ids=x).logits
        assert torch.equal(model_class().from_pretrained(tmp_path / "m").eval()(input_ids=x).logits, ours)
        for loaded in (AutoModelForCausalLM.from_pretrained(tmp_path / "m"),
                       HFGPT2LMHeadModel.from_pretrained(tmp_path / "m")):   # PyTorch's tanh-GELU kernel: rounding
            torch.testing.assert_close(loaded.eval()(input_ids=x).logits, ours, rtol=0, atol=1e-5)


def test_loads_a_checkpoint_written_by_transformers(tmp_path):
    """A GPT-2 saved by transformers' own class (gelu_new, e.g. a teacher cached before) loads into sfbench's class
    with its own activation and gives the same logits."""
    torch.manual_seed(5)
    theirs = previous_model(**SHAPE).eval()
    theirs.save_pretrained(tmp_path / "t")
    ours = model_class().from_pretrained(tmp_path / "t").eval()
    assert ours.config.activation_function == "gelu_new"
    assert all(isinstance(block.mlp.act, GELUTanh) for block in ours.transformer.h)     # the same function
    x, _ = batch(5)
    with torch.no_grad():
        torch.testing.assert_close(ours(input_ids=x).logits, theirs(input_ids=x).logits, rtol=0, atol=1e-5)


def test_short_windows_and_single_tokens():
    torch.manual_seed(6)
    model = gpt2(**SHAPE).eval()
    for t in (1, 2, 17):
        x, _ = batch(6, b=2, t=t)
        with torch.no_grad():
            assert torch.equal(model(input_ids=x).logits, HFGPT2LMHeadModel.forward(model, input_ids=x).logits)


def test_cross_entropy_helper_is_torch_cross_entropy():
    x, y = batch(9)
    logits = torch.randn(*x.shape, 256)
    torch.testing.assert_close(next_token_ce(logits, y), F.cross_entropy(logits.permute(0, 2, 1), y))


@pytest.mark.parametrize("native", [True, False], ids=["C kernel", "PyTorch operations"])
def test_cpu_gelu_is_gpt2s_tanh_gelu_to_float_rounding(native):
    """`GELUTanh` (the C kernel where built, else the sigmoid form through PyTorch's operations, each with its own
    backward) against the float64 function and its autograd derivative: within the error of PyTorch's own float32
    kernel, on values from −12 to 12 and the extremes (the C kernel where one is built: tests/test_native.py checks
    it is wherever a compiler is)."""
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200_003, generator=g) * 3, torch.linspace(-12, 12, 24_001),
                   torch.tensor([0.0, -0.0, 9.9, -9.9, 30.0, -30.0, 1e4, -1e4])])
    grad_out = torch.randn(x.shape, generator=g)
    ours_x = x.clone().requires_grad_()
    ours = GELUTanh(native=native)(ours_x)
    path = "_GELUTanhNativeBackward" if native and native_kernel() is not None else "_GELUTanhCPUBackward"
    assert type(ours.grad_fn).__name__ == path
    ours.backward(grad_out)
    exact_x = x.double().requires_grad_()
    exact = gelu_tanh_f64(exact_x)
    exact.backward(grad_out.double())
    torch_y = F.gelu(x, approximate="tanh")
    torch_grad = torch.ops.aten.gelu_backward(grad_out, x, approximate="tanh")
    scale = exact.abs().clamp_min(1.0)
    assert ((ours.double() - exact).abs() / scale).max() <= 2 * ((torch_y.double() - exact).abs() / scale).max()
    assert ((ours.double() - exact).abs() / scale).max() < 1e-6
    gscale = exact_x.grad.abs().clamp_min(1.0)
    ours_err = ((ours_x.grad.double() - exact_x.grad).abs() / gscale).max()
    torch_err = ((torch_grad.double() - exact_x.grad).abs() / gscale).max()
    assert ours_err <= 2 * torch_err and ours_err < 1e-5, (ours_err, torch_err)
    with torch.no_grad():               # the forward-only path gives the training path's values
        assert torch.equal(GELUTanh(native=native)(x), ours.detach())
    big = torch.tensor([float("inf"), float("-inf"), float("nan")])
    torch.testing.assert_close(GELUTanh(native=native)(big), F.gelu(big, approximate="tanh"), equal_nan=True)


def test_cpu_gelu_has_first_and_second_derivatives():
    """gradcheck and gradgradcheck (float64): Hessian-vector products through the model stay possible."""
    x = torch.randn(40, dtype=torch.float64, requires_grad=True, generator=torch.Generator().manual_seed(1)) * 3
    x = x.detach().requires_grad_()
    assert torch.autograd.gradcheck(GELUTanh(), (x,))
    assert torch.autograd.gradgradcheck(GELUTanh(), (x,))


def test_cpu_gelu_falls_back_to_pytorchs_kernel_off_float32():
    """Half precision (autocast on a CPU) and the compiled path use PyTorch's kernel itself."""
    x = torch.randn(64, 48)
    for dtype in (torch.bfloat16, torch.float16):
        assert torch.equal(GELUTanh()(x.to(dtype)), F.gelu(x.to(dtype), approximate="tanh"))
    x64 = torch.randn(64, 48, dtype=torch.float64)
    torch.testing.assert_close(GELUTanh()(x64), gelu_tanh_f64(x64), rtol=1e-14, atol=1e-14)
