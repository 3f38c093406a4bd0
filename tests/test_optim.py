"""sfbench.optim against the reference package and against the properties of docs/theory.md section A and [B1]."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from sfbench.optim import SFSGD, SFAdamW, make_schedule
from sfbench.optim.reference import ReferenceSF

schedulefree = pytest.importorskip("schedulefree")

F64 = torch.float64


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def make_model(seed: int = 0, dtype=F64) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).to(dtype)


def batch(t: int, dtype=F64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + t)
    return torch.randn(16, 6, generator=g, dtype=dtype), torch.randn(16, 3, generator=g, dtype=dtype)


def loss_fn(model: torch.nn.Module, t: int) -> torch.Tensor:
    inp, target = batch(t, next(model.parameters()).dtype)
    return ((model(inp) - target) ** 2).mean()


def train_steps(model, opt, steps, start=0, lrs=None, sched=None, polyak=False):
    for t in range(start, start + steps):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[t] * group.get("lr_scale", 1.0)
        opt.zero_grad()
        loss = loss_fn(model, t)
        loss.backward()
        opt.step(loss=loss) if polyak else opt.step()
        if sched is not None:
            sched.step()


# -- parity with the reference package (issue: "match schedulefree ... 1e-10 relative") ---------------------------

WARMUP_LRS_STEPS = 120


@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("r", [0.0, 0.75])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("foreach", [True, False])
def test_parity_with_schedulefree(base, r, weight_decay, foreach):
    """Default SF-AdamW / SF-SGD equal schedulefree's on the same lr sequence (docs/theory.md A, last property)."""
    base_lr = 0.05 if base == "adam" else 0.5
    # A warm-up then cosine sequence of learning rates, driven through our schedule + LambdaLR on our side
    # and written into the reference's param groups by hand (its own warmup_steps stays 0).
    schedule = make_schedule("cosine", total_steps=WARMUP_LRS_STEPS, warmup_steps=20, final_frac=0.1)
    lrs = base_lr * schedule.array()
    ours_model, ref_model = make_model(), make_model()
    groups = lambda m: [{"params": m[0].parameters()},                               # noqa: E731
                        {"params": m[2].parameters(), "weight_decay": 2 * weight_decay}]
    if base == "adam":
        ours = SFAdamW(groups(ours_model), lr=base_lr, weight_decay=weight_decay, r=r, foreach=foreach)
        ref = schedulefree.AdamWScheduleFree(groups(ref_model), lr=base_lr, weight_decay=weight_decay, r=r)
    else:
        ours = SFSGD(groups(ours_model), lr=base_lr, weight_decay=weight_decay, r=r, foreach=foreach)
        ref = schedulefree.SGDScheduleFree(groups(ref_model), lr=base_lr, weight_decay=weight_decay, r=r)
    sched = schedule.lr_scheduler(ours)
    ours.train()
    ref.train()
    for t in range(WARMUP_LRS_STEPS):
        assert ours.param_groups[0]["lr"] == pytest.approx(lrs[t], rel=1e-14)
        for group in ref.param_groups:
            group["lr"] = lrs[t]
        for model, opt in ((ours_model, ours), (ref_model, ref)):
            opt.zero_grad()
            loss_fn(model, t).backward()
            opt.step()
        sched.step()
        assert ours.param_groups[0]["last_lr"] == ref.param_groups[0]["scheduled_lr"]
    for a, b in zip(ours_model.parameters(), ref_model.parameters()):
        assert rel_err(a, b) < 1e-10                     # train mode: parameters at y
    ours.eval()
    ref.eval()
    for a, b in zip(ours_model.parameters(), ref_model.parameters()):
        assert rel_err(a, b) < 1e-10                     # eval mode: parameters at x


# -- against the literal three-sequence reference, every mode ------------------------------------------------------

def reference_step(ref: ReferenceSF, ref_model: torch.nn.Module, t: int, lr: float, lower_bound: float,
                   next_lr: float | None = None) -> None:
    """One step of the literal reference: gradient of batch t taken at its y (through a twin model)."""
    with torch.no_grad():
        for p, y in zip(ref_model.parameters(), ref.y):
            p.copy_(y)
    ref_model.zero_grad()
    loss = loss_fn(ref_model, t)
    loss.backward()
    ref.step([p.grad for p in ref_model.parameters()], lr, loss=loss.item(), lower_bound=lower_bound,
             next_lr=next_lr)


CASES = [
    dict(weighting=w, beta=beta, lr_rule=rule)
    for w in ("lr_power", "uniform", "lr", "poly", "schedulet", "constant")
    for beta in (0.0, 0.5, 0.9, 1.0)
    for rule in ("schedule", "polyak")
]


@pytest.mark.parametrize("base", ["sgd", "adam"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['weighting']}-b{c['beta']}-{c['lr_rule']}")
def test_matches_three_sequence_reference(base, case):
    """The storage trick (y and u = z − y only) equals [A1]–[A5] / [B1] computed on explicit x, y, z."""
    weighting, beta, rule = case["weighting"], case["beta"], case["lr_rule"]
    model = make_model(seed=3)
    lr = 0.02 if base == "adam" else 0.2
    kw = dict(weight_decay=0.01, weighting=weighting, alpha=0.6, r=0.5, lr_rule=rule, c=0.3)
    if base == "adam":
        opt = SFAdamW(model.parameters(), lr=lr, betas=(beta, 0.99), **kw)
    else:
        opt = SFSGD(model.parameters(), lr=lr, momentum=beta, **kw)
    ref_model = make_model(seed=3)
    ref = ReferenceSF(list(ref_model.parameters()), base=base, beta=beta, beta2=0.99, **kw)
    for t in range(40):
        step_lr = lr * (1 + math.sin(t))          # an arbitrary positive sequence; for Polyak, the cap
        next_lr = lr * (1 + math.sin(t + 1))
        opt.param_groups[0]["lr"] = step_lr
        opt.param_groups[0]["lr_lookahead"] = [step_lr, next_lr]     # what Schedule.lr_scheduler writes
        opt.zero_grad()
        loss = loss_fn(model, t)
        loss.backward()
        opt.step(loss=loss, lower_bound=0.01) if rule == "polyak" else opt.step()
        reference_step(ref, ref_model, t, step_lr, lower_bound=0.01, next_lr=next_lr)
        assert opt.param_groups[0]["last_lr"] == pytest.approx(ref.last_lr, rel=1e-9, abs=1e-15)
    for p, y in zip(model.parameters(), ref.y):
        assert rel_err(p, y) < 1e-9
    opt.eval()
    for p, x in zip(model.parameters(), ref.x):
        assert rel_err(p, x) < 1e-9
    opt.train()
    for p, y in zip(model.parameters(), ref.y):
        assert rel_err(p, y) < 1e-9


# -- exact properties of section A --------------------------------------------------------------------------------

def quadratic_grad(w: torch.Tensor) -> torch.Tensor:
    """Gradient of f(w) = ½ wᵀ H w − bᵀw with fixed H, b (a convex testbed)."""
    H = torch.diag(torch.linspace(0.5, 3.0, w.numel(), dtype=F64))
    b = torch.linspace(-1, 1, w.numel(), dtype=F64)
    return H @ w - b


def run_single(opt_factory, steps, lrs, record):
    """Run an SF optimizer on the quadratic with one parameter vector; `record(t, w, opt)` after each step."""
    w = torch.nn.Parameter(torch.linspace(1.0, 2.0, 5, dtype=F64))
    opt = opt_factory([w])
    for t in range(steps):
        opt.param_groups[0]["lr"] = lrs[t]
        w.grad = quadratic_grad(w.detach())
        opt.step()
        record(t, w, opt)
    return w, opt


def x_of(w, opt):
    opt.eval()
    x = w.detach().clone()
    opt.train()
    return x


@pytest.mark.parametrize("weighting", ["uniform", "lr_power", "lr"])
def test_beta_one_is_heavy_ball(weighting):
    """β = 1: y = x and x_{t+1} = x_t − c_{t+1}γ_t g_t + c_{t+1}(1 − c_t)/c_t (x_t − x_{t−1}) (SFN Thms 1–2)."""
    lrs = [0.1 * (1 + 0.5 * math.cos(t)) for t in range(30)]
    xs, cs = [], []

    def record(t, w, opt):
        xs.append(x_of(w, opt))                          # the recursion is a statement about x ...
        torch.testing.assert_close(w.detach(), xs[-1], rtol=1e-14, atol=1e-14)   # ... and y = x when β = 1
        cs.append(opt.param_groups[0]["last_c"])

    w0 = torch.linspace(1.0, 2.0, 5, dtype=F64)
    run_single(lambda p: SFSGD(p, lr=0.1, momentum=1.0, weighting=weighting), 30, lrs, record)
    xs = [w0] + xs
    # x_1 = x_0 − γ_0 g_0 (c_1 = 1)
    assert cs[0] == 1.0
    torch.testing.assert_close(xs[1], w0 - lrs[0] * quadratic_grad(w0), rtol=1e-13, atol=1e-13)
    for t in range(1, 30):
        c_next, c_t = cs[t], cs[t - 1]
        a_t, b_t = c_next * lrs[t], c_next * (1 - c_t) / c_t
        if weighting == "uniform":   # the closed forms a_t = γ_t/(t+1), b_t = (t−1)/(t+1)
            assert a_t == pytest.approx(lrs[t] / (t + 1), rel=1e-13)
            assert b_t == pytest.approx((t - 1) / (t + 1), rel=1e-13, abs=1e-15)
        expected = xs[t] - a_t * quadratic_grad(xs[t]) + b_t * (xs[t] - xs[t - 1])
        torch.testing.assert_close(xs[t + 1], expected, rtol=1e-12, atol=1e-12)


def test_uniform_heavy_ball_second_step():
    """docs/theory.md A: with uniform weights, x_2 = x_1 − γ_1 g_1 / 2."""
    lrs = [0.3, 0.2]
    seen = []
    run_single(lambda p: SFSGD(p, lr=0.3, momentum=1.0, weighting="uniform"), 2, lrs,
               lambda t, w, opt: seen.append(w.detach().clone()))
    torch.testing.assert_close(seen[1], seen[0] - lrs[1] * quadratic_grad(seen[0]) / 2, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_poly_alpha_zero_is_plain_sgd(beta):
    """`poly` with α = 0 gives c ≡ 1, so x = z = y: plain SGD, whatever β (docs/theory.md A)."""
    lrs = [0.2 / (1 + t) ** 0.3 for t in range(25)]
    ref = torch.nn.Parameter(torch.linspace(1.0, 2.0, 5, dtype=F64))
    sgd = torch.optim.SGD([ref], lr=0.2)

    def record(t, w, opt):
        sgd.param_groups[0]["lr"] = lrs[t]
        ref.grad = quadratic_grad(ref.detach())
        sgd.step()
        torch.testing.assert_close(w.detach(), ref.detach(), rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(x_of(w, opt), ref.detach(), rtol=1e-13, atol=1e-13)

    run_single(lambda p: SFSGD(p, momentum=beta, weighting="poly", alpha=0.0), 25, lrs, record)


def test_poly_alpha_zero_adam_is_adam_without_momentum():
    """With the Adam base, `poly` α = 0 is Adam with β1 = 0 (torch.optim.Adam as the independent check)."""
    model, ref_model = make_model(), make_model()
    opt = SFAdamW(model.parameters(), lr=0.01, betas=(0.9, 0.99), weighting="poly", alpha=0.0)
    ref = torch.optim.Adam(ref_model.parameters(), lr=0.01, betas=(0.0, 0.99), eps=1e-8)
    for t in range(30):
        for m, o in ((model, opt), (ref_model, ref)):
            o.zero_grad()
            loss_fn(m, t).backward()
            o.step()
    for a, b in zip(model.parameters(), ref_model.parameters()):
        assert rel_err(a, b) < 1e-12


@pytest.mark.parametrize("weighting", ["uniform", "lr_power", "lr", "poly"])
def test_beta_zero_is_sgd_with_weighted_average(weighting):
    """β = 0: y = z are plain SGD iterates and x is the w-weighted average of z_1 … z_{t+1} (docs/theory.md A)."""
    lrs = [0.15 * min(1.0, (t + 1) / 5) for t in range(20)]
    ref = torch.nn.Parameter(torch.linspace(1.0, 2.0, 5, dtype=F64))
    sgd = torch.optim.SGD([ref], lr=0.1)
    zs, weights = [], []

    def record(t, w, opt):
        sgd.param_groups[0]["lr"] = lrs[t]
        ref.grad = quadratic_grad(ref.detach())
        sgd.step()
        torch.testing.assert_close(w.detach(), ref.detach(), rtol=1e-13, atol=1e-13)   # y = z = SGD
        zs.append(w.detach().clone())
        if weighting == "uniform":
            weights.append(1.0)
        elif weighting == "lr":
            weights.append(lrs[t])
        elif weighting == "lr_power":
            weights.append(max(lrs[: t + 1]) ** 2)
        if weighting != "poly":
            average = sum(wt * z for wt, z in zip(weights, zs)) / sum(weights)
        else:   # c_{t+1} = (t+1)^(−α): unroll the recursion of [A4] by hand
            average = zs[0]
            for i in range(1, t + 1):
                c = (i + 1) ** -0.5
                average = (1 - c) * average + c * zs[i]
        torch.testing.assert_close(x_of(w, opt), average, rtol=1e-12, atol=1e-12)

    run_single(lambda p: SFSGD(p, momentum=0.0, weighting=weighting, alpha=0.5), 20, lrs, record)


@pytest.mark.parametrize("beta", [0.5, 0.9])
def test_lr_weighting_averages_z_by_step_size(beta):
    """`lr` weighting (SFS schedulet): x_{T} = Σ_t γ_t z_{t+1} / Σ_t γ_t."""
    lrs = [0.05 + 0.1 * abs(math.sin(t)) for t in range(30)]
    zs = []
    z = torch.linspace(1.0, 2.0, 5, dtype=F64)       # z_0 = y_0, then z_{t+1} = z_t − γ_t ∇f(y_t) [A3], by hand
    y_prev = [z.clone()]

    def record(t, w, opt):
        nonlocal z
        z = z - lrs[t] * quadratic_grad(y_prev[-1])
        zs.append(z)
        y_prev.append(w.detach().clone())
        average = sum(lr * zz for lr, zz in zip(lrs, zs)) / sum(lrs[: t + 1])
        torch.testing.assert_close(x_of(w, opt), average, rtol=1e-12, atol=1e-12)

    run_single(lambda p: SFSGD(p, momentum=beta, weighting="lr"), 30, lrs, record)


def test_eval_train_are_idempotent_and_inverse():
    model = make_model()
    opt = SFAdamW(model.parameters(), lr=0.01)
    train_steps(model, opt, 5)
    y = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    x = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    assert all(torch.equal(a, b) for a, b in zip(x, model.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(x, y))
    opt.train()
    opt.train()
    for a, b in zip(y, model.parameters()):
        assert rel_err(b, a) < 1e-14
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.eval()
        opt.step()


# -- SF-Polyak [B1] ------------------------------------------------------------------------------------------------

def least_squares(n=20, d=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=g, dtype=F64) / d ** 0.5
    b = A @ torch.randn(d, generator=g, dtype=F64)      # consistent: min loss 0 (interpolation, ℓ* = 0)
    return lambda w: 0.5 * ((A @ w - b) ** 2).mean()


@pytest.mark.parametrize("cls", [SFSGD, SFAdamW])
def test_polyak_interpolates_least_squares(cls):
    """[B1] with ℓ* = 0 drives an interpolable least-squares loss below 1e-6 with the cap just "large"."""
    f = least_squares()
    w = torch.nn.Parameter(torch.zeros(50, dtype=F64))
    beta = dict(momentum=0.5) if cls is SFSGD else dict(betas=(0.5, 0.999))
    opt = cls([w], lr=1e3, lr_rule="polyak", **beta)
    assert opt.param_groups[0]["weighting"] == "lr_power"     # as the authors run it, from the scheduled cap
    steps = 600 if cls is SFSGD else 3000
    for _ in range(steps):
        loss = f(w)
        opt.zero_grad()
        loss.backward()
        opt.step(loss=loss)
        assert 0 <= opt.param_groups[0]["last_lr"] <= 1e3
    assert f(w).item() < 1e-6                 # at y
    opt.eval()
    assert f(w).item() < 1e-6                 # at x, the model one evaluates and saves


def test_polyak_step_by_hand():
    """The chosen step equals [B1] computed by hand, including the ⟨g, z − y⟩ term and the cap."""
    f = lambda w: 0.5 * (w[0] ** 2 + 3 * w[1] ** 2)             # noqa: E731, ∇f = (w0, 3 w1)
    w = torch.nn.Parameter(torch.tensor([1.0, 1.0], dtype=F64))
    beta = 0.8
    opt = SFSGD([w], lr=10.0, momentum=beta, lr_rule="polyak", weighting="uniform")
    # Step 0: z = x = y = (1, 1); f = 2, g = (1, 3), ‖g‖² = 10, z − y = 0 → γ_0 = 2/10.
    loss = f(w); loss.backward(); opt.step(loss=loss)           # noqa: E702
    assert opt.param_groups[0]["last_lr"] == pytest.approx(0.2, rel=1e-15)
    z1 = torch.tensor([1 - 0.2 * 1, 1 - 0.2 * 3], dtype=F64)     # (0.8, 0.4); c_1 = 1 so x_1 = z_1 = y_1
    torch.testing.assert_close(w.detach(), z1)
    # Step 1: y = z = x = (0.8, 0.4): f = 0.5 (0.64 + 0.48) = 0.56, g = (0.8, 1.2), ‖g‖² = 2.08, lower bound 0.1.
    w.grad = None
    loss = f(w); loss.backward(); opt.step(loss=loss, lower_bound=0.1)   # noqa: E702
    gamma1 = (0.56 - 0.1) / 2.08
    assert opt.param_groups[0]["last_lr"] == pytest.approx(gamma1, rel=1e-14)
    z2 = z1 - gamma1 * torch.tensor([0.8, 1.2], dtype=F64)
    x2 = 0.5 * z1 + 0.5 * z2                                     # c_2 = 1/2
    y2 = (1 - beta) * z2 + beta * x2
    torch.testing.assert_close(w.detach(), y2, rtol=1e-14, atol=1e-15)
    # Step 2: now z ≠ y, so the inner product term enters: γ = [f(y) + ⟨g, z − y⟩]_+ / ‖g‖².
    w.grad = None
    loss = f(w); loss.backward()                                  # noqa: E702
    g = w.grad.detach().clone()
    expected = max(loss.item() + float(g @ (z2 - y2)), 0.0) / float(g @ g)
    opt.param_groups[0]["lr"] = 10.0
    opt.step(loss=loss)
    assert opt.param_groups[0]["last_lr"] == pytest.approx(min(10.0, expected), rel=1e-13)
    # The cap: with γ_max below the Polyak step, the cap is taken.
    w.grad = None
    loss = f(w); loss.backward()                                  # noqa: E702
    opt.param_groups[0]["lr"] = 1e-6
    opt.step(loss=loss)
    assert opt.param_groups[0]["last_lr"] == 1e-6


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_polyak_lower_bound_above_loss_gives_zero_step(base):
    """ℓ* above the loss: [B1]'s step is 0, so z stays put while x still moves toward z — checked against the literal
    three-sequence reference, which holds z explicitly."""
    model, ref_model = make_model(seed=5), make_model(seed=5)
    opt = (SFAdamW if base == "adam" else SFSGD)(model.parameters(), lr=1.0, lr_rule="polyak")
    ref = ReferenceSF(list(ref_model.parameters()), base=base, beta=0.9, weighting="uniform", lr_rule="polyak")
    for t in range(4):
        lower_bound = 0.0 if t < 3 else 1e3
        opt.zero_grad()
        loss = loss_fn(model, t)
        loss.backward()
        opt.step(loss=loss, lower_bound=lower_bound)
        z_before = [z.clone() for z in ref.z]
        reference_step(ref, ref_model, t, 1.0, lower_bound=lower_bound)
    assert opt.param_groups[0]["last_lr"] == 0.0 == ref.last_lr
    assert all(torch.equal(a, b) for a, b in zip(ref.z, z_before))          # the reference's z did not move
    for p, y in zip(model.parameters(), ref.y):
        assert rel_err(p, y) < 1e-12
    opt.eval()
    for p, x in zip(model.parameters(), ref.x):
        assert rel_err(p, x) < 1e-12


@pytest.mark.parametrize("cls", [SFSGD, SFAdamW])
def test_polyak_without_loss_is_a_clear_error(cls):
    model = make_model()
    opt = cls(model.parameters(), lr_rule="polyak")
    loss_fn(model, 0).backward()
    with pytest.raises(ValueError, match=r"needs the minibatch loss.*step\(loss=loss"):
        opt.step()


def test_polyak_accepts_a_closure():
    model = make_model()
    opt = SFSGD(model.parameters(), lr=1.0, lr_rule="polyak")

    def closure():
        opt.zero_grad()
        loss = loss_fn(model, 0)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None and opt.param_groups[0]["last_lr"] > 0


# -- state_dict --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda ps: SFAdamW(ps, lr=0.01, weight_decay=0.01),
    lambda ps: SFSGD(ps, lr=0.2, momentum=0.0, weighting="lr"),
    lambda ps: SFAdamW(ps, lr=0.5, lr_rule="polyak"),
    lambda ps: SFSGD(ps, lr=1.0, weighting="poly", alpha=0.3, foreach=False),
    lambda ps: SFAdamW([{"params": list(ps)[:2]}, {"params": [], "lr": 0.003}], lr=0.01, betas=(0.8, 0.99)),
], ids=["adamw", "sgd-beta0", "adam-polyak", "sgd-poly-plain", "adamw-2groups"])
@pytest.mark.parametrize("save_in_eval", [False, True])
def test_state_dict_resume_is_bit_exact(make, save_in_eval):
    """A state_dict saved mid-run, loaded into a fresh optimizer, continues bit for bit like the uninterrupted run."""
    model = make_model()
    opt = make(model.parameters())
    polyak = opt.param_groups[0]["lr_rule"] == "polyak"
    sched = make_schedule("wsd", total_steps=40, warmup_steps=5).lr_scheduler(opt)
    train_steps(model, opt, 20, sched=sched, polyak=polyak)
    if save_in_eval:
        opt.eval()
    saved = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()})
    if save_in_eval:
        opt.train()
    train_steps(model, opt, 20, start=20, sched=sched, polyak=polyak)
    uninterrupted = [p.detach().clone() for p in model.parameters()]

    fresh = make_model(seed=99)
    fresh.load_state_dict(saved["model"])
    fresh_opt = make(fresh.parameters())
    fresh_sched = make_schedule("wsd", total_steps=40, warmup_steps=5).lr_scheduler(fresh_opt)
    fresh_opt.load_state_dict(saved["opt"])
    fresh_sched.load_state_dict(saved["sched"])
    assert fresh_opt.param_groups[0]["train_mode"] is (not save_in_eval)
    fresh_opt.train()
    for key in ("k", "weight_sum", "lr_max", "last_lr"):
        assert fresh_opt.param_groups[0][key] == saved["opt"]["param_groups"][0][key]
    assert fresh_opt.param_groups[0]["k"] == 20
    train_steps(fresh, fresh_opt, 20, start=20, sched=fresh_sched, polyak=polyak)
    for a, b in zip(fresh.parameters(), uninterrupted):
        assert torch.equal(a, b)


# -- validation --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, kwargs, name", [
    (SFSGD, dict(lr=-1.0), "lr"),
    (SFAdamW, dict(lr=float("nan")), "lr"),
    (SFSGD, dict(momentum=1.5), "momentum"),
    (SFSGD, dict(momentum=-0.1), "momentum"),
    (SFAdamW, dict(betas=(1.5, 0.9)), "betas[0]"),     # the message shows the offending entry, 1.5
    (SFAdamW, dict(betas=(0.9, 1.0)), "betas[1]"),
    (SFAdamW, dict(betas=(0.9,)), "betas"),
    (SFAdamW, dict(eps=-1e-8), "eps"),
    (SFSGD, dict(weight_decay=-0.1), "weight_decay"),
    (SFSGD, dict(weighting="linear"), "weighting"),
    (SFAdamW, dict(alpha=1.5, weighting="poly"), "alpha"),
    (SFSGD, dict(alpha=-0.5), "alpha"),
    (SFSGD, dict(lr_rule="armijo"), "lr_rule"),
    (SFSGD, dict(polyak_floor=0.0), "polyak_floor"),
    (SFAdamW, dict(r=-1.0), "r"),
    (SFAdamW, dict(weight_lr_power=-2.0), "weight_lr_power"),
    (SFAdamW, dict(warmup_steps=-1), "warmup_steps"),
    (SFSGD, dict(warmup_steps=2.5), "warmup_steps"),
    (SFSGD, dict(fused="yes"), "fused"),
])
def test_invalid_hyperparameters(cls, kwargs, name):
    model = make_model()
    with pytest.raises(ValueError) as info:
        cls(model.parameters(), **kwargs)
    message = str(info.value)
    assert message.startswith(name + "=")
    value = next(iter(kwargs.values()))
    if name.startswith("betas["):
        value = value[int(name[6])]
    assert repr(value) in message
    assert "allowed" in message or "choose" in message or "schedule" in message


def test_invalid_value_in_a_param_group_names_it():
    model = make_model()
    with pytest.raises(ValueError, match=r"^lr=-0.5 is out of range"):
        SFAdamW([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": -0.5}])


def test_mixed_lr_rules_are_rejected():
    model = make_model()
    with pytest.raises(ValueError, match="lr_rule must be the same"):
        SFSGD([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr_rule": "polyak"}])


def test_schedule_drives_the_step_size():
    """The step size each step is the group's current lr, so LambdaLR (any lr_scheduler) drives it."""
    model = make_model()
    opt = SFSGD(model.parameters(), lr=0.5)
    schedule = make_schedule("wsd", total_steps=30, warmup_steps=4, decay_frac=0.3, cooldown="1-sqrt")
    sched = schedule.lr_scheduler(opt)
    used = []
    for t in range(30):
        opt.zero_grad()
        loss_fn(model, t).backward()
        opt.step()
        used.append(opt.param_groups[0]["last_lr"])
        sched.step()
    torch.testing.assert_close(torch.tensor(used, dtype=F64), torch.tensor(0.5 * schedule.array(), dtype=F64),
                               rtol=1e-15, atol=0)


def test_float32_and_params_without_grad():
    """Parameters without a gradient are left alone (as in the reference); float32 works."""
    model = make_model(dtype=torch.float32)
    frozen = model[0].weight
    before = frozen.detach().clone()
    opt = SFAdamW(model.parameters(), lr=0.01)
    for t in range(3):
        opt.zero_grad()
        loss_fn(model, t).backward()
        frozen.grad = None
        opt.step()
    assert torch.equal(frozen.detach(), before)
    assert frozen not in opt.state or not opt.state[frozen]


def test_two_group_state_dict_keeps_each_group():
    model = make_model()
    opt = SFAdamW([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.003,
                   "betas": (0.5, 0.9)}], lr=0.01)
    train_steps(model, opt, 5)
    fresh = SFAdamW([{"params": model[0].parameters()}, {"params": model[2].parameters()}], lr=0.01)
    fresh.load_state_dict(copy.deepcopy(opt.state_dict()))
    for a, b in zip(fresh.param_groups, opt.param_groups):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("foreach", [True, False])
def test_polyak_sums_in_half_precision(dtype, foreach):
    """‖g‖² over 200k half-precision entries overflows float16 if summed in it; the step must still be [B1]'s."""
    w = torch.nn.Parameter(torch.zeros(200_000, dtype=dtype))
    opt = SFSGD([w], lr=10.0, lr_rule="polyak", foreach=foreach)
    w.grad = torch.full_like(w, 2.0)                 # ‖g‖² = 800000 > float16's max 65504
    opt.step(loss=400_000.0)                         # first step: z = y, so γ = f / ‖g‖² = 0.5
    assert opt.param_groups[0]["last_lr"] == pytest.approx(0.5, rel=1e-3)


def test_rejected_param_group_is_not_kept():
    model = make_model()
    opt = SFSGD(model[0].parameters(), lr=0.1)
    for bad in ({"lr_rule": "polyak"}, {"lr": -1.0}, {"polyak_floor": 1e-3}):
        with pytest.raises(ValueError):
            opt.add_param_group({"params": model[2].parameters(), **bad})
        assert len(opt.param_groups) == 1
    before = [p.detach().clone() for p in model[2].parameters()]
    loss_fn(model, 0).backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model[2].parameters()))


@pytest.mark.parametrize("first, then", [(0.0, 0.9), (0.9, 0.0)])
def test_beta_crossing_zero_mid_run_is_a_clear_error(first, then):
    model = make_model()
    opt = SFSGD(model.parameters(), lr=0.1, momentum=first)
    train_steps(model, opt, 2)
    opt.param_groups[0]["momentum"] = then
    with pytest.raises(ValueError, match=r"^momentum=.*changed across 0"):
        opt.eval()
        train_steps(model, opt, 1)
