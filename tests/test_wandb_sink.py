"""WandbSink (sfbench/tracking/wandb_sink.py), offline only: this machine never reaches W&B's servers.

What a run logged is read back with W&B's own reader of the .wandb transaction log, `wandb leet inspect --json`
(new in the 0.2x/0.3x CLI; prints one JSON object per record), not from our own files. We use the CLI rather than
`wandb.sdk.internal.datastore.DataStore` + the protobufs because it is the documented command, it is what a user
would run, and it does not tie the test to wandb's internal module layout.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

wandb = pytest.importorskip("wandb")
torch = pytest.importorskip("torch")

from conftest import isolate_wandb  # noqa: E402
from sfbench.tracking.wandb_sink import ID_FILE, WandbSink, resolve_mode  # noqa: E402

CONFIG = {"opt": {"name": "sf_adamw", "lr": 0.1}, "trainer": {"steps": 7}}


@pytest.fixture(autouse=True)
def wandb_env(tmp_path, monkeypatch):
    """Keep W&B inside tmp_path and away from any account: no key, no netrc, offline unless a test says not."""
    isolate_wandb(tmp_path, monkeypatch)


def leet(*args) -> str:
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", *map(str, args)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def segments(run_dir) -> list[dict]:
    """Each offline-run-* directory's records, as W&B reads them, oldest segment first."""
    found = []
    for path in (run_dir / "wandb").glob("offline-run-*"):
        records = [json.loads(line) for line in leet("--json", path).splitlines() if line.strip()]
        run = next(r["run"] for r in records if r["type"] == "run")
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        found.append({"run": run, "history": history, "records": records, "path": path})
    # by first logged time: start_time is RFC 3339 with trailing zeros trimmed, which doesn't sort as a string
    return sorted(found, key=lambda s: s["history"][0]["_timestamp"])


def run_steps(sink, run_dir, steps, status="completed"):
    sink.start(run_dir, CONFIG, group="g", job_type="train", name="sf_adamw-lr0.1")
    run_id = sink.run.id
    for step in steps:
        sink.log({"step": step, "train/loss": torch.tensor(1.0 / step), "lr": torch.tensor(0.1, dtype=torch.float64)})
    sink.summary({"final/loss": 1.0 / steps[-1]})
    sink.finish(status)
    return run_id


@pytest.mark.slow
def test_offline_history_read_back_with_wandb_tools(tmp_path):
    run_dir = tmp_path / "run"
    run_id = run_steps(WandbSink(mode="offline", tags=("t1",)), run_dir, range(1, 6))
    assert (run_dir / ID_FILE).read_text().strip() == run_id

    [seg] = segments(run_dir)
    assert seg["run"]["run_id"] == run_id
    assert seg["run"]["config"]["update"]["opt"] == CONFIG["opt"]
    assert {k: seg["run"].get(k) for k in ("run_group", "job_type", "display_name")} == \
        {"run_group": "g", "job_type": "train", "display_name": "sf_adamw-lr0.1"}
    assert [(h["step"], h["train/loss"], h["lr"]) for h in seg["history"]] == \
        [(s, pytest.approx(1.0 / s), pytest.approx(0.1)) for s in range(1, 6)]
    # every metric is plotted against our `step`
    metrics = [r["metric"] for r in seg["records"] if r["type"] == "metric"]
    assert {"glob_name": "*", "step_metric": "step"}.items() <= next(m for m in metrics if "glob_name" in m).items()

    state = json.loads(leet("--summary", "--json", seg["path"]))
    assert state["exit_code"] == 0 and state["state"] == "finished"
    assert state["summary"]["status"] == "completed" and state["summary"]["final/loss"] == pytest.approx(0.2)


@pytest.mark.slow
def test_resume_continues_the_same_run(tmp_path):
    run_dir = tmp_path / "run"
    first = run_steps(WandbSink(mode="offline"), run_dir, range(1, 6), status="preempted")
    second = run_steps(WandbSink(mode="offline"), run_dir, range(6, 8))
    assert second == first == (run_dir / ID_FILE).read_text().strip()

    segs = segments(run_dir)                        # one offline-run-* directory per segment, same run id
    assert [s["run"]["run_id"] for s in segs] == [first, first]
    assert [[h["step"] for h in s["history"]] for s in segs] == [[1, 2, 3, 4, 5], [6, 7]]
    preempted = json.loads(leet("--summary", "--json", segs[0]["path"]))
    assert (preempted["summary"]["status"], preempted["state"], preempted["exit_code"]) == ("preempted", "finished", 0)
    assert json.loads(leet("--summary", "--json", segs[1]["path"]))["summary"]["status"] == "completed"


def test_auto_mode(tmp_path, monkeypatch, capfd):
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_mode("auto") == "offline"
    (tmp_path / "home" / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password x\n")
    assert resolve_mode("auto") == "online"
    (tmp_path / "home" / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert resolve_mode("auto") == "online"
    monkeypatch.delenv("WANDB_API_KEY")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    monkeypatch.delenv("WANDB_MODE")

    capfd.readouterr()
    run_dir = tmp_path / "run"
    run_steps(WandbSink(), run_dir, [1, 2])
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"wandb: W&B is offline; to upload this run later: wandb sync {run_dir}/wandb/offline-run-*"]


class Boom(RuntimeError):
    pass


def test_failing_wandb_never_breaks_training(tmp_path, monkeypatch, capfd):
    def init(**kwargs):
        raise Boom("no\nservice")

    monkeypatch.setattr(wandb, "init", init)
    sink = WandbSink(mode="offline")
    sink.start(tmp_path / "a", CONFIG, group="g", job_type="train", name="n")
    sink.log({"step": 1, "train/loss": 1.0})
    sink.summary({"x": 1})
    sink.finish("failed")
    assert capfd.readouterr().err.splitlines() == [
        "warning: wandb.init failed (Boom: no service); W&B logging is off for this run"]

    class Run:                                      # init works, log breaks: warn once, then stay quiet
        id, logged, finished = "x", 0, False

        def define_metric(self, *args, **kwargs):
            pass

        def log(self, metrics):
            Run.logged += 1
            raise Boom("disk full")

        def finish(self, exit_code=0):
            Run.finished = True

    monkeypatch.setattr(wandb, "init", lambda **kwargs: Run())
    sink = WandbSink(mode="online")
    sink.start(tmp_path / "b", CONFIG, group="g", job_type="train", name="n")
    for step in range(3):
        sink.log({"step": step})
    sink.finish("completed")
    assert capfd.readouterr().err.splitlines() == [
        "warning: wandb log failed (Boom: disk full); W&B logging is off for this run"]
    assert (Run.logged, Run.finished) == (1, False)


def test_invalid_mode():
    with pytest.raises(ValueError, match=r"mode='cloud'.*'auto', 'online', 'offline', 'disabled'"):
        WandbSink(mode="cloud")
