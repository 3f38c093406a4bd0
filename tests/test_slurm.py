"""Slurm sweeps on a real one-node cluster (slurm/local-cluster.sh): job arrays, requeue after SIGUSR2 and after a
time-limit warning with bit-exact resume, relaunching a sweep whose launcher was killed.

The `slurm_cluster` fixture starts the cluster when it can (root; it installs the Debian packages if missing). Where
it can't, the tests are skipped — except in CI (env CI set), where a skipped check would hide a defect: they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import subprocess_env
from sfbench.cli import main
from sfbench.cli.sweep import sweep_dir as _sweep_dir
from sfbench.tracking import load_runs, read_summary

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "slurm" / "local-cluster.sh"
# one CPU per job (the cluster has 2: two jobs at a time), a time limit that is not hit unless a test wants it
SLURM = ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=30"]
LOGREG = ["task=logreg", "logger=none"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def slurm_cluster():
    def unavailable(why: str):
        if _in_ci():
            pytest.fail(f"the Slurm tests must run in CI, but {why}")
        pytest.skip(why)

    def up() -> bool:
        return shutil.which("sinfo") is not None and subprocess.run(
            ["bash", str(CLUSTER), "status"], capture_output=True, timeout=60).returncode == 0

    started = False
    if not up():
        if os.geteuid() != 0:
            unavailable("starting the local Slurm cluster (slurm/local-cluster.sh start) needs root")
        proc = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            unavailable(f"slurm/local-cluster.sh start failed:\n{proc.stdout}\n{proc.stderr}")
        started = True
    yield
    if started:
        subprocess.run(["bash", str(CLUSTER), "stop"], capture_output=True, timeout=120)


def on_slurm(test):
    """Needs the cluster and takes tens of seconds."""
    return pytest.mark.slurm(pytest.mark.slow(test))


# -- helpers ---------------------------------------------------------------------------------------------------------

def launch(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sfbench", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float) -> str:
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0]
        cluster = _cluster_state()
        _cancel_all()
        pytest.fail(f"the launcher did not finish in {timeout} s:\n{out[-4000:]}\n{cluster}")
    assert proc.returncode == 0, out[-4000:]
    return out


def _cluster_state() -> str:
    """What the cluster says about its node and jobs, and its controller's last log lines (for a failure message)."""
    parts = []
    for cmd in (["scontrol", "show", "node"], ["squeue", "-o", "%i %T %r %C %l %L"],
                ["tail", "-30", "/var/log/slurm-local/slurmctld.log"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        parts.append(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")
    return "\n".join(parts)


def _cancel_all() -> None:
    subprocess.run(["scancel", "--user", str(os.getuid())], capture_output=True, timeout=60)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            _cancel_all()
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def metric_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def job_id(run_dir: Path) -> str:
    return json.loads((run_dir / "slurm.json").read_text())["job_id"]


def job_logs(sweep: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted((sweep / ".submitit").rglob("*_log.*")))


def only_run(sweep: Path) -> Path:
    runs = [p.parent for p in sweep.rglob("summary.json")]
    assert len(runs) == 1, runs
    return runs[0]


def submitted_arrays(sweep: Path) -> set[str]:
    return {job_id(p.parent).split("_")[0] for p in sweep.rglob("slurm.json")}


# -- a sweep is one job array ----------------------------------------------------------------------------------------

@on_slurm
def test_four_run_sweep_is_one_job_array_and_a_relaunch_submits_nothing(slurm_cluster, tmp_path, sfbench_env):
    env = subprocess_env(sfbench_env)
    args = [*SLURM, *LOGREG, "trainer.steps=500", "opt=sf_adamw,sgd", "opt.lr=0.01,0.05"]
    out = finish(launch(args, tmp_path, env), timeout=240)
    sweep = tmp_path / _sweep_dir(args)
    frame = load_runs(sweep)
    assert frame["run"].nunique() == 4 and set(frame["status"]) == {"completed"}
    assert frame.groupby("run")["step"].max().tolist() == [500] * 4
    assert set(frame["choices.opt"]) == {"sf_adamw", "sgd"}
    assert len(submitted_arrays(sweep)) == 1                        # ONE job array …
    assert sorted(job_id(p.parent).split("_")[1] for p in sweep.rglob("slurm.json")) == ["0", "1", "2", "3"]
    script = next((sweep / ".submitit").glob(".submission_file_*.sh")).read_text()
    for flag in ("#SBATCH --array=0-3%4", "#SBATCH --cpus-per-task=1", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@120", "#SBATCH --time=30", "export OMP_NUM_THREADS=$SLURM_CPUS_PER_TASK"):
        assert flag in script, script
    assert "4 to submit" in out
    assert f"sfbench: sweep {_sweep_dir(args)}: 4 Slurm jobs — " in out     # status lines while it waited

    again = finish(launch(args, tmp_path, env), timeout=120)       # … and relaunching a finished sweep submits none
    assert again.count("already finished (completed); not submitted again") == 4 and "0 to submit" in again
    assert len(list((sweep / ".submitit").glob(".submission_file_*.sh"))) == 1


# -- requeue without loss --------------------------------------------------------------------------------------------

@on_slurm
@pytest.mark.parametrize("limit", [30, 5])
def test_usr2_checkpoints_requeues_and_ends_equal_to_an_uninterrupted_run(slurm_cluster, tmp_path, sfbench_env,
                                                                         limit):
    """`scancel --signal=USR2 JOB` signals the job's steps — the srun'd Python — as Slurm does on a preemption
    warning (--batch would signal the batch shell instead, which dies of it). Far from the time limit it is a
    preemption, also with a limit of 10 minutes or less (where submitit alone calls every signal a time-out)."""
    env = subprocess_env(sfbench_env)
    args = [*SLURM, *LOGREG, "trainer.steps=16000", "trainer.log_every=50", "trainer.eval_every=4000",
            "trainer.ckpt_every=0", f"hydra.launcher.timeout_min={limit}"]
    reference = launch([*args, f"hydra.sweep.dir={tmp_path / 'ref'}"], tmp_path, env)
    cut = launch([*args, f"hydra.sweep.dir={tmp_path / 'cut'}"], tmp_path, env)
    def metrics():
        return list((tmp_path / "cut").rglob("metrics.jsonl"))

    wait_for(lambda: metrics() and lines(metrics()[0]) >= 40, 180, "the job's first 2000 steps")
    run_dir = metrics()[0].parent
    subprocess.run(["scancel", "--signal=USR2", job_id(run_dir)], check=True, timeout=60)
    finish(cut, timeout=240)
    finish(reference, timeout=240)

    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["steps_done"] == 16000
    assert summary["resumes"] == 1
    logs = job_logs(tmp_path / "cut")
    assert "SIGUSR2 received; checkpointed at step" in logs and "Requeued job" in logs and "resuming" in logs
    assert "this job is preempted" in logs and "this job is timed-out" not in logs
    assert metric_rows(run_dir) == metric_rows(only_run(tmp_path / "ref"))


@on_slurm
def test_time_limit_warning_requeues_and_ends_equal_to_an_uninterrupted_run(slurm_cluster, tmp_path, sfbench_env):
    """A 1-minute time limit with the warning 20 s ahead. slurmctld checks time limits every 30 s and sends the
    warning once `signal_delay_s + 30 s` remain, so here between 10 s and 40 s into each job — after start-up, before
    the kill — and the 40 s of training need a few jobs: each ends with a checkpoint and a requeue."""
    env = subprocess_env(sfbench_env)
    args = [*SLURM, *LOGREG, "trainer.steps=64000", "trainer.log_every=500", "trainer.eval_every=16000",
            "trainer.ckpt_every=0"]
    limited = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=20", "hydra.launcher.max_num_timeout=8"]
    reference = launch([*args, f"hydra.sweep.dir={tmp_path / 'ref'}"], tmp_path, env)
    cut = launch([*args, *limited, f"hydra.sweep.dir={tmp_path / 'cut'}"], tmp_path, env)
    finish(cut, timeout=420)
    finish(reference, timeout=120)

    run_dir = only_run(tmp_path / "cut")
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["steps_done"] == 64000
    logs = job_logs(tmp_path / "cut")
    assert "this job is timed-out" in logs and "Requeued job" in logs
    assert summary["resumes"] >= 1 and summary["resumes"] == logs.count("sfbench: resuming")
    assert metric_rows(run_dir) == metric_rows(only_run(tmp_path / "ref"))


@on_slurm
def test_a_signal_burst_during_setup_of_a_data_parallel_job_requeues_it_once(slurm_cluster, tmp_path, sfbench_env):
    """Two tasks (tasks_per_node=2, gloo on CPU) and a burst of SIGUSR2 while they start: no rank re-enters submitit's
    handler, none waits for the time limit, the job is requeued, resumes and completes; no temporary file stays."""
    env = subprocess_env(sfbench_env)
    args = ["-m", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.tasks_per_node=2",
            "hydra.launcher.timeout_min=30", *LOGREG, "trainer.steps=2000", "trainer.log_every=100",
            "trainer.eval_every=1000", "trainer.ckpt_every=0", f"hydra.sweep.dir={tmp_path / 'burst'}"]
    started = time.monotonic()
    launcher = launch(args, tmp_path, env)
    wait_for(lambda: list((tmp_path / "burst").rglob("slurm.json")), 120, "the job's submission")
    job = job_id(next((tmp_path / "burst").rglob("slurm.json")).parent)

    def state() -> str:
        return subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()

    wait_for(lambda: state() == "RUNNING", 120, "the job to start")
    # a signal before Python has a handler kills a task (Slurm's --signal is sent long after start-up): the burst
    # comes once both tasks' Pythons catch SIGUSR2, while they set up
    wait_for(lambda: len(_catching(signal.SIGUSR2, str(tmp_path / "burst"))) == 2, 120, "both tasks' handlers")
    run_dirs = list((tmp_path / "burst").rglob("metrics.jsonl"))
    for _ in range(6):
        subprocess.run(["scancel", "--signal=USR2", job], capture_output=True, timeout=60)
        time.sleep(0.1)
    finish(launcher, timeout=400)
    assert time.monotonic() - started < 400
    run_dir = only_run(tmp_path / "burst")
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["steps_done"] == 2000 and summary["world_size"] == 2
    assert summary["resumes"] >= (0 if run_dirs else 1)
    logs = job_logs(tmp_path / "burst")
    assert "A temporary saved file already exists" not in logs and "Traceback" not in logs, logs[-4000:]
    assert "Requeued job" in logs
    assert [r["step"] for r in metric_rows(run_dir)] == list(range(100, 2001, 100))
    assert not [p for p in (tmp_path / "burst").rglob("*") if p.name.endswith("save_tmp") or ".sfbench-tmp" in p.name]


def _catching(sig: int, marker: str) -> list[int]:
    """The pids of submitit job processes (their folder under `marker`) that have a handler for `sig` installed."""
    pids = []
    for pid in subprocess.run(["pgrep", "-f", "submitit.core._submit"], capture_output=True,
                              text=True).stdout.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
        if marker in cmdline and caught >> (sig - 1) & 1:
            pids.append(int(pid))
    return pids


# -- jobs Slurm can never start ---------------------------------------------------------------------------------------

@on_slurm
def test_a_sweep_slurm_can_never_start_stops_with_the_reason_and_cancels_its_jobs(slurm_cluster, tmp_path,
                                                                                  sfbench_env):
    """More CPUs per task than the node has (the default cpus_per_task=4 on the 2-CPU test node): Slurm keeps the
    jobs pending with reason PartitionConfig. The launcher stops within 2 minutes with the reason and the request
    against the partition, exit 2, and cancels the array it submitted."""
    env = subprocess_env(sfbench_env)
    node_cpus = max(int(c.rstrip("+")) for c in subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True,
                                                                text=True, timeout=60).stdout.split())
    asked = max(4, node_cpus + 2)
    args = ["-m", "hydra/launcher=slurm", f"hydra.launcher.cpus_per_task={asked}", *LOGREG, "trainer.steps=50",
            "opt.lr=0.01,0.02", f"hydra.sweep.dir={tmp_path / 'sweep'}", f"hydra.launcher.name=unsched-{os.getpid()}"]
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sfbench", *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert elapsed < 120, elapsed
    error = [line for line in proc.stderr.splitlines() if line.startswith("sfbench: error:")]
    assert len(error) == 1 and "Traceback" not in proc.stderr
    assert "(PartitionConfig)" in error[0]
    assert f"sfbench: sweep {tmp_path / 'sweep'}: 2 Slurm jobs — 2 queued (" in proc.stderr      # the status line
    assert f"{asked} CPUs on one node (hydra.launcher.cpus_per_task={asked}" in error[0]
    assert f"has {node_cpus}: set hydra.launcher.cpus_per_task={node_cpus} or less" in error[0]
    (array,) = submitted_arrays(tmp_path / "sweep")
    assert f"Cancelled Slurm job(s) {array}." in error[0]
    left = subprocess.run(["squeue", "-h", "-j", array, "-t", "PENDING,RUNNING"], capture_output=True, text=True,
                          timeout=60)
    assert left.stdout.strip() == ""


# -- the launcher killed: relaunching the same command ----------------------------------------------------------------

@on_slurm
def test_relaunch_after_the_launcher_died_trains_only_what_is_neither_done_nor_in_slurm(slurm_cluster, tmp_path,
                                                                                      sfbench_env):
    """A 3-run sweep, one job at a time. The launcher is killed (SIGKILL) once run 1 is done and run 2 has a
    checkpoint; its Slurm jobs go on (killing a launcher cancels nothing). Run 2's job is then cancelled (SIGTERM:
    it checkpoints), run 3's is left queued. The relaunched command skips run 1, submits run 2 again (it resumes),
    and waits for run 3's job from the first launch instead of submitting a second job for the same directory."""
    env = subprocess_env(sfbench_env)
    args = [*SLURM, *LOGREG, "trainer.steps=8000", "trainer.log_every=100", "trainer.ckpt_every=1000",
            "hydra.launcher.array_parallelism=1", "opt.lr=0.001,0.002,0.003"]
    sweep = tmp_path / _sweep_dir(args)
    runs = [sweep / ",".join(sorted([*LOGREG[:1], *args[len(SLURM) + 2:-2], f"opt.lr={lr}"]))
            for lr in ("0.001", "0.002", "0.003")]
    launcher = launch(args, tmp_path, env)
    def status(run):
        return (read_summary(run) or {}).get("status")

    wait_for(lambda: status(runs[0]) == "completed" and (read_summary(runs[1]) or {}).get("steps_done", 0) >= 1000,
             240, "run 1 to finish and run 2 to checkpoint")
    launcher.send_signal(signal.SIGKILL)
    launcher.communicate(timeout=60)
    first_mtime = (runs[0] / "metrics.jsonl").stat().st_mtime_ns
    (array,) = submitted_arrays(sweep)
    subprocess.run(["scancel", job_id(runs[1])], check=True, timeout=60)
    wait_for(lambda: status(runs[1]) == "preempted", 60, "run 2 to checkpoint on SIGTERM")

    out = finish(launch(args, tmp_path, env), timeout=240)
    assert "1 finished, 1 still in Slurm from an earlier launch, 1 to submit" in out, out
    assert [status(run) for run in runs] == ["completed"] * 3
    assert [read_summary(run)["resumes"] for run in runs] == [0, 1, 0]
    assert (runs[0] / "metrics.jsonl").stat().st_mtime_ns == first_mtime        # the finished run untouched
    assert job_id(runs[2]).startswith(f"{array}_") and not job_id(runs[1]).startswith(f"{array}_")
    assert len(submitted_arrays(sweep)) == 2


# -- one DDP run from the multi-node template --------------------------------------------------------------------

@on_slurm
def test_multinode_template_runs_ddp_and_requeues_on_the_time_limit_warning(slurm_cluster, tmp_path, sfbench_env):
    """slurm/multinode.sbatch on one node, two torchrun ranks on CPU (gloo). SIGUSR2 to the batch shell — what
    `#SBATCH --signal=B:USR2@180` sends before the time limit — makes every rank checkpoint at the same step; the
    job requeues itself and resumes."""
    env = subprocess_env(sfbench_env)
    env.update(NPROC_PER_NODE="2", PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
    args = [*LOGREG, "trainer.steps=3000", "trainer.log_every=100", "trainer.ckpt_every=0", "trainer.eval_every=1000"]
    out = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--gpus-per-node=0", "--cpus-per-task=2",
                          "--time=10", str(ROOT / "slurm" / "multinode.sbatch"), *args],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    run_dir = tmp_path / "runs" / ",".join(sorted([LOGREG[0], *args[2:]]))
    wait_for(lambda: lines(run_dir / "metrics.jsonl") >= 5, 240, "the DDP run's first 500 steps")
    subprocess.run(["scancel", "--signal=USR2", "--batch", job], check=True, timeout=60)
    wait_for(lambda: (read_summary(run_dir) or {}).get("status") == "completed", 300, "the requeued run to finish")
    log = next(tmp_path.glob("slurm-*.out")).read_text(errors="replace")
    assert log.count("SIGTERM received; checkpointed at step") == 2, log[-4000:]      # both ranks …
    step = log.split("checkpointed at step ")[1].split()[0]
    assert log.count(f"checkpointed at step {step} ") == 2                           # … at the same step
    assert f"resuming {run_dir} from step {step}" in log and "(restart 1)" in log
    summary = read_summary(run_dir)
    assert summary["resumes"] == 1 and summary["steps_done"] == 3000
    assert [r["step"] for r in metric_rows(run_dir)] == list(range(100, 3001, 100))


# -- without a cluster ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [[], ["hydra.launcher.partition=gpu", "hydra.launcher.account=proj",
                                        "hydra.launcher.qos=high", "hydra.launcher.gpus_per_node=2",
                                        "hydra.launcher.mem_gb=64", "hydra.launcher.timeout_min=600",
                                        "hydra.launcher.setup=[module load cuda]"]])
def test_slurm_launcher_config_is_accepted_and_overridable(in_run_env, capsys, extra):
    try:
        main(["hydra/launcher=slurm", *extra, "--cfg", "hydra"])
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    out = capsys.readouterr().out
    assert "_target_: hydra_plugins.sfbench_launcher.slurm_launcher.SlurmLauncher" in out and "signal_delay_s: 120" in out
    for override in extra:
        key, value = override.removeprefix("hydra.launcher.").split("=", 1)
        if key == "setup":
            assert "- module load cuda" in out
        else:
            assert f"    {key}: {value}\n" in out, out


def test_time_left_as_squeue_prints_it():
    from sfbench.cli.requeue import at_time_limit, parse_time_left

    assert parse_time_left("1-02:03:04") == ((24 + 2) * 60 + 3) * 60 + 4
    assert parse_time_left("02:03:04") == (2 * 60 + 3) * 60 + 4
    assert parse_time_left("3:04") == 3 * 60 + 4
    assert parse_time_left(" 0:00 ") == 0
    for text in ("UNLIMITED", "NOT_SET", "INVALID", "", "5"):
        assert parse_time_left(text) is None
    assert at_time_limit(120, 150) is True and at_time_limit(120, 200) is False and at_time_limit(120, None) is None


BURST = r"""
import os, signal, sys, time
from sfbench.cli.requeue import stop_signals

class Submitit:                       # the shape of submitit's SignalHandler: a bound method, has_timed_out
    calls = 0
    def has_timed_out(self):
        return True
    def checkpoint_and_try_requeue(self, signum, frame):
        Submitit.calls += 1
        for _ in range(3):            # a burst while it pickles the job
            os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(0.2)
        print("handled", Submitit.calls, flush=True)

handler = Submitit()
signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
stops = stop_signals()
for _ in range(5):                     # a burst before the trainer exists
    os.kill(os.getpid(), signal.SIGUSR2)
asked = []
stops.forward_to(asked.append)
print("forwarded", asked, flush=True)
stops.hand_on(signal.SIGUSR2, 120)
os.kill(os.getpid(), signal.SIGUSR2)
time.sleep(0.2)
print("calls", Submitit.calls, flush=True)
"""


def test_a_signal_burst_reaches_the_handler_from_before_once(tmp_path):
    """Stop signals from the job's start are kept for the trainer (the first one passed on as it takes them); the
    handler from before — submitit's in a job — is called once, never re-entered by a burst, even during its own run."""
    env = dict(os.environ)
    env.pop("SLURM_JOB_ID", None)
    out = subprocess.run([sys.executable, "-c", BURST], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == [f"forwarded [{int(signal.SIGUSR2)}]", "handled 1", "calls 1"], out.stdout

