"""The layout DESIGN.md draws ("Rooms", "Layout the user asked for"): top-level `configs/` shipped in the wheel, the
Slurm launcher as a Hydra plugin found by Hydra's discovery, a `train` package, a `theory` package that imports no
training or CLI code — and a wheel that works from any directory."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import subprocess_env

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> list[str]:
    """Absolute module names a Python file imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def test_top_level_layout_and_one_copy_of_the_configs():
    for name in ("configs", "sfbench", "scripts", "slurm", "tests", "pyproject.toml", "README.md",
                 "hydra_plugins/sfbench_launcher"):
        assert (ROOT / name).exists(), name
    for group in ("task", "opt", "sched", "logger", "experiment", "hydra/launcher"):
        assert list((ROOT / "configs" / group).glob("*.yaml")), group
    copies = [p.relative_to(ROOT) for p in ROOT.rglob("config.yaml")
              if ".venv" not in p.parts and "runs" not in p.parts and "multirun" not in p.parts]
    assert copies == [Path("configs/config.yaml")]
    assert not (ROOT / "sfbench" / "configs").exists()
    assert not (ROOT / "hydra_plugins" / "__init__.py").exists(), "hydra_plugins must stay a namespace package"


def test_theory_imports_no_training_or_cli_code():
    offending = {str(p.relative_to(ROOT)): [m for m in _imports(p) if m.startswith(("sfbench.cli", "sfbench.train"))]
                 for p in (ROOT / "sfbench" / "theory").rglob("*.py")}
    assert not {k: v for k, v in offending.items() if v}
    code = ("import sys, sfbench.theory, sfbench.theory.__main__; "
            "bad = [m for m in ('torch', 'hydra', 'sfbench.cli', 'sfbench.train', 'sfbench.tasks', 'sfbench.optim') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_tasks_import_no_optimizer_tracking_or_trainer_code():
    """DESIGN.md: a task is data, model and loss; it never reaches into the optimizers, the run record or the
    trainer (a shared helper lives outside the rooms, e.g. sfbench/terminal.py)."""
    offending = {str(p.relative_to(ROOT)): [m for m in _imports(p)
                                            if m.startswith(("sfbench.optim", "sfbench.tracking", "sfbench.train"))]
                 for p in (ROOT / "sfbench" / "tasks").rglob("*.py")}
    assert not {k: v for k, v in offending.items() if v}


def test_cli_registers_no_plugin_and_hydra_discovers_the_launcher(tmp_path):
    for path in (ROOT / "sfbench" / "cli").rglob("*.py"):
        imported = _imports(path)
        assert not [m for m in imported if m.startswith(("hydra_plugins", "hydra.core.plugins"))], path
        assert "Plugins.register" not in path.read_text() and "register(" not in path.read_text(), path
    train_imports = [m for p in (ROOT / "sfbench" / "train").rglob("*.py") for m in _imports(p)]
    assert not [m for m in train_imports if m.startswith(("hydra", "omegaconf", "sfbench.cli"))]
    # Hydra's own plugin scan, from a directory outside the checkout (the installed package, not the cwd)
    code = ("from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher; "
            "print([c.__module__ + '.' + c.__name__ for c in Plugins.instance().discover(Launcher)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "hydra_plugins.sfbench_launcher.slurm_launcher.SlurmLauncher" in out.stdout


def test_theory_command_line_is_registered(tmp_path, sfbench_env):
    out = subprocess.run([sys.executable, "-m", "sfbench.theory", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path, env=subprocess_env(sfbench_env))
    assert out.returncode == 0 and "predict" in out.stdout, out.stderr
    out = subprocess.run([sys.executable, "-m", "sfbench.theory"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path, env=subprocess_env(sfbench_env))
    assert out.returncode == 2 and "choose a command: predict" in out.stderr


@pytest.mark.slow
def test_wheel_installs_and_runs_from_any_directory(tmp_path, sfbench_env):
    """`pip wheel --no-deps .` → a fresh virtual environment → `python -m sfbench --help` and a 20-step run from a
    directory outside the checkout. The fresh environment borrows the test environment's dependencies (torch, hydra,
    … — a path entry to its site-packages, whose .pth files, the editable sfbench among them, are not run), so the
    only sfbench it can import is the wheel's."""
    wheels = tmp_path / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("sfbench-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()
            and os.path.realpath(p) != os.path.realpath(ROOT)]
    (site / "zz_test_deps.pth").write_text("\n".join(deps) + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                                str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (site / "sfbench" / "configs" / "config.yaml").is_file()
    assert (site / "hydra_plugins" / "sfbench_launcher" / "slurm_launcher.py").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in subprocess_env(sfbench_env).items() if k != "PYTHONPATH"}
    where = subprocess.run([str(python), "-c", "import sfbench, sfbench.cli.validate as v; "
                            "print(sfbench.__file__); print(v.config_dir())"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert where.returncode == 0, where.stderr
    module, configs = where.stdout.split()
    assert Path(module).is_relative_to(site) and Path(configs) == site / "sfbench" / "configs"

    helped = subprocess.run([str(python), "-m", "sfbench", "--help"], capture_output=True, text=True, cwd=elsewhere,
                            env=env, timeout=300)
    assert helped.returncode == 0, helped.stderr
    assert "task: " in helped.stdout and "logreg" in helped.stdout
    ran = subprocess.run([str(python), "-m", "sfbench", "task=logreg", "logger=none", "trainer.steps=20"],
                         capture_output=True, text=True, cwd=elsewhere, env=env, timeout=600)
    assert ran.returncode == 0, ran.stderr
    run_dir = elsewhere / "runs" / "task=logreg,trainer.steps=20"
    import json
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps_done"] == 20
    assert sum(1 for _ in open(run_dir / "metrics.jsonl")) == 20
    # the launcher plugin is found by Hydra in the wheel's environment too
    found = subprocess.run([str(python), "-c", "from hydra.core.plugins import Plugins; "
                            "from hydra.plugins.launcher import Launcher; "
                            "print([c.__module__ for c in Plugins.instance().discover(Launcher)])"],
                           capture_output=True, text=True, cwd=elsewhere, env=env, timeout=120)
    assert "hydra_plugins.sfbench_launcher.slurm_launcher" in found.stdout, found.stderr
    assert os.path.realpath(str(ROOT)) not in where.stdout
