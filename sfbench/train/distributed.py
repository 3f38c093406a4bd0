"""Data-parallel training with torch.distributed: `torchrun --nproc_per_node=N -m sfbench …`, or N Slurm tasks.

The trainer stays one loop; what changes with N > 1 processes (DESIGN.md "One step of the loop"):

- **Process group** from the environment: torchrun's `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`MASTER_ADDR`/`MASTER_PORT`,
  or, under Slurm with several tasks (`tasks_per_node` in the launcher, `srun`), submitit's
  `TorchDistributedEnvironment`, which derives them from the Slurm variables. NCCL on GPUs (one per local rank),
  gloo on CPU.
- **Data sharded, not duplicated**: every rank computes the step's global batch indices from (seed, step) — batches
  are a pure function of the step — and keeps its own contiguous 1/N of the rows (`shard`), so each sample is
  forwarded once. The batch size must be divisible by N.
- **Gradients** are averaged after backward by one all-reduce per dtype over a flat buffer (`average_gradients`);
  since every rank's loss is the mean over an equal shard, that is the global batch's mean gradient and every rank
  takes the same optimizer step. Not `DistributedDataParallel`: its hooks live in the module's forward, and tasks may
  compute their loss from the parameters directly (the testbeds do); the price is no overlap of the all-reduce with
  backward. BatchNorm running statistics stay per rank during training (rank 0's are checkpointed); evaluation
  recomputes them at x on the same batches on every rank.
- **Scalars kept consistent**: the loss, SF-Polyak's lower bound ℓ* (both averaged over ranks, so [B1] sees the
  global batch's loss and bound) and the stop request (a signal seen by any rank) go through one all-reduce per
  step, so every rank takes the same step size, diverges or stops at the same step.
- **Stopping**: the stop flag is sampled before backward, so a signal that lands after that step's all-reduce is
  acted on at the end of the next step — budget two steps (plus an evaluation) in `signal_delay_s`.
- **A rank that stalls or is gone** (`trainer.dist_timeout`, minutes): every collective waits at most that long; then
  each rank asks the others to answer on a second gloo group (`dist.monitored_barrier`, the library's way to find the
  missing rank), and the run stops with `PeerLost` naming the rank that did not answer (or saying the connection to a
  rank closed), exit 1; a signal that came while it waited is serviced then. The last checkpoint stays, and the same
  command resumes from it.
- **Evaluation** runs on every rank (the SF `eval()`/`train()` swaps are not exact floating-point round trips, so
  all ranks must do them together to keep identical parameters); only rank 0 writes the run record, checkpoints,
  `model.pt` and to W&B.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ..tasks.base import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialized_here: bool = False
    timeout_min: float = 10.0
    watch: Any = None           # a gloo group of all ranks, only for finding one that does not answer


    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _slurm_tasks() -> int:
    """Tasks of the Slurm *step* this process belongs to (srun, submitit's jobs): not SLURM_NTASKS, which a batch
    shell of a multi-task allocation also sees — one process there must not wait for ranks that never start."""
    try:
        return int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    except ValueError:
        return 1


def env_rank() -> int:
    """This process's rank as the environment gives it before any process group exists (torchrun's RANK, or the Slurm
    task of a multi-task step); 0 outside data parallel. Used to let only rank 0 take a run directory's lock."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if _slurm_tasks() > 1:
        return int(os.environ.get("SLURM_PROCID", "0"))
    return 0


class PeerLost(RuntimeError):
    """A collective did not complete within `trainer.dist_timeout`, or a rank's connection closed."""


def setup(device: torch.device, timeout_min: float = 10.0) -> tuple[DistInfo, torch.device]:
    """Join the process group the environment describes (if any), collectives waiting at most `timeout_min` minutes
    for a rank; returns it and this rank's device."""
    if "WORLD_SIZE" not in os.environ and _slurm_tasks() > 1:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    initialized_here = False
    timeout = timedelta(minutes=timeout_min)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", timeout=timeout)
        initialized_here = True
    watch = dist.new_group(backend="gloo", timeout=timeout)
    return DistInfo(rank, world, local_rank, initialized_here, timeout_min, watch), device


@contextmanager
def collective(info: DistInfo, what: str):
    """Run collectives; one that fails (a rank did not answer within the timeout, or is gone) raises `PeerLost`
    naming the rank, found with a monitored barrier on the watch group (the failed group's connections are closed)."""
    try:
        yield
    except RuntimeError as err:
        raise PeerLost(_who_is_missing(info, what, err)) from None


def _who_is_missing(info: DistInfo, what: str, err: RuntimeError) -> str:
    limit = f"trainer.dist_timeout={info.timeout_min:g} min"
    try:
        dist.monitored_barrier(group=info.watch, timeout=timedelta(seconds=min(60.0, info.timeout_min * 60)),
                               wait_all_ranks=True)
    except RuntimeError as barrier:
        found = re.search(r"Ranks? ([\d, ]+) failed to pass monitoredBarrier", str(barrier))
        if found:
            return (f"rank(s) {found.group(1).strip()} of {info.world} did not answer within {limit} during {what} "
                    f"(stopped, hung or far slower than the others)")
        if "from rank 0" in str(barrier) or "Connection" not in str(barrier) and info.rank != 0:
            return f"rank 0 of {info.world} did not answer within {limit} during {what}"
        who = f"rank {1 - info.rank} of 2" if info.world == 2 else f"a rank of {info.world}"
        return f"{who} is gone during {what} ({_reason(err)})"
    return f"{what} took longer than {limit}, though every rank answers: raise trainer.dist_timeout ({_reason(err)})"


def _reason(err: BaseException) -> str:
    """The gist of a backend's error ("Connection reset by peer", "Timed out waiting 6000ms for recv …")."""
    text = " ".join(str(err).split())
    found = re.search(r"(Connection [^.]*|Timed out [^.]*)", text)
    return found.group(1) if found else (text[:160] or type(err).__name__)


def teardown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def shard(batch: Any, info: DistInfo) -> Any:
    """This rank's rows of a batch: tensors (and tensors inside tuples, lists, dicts) split along dim 0 into equal
    contiguous parts; other values (a step number, None for full-batch testbeds) are kept as they are."""
    if not info.active or batch is None:
        return batch
    return split_rows(batch, info.rank, info.world, "processes")


def split_rows(batch: Any, part: int, parts: int, who: str = "micro-batches") -> Any:
    """Rows [part·n/parts, (part+1)·n/parts) of every tensor in a batch (also inside tuples, lists, dicts); other
    values are kept. Ranks take their shard this way, and gradient accumulation its micro-batches of a shard."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() == 0:
            return batch
        n = batch.shape[0]
        if n % parts:
            raise ConfigError(f"the batch has {n} rows, which {parts} {who} can't share equally; make the "
                              f"batch size a multiple of the number of {who}")
        size = n // parts
        return batch[part * size:(part + 1) * size]
    if isinstance(batch, tuple):
        return tuple(split_rows(b, part, parts, who) for b in batch)
    if isinstance(batch, list):
        return [split_rows(b, part, parts, who) for b in batch]
    if isinstance(batch, dict):
        return {k: split_rows(v, part, parts, who) for k, v in batch.items()}
    return batch


def reduce_step(info: DistInfo, loss: torch.Tensor, lower_bound: Any, stop: bool,
                device: torch.device, step: int = 0) -> tuple[float, float | None, bool]:
    """One all-reduce per step: the mean loss, the mean ℓ* (None if the task gives none) and whether any rank was
    asked to stop."""
    if not info.active:
        lb = None if lower_bound is None else float(lower_bound)
        return loss.item(), lb, stop
    values = torch.tensor([float(loss.detach()), 0.0 if lower_bound is None else float(lower_bound), float(stop)],
                          dtype=torch.float64, device=device)
    with collective(info, f"step {step}'s all-reduce of the loss"):
        dist.all_reduce(values)
    mean_loss, mean_lb, stops = values.tolist()
    return mean_loss / info.world, None if lower_bound is None else mean_lb / info.world, stops > 0


def broadcast_parameters(info: DistInfo, model: torch.nn.Module) -> None:
    """Rank 0's initial parameters and buffers everywhere (they are seeded alike already; this makes it certain)."""
    if not info.active:
        return
    with torch.no_grad(), collective(info, "the broadcast of the initial parameters"):
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def agree(info: DistInfo, value: int, what: str, device: torch.device) -> int:
    """Rank 0's `value`, checked to be every rank's (e.g. the step a resumed run starts from): a mismatch is an
    error, not a silent divergence of the ranks."""
    if not info.active:
        return value
    t = torch.tensor([value, -value], dtype=torch.float64, device=device)
    with collective(info, f"the agreement on {what}"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if t[0].item() != value or -t[1].item() != value:
        raise RuntimeError(f"the {info.world} processes disagree on {what} (this rank: {value}, range "
                           f"{-t[1].item():g}…{t[0].item():g}); is the run directory on a file system all nodes see "
                           f"the same way?")
    return value


def average_gradients(info: DistInfo, params: list[torch.Tensor], step: int = 0) -> None:
    """Replace each gradient by its mean over the ranks: one all-reduce per dtype over a flat copy.

    A parameter without a gradient on every rank keeps `grad = None` (the SF optimizers then leave it and its state
    alone, as in one process); one with a gradient on some ranks only counts 0 on the others."""
    if not info.active:
        return
    device = params[0].device if params else torch.device("cpu")
    has = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    with collective(info, f"step {step}'s gradient all-reduce"):
        dist.all_reduce(has)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p, n in zip(params, has.tolist()):
        if n == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        with collective(info, f"step {step}'s gradient all-reduce"):
            dist.all_reduce(flat)
        flat.div_(info.world)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
