"""Start-up: the heavy optional libraries are imported by the runs that use them, not by importing sfbench."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import subprocess_env

# torch._dynamo too: torch's optimizers import it (3 s here) on their first add_param_group / zero_grad / state_dict;
# sfbench's SF optimizers skip that wrapper until something else has imported it (sfbench/optim/torch_internals.py)
OPTIONAL = ("transformers", "datasets", "wandb", "scipy", "matplotlib", "pandas", "PEPit", "submitit", "torch._dynamo")

PROBE = """
import json, sys
import sfbench.cli, sfbench.cli.app, sfbench.train, sfbench.optim, sfbench.tracking, sfbench.theory
import sfbench.tasks.gpt, sfbench.tasks.distill, sfbench.tasks.teacher, sfbench.tasks.gpt_model
import sfbench.tasks.testbeds, sfbench.tasks.cifar, sfbench.tasks.sources, sfbench.tasks.tokenizer
import sfbench.tasks.token_cache, sfbench.tasks.windows
after_imports = sorted(m for m in {optional} if m in sys.modules)
from sfbench.cli import main
try:
    main(["task=logreg", "logger=none", "trainer.steps=5", "trainer.theory=false", "hydra.run.dir=run"])
except SystemExit as e:
    assert not e.code, e.code
after_run = sorted(m for m in {optional} if m in sys.modules)
from sfbench.tasks.gpt_model import gpt2
model = gpt2(256, 16, 1, 16, 2)
model(__import__("torch").zeros(1, 4, dtype=__import__("torch").long)).sum().backward()
after_model = sorted(m for m in {optional} if m in sys.modules)
model.save_pretrained("saved")
print(json.dumps({{"imports": after_imports, "run": after_run, "model": after_model,
                   "saved": sorted(m for m in {optional} if m in sys.modules)}}))
"""


@pytest.mark.slow
def test_optional_libraries_load_when_used(sfbench_env, tmp_path):
    out = subprocess.run([sys.executable, "-c", PROBE.format(optional=repr(OPTIONAL))], capture_output=True,
                         text=True, cwd=tmp_path, env=subprocess_env(sfbench_env), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded["imports"] == []          # importing the CLI, trainer, theory and every task module
    assert loaded["run"] == []              # a logreg run without W&B and the end-of-run fit
    assert loaded["model"] == []            # the GPT model is plain PyTorch: built, run and differentiated
    assert "transformers" in loaded["saved"]      # saving it in transformers' format does load it (the probe is live)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"
