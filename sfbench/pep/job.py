"""A PEP job of the Hydra app: `python -m sfbench -m experiment=sfn_pep` sweeps SFN's worst-case curves (docs/theory.md
D) as a multirun — each job one method's horizon sweep — so the PEP figures run locally or as a Slurm job array like
any other preset, into run directories the report reads.

A config with a `pep:` node (the sfn_pep preset sets one) runs `sfbench.pep` instead of the trainer, in the run
directory: `pep.csv` (one row per horizon T: worst case, scaled worst cases, solver status), `pep.png`, `config.yaml`
and `summary.json` (status `completed`, or `failed` when the solver failed at some T, with `final` holding the worst
case at the largest T and `pep` the settings). Solves are cached across runs (sfbench.pep's cache).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

PEP_KEYS = ("method", "T", "beta", "gamma", "alpha", "c", "averaging", "L", "delta", "anchor", "solver")


def check_pep(node: Any) -> dict:
    """The `pep:` settings as a dict, each value checked the way `python -m sfbench.pep` checks its arguments."""
    from omegaconf import OmegaConf

    from .__main__ import build_parser, parse_horizons
    from ..tasks.base import ConfigError

    settings = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    for key in settings:
        if key not in PEP_KEYS:
            raise ConfigError(f"pep.{key}: unknown setting; choose among {', '.join(PEP_KEYS)}")
    if "method" not in settings or "T" not in settings:
        raise ConfigError("pep.method and pep.T are required (e.g. pep.method=sf_constant pep.T=1-40)")
    try:
        parse_horizons(str(settings["T"]))
    except ValueError as err:
        raise ConfigError(f"pep.T={settings['T']!r}: {err}") from None
    parser = build_parser(exit_on_error=False)        # `python -m sfbench.pep`'s own types and choices
    for key, value in settings.items():
        if key == "T" or value is None:
            continue
        try:
            parser.parse_args(["--method=sf_constant", "--T=1", f"--{key}={value}"])
        except argparse.ArgumentError as err:     # its message says the allowed range or choices
            raise ConfigError(f"pep.{key}={value!r} is not allowed: {err.message}") from None
    return settings


def run_pep(cfg, run_dir: Path, resolved: dict[str, Any]) -> float | None:
    """Solve the configured PEP sweep into `run_dir`; returns the worst case at the largest T (the sweep value)."""
    import contextlib
    import csv
    import io

    from .__main__ import main as pep_main
    from ..tracking.run_record import RunRecord

    settings = check_pep(cfg.pep)
    record = RunRecord(run_dir)
    summary = record.read_summary()
    if summary and summary.get("status") == "completed":
        print(f"sfbench: {run_dir} already finished with status 'completed'; nothing to do", flush=True)
        return (summary.get("final") or {}).get("pep/worst_case")
    record.write_config(resolved)
    record.write_summary("running", pep=settings)
    argv = [f"--{k}={v}" for k, v in settings.items() if v is not None and k != "T"]
    argv += [f"--T={settings['T']}", f"--out={run_dir / '.pep'}"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = pep_main(argv)
    print(out.getvalue(), end="", flush=True)
    written = sorted((run_dir / ".pep").glob("*.csv"))
    if not written:
        record.write_summary("failed", error="sfbench.pep wrote no results")
        record.close()
        return None
    (run_dir / "pep.csv").write_bytes(written[0].read_bytes())
    png = written[0].with_suffix(".png")
    if png.exists():
        (run_dir / "pep.png").write_bytes(png.read_bytes())
    rows = list(csv.DictReader(open(run_dir / "pep.csv")))
    last = rows[-1]
    worst = float(last["worst_case"])
    final = {"pep/T": int(last["T"]), "pep/worst_case": worst}
    for key, value in last.items():
        if "*" in key or "/" in key:       # the scaled worst cases, e.g. "log(T+1)*wc"
            final[f"pep/{key}"] = float(value)
    status = "completed" if code == 0 else "failed"
    record.write_summary(status, steps_done=len(rows), total_steps=len(rows), final=final, pep=settings,
                         error=None if code == 0 else "the solver failed at some horizon (pep.csv, status column)")
    record.close()
    return worst if math.isfinite(worst) else None
