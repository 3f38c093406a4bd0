"""Faults around the run record: one writer per run directory, resume checks, kept checkpoints, damaged
files, full disks, Ctrl-C, typos in keys.

Every resumed run is compared with an uninterrupted run of the same command (metrics without `time/`, the final
metrics, model.pt); every refused or damaged case checks exit status 2, one line naming the file (or the holder), no
traceback, and that nothing in the run directory changed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import run_cli, subprocess_env
from sfbench.tracking import read_summary
from sfbench.tracking import lock as run_lock
from sfbench.tracking.run_record import RecordDamaged, RunRecord, iter_metrics, read_config

LOGREG = ["task=logreg", "logger=none", "trainer.eval_every=10", "trainer.ckpt_every=10"]


def rows(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in iter_metrics(run_dir / "metrics.jsonl")]


def final(run_dir: Path) -> dict:
    summary = read_summary(run_dir)
    return {"status": summary["status"], "steps_done": summary["steps_done"], "final": summary.get("final")}


def same_model(a: Path, b: Path) -> bool:
    x, y = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def snapshot(run_dir: Path) -> dict:
    """Every file under the run directory with its bytes and mtime: "nothing else touched" compares two of these."""
    return {str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def preempt_at(monkeypatch, step: int) -> None:
    """Send this process a real SIGTERM once the metrics line of `step` is written (the Trainer's handler is the
    one installed then): the run checkpoints at `step` and ends `preempted`."""
    original = RunRecord.log

    def log(self, metrics):
        original(self, metrics)
        if metrics["step"] == step:
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(RunRecord, "log", log)


@pytest.fixture
def reference(in_run_env):
    """An uninterrupted 40-step run (checkpoints every 10 steps) and the arguments that train it elsewhere."""
    def make(*extra):
        args = [*LOGREG, "trainer.steps=40", *extra]
        assert run_cli([*args, "hydra.run.dir=full"]) == 0
        return args, in_run_env / "full"
    return make


def preempted_run(monkeypatch, args, step: int, name: str = "cut") -> Path:
    with monkeypatch.context() as m:
        preempt_at(m, step)
        assert run_cli([*args, f"hydra.run.dir={name}"]) == 0
    run_dir = Path(name).resolve()
    assert read_summary(run_dir)["status"] == "preempted"
    return run_dir


def assert_equal_runs(a: Path, b: Path) -> None:
    assert rows(a) == rows(b)
    assert final(a) == final(b)
    assert same_model(a, b)


# -- one writer per run directory -------------------------------------------------------------------------------------

HOLD = """
import sys, time
from sfbench.tracking import lock
held = lock.acquire(sys.argv[1])
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def hold_lock(run_dir: Path, seconds: float = 60, env: dict | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_process_is_refused_naming_the_holder_and_sigkill_leaves_no_lock(tmp_path):
    holder = hold_lock(tmp_path / "run")
    try:
        with pytest.raises(run_lock.RunLocked) as refused:
            run_lock.acquire(tmp_path / "run")
        message = str(refused.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message and "kill" in message
        assert "\n" not in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "run" / run_lock.LOCK).exists()           # the file stays behind …
    lock = run_lock.acquire(tmp_path / "run")                   # … but not the lock: the kernel dropped it
    assert run_lock.read_holder(tmp_path / "run")["pid"] == os.getpid()
    run_lock.release(lock)
    assert not (tmp_path / "run" / run_lock.LOCK).exists()


def test_lock_is_reentrant_in_a_process_and_not_inherited_by_a_fork(tmp_path):
    first = run_lock.acquire(tmp_path)
    second = run_lock.acquire(tmp_path)
    assert first is second and first.depth == 2
    pid = os.fork()
    if pid == 0:                    # the child must not think it holds its parent's lock
        try:
            run_lock.acquire(tmp_path)
            os._exit(0)
        except run_lock.RunLocked:
            os._exit(7)
    assert os.waitpid(pid, 0)[1] >> 8 == 7
    run_lock.release(second)
    assert (tmp_path / run_lock.LOCK).exists()
    run_lock.release(first)
    assert not (tmp_path / run_lock.LOCK).exists()
    run_lock.release(first)                                      # a second release is a no-op


def test_a_requeued_slurm_job_waits_for_its_previous_incarnation(tmp_path, monkeypatch):
    """The same Slurm job id (a requeue) waits for the holder to exit instead of being refused; another job id is
    refused at once."""
    env = dict(os.environ, SLURM_JOB_ID="4242")
    holder = hold_lock(tmp_path, seconds=1.5, env=env)
    monkeypatch.setenv("SLURM_JOB_ID", "999")
    with pytest.raises(run_lock.RunLocked, match="Slurm job 4242"):
        run_lock.acquire(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    started = time.monotonic()
    lock = run_lock.acquire(tmp_path, same_job_wait_s=30)
    assert time.monotonic() - started > 0.3                     # it waited for the holder to exit
    holder.wait(timeout=30)
    run_lock.release(lock)


def _cli(args, cwd, env):
    return subprocess.Popen([sys.executable, "-m", "sfbench", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _wait_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended early:\n{proc.communicate()[0][-3000:]}")
        time.sleep(0.05)
    pytest.fail(f"no {n} lines in {path} after {timeout} s")


@pytest.mark.slow
def test_same_command_twice_and_another_config_on_a_live_run_are_refused(tmp_path, sfbench_env):
    """While a run trains, the same command and a different config on its directory are
    refused before they touch anything (exit 2, the holder named); the first run ends with every line."""
    env = subprocess_env(sfbench_env)
    args = ["task=logreg", "logger=none", "trainer.steps=4000", "trainer.eval_every=0", "trainer.ckpt_every=500",
            "hydra.run.dir=run"]
    first = _cli(args, tmp_path, env)
    run_dir = tmp_path / "run"
    _wait_lines(run_dir / "metrics.jsonl", 20, first)
    os.kill(first.pid, signal.SIGSTOP)          # paused (not dead): it holds the lock, and can't finish meanwhile
    config = (run_dir / "config.yaml").read_bytes()
    inode = (run_dir / "metrics.jsonl").stat().st_ino
    for extra in ([], ["opt.lr=0.5"]):
        second = subprocess.run([sys.executable, "-m", "sfbench", *args, *extra], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert f"is being written by pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert "Traceback" not in second.stderr and len(second.stderr.strip().splitlines()) == 1
        assert (run_dir / "config.yaml").read_bytes() == config
        assert (run_dir / "metrics.jsonl").stat().st_ino == inode
    os.kill(first.pid, signal.SIGCONT)
    out = first.communicate(timeout=600)[0]
    assert first.returncode == 0, out
    assert read_summary(run_dir)["status"] == "completed"
    assert [r["step"] for r in rows(run_dir)] == list(range(1, 4001))
    # once it is done, the other config is refused by the config check (which no longer needs summary.json)
    other = subprocess.run([sys.executable, "-m", "sfbench", *args, "opt.lr=0.5"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=300)
    assert other.returncode == 2 and "different configuration" in other.stderr and "opt.lr" in other.stderr


def test_config_is_checked_even_before_a_summary_exists(in_run_env, capsys):
    (in_run_env / "run").mkdir()
    RunRecord(in_run_env / "run").write_config({"trainer": {"steps": 7}, "task": {"n": 1}})
    assert run_cli([*LOGREG, "trainer.steps=5", "hydra.run.dir=run"]) == 2
    assert "different configuration" in capsys.readouterr().err
    assert not (in_run_env / "run" / "summary.json").exists()


# -- resume checks the record ----------------------------------------------------------------------------------------

def test_killed_after_the_final_checkpoint_resumes_to_the_final_metrics(reference, capsys):
    """Item 3: the state a SIGKILL leaves just after the last checkpoint (summary `running` at the last step, no
    model.pt, no fit): the re-run evaluates at x again and ends with the uninterrupted run's final metrics."""
    args, full = reference()
    assert run_cli([*args, "hydra.run.dir=cut"]) == 0
    cut = Path("cut").resolve()
    RunRecord(cut).write_summary("running", final=None, wall_s=None, steps_done=40)
    for name in ("model.pt", "theory_fit.json"):
        (cut / name).unlink()
    capsys.readouterr()
    assert run_cli([*args, "hydra.run.dir=cut"]) == 0
    assert "resuming" in capsys.readouterr().err
    summary = read_summary(cut)
    assert summary["final"] and summary["final"] == read_summary(full)["final"]
    assert summary["theory"]["fit"] == read_summary(full)["theory"]["fit"]
    assert_equal_runs(cut, full)


def test_truncated_metrics_are_retrained_from_the_previous_checkpoint(reference, monkeypatch, capsys):
    """Item 4: lines lost after the previous checkpoint (prev.pt, step 20): the resume rolls back to it and the
    steps are trained and logged again — the record equals an uninterrupted run's."""
    args, full = reference()
    cut = preempted_run(monkeypatch, args, 25)
    assert (cut / "checkpoints" / "prev.pt").exists()
    lines = (cut / "metrics.jsonl").read_text().splitlines(keepends=True)
    (cut / "metrics.jsonl").write_text("".join(lines[:22]))            # steps 23–25 lost
    capsys.readouterr()
    assert run_cli([*args, "hydra.run.dir=cut"]) == 0
    err = capsys.readouterr().err
    assert "lacks the lines of steps 23–25" in err and "prev.pt (step 20)" in err
    assert_equal_runs(cut, full)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_gap_no_checkpoint_precedes_stops_or_is_recorded_or_restarts(reference, monkeypatch, capsys, damage):
    args, full = reference()
    cut = preempted_run(monkeypatch, args, 25)
    if damage == "deleted":
        (cut / "metrics.jsonl").unlink()
        missing = "1–25"
    else:
        lines = (cut / "metrics.jsonl").read_text().splitlines(keepends=True)
        (cut / "metrics.jsonl").write_text("".join(lines[:5]))
        missing = "6–25"
    before = snapshot(cut)
    capsys.readouterr()
    assert run_cli([*args, "hydra.run.dir=cut"]) == 2                 # default: stop, touching nothing
    err = capsys.readouterr().err
    assert f"metrics.jsonl is damaged: it lacks the lines of steps {missing}" in err
    assert "trainer.on_gap=record" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(cut) == before

    with monkeypatch.context() as m:                    # the same run directory; preempted again at step 32 …
        preempt_at(m, 32)
        assert run_cli([*args, "trainer.on_gap=record", "hydra.run.dir=cut"]) == 0
    err = capsys.readouterr().err
    assert "going on from step 25" in err and "metrics_gaps" in err
    assert run_cli([*args, "hydra.run.dir=cut"]) == 0    # … and resumed without the flag: the gap is known
    summary = read_summary(cut)
    assert summary["status"] == "completed" and summary["metrics_gaps"] == [[int(missing.split("–")[0]), 25]]
    assert rows(cut) == [r for r in rows(full) if r["step"] > 25 or r["step"] < int(missing.split("–")[0])]

    if damage == "deleted":         # restart: from step 0, the whole record again
        cut2 = preempted_run(monkeypatch, args, 25, name="cut2")
        (cut2 / "metrics.jsonl").unlink()
        assert run_cli([*args, "trainer.on_gap=restart", "hydra.run.dir=cut2"]) == 0
        assert "training the run again from step 0" in capsys.readouterr().err
        assert_equal_runs(cut2, full)
        assert read_summary(cut2).get("metrics_gaps") is None


# -- checkpoints ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["garbage", "truncated", "empty"])
def test_unreadable_last_checkpoint_falls_back_to_the_previous_one(reference, monkeypatch, capsys, how):
    args, full = reference()
    cut = preempted_run(monkeypatch, args, 25)
    last = cut / "checkpoints" / "last.pt"
    data = last.read_bytes()
    last.write_bytes({"garbage": os.urandom(len(data)), "truncated": data[: len(data) // 2], "empty": b""}[how])
    capsys.readouterr()
    assert run_cli([*args, "hydra.run.dir=cut"]) == 0
    err = capsys.readouterr().err
    assert "last.pt is unreadable" in err and "resuming from the previous checkpoint prev.pt (step 20)" in err
    assert_equal_runs(cut, full)
    # the damaged file never became the fallback: both checkpoints are readable now
    for name in ("last.pt", "prev.pt"):
        assert torch.load(cut / "checkpoints" / name, weights_only=False)["step"] in (30, 40)


def test_stale_temp_files_are_removed_at_start_and_only_those(reference, monkeypatch, capsys):
    """sfbench's temporary names (and an earlier version's `.<record>.tmp…`) are removed at start; files of the
    user's beside them — however close their names — stay, byte for byte."""
    args, full = reference()
    cut = preempted_run(monkeypatch, args, 25)
    stale = [cut / "checkpoints" / ".last.pt.sfbench-tmp12345", cut / ".summary.json.sfbench-tmpabc123",
             cut / ".model.pt.tmp99", cut / "checkpoints" / ".last.pt.tmp12345"]   # the last two: an earlier version's
    for path in stale:
        path.write_bytes(b"")
    (cut / "checkpoints" / ".last.pt.sfbench-tmp777").write_bytes(os.urandom(5000))
    users = {cut / ".model.pt.bak": b"mine", cut / ".summary.json.swp": b"vim", cut / ".bashrc.tmp-keep": b"x",
             cut / ".metrics.jsonl.k2j3h4": b"y", cut / "checkpoints" / ".last.pt.orig": b"z"}
    for path, data in users.items():
        path.write_bytes(data)
    capsys.readouterr()
    assert run_cli([*args, "hydra.run.dir=cut"]) == 0
    assert "removed 5 temporary file(s)" in capsys.readouterr().err
    assert not any(p.exists() for p in stale) and not (cut / ".lock").exists()
    assert all(path.read_bytes() == data for path, data in users.items())
    assert_equal_runs(cut, full)


def test_a_failed_checkpoint_write_removes_its_temp_file_and_ends_failed(in_run_env, monkeypatch, capsys):
    """ENOSPC in the middle of torch.save (the disk filled up): the partial temp file goes, the run ends `failed`
    with one line naming the path and the bytes, and a later run resumes from the last good checkpoint."""
    import errno

    from sfbench.train import checkpoint

    args = [*LOGREG, "trainer.steps=30", "hydra.run.dir=run"]
    real_save = checkpoint.torch.save
    def save(obj, f, *a, **k):
        if isinstance(obj, dict) and obj.get("step") == 20:
            f.write(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)
    with monkeypatch.context() as m:
        m.setattr(checkpoint.torch, "save", save)
        assert run_cli(args) == 1
    err = capsys.readouterr().err
    line = [x for x in err.splitlines() if x.startswith("sfbench: error:")]
    assert len(line) == 1 and "Traceback" not in err
    assert "could not write" in line[0] and "checkpoints/last.pt: No space left on device" in line[0]
    assert "it needs about" in line[0] and "free there" in line[0] and "resumes from step 10" in line[0]
    run_dir = in_run_env / "run"
    assert not [p for p in run_dir.rglob(".*")]
    summary = read_summary(run_dir)
    assert summary["status"] == "failed" and summary["steps_done"] == 10 and "No space left" in summary["error"]
    assert run_cli(args) == 0
    assert read_summary(run_dir)["status"] == "completed" and read_summary(run_dir)["resumes"] == 1
    assert run_cli([*LOGREG, "trainer.steps=30", "hydra.run.dir=full"]) == 0
    assert_equal_runs(run_dir, in_run_env / "full")


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0 or sys.platform != "linux", reason="mounting a small tmpfs needs root")
def test_a_really_full_disk(tmp_path, sfbench_env):
    """The same on a real filesystem: a 64 KiB tmpfs fills up at the first checkpoint (~100 KB) of an 8000-parameter
    least-squares run."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("mount -t tmpfs is not allowed here")
    try:
        env = subprocess_env(sfbench_env)
        args = ["task=quadratic", "task.d=8000", "task.n=50", "logger=none", "trainer.steps=30",
                "trainer.eval_every=0", "trainer.ckpt_every=10", "trainer.theory=false", f"hydra.run.dir={mount}/run"]
        out = subprocess.run([sys.executable, "-m", "sfbench", *args], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 1, out.stderr
        assert "Traceback" not in out.stderr
        assert f"could not write {mount}/run/checkpoints/last.pt: No space left on device" in out.stderr
        assert not [p for p in (mount / "run").rglob(".*")]                   # no temp file keeps the disk full
        assert read_summary(mount / "run")["status"] == "failed"
        subprocess.run(["mount", "-o", "remount,size=4m", str(mount)], check=True)
        again = subprocess.run([sys.executable, "-m", "sfbench", *args], cwd=tmp_path, env=env, capture_output=True,
                               text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        assert read_summary(mount / "run")["status"] == "completed"
    finally:
        subprocess.run(["umount", "-l", str(mount)])


# -- damaged files: exit 2, one line naming the file, nothing touched -----------------------------------------------

DAMAGE = {
    "summary.json": lambda run: (run / "summary.json").write_text('{"status": "runn'),
    "metrics.jsonl": lambda run: (run / "metrics.jsonl").write_text(
        "".join(line if i != 7 else line[: len(line) // 2] + "\n"
                for i, line in enumerate((run / "metrics.jsonl").read_text().splitlines(keepends=True)))),
    "last.pt": lambda run: ((run / "checkpoints" / "prev.pt").unlink(),
                            (run / "checkpoints" / "last.pt").write_bytes(b"PK\x03\x04 not a checkpoint")),
    "config.yaml": lambda run: (run / "config.yaml").write_text("trainer: [steps: {"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_damaged_files_are_one_line_exit_2_and_nothing_is_touched(in_run_env, monkeypatch, capsys, name):
    args = [*LOGREG, "trainer.steps=40"]
    cut = preempted_run(monkeypatch, args, 25)
    DAMAGE[name](cut)
    before = snapshot(cut)
    capsys.readouterr()
    assert run_cli([*args, "hydra.run.dir=cut"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sfbench: error: {cut / ('checkpoints' if name == 'last.pt' else '') / name} is damaged")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert snapshot(cut) == before


def test_read_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "x"\n{"step": 3}\n{"step": 4')
    with pytest.raises(RecordDamaged, match=r"metrics.jsonl is damaged: line 2 is not a JSON object"):
        list(iter_metrics(path))
    path.write_text('{"step": 1}\n["a"]\n')
    with pytest.raises(RecordDamaged, match="line 2 has no integer 'step'"):
        list(iter_metrics(path))
    path.write_text('{"step": 1}\n{"step": 2}\n{"st')          # a torn last line is what a kill leaves: skipped
    assert [r["step"] for r in iter_metrics(path)] == [1, 2]
    (tmp_path / "summary.json").write_bytes(b"\x00\x00\x00")
    with pytest.raises(RecordDamaged, match="summary.json is damaged: not valid JSON"):
        read_summary(tmp_path)
    (tmp_path / "config.yaml").write_text("a: [")
    with pytest.raises(RecordDamaged, match="config.yaml is damaged: not valid YAML"):
        read_config(tmp_path)


# -- Ctrl-C ------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_ctrl_c_is_a_stop_request_and_the_rerun_equals_an_uninterrupted_run(tmp_path, sfbench_env):
    env = subprocess_env(sfbench_env)
    args = ["task=logreg", "logger=none", "trainer.steps=3000", "trainer.eval_every=1000", "trainer.ckpt_every=0"]
    full = subprocess.run([sys.executable, "-m", "sfbench", *args, "hydra.run.dir=full"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr
    cut = _cli([*args, "hydra.run.dir=cut"], tmp_path, env)
    _wait_lines(tmp_path / "cut" / "metrics.jsonl", 200, cut)
    cut.send_signal(signal.SIGINT)
    out = cut.communicate(timeout=300)[0]
    assert cut.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out and "Ctrl-C" in out
    summary = read_summary(tmp_path / "cut")
    assert summary["status"] == "preempted" and 200 <= summary["steps_done"] < 3000
    assert torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=False)["step"] == summary["steps_done"]
    again = subprocess.run([sys.executable, "-m", "sfbench", *args, "hydra.run.dir=cut"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert_equal_runs(tmp_path / "cut", tmp_path / "full")


def test_a_second_ctrl_c_stops_at_once_at_the_last_checkpoint(reference, monkeypatch):
    """Two real SIGINTs inside step 27 (the task's loss sends them): the first asks for a stop at the step boundary,
    the second stops at once; the run ends `preempted` at its last checkpoint (20) and resumes to the same record."""
    from sfbench.tasks.testbeds import LogRegTask

    args, full = reference()
    original = LogRegTask.loss
    def loss(self, model, batch):
        if getattr(self, "_step_seen", 0) == 26:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        self._step_seen = getattr(self, "_step_seen", 0) + 1
        return original(self, model, batch)
    with monkeypatch.context() as m:
        m.setattr(LogRegTask, "loss", loss)
        assert run_cli([*args, "hydra.run.dir=cut"]) == 130
    cut = Path("cut").resolve()
    summary = read_summary(cut)
    assert summary["status"] == "preempted" and summary["steps_done"] == 20 and "error" not in summary
    assert max(r["step"] for r in rows(cut)) == 26         # lines after the checkpoint: dropped by the resume
    assert run_cli([*args, "hydra.run.dir=cut"]) == 0
    assert_equal_runs(cut, full)


@pytest.mark.slow
def test_ctrl_c_twice_during_setup_exits_130_without_a_traceback(tmp_path, sfbench_env):
    """A cold cache: the distillation teacher trains during setup. The first Ctrl-C waits for the end of setup, the
    second stops at once: exit 130, no traceback, status preempted at step 0."""
    from conftest import TINY

    env = subprocess_env(sfbench_env)
    env["SFBENCH_CACHE"] = str(tmp_path / "cache")
    proc = _cli([*TINY, "task.teacher.steps=3000", "trainer.steps=5", "hydra.run.dir=run"], tmp_path, env)
    for line in proc.stdout:
        if "training the distillation teacher" in line:
            proc.send_signal(signal.SIGINT)
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            break
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "stopped at once" in out
    assert read_summary(tmp_path / "run")["status"] == "preempted"


# -- typos in keys ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, suggestion", [
    ("trainer.step=20", "did you mean trainer.steps"),
    ("+trainer.step=20", "did you mean trainer.steps"),
    ("trainer.ckpt_evry=5", "did you mean trainer.ckpt_every"),
    ("task.dat.batch_size=4", "did you mean task.data.batch_size"),
    ("opt.weight_decy=0.1", "did you mean opt.weight_decay"),
    ("taks=gpt", "did you mean task"),
])
def test_a_typo_in_a_key_names_the_closest_settings(in_run_env, capsys, override, suggestion):
    assert run_cli(["logger=none", override]) == 2
    err = capsys.readouterr().err
    key = override.lstrip("+").split("=")[0]
    assert err.startswith("sfbench: error: ") and key in err and suggestion in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and "+trainer.step=20 " not in err
    assert "is not in struct" not in err and "To append to your config" not in err
    assert not (in_run_env / "runs").exists() or not any((in_run_env / "runs").iterdir())
