"""The training loop (DESIGN.md "One step of the loop"), written against `sfbench.tasks.Task` and any
`torch.optim.Optimizer`, with no task- or optimizer-specific branches: setup and resume, the steps, the end.

Per step: batch → `task.loss` (loss, ℓ*) → backward → optional clipping → step (optimizers that declare
`needs_loss` — SF-Polyak — get the loss and ℓ*) → record `lr` actually used (`group["last_lr"]` where the optimizer
reports it), `train/loss`, `train/grad_norm_sq`, `time/step_s`; evaluation at x where the cadence says so
(`evaluation.py`, `cadence.py`).

Checkpoints (`RUN/checkpoints/last.pt`, atomic) hold the *training* state: parameters at y, optimizer state,
scheduler, RNG states and the step (the step is the data position: batches are a pure function of it). Saving at y
rather than x is what makes resuming bit-exact — x → y is not an exact floating-point round trip. The end writes the
model at x as `RUN/model.pt` (`sfbench.train.load_model_at_x` recovers x from any checkpoint) and the theory's fit.

A stop signal (`signals.py`) finishes the current step, checkpoints, and ends the run `preempted`; a non-finite loss
ends it `diverged`; both return normally (exit 0) so that sweeps go on. A second Ctrl-C stops at once (`StopNow`) at
the last checkpoint, once writes in progress are done. The process that writes a run holds the run directory's lock
for the whole run; resuming checks the record before anything is written (`resume.py`); temporary files a killed
run left are removed; a failed write (a full disk) ends the run `failed` with a one-line `RecordWriteError`; a run
resumed at its last step evaluates at x again and writes its final metrics.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch

from ..tasks.base import Task
from ..tracking import lock as run_lock
from ..tracking.ownership import DifferentRun, check_run_dir, differences, digest, identity
from ..tracking.run_record import (METRICS, RecordDamaged, RecordWriteError, RunDirLost, RunRecord, iter_metrics,
                                   remove_stale_temp_files)
from ..tracking.sinks import NullSink, Sink
from . import distributed
from .cadence import EvalCadence
from .checkpoint import CHECKPOINT, PREVIOUS, atomic_torch_save, save_checkpoint
from .config import TrainerConfig
from .evaluation import Evaluation, autocast
from .parts import Parts, resolve_device
from .progress import Progress
from .resume import ResumePlan, plan_resume
from .signals import StopNow, Stops


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
        self.stops = Stops()             # `stops.request(signum)`: a stop signal the CLI took before `run`
        self.stopped_at_once = False     # a second Ctrl-C ended the run (the CLI exits 130)
        self._ckpt_step: int | None = None   # the newest checkpoint's step (what a resume starts from); None: not
        #                                     known yet (stopped before the resume was planned)
        self._keep_previous = True       # the next save may turn last.pt into prev.pt
        self._ended = False

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
        self.dist, self.device = distributed.setup(resolve_device(cfg.device), cfg.dist_timeout)
        self.evaluation = Evaluation(self.task, cfg.precision, self.device, cfg.bn_recompute_batches)
        if not self.dist.is_main:       # data parallel: only rank 0 writes the record, checkpoints and to W&B
            self.record = RunRecord(self.run_dir, writable=False)
            self.sink = NullSink()
            self.stops.loud = False
        else:                           # a directory deleted or replaced under the run stops it at its next write
            self.record.claim()
        previous_handlers = self.stops.install()     # a signal during setup is honoured after it
        try:
            return self._run(summary)
        except StopNow as err:
            return self._end_abruptly(err, 0)
        except RecordWriteError as err:
            self._end_abruptly(err, 0)
            raise
        finally:
            self.stops.restore(previous_handlers)
            distributed.teardown(self.dist)

    def _run(self, summary: dict | None) -> dict:
        cfg = self.cfg
        say = (lambda line: print(line, file=sys.stderr)) if self.dist.is_main else (lambda line: None)
        # which checkpoint to resume from, checked against metrics.jsonl: a damaged record stops here, unwritten
        plan = plan_resume(self.run_dir, log_every=cfg.log_every, total_steps=cfg.steps, on_gap=cfg.on_gap,
                           device=self.device, log=say, accepted=(summary or {}).get("metrics_gaps"))
        self._ckpt_step = plan.step
        if self.dist.is_main:
            removed = remove_stale_temp_files(self.run_dir)
            if removed:
                print(f"sfbench: removed {len(removed)} temporary file(s) an interrupted run left "
                      f"({', '.join(p.name for p in removed[:3])}{', …' if len(removed) > 3 else ''})",
                      file=sys.stderr)
        self.parts = Parts.build(self.task, self.make_optimizer, self.make_scheduler, cfg, self.device)
        self.params = [t for t in self.parts.model.parameters() if t.requires_grad]
        start = self._start(plan, summary)
        resumed = plan.loaded is not None
        self.sink.start(self.run_dir, self.run_config, group=self.group, job_type=self.task.name,
                        name=self.run_name)
        started, last = time.time(), {}
        first_loss = self.record.read_summary().get("first_loss") if resumed else None
        if resumed and first_loss is None and plan.rows and plan.rows[0]["step"] == 1:     # summary.json was lost
            loss_1 = plan.rows[0].get("train/loss")
            first_loss = abs(loss_1) if isinstance(loss_1, (int, float)) and math.isfinite(loss_1) else None
        if resumed and start >= cfg.steps:
            # killed after the last checkpoint, before the end: the final metrics are the last line's, evaluated at
            # x again (model.pt, the theory fit and the summary are written as at the end of any run)
            last = dict(plan.rows[-1]) if plan.rows and plan.rows[-1]["step"] == start else {"step": start}
            last.update(self.evaluation.evaluate(self.forward, self.parts.opt))
        self.cadence = EvalCadence(cfg.eval_every, cfg.steps, cfg.eval_share, self.task.eval_cost())
        if self.stops.signal is not None and not self.dist.active:   # asked to stop while setting up
            # (several processes: the first step's all-reduce carries the flag, so every rank stops together)
            self.record.write_summary("preempted", steps_done=start)
            self.sink.finish("preempted")
            self.record.close()
            print(f"sfbench: {signal.Signals(self.stops.signal).name} received during setup; stopped before "
                  f"training — run the same command again to resume", file=sys.stderr)
            return self.record.read_summary()
        status, last = self._train(start, first_loss, last)
        return self._finish(status, last, start, started)

    # -- setup and resume --------------------------------------------------------------------------------------------
    def _start(self, plan: ResumePlan, summary: dict | None) -> int:
        """The checkpoint `plan` chose loaded, or the record started afresh; summary.json says `running`; the model
        in training mode (compiled where asked). Returns the step training goes on from."""
        cfg, start, (model, opt, theory) = self.cfg, 0, (self.parts.model, self.parts.opt, self.parts.theory)
        resumed = plan.loaded is not None
        if resumed:
            diff = differences(plan.loaded.state.get("identity") or {}, self.run_config)
            if diff:        # config.yaml lost or changed, and the checkpoint knows better: nothing is written
                raise DifferentRun(self.run_dir, diff)
            self.parts.load_state_dict(plan.loaded.state)
            start = int(plan.loaded.state["step"])
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
        self.record.write_summary(
            "running", steps_done=start, total_steps=cfg.steps,
            resumes=(summary or {}).get("resumes", 0) + (1 if resumed else 0),
            config_digest=digest(self.record.read_config() or self.run_config), device=str(self.device),
            world_size=self.dist.world if self.dist.active else None,
            parameters=sum(t.numel() for t in model.parameters()), task=self.task.summary(),
            theory=theory.summary() if theory is not None else None, error=None,
            metrics_gaps=_merge_gaps((summary or {}).get("metrics_gaps"), plan.gaps) if resumed else None)
        self.forward = torch.compile(model) if cfg.compile else model
        distributed.broadcast_parameters(self.dist, model)
        if hasattr(opt, "train"):
            opt.train()
        model.train()
        return start

    def _save(self, step: int) -> None:
        """last.pt at `step` (the one it replaces becomes prev.pt); metrics.jsonl is fsynced first, so a checkpoint
        is never ahead of the metrics on disk."""
        if self.dist.is_main:
            self.record.sync()
            save_checkpoint({"step": step, "identity": identity(self.run_config), **self.parts.state_dict()},
                            self.run_dir, keep_previous=self._keep_previous)
            self._keep_previous = True
        self._ckpt_step = step

    # -- the steps ---------------------------------------------------------------------------------------------------
    def _train(self, start: int, first_loss: float | None, last: dict) -> tuple[str, dict]:
        """Steps start + 1 … trainer.steps, with checkpoints and stop requests between them. Returns the status
        (completed, diverged, preempted) and the last step's metrics."""
        cfg, status, step = self.cfg, "completed", start
        progress = Progress(cfg.steps, start, cfg.log_every_s, desc=self.run_name, enabled=self.dist.is_main)
        try:
            for step in range(start + 1, cfg.steps + 1):
                t0 = time.perf_counter()
                loss_value, lower_bound, stop_now = self._forward_backward(step)
                if first_loss is None:
                    first_loss = abs(loss_value) if math.isfinite(loss_value) else None
                if self._diverged(loss_value, first_loss):
                    status = "diverged"
                    last = {"step": step, "train/loss": loss_value}
                    self.record.log(last)
                    self.sink.log(last)
                    print(f"sfbench: loss {loss_value:.4g} at step {step}: the run diverged", file=sys.stderr)
                    break
                last = self._step(step, loss_value, lower_bound, t0)
                if step % cfg.log_every == 0 or "eval/loss" in last or step == cfg.steps:
                    self.record.log(last)
                    self.sink.log(last)
                if step == 1:
                    self.record.write_summary("running", first_loss=first_loss)
                progress.update(step, loss_value, last["lr"])
                if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == cfg.steps:
                    with self.stops.writing():
                        self._save(step)
                        self.task.persist()
                        self.record.write_summary("running", steps_done=step)
                if not self.dist.active:      # one process: a signal that came during this step stops here
                    stop_now = self.stops.signal is not None
                if stop_now and step < cfg.steps:
                    with self.stops.writing():
                        self._save(step)
                        self.task.persist()
                    status = "preempted"
                    name = signal.Signals(self.stops.signal).name if self.stops.signal else \
                        "a stop request (another rank)"
                    print(f"sfbench: {name} received; checkpointed at step {step} — run the same command again "
                          f"to resume", file=sys.stderr)
                    break
        except BaseException as err:
            progress.close()
            self._end_abruptly(err, step)
            raise
        progress.close()
        return status, last

    def _forward_backward(self, step: int) -> tuple[float, float | None, bool]:
        """Loss and gradient of one optimizer step's batch, over `grad_accum` micro-batches: each micro-batch's mean
        loss is back-propagated with weight 1/N, so the accumulated gradient is the whole batch's mean gradient.
        Returns the mean loss and the mean ℓ* over the micro-batches (None if the task gives none) — the whole
        batch's values, which is what SF-Polyak [B1] needs (equal micro-batch sizes make the mean of means exact) —
        averaged over the processes of a data-parallel run, and whether any of them was asked to stop."""
        n, batch = self.cfg.grad_accum, distributed.shard(self.task.batch(step - 1), self.dist)
        self.parts.opt.zero_grad(set_to_none=True)
        total, bounds = None, []
        for part in range(n):
            with autocast(self.cfg.precision, self.device):
                loss, bound = self.task.loss(self.forward, distributed.split_rows(batch, part, n) if n > 1 else batch)
            (loss / n).backward()
            total = loss.detach() if total is None else total + loss.detach()
            bounds.append(bound)
        lower_bound = None if any(b is None for b in bounds) else sum(float(b) for b in bounds) / n
        # one all-reduce with N processes: the mean loss and ℓ*, and whether any rank was asked to stop
        return distributed.reduce_step(self.dist, total / n, lower_bound, self.stops.signal is not None, self.device,
                                       step)

    def _diverged(self, loss: float, first: float | None) -> bool:
        if not math.isfinite(loss):
            return True
        limit = self.cfg.diverge_above
        return limit is not None and first is not None and abs(loss) > limit * max(first, 1e-12)

    def _step(self, step: int, loss_value: float, lower_bound: float | None, t0: float) -> dict:
        """Gradients averaged over the processes (and clipped), the optimizer and schedule stepped; the step's
        metrics, with the theory accumulators and, where the cadence says so, the evaluation at x."""
        cfg, (opt, sched, theory) = self.cfg, (self.parts.opt, self.parts.sched, self.parts.theory)
        distributed.average_gradients(self.dist, self.params, step)
        if cfg.grad_clip:
            grad_norm_sq = float(torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)) ** 2
            used_grad_sq = min(grad_norm_sq, cfg.grad_clip ** 2)
        else:
            grads = [p.grad for p in self.params if p.grad is not None]
            grad_norm_sq = torch.stack(torch._foreach_norm(grads)).double().square().sum().item() if grads else 0.0
            used_grad_sq = grad_norm_sq
        lr_before = opt.param_groups[0]["lr"]
        if getattr(opt, "needs_loss", False):
            opt.step(loss=loss_value, lower_bound=0.0 if lower_bound is None else lower_bound)
        else:
            opt.step()
        lr_used = float(opt.param_groups[0].get("last_lr", lr_before))
        if sched is not None:
            sched.step()
        metrics = {"step": step, "lr": lr_used, "train/loss": loss_value, "train/grad_norm_sq": grad_norm_sq}
        if lower_bound is not None:
            metrics["train/lower_bound"] = float(lower_bound)
        evaluating = self.cadence.due(step)
        if theory is not None:
            metrics.update(theory.after_step(step, lr_used, used_grad_sq, force=evaluating))
        metrics["time/step_s"] = time.perf_counter() - t0
        if evaluating:
            t_eval = time.perf_counter()
            metrics.update(self.evaluation.evaluate(self.forward, opt))
            self.cadence.measured(time.perf_counter() - t_eval)
        return metrics

    # -- the end -----------------------------------------------------------------------------------------------------
    def _finish(self, status: str, last: dict, start: int, started: float) -> dict:
        """model.pt at x (a completed run), the theory fit and the final summary; closes the record."""
        steps_done = last.get("step", start) if status != "diverged" else last["step"] - 1
        main, (model, opt, theory) = self.dist.is_main, (self.parts.model, self.parts.opt, self.parts.theory)
        if status == "completed" and main:
            self.record.check()
            with self.evaluation.at_x(model, opt):   # the model at x, BatchNorm statistics recomputed there
                atomic_torch_save(model.state_dict(), self.run_dir / "model.pt")
        final = {k: v for k, v in last.items() if k != "step" and not k.startswith("time/")}
        self.task.persist()
        theory_summary = None
        if theory is not None:
            theory_summary = theory.summary()
            if status in ("completed", "diverged") and main:
                theory_summary["fit"] = theory.fit(self.record, self.task.summary().get("f_star"),
                                                   self.cfg.diverge_above)
        at = "x" if hasattr(opt, "eval") and hasattr(opt, "train") else "the last iterate"
        summary = self.record.write_summary(status, steps_done=steps_done, final=final,
                                            wall_s=time.time() - started, task=self.task.summary(),
                                            theory=theory_summary,
                                            ended_above_start=_above_start(self.record, final) if main else None,
                                            evaluation={**self.cadence.summary(), "at": at})
        self.sink.summary({"status": status, "steps_done": steps_done, **final})
        self.sink.finish(status)
        self.record.close()
        return summary

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
        at_checkpoint = {"steps_done": self._ckpt_step} if known else {}
        if isinstance(err, StopNow):
            self.stopped_at_once = True
            status, fields = "preempted", {**at_checkpoint, "error": None}
            if self.dist.is_main:
                print(f"\nsfbench: stopped at once (second Ctrl-C); the run resumes from {resume_at} — run the "
                      f"same command again", file=sys.stderr)
        elif isinstance(err, RunDirLost):
            status, fields = "failed", {"error": str(err)}      # not written: the directory is not the run's now
        elif isinstance(err, RecordWriteError):
            err.hint = f"; {err.remedy} and run the same command again: it resumes from {resume_at}"
            status, fields = "failed", {**at_checkpoint, "error": str(err)}
        else:
            status, fields = "failed", {"steps_done": step - 1, "error": f"{type(err).__name__}: {err}"}
        summary = {"status": status, **fields}
        try:
            summary = self.record.write_summary(status, **fields)
        except (OSError, RecordDamaged):
            pass
        self.sink.finish(status)
        return summary


def _above_start(record: RunRecord, final: dict) -> dict | None:
    """The evaluated metric (eval/subopt, else eval/loss) at the end against its first evaluation: {metric, first,
    final} when the run ended above where it started — a run that got worse, flagged beside its status."""
    key = next((k for k in ("eval/subopt", "eval/loss") if k in final), None)
    first = next((r[key] for r in iter_metrics(record.dir / METRICS) if key in r), None) if key else None
    if isinstance(first, (int, float)) and isinstance(final.get(key), (int, float)) and final[key] > first:
        return {"metric": key, "first": first, "final": final[key]}
    return None


def _merge_gaps(known: list | None, new: list[list[int]]) -> list[list[int]] | None:
    """Ranges of missing metric lines recorded so far plus the ones this resume went on over (trainer.on_gap=record)."""
    merged = sorted({tuple(r) for r in (known or [])} | {tuple(r) for r in new})
    return [list(r) for r in merged] or None
