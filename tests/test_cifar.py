"""task=cifar10: the real on-disk format (written by the test), ResNet-20, on-device augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sfbench.tasks.cifar import CIFAR10Task, ResNetCIFAR, augment, load_cifar10
from sfbench.tracking import read_summary
from test_cli import metric_rows, only_run, run_cli


def write_cifar(root: Path, per_batch: int = 100, test: int = 200, seed: int = 0) -> Path:
    """A CIFAR-10 directory in the standard python format with a separable task: each class has its own colour
    (crops and flips keep it), on per-pixel noise."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    palette = np.array([[r, g, b] for r in (40, 140, 240) for g in (40, 140, 240) for b in (40, 140, 240)])[::2][:10]

    def make(n):
        labels = rng.integers(0, 10, n)
        noise = rng.integers(-30, 31, (n, 3, 32, 32))
        images = np.clip(palette[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
        return {"data": images.reshape(n, 3072), "labels": labels.tolist(), "batch_label": "synthetic"}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(make(per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(make(test)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    return root


def test_resnet20_has_the_papers_size():
    assert sum(p.numel() for p in ResNetCIFAR(20).parameters()) == pytest.approx(0.27e6, rel=0.02)
    assert ResNetCIFAR(20)(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_augment_is_a_shifted_and_flipped_crop():
    images = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    offsets = torch.tensor([[4, 4], [0, 8]])
    flips = torch.tensor([False, True])
    out = augment(images, offsets, flips)
    torch.testing.assert_close(out[0], images[0])                        # offset (4, 4) = the original image
    padded = torch.nn.functional.pad(images[1], (4, 4, 4, 4))
    torch.testing.assert_close(out[1], padded[:, 0:32, 8:40].flip(-1))   # crop then flip, zeros where padded


def test_loader_reads_the_format_and_reports_missing_or_broken_data(tmp_path):
    write_cifar(tmp_path / "ok")
    data = load_cifar10(tmp_path / "ok")
    assert data["train"][0].shape == (500, 3, 32, 32) and data["test"][0].shape == (200, 3, 32, 32)
    with pytest.raises(ValueError, match=r"no CIFAR-10 at .*cifar-10-batches-py .*missing data_batch_1.*download=true"):
        load_cifar10(tmp_path / "nothing")
    broken = write_cifar(tmp_path / "broken") / "cifar-10-batches-py" / "data_batch_3"
    broken.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="data_batch_3 is not a CIFAR-10 batch file"):
        load_cifar10(tmp_path / "broken")


@pytest.mark.parametrize("bad, message", [
    ({"data": np.zeros((0, 3072), np.uint8), "labels": []}, "is malformed"),
    ({"data": np.zeros((4, 3072), np.uint8), "labels": [0, 1, 2, 12]}, "labels in 0..9"),
    ({"data": np.full((2, 3072), 300), "labels": [0, 1]}, "integers in 0..255"),
    ({"data": np.zeros((2, 3072), np.uint8), "labels": [[0], [1]]}, "is malformed"),
    ({"pixels": np.zeros((2, 3072), np.uint8)}, "is not a CIFAR-10 batch file"),
])
def test_malformed_batches_are_clear_errors(tmp_path, bad, message):
    root = write_cifar(tmp_path)
    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(bad))
    with pytest.raises(ValueError, match=message):
        load_cifar10(root)


def test_bytes_keys_as_in_the_original_python2_pickles(tmp_path):
    """The original files unpickle with bytes keys under encoding='bytes' (what the loader uses); both styles load."""
    root = write_cifar(tmp_path)
    folder = root / "cifar-10-batches-py"
    for name in ("data_batch_1", "test_batch"):
        entry = pickle.loads((folder / name).read_bytes())
        (folder / name).write_bytes(pickle.dumps({k.encode(): v for k, v in entry.items()}))
    data = load_cifar10(root)
    assert data["train"][0].shape == (500, 3, 32, 32) and data["train"][1].dtype == np.int64


def test_batches_are_deterministic_and_cover_each_epoch(tmp_path):
    task = CIFAR10Task(root=str(write_cifar(tmp_path)), batch_size=100)
    task.setup(torch.device("cpu"))
    seen = torch.cat([task._indices(s) for s in range(5)])
    assert sorted(seen.tolist()) == list(range(500))                   # one epoch = a permutation
    x1, y1 = task.batch(7)
    x2, y2 = task.batch(7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_missing_dataset_through_the_cli(in_run_env, capsys):
    assert run_cli(["task=cifar10", "logger=none", f"task.root={in_run_env / 'nope'}"]) == 2
    err = capsys.readouterr().err
    assert "task.root=" in err and "no CIFAR-10 at" in err and "Traceback" not in err


@pytest.mark.slow
def test_resnet20_learns_a_separable_cifar_set(in_run_env):
    root = write_cifar(in_run_env / "data", per_batch=200, test=300)
    args = ["task=cifar10", "logger=none", f"task.root={root}", "task.batch_size=64", "opt=sf_adamw", "opt.lr=0.01",
            "trainer.steps=60", "trainer.eval_every=30", "trainer.ckpt_every=0", "trainer.bn_recompute_batches=10"]
    assert run_cli(args) == 0
    run_dir = only_run(in_run_env)
    assert read_summary(run_dir)["status"] == "completed"
    evals = [r for r in metric_rows(run_dir) if "eval/acc" in r]
    assert evals[-1]["eval/acc"] >= 0.9, evals
