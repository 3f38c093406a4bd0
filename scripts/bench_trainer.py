#!/usr/bin/env python
"""The trainer's own overhead: steps/s of the suite against a bare PyTorch loop, same model, data and optimizer.

Both sides run the distillation task's training steps (batch → student and teacher forward → loss → backward →
optimizer step) for `--steps` steps from the same initial model. The suite is `sfbench.train.Trainer` with everything
on: the run record (metrics.jsonl every step, summary.json), the W&B sink (offline), gradient-norm logging, progress
lines; evaluation and checkpoints only at the end (both sides then evaluate once, so the bare loop pays that too).
Rounds alternate suite / bare in one process; the ratio is suite steps/s ÷ bare steps/s (median over rounds).

    python scripts/bench_trainer.py                      # opt=sf_polyak, 300 steps × 3 rounds
    python scripts/bench_trainer.py --opt sf_adamw --steps 500
    python scripts/bench_trainer.py --theory         # the online theory's cost: suite with it on against off

`--theory` ("logging the theory online costs under 2% of step time") alternates the suite with
`trainer.theory` on and off, and also times, inside the runs with it on, every call that exists only for the theory
(`OnlineBound.after_step`) against the summed step time (`time/step_s`), step 1 left out (first-call
allocations): the interleaved ratio shows the
total effect, the per-round ratio of median step times (on / off) the cost including what runs inside the optimizer
step (the Adam base's ‖g‖²_P comes out of its update kernel), and the in-run fraction the separately callable part.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def compose(opt: str, steps: int, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from sfbench.cli.sweep import register_resolvers
    from sfbench.cli.validate import config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return compose("config", overrides=[f"opt={opt}", f"trainer.steps={steps}", "trainer.eval_every=0",
                                            "trainer.ckpt_every=0", *overrides])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--opt", default="sf_polyak")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-wandb", action="store_true", help="no W&B sink in the suite (where wandb isn't installed)")
    ap.add_argument("--theory", action="store_true", help="compare trainer.theory on and off instead of bare")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. task.data.batch_size=32")
    args = ap.parse_args()

    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from sfbench.train import Trainer, TrainerConfig, resolve_device, seed_everything
    if not args.no_wandb:
        from sfbench.tracking.wandb_sink import WandbSink

    os.environ.setdefault("WANDB_SILENT", "true")
    cfg = compose(args.opt, args.steps, args.overrides)
    task = instantiate(cfg.task)
    device = resolve_device(cfg.trainer.device)
    task.setup(device)                      # trains or loads the teacher once, outside the timings
    make_opt = instantiate(cfg.opt)
    schedule = instantiate(cfg.sched)(total_steps=args.steps)
    trainer_cfg = TrainerConfig(**OmegaConf.to_container(cfg.trainer, resolve=True), seed=cfg.seed)
    trainer_cfg.log_every_s = 1e9           # no progress lines in the timing (a terminal bar would be on)

    def bare() -> float:
        seed_everything(cfg.seed)
        model = task.model().to(device)
        opt = make_opt(model.parameters())
        sched = schedule.lr_scheduler(opt)
        wants_loss = bool(getattr(opt, "needs_loss", False))
        if hasattr(opt, "train"):
            opt.train()
        start = time.perf_counter()
        for step in range(args.steps):
            loss, lower_bound = task.loss(model, task.batch(step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if wants_loss:
                opt.step(loss=loss.item(), lower_bound=float(lower_bound))
            else:
                opt.step()
            sched.step()
        if hasattr(opt, "eval"):
            opt.eval()
        model.eval()
        task.evaluate(model)
        return args.steps / (time.perf_counter() - start)

    def suite(stats: dict | None = None) -> float:
        with tempfile.TemporaryDirectory() as run_dir:
            sink = None if args.no_wandb else WandbSink(mode="offline")
            trainer = Trainer(trainer_cfg, task, make_opt, schedule.lr_scheduler, run_dir,
                              OmegaConf.to_container(cfg, resolve=True), sink=sink, run_name="bench")
            start = time.perf_counter()
            summary = trainer.run()
            assert summary["status"] == "completed", summary
            rate = args.steps / (time.perf_counter() - start)
            if stats is not None:
                from sfbench.tracking.run_record import iter_metrics
                times = [r["time/step_s"] for r in iter_metrics(Path(run_dir) / "metrics.jsonl")]
                stats["step_s"], stats["first_step_s"] = sum(times), times[0]
                stats["median_step_s"] = statistics.median(times[1:])
            return rate

    if args.theory:
        compare_theory(args, suite, trainer_cfg, device)
        return
    suite()                                   # warm-up: imports, W&B service, allocator
    rates = {"bare": [], "suite": []}
    for _ in range(args.rounds):
        rates["bare"].append(bare())
        rates["suite"].append(suite())
    med = print_table("bench_trainer", "loop", args, device, rates)
    print(f"suite / bare = {med['suite'] / med['bare']:.3f}")


def print_table(title: str, column: str, args, device, rates: dict) -> dict:
    """A markdown table of steps/s per variant (median and every round); returns the medians."""
    import torch

    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"# {title}: task=distill opt={args.opt}, {args.steps} steps × {args.rounds} rounds, "
          f"{device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"| {column} | steps/s (median) | rounds |")
    print("|---|---:|---|")
    for k, v in rates.items():
        print(f"| {k} | {med[k]:.2f} | {', '.join(f'{r:.2f}' for r in v)} |")
    return med


def compare_theory(args, suite, trainer_cfg, device) -> None:
    import dataclasses


    from sfbench.train import online_bound as theory_log
    calls: list[float] = []
    after_step = theory_log.OnlineBound.after_step

    def timed_after_step(*a, **kw):
        t0 = time.perf_counter()
        try:
            return after_step(*a, **kw)
        finally:
            calls.append(time.perf_counter() - t0)

    on, off = dataclasses.replace(trainer_cfg, theory=True), dataclasses.replace(trainer_cfg, theory=False)
    rates = {"theory off": [], "theory on": []}
    medians = {"theory off": [], "theory on": []}
    fractions = []
    suite()                                   # warm-up
    for _ in range(args.rounds):
        for name, cfg in (("theory off", off), ("theory on", on)):
            trainer_cfg.__dict__.update(dataclasses.asdict(cfg))
            stats = {}
            if name == "theory on":
                theory_log.OnlineBound.after_step = timed_after_step
                calls.clear()
                try:
                    rates[name].append(suite(stats))
                finally:
                    theory_log.OnlineBound.after_step = after_step
                # steady state: without step 1 (first-call allocations)
                fractions.append(sum(calls[1:]) / (stats["step_s"] - stats["first_step_s"]))
            else:
                rates[name].append(suite(stats))
            medians[name].append(stats["median_step_s"])
    trainer_cfg.__dict__.update(dataclasses.asdict(on))
    med = print_table("bench_trainer --theory", "trainer.theory", args, device, rates)
    print(f"steps/s on / off = {med['theory on'] / med['theory off']:.3f}")
    step_ratio = [a / b for a, b in zip(medians["theory on"], medians["theory off"])]
    print(f"median step time on / off, per round (interleaved; includes the ‖g‖²_P inside the Adam update) = "
          f"{statistics.median(step_ratio):.4f} (rounds: {', '.join(f'{r:.4f}' for r in step_ratio)})")
    print(f"theory calls / step time, in-run (median of rounds) = {100 * statistics.median(fractions):.2f}% "
          f"(rounds: {', '.join(f'{100 * f:.2f}%' for f in fractions)})")


if __name__ == "__main__":
    main()
