"""Sweep directories: a run's directory is named by its command, so relaunching a command resumes it.

- One run: `runs/<overrides>` (`hydra.run.dir`, through the `${sfbench_run_name:…}` resolver registered here).
- A sweep (`-m`): `multirun/<group>` or `multirun/<the sweep's own overrides, sorted>` (`sweep_dir`), each run in
  `<sweep>/<its overrides>`; relaunching the same sweep finds its finished runs.
- Under `hydra/launcher=slurm`, each run directory records the Slurm job submitted for it (`RUN/slurm.json`), so a
  relaunch waits for a job that is still queued or running instead of submitting it twice (`live_slurm_job`); the
  launcher itself is the Hydra plugin `hydra_plugins/sfbench_launcher`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from ..files import atomic_write
from .validate import EXIT_BAD_INPUT, config_dir

SWEEP_ROOT = "multirun"
SLURM_RECORD = "slurm.json"   # in a run directory: the Slurm job submitted for it (written by the Slurm launcher)
FINISHED = ("completed", "diverged")   # the Trainer skips these run directories; the Slurm launcher doesn't submit them


def run_name(override_dirname: str) -> str:
    """A directory name for a run from its overrides: deterministic, filesystem-safe, bounded."""
    if not override_dirname:
        return "default"
    name = re.sub(r"[^A-Za-z0-9_.,=+\-\[\]]", "_", override_dirname)
    if len(name) > 120:
        name = name[:100] + "-" + hashlib.sha256(override_dirname.encode()).hexdigest()[:12]
    return name


def if_smoke(small, full, *, _root_):
    """`${if_smoke:SMALL,FULL}` in a preset: SMALL when the config's top-level `smoke` is true (the preset's small,
    offline form), else FULL. The presets in configs/experiment/ write each setting that differs this way, so the small
    form is visibly the same experiment, only shorter."""
    return small if bool(_root_.get("smoke", False)) else full


def steps_frac(fraction, *, _root_) -> int:
    """`${steps_frac:0.1}`: that fraction of `trainer.steps`, rounded to whole steps (warm-up lengths in presets that
    must follow the horizon, e.g. SFS's 10% warm-up at any `trainer.steps`)."""
    return int(round(float(fraction) * int(_root_.trainer.steps)))


def steps_int(fraction, least=0, *, _root_) -> int:
    """`${steps_int:0.1}`: int(fraction · `trainer.steps`), truncated (the SFS authors' warm-up and cool-down lengths,
    `int(warm_up_fraction * total_iterations)`); `${steps_int:0.1,1}`: at least 1."""
    return max(int(least), int(float(fraction) * int(_root_.trainer.steps)))


def register_resolvers() -> None:
    """`${sfbench_run_name:…}`, `${if_smoke:…}`, `${steps_frac:…}` and `${steps_int:…}` in the configs (Slurm jobs
    get them with Hydra's singleton state)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("sfbench_run_name"):
        OmegaConf.register_new_resolver("sfbench_run_name", run_name)
    if not OmegaConf.has_resolver("if_smoke"):
        OmegaConf.register_new_resolver("if_smoke", if_smoke)
    for name, resolver in (("steps_frac", steps_frac), ("steps_int", steps_int)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


# -- sweeps: a directory named by the command, relaunch = resume -------------------------------------------------------


def override_key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~").removeprefix("override ")


def sweep_dir(argv: list[str]) -> str | None:
    """The sweep directory for `python -m sfbench -m ARGS`: multirun/<group> when `group=NAME` is given, else
    multirun/<the sweep's own overrides, sorted> (the keys left out of run names — logger, device, … — and Hydra's
    own overrides such as hydra/launcher=… left out too). The same command gives the same directory, so relaunching a
    sweep that was cut off finds its finished runs. None when the user set hydra.sweep.dir (theirs wins).

    It can't be a `${…}` in config.yaml: Hydra resolves hydra.sweep.dir again inside every job, where
    hydra.overrides.task holds that job's overrides only, not the sweep's."""
    import yaml

    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    keys = [override_key(a) for a in overrides]
    if "hydra.sweep.dir" in keys:
        return None
    for arg, key in zip(overrides, keys):
        value = arg.split("=", 1)[1]
        if key == "group" and value not in ("", "null") and "," not in value:
            return f"{SWEEP_ROOT}/{run_name(value)}"
    group = _preset_group(overrides, keys)
    if group:
        return f"{SWEEP_ROOT}/{run_name(group)}"
    config = yaml.safe_load((config_dir() / "config.yaml").read_text())
    excluded = set(config["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"])
    own = sorted(a for a, k in zip(overrides, keys) if not (k == "hydra" or k.startswith(("hydra.", "hydra/")))
                 and k not in excluded)
    return f"{SWEEP_ROOT}/{run_name(','.join(own))}"


def _preset_group(overrides: list[str], keys: list[str]) -> str | None:
    """The `group` an experiment preset names (e.g. sfs_distill_shakespeare_smoke with smoke=true), composed from the
    command's single-valued overrides; None without a preset or where it names none."""
    if "experiment" not in keys:
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    fixed = [a for a, k in zip(overrides, keys) if "," not in a.split("=", 1)[1]
             and not (k == "hydra" or k.startswith(("hydra.", "hydra/")))]
    register_resolvers()
    was = GlobalHydra.instance().is_initialized()
    try:
        if was:
            return None
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            group = compose("config", overrides=fixed).get("group")
    except Exception:          # a composition error is reported by the run itself, with its one line
        return None
    finally:
        if not was:
            GlobalHydra.instance().clear()
    return str(group) if group not in (None, "") else None


def sweep_value(summary: dict | None) -> float | None:
    final = summary.get("final", {}) if summary else {}
    value = final.get("eval/loss", final.get("train/loss"))
    return float(value) if value is not None else None


# -- Slurm jobs recorded in run directories -------------------------------------------------------------------------

def write_slurm_record(run_dir: Path, job_id: str, folder: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"job_id": str(job_id), "folder": folder, "workdir": os.getcwd(), "submitted": time.time()}
    atomic_write(run_dir / SLURM_RECORD, json.dumps(record, indent=2) + "\n", fsync=False)


def live_slurm_job(run_dir: Path | None, queue: dict) -> dict | None:
    """The Slurm job recorded in RUN/slurm.json if it is still queued or running (in `queue`, from the same working
    directory), with its state; else None."""
    if run_dir is None or not (run_dir / SLURM_RECORD).exists():
        return None
    try:
        record = json.loads((run_dir / SLURM_RECORD).read_text())
        if "user" not in queue:
            queue.update(user=slurm_queue())
        state, workdir = queue["user"][record["job_id"]]
    except (OSError, ValueError, KeyError):
        return None
    if os.path.realpath(workdir) != os.path.realpath(record.get("workdir", "")):
        return None
    return {**record, "state": state}


def slurm_queue() -> dict[str, tuple[str, str]]:
    """This user's queued and running jobs, one squeue call: {job id (array tasks as A_i): (state, working dir)}."""
    import getpass

    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%Z"], capture_output=True,
                             text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as err:
        out, why = None, str(err)
    if out is None or out.returncode != 0:
        # Failing open would resubmit runs whose jobs are alive: two jobs writing one run directory. Stop instead.
        why = why if out is None else (out.stderr.strip() or f"exit status {out.returncode}")
        print(f"sfbench: error: squeue failed ({why}); can't tell which runs of this sweep still have a job queued or "
              f"running, so nothing was submitted. Try again when squeue answers.", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    jobs = {}
    for line in out.stdout.splitlines():
        job_id, state, workdir = (line.split("|", 2) + ["", ""])[:3]
        jobs[job_id] = (state, workdir)
    return jobs
