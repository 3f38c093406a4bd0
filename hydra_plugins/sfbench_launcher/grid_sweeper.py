"""`hydra/sweeper=grid`: Hydra's basic sweeper (the Cartesian product of the swept values) with a cap per choice, for
grids that are not rectangular — the SFS authors sweep AdamW's lr only up to 0.05 and IAM-Adam's up to 0.1 while the
other methods go to 0.3. Settings: `configs/hydra/sweeper/grid.yaml`.

Hydra discovers this class by scanning the `hydra_plugins` namespace package, as it does the Slurm launcher; the
module imports nothing beyond Hydra at module level.
"""

from __future__ import annotations

from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.errors import HydraException


def _number(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise HydraException(f"hydra.sweeper.limits: {where} has {text!r}, not a number; a limit caps a numeric "
                             "key") from None


class GridSweeper(BasicSweeper):
    """The basic sweeper's jobs, less those a limit rules out. `limits` is a list of
    `{when: {KEY: VALUE, …}, key: KEY2, max: NUMBER}`: a job whose overrides set every KEY to its VALUE and KEY2 above
    NUMBER is not launched (nor validated, nor numbered). Jobs keep the basic sweeper's order."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None,
                 limits: list[dict[str, Any]] | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.limits = [dict(limit) for limit in (limits or [])]
        for limit in self.limits:
            if sorted(limit) != ["key", "max", "when"] or not hasattr(limit["when"], "items"):
                raise HydraException(f"hydra.sweeper.limits: {limit} is not a limit; write "
                                     "{when: {KEY: VALUE}, key: KEY2, max: NUMBER}")

    def allowed(self, job: list[str]) -> bool:
        """Whether no limit rules out the job (its overrides as KEY=VALUE strings)."""
        values = dict(o.lstrip("+~").split("=", 1) for o in job if "=" in o)
        for limit in self.limits:
            key = str(limit["key"])
            applies = all(values.get(k) == str(v) for k, v in limit["when"].items())
            if applies and key in values and _number(values[key], f"the job's {key}") > \
                    _number(str(limit["max"]), "a limit's max"):
                return False
        return True

    def split_arguments(self, overrides, max_batch_size):   # called by BasicSweeper.sweep as self.split_arguments
        jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
        kept = [job for job in jobs if self.allowed(job)]
        if not kept:
            raise HydraException(f"hydra.sweeper.limits rule out all {len(jobs)} jobs of the sweep; raise a max "
                                 "or sweep lower values")
        return list(self.split_overrides_to_chunks(kept, max_batch_size))
