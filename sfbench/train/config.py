"""The trainer's settings (`trainer.*` in the Hydra config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainerConfig:
    steps: int = 600
    device: str = "auto"
    precision: str = "fp32"          # fp32 | bf16 (autocast)
    compile: bool = False            # torch.compile of the model
    grad_clip: float | None = None   # max global grad norm, or None
    grad_accum: int = 1              # micro-batches per optimizer step (the task's batch is split N ways)
    eval_every: int | str = "auto"   # auto: ~50 evaluations, fewer when evaluating is expensive (cadence.py); 0: end
    eval_share: float = 0.1          # auto: evaluating costs at most this share of the training time
    ckpt_every: int = 200            # 0: only at the end (and on preemption)
    log_every: int = 1
    theory: bool = True              # log [C1]/[C3] accumulators and theory/bound (online_bound.py)
    theory_d_every: int = 10         # without the task's D: distance travelled by x every this many steps
    log_every_s: float = 30.0        # plain progress lines when stderr is not a terminal
    bn_recompute_batches: int = 50   # RLS README's recommendation
    diverge_above: float | None = 100.0   # diverged: loss > this × the first step's loss (or non-finite)
    on_gap: str = "stop"             # metrics.jsonl lacks steps a checkpoint covers: stop | record | restart
    dist_timeout: float = 10.0       # data parallel: minutes a collective waits for a rank (distributed.py)
    seed: int = 0
