"""`sfbench.optim.ScheduleFree`: schedule-free around any base optimizer.

Oracles: `schedulefree.ScheduleFreeWrapper` (the reference wrapper) on SGD and AdamW bases; sfbench's own SFSGD /
SFAdamW, which the wrapper must reproduce around SGD without momentum and Adam with β1 = 0 (weightings, warm-up,
SF-Polyak, the [C1] accumulators); and the three-sequence `ReferenceSF`.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch

from sfbench.optim import SFSGD, ScheduleFree, SFAdamW, make_schedule
from sfbench.optim.reference import ReferenceSF

schedulefree = pytest.importorskip("schedulefree")
F64 = torch.float64


def params(dtype=F64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(4, 3, generator=g, dtype=dtype), torch.randn(5, generator=g, dtype=dtype)]


def leaves(init):
    return [t.clone().requires_grad_() for t in init]


def grads(t: int, like) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(50 + t)
    return [torch.rand(p.shape, generator=g, dtype=p.dtype) - 0.3 for p in like]


def run(pairs, steps: int, start: int = 0, loss=None, toggle: bool = False) -> None:
    """Step every (params, optimizer) on the same gradients; `toggle`: eval()/train() between steps."""
    for t in range(start, start + steps):
        gs = grads(t, pairs[0][0])
        for ps, opt in pairs:
            opt.train()
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step() if loss is None else opt.step(loss=loss(t))
            if toggle:
                opt.eval()
                opt.train()


def close(a, b, tol=1e-12) -> None:
    for x, y in zip(a, b):
        torch.testing.assert_close(x.detach(), y.detach(), rtol=tol, atol=tol)


def _preinit_adamw(opt: torch.optim.AdamW) -> None:
    """The reference wrapper keeps z in the base's own state, so AdamW's `len(state) == 0` initialisation never runs
    (it raises KeyError 'exp_avg'); its own test suite initialises the state by hand. So does this."""
    for group in opt.param_groups:
        for p in group["params"]:
            opt.state[p].update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))


@pytest.mark.parametrize("base", ["sgd", "sgd-momentum", "adamw"])
@pytest.mark.parametrize("kw", [dict(momentum=0.9, weight_decay_at_y=0.1),
                                dict(momentum=0.5, weight_decay_at_y=0.0, r=1.0, weight_lr_power=1.0)],
                         ids=["wd", "r-power"])
def test_matches_the_reference_wrapper_over_100_steps(base, kw):
    init = params()
    a, b = leaves(init), leaves(init)
    make = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.3),
            "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.8, weight_decay=0.01),
            "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.05, betas=(0.5, 0.99), weight_decay=0.01)}[base]
    ours = ScheduleFree(make(a), **kw)
    ref_base = make(b)
    if base == "adamw":
        _preinit_adamw(ref_base)
    ref = schedulefree.ScheduleFreeWrapper(ref_base, **kw)
    sched = torch.optim.lr_scheduler.LambdaLR(ours, lambda k: min(1.0, (k + 1) / 10))     # an lr that changes
    ref_sched = torch.optim.lr_scheduler.LambdaLR(ref_base, lambda k: min(1.0, (k + 1) / 10))
    for t in range(100):
        run([(a, ours), (b, ref)], 1, start=t)
        sched.step(), ref_sched.step()
        close(a, b, 1e-11)
        ours.eval(), ref.eval()
        close(a, b, 1e-11)
    close([ours.state[p]["z"] for p in a], [ref.state[p]["z"] for p in b], 1e-11)


@pytest.mark.parametrize("weighting, extra", [("lr_power", {}), ("uniform", {}), ("lr", {}),
                                              ("poly", dict(alpha=0.3))])
@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_equals_sfbench_optimizers_for_plain_bases(weighting, extra, base):
    """Around SGD (no momentum) / Adam with β1 = 0, the wrapper is SFSGD / SFAdamW, for every weighting, with the
    warm-up argument and weight decay at y, train/eval in between."""
    init = params()
    a, b = leaves(init), leaves(init)
    if base == "sgd":
        ours = ScheduleFree(torch.optim.SGD(a, lr=0.2), momentum=0.8, weight_decay_at_y=0.05, weighting=weighting,
                            warmup_steps=5, **extra)
        expected = SFSGD(b, lr=0.2, momentum=0.8, weight_decay=0.05, weighting=weighting, warmup_steps=5, **extra)
    else:
        ours = ScheduleFree(torch.optim.Adam(a, lr=0.02, betas=(0.0, 0.99), eps=1e-8), momentum=0.8,
                            weight_decay_at_y=0.05, weighting=weighting, warmup_steps=5, **extra)
        expected = SFAdamW(b, lr=0.02, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.05, weighting=weighting,
                           warmup_steps=5, **extra)
    for _ in range(30):
        run([(a, ours), (b, expected)], 1, start=_, toggle=True)
        assert ours.param_groups[0]["last_lr"] == pytest.approx(expected.param_groups[0]["last_lr"], rel=1e-14)
    close(a, b, 1e-10)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_polyak_around_a_plain_base_equals_sf_polyak(base):
    """SF-Polyak [B1] with ‖g‖²_P = ⟨g, Δ⟩ (the base's update at lr = 1) is SFSGD / SFAdamW's SF-Polyak; the step
    sizes, ‖g‖²_P (what [C1] accumulates) and the distance travelled by x agree."""
    init = params()
    a, b = leaves(init), leaves(init)
    if base == "sgd":
        ours = ScheduleFree(torch.optim.SGD(a, lr=2.0), momentum=0.5, weight_decay_at_y=0.01, lr_rule="polyak")
        expected = SFSGD(b, lr=2.0, momentum=0.5, weight_decay=0.01, lr_rule="polyak")
    else:
        ours = ScheduleFree(torch.optim.Adam(a, lr=0.5, betas=(0.0, 0.999)), momentum=0.5, lr_rule="polyak")
        expected = SFAdamW(b, lr=0.5, betas=(0.5, 0.999), lr_rule="polyak")
    assert ours.needs_loss and ours.param_groups[0]["lr"] == (2.0 if base == "sgd" else 0.5)
    origin = [t.clone() for t in init]
    for t in range(25):
        run([(a, ours), (b, expected)], 1, start=t, loss=lambda t: 1.0 / (1 + t))
        assert ours.param_groups[0]["last_lr"] == pytest.approx(expected.param_groups[0]["last_lr"], rel=1e-9)
        assert ours.last_grad_sq_P == pytest.approx(expected.last_grad_sq_P, rel=1e-9)
        assert ours.distance_sq_at_x(origin) == pytest.approx(expected.distance_sq_at_x(origin), rel=1e-9)
        assert ours.distance_sq_at_z(origin) == pytest.approx(expected.distance_sq_at_z(origin), rel=1e-9)
    assert ours.param_groups[0]["lr"] == (2.0 if base == "sgd" else 0.5)      # the cap is restored after each step
    close(a, b, 1e-9)


def test_matches_three_sequence_reference_with_uniform_weights():
    init = params()
    a = leaves(init)
    ours = ScheduleFree(torch.optim.SGD(a, lr=0.1), momentum=0.7, weighting="uniform")
    ref = ReferenceSF(init, base="sgd", beta=0.7, weighting="uniform")
    for t in range(20):
        gs = grads(t, a)
        for p, g in zip(a, gs):
            p.grad = g.clone()
        ours.step()
        ref.step(gs, 0.1)
    close(a, ref.y)
    ours.eval()
    close(a, ref.x)


def test_theory_accumulators_with_a_preconditioned_base():
    """With a trainer's `record_grad_sq`, ‖g‖²_P of each step is ⟨g, Δ⟩/γ: for Adam with β1 = 0 that is Σ g²/D."""
    init = params()
    a, b = leaves(init), leaves(init)
    ours = ScheduleFree(torch.optim.Adam(a, lr=0.01, betas=(0.0, 0.99)), momentum=0.9)
    expected = SFAdamW(b, lr=0.01, betas=(0.9, 0.99))
    ours.record_grad_sq = expected.record_grad_sq = True
    assert ours.theory_bound == "C1"
    for t in range(10):
        run([(a, ours), (b, expected)], 1, start=t)
        assert ours.last_grad_sq_P == pytest.approx(expected.last_grad_sq_P, rel=1e-8)


def test_state_dict_round_trip_and_copies_step_identically():
    init = params()
    a, b = leaves(init), leaves(init)
    ours = ScheduleFree(torch.optim.AdamW(a, lr=0.01, weight_decay=0.1), momentum=0.9, weight_decay_at_y=0.01)
    run([(a, ours)], 5)
    ours.eval()
    buffer = io.BytesIO()
    torch.save({"model": [p.detach() for p in a], "opt": ours.state_dict()}, buffer)
    checkpoint = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    with torch.no_grad():
        for p, q in zip(b, checkpoint["model"]):
            p.copy_(q)
    resumed = ScheduleFree(torch.optim.AdamW(b, lr=0.01, weight_decay=0.1), momentum=0.9, weight_decay_at_y=0.01)
    resumed.load_state_dict(checkpoint["opt"])
    assert resumed.train_mode is False and resumed.sf_groups[0]["k"] == 5
    a2, copied = copy.deepcopy((a, ours))
    run([(a, ours), (b, resumed), (a2, copied)], 6, start=5)
    for other in (b, a2):
        for p, q in zip(a, other):
            assert torch.equal(p, q)


def test_loads_a_reference_wrapper_checkpoint():
    """The reference wrapper's state dict (the base's, with z in its state and k/lr_max/weight_sum in its groups;
    saved in eval mode) continues exactly."""
    init = params()
    a, b = leaves(init), leaves(init)
    ref = schedulefree.ScheduleFreeWrapper(torch.optim.SGD(a, lr=0.1, momentum=0.5), momentum=0.9)
    run([(a, ref)], 4)
    ref.eval()
    with torch.no_grad():
        for p, q in zip(b, a):
            p.copy_(q)
    ours = ScheduleFree(torch.optim.SGD(b, lr=0.1, momentum=0.5), momentum=0.9)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))
    assert "z" not in ours.base.state[b[0]] and "momentum_buffer" in ours.base.state[b[0]]
    run([(a, ref), (b, ours)], 6, start=4)
    close(a, b, 1e-12)


def test_refuses_a_base_optimizers_own_state_dict():
    a = leaves(params())
    plain = torch.optim.SGD(a, lr=0.1, momentum=0.5)
    run([(a, type("T", (), {"train": lambda s: None, "step": plain.step})())], 1)
    ours = ScheduleFree(torch.optim.SGD(leaves(params()), lr=0.1, momentum=0.5))
    with pytest.raises(ValueError, match="base optimizer's own"):
        ours.load_state_dict(plain.state_dict())


def test_schedule_drives_the_step_and_eval_train_are_inverse():
    a = leaves(params())
    ours = ScheduleFree(torch.optim.SGD(a, lr=0.4), momentum=0.9)
    sched = make_schedule("wsd", total_steps=10, decay_frac=0.5).lr_scheduler(ours)
    taken = []
    for t in range(10):
        run([(a, ours)], 1, start=t)
        taken.append(ours.param_groups[0]["last_lr"])
        sched.step()
    assert taken == pytest.approx([0.4 * make_schedule("wsd", total_steps=10, decay_frac=0.5)(t) for t in range(10)])
    y = [p.detach().clone() for p in a]
    ours.eval(), ours.eval()
    assert not all(torch.equal(p, q) for p, q in zip(a, y))
    ours.train(), ours.train()
    close(a, y, 1e-14)
    ours.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        ours.step()


@pytest.mark.parametrize("kwargs, message", [
    (dict(momentum=0.0), "momentum=0.0"), (dict(momentum=1.5), "momentum=1.5"),
    (dict(weighting="linear"), "weighting="), (dict(lr_rule="armijo"), "lr_rule="),
    (dict(warmup_steps=-2), "warmup_steps=-2"), (dict(weight_decay_at_y=-1.0), "weight_decay_at_y="),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScheduleFree(torch.optim.SGD(leaves(params()), lr=0.1), **kwargs)


def test_refuses_a_schedule_free_base_and_non_optimizers():
    with pytest.raises(ValueError, match="already schedule-free"):
        ScheduleFree(SFSGD(leaves(params())))
    with pytest.raises(TypeError, match="not a torch.optim.Optimizer"):
        ScheduleFree(object())


def test_distance_at_z_is_the_stored_z_in_both_modes():
    """[C1]'s R_t uses ‖z_t − z_0‖: before a step it is 0; after steps it is ‖state z − origin‖ computed directly, in
    train and in eval mode (the swap moves the parameters, not z)."""
    init = params()
    a = leaves(init)
    opt = ScheduleFree(torch.optim.SGD(a, lr=0.3), momentum=0.9)
    origin = [t.clone() for t in init]
    assert opt.distance_sq_at_z(origin) == 0.0
    run([(a, opt)], 5)
    direct = sum(float((opt.state[p]["z"].double() - o.double()).square().sum()) for p, o in zip(a, origin))
    assert direct > 0
    assert opt.distance_sq_at_z(origin) == pytest.approx(direct, rel=1e-12)
    opt.eval()
    assert opt.distance_sq_at_z(origin) == pytest.approx(direct, rel=1e-12)
    with pytest.raises(ValueError, match="origin has"):
        opt.distance_sq_at_z(origin[:-1])
