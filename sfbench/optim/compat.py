"""Loading state dicts: this package's own (older ones included) and the reference package's, converted exactly.

`schedulefree`'s SGDScheduleFree / AdamWScheduleFree (and their `…Closure` and `…Paper` variants) keep per parameter
`z` (and Adam's `exp_avg_sq`) — the same tensors as sfbench's `z` layout (`sfbench.optim.kernels`) — and per group the
same running scalars (`k`, `weight_sum`, `lr_max`, `train_mode`) under the same names. Converting one is therefore a
renaming of group keys plus sfbench's own settings (`weighting="lr_power"`, `lr_rule="schedule"`: the reference's
algorithm), and the run continues step for step as it would have under the reference. The closure variants keep x in
the parameters between steps and have no `train_mode`: they load in eval mode (call `optimizer.train()`).

Everything else — other `schedulefree` classes (RAdam, the `…Reference` ones with x, y, z, the wrapper), other
optimizers' state dicts, an SGD state loaded into an Adam-base optimizer or the reverse — is refused with the reason,
before anything is changed, instead of loading silently and failing at the first step.
"""

from __future__ import annotations

from typing import Any

#: Group keys every convertible `schedulefree` state dict has (besides the class's β keys).
_REFERENCE_GROUP = {"lr", "r", "k", "warmup_steps", "weight_sum", "lr_max", "weight_lr_power", "weight_decay"}
#: Keys it may have and that carry over or are dropped: the train/eval mode (not in the closure variants), its logged
#: step size, its backend choice (ours is a constructor argument), and what torch's LR schedulers and named
#: parameters add.
_REFERENCE_OPTIONAL = {"train_mode", "scheduled_lr", "foreach", "initial_lr", "param_names"}


def _class_keys(opt) -> tuple[set[str], set[str]]:
    """(this class's β keys, the other base's) — an SGD state can't be loaded into an Adam-base optimizer."""
    adam, sgd = {"betas", "eps"}, {"momentum"}
    return (adam, sgd) if opt._adam else (sgd, adam)


def _refuse(opt, why: str) -> ValueError:
    return ValueError(f"{type(opt).__name__}.load_state_dict: {why}")


def _check_state(opt, state: dict, allowed: tuple[str, ...]) -> None:
    for index, entry in state.items():
        keys = set(entry)
        layouts = keys & set(allowed)
        needed = {"exp_avg_sq"} if opt._adam else set()
        extra = keys - set(allowed) - needed
        if len(layouts) != 1 or not needed <= keys or extra:
            expected = " or ".join(sorted(allowed)) + (" with exp_avg_sq" if opt._adam else "")
            raise _refuse(opt, f"parameter {index} has state {sorted(keys)}; this optimizer keeps {expected}. "
                               "It is the state of a different optimizer; build that one, or start this one afresh")


def convert_state_dict(opt, state_dict: dict[str, Any]) -> dict[str, Any]:
    """`state_dict` in the form `opt` (an `SFSGD` / `SFAdamW`) loads; raises ValueError for what can't be converted.
    The input is not modified."""
    groups, state = state_dict.get("param_groups"), state_dict.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        raise _refuse(opt, "not an optimizer state dict (it needs 'state' and 'param_groups')")
    mine, other = _class_keys(opt)
    if all("lr_rule" in g for g in groups):          # sfbench's own: fill settings added since it was written
        if any(not mine <= set(g) for g in groups):
            raise _refuse(opt, f"the state dict is of the other base (its groups have {sorted(other)}, this "
                               f"optimizer's {sorted(mine)}): load it into {'SFSGD' if opt._adam else 'SFAdamW'}")
        _check_state(opt, state, ("z", "u", "x"))
        new_groups = [{**{k: v for k, v in opt.defaults.items() if k not in g}, **g} for g in groups]
        return {**state_dict, "param_groups": new_groups}
    return _from_reference(opt, groups, state, state_dict)


def _from_reference(opt, groups: list, state: dict, state_dict: dict) -> dict[str, Any]:
    mine, other = _class_keys(opt)
    new_groups = []
    for i, g in enumerate(groups):
        keys = set(g) - {"params"}
        if not _REFERENCE_GROUP <= keys or not (mine <= keys or other <= keys):
            raise _refuse(opt, f"parameter group {i} has keys {sorted(keys)}: neither an sfbench state dict nor one "
                               "of schedulefree's SGDScheduleFree / AdamWScheduleFree, the ones that convert")
        if other <= keys and not mine <= keys:
            theirs = "SGDScheduleFree" if "momentum" in keys else "AdamWScheduleFree"
            raise _refuse(opt, f"this is a schedulefree {theirs} state dict; load it into "
                               f"{'SFSGD' if theirs.startswith('SGD') else 'SFAdamW'}")
        unknown = keys - _REFERENCE_GROUP - mine - _REFERENCE_OPTIONAL
        if unknown:
            raise _refuse(opt, f"parameter group {i} has keys {sorted(unknown)} that SGDScheduleFree / "
                               "AdamWScheduleFree don't have (a different schedulefree optimizer, e.g. RAdam or a "
                               "…Reference class): it can't be converted exactly")
        new = dict(opt.defaults)
        new.update({k: g[k] for k in keys & (_REFERENCE_GROUP | mine | {"initial_lr", "param_names"})})
        new["params"] = g["params"]
        if "betas" in new:
            new["betas"] = tuple(new["betas"])
        beta = new["betas"][0] if opt._adam else new["momentum"]
        if beta == 0:
            raise _refuse(opt, f"parameter group {i} has β = 0, which schedulefree's z-only state can't represent")
        new.update(weighting="lr_power", lr_rule="schedule", train_mode=bool(g.get("train_mode", False)))
        new["scheduled_lr"] = new["last_lr"] = float(g.get("scheduled_lr", 0.0))
        k, total = int(new["k"]), float(new["weight_sum"])
        if k > 0 and total > 0:      # c of the last step taken: w_{k−1} / Σ w
            new["last_c"] = (k ** new["r"]) * (new["lr_max"] ** new["weight_lr_power"]) / total
        new_groups.append(new)
    _check_state(opt, state, ("z",))
    return {**state_dict, "state": {i: dict(s) for i, s in state.items()}, "param_groups": new_groups}
