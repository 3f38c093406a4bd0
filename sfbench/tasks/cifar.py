"""CIFAR-10 with ResNet-20 (`task=cifar10`), the SFS paper's image benchmark.

Data: the standard `cifar-10-batches-py` layout (`data_batch_1` … `data_batch_5`, `test_batch`: pickled dicts with
`data` uint8 N×3072 and `labels`) under `task.root`; `task.download=true` fetches it with torchvision's downloader
where there is a network. The whole dataset is kept as uint8 tensors on the training device and augmented there —
random crop with 4-pixel zero padding and horizontal flip, vectorised over the batch — so the loop does no
per-image Python work (scripts/bench_data.py measures it against a torchvision DataLoader pipeline).

Batches are a pure function of (seed, step): sample positions step·B … step·B + B − 1 of an endless sequence of
epochs, each epoch a permutation drawn from (seed, epoch); crop offsets and flips from (seed, step).

Model: the CIFAR ResNet of He et al. (2016), depth 6n + 2 with n = 3: 3 stages of 3 basic blocks, 16/32/64 channels,
identity shortcuts with zero-padded channels on downsampling ("option A"), 0.27M parameters. ℓ* = 0 (cross-entropy).
BatchNorm statistics are recomputed at x before each evaluation of an SF run (the trainer does it; docs/theory.md A).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import ConfigError, Task, check_positive_int

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


class DataMissing(ConfigError):
    pass


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
        raw = np.asarray(entry[b"data"] if b"data" in entry else entry["data"])
        labels = np.asarray(entry.get(b"labels", entry.get("labels")))
    except (OSError, pickle.UnpicklingError, EOFError, KeyError, TypeError, AttributeError, ValueError) as err:
        raise ConfigError(f"task.root: {path} is not a CIFAR-10 batch file ({type(err).__name__}: {err}); expected a "
                          "pickled dict with 'data' (N×3072 uint8) and 'labels'") from None
    ok = (raw.ndim == 2 and raw.shape[1] == 3072 and len(raw) > 0 and labels.ndim == 1 and len(labels) == len(raw)
          and np.issubdtype(raw.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer))
    ok = ok and raw.min() >= 0 and raw.max() <= 255 and labels.min() >= 0 and labels.max() <= 9
    if not ok:
        raise ConfigError(f"task.root: {path} is malformed: data {raw.shape} {raw.dtype}, labels {labels.shape} "
                          f"{labels.dtype} (expected N×3072 integers in 0..255 and N labels in 0..9, N > 0)")
    return raw.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(root: str | os.PathLike, download: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{'train': (images N×3×32×32 uint8, labels), 'test': (…)} from ROOT/cifar-10-batches-py."""
    root = Path(os.path.expanduser(str(root)))
    folder = root / FOLDER
    if download and not (folder / "test_batch").exists():
        import torchvision

        try:
            torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        except Exception as err:     # no network, a proxy error, a bad checksum …
            raise ConfigError(f"task.download=true: could not download CIFAR-10 into {root}: {err}") from None
    missing = [name for name in (*TRAIN_FILES, "test_batch") if not (folder / name).is_file()]
    if missing:
        raise DataMissing(
            f"task.root={str(root)!r}: no CIFAR-10 at {folder} (missing {', '.join(missing)}). Put the Python version "
            "of CIFAR-10 (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, extracted) there, "
            "or set task.download=true on a machine with a network.")
    train = [_read_batch(folder / name) for name in TRAIN_FILES]
    return {"train": (np.concatenate([d for d, _ in train]), np.concatenate([l for _, l in train])),
            "test": _read_batch(folder / "test_batch")}


# -- ResNet-20 -------------------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x
        if self.stride != 1 or self.pad:   # option A: subsample and zero-pad the channels
            shortcut = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + shortcut)


class ResNetCIFAR(nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ConfigError(f"task.depth={depth} is not allowed; CIFAR ResNets have depth 6n + 2 (20, 32, 44, 56, …)")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        layers, cin = [], width
        for stage, cout in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (stage > 0 and i == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        x = self.layers(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# -- the task --------------------------------------------------------------------------------------------------------

def augment(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random crop with `pad`-pixel zero padding and horizontal flip, for a whole batch at once (on its device)."""
    b, c, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(h, device=images.device)          # B × H
    cols = offsets[:, 1, None] + torch.arange(w, device=images.device)          # B × W
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class CIFAR10Task(Task):
    name = "cifar10"

    def __init__(self, root: str = "~/data/cifar10", download: bool = False, batch_size: int = 128,
                 depth: int = 20, augment: bool = True, seed: int = 0, eval_batch_size: int = 1000,
                 max_train: int | None = None):
        self.root, self.download, self.augment = root, bool(download), bool(augment)
        self.batch_size = check_positive_int("task.batch_size", batch_size)
        self.eval_batch_size = check_positive_int("task.eval_batch_size", eval_batch_size)
        self.depth = check_positive_int("task.depth", depth, 8)
        if (depth - 2) % 6:
            raise ConfigError(f"task.depth={depth} is not allowed; CIFAR ResNets have depth 6n + 2 (20, 32, 44, …)")
        self.seed = check_positive_int("task.seed", seed, 0)
        self.max_train = None if max_train is None else check_positive_int("task.max_train", max_train)
        if not self.download:   # cheap check now, so a missing dataset stops before the run starts
            folder = Path(os.path.expanduser(str(root))) / FOLDER
            if not (folder / "test_batch").is_file():
                load_cifar10(root)          # raises DataMissing with the full message
        self.device = None

    def setup(self, device: torch.device) -> None:
        if self.device == device:
            return
        data = load_cifar10(self.root, self.download)
        x, y = data["train"]
        if self.max_train:
            x, y = x[: self.max_train], y[: self.max_train]
        self.train_x, self.train_y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        self.test_x, self.test_y = (torch.from_numpy(a).to(device) for a in data["test"])
        self.mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(STD, device=device).view(1, 3, 1, 1) * 255
        self.n = len(self.train_y)
        self.device = device

    def _normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std

    def model(self) -> nn.Module:
        return ResNetCIFAR(self.depth)

    def _permutation(self, epoch: int) -> np.ndarray:
        """The order of epoch `epoch`, from (seed, epoch); the last two are kept (a batch spans at most two)."""
        cache = self.__dict__.setdefault("_perms", {})
        if epoch not in cache:
            if len(cache) >= 2:
                cache.pop(min(cache))
            cache[epoch] = np.random.default_rng((self.seed, epoch)).permutation(self.n)
        return cache[epoch]

    def _indices(self, step: int) -> torch.Tensor:
        positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        for epoch in np.unique(positions // self.n):
            perm = self._permutation(int(epoch))
            mask = positions // self.n == epoch
            out[mask] = perm[positions[mask] % self.n]
        return torch.from_numpy(out).to(self.device)

    def batch(self, step: int):
        idx = self._indices(step)
        images = self.train_x[idx]
        if self.augment:
            g = torch.Generator().manual_seed((self.seed << 32) + step)
            offsets = torch.randint(0, 9, (self.batch_size, 2), generator=g).to(self.device)
            flips = (torch.rand(self.batch_size, generator=g) < 0.5).to(self.device)
            images = augment(images, offsets, flips)
        return self._normalise(images), self.train_y[idx]

    def loss(self, model, batch):
        x, y = batch
        return F.cross_entropy(model(x), y), 0.0

    @torch.no_grad()
    def eval_cost(self) -> float:
        """A forward pass over the test set, against a step on `batch_size` images (set up first: the test set's size)."""
        return len(self.test_y) / self.batch_size / 3

    def evaluate(self, model) -> dict[str, float]:
        total_loss, correct = 0.0, 0
        for i in range(0, len(self.test_y), self.eval_batch_size):
            x = self._normalise(self.test_x[i:i + self.eval_batch_size])
            y = self.test_y[i:i + self.eval_batch_size]
            logits = model(x).float()
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            correct += int((logits.argmax(1) == y).sum())
        n = len(self.test_y)
        return {"eval/loss": total_loss / n, "eval/acc": correct / n}

    def summary(self) -> dict[str, Any]:
        return {"train_images": self.n, "test_images": int(len(self.test_y)), "depth": self.depth}
