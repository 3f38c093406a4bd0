#!/usr/bin/env python
"""CIFAR-10 training throughput: sfbench's on-device data pipeline against a torchvision DataLoader pipeline.

Same model (ResNet-20), batch size, optimizer (SGD momentum) and augmentation (random crop with 4-pixel padding,
horizontal flip, normalisation) on both sides; only where the data comes from differs:
- on-device: `sfbench.tasks.cifar.CIFAR10Task.batch` — the whole dataset as uint8 tensors on the device, batches and
  augmentation as tensor ops;
- torchvision: `torchvision.datasets.CIFAR10` + `transforms` (PIL per image) + `DataLoader(num_workers=W)`.
Rounds alternate the two in one process; reported: training steps/s (median) and the ratio.

    python scripts/bench_data.py                      # writes a CIFAR-format set of random images to a temp dir
    python scripts/bench_data.py --root ~/data/cifar10 --device cuda
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sfbench.tasks.cifar import MEAN, STD, CIFAR10Task  # noqa: E402


def synthetic_cifar(root: Path, n_per_batch: int = 10000) -> Path:
    """The standard cifar-10-batches-py layout, random images (for machines without the dataset)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n_per_batch).tolist()}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["x"] * 10}))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, help="a directory holding cifar-10-batches-py (default: synthetic)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import torchvision
    from torchvision import transforms

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    tmp = None
    if args.root is None:
        tmp = tempfile.TemporaryDirectory()
        args.root = synthetic_cifar(Path(tmp.name))

    task = CIFAR10Task(root=str(args.root), batch_size=args.batch_size)
    task.setup(device)
    cifar = torchvision.datasets.CIFAR10
    if tmp is not None:
        class cifar(torchvision.datasets.CIFAR10):        # noqa: N801
            """torchvision's reader as is, minus its MD5 check, which random synthetic files can't pass."""

            def _check_integrity(self) -> bool:
                return True

            def _load_meta(self) -> None:
                self.classes = [str(i) for i in range(10)]
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    dataset = cifar(str(args.root), train=True, download=False, transform=transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
        transforms.Normalize(MEAN, STD)]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, shuffle=True, drop_last=True,
                                         num_workers=args.workers, persistent_workers=args.workers > 0,
                                         pin_memory=device.type == "cuda")

    def train(batches) -> float:
        torch.manual_seed(0)
        model = task.model().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        loss_fn = torch.nn.CrossEntropyLoss()
        it = iter(batches)
        for _ in range(2):                            # warm-up (workers start, allocator)
            x, y = next(it)
            loss_fn(model(x.to(device)), y.to(device)).backward()
        sync()
        start = time.perf_counter()
        for _ in range(args.steps):
            x, y = next(it)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
        sync()
        return args.steps / (time.perf_counter() - start)

    def on_device():
        step = 0
        while True:
            yield task.batch(step)
            step += 1

    def from_loader():
        while True:
            yield from loader

    rates = {"on-device": [], "torchvision DataLoader": []}
    for _ in range(args.rounds):
        rates["on-device"].append(train(on_device()))
        rates["torchvision DataLoader"].append(train(from_loader()))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"# bench_data: ResNet-20, batch {args.batch_size}, {args.steps} steps × {args.rounds} rounds, {device}, "
          f"{torch.get_num_threads()} threads, DataLoader workers {args.workers}, torch {torch.__version__}")
    print("| pipeline | steps/s (median) | rounds |")
    print("|---|---:|---|")
    for k, v in rates.items():
        print(f"| {k} | {med[k]:.2f} | {', '.join(f'{r:.2f}' for r in v)} |")
    print(f"on-device / DataLoader = {med['on-device'] / med['torchvision DataLoader']:.2f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
