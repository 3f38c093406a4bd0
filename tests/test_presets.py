"""The seed experiments as presets (configs/experiment/): each composes to the papers' setup (the numbers below are
the issue's reading of the authors' configs, not sfbench's output), and each small form runs offline end to end
through the report (slow: CI runs them)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("sfs_distill_shakespeare", "sfs_distill_fineweb", "sfs_cifar_bound", "sfn_pep")
SFS_METHODS = ("adamw_wsd", "sf_adamw", "sf_polyak_adam", "iam_adam", "sgd", "sf_sgd", "sf_polyak", "iam")


def compose(*overrides: str, return_hydra: bool = False):
    """The config `python -m sfbench OVERRIDES` composes (Hydra's compose API on the same config directory)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from sfbench.cli.sweep import register_resolvers
    from sfbench.cli.validate import config_dir

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra)


def sweep_params(preset: str, smoke: bool) -> dict[str, list[str]]:
    cfg = compose(f"experiment={preset}", f"smoke={str(smoke).lower()}", return_hydra=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    return {k: str(v).split(",") for k, v in params.items()}


def test_presets_are_the_ones_the_readme_lists():
    found = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("s*.yaml") if p.stem.startswith(("sfs_", "sfn_")))
    assert found == sorted(PRESETS)
    readme = (ROOT / "README.md").read_text()
    for name in PRESETS:
        assert f"experiment={name}" in readme, name


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("smoke", [False, True])
def test_every_job_of_every_preset_composes_and_resolves(preset, smoke):
    params = sweep_params(preset, smoke)
    assert params, "a preset is a whole sweep"
    for value in params.pop("opt.lr", []):
        assert float(value) > 0
    # every value of every other swept key (the lr only sets a number); the keys vary one at a time
    jobs = [[]] + [[f"{k}={v}"] for k, values in params.items() for v in values[1:]]
    first = [f"{k}={values[0]}" for k, values in params.items()]
    for job in jobs:
        overrides = {o.split("=")[0]: o for o in first + job}
        cfg = compose(f"experiment={preset}", f"smoke={str(smoke).lower()}", *overrides.values())
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert resolved["smoke"] is smoke
        if "pep" not in resolved or resolved["pep"] is None:
            assert resolved["trainer"]["steps"] >= 1


# The SFS authors' values (GitHub modichirag/GPT-opt, configs/teach-*.yaml read at commit d4302d8; run.py and
# gptopt/train_distributed.py for what the configs leave to the code), each with the file and key it came from.
# `value(cfg)` reads the same quantity from a composed sfbench config.
GRID = [1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.3]
SHAKESPEARE_FILE = "configs/teach-shakespeare-wsd-ct-theory-t.yaml"
FINEWEB_FILE = "configs/teach-fineweb-wd-2-7B.yaml"
COMMON = [
    # (what, authors' value, where it is, how to read it from sfbench's config)
    ("seed", 42, "run.py: set_seed(42)", lambda c: c["seed"]),
    ("precision", "bf16", "training_params.mixed_precision: bfloat16", lambda c: c["trainer"]["precision"]),
    ("weight decay", 0.0, "every optimizer: weight_decay 0.0", lambda c: c["opt"].get("weight_decay", 0.0)),
    ("warm-up from 0", True, "gptopt/optim/utils.py get_scheduler: step / num_warmup_steps",
     lambda c: c["sched"]["warmup_from_zero"]),
]
AUTHORS = {
    "sfs_distill_shakespeare": COMMON + [
        ("teacher", "gpt2-medium", f"{SHAKESPEARE_FILE}: teacher_model", lambda c: c["task"]["teacher"]["name_or_path"]),
        ("student layers × width × heads", (4, 768, 8), f"{SHAKESPEARE_FILE}: gpt_model n_layer, n_embd, n_head",
         lambda c: (c["task"]["student"]["n_layer"], c["task"]["student"]["n_embd"], c["task"]["student"]["n_head"])),
        ("context", 512, f"{SHAKESPEARE_FILE}: training_params.context_length", lambda c: c["task"]["data"]["block_size"]),
        ("tokens per step", 4096, f"{SHAKESPEARE_FILE}: training_params.tokens_processed",
         lambda c: c["task"]["data"]["batch_size"] * c["task"]["data"]["block_size"]),
        ("steps (one epoch)", 73, "run.py: int(num_epochs · 301,967 train tokens / tokens_processed)",
         lambda c: c["trainer"]["steps"]),
        ("gradient clipping", None, f"{SHAKESPEARE_FILE}: training_params.gradnorm 0.0 (none)",
         lambda c: c["trainer"]["grad_clip"]),
        ("torch.compile", False, f"{SHAKESPEARE_FILE}: training_params.compile", lambda c: c["trainer"]["compile"]),
        ("train / validation characters of input.txt", ([0, 1003854], [1059624, 1115394]),
         "run.py: load_dataset('tiny_shakespeare') train and test splits (the dataset script: the first int(0.9 n) "
         "characters, and the last half of the rest)",
         lambda c: (c["task"]["data"]["train_chars"], c["task"]["data"]["val_chars"])),
        ("schedule: warm-up, constant, cool-down steps", ("wsd", 7, 7),
         f"{SHAKESPEARE_FILE}: lr_schedule warm-up-constant-linear, warm_up_fraction 0.1, cool_down_fraction 0.1 "
         "(int(0.1 · 73) steps each)",
         lambda c: (c["sched"]["name"], c["sched"]["warmup_steps"], c["sched"]["decay_steps"])),
    ],
    "sfs_distill_fineweb": COMMON + [
        ("teacher", "EleutherAI/gpt-neo-2.7B", f"{FINEWEB_FILE}: teacher_model",
         lambda c: c["task"]["teacher"]["name_or_path"]),
        ("student layers × width × heads", (12, 768, 6), f"{FINEWEB_FILE}: gpt_model n_layer, n_embd, n_head",
         lambda c: (c["task"]["student"]["n_layer"], c["task"]["student"]["n_embd"], c["task"]["student"]["n_head"])),
        ("context", 1024, f"{FINEWEB_FILE}: training_params.context_length", lambda c: c["task"]["data"]["block_size"]),
        ("tokens per step", 2 ** 18, f"{FINEWEB_FILE}: training_params.tokens_processed",
         lambda c: c["task"]["data"]["batch_size"] * c["task"]["data"]["block_size"]),
        ("sequences per micro-batch", 32, f"{FINEWEB_FILE}: training_params.batch_size",
         lambda c: c["task"]["data"]["batch_size"] // c["trainer"]["grad_accum"]),
        ("validation tokens", 2 ** 23, f"{FINEWEB_FILE}: logging_params.val_tokens_processed",
         lambda c: c["task"]["eval_batches"] * c["task"]["data"]["batch_size"] * c["task"]["data"]["block_size"]),
        ("gradient clipping", 1.0, f"{FINEWEB_FILE}: training_params.gradnorm", lambda c: c["trainer"]["grad_clip"]),
        ("torch.compile", True, f"{FINEWEB_FILE}: training_params.compile", lambda c: c["trainer"]["compile"]),
        ("schedule: warm-up, constant, cool-down steps", ("wsd", 381, 381),
         f"{FINEWEB_FILE}: lr_schedule warm-up-constant-linear, warm_up_fraction 0.1, cool_down_fraction 0.1 "
         "(int(0.1 · 3815) steps each)",
         lambda c: (c["sched"]["name"], c["sched"]["warmup_steps"], c["sched"]["decay_steps"])),
    ],
}
#: per preset and method, the lr grid of the authors' file (teach-fineweb-wd-2-7B.yaml and its -1 form list AdamW and
#: SGD-m up to 0.05 and IAM-Adam up to 0.1; teach-shakespeare-wsd-ct-theory-t.yaml gives every method the whole grid)
AUTHORS_LR = {
    "sfs_distill_shakespeare": {m: GRID for m in SFS_METHODS},
    "sfs_distill_fineweb": {**{m: GRID for m in SFS_METHODS}, "adamw_wsd": GRID[:6], "sgd": GRID[:6],
                            "iam_adam": GRID[:7]},
}


def launched_jobs(preset: str) -> list[dict[str, str]]:
    """The jobs `python -m sfbench -m experiment=PRESET` launches: its sweeper, built from the composed config as
    Hydra builds it, expanding the preset's swept values."""
    import importlib

    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = compose(f"experiment={preset}", return_hydra=True)
    module, _, name = cfg.hydra.sweeper._target_.rpartition(".")
    settings = {k: v for k, v in OmegaConf.to_container(cfg.hydra.sweeper).items() if k != "_target_"}
    sweeper = getattr(importlib.import_module(module), name)(**settings)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params, resolve=True)
    overrides = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [dict(o.split("=", 1) for o in job) for batch in sweeper.split_arguments(overrides, None) for job in batch]


@pytest.mark.parametrize("preset", sorted(AUTHORS_LR))
def test_each_method_sweeps_the_authors_lr_grid(preset):
    jobs = launched_jobs(preset)
    for method, theirs in AUTHORS_LR[preset].items():
        ours = sorted(float(j["opt.lr"]) for j in jobs if j["sfs_method"] == method)
        assert ours == pytest.approx(theirs), f"{preset} {method}: sfbench sweeps {ours}, the authors {theirs}"
    assert len(jobs) == sum(len(v) for v in AUTHORS_LR[preset].values())


#: per method, the optimizer settings the authors' get_optimizer gives it (gptopt/optim/utils.py defaults)
AUTHORS_OPT = {
    "adamw_wsd": {"_target_": "torch.optim.AdamW", "betas": [0.9, 0.999], "eps": 1e-8},
    "sgd": {"_target_": "torch.optim.SGD", "momentum": 0.9},
    "sf_adamw": {"betas": [0.9, 0.999], "eps": 1e-8, "r": 0.0, "weight_lr_power": 2.0},
    "sf_sgd": {"momentum": 0.9, "r": 0.0, "weight_lr_power": 2.0},
    "sf_polyak_adam": {"lr_rule": "polyak", "betas": [0.9, 0.999], "eps": 1e-8},
    "sf_polyak": {"lr_rule": "polyak", "momentum": 0.9},
    "iam_adam": {"lr_rule": "polyak", "weighting": "constant", "c": 0.1},       # lmbda 9: c = 1/(1 + 9)
    "iam": {"lr_rule": "polyak", "weighting": "constant", "c": 0.1},
}


@pytest.mark.parametrize("preset", sorted(AUTHORS))
@pytest.mark.parametrize("method", SFS_METHODS)
def test_distillation_presets_are_the_authors_configs_key_by_key(preset, method):
    """Every method of the preset, composed, against the authors' values: one schedule for all methods, their lr
    model, data and step sizes (a mismatch names the key and the authors' file); the lr grids are checked above."""
    params = sweep_params(preset, False)
    assert sorted(params["sfs_method"]) == sorted(SFS_METHODS)
    cfg = OmegaConf.to_container(compose(f"experiment={preset}", f"sfs_method={method}"), resolve=True)
    for what, theirs, where, ours in AUTHORS[preset]:
        assert ours(cfg) == theirs, f"{what}: sfbench has {ours(cfg)!r}, the authors {theirs!r} ({where})"
    for key, theirs in AUTHORS_OPT[method].items():
        assert cfg["opt"].get(key) == theirs, f"{method} opt.{key}: {cfg['opt'].get(key)!r}, the authors {theirs!r}"
    const = OmegaConf.to_container(compose(f"experiment={preset}", f"sfs_method={method}",
                                           "sched_variant=const_decay"), resolve=True)["sched"]
    # the -const-decay files: warm-up 10 %, cool-down 0 % (constant after the warm-up)
    assert (const["name"], const["warmup_steps"], const["warmup_from_zero"]) == \
        ("constant", cfg["sched"]["warmup_steps"], True)


def test_the_authors_schedule_step_by_step():
    """The intended form of the authors' warm-up-constant-linear (get_scheduler): h(t) = t/W for t < W = int(0.1 T),
    1 until T − C, then 1 − (t − (T − C))/C (C = int(0.1 T), floor 1e-7), applied by LambdaLR to step t + 1."""
    import numpy as np

    from sfbench.optim import make_schedule

    for T in (73, 3815):
        W = C = int(0.1 * T)
        theirs = np.array([t / W if t < W else 1.0 if t < T - C else max(1e-7, 1.0 - (t - (T - C)) / C)
                           for t in range(T)])
        cfg = OmegaConf.to_container(compose("experiment=sfs_distill_shakespeare", f"trainer.steps={T}"),
                                     resolve=True)["sched"]
        ours = make_schedule(cfg["name"], total_steps=T, **{k: v for k, v in cfg.items()
                                                           if k not in ("_target_", "_partial_", "name")}).array()
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-7)


def test_cifar_preset_compares_wsd_and_cosine_for_an_sgd_base_sf_and_sgd_momentum():
    params = sweep_params("sfs_cifar_bound", False)
    assert sorted(params["sched"]) == ["cosine", "wsd"]
    assert len(params["opt.lr"]) >= 5
    cfg = OmegaConf.to_container(compose("experiment=sfs_cifar_bound", "sfs_method=sf_sgd_schedulet"), resolve=True)
    assert cfg["task"]["_target_"].endswith("Cifar10Task") or "cifar" in cfg["task"]["_target_"].lower()
    assert cfg["opt"]["_target_"] == "sfbench.optim.SFSGD" and cfg["opt"]["weighting"] == "schedulet"
    sgd = OmegaConf.to_container(compose("experiment=sfs_cifar_bound", "sfs_method=sgd", "sched=cosine"), resolve=True)
    assert sgd["opt"]["_target_"] == "torch.optim.SGD"
    assert sgd["sched"]["name"] == "cosine" and sgd["sched"]["warmup_steps"] == cfg["sched"]["warmup_steps"]


def test_pep_preset_sweeps_sfn_methods_including_increasing_averaging():
    params = sweep_params("sfn_pep", False)
    assert {"sf_constant", "sf_linear", "sf_poly", "sf_increasing", "xz_distance"} <= set(params["pep.method"])
    assert compose("experiment=sfn_pep").pep.T == "1-40"
    assert compose("experiment=sfn_pep", "smoke=true").pep.T == "1-6"


# -- the small forms, end to end (slow) -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standins_dir(tmp_path_factory):
    """The stand-ins the small forms read, made here with transformers (sfbench/tasks/standins.py)."""
    from sfbench.tasks import standins

    root = tmp_path_factory.mktemp("standins")
    standins.ensure(root)
    return root


def _sfbench(args, env, cwd, timeout=900):
    out = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=timeout)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS)
def test_small_form_runs_offline_through_the_report(preset, standins_dir, sfbench_env, tmp_path):
    env = subprocess_env(sfbench_env)
    env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = "1"
    # the sweep goes where the preset's docs say, multirun/<its group>, and the documented report command reads it
    sweep = tmp_path / "multirun" / f"{preset}_smoke"
    out = _sfbench(["sfbench", "-m", f"experiment={preset}", "smoke=true", f"paths.standins={standins_dir}",
                    "logger=none"], env, tmp_path)
    summaries = [json.loads(p.read_text()) for p in sweep.rglob("summary.json")]
    n_jobs = 1
    for values in sweep_params(preset, True).values():
        n_jobs *= len(values)
    assert len(summaries) == n_jobs
    assert all(s["status"] in ("completed", "diverged") for s in summaries), [s["status"] for s in summaries]
    assert "report" in out.stdout          # the sweep's closing table names the report command
    assert sorted(p.name for p in (tmp_path / "multirun").iterdir()) == [sweep.name]
    _sfbench(["sfbench.report", f"multirun/{preset}_smoke"], env, tmp_path)
    report = json.loads((sweep / "report" / "report.json").read_text())
    if preset == "sfn_pep":
        methods = {row["method"] for row in report["pep"]["runs"]}
        assert methods == set(sweep_params(preset, True)["pep.method"])
        assert all(row["T"] == list(range(1, 7)) or row["n_T"] == 6 for row in report["pep"]["runs"])
        assert (sweep / "report" / report["pep"]["figure"]).is_file()
        return
    labels = {row["method"] for row in report["methods"]}
    if preset.startswith("sfs_distill"):
        assert len(labels) == len(SFS_METHODS), labels       # eight methods, never pooled
    else:   # a method is the optimizer's choice plus what varies within it (here the schedule): 2 × 2, never pooled
        assert {(m["choice"], tuple(m["schedules"])) for m in report["methods"]} == {
            (choice, (sched,)) for choice in ("sf_sgd", "sgd") for sched in ("cosine", "wsd")}, labels
    assert len(report["figures"]) >= 3
    assert "report.html" in os.listdir(sweep / "report")


@pytest.mark.slow
def test_hub_teacher_key_resolves_from_a_local_hub_cache(standins_dir, sfbench_env, tmp_path):
    """The full Shakespeare preset, untouched teacher key `gpt2-medium`: with the hub offline, transformers finds the
    teacher and its tokenizer in a local hub cache (the layout `huggingface-cli download` leaves), as it would for a
    user who downloaded gpt2-medium once. Only the sizes are shrunk, through the keys a user sets."""
    hub = tmp_path / "hub"
    snapshot = hub / "models--gpt2-medium" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(standins_dir / "teacher-gpt2", snapshot)
    (hub / "models--gpt2-medium" / "refs").mkdir(parents=True)
    (hub / "models--gpt2-medium" / "refs" / "main").write_text(snapshot.name)
    env = subprocess_env(sfbench_env)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub), TINYSHAKESPEARE=str(standins_dir / "tinyshakespeare.txt"))
    run = tmp_path / "run"
    _sfbench(["sfbench", "experiment=sfs_distill_shakespeare", "sfs_method=sf_polyak_adam", "logger=none",
              "trainer.steps=3", "trainer.precision=fp32", "task.data.block_size=32", "task.student.n_layer=1",
              "task.student.n_embd=32", "task.student.n_head=2", "task.eval_batches=1", f"hydra.run.dir={run}",
              "task.data.train_chars=[0,270000]", "task.data.val_chars=[285000,300000]"],   # the stand-in's length
             env, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed"
    config = OmegaConf.load(run / "config.yaml")
    assert config.task.teacher.name_or_path == "gpt2-medium"
    # the student speaks the cached teacher's vocabulary (the stand-in's 512-token BPE, not GPT-2's 50,257), and the
    # teacher that answered is the one in the hub cache
    from transformers import AutoTokenizer
    assert summary["task"]["vocab_size"] == len(AutoTokenizer.from_pretrained(str(snapshot)))
    assert "gpt2-medium" in json.dumps(summary["task"]["teacher"])


def test_report_reads_pep_jobs_and_recovers_a_known_rate(tmp_path):
    """A PEP job's directory as sfbench/pep/job.py writes it, with worst cases 2·T^−0.7 built here: the report
    lists it apart from training runs and its T^−a fit finds a = 0.7 (and prefers it to 1/log(T+1))."""
    from sfbench.report import build_report
    from sfbench.tracking.run_record import RunRecord

    run = tmp_path / "sweep" / "pep.method=sf_constant"
    record = RunRecord(run)
    record.write_config({"pep": {"method": "sf_constant", "T": "1-12", "beta": 1.0}, "choices": {"opt": "sf_adamw"},
                         "opt": {"lr": 0.0025}, "task": {"_target_": "x"}})
    Ts = list(range(1, 13))
    lines = ["method,T,worst_case"] + [f"sf_constant,{t},{2 * t ** -0.7!r}" for t in Ts]
    (run / "pep.csv").write_text("\n".join(lines) + "\n")
    record.write_summary("completed", steps_done=12, total_steps=12, final={"pep/T": 12, "pep/worst_case": 2 * 12 ** -0.7})
    record.close()
    report = build_report(tmp_path / "sweep", wandb=False)
    assert report["runs"] == [] and report["methods"] == []
    (row,) = report["pep"]["runs"]
    assert row["method"] == "sf_constant" and row["T"] == Ts
    power = next(f for f in row["fits"] if f["form"] == "T^-a")
    inv_log = next(f for f in row["fits"] if f["form"] == "1/log(T+1)")
    assert power["a"] == pytest.approx(0.7, abs=1e-9) and power["C"] == pytest.approx(2.0, rel=1e-9)
    assert power["rms_log_residual"] < 1e-9 < inv_log["rms_log_residual"]
    assert (tmp_path / "sweep" / "report" / report["pep"]["figure"]).is_file()
    assert "PEP worst cases" in (tmp_path / "sweep" / "report" / "report.html").read_text()


@pytest.mark.slow
def test_tuned_lr_sits_beside_the_predicted_one(sfbench_env, tmp_path):
    """hydra/sweeper=tune_lr: Optuna proposes lrs, each a run; the report's prediction table names the best trial's
    lr as found by the tuner (with the number of trials) next to the theory-predicted lr of the same runs."""
    env = subprocess_env(sfbench_env)
    sweep = tmp_path / "tuned"
    out = _sfbench(["sfbench", "-m", "task=logreg", "opt=sgd", "hydra/sweeper=tune_lr", "hydra.sweeper.n_trials=4",
                    "trainer.steps=60", "logger=none", f"hydra.sweep.dir={sweep}"], env, tmp_path)
    assert "4 runs" in out.stdout
    configs = [OmegaConf.load(p) for p in sweep.rglob("config.yaml")]
    assert len({c.opt.lr for c in configs}) == 4 and all(c.choices["hydra/sweeper"] == "tune_lr" for c in configs)
    _sfbench(["sfbench.report", str(sweep)], env, tmp_path)
    report = json.loads((sweep / "report" / "report.json").read_text())
    (row,) = report["prediction"]["best_lr"]
    assert row["observed_by"] == "tune_lr: 4 trials"
    assert row["observed"] in {float(c.opt.lr) for c in configs}
    assert row["predicted"] > 0 and row["rule"] in ("C2", "C3")
