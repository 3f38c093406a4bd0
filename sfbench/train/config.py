"""The trainer's settings. `TrainerSettings` is the `trainer:` node of the Hydra config — each setting's type and
default, once: configs/config.yaml takes it as that node's schema (`trainer_settings@trainer`, registered in Hydra's
ConfigStore by `sfbench.cli.validate`), so OmegaConf refuses a value of the wrong type while composing, and
`sfbench.cli.validate` checks what a type can't say (ranges, choices). `TrainerConfig` adds the run's seed (the
config's top-level `seed`) for `Trainer`. Plain dataclasses: nothing here needs Hydra or torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TrainerSettings:
    steps: int = 600
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    precision: str = "fp32"         # fp32 | bf16 (autocast)
    compile: bool = False           # torch.compile the model
    grad_clip: float | None = None  # max global gradient norm, or null
    grad_accum: int = 1             # micro-batches per optimizer step: the task's batch is split into this many
    eval_every: Any = "auto"        # auto | N | 0 (OmegaConf types no unions; cadence.py checks it). auto: ~50
    #   evaluations a run, fewer where the task's stated evaluation cost exceeds eval_share of training; N: every N
    #   steps; 0: only at the end
    eval_share: float = 0.1         # eval_every=auto: evaluations cost at most this share of the training (from the
    #                                 config, never timed)
    ckpt_every: int = 200           # 0: only at the end (and when preempted)
    log_every: int = 1
    theory: bool = True             # log the accumulators and theory/bound ([C1] for SF, [C3] for baselines) every
    #                                 logged step (online_bound.py)
    theory_d_every: int = 10        # without the task's D: measure the distance travelled by x every this many steps
    log_every_s: float = 30.0       # plain progress lines when not on a terminal
    bn_recompute_batches: int = 50  # BatchNorm statistics are recomputed at x over this many batches (RLS README)
    diverge_above: float | None = 100.0     # status diverged when the loss exceeds this × the first step's loss
    #                                         (null: only when it is NaN or infinite)
    on_gap: str = "stop"            # resuming, metrics.jsonl lacks steps the checkpoint covers and no kept checkpoint
    #   precedes them: stop (exit 2) | record (go on, list them in summary.json) | restart (from step 0); resume.py
    dist_timeout: float = 10.0      # data parallel: minutes a collective waits for every rank; then the run stops
    #   (exit 1) naming the rank that did not answer. Keep it above any one rank's pause (a checkpoint write)


@dataclass
class TrainerConfig(TrainerSettings):
    seed: int = 0
