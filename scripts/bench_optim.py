#!/usr/bin/env python
"""Step time and state memory of sfbench's SF optimizers against PyTorch's and the reference package's.

Everything runs in one process, interleaved round by round in a shuffled order, on copies of the same parameters
with the same gradients, so the ratios are side by side on the same machine state. The parameter set mimics a small
GPT (default: 6 blocks × 12 tensors = 72 fp32 tensors, ~8.7M elements). Reported per optimizer: median step time,
its ratio to the baseline it replaces, and the bytes of optimizer state.

    python scripts/bench_optim.py                     # CPU, defaults of issue 2
    python scripts/bench_optim.py --device cuda       # on a GPU
    python scripts/bench_optim.py --json out.json     # also write the numbers

Compile time (first step of each fused optimizer, cold or from the on-disk cache) is reported separately.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sfbench.optim import SFSGD, SFAdamW  # noqa: E402


def gpt_like_shapes(layers: int, width: int) -> list[tuple[int, ...]]:
    d = width
    block = [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    return [s for _ in range(layers) for s in block]


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=348)
    ap.add_argument("--rounds", type=int, default=30, help="timed steps per optimizer")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer after the first")
    ap.add_argument("--no-reference", action="store_true", help="skip the schedulefree package")
    ap.add_argument("--eager", action="store_true", help="also time our eager paths (foreach and per-tensor)")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    shapes = gpt_like_shapes(args.layers, args.width)
    init = [torch.randn(s, device=device) * 0.02 for s in shapes]
    grads = [torch.randn(s, device=device) * 1e-3 for s in shapes]
    numel = sum(t.numel() for t in init)

    candidates = {
        "AdamW (fused)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
        "SFAdamW (fused)": lambda ps: SFAdamW(ps, lr=1e-3, fused=True),
        "SFAdamW-Polyak (fused)": lambda ps: SFAdamW(ps, lr=1e-3, lr_rule="polyak", fused=True),
        "SGD-momentum (foreach)": lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, foreach=True),
        "SFSGD (fused)": lambda ps: SFSGD(ps, lr=1e-2, fused=True),
    }
    if args.eager:
        candidates.update({
            "SFAdamW (foreach)": lambda ps: SFAdamW(ps, lr=1e-3, fused=False, foreach=True),
            "SFAdamW (per-tensor)": lambda ps: SFAdamW(ps, lr=1e-3, fused=False, foreach=False),
            "SFAdamW-Polyak (foreach)": lambda ps: SFAdamW(ps, lr=1e-3, lr_rule="polyak", fused=False),
            "SFSGD (foreach)": lambda ps: SFSGD(ps, lr=1e-2, fused=False, foreach=True),
        })
    if not args.no_reference:
        import schedulefree
        candidates["schedulefree AdamW"] = lambda ps: schedulefree.AdamWScheduleFree(ps, lr=1e-3)
        candidates["schedulefree SGD"] = lambda ps: schedulefree.SGDScheduleFree(ps, lr=1e-2)

    runs = {}
    for name, make in candidates.items():
        params = [torch.nn.Parameter(t.clone()) for t in init]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = make(params)
        if hasattr(opt, "train") and callable(opt.train):
            opt.train()
        runs[name] = dict(opt=opt, params=params, times=[])

    def one_step(name: str) -> float:
        run = runs[name]
        if name.startswith("schedulefree"):   # it normalises .grad in place: restore it (untimed)
            for p, g in zip(run["params"], grads):
                p.grad.copy_(g)
        sync()
        start = time.perf_counter()
        if "Polyak" in name:
            run["opt"].step(loss=1.0)
        else:
            run["opt"].step()
        sync()
        return time.perf_counter() - start

    compile_s = {}
    for name in runs:   # first step: state allocation and, for fused ones, compilation
        compile_s[name] = one_step(name)
        for _ in range(args.warmup):
            one_step(name)
    order = list(runs)
    for _ in range(args.rounds):
        random.shuffle(order)
        for name in order:
            runs[name]["times"].append(one_step(name))

    med = {name: statistics.median(run["times"]) for name, run in runs.items()}
    mem = {name: state_bytes(run["opt"]) for name, run in runs.items()}
    baseline = {
        "AdamW (fused)": None, "SGD-momentum (foreach)": None,
        "SFAdamW (fused)": "AdamW (fused)", "SFAdamW-Polyak (fused)": "AdamW (fused)", "SFSGD (fused)":
        "SGD-momentum (foreach)", "SFAdamW (foreach)": "AdamW (fused)", "SFAdamW (per-tensor)": "AdamW (fused)",
        "SFAdamW-Polyak (foreach)": "AdamW (fused)", "SFSGD (foreach)": "SGD-momentum (foreach)",
        "schedulefree AdamW": "AdamW (fused)", "schedulefree SGD": "SGD-momentum (foreach)",
    }
    info = dict(
        date=datetime.date.today().isoformat(), machine=platform.machine(), processor=platform.processor(),
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        threads=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version(),
        tensors=len(shapes), numel=numel, rounds=args.rounds,
    )
    print(f"# bench_optim: {info['numel'] / 1e6:.2f}M fp32 parameters in {info['tensors']} tensors on "
          f"{info['device']} ({info['threads']} threads), torch {info['torch']}, {info['date']}")
    print("| optimizer | median step (ms) | vs baseline | state (MiB) | first step (s) |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for name in runs:
        base = baseline.get(name)
        ratio = med[name] / med[base] if base else 1.0
        rows.append(dict(name=name, step_ms=med[name] * 1e3, baseline=base, ratio=ratio,
                         state_mib=mem[name] / 2 ** 20, first_step_s=compile_s[name]))
        print(f"| {name} | {med[name] * 1e3:.2f} | {ratio:.2f}× {base or ''} | {mem[name] / 2 ** 20:.1f} | "
              f"{compile_s[name]:.2f} |")
    derived = {}
    if "schedulefree AdamW" in med:
        derived["schedulefree AdamW / SFAdamW (fused)"] = med["schedulefree AdamW"] / med["SFAdamW (fused)"]
    if "schedulefree SGD" in med:
        derived["schedulefree SGD / SFSGD (fused)"] = med["schedulefree SGD"] / med["SFSGD (fused)"]
    derived["SFAdamW state / AdamW state"] = mem["SFAdamW (fused)"] / max(mem["AdamW (fused)"], 1)
    for key, value in derived.items():
        print(f"{key}: {value:.2f}")
    if args.json:
        args.json.write_text(json.dumps(dict(info=info, rows=rows, derived=derived), indent=2))


if __name__ == "__main__":
    main()
