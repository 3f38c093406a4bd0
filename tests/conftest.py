"""Shared fixtures: an isolated cache (teachers, token files) for the whole session, W&B kept offline and local."""

from __future__ import annotations

import os

import pytest


# Tiny settings for end-to-end runs through the CLI: seconds, not minutes, on 2 CPU cores.
TINY = ["logger=none", "trainer.steps=12", "trainer.eval_every=6", "trainer.ckpt_every=6",
        "task.data.block_size=32", "task.data.batch_size=4", "task.eval_batches=2",
        "task.student.n_layer=1", "task.student.n_embd=32", "task.student.n_head=2",
        "task.teacher.n_layer=1", "task.teacher.n_embd=32", "task.teacher.n_head=2",
        "task.teacher.steps=20", "task.teacher.batch_size=4", "trainer.bn_recompute_batches=2"]


@pytest.fixture(scope="session")
def sfbench_env(tmp_path_factory):
    """Environment for sfbench subprocesses and in-process runs: shared cache, offline W&B under tmp."""
    root = tmp_path_factory.mktemp("sfbench-env")
    env = {"SFBENCH_CACHE": str(root / "cache"), "WANDB_MODE": "offline", "WANDB_DIR": str(root / "wandb"),
           "WANDB_CACHE_DIR": str(root / "wandb-cache"), "WANDB_CONFIG_DIR": str(root / "wandb-config"),
           "WANDB_DATA_DIR": str(root / "wandb-data"), "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "0"}
    return env


@pytest.fixture
def in_run_env(sfbench_env, monkeypatch, tmp_path):
    """In-process CLI runs: cwd is a fresh tmp dir (runs/ land there), the shared cache, no W&B key."""
    for key, value in sfbench_env.items():
        monkeypatch.setenv(key, value)
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def subprocess_env(sfbench_env) -> dict:
    env = dict(os.environ, **sfbench_env)
    env.pop("WANDB_API_KEY", None)
    return env


def isolate_wandb(tmp_path, monkeypatch) -> None:
    """Keep W&B inside tmp_path and away from any account: no key, no netrc, offline unless a test says not."""
    home = tmp_path / "home"
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        (home / var.lower()).mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT",
                "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_RUN_GROUP", "WANDB_JOB_TYPE", "WANDB_NAME", "WANDB_TAGS",
                "WANDB_NOTES"):
        monkeypatch.delenv(var, raising=False)


def run_cli(args) -> int:
    """`python -m sfbench ARGS` in this process: its exit status (0 when it returns)."""
    from sfbench.cli.app import main

    try:
        main(list(args))
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0
