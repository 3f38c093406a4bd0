"""Whose directory is it, and which run: sfbench writes only into an empty directory or its own run's, and resumes
a run only under the configuration it was started with.

A run's identity is its resolved configuration without what doesn't change the run (`VOLATILE`: the device, logging,
the evaluation cadence — evaluating never changes training — and `paths.*`; a value under a `paths.*` root is kept
relative to it, so a moved cache or stand-in folder resumes). `config.yaml` holds it; summary.json keeps its digest and every checkpoint the identity itself, so a
`config.yaml` that is missing, emptied, truncated or edited can't let another configuration resume into the run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..files import TEMP_MARK
from .run_record import CONFIG, METRICS, SUMMARY, RecordDamaged, flatten, read_config, read_summary

VOLATILE = ("trainer.device", "trainer.dist_timeout", "trainer.log_every_s", "trainer.on_gap", "trainer.eval_every", "trainer.eval_share",
            "logger.", "choices.logger", "paths.")
#: what sfbench may leave in a run directory besides its record: the lock, its temporary files, the Slurm launcher's
#: job record, W&B's offline folder and id
MADE_BY_SFBENCH = (".lock", ".slurm.json", "slurm.json", "wandb", "wandb_id.txt", "model.pt", "theory_fit.json")
RECORD = (CONFIG, SUMMARY, METRICS, "checkpoints")


def identity(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that make the run (module docstring), flattened; a value under one of the config's own `paths.*`
    (the cache, the stand-ins: `task.cache_dir`, a smoke run's teacher) is written relative to it."""
    flat = flatten(config)
    roots = sorted(((v.rstrip("/"), k) for k, v in flat.items() if k.startswith("paths.") and isinstance(v, str)
                    and v.strip("/")), key=lambda root: -len(root[0]))

    def relative(value: Any) -> Any:
        for root, key in roots if isinstance(value, str) else ():
            if value == root or value.startswith(root + "/"):
                return "${" + key + "}" + value[len(root):]
        return value
    return {k: relative(v) for k, v in flat.items() if not k.startswith(VOLATILE)}


def digest(config: Mapping[str, Any]) -> str:
    """A short hash of the run's identity."""
    text = json.dumps(identity(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def differences(recorded: Mapping[str, Any], asked: Mapping[str, Any]) -> list[str]:
    """Keys of `recorded`'s identity whose value `asked` doesn't have (a key only `asked` has was added by a newer
    sfbench, not a different run)."""
    a, b = identity(recorded), identity(asked)
    return sorted(k for k in a if a[k] != b.get(k))


class NotARun(RecordDamaged):
    """The directory holds files but no sfbench record: sfbench won't write there."""

    def __init__(self, run_dir: Path, names: list[str]):
        self.path = Path(run_dir)
        shown = ", ".join(names[:4]) + (", …" if len(names) > 4 else "")
        ValueError.__init__(self, f"{run_dir} holds files ({shown}) but no sfbench run record (config.yaml, "
                                  "summary.json, metrics.jsonl, checkpoints/); sfbench writes only into an empty "
                                  "directory or its own run's: pick another with hydra.run.dir=…, or empty this one")


def check_run_dir(run_dir: str | os.PathLike) -> None:
    """Raise `NotARun` when `run_dir` holds anything but an sfbench run (nothing is touched)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    names = sorted(entry.name for entry in run_dir.iterdir())
    if any(name in RECORD for name in names):
        return
    foreign = [n for n in names if n not in MADE_BY_SFBENCH and TEMP_MARK not in n]
    if foreign:
        raise NotARun(run_dir, foreign)


def check_same_run(run_dir: str | os.PathLike, asked: Mapping[str, Any]) -> None:
    """Raise `RecordDamaged` (one line: the file, what is wrong, what to do) unless the run in `run_dir`, if any,
    was started with the configuration `asked`: a run record without a readable `config.yaml`, a `config.yaml` that
    no longer matches summary.json's digest, or a different configuration."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    has_run = any((run_dir / name).exists() for name in (SUMMARY, METRICS, "checkpoints/last.pt",
                                                          "checkpoints/prev.pt"))
    remedy = ("Restore it from a copy of the run, or pick another directory with hydra.run.dir=… (or remove this one) "
              "to train again")
    recorded = read_config(run_dir)         # raises RecordDamaged when it is not YAML
    if not recorded:
        if has_run:
            what = "missing" if not path.exists() else "empty"
            raise RecordDamaged(path, f"{what}, so the configuration of the run there can't be told", remedy)
        return
    summary = read_summary(run_dir) if (run_dir / SUMMARY).exists() else {}
    kept = summary.get("config_digest") if isinstance(summary, dict) else None
    if kept is not None and kept != digest(recorded):
        raise RecordDamaged(path, "it no longer matches the configuration digest in summary.json (changed or cut "
                                  "short after the run wrote it)", remedy)
    diff = differences(recorded, asked)
    if diff:
        raise DifferentRun(run_dir, diff)


class DifferentRun(RecordDamaged):
    """The directory holds a run with another configuration."""

    def __init__(self, run_dir: Path, keys: list[str]):
        self.path = Path(run_dir)
        ValueError.__init__(self, f"{run_dir} holds a run with a different configuration (differs at: "
                                  f"{', '.join(keys[:5])}); pick another directory with hydra.run.dir=… or remove it")
