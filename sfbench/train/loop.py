"""The training loop (DESIGN.md "One step of the loop"), written against `sfbench.tasks.Task` and any
`torch.optim.Optimizer`, with no task- or optimizer-specific branches.

Per step: batch → `task.loss` (loss, ℓ*) → backward → optional clipping → step (optimizers that declare
`needs_loss` — SF-Polyak — get the loss and ℓ*) → record `lr` actually used (`group["last_lr"]` where the optimizer
reports it), `train/loss`, `train/grad_norm_sq`, `time/step_s`. Optimizers with `train()`/`eval()` (the SF family)
are evaluated at x: `eval()` before, `train()` after; models with BatchNorm get their statistics recomputed at x first.

Checkpoints (`RUN/checkpoints/last.pt`, atomic) hold the *training* state: parameters at y, optimizer state,
scheduler, RNG states and the step (the step is the data position: batches are a pure function of it). Saving at y
rather than x is what makes resuming bit-exact — x → y is not an exact floating-point round trip. The model at x is
written at the end as `RUN/model.pt` (and `sfbench.train.load_model_at_x` recovers x from any checkpoint;
`checkpoint.py`).

SIGTERM, SIGUSR1 / SIGUSR2 (the requeue signals clusters and Slurm's `--signal` send before a time limit or
preemption) and SIGINT (Ctrl-C) finish the current step,
checkpoint, and end the run with status `preempted`; a non-finite loss ends it with status `diverged`. Both return
normally (exit 0) so that sweeps go on. A second Ctrl-C stops at once (`StopNow`): the run ends `preempted` at its
last checkpoint, which the next run resumes from; writes in progress finish first, so the record stays whole.

Faults: the process that writes a run holds the run directory's lock (`sfbench.tracking.lock`) for the
whole run; resuming checks the record first (`resume.py`: the checkpoint, with a fallback to the previous one, and
metrics.jsonl against it) before anything is written; temporary files a killed run left are removed; a write that
fails (a full disk) ends the run `failed` with a one-line `RecordWriteError`; a run resumed at its last step
evaluates at x again and writes its final metrics.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from ..optim.muon import parameters_for
from ..tasks.base import ConfigError, Task
from ..tracking import lock as run_lock
from ..tracking.ownership import DifferentRun, check_run_dir, differences, digest, identity
from ..tracking.run_record import RecordDamaged, RecordWriteError, RunDirLost, RunRecord, remove_stale_temp_files
from ..tracking.sinks import NullSink, Sink
from . import distributed
from .cadence import EvalCadence
from .checkpoint import CHECKPOINT, PREVIOUS, atomic_torch_save, rng_state, save_checkpoint, set_rng_state
from .resume import GAP_POLICIES, ResumePlan, plan_resume
from .online_bound import OnlineBound
from .progress import Progress


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
    on_gap: str = "stop"             # metrics.jsonl lacks steps a checkpoint covers: stop | record | restart (resume.py)
    dist_timeout: float = 10.0       # data parallel: minutes a collective waits for a rank (distributed.py)
    seed: int = 0


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once (at the last checkpoint), without the step boundary the first one waits for."""


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device={spec!r}: CUDA is not available on this machine; use 'auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class Trainer:
    """Runs one task with one optimizer and schedule, writing the run record and streaming to the sinks."""

    def __init__(self, config: TrainerConfig, task: Task, make_optimizer: Callable[[Iterable], Any],
                 make_scheduler: Callable[[Any], Any] | None, run_dir: str | os.PathLike,
                 run_config: Mapping[str, Any], sink: Sink | None = None, run_name: str = "run",
                 group: str = "default"):
        self.cfg, self.task = config, task
        self.make_optimizer, self.make_scheduler = make_optimizer, make_scheduler
        self.run_dir = Path(run_dir)
        self.run_config = dict(run_config)
        self.sink = sink or NullSink()
        self.run_name, self.group = run_name, group
        self.record = RunRecord(self.run_dir)
        self._stop_signal: int | None = None
        self.stopped_at_once = False     # a second Ctrl-C ended the run (the CLI exits 130)
        self._hold = 0                   # > 0: a write is in progress; a second Ctrl-C waits for it
        self._abort_pending = False
        self._ckpt_step: int | None = None   # the newest checkpoint's step (what a resume starts from); None: not
        #                                     known yet (stopped before the resume was planned)
        self._keep_previous = True       # the next save may turn last.pt into prev.pt
        self._ended = False

    # -- signals -----------------------------------------------------------------------------------------------------
    @property
    def stop_signal(self) -> int | None:
        """The signal that stopped the run (SIGTERM / SIGUSR1 / SIGUSR2), if one did: the CLI hands it on to submitit."""
        return self._stop_signal

    def request_stop(self, signum: int) -> None:
        """Stop after the current step with a checkpoint, as on SIGTERM: for a signal that came before this Trainer's
        handlers were installed (the CLI takes them from the job's start: sfbench.cli.requeue)."""
        if self._stop_signal is None:
            self._stop_signal = signum

    def _install_signal_handlers(self) -> dict:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self._stop_signal is not None:     # Ctrl-C after a stop request
            if self._hold:
                self._abort_pending = True
                return
            raise StopNow()
        if self._stop_signal is None:
            self._stop_signal = signum
        if signum == signal.SIGINT and self.dist_is_main:
            try:        # not print(): the handler may run while the main code is inside a write to stderr
                os.write(2, b"\nsfbench: Ctrl-C: stopping after this step with a checkpoint (Ctrl-C again to stop "
                            b"at once, at the last checkpoint)\n")
            except OSError:
                pass

    @property
    def dist_is_main(self) -> bool:
        return getattr(self, "dist", None) is None or self.dist.is_main

    @contextlib.contextmanager
    def _writing(self):
        """A write in progress: a second Ctrl-C during it stops the run once it is done, not in the middle."""
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
            if not self._hold and self._abort_pending:
                self._abort_pending = False
                raise StopNow()

    # -- checkpoints -------------------------------------------------------------------------------------------------
    def _save(self, step: int, model, opt, sched, theory: OnlineBound | None) -> None:
        """last.pt at `step` (the one it replaces becomes prev.pt); metrics.jsonl is fsynced first, so a checkpoint
        is never ahead of the metrics on disk."""
        if self.dist.is_main:
            self.record.sync()
            save_checkpoint({"step": step, "identity": identity(self.run_config), "model": model.state_dict(),
                             "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict() if sched is not None else None,
                             "theory": theory.state_dict() if theory is not None else None,
                             "rng": rng_state()}, self.run_dir, keep_previous=self._keep_previous)
            self._keep_previous = True
        self._ckpt_step = step

    def _plan_resume(self, summary: dict | None) -> ResumePlan:
        """Which checkpoint to resume from, checked against metrics.jsonl (resume.py); reads only."""
        if self.cfg.on_gap not in GAP_POLICIES:
            raise ConfigError(f"trainer.on_gap={self.cfg.on_gap!r} is not allowed; choose one of "
                              f"{', '.join(GAP_POLICIES)}")
        say = (lambda line: print(line, file=sys.stderr)) if self.dist.is_main else (lambda line: None)
        return plan_resume(self.run_dir, log_every=self.cfg.log_every, total_steps=self.cfg.steps,
                           on_gap=self.cfg.on_gap, device=self.device, log=say,
                           accepted=(summary or {}).get("metrics_gaps"))

    def _load(self, state: dict, model, opt, sched, theory: OnlineBound | None) -> int:
        diff = differences(state.get("identity") or {}, self.run_config)
        if diff:        # config.yaml lost or changed, and the checkpoint knows better: nothing is written
            raise DifferentRun(self.run_dir, diff)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if sched is not None and state["scheduler"] is not None:
            sched.load_state_dict(state["scheduler"])
        if theory is not None and state.get("theory") is not None:
            theory.load_state_dict(state["theory"])
        set_rng_state(state["rng"])
        return int(state["step"])

    # -- evaluation at x ---------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _at_x(self, model, opt):
        """The model at x (the optimizer's `eval()`, BatchNorm statistics recomputed there) for the body, then back
        exactly as it was: parameters and buffers bit for bit (the x ↔ y swap alone rounds y), the random number
        generators too. So evaluating never changes training, at the cost of one copy of the model while it runs."""
        kept = {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items()}
        rng = rng_state()
        swap = hasattr(opt, "eval") and hasattr(opt, "train")
        try:
            if swap:
                opt.eval()
            with torch.no_grad():
                self._recompute_batchnorm(model)
            model.eval()
            yield
        finally:
            model.train()
            if swap:
                opt.train()
            with torch.no_grad():
                for name, t in model.state_dict(keep_vars=True).items():
                    t.copy_(kept[name])
            set_rng_state(rng)

    @torch.no_grad()
    def _evaluate(self, model, opt) -> dict[str, float]:
        with self._at_x(model, opt), self._autocast():
            metrics = self.task.evaluate(model)
        return {k: float(v) for k, v in metrics.items()}

    def _recompute_batchnorm(self, model) -> None:
        """BatchNorm statistics were gathered at y; recompute them at x (docs/theory.md A, RLS README)."""
        norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        if not norms or self.cfg.bn_recompute_batches <= 0:
            return
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None                  # cumulative average over the batches below
        model.train()
        with self._autocast():
            for batch in self.task.bn_batches(self.cfg.bn_recompute_batches):
                self.task.loss(model, batch)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum

    def _forward_backward(self, forward, batch) -> tuple[torch.Tensor, float | None]:
        """Loss and gradient of one optimizer step's batch, over `grad_accum` micro-batches: each micro-batch's mean
        loss is back-propagated with weight 1/N, so the accumulated gradient is the whole batch's mean gradient.
        Returns the mean loss and the mean ℓ* over the micro-batches (None if the task gives none) — the whole
        batch's values, which is what SF-Polyak [B1] needs (equal micro-batch sizes make the mean of means exact)."""
        n = self.cfg.grad_accum
        if n == 1:
            with self._autocast():
                loss, lower_bound = self.task.loss(forward, batch)
            loss.backward()
            return loss.detach(), lower_bound
        total, bounds = None, []
        for part in range(n):
            with self._autocast():
                loss, lower_bound = self.task.loss(forward, distributed.split_rows(batch, part, n))
            (loss / n).backward()
            total = loss.detach() if total is None else total + loss.detach()
            bounds.append(lower_bound)
        mean_bound = None if any(b is None for b in bounds) else sum(float(b) for b in bounds) / n
        return total / n, mean_bound

    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)

    def _diverged(self, loss: float, first: float | None) -> bool:
        if not math.isfinite(loss):
            return True
        limit = self.cfg.diverge_above
        return limit is not None and first is not None and abs(loss) > limit * max(first, 1e-12)

    # -- [C4]: the bound fitted to the run's curve -------------------------------------------------------------------
    def _fit_theory(self, theory: OnlineBound) -> dict:
        """Fit loss ≈ C + M·bound ([C4], `sfbench.theory.fit_bound`) to the run's curve and store it:
        the parameters go into summary.json (`theory.fit`), the fitted curve into `RUN/theory_fit.json`.

        The curve is `eval/subopt` (f(x) − f*, what [C1] bounds) where the task logs it at ≥ 8 points, else
        `eval/loss` likewise, else `train/loss` at every logged step (C absorbs the unknown f*)."""
        from ..theory.fit import bound_terms, fit_bound, metric_floor
        from ..tracking.run_record import atomic_write_text, iter_metrics

        rows = [r for r in iter_metrics(self.record.dir / "metrics.jsonl") if "theory/S1" in r]
        target = next((k for k in ("eval/subopt", "eval/loss") if sum(k in r for r in rows) >= 8), "train/loss")
        rows = [r for r in rows if target in r]
        steps = np.array([r["step"] for r in rows], dtype=np.int64)
        loss = np.array([r[target] for r in rows], dtype=np.float64)
        if theory.kind == "C1":
            s1 = np.array([r["theory/S1"] for r in rows])
            s2 = np.array([r["theory/S2"] for r in rows])
            with np.errstate(divide="ignore", invalid="ignore"):
                a, b = 1.0 / (2.0 * s1), s2 / (2.0 * s1)
        else:
            keep = steps <= len(theory.lrs)
            if keep.sum() > 500:    # [C3] is O(T) per horizon: fit on ~500 of them, not every logged step
                idx = np.flatnonzero(keep)
                keep = np.zeros_like(keep)
                keep[idx[np.unique(np.linspace(0, len(idx) - 1, 500).round().astype(int))]] = True
            steps, loss = steps[keep], loss[keep]
            a, b = bound_terms("C3", theory.lrs, theory.grad_sqs, steps)
        # D free: the overlay should follow the curve (with the task's exact D held fixed, the 1/S1 shape of [C1]
        # misses fast early progress, e.g. full-batch runs converging linearly); `D` in the fit is the effective D
        floor = metric_floor(target, loss, self.task.summary().get("f_star"))   # the fit respects the metric's floor
        fit = fit_bound(loss, a, b, diverge_above=self.cfg.diverge_above, C_min=floor)
        out = {"target": target, **fit.to_dict()}
        self.record.check()
        atomic_write_text(self.run_dir / "theory_fit.json", json.dumps(
            {**out, "bound": theory.kind, "steps": steps.tolist(), "observed": [v if math.isfinite(v) else None for v in loss.tolist()],
             "fitted": fit.to_dict(curve=True)["curve"]}, allow_nan=False, default=str) + "\n")
        return out

    def _above_start(self, final: dict) -> dict | None:
        """The evaluated metric (eval/subopt, else eval/loss) at the end against its first evaluation: {metric, first,
        final} when the run ended above where it started — a run that got worse, flagged beside its status."""
        from ..tracking.run_record import iter_metrics

        key = next((k for k in ("eval/subopt", "eval/loss") if k in final), None)
        if key is None or not self.dist_is_main:
            return None
        first = next((r[key] for r in iter_metrics(self.record.dir / "metrics.jsonl") if key in r), None)
        end = final[key]
        if isinstance(first, (int, float)) and isinstance(end, (int, float)) and end > first:
            return {"metric": key, "first": first, "final": end}
        return None

    # -- the run -----------------------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train (or resume) the run. Raises `RunLocked` when another process writes the directory, `RecordDamaged`
        when its record can't be resumed (nothing written then), `RecordWriteError` when a write fails."""
        check_run_dir(self.run_dir)     # someone else's files: refused before anything is written there
        # one writer per run directory: rank 0 holds the lock for the whole run (the CLI may hold it already)
        lock = run_lock.acquire(self.run_dir) if distributed.env_rank() == 0 else None
        try:
            return self._run_locked()
        finally:
            run_lock.release(lock)

    def _run_locked(self) -> dict:
        cfg = self.cfg
        summary = self.record.read_summary()
        if summary and summary.get("status") in ("completed", "diverged"):
            print(f"sfbench: {self.run_dir} already finished with status {summary['status']!r}; nothing to do "
                  f"(delete the directory or pick another hydra.run.dir to train again)", file=sys.stderr)
            return summary
        self.device = resolve_device(cfg.device)
        self.dist, self.device = distributed.setup(self.device, cfg.dist_timeout)
        if not self.dist.is_main:       # data parallel: only rank 0 writes the record, checkpoints and to W&B
            self.record = RunRecord(self.run_dir, writable=False)
            self.sink = NullSink()
        else:                           # a directory deleted or replaced under the run stops it at its next write
            self.record.claim()
        previous_handlers = self._install_signal_handlers()     # a signal during setup is honoured after it
        try:
            return self._run(summary)
        except StopNow as err:
            return self._end_abruptly(err, 0)
        except RecordWriteError as err:
            self._end_abruptly(err, 0)
            raise
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            distributed.teardown(self.dist)

    def _end_abruptly(self, err: BaseException, step: int) -> dict:
        """Close the record after `err` stopped the run: a second Ctrl-C → `preempted` at the last checkpoint; a
        failed write → `failed` with its one-line message (best effort: the disk may still be full); anything else
        → `failed` with the error. Once per run."""
        if self._ended:
            return self.record.read_summary() or {}
        self._ended = True
        self.record.close()
        known = self._ckpt_step is not None
        resume_at = f"step {self._ckpt_step}, its last checkpoint" if known else "its last checkpoint"
        if isinstance(err, StopNow):
            self.stopped_at_once = True
            status, fields = "preempted", {"steps_done": self._ckpt_step, "error": None} if known else {"error": None}
            if self.dist_is_main:
                print(f"\nsfbench: stopped at once (second Ctrl-C); the run resumes from {resume_at} — run the "
                      f"same command again", file=sys.stderr)
        elif isinstance(err, RunDirLost):
            status, fields = "failed", {"error": str(err)}      # not written: the directory is not the run's now
        elif isinstance(err, RecordWriteError):
            err.hint = f"; {err.remedy} and run the same command again: it resumes from {resume_at}"
            status, fields = "failed", {"steps_done": self._ckpt_step, "error": str(err)} if known else \
                {"error": str(err)}
        else:
            status, fields = "failed", {"steps_done": step - 1, "error": f"{type(err).__name__}: {err}"}
        summary = {"status": status, **fields}
        try:
            summary = self.record.write_summary(status, **fields)
        except (OSError, RecordDamaged):
            pass
        self.sink.finish(status)
        return summary

    def _run(self, summary: dict | None) -> dict:
        cfg = self.cfg
        plan = self._plan_resume(summary)   # a damaged record stops here, before anything is written
        self._ckpt_step = plan.step
        if self.dist.is_main:
            removed = remove_stale_temp_files(self.run_dir)
            if removed:
                print(f"sfbench: removed {len(removed)} temporary file(s) an interrupted run left "
                      f"({', '.join(p.name for p in removed[:3])}{', …' if len(removed) > 3 else ''})",
                      file=sys.stderr)
        seed_everything(cfg.seed)
        self.task.setup(self.device)
        seed_everything(cfg.seed)
        model = self.task.model().to(self.device)
        opt = self.make_optimizer(parameters_for(self.make_optimizer, model))   # named where it places by name
        sched = self.make_scheduler(opt) if self.make_scheduler is not None else None
        theory = None
        if cfg.theory:     # before loading a checkpoint: the origin x_0 is the seeded initial model
            theory = OnlineBound(opt, cfg.steps, self.task.summary().get("D"), cfg.theory_d_every, task=self.task,
                                 model=model, grad_clip=cfg.grad_clip)
        start = 0
        resumed = plan.loaded is not None
        if resumed:
            start = self._load(plan.loaded.state, model, opt, sched, theory)
            plan.loaded.state = None            # the tensors are in the model and optimizer now
            self._keep_previous = plan.keep_previous
            self.record.truncate_after(start)
            print(f"sfbench: resuming {self.run_dir} from step {start}", file=sys.stderr)
        else:
            if self.dist.is_main:               # trainer.on_gap=restart: the checkpoints are ahead of the record
                for name in (CHECKPOINT, PREVIOUS):
                    (self.run_dir / name).unlink(missing_ok=True)
            self.record.truncate_after(0)       # a run that died before its first checkpoint starts clean
            self.record.write_config(self.run_config)
        start = distributed.agree(self.dist, start, "the step to resume from", self.device)
        self._ckpt_step = start
        requeues = (summary or {}).get("resumes", 0) + (1 if resumed else 0)
        n_params = sum(p.numel() for p in model.parameters())
        self.record.write_summary("running", steps_done=start, total_steps=cfg.steps, resumes=requeues,
                                  config_digest=digest(self.record.read_config() or self.run_config),
                                  device=str(self.device), world_size=self.dist.world if self.dist.active else None,
                                  parameters=n_params, task=self.task.summary(),
                                  theory=theory.summary() if theory is not None else None, error=None,
                                  metrics_gaps=_merge_gaps((summary or {}).get("metrics_gaps"), plan.gaps)
                                  if resumed else None)
        forward = torch.compile(model) if cfg.compile else model
        distributed.broadcast_parameters(self.dist, model)
        if hasattr(opt, "train"):
            opt.train()
        model.train()
        self.sink.start(self.run_dir, self.run_config, group=self.group, job_type=self.task.name,
                        name=self.run_name)
        progress = Progress(cfg.steps, start, cfg.log_every_s, desc=self.run_name, enabled=self.dist.is_main)
        wants_loss = bool(getattr(opt, "needs_loss", False))
        params = [p for p in model.parameters() if p.requires_grad]
        status, last, started = "completed", {}, time.time()
        first_loss = self.record.read_summary().get("first_loss") if resumed else None
        if resumed and first_loss is None and plan.rows and plan.rows[0]["step"] == 1:     # summary.json was lost
            loss_1 = plan.rows[0].get("train/loss")
            first_loss = abs(loss_1) if isinstance(loss_1, (int, float)) and math.isfinite(loss_1) else None
        if resumed and start >= cfg.steps:
            # killed after the last checkpoint, before the end: the final metrics are the last line's, evaluated at
            # x again (model.pt, the theory fit and the summary are written below as at the end of any run)
            last = dict(plan.rows[-1]) if plan.rows and plan.rows[-1]["step"] == start else {"step": start}
            last.update(self._evaluate(forward, opt))
        step = start
        cadence = EvalCadence(cfg.eval_every, cfg.steps, cfg.eval_share, self.task.eval_cost())
        if self._stop_signal is not None and not self.dist.active:   # asked to stop while setting up
            # (several processes: the first step's all-reduce carries the flag, so every rank stops together)
            self.record.write_summary("preempted", steps_done=start)
            self.sink.finish("preempted")
            self.record.close()
            print(f"sfbench: {signal.Signals(self._stop_signal).name} received during setup; stopped before "
                  f"training — run the same command again to resume", file=sys.stderr)
            return self.record.read_summary()
        try:
            for step in range(start + 1, cfg.steps + 1):
                t0 = time.perf_counter()
                batch = distributed.shard(self.task.batch(step - 1), self.dist)
                opt.zero_grad(set_to_none=True)
                loss, lower_bound = self._forward_backward(forward, batch)
                # one all-reduce with N processes: the mean loss and ℓ*, and whether any rank was asked to stop
                loss_value, lower_bound, stop_now = distributed.reduce_step(
                    self.dist, loss, lower_bound, self._stop_signal is not None, self.device, step)
                if first_loss is None:
                    first_loss = abs(loss_value) if math.isfinite(loss_value) else None
                if self._diverged(loss_value, first_loss):
                    status = "diverged"
                    last = {"step": step, "train/loss": loss_value}
                    self.record.log(last)
                    self.sink.log(last)
                    print(f"sfbench: loss {loss_value:.4g} at step {step}: the run diverged", file=sys.stderr)
                    break
                distributed.average_gradients(self.dist, params, step)
                grads = [p.grad for p in params if p.grad is not None]
                if cfg.grad_clip:
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    grad_norm_sq = float(norm) ** 2
                    used_grad_sq = min(grad_norm_sq, cfg.grad_clip ** 2)
                else:
                    grad_norm_sq = (torch.stack(torch._foreach_norm(grads)).double().square().sum().item()
                                    if grads else 0.0)
                    used_grad_sq = grad_norm_sq
                lr_before = opt.param_groups[0]["lr"]
                if wants_loss:
                    lb = 0.0 if lower_bound is None else lower_bound
                    opt.step(loss=loss_value, lower_bound=lb)
                else:
                    opt.step()
                lr_used = opt.param_groups[0].get("last_lr", lr_before)
                if sched is not None:
                    sched.step()
                metrics = {"step": step, "lr": float(lr_used), "train/loss": loss_value,
                           "train/grad_norm_sq": grad_norm_sq}
                if lower_bound is not None:
                    metrics["train/lower_bound"] = float(lower_bound)
                evaluating = cadence.due(step)
                if theory is not None:
                    metrics.update(theory.after_step(step, float(lr_used), used_grad_sq, force=evaluating))
                metrics["time/step_s"] = time.perf_counter() - t0
                if evaluating:
                    t_eval = time.perf_counter()
                    metrics.update(self._evaluate(forward, opt))
                    cadence.measured(time.perf_counter() - t_eval)
                if step % cfg.log_every == 0 or "eval/loss" in metrics or step == cfg.steps:
                    self.record.log(metrics)
                    self.sink.log(metrics)
                last = metrics
                if step == 1:
                    self.record.write_summary("running", first_loss=first_loss)
                progress.update(step, loss_value, float(lr_used))
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps:
                    with self._writing():
                        self._save(step, model, opt, sched, theory)
                        self.task.persist()
                        self.record.write_summary("running", steps_done=step)
                if not self.dist.active:      # one process: a signal that came during this step stops here
                    stop_now = self._stop_signal is not None
                if stop_now and step < cfg.steps:
                    with self._writing():
                        self._save(step, model, opt, sched, theory)
                        self.task.persist()
                    status = "preempted"
                    name = signal.Signals(self._stop_signal).name if self._stop_signal else "a stop request (another rank)"
                    print(f"sfbench: {name} received; checkpointed at step {step} — run the same command again "
                          f"to resume", file=sys.stderr)
                    break
        except BaseException as err:
            progress.close()
            self._end_abruptly(err, step)
            raise
        progress.close()
        steps_done = last.get("step", start) if status != "diverged" else last["step"] - 1
        if status == "completed" and self.dist.is_main:
            self.record.check()
            with self._at_x(model, opt):       # the model at x, BatchNorm statistics recomputed there
                atomic_torch_save(model.state_dict(), self.run_dir / "model.pt")
        final = {k: v for k, v in last.items() if k != "step" and not k.startswith("time/")}
        self.task.persist()
        theory_summary = None
        if theory is not None:
            theory_summary = theory.summary()
            if status in ("completed", "diverged") and self.dist.is_main:
                theory_summary["fit"] = self._fit_theory(theory)
        summary = self.record.write_summary(status, steps_done=steps_done, final=final,
                                            wall_s=time.time() - started, task=self.task.summary(),
                                            theory=theory_summary, ended_above_start=self._above_start(final),
                                            evaluation={**cadence.summary(), "at": "x" if hasattr(opt, "eval")
                                                        and hasattr(opt, "train") else "the last iterate"})
        self.sink.summary({"status": status, "steps_done": steps_done, **final})
        self.sink.finish(status)
        self.record.close()
        return summary


def _merge_gaps(known: list | None, new: list[list[int]]) -> list[list[int]] | None:
    """Ranges of missing metric lines recorded so far plus the ones this resume went on over (trainer.on_gap=record)."""
    merged = sorted({tuple(r) for r in (known or [])} | {tuple(r) for r in new})
    return [list(r) for r in merged] or None
