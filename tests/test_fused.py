"""The fused (torch.compile) path against the eager paths, and the backend choice.

Compiling takes ~1–10 s per kernel variant on these tiny models (cached on disk afterwards), so the cases here are
few and small; the speed itself is measured by scripts/bench_optim.py, not by tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from sfbench.optim import FUSED_AUTO_MIN_NUMEL, SFSGD, SFAdamW

pytestmark = pytest.mark.skipif(not any(map(shutil.which, ("g++", "c++", "clang++"))) and not os.environ.get("CI"),
                                reason="no C++ compiler for inductor (under CI=true the tests run, and fail)")


def make_model(dtype):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def run(model, opt, steps, polyak):
    for t in range(steps):
        g = torch.Generator().manual_seed(t)
        dtype = next(model.parameters()).dtype
        inp, target = torch.randn(16, 6, generator=g, dtype=dtype), torch.randn(16, 3, generator=g, dtype=dtype)
        opt.zero_grad()
        loss = ((model(inp) - target) ** 2).mean()
        loss.backward()
        opt.step(loss=loss) if polyak else opt.step()


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("make", [
    lambda ps, **kw: SFAdamW(ps, lr=0.01, weight_decay=0.01, **kw),
    lambda ps, **kw: SFSGD(ps, lr=0.1, **kw),
    lambda ps, **kw: SFAdamW(ps, lr=1.0, lr_rule="polyak", **kw),
    lambda ps, **kw: SFSGD(ps, lr=0.1, momentum=0.0, weighting="lr", **kw),
], ids=["adamw-wd", "sgd", "adamw-polyak", "sgd-beta0"])
@pytest.mark.parametrize("foreach", [False, True], ids=["vs-per-tensor", "vs-foreach"])
def test_fused_matches_eager(make, dtype, tol, foreach):
    fused_model, eager_model = make_model(dtype), make_model(dtype)
    fused = make(fused_model.parameters(), fused=True)
    eager = make(eager_model.parameters(), fused=False, foreach=foreach)
    polyak = fused.param_groups[0]["lr_rule"] == "polyak"
    run(fused_model, fused, 15, polyak)
    run(eager_model, eager, 15, polyak)
    assert fused._fused_decision is True and eager._fused_decision is False
    assert fused.param_groups[0]["last_lr"] == pytest.approx(eager.param_groups[0]["last_lr"], rel=tol)
    for opt in (fused, eager):
        opt.eval()
    for a, b in zip(fused_model.parameters(), eager_model.parameters()):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_auto_backend_follows_model_size():
    small = torch.nn.Linear(4, 4)
    opt = SFAdamW(small.parameters())
    small(torch.ones(1, 4)).sum().backward()
    opt.step()
    assert opt._fused_decision is False
    big = torch.nn.Linear(1024, FUSED_AUTO_MIN_NUMEL // 1024)
    assert SFAdamW(big.parameters())._decide_fused() is True
    assert SFAdamW(big.parameters(), fused=False)._decide_fused() is False


@pytest.mark.slow
def test_compile_failure_falls_back_to_eager(tmp_path):
    """A real compiler error at the first fused step warns once and continues on the eager path, same numbers.

    Runs in a subprocess with CXX pointing at a compiler that doesn't exist (inductor caches its compiler lookup,
    so breaking it in this process would break every later compile)."""
    script = textwrap.dedent("""
        import warnings, torch
        from sfbench.optim import SFSGD
        torch.manual_seed(0)
        a, b = torch.nn.Linear(4, 3).double(), torch.nn.Linear(4, 3).double()
        b.load_state_dict(a.state_dict())
        fused, eager = SFSGD(a.parameters(), lr=0.1, fused=True), SFSGD(b.parameters(), lr=0.1, fused=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for t in range(3):
                for model, opt in ((a, fused), (b, eager)):
                    opt.zero_grad()
                    model(torch.ones(2, 4, dtype=torch.float64) * t).pow(2).sum().backward()
                    opt.step()
        messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert len(messages) == 1 and "torch.compile of the sf_update_z kernel failed" in messages[0], messages
        assert fused._fused_decision is False
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
        print("fallback ok")
    """)
    env = dict(os.environ, CXX=str(tmp_path / "no-such-c++"), TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "fallback ok" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.slow
def test_fused_many_groups_and_progressive_unfreezing():
    """More (group, parameter-set) specialisations than torch.compile's recompile limit (8): no crash, no fallback,
    same numbers as eager. Each group here compiles its own kernel (~1–2 s each)."""
    def build():
        torch.manual_seed(0)
        layers = [torch.nn.Linear(3 + i, 2, dtype=torch.float64) for i in range(10)]
        return layers, [{"params": layer.parameters(), "lr": 0.01 * (i + 1)} for i, layer in enumerate(layers)]

    results = []
    for fused in (True, False):
        layers, groups = build()
        opt = SFSGD(groups, fused=fused)
        for t in range(12):
            opt.zero_grad()
            for layer in layers[: min(t + 1, 10)]:      # one more layer gets gradients each step
                layer(torch.ones(1, layer.in_features, dtype=torch.float64)).pow(2).sum().backward()
            opt.step()
        assert opt._fused_decision is fused
        results.append([p.detach().clone() for layer in layers for p in layer.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_fused_polyak_half_precision():
    w = torch.nn.Parameter(torch.zeros(200_000, dtype=torch.float16))
    opt = SFSGD([w], lr=10.0, lr_rule="polyak", fused=True)
    w.grad = torch.full_like(w, 2.0)
    opt.step(loss=400_000.0)
    assert opt.param_groups[0]["last_lr"] == pytest.approx(0.5, rel=1e-3)


@pytest.mark.parametrize("momentum", [0.9, 0.0], ids=["beta0.9", "beta0"])
def test_fused_adam_reports_the_same_preconditioned_norm(momentum):
    """[C1]'s ‖g‖²_P comes out of the update itself (`sf_update(gpg=True)`): compiled and eager agree, and the
    parameters equal those of a run that doesn't ask for it."""
    models = [make_model(torch.float64) for _ in range(3)]
    opts = [SFAdamW(m.parameters(), lr=0.01, betas=(momentum, 0.999), weighting="lr", fused=f)
            for m, f in zip(models, (True, False, False))]
    opts[0].record_grad_sq = opts[1].record_grad_sq = True
    seen = [[], []]
    for t in range(6):
        g = torch.Generator().manual_seed(t)
        inp, target = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randn(16, 3, generator=g,
                                                                                        dtype=torch.float64)
        for i, (m, o) in enumerate(zip(models, opts)):
            o.zero_grad()
            ((m(inp) - target) ** 2).mean().backward()
            o.step()
            if i < 2:
                seen[i].append(o.last_grad_sq_P)
    assert opts[2].last_grad_sq_P is None and all(v > 0 for v in seen[1])
    assert seen[0] == pytest.approx(seen[1], rel=1e-10)
    for a, b in zip(models[1].parameters(), models[2].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
def test_a_second_process_reusing_the_compile_cache_takes_its_own_scalars(tmp_path):
    """Two processes share inductor's on-disk cache and run the compiled update with different step sizes (all else
    equal): each takes its own, as the eager update does. (Passed as `alpha=` to `sub_`, the first process's step size
    was replayed from the cache by the second, torch 2.14.)"""
    script = textwrap.dedent("""
        import sys, torch
        from sfbench.optim import kernels
        scalars = (1.0, -0.15, -float(sys.argv[1]), 0.0, 0.999, 0.001, 1e-8)    # c, a1, a2 = −γ, λ, β2, bc2, ε
        g = torch.Generator().manual_seed(0)
        tensors = [[torch.randn(5, generator=g, dtype=torch.float64) for _ in range(4)] for _ in range(3)]
        tensors.append([torch.zeros(5, dtype=torch.float64) for _ in range(4)])
        eager = [[t.clone() for t in ts] for ts in tensors]
        flags = dict(store="z", gpg=False)
        with torch.no_grad():
            kernels.each(kernels.sf_update, eager, scalars, flags)
            kernels.compiled({}, kernels.sf_update, ("z", "cpu", 0, (0, 1, 2, 3)), flags)(
                tensors, tuple(torch.tensor(s, dtype=torch.float64) for s in scalars))
        for a, b in zip(eager, tensors):
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
        print("same steps")
    """)
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "inductor"))
    for lr in ("0.2", "0.5"):
        proc = subprocess.run([sys.executable, "-c", script, lr], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0 and "same steps" in proc.stdout, proc.stdout + proc.stderr[-3000:]
