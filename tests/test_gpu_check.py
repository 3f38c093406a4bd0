"""scripts/gpu_check.sh, the one command for a lent GPU, dry-run on the CPU: every step runs and the table names each
with its exit status (a step that fails makes the script fail)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_step(sfbench_env, tmp_path):
    env = dict(subprocess_env(sfbench_env), OUT=str(tmp_path / "out"))
    done = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=1500)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert done.returncode == 0, done.stdout[-3000:] + summary
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in summary.splitlines()[2:]}
    assert rows == {"test_gpu": "0", "bench_optim": "0", "bench_gpt": "0", "main_command": "0"}, summary
    assert "completed 5/5 steps" in (tmp_path / "out" / "main_command.txt").read_text()
    assert "sfbench |" in (tmp_path / "out" / "bench_gpt.txt").read_text()
    assert os.path.exists(tmp_path / "out" / "bench_optim.json")
