#!/usr/bin/env python
"""Where one optimizer step's time goes on a GPU: kernels launched, GPU time in kernels, and host (CPU) time per step.

    python scripts/profile_optim_step.py --device cuda --layers 12 --width 1024

Complements scripts/bench_optim.py (which times whole steps side by side): a step whose wall time is far above its
kernel time is bound by the host (launches, guards, Python), not by memory bandwidth.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.bench_optim import gpt_like_shapes  # noqa: E402
from sfbench.optim import SFSGD, SFAdamW  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    shapes = gpt_like_shapes(args.layers, args.width)
    candidates = {
        "AdamW (fused)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True),
        "AdamW (foreach)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True),
        "SFAdamW (fused)": lambda ps: SFAdamW(ps, lr=1e-3, fused=True),
        "SFAdamW (foreach)": lambda ps: SFAdamW(ps, lr=1e-3, fused=False, foreach=True),
        "SFAdamW-Polyak (fused)": lambda ps: SFAdamW(ps, lr=1e-3, lr_rule="polyak", fused=True),
        "SFAdamW-Polyak (foreach)": lambda ps: SFAdamW(ps, lr=1e-3, lr_rule="polyak", fused=False, foreach=True),
        "SFSGD (fused)": lambda ps: SFSGD(ps, lr=1e-2, fused=True),
        "SFSGD (foreach)": lambda ps: SFSGD(ps, lr=1e-2, fused=False, foreach=True),
    }
    from torch.profiler import ProfilerActivity, profile

    print(f"# {sum(torch.Size(s).numel() for s in shapes) / 1e6:.2f}M parameters in {len(shapes)} tensors on "
          f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
    print("| optimizer | wall ms/step | kernel ms/step | kernels/step | host-only ms/step |")
    print("|---|---:|---:|---:|---:|")
    for name, make in candidates.items():
        params = [torch.nn.Parameter(torch.randn(s, device=device) * 0.02) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p) * 1e-3
        opt = make(params)
        step = functools.partial(opt.step, loss=1.0) if "Polyak" in name else opt.step
        for _ in range(3):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        sync()
        wall = (time.perf_counter() - t0) / args.steps
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                step()
            sync()
        kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
        kernel_ms = sum(e.device_time for e in kernels) / 1e3 / args.steps
        # host time left after the kernels: launches, guards, Python
        print(f"| {name} | {wall * 1e3:.2f} | {kernel_ms:.2f} | {len(kernels) / args.steps:.0f} | "
              f"{max(0.0, wall * 1e3 - kernel_ms):.2f} |")
        del opt, params
        torch.cuda.empty_cache() if device.type == "cuda" else None


if __name__ == "__main__":
    main()
