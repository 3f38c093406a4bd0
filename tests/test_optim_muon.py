"""Muon baselines: `MuonAdamW` — torch.optim.Muon on hidden weight matrices, AdamW on the rest — and
`sf_muon` (ScheduleFree around it); `opt=muon` / `opt=sf_muon` on the small GPT against its unigram baseline."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from sfbench.optim import MuonAdamW, ScheduleFree, parameters_for, sf_muon
from sfbench.tracking import read_summary
from test_cli import metric_rows, only_run, run_cli


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.wte = torch.nn.Embedding(11, 8)
        self.hidden = torch.nn.Linear(8, 12)
        self.norm = torch.nn.LayerNorm(12)
        self.proj = torch.nn.Linear(12, 8, bias=False)
        self.lm_head = torch.nn.Linear(8, 11, bias=False)

    def forward(self, idx):
        return self.lm_head(self.proj(self.norm(torch.tanh(self.hidden(self.wte(idx))))))


def loss_of(model, t: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(t)
    idx = torch.randint(0, 11, (6,), generator=g)
    return torch.nn.functional.cross_entropy(model(idx), torch.randint(0, 11, (6,), generator=g))


def train(model, opt, steps: int, start: int = 0) -> None:
    for t in range(start, start + steps):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()


def parts(opt: MuonAdamW) -> dict[str, set[int]]:
    return {type(o).__name__: {id(p) for g in o.param_groups for p in g["params"]} for o in opt.optimizers}


def test_named_parameters_put_embeddings_and_head_on_adamw():
    model = TinyLM()
    split = parts(MuonAdamW(model.named_parameters()))
    assert split["Muon"] == {id(model.hidden.weight), id(model.proj.weight)}
    assert split["AdamW"] == {id(p) for p in (model.wte.weight, model.lm_head.weight, model.hidden.bias,
                                              model.norm.weight, model.norm.bias)}
    plain = parts(MuonAdamW(model.parameters()))      # without names: every matrix is Muon's
    assert id(model.wte.weight) in plain["Muon"] and id(model.norm.weight) in plain["AdamW"]


def test_groups_with_use_muon_and_their_errors():
    model = TinyLM()
    opt = MuonAdamW([{"params": [model.proj.weight], "use_muon": True, "lr": 0.05},
                     {"params": [model.hidden.weight, model.wte.weight], "use_muon": False}], lr=0.01)
    assert parts(opt)["Muon"] == {id(model.proj.weight)} and opt.param_groups[0]["lr"] == 0.05
    with pytest.raises(ValueError, match="use_muon"):
        MuonAdamW([{"params": [model.proj.weight]}])
    with pytest.raises(ValueError, match="adjust_lr_fn="):
        MuonAdamW(model.parameters(), adjust_lr_fn="bigger")
    with pytest.raises(ValueError, match="momentum="):
        MuonAdamW(model.parameters(), momentum=1.0)


def test_steps_are_torch_muon_and_adamw_stepped_side_by_side():
    """One optimizer, one LR scheduler: bitwise what the two torch optimizers do with the same split, lr and decay."""
    a, b = TinyLM(), TinyLM()
    combined = MuonAdamW(a.named_parameters(), lr=0.02, weight_decay=0.1, adamw_betas=(0.8, 0.9))
    names = dict(b.named_parameters())
    muon_names = {"hidden.weight", "proj.weight"}
    muon = torch.optim.Muon([names[n] for n in muon_names], lr=0.02, weight_decay=0.1,
                            adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW([p for n, p in b.named_parameters() if n not in muon_names], lr=0.02,
                              betas=(0.8, 0.9), weight_decay=0.1)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1 / (1 + k)) for o in (combined, muon, adamw)]
    for t in range(6):
        combined.zero_grad(), muon.zero_grad(), adamw.zero_grad()
        loss_of(a, t).backward(), loss_of(b, t).backward()
        combined.step(), muon.step(), adamw.step()
        for s in schedules:
            s.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_zero_grad_reaches_a_group_added_to_a_part():
    """`Combined.add_param_group` sends users to the parts; a group they add there is zeroed too (plain and
    schedule-free)."""
    for make in (lambda ps: MuonAdamW(ps, lr=1e-3), lambda ps: sf_muon(ps, lr=1e-3)):
        model = torch.nn.Linear(4, 3)
        opt = make(model.named_parameters())
        extra = torch.nn.Parameter(torch.ones(3))
        base = opt.base if isinstance(opt, ScheduleFree) else opt
        base.optimizers[-1].add_param_group({"params": [extra]})
        extra.grad = torch.ones(3)
        opt.zero_grad()
        assert extra.grad is None


def test_state_dict_round_trip_copies_and_refusal():
    a, b = TinyLM(), TinyLM()
    opt = MuonAdamW(a.named_parameters(), lr=0.02)
    train(a, opt, 3)
    b.load_state_dict(a.state_dict())
    resumed = MuonAdamW(b.named_parameters(), lr=0.5)
    resumed.load_state_dict(copy.deepcopy(opt.state_dict()))
    a2, copied = copy.deepcopy((a, opt))
    for model, o in ((a, opt), (b, resumed), (a2, copied)):
        train(model, o, 3, start=3)
    for other in (b, a2):
        for p, q in zip(a.parameters(), other.parameters()):
            assert torch.equal(p, q)
    with pytest.raises(ValueError, match="expected the state of 2 optimizers"):
        resumed.load_state_dict(torch.optim.AdamW(b.parameters()).state_dict())


def test_sf_muon_is_schedule_free_around_muon_adamw():
    model = TinyLM()
    make = functools.partial(sf_muon, lr=0.01, momentum=0.9, weight_decay=0.01)     # as Hydra's _partial_ builds it
    opt = make(parameters_for(make, model))
    assert isinstance(opt, ScheduleFree) and isinstance(opt.base, MuonAdamW)
    assert opt.weight_decay_at_y == 0.01 and opt.momentum == 0.9 and opt.theory_bound == "C1"
    assert parts(opt.base)["Muon"] == {id(model.hidden.weight), id(model.proj.weight)}
    before = loss_of(model, 0).item()
    train(model, opt, 40)
    opt.eval()
    assert loss_of(model, 0).item() < before
    plain = functools.partial(torch.optim.AdamW, lr=0.1)
    assert not isinstance(next(iter(parameters_for(plain, model))), tuple)


# -- the configs on the small GPT -------------------------------------------------------------------------------------

SMALL = ["task=gpt", "logger=none", "task.data.block_size=32", "task.data.batch_size=8", "task.eval_batches=2",
         "task.model.n_layer=1", "task.model.n_embd=32", "task.model.n_head=2", "trainer.bn_recompute_batches=0"]


@pytest.mark.parametrize("opt", ["muon", "sf_muon"])
def test_configs_run(in_run_env, opt):
    assert run_cli([*SMALL, f"opt={opt}", "trainer.steps=4", "trainer.eval_every=0"]) == 0
    summary = read_summary(only_run(in_run_env))
    assert summary["status"] == "completed" and summary["theory"]["bound"] == ("C1" if opt == "sf_muon" else "C3")


@pytest.mark.slow
@pytest.mark.parametrize("opt", ["muon", "sf_muon"])
def test_gpt_below_the_unigram_baseline_in_the_default_steps(in_run_env, opt):
    """`python -m sfbench task=gpt opt=muon|sf_muon` with every default (600 steps, 0.37M parameters)."""
    assert run_cli(["task=gpt", f"opt={opt}", "logger=none"]) == 0
    run_dir = only_run(in_run_env)
    assert read_summary(run_dir)["status"] == "completed"
    last = [r for r in metric_rows(run_dir) if "eval/loss" in r][-1]
    assert last["step"] == 600 and last["eval/loss"] < last["eval/unigram_ce"] - 0.5
