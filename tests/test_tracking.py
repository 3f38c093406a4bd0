"""The run record (DESIGN.md "Run directory") and load_runs."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal

import pytest

from sfbench.tracking import RunRecord, load_runs, read_summary

pd = pytest.importorskip("pandas")


def write_run(run_dir, lr, steps, status="completed", opt="sf_adamw"):
    with RunRecord(run_dir) as rec:
        rec.write_config({"opt": {"name": opt, "lr": lr, "betas": [0.9, 0.999]}, "trainer": {"steps": steps}})
        rec.write_summary("running", steps_done=0)
        for step in range(1, steps + 1):
            rec.log({"step": step, "lr": lr, "train/loss": 1.0 / step})
        rec.write_summary(status, steps_done=steps, final={"train/loss": 1.0 / steps})


def test_contract_files_and_summary_merge(tmp_path):
    write_run(tmp_path / "run", 0.1, 5)
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"config.yaml", "metrics.jsonl", "summary.json"}
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "completed" and summary["steps_done"] == 5 and summary["final"]["train/loss"] == 0.2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5]
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]   # no temp files left


def test_bad_status_and_missing_step_are_errors(tmp_path):
    rec = RunRecord(tmp_path)
    with pytest.raises(ValueError, match="status='done' is not allowed; choose one of 'running'"):
        rec.write_summary("done")
    with pytest.raises(ValueError, match="needs a 'step' key"):
        rec.log({"train/loss": 1.0})


def test_nonfinite_values_round_trip(tmp_path):
    with RunRecord(tmp_path) as rec:
        rec.log({"step": 1, "train/loss": float("nan")})
        rec.log({"step": 2, "train/loss": float("inf")})
    frame = load_runs(tmp_path)
    assert math.isnan(frame["train/loss"][0]) and frame["train/loss"][1] == math.inf


def _log_forever(run_dir, ready):
    rec = RunRecord(run_dir)
    step = 0
    while True:
        step += 1
        rec.log({"step": step, "x": "y" * 5000})
        if step == 50:
            ready.set()


def test_killed_writer_leaves_only_whole_lines_and_truncate_resumes(tmp_path):
    """A writer killed with SIGKILL mid-run: every complete line reads back; truncate_after drops later steps."""
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_log_forever, args=(tmp_path, ready))
    proc.start()
    assert ready.wait(30)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    frame = load_runs(tmp_path)
    assert len(frame) >= 50 and list(frame["step"]) == list(range(1, len(frame) + 1))
    rec = RunRecord(tmp_path)
    assert rec.truncate_after(20) == 20
    rec.log({"step": 21, "x": "resumed"})
    rec.close()
    frame = load_runs(tmp_path)
    assert list(frame["step"]) == list(range(1, 22)) and frame["x"].iloc[-1] == "resumed"


def test_load_runs_reads_a_sweep_into_one_frame(tmp_path):
    """A Hydra-multirun-like layout: sweep/0, sweep/1, sweep/2, one still without metrics."""
    write_run(tmp_path / "sweep" / "0", 0.1, 3, opt="sf_adamw")
    write_run(tmp_path / "sweep" / "1", 0.01, 4, status="diverged", opt="adamw")
    RunRecord(tmp_path / "sweep" / "2").write_summary("running")
    frame = load_runs(tmp_path / "sweep")
    assert len(frame) == 3 + 4 + 1
    assert list(frame.columns[:2]) == ["run", "status"]
    assert set(frame["run"]) == {"0", "1", "2"}
    by_run = frame.groupby("run")
    assert by_run["opt.lr"].first().dropna().to_dict() == {"0": 0.1, "1": 0.01}
    assert by_run["status"].first().to_dict() == {"0": "completed", "1": "diverged", "2": "running"}
    assert frame.loc[frame["run"] == "1", "train/loss"].min() == pytest.approx(0.25)
    assert frame["opt.betas"].iloc[0] == [0.9, 0.999]
    assert "trainer.steps" in frame.columns


def test_load_runs_on_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run or sweep directory"):
        load_runs(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no runs under"):
        load_runs(tmp_path)
