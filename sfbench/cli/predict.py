"""`python -m sfbench.theory predict [overrides]`: the predicted best base lr and final bound before running.

    python -m sfbench.theory predict task=logreg opt=sf_schedulet sched=wsd trainer.steps=2000
    python -m sfbench.theory predict task=distill opt=adamw sched=cosine --grid 5       # prints a sweep command
    python -m sfbench.theory predict task=gpt opt=sf_adamw --D 40 --G 3                  # no pilot run

The overrides are the run's own (same config groups as `python -m sfbench`). D and G come from `--D`/`--G` when
given; otherwise D is the task's exact D where it knows one (the testbeds) and G² the mean ‖g‖² (‖g‖²_P for Adam
bases) over a short pilot run — the first `--pilot-steps` steps of the configured run, in a temporary directory. For
a task without an exact D there is no independent prediction unless `--D` is given: the distance x travels grows with
the lr it runs at, so a best lr computed from it follows that lr (the report withholds it likewise, from the same
function, `sfbench.theory.predict.predict`).

This is the app-layer half of the command: it composes the config, validates it and runs the trainer for the pilot,
then hands arrays to the numpy-only `sfbench.theory.predict`. `python -m sfbench.theory` finds it through the
`sfbench.theory.commands` entry point (pyproject.toml), so `sfbench.theory` imports no training or CLI code.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile

EXIT_BAD_INPUT = 2


def _fail(message: str) -> None:
    print(f"sfbench.theory: error: {message}", file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from .sweep import register_resolvers
    from .validate import check_group_choices, config_dir

    check_group_choices(overrides)
    register_resolvers()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            return compose("config", overrides=overrides)
    except HydraException as err:
        _fail(str(err).splitlines()[0])


def _pilot(cfg, parts, steps: int) -> dict:
    """Run the first `steps` steps of the configured run; returns G² (mean logged ‖g‖²) and the D the run used."""
    from omegaconf import OmegaConf

    from ..tracking.run_record import iter_metrics
    from ..train import Trainer, TrainerConfig

    resolved = OmegaConf.to_container(cfg, resolve=True)
    trainer_cfg = TrainerConfig(**{**resolved["trainer"], "eval_every": 0, "ckpt_every": 0, "theory": True,
                                   "steps": steps}, seed=cfg.seed)
    schedule = parts["schedule"]          # built for the full horizon: the pilot is the run's beginning
    with tempfile.TemporaryDirectory(prefix="sfbench-pilot-") as run_dir:
        trainer = Trainer(trainer_cfg, parts["task"], parts["make_optimizer"], schedule.lr_scheduler, run_dir,
                          resolved, run_name="pilot")
        summary = trainer.run()
        rows = [r for r in iter_metrics(f"{run_dir}/metrics.jsonl") if "theory/grad_sq" in r]
    if summary.get("status") != "completed" or not rows:
        _fail(f"the pilot run ended with status {summary.get('status')!r}; pass --D and --G, or lower opt.lr")
    g2 = [r["theory/grad_sq"] for r in rows if math.isfinite(r["theory/grad_sq"])]
    return {"G": math.sqrt(sum(g2) / len(g2)), "D": summary["theory"]["D"], "D_source": summary["theory"]["D_source"],
            "steps": len(rows)}


def predict_command(args) -> None:
    import torch

    from ..tasks.base import ConfigError
    from ..theory.predict import lr_grid, predict
    from .validate import validate

    for name in ("D", "G"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            _fail(f"--{name} {value!r}: must be a number > 0")
    if args.pilot_steps < 1 or args.grid < 0 or not args.grid_factor > 1:
        _fail("--pilot-steps must be ≥ 1, --grid ≥ 0 and --grid-factor > 1")
    cfg = _compose(args.overrides)
    try:
        parts = validate(cfg)
    except ConfigError as err:
        _fail(str(err))
    opt_probe = parts["make_optimizer"]([torch.nn.Parameter(torch.zeros(1))])
    if getattr(opt_probe, "needs_loss", False):
        _fail("this optimizer picks its own step size (SF-Polyak [B1]); opt.lr is only its cap, so there is no base "
              "learning rate to predict. Use an optimizer with a schedule (e.g. opt=sf_schedulet, opt=sf_sgd)")
    kind = getattr(opt_probe, "theory_bound", "C3")
    T = int(cfg.trainer.steps)
    h = parts["schedule"].array()
    D, G, sources = args.D, args.G, {"D": "--D", "G": "--G"}
    pilot = None
    if D is None or G is None:
        try:
            pilot = _pilot(cfg, parts, min(args.pilot_steps, T))
        except ConfigError as err:      # found while loading data or a teacher
            _fail(str(err))
        if G is None:
            G, sources["G"] = pilot["G"], f"mean ‖g‖² over a {pilot['steps']}-step pilot at opt.lr={cfg.opt.lr:g}"
        if D is None and pilot["D_source"] != "task":
            _no_independent_prediction(args, parts["task"].name, G, sources["G"])
            return
        if D is None:
            D, sources["D"] = pilot["D"], "task (exact)"
    if not (D > 0 and G > 0):
        _fail(f"D={D!r}, G={G!r}: the pilot did not move or saw zero gradients; pass --D and --G")
    p = predict(h, D, G, kind)
    base_lr = float(cfg.opt.lr)
    result = {"independent": True, "kind": kind, "T": T, "schedule": cfg.sched.get("name"), "D": D,
              "D_source": sources["D"], "G": G,
              "G_source": sources["G"], "A": p.A, "B": p.B, "best_lr": p.best_lr, "best_bound": p.best_bound,
              "configured_lr": base_lr, "bound_at_configured_lr": p.bound_at(base_lr)}
    if args.grid:
        grid = lr_grid(p.best_lr, args.grid, args.grid_factor)
        result["grid"] = grid
        own = [o for o in args.overrides if not o.startswith("opt.lr=")]
        result["sweep_command"] = "python -m sfbench -m " + " ".join(own + ["opt.lr=" + ",".join(map(str, grid))])
    if args.json:
        print(json.dumps(result, indent=2))
        return
    bound_name = "[C1] SF, any schedule" if kind == "C1" else "[C3] SGD last iterate"
    print(f"sfbench.theory predict — {bound_name}, schedule {result['schedule']}, T = {T}")
    print(f"  D = {D:.4g}  ({sources['D']})")
    print(f"  G = {G:.4g}  ({sources['G']})")
    print(f"  schedule shape: A = mean h = {p.A:.4f}, B = mean h² = {p.B:.4f}")
    print(f"  predicted best base lr:  {p.best_lr:.4g}")
    print(f"  predicted final bound:   {p.best_bound:.4g}  (at the best lr)")
    print(f"  at the configured opt.lr = {base_lr:g}: bound {p.bound_at(base_lr):.4g}")
    if args.grid:
        print(f"  sweep centred on it:\n    {result['sweep_command']}")


def _no_independent_prediction(args, task: str, G: float, G_source: str) -> None:
    """The task knows no D and none was given: a D measured as the distance x travels grows with the lr it was run
    at, so a best lr from it would follow that lr (and a grid centred on it), not predict it."""
    note = (f"no independent prediction: task {task} has no exact D, and the distance x travels "
            f"grows with the lr it is measured at; pass --D (and --G) from what you know of the problem")
    if args.json:
        print(json.dumps({"best_lr": None, "independent": False, "note": note, "G": G, "G_source": G_source},
                         indent=2))
        return
    print(f"sfbench.theory predict — {note}")
    print(f"  G = {G:.4g}  ({G_source})")


def add_arguments(pr: argparse.ArgumentParser) -> None:
    """The `predict` subcommand's arguments (`python -m sfbench.theory predict …`)."""
    pr.add_argument("overrides", nargs="*", help="Hydra overrides of the run, e.g. task=logreg opt=sf_schedulet")
    pr.add_argument("--D", type=float, help="distance ‖x_0 − x*‖ (default: the task's, else a pilot's estimate)")
    pr.add_argument("--G", type=float, help="gradient norm bound (default: √(mean ‖g‖²) over a pilot run)")
    pr.add_argument("--pilot-steps", type=int, default=50, help="length of the pilot run (default 50)")
    pr.add_argument("--grid", type=int, default=0, help="print a sweep of this many base lrs centred on the best")
    pr.add_argument("--grid-factor", type=float, default=3.0, help="ratio between neighbouring lrs (default 3)")
    pr.add_argument("--json", action="store_true", help="print the result as JSON")


#: What the `sfbench.theory.commands` entry point names: (help line, add_arguments, run).
COMMAND = ("predicted best base lr and final bound for a config", add_arguments, predict_command)
