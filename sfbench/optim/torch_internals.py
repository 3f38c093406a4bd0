"""The one place sfbench reaches into torch's internals. `LeanOptimizer`: torch wraps `add_param_group`, `zero_grad`,
`state_dict` and `load_state_dict` in `_disable_dynamo`, whose first call imports torch._dynamo (seconds of start-up);
until something has imported it nothing can be compiling, so the plain method runs, then torch's — outside the
checked torch versions, torch's always.
`init_as_optimizer`: an optimizer made of other optimizers, which shares their param groups.
"""

from __future__ import annotations

import functools
import sys
from collections import OrderedDict

import torch
from torch.optim import Optimizer

_CHECKED = ((2, 9), (2, 14))       # torch versions (major, minor): this project's floor to the newest run here
_VERSION = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])


def _lean(method):
    plain = getattr(method, "__wrapped__", None)
    if plain is None or not _CHECKED[0] <= _VERSION <= _CHECKED[1]:
        return method
    return functools.wraps(plain)(lambda self, *a, **k: (method if "torch._dynamo" in sys.modules else plain)(
        self, *a, **k))


class LeanOptimizer(Optimizer):
    """`torch.optim.Optimizer` whose bookkeeping methods don't import torch._dynamo (module docstring)."""

    add_param_group, zero_grad = _lean(Optimizer.add_param_group), _lean(Optimizer.zero_grad)
    state_dict, load_state_dict = _lean(Optimizer.state_dict), _lean(Optimizer.load_state_dict)


def init_as_optimizer(opt: Optimizer, defaults: dict, param_groups: list) -> None:
    """What `torch.optim.Optimizer.__init__` sets, for an optimizer made of other optimizers: `param_groups` is their
    list (the same dicts, so LR schedulers and `zero_grad` act on them), nothing is re-validated."""
    opt.defaults = defaults
    for name in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
                 "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks",
                 "_optimizer_load_state_dict_post_hooks"):
        setattr(opt, name, OrderedDict())
    opt._patch_step_function()
    opt.param_groups = param_groups
    opt._warned_capturable_if_run_uncaptured = True
