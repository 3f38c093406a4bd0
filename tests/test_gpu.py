"""The CUDA paths: fused (compiled) optimizer kernels on CUDA tensors against the eager path and the reference package,
bf16 parameters, and the trainer with autocast and torch.compile on a GPU.

Marked `gpu`: they run only where CUDA is available (the development VM and CI have none; they were run on a lent
H100 — see docs/benchmarks.md "GPU").
"""

from __future__ import annotations

import math

import pytest
import torch

from sfbench.optim import SFSGD, SFAdamW

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")


def make_model(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 16)).to(CUDA, dtype)


def run(model, opt, steps, polyak=False):
    dtype = next(model.parameters()).dtype
    for t in range(steps):
        g = torch.Generator(device=CUDA).manual_seed(t)
        inp = torch.randn(32, 64, generator=g, device=CUDA, dtype=dtype)
        target = torch.randn(32, 16, generator=g, device=CUDA, dtype=dtype)
        opt.zero_grad()
        loss = ((model(inp) - target) ** 2).mean()
        loss.backward()
        opt.step(loss=loss) if polyak else opt.step()


@pytest.mark.parametrize("make, polyak", [
    (lambda ps, **kw: SFAdamW(ps, lr=0.01, weight_decay=0.01, **kw), False),
    (lambda ps, **kw: SFSGD(ps, lr=0.05, **kw), False),
    (lambda ps, **kw: SFAdamW(ps, lr=1.0, lr_rule="polyak", **kw), True),
], ids=["adamw", "sgd", "adamw-polyak"])
def test_fused_cuda_matches_eager(make, polyak):
    fused_model, eager_model = make_model(), make_model()
    fused = make(fused_model.parameters(), fused=True)
    eager = make(eager_model.parameters(), fused=False, foreach=True)
    run(fused_model, fused, 20, polyak)
    run(eager_model, eager, 20, polyak)
    assert fused._fused_decision is True
    for opt in (fused, eager):
        opt.eval()
    for a, b in zip(fused_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_cuda_matches_schedulefree():
    """docs/theory.md A: default SF-AdamW equals schedulefree.AdamWScheduleFree, here on CUDA tensors (float64)."""
    schedulefree = pytest.importorskip("schedulefree")
    ours_model, ref_model = make_model(torch.float64), make_model(torch.float64)
    ours = SFAdamW(ours_model.parameters(), lr=0.01, weight_decay=0.01)
    ref = schedulefree.AdamWScheduleFree(ref_model.parameters(), lr=0.01, weight_decay=0.01)
    ours.train()
    ref.train()
    run(ours_model, ours, 25)
    run(ref_model, ref, 25)
    ours.eval()
    ref.eval()
    for a, b in zip(ours_model.parameters(), ref_model.parameters()):
        assert (a - b).abs().max().item() <= 1e-10 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "foreach"])
def test_bf16_parameters_train(fused):
    model = make_model(torch.bfloat16)
    opt = SFAdamW(model.parameters(), lr=1.0, lr_rule="polyak", fused=fused)
    run(model, opt, 30, polyak=True)
    assert math.isfinite(opt.param_groups[0]["last_lr"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("precision, compile_", [("fp32", False), ("bf16", False), ("bf16", True)])
def test_trainer_on_cuda(tmp_path, precision, compile_):
    from sfbench.tasks.testbeds import LogRegTask
    from sfbench.train import Trainer, TrainerConfig

    task = LogRegTask(n=256, d=16, batch_size=None, seed=0)
    cfg = TrainerConfig(steps=60, device="cuda", precision=precision, compile=compile_, eval_every=30,
                        ckpt_every=30, log_every_s=1e9)
    trainer = Trainer(cfg, task, lambda ps: SFSGD(ps, lr=1.0), None, tmp_path / "run", {"test": True})
    summary = trainer.run()
    assert summary["status"] == "completed" and summary["device"].startswith("cuda")
    assert summary["final"]["eval/subopt"] < 0.5 * summary["first_loss"]
