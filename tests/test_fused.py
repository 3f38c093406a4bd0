"""The fused (torch.compile) path against the eager paths, and the backend choice (issue 2, "Speed").

Compiling takes ~1–10 s per kernel variant on these tiny models (cached on disk afterwards), so the cases here are
few and small; the speed itself is measured by scripts/bench_optim.py, not by tests.
"""

from __future__ import annotations

import pytest
import torch

from sfbench.optim import FUSED_AUTO_MIN_NUMEL, SFSGD, SFAdamW
from sfbench.optim.base import compile_supported

pytestmark = pytest.mark.skipif(not compile_supported(torch.device("cpu"))[0], reason="no C++ compiler for inductor")


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
def test_fused_matches_eager(make, dtype, tol):
    fused_model, eager_model = make_model(dtype), make_model(dtype)
    fused = make(fused_model.parameters(), fused=True)
    eager = make(eager_model.parameters(), fused=False, foreach=False)
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


def test_compile_failure_falls_back_to_eager(monkeypatch, tmp_path):
    """A real compiler error at the first fused step warns once and continues on the eager path, same numbers."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-c++")))
    monkeypatch.setattr(inductor_config, "fx_graph_cache", False)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model, reference = make_model(torch.float64), make_model(torch.float64)
    opt = SFSGD(model.parameters(), lr=0.1, weight_decay=0.123, fused=True)
    with pytest.warns(RuntimeWarning, match="torch.compile of the sf_update kernel failed"):
        run(model, opt, 3, polyak=False)
    assert opt._fused_decision is False
    ref_opt = SFSGD(reference.parameters(), lr=0.1, weight_decay=0.123, fused=False)
    run(reference, ref_opt, 3, polyak=False)
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)
