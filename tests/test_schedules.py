"""Tests for sfbench.optim.schedules (docs/theory.md section B; integrals from [C2]).

Expected values are computed here from the closed forms of section B, written independently of the module,
or from properties of those forms (monotonicity, slopes, integrals) -- not copied from the module's output.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from sfbench.optim.schedules import COOLDOWNS, SCHEDULES, Schedule, make_schedule

# One representative configuration per schedule (and per cool-down shape), used by the generic tests.
CONFIGS = [
    dict(name="constant", total_steps=50),
    dict(name="cosine", total_steps=50),
    dict(name="cosine", total_steps=50, final_frac=0.1),
    dict(name="wsd", total_steps=50),
    dict(name="wsd", total_steps=50, decay_steps=13, final_frac=0.05),
    dict(name="wsd", total_steps=50, cooldown="1-sqrt", decay_frac=0.5),
    dict(name="linear", total_steps=50),
    dict(name="linear", total_steps=50, final_frac=0.25),
    dict(name="linear_growth", total_steps=50),
    dict(name="poly_decay", total_steps=50),
    dict(name="poly_decay", total_steps=50, power=2.0),
]


def _id(cfg):
    return "-".join(f"{v}" for v in cfg.values())


def test_schedule_names_are_the_rows_of_section_b():
    assert set(SCHEDULES) == {"constant", "cosine", "wsd", "linear", "linear_growth", "poly_decay"}
    assert set(COOLDOWNS) == {"linear", "1-sqrt"}
    assert {c["name"] for c in CONFIGS} == set(SCHEDULES)


def test_make_schedule_builds_the_dataclass_and_it_is_frozen():
    s = make_schedule("wsd", 100, warmup_steps=5, decay_steps=10, cooldown="1-sqrt", final_frac=0.1)
    assert s == Schedule("wsd", 100, warmup_steps=5, decay_steps=10, cooldown="1-sqrt", final_frac=0.1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.total_steps = 3


# -- each row of section B -----------------------------------------------------------------------------------


def test_constant_is_one_everywhere():
    s = make_schedule("constant", 37)
    assert np.array_equal(s.array(100), np.ones(100))  # also past the horizon
    assert s(0) == 1.0 and s(36) == 1.0 and s(1000) == 1.0


@pytest.mark.parametrize("final", [0.0, 0.1])
@pytest.mark.parametrize("W", [0, 10])
def test_cosine(W, final):
    T = 110  # T - W even, so the decay has an exact midpoint step
    s = make_schedule("cosine", T, warmup_steps=W, final_frac=final)
    assert s(W) == pytest.approx(1.0, abs=1e-15)  # end of warm-up (start of the decay)
    assert s((W + T) // 2) == pytest.approx((1 + final) / 2, abs=1e-12)  # cos(pi/2) = 0
    # a quarter into the decay: cos(pi/4) = sqrt(2)/2
    q = W + (T - W) // 4 if (T - W) % 4 == 0 else None
    if q is not None:
        assert s(q) == pytest.approx(final + (1 - final) * (0.5 + math.sqrt(2) / 4), abs=1e-12)
    h = s.array()
    assert np.all(np.diff(h[W:]) <= 0)  # non-increasing after warm-up
    assert h[-1] > final  # still positive at the last step ...
    assert h[-1] - final < (1 - final) * (math.pi / (T - W)) ** 2  # ... and close to the end value
    assert s(T) == final and s(T + 50) == final  # stays at the end value past the horizon


def test_cosine_with_warmup_is_the_shifted_cosine_without():
    T, W = 120, 20
    warm = make_schedule("cosine", T, warmup_steps=W, final_frac=0.2)
    plain = make_schedule("cosine", T - W, final_frac=0.2)
    for t in range(W):
        assert warm(t) == pytest.approx((t + 1) / W, abs=1e-15)
    assert warm.array(T + 5)[W:] == pytest.approx(plain.array(T - W + 5), abs=1e-12)


@pytest.mark.parametrize("final", [0.0, 0.2])
@pytest.mark.parametrize("W", [0, 8])
def test_wsd_linear_cooldown(W, final):
    T, D = 100, 20
    s = make_schedule("wsd", T, warmup_steps=W, decay_steps=D, final_frac=final)
    h = s.array()
    assert np.all(h[W : T - D] == 1.0)  # exactly 1 on [W, T - D)
    # the cool-down is the straight line f + (1 - f)(T - t)/D: slope -(1 - f)/D, 1 at T - D, f at T
    t = np.arange(T - D, T)
    assert h[T - D :] == pytest.approx(final + (1 - final) * (T - t) / D, abs=1e-12)
    assert np.diff(h[T - D :]) == pytest.approx(np.full(D - 1, -(1 - final) / D), abs=1e-12)
    assert h[-1] == pytest.approx(final + (1 - final) / D, abs=1e-12) and h[-1] > 0
    assert s(T) == final and s(10 * T) == final


@pytest.mark.parametrize("final", [0.0, 0.2])
def test_wsd_1_sqrt_cooldown_hand_computed_points(final):
    T, D = 200, 64
    s = make_schedule("wsd", T, decay_steps=D, cooldown="1-sqrt", final_frac=final)
    # 1 - sqrt((t - T + D)/D) at t = T - D + k with k/D = 0, 1/16, 1/4, 9/16: sqrt = 0, 1/4, 1/2, 3/4
    for k, one_minus_sqrt in [(0, 1.0), (4, 0.75), (16, 0.5), (36, 0.25)]:
        assert s(T - D + k) == pytest.approx(final + (1 - final) * one_minus_sqrt, abs=1e-12)
    assert np.all(s.array()[: T - D] == 1.0)
    assert s(T - 1) == pytest.approx(final + (1 - final) * (1 - math.sqrt((D - 1) / D)), abs=1e-12)
    assert s(T) == final


def test_wsd_decay_length_from_fraction_or_steps():
    assert make_schedule("wsd", 1000).decay_length == 200  # default decay_frac = 0.2
    assert make_schedule("wsd", 1000, decay_frac=0.25).decay_length == 250
    assert make_schedule("wsd", 1000, decay_frac=0.25, decay_steps=40).decay_length == 40  # steps override
    assert make_schedule("wsd", 3, decay_frac=0.1).decay_length == 1  # at least one step
    s = make_schedule("wsd", 1000, decay_frac=0.25)
    assert s(749) == 1.0 and s(750) == 1.0 and s(751) == pytest.approx(249 / 250, abs=1e-15)


@pytest.mark.parametrize("final", [0.0, 0.25])
def test_linear(final):
    T = 80
    s = make_schedule("linear", T, final_frac=final)
    for t in [0, 1, 20, 40, 79]:
        assert s(t) == pytest.approx(final + (1 - final) * (1 - t / T), abs=1e-12)
    assert s(0) == 1.0 and s(T - 1) > final
    assert s(T) == final and s(T + 7) == final


def test_linear_growth_is_t_plus_one():
    T = 30
    s = make_schedule("linear_growth", T)
    assert np.array_equal(s.array(), np.arange(1, T + 1, dtype=float))
    assert s(T) == T + 1 and s(T + 100) == T + 1  # clamped at t = T past the horizon


@pytest.mark.parametrize(
    "p, closed_form",
    [
        (0.0, lambda t: 1.0),
        (0.5, lambda t: 1 / math.sqrt(t + 1)),
        (1.0, lambda t: 1 / (t + 1)),
        (2.0, lambda t: 1 / (t + 1) ** 2),
    ],
)
def test_poly_decay(p, closed_form):
    s = make_schedule("poly_decay", 60, power=p)
    for t in [0, 1, 3, 24, 59]:
        assert s(t) == pytest.approx(closed_form(t), rel=1e-12)


@pytest.mark.parametrize("cfg", [c for c in CONFIGS if c["name"] != "cosine"], ids=_id)
@pytest.mark.parametrize("W", [1, 7, 25])
def test_warmup_multiplies_the_rest(cfg, W):
    """[B warmup]: h(t) = min(1, (t + 1)/W) * rest(t). (cosine: see test_cosine_with_warmup_...)"""
    rest = Schedule(**cfg)
    warm = Schedule(**{**cfg, "warmup_steps": W})
    t = np.arange(2 * rest.total_steps)
    assert warm.array(t.size) == pytest.approx(np.minimum(1, (t + 1) / W) * rest.array(t.size), rel=1e-14)
    for k in range(W):
        assert warm(k) == pytest.approx((k + 1) / W * rest(k), rel=1e-14)


# -- [C2] integrals A = int h, B = int h^2 over [0, 1], as means over a long horizon -------------------------


@pytest.mark.parametrize(
    "name, options, A, B",
    [
        ("constant", {}, 1.0, 1.0),
        ("cosine", {}, 1 / 2, 3 / 8),
        # WSD with linear warm-up fraction w and linear decay fraction d: A = 1 - (w+d)/2, B = 1 - 2(w+d)/3
        ("wsd", dict(decay_frac=0.2), 1 - 0.2 / 2, 1 - 2 * 0.2 / 3),
        ("wsd", dict(warmup_steps=10_000, decay_frac=0.2), 1 - 0.3 / 2, 1 - 2 * 0.3 / 3),
        ("wsd", dict(warmup_steps=5_000, decay_frac=0.5), 1 - 0.55 / 2, 1 - 2 * 0.55 / 3),
        # not in [C2], but elementary: int_0^1 (1 - x) = 1/2, int_0^1 (1 - x)^2 = 1/3;
        # 1-sqrt cool-down over fraction d: int (1 - sqrt u) = 1/3, int (1 - sqrt u)^2 = 1 - 4/3 + 1/2 = 1/6
        ("linear", {}, 1 / 2, 1 / 3),
        ("wsd", dict(decay_frac=0.3, cooldown="1-sqrt"), 1 - 0.3 + 0.3 / 3, 1 - 0.3 + 0.3 / 6),
    ],
)
def test_integrals_match_c2_closed_forms(name, options, A, B):
    h = make_schedule(name, 100_000, **options).array()
    assert h.mean() == pytest.approx(A, abs=1e-3)
    assert (h**2).mean() == pytest.approx(B, abs=1e-3)


# -- array, __call__ and torch ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
@pytest.mark.parametrize("W", [0, 9])
def test_array_agrees_with_call(cfg, W):
    s = Schedule(**{**cfg, "warmup_steps": W})
    assert s.array().shape == (s.total_steps,)
    n = s.total_steps + 20  # also past the horizon
    h = s.array(n)
    assert h.dtype == np.float64 and h.shape == (n,)
    assert np.max(np.abs(h - np.array([s(t) for t in range(n)]))) <= 1e-12
    assert s.array(0).shape == (0,)


@pytest.mark.parametrize("cfg", CONFIGS, ids=_id)
def test_lr_scheduler_follows_gamma_times_h(cfg):
    """LambdaLR: lr = base * h(0) after construction and base * h(k) after the k-th scheduler.step()."""
    s = Schedule(**{**cfg, "warmup_steps": 5})
    T, gammas = s.total_steps, (0.1, 0.03)
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    q = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([{"params": [p], "lr": gammas[0]}, {"params": [q], "lr": gammas[1]}])
    sched = s.lr_scheduler(opt)
    seen = [[], []]
    for _ in range(T):
        for i, group in enumerate(opt.param_groups):
            seen[i].append(group["lr"])
        opt.zero_grad()
        (p + q).sum().backward()  # gradient 1, so each SGD step moves the parameter by -lr
        opt.step()
        sched.step()
    h = s.array()
    for i, gamma in enumerate(gammas):
        assert np.array(seen[i]) == pytest.approx(gamma * h, rel=1e-12, abs=1e-15)
    # the lrs were really used by the optimizer: the parameters moved by -sum_t gamma h(t)
    assert p.item() == pytest.approx(-gammas[0] * h.sum(), rel=1e-10)
    assert q.item() == pytest.approx(-gammas[1] * h.sum(), rel=1e-10)
    assert opt.param_groups[0]["lr"] == pytest.approx(gammas[0] * s(T), rel=1e-12, abs=1e-15)
    sched.state_dict()  # saving works (the schedule itself is config, not state)


# -- validation ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        (dict(name="exp", total_steps=10), "name"),
        (dict(name="Cosine", total_steps=10), "name"),
        (dict(name="constant", total_steps=0), "total_steps"),
        (dict(name="constant", total_steps=-5), "total_steps"),
        (dict(name="constant", total_steps=10.0), "total_steps"),
        (dict(name="cosine", total_steps=None), "total_steps"),
        (dict(name="wsd", total_steps=None, decay_steps=5), "total_steps"),
        (dict(name="constant", total_steps=10, warmup_steps=-1), "warmup_steps"),
        (dict(name="wsd", total_steps=10, warmup_steps=11), "warmup_steps"),
        (dict(name="cosine", total_steps=10, warmup_steps=10), "warmup_steps"),
        (dict(name="cosine", total_steps=10, warmup_steps=12), "warmup_steps"),
        (dict(name="wsd", total_steps=10, decay_frac=0.0), "decay_frac"),
        (dict(name="wsd", total_steps=10, decay_frac=-0.1), "decay_frac"),
        (dict(name="wsd", total_steps=10, decay_frac=1.5), "decay_frac"),
        (dict(name="wsd", total_steps=10, decay_frac=float("nan")), "decay_frac"),
        (dict(name="wsd", total_steps=10, decay_steps=0), "decay_steps"),
        (dict(name="wsd", total_steps=10, decay_steps=11), "decay_steps"),
        (dict(name="wsd", total_steps=10, decay_steps=2.5), "decay_steps"),
        (dict(name="wsd", total_steps=10, cooldown="exp"), "cooldown"),
        (dict(name="wsd", total_steps=10, cooldown="sqrt"), "cooldown"),
        (dict(name="cosine", total_steps=10, final_frac=-0.1), "final_frac"),
        (dict(name="linear", total_steps=10, final_frac=1.01), "final_frac"),
        (dict(name="poly_decay", total_steps=10, power=-0.5), "power"),
        (dict(name="poly_decay", total_steps=10, power=float("inf")), "power"),
    ],
)
def test_invalid_options_raise_value_error_naming_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=arg) as err:
        make_schedule(**kwargs)
    assert repr(kwargs[arg])[:3] in str(err.value)  # the message shows the value too


def test_error_message_lists_the_allowed_values():
    with pytest.raises(ValueError) as err:
        make_schedule("wsd", 10, cooldown="exp")
    assert str(err.value) == "cooldown='exp' is not allowed; choose one of 'linear', '1-sqrt'"
    with pytest.raises(ValueError) as err:
        make_schedule("exp", 10)
    assert all(repr(n) in str(err.value) for n in SCHEDULES)


def test_valid_edge_cases_are_accepted():
    make_schedule("constant", 1)
    make_schedule("cosine", 10, warmup_steps=9)
    make_schedule("wsd", 10, warmup_steps=10, decay_steps=10, decay_frac=1.0)
    make_schedule("linear", 10, final_frac=1.0)
    make_schedule("poly_decay", 10, power=0)
    assert make_schedule("linear", 10, final_frac=1.0).array(15) == pytest.approx(np.ones(15))


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan")])
def test_negative_step_or_length_raises(bad):
    s = make_schedule("cosine", 10)
    with pytest.raises(ValueError, match="t="):
        s(bad)
    with pytest.raises(ValueError, match="n="):
        s.array(bad)
