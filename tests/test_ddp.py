"""Data parallel with torch.distributed: `torchrun --nproc_per_node=2` on CPU (gloo) gives the same run as
one process with the same global batch — same final parameters to float tolerance, same losses, same SF-Polyak
steps — and only rank 0 writes the run record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch


pytestmark = pytest.mark.slow

COMMON = ["task=logreg", "task.batch_size=32", "logger=none", "trainer.steps=40", "trainer.eval_every=20"]


def launch(tmp_path, name, extra, nproc, env):
    run_dir = tmp_path / name
    prefix = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 \
        else [sys.executable]
    proc = subprocess.run([*prefix, "-m", "sfbench", *COMMON, *extra, f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("opt", ["sf_adamw", "sf_polyak"])
def test_two_gloo_processes_equal_one_process(tmp_path, sfbench_env, opt):
    from conftest import subprocess_env
    env = subprocess_env(sfbench_env)
    one = launch(tmp_path, "one", [f"opt={opt}"], 1, env)
    two = launch(tmp_path, "two", [f"opt={opt}"], 2, env)
    a, b = torch.load(one / "model.pt"), torch.load(two / "model.pt")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-10, atol=1e-12)
    ra, rb = rows(one), rows(two)
    assert len(ra) == len(rb) == 40                          # rank 1 wrote no lines of its own
    for x, y in zip(ra, rb):
        assert y["train/loss"] == pytest.approx(x["train/loss"], rel=1e-10)      # the global batch's mean loss
        assert y["lr"] == pytest.approx(x["lr"], rel=1e-9)                       # SF-Polyak: same step size
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["world_size"] == 2


def test_batch_not_divisible_is_a_clear_error(tmp_path, sfbench_env):
    from conftest import subprocess_env
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "sfbench", "task=logreg", "task.batch_size=33", "logger=none", "trainer.steps=5",
                           f"hydra.run.dir={tmp_path / 'odd'}"], capture_output=True, text=True,
                          env=subprocess_env(sfbench_env), cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "multiple of the number of processes" in proc.stderr


def test_shard_splits_tensors_in_structures():
    from sfbench.train.distributed import DistInfo, shard

    x, y = torch.arange(8).reshape(4, 2), torch.arange(4)
    part = shard((x, y, 7), DistInfo(rank=1, world=2))
    assert torch.equal(part[0], x[2:]) and torch.equal(part[1], y[2:]) and part[2] == 7
    assert shard(None, DistInfo(rank=1, world=2)) is None
    both = [shard({"x": x}, DistInfo(rank=r, world=2))["x"] for r in range(2)]
    assert torch.equal(torch.cat(both), x)                    # sharded, not duplicated


def _grad_worker(rank, world, init_file, out_file):
    import torch.distributed as dist

    from sfbench.train.distributed import DistInfo, average_gradients

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        always, sometimes, never = (torch.nn.Parameter(torch.zeros(3, dtype=torch.float64)) for _ in range(3))
        always.grad = torch.full((3,), float(rank + 1), dtype=torch.float64)      # ranks: 1, 2 → mean 1.5
        if rank == 0:
            sometimes.grad = torch.full((3,), 4.0, dtype=torch.float64)           # only rank 0: mean 2.0
        average_gradients(DistInfo(rank=rank, world=world), [always, sometimes, never])
        torch.save({"always": always.grad, "sometimes": sometimes.grad, "never": never.grad}, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_average_gradients_keeps_missing_gradients_missing(tmp_path):
    """A parameter no rank has a gradient for stays `grad=None` (the SF optimizers leave it alone, as in one process);
    one with a gradient on some ranks is averaged with zeros elsewhere; the rest is the plain mean."""
    import torch.multiprocessing as mp

    mp.spawn(_grad_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "out")), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"out.{rank}")
        assert torch.equal(got["always"], torch.full((3,), 1.5, dtype=torch.float64))
        assert torch.equal(got["sometimes"], torch.full((3,), 2.0, dtype=torch.float64))
        assert got["never"] is None


def test_signal_to_one_rank_stops_both_and_the_run_resumes(tmp_path, sfbench_env):
    """SIGTERM to a single worker: the stop flag is all-reduced, so both ranks checkpoint at the same step (no hang);
    the same command then resumes and completes, with the same losses as an uninterrupted run."""
    import os
    import signal
    import time

    from conftest import subprocess_env

    env = subprocess_env(sfbench_env)
    args = ["task=logreg", "task.batch_size=32", "opt=sf_polyak", "logger=none", "trainer.steps=3000",
            "trainer.eval_every=0", "trainer.ckpt_every=0"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sfbench",
           *args, f"hydra.run.dir={tmp_path / 'cut'}"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 50):
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    os.kill(int(workers[1]), signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "preempted" and 0 < summary["steps_done"] < 3000, summary
    resumed = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumes"] == 1
    full = launch(tmp_path, "full", ["opt=sf_polyak", "trainer.steps=3000", "trainer.eval_every=0",
                                     "trainer.ckpt_every=0"], 2, env)
    assert [r["train/loss"] for r in rows(tmp_path / "cut")] == [r["train/loss"] for r in rows(full)]


# -- a rank that stalls or is gone ------------------------------------------------------------------------------------

def _start_ranks(tmp_path, env, extra):
    """Two ranks started by hand (as srun starts a job's tasks: no torchrun agent to stop the others), each with its
    own stderr."""
    import socket

    with socket.socket() as s:       # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        rank_env = {**env, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
                    "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-m", "sfbench", *extra], env=rank_env, cwd=tmp_path,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _wait_lines(path, n, timeout=120):
    import time

    deadline = time.time() + timeout
    while time.time() < deadline and (not path.exists() or len(path.read_text().splitlines()) < n):
        time.sleep(0.1)
    assert path.exists() and len(path.read_text().splitlines()) >= n, f"{path}: fewer than {n} lines"


DIST_FAULT = ["task=logreg", "task.batch_size=32", "opt=sf_adamw", "logger=none", "trainer.steps=2000",
              "trainer.eval_every=0", "trainer.ckpt_every=100", "trainer.dist_timeout=0.1"]


def test_a_stalled_rank_is_named_within_the_timeout_and_a_pending_sigterm_is_serviced(tmp_path, sfbench_env):
    """SIGSTOP on rank 1, then SIGTERM to rank 0, which is blocked in the step's all-reduce: with
    trainer.dist_timeout=0.1 (6 s) rank 0 stops within seconds — not gloo's 30 minutes — with one line naming rank 1
    and the signal, exit 1, the summary `failed` (not `running`); the same command then resumes and completes."""
    import os
    import signal
    import time

    from conftest import subprocess_env

    env = subprocess_env(sfbench_env)
    run = [*DIST_FAULT, f"hydra.run.dir={tmp_path / 'run'}"]
    rank0, rank1 = _start_ranks(tmp_path, env, run)
    try:
        _wait_lines(tmp_path / "run" / "metrics.jsonl", 300)
        os.kill(rank1.pid, signal.SIGSTOP)
        time.sleep(0.5)
        os.kill(rank0.pid, signal.SIGTERM)
        started = time.monotonic()
        _, err = rank0.communicate(timeout=120)
        waited = time.monotonic() - started
    finally:
        os.kill(rank1.pid, signal.SIGKILL)
        rank1.communicate()
    assert rank0.returncode == 1, err[-3000:]
    assert waited < 6 + 6 + 20, waited            # the all-reduce's timeout, the barrier's, start-up slack
    lines = [line for line in err.splitlines() if line.startswith("sfbench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "rank(s) 1 of 2 did not answer within trainer.dist_timeout=0.1 min" in lines[0]
    assert "SIGTERM came while it waited" in lines[0] and "run the same command again" in lines[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "did not answer" in summary["error"]
    again = [p.communicate(timeout=300) for p in _start_ranks(tmp_path, env, [*run, "trainer.dist_timeout=5"])]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 2000 and summary["resumes"] == 1, \
        again[0][1][-3000:]


@pytest.mark.parametrize("lost", [1, 0])
def test_a_rank_whose_peer_is_killed_exits_non_zero_within_the_timeout(tmp_path, sfbench_env, lost):
    """SIGKILL on one rank (rank 0 holds the rendezvous store too): the other one stops within the timeout with one
    line saying a rank is gone, exit 1, instead of waiting."""
    import os
    import signal
    import time

    from conftest import subprocess_env

    env = subprocess_env(sfbench_env)
    procs = _start_ranks(tmp_path, env, [*DIST_FAULT, f"hydra.run.dir={tmp_path / 'run'}"])
    survivor = procs[1 - lost]
    try:
        _wait_lines(tmp_path / "run" / "metrics.jsonl", 300)
        os.kill(procs[lost].pid, signal.SIGKILL)
        started = time.monotonic()
        _, err = survivor.communicate(timeout=120)
        waited = time.monotonic() - started
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert survivor.returncode == 1, err[-3000:]
    assert waited < 6 + 6 + 20, waited
    lines = [line for line in err.splitlines() if line.startswith("sfbench: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert f"rank {lost} of 2 is gone during step " in lines[0] and "Connection " in lines[0], lines[0]
