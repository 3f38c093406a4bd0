"""Loading state dicts: sfbench's own (older ones included) and the reference package's, converted exactly.

`schedulefree`'s SGDScheduleFree / AdamWScheduleFree (and `…Closure`, `…Paper`) keep the same per-parameter tensors
(`z`, `exp_avg_sq`) and group scalars as sfbench's `z` state; converting adds sfbench's settings for their algorithm.
Closure variants load in eval mode. Anything else is refused with the reason, before anything changes.
"""

from __future__ import annotations

from typing import Any

#: Group keys every convertible `schedulefree` state dict has (besides the class's β keys), and keys it may have:
#: the mode (not in the closure variants), its logged step size, its backend choice, what LR schedulers add.
_REFERENCE_GROUP = {"lr", "r", "k", "warmup_steps", "weight_sum", "lr_max", "weight_lr_power", "weight_decay"}
_REFERENCE_OPTIONAL = {"train_mode", "scheduled_lr", "foreach", "initial_lr", "param_names"}


def _refuse(opt, why: str) -> ValueError:
    return ValueError(f"{type(opt).__name__}.load_state_dict: {why}")


def _check_state(opt, state: dict, allowed: set[str]) -> None:
    needed = {"exp_avg_sq"} if opt._adam else set()
    for index, entry in state.items():
        keys = set(entry)
        if len(keys & allowed) != 1 or not needed <= keys or keys - allowed - needed:
            expected = " or ".join(sorted(allowed)) + (" with exp_avg_sq" if opt._adam else "")
            raise _refuse(opt, f"parameter {index} has state {sorted(keys)}; this optimizer keeps {expected}. "
                               "It is the state of a different optimizer; build that one, or start this one afresh")


def convert_state_dict(opt, state_dict: dict[str, Any]) -> dict[str, Any]:
    """`state_dict` in the form `opt` (an `SFSGD` / `SFAdamW`) loads (the input is not modified); raises ValueError
    for what can't be converted."""
    groups, state = state_dict.get("param_groups"), state_dict.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict):
        raise _refuse(opt, "not an optimizer state dict (it needs 'state' and 'param_groups')")
    mine, other = ({"betas", "eps"}, {"momentum"}) if opt._adam else ({"momentum"}, {"betas", "eps"})
    into = "SFSGD" if opt._adam else "SFAdamW"
    if all("lr_rule" in g for g in groups):          # sfbench's own: fill in settings added since it was written
        if any(not mine <= set(g) for g in groups):
            raise _refuse(opt, f"the state dict is of the other base (its groups have {sorted(other)}, this "
                               f"optimizer's {sorted(mine)}): load it into {into}")
        _check_state(opt, state, {"z", "u", "x"})
        return {**state_dict, "param_groups": [{**opt.defaults, **g} for g in groups]}
    new_groups = []
    for i, g in enumerate(groups):
        keys = set(g) - {"params"}
        if not _REFERENCE_GROUP <= keys or not (mine <= keys or other <= keys):
            raise _refuse(opt, f"parameter group {i} has keys {sorted(keys)}: neither an sfbench state dict nor one "
                               "of schedulefree's SGDScheduleFree / AdamWScheduleFree, the ones that convert")
        if not mine <= keys:
            raise _refuse(opt, f"this is a schedulefree {'SGD' if 'momentum' in keys else 'AdamW'}ScheduleFree state "
                               f"dict; load it into {into}")
        unknown = keys - _REFERENCE_GROUP - mine - _REFERENCE_OPTIONAL
        if unknown:
            raise _refuse(opt, f"parameter group {i} has keys {sorted(unknown)} that SGDScheduleFree / "
                               "AdamWScheduleFree don't have (a different schedulefree optimizer, e.g. RAdam or a "
                               "…Reference class): it can't be converted exactly")
        new = {**opt.defaults, **{k: g[k] for k in keys if k not in ("foreach", "scheduled_lr")}, "params": g["params"],
               "weighting": "lr_power", "lr_rule": "schedule", "train_mode": bool(g.get("train_mode", False))}
        new["scheduled_lr"] = new["last_lr"] = float(g.get("scheduled_lr", 0.0))
        if "betas" in new:
            new["betas"] = tuple(new["betas"])
        if (new["betas"][0] if opt._adam else new["momentum"]) == 0:
            raise _refuse(opt, f"parameter group {i} has β = 0, which schedulefree's z-only state can't represent")
        new_groups.append(new)
    _check_state(opt, state, {"z"})
    return {**state_dict, "state": {i: dict(s) for i, s in state.items()}, "param_groups": new_groups}
