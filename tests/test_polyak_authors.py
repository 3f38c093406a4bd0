"""SF-Polyak with its authors' settings, and the IAM baselines (docs/theory.md [B1]; SFS; the authors' public
AdamWScheduleP / SGDScheduleP / IAMS code, read, not copied).

- The default SF-Polyak step is [B1] with β = 0.9, and the averaging weights come from the *scheduled* cap
  (w_t = max_{i≤t} γ_max,i², the reference package's `lr_power` weights applied to the cap), not from the step taken:
  checked against a by-hand three-sequence computation, a zero step included (x must still move).
- IAM / IAM-Adam (`opt=iam`, `opt=iam_adam`) equal the literal three-sequence reference with β = 1 and a constant
  c = 0.1, and the literal IAM update x ← λ/(1+λ) x + z/(1+λ), λ = 9, step for step.
- The cap follows the configured schedule (`sched=wsd` shapes γ_max).
"""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from sfbench.cli.validate import config_dir
from sfbench.optim import SFSGD, SFAdamW, make_schedule
from sfbench.optim.reference import ReferenceSF

from test_cli import metric_rows, only_run, run_cli

F64 = torch.float64


def opt_from_config(name: str, params, overrides=()):
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("config", overrides=[f"opt={name}", *overrides])
    return instantiate(cfg.opt)(params), cfg


def problem(seed=0, n=12, d=5):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=g, dtype=F64)
    b = torch.randn(n, generator=g, dtype=F64)
    return lambda w: (A @ w - b).abs().mean() + 0.1 * (w ** 2).sum()


def test_default_polyak_step_equals_b1_by_hand_with_the_authors_weighting():
    """SFSGD(lr_rule="polyak") with its defaults (β = 0.9, `lr_power` weights of the cap) under a warm-up cap
    schedule, against [B1] and the three sequences computed here by hand. Step 3 gets ℓ* above the loss: γ = 0,
    z stays, but x (and y) still move toward z, since the weight comes from the cap."""
    f = problem()
    w = torch.nn.Parameter(torch.zeros(5, dtype=F64))
    opt = SFSGD([w], lr=2.0, lr_rule="polyak")
    assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["weighting"] == "lr_power"
    schedule = make_schedule("constant", total_steps=8, warmup_steps=4)
    sched = schedule.lr_scheduler(opt)
    caps = 2.0 * schedule.array(8)
    beta = 0.9
    z = w.detach().clone()
    x = z.clone()
    weight_sum, cap_max = 0.0, 0.0
    for t in range(8):
        y = (1 - beta) * z + beta * x
        torch.testing.assert_close(w.detach(), y, rtol=1e-13, atol=1e-14)
        loss = f(w)
        opt.zero_grad()
        loss.backward()
        g = w.grad.detach().clone()
        lower = 10.0 if t == 3 else 0.0
        numerator = loss.item() - lower + float(g @ (z - y))          # [B1]: f(y) − ℓ* + ⟨g, z − y⟩
        gamma = min(caps[t], max(numerator, 0.0) / max(float(g @ g), 1e-12))
        opt.step(loss=loss, lower_bound=lower)
        sched.step()
        assert opt.param_groups[0]["last_lr"] == pytest.approx(gamma, rel=1e-12)
        cap_max = max(cap_max, caps[t])
        weight_sum += cap_max ** 2                                     # w_t from the scheduled cap, not from γ
        c = cap_max ** 2 / weight_sum
        z = z - gamma * g
        x_before = x.clone()
        x = (1 - c) * x + c * z
        if t == 3:
            assert gamma == 0.0 and not torch.allclose(x, x_before)     # a zero step does not freeze x
        opt.eval()
        torch.testing.assert_close(w.detach(), x, rtol=1e-12, atol=1e-13)
        opt.train()


def literal_iam_step(x, z, g, loss, lower, cap, lam=9.0, P=None):
    """IAM as written in the authors' IAMS/IAMSAdam (β = 1: the gradient is taken at x; λ = 9):
    τ = min(cap, [f − ℓ* + ⟨g, z − x⟩]_+ / ‖g‖²_P), z ← z − τ P g, x ← λ/(1+λ) x + z/(1+λ)."""
    Pg = g if P is None else P * g
    tau = min(cap, max(loss - lower + float(g @ (z - x)), 0.0) / float(g @ Pg))
    z = z - tau * Pg
    return lam / (1 + lam) * x + z / (1 + lam), z, tau


@pytest.mark.parametrize("name", ["iam", "iam_adam"])
def test_iam_equals_the_reference_and_the_literal_update(name):
    f = problem(seed=1)
    w = torch.nn.Parameter(torch.zeros(5, dtype=F64))
    opt, cfg = opt_from_config(name, [w])
    group = opt.param_groups[0]
    adam = isinstance(opt, SFAdamW)
    beta = group["betas"][0] if adam else group["momentum"]
    assert beta == 1.0 and group["weighting"] == "constant" and group["c"] == 0.1 and group["lr_rule"] == "polyak"
    ref = ReferenceSF([w], base="adam" if adam else "sgd", beta=1.0, weighting="constant", c=0.1,
                      lr_rule="polyak", beta2=group["betas"][1] if adam else 0.999, eps=group["eps"] if adam else 0)
    x = z = w.detach().clone()
    v = torch.zeros(5, dtype=F64)
    cap = float(group["lr"])
    for t in range(25):
        loss = f(w)
        opt.zero_grad()
        loss.backward()
        g = w.grad.detach().clone()
        lower = 0.3 if t % 7 == 6 else 0.0
        ref.step([g], cap, loss=loss.item(), lower_bound=lower)
        P = None
        if adam:
            v = 0.999 * v + 0.001 * g * g
            P = 1 / ((v / (1 - 0.999 ** (t + 1))).sqrt() + group["eps"])
        x, z, tau = literal_iam_step(x, z, g, loss.item(), lower, cap, P=P)
        opt.step(loss=loss, lower_bound=lower)
        assert group["last_lr"] == pytest.approx(ref.last_lr, rel=1e-10) == pytest.approx(tau, rel=1e-10)
        torch.testing.assert_close(w.detach(), ref.x[0], rtol=1e-11, atol=1e-13)     # β = 1: y = x
        torch.testing.assert_close(w.detach(), x, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", ["sf_polyak", "sf_polyak_adam"])
def test_polyak_configs_run_as_the_authors_do(name):
    w = torch.nn.Parameter(torch.zeros(3, dtype=F64))
    opt, cfg = opt_from_config(name, [w])
    group = opt.param_groups[0]
    beta = group["betas"][0] if isinstance(opt, SFAdamW) else group["momentum"]
    assert beta == 0.9 and group["weighting"] == "lr_power" and group["lr_rule"] == "polyak"
    assert cfg.sched.name == "wsd"


def test_the_cap_follows_the_schedule(in_run_env):
    """`sched=wsd` shapes γ_max: every step taken is ≤ the scheduled cap, and the cap itself decays to 0."""
    steps, cap = 40, 1.0
    assert run_cli(["task=lad", "opt=sf_polyak", f"opt.lr={cap}", "sched=wsd", "sched.decay_frac=0.5",
                    "logger=none", f"trainer.steps={steps}", "trainer.eval_every=10"]) == 0
    rows = metric_rows(only_run(in_run_env))
    h = make_schedule("wsd", total_steps=steps, decay_frac=0.5).array()
    assert all(r["lr"] <= cap * h[r["step"] - 1] * (1 + 1e-12) for r in rows)
    assert rows[-1]["lr"] <= cap * h[-1] and h[-1] < 0.06
    assert any(r["lr"] == pytest.approx(cap * h[r["step"] - 1]) for r in rows[steps // 2:])   # the cap binds late
