#!/usr/bin/env python
"""The compiled SF update kernel alone on a GPU, with and without inductor's combo kernels (horizontal fusion across
tensors), against fused AdamW on the same parameters: median of 30 synchronised calls each, in one process.

    python scripts/probe_cuda_kernel.py            # needs CUDA; 72 GPT-like tensors, 75.6M fp32 parameters
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.bench_optim import gpt_like_shapes
from sfbench.optim import kernels
import torch._inductor.config as icfg
dev = torch.device('cuda')
shapes = gpt_like_shapes(6, 1024)
torch.manual_seed(0)
base = [torch.randn(s, device=dev) for s in shapes]
gs = [torch.randn(s, device=dev) * 1e-3 for s in shapes]
print(len(shapes), 'tensors', sum(t.numel() for t in base) / 1e6, 'M', flush=True)
sc = (0.1, -1e-3, -1e-4, 0.01, 0.999, 0.5, 1e-8)
def run(combo):
    ys = [t.clone() for t in base]; us = [torch.zeros_like(t) for t in base]; vs = [torch.zeros_like(t) for t in base]
    with icfg.patch(combo_kernels=combo):
        f = torch.compile(kernels.sf_update, fullgraph=True, dynamic=False)
        t0 = time.perf_counter(); f(ys, gs, us, vs, *[torch.tensor(s, dtype=torch.float64) for s in sc]); torch.cuda.synchronize(); c = time.perf_counter() - t0
        for _ in range(3): f(ys, gs, us, vs, *[torch.tensor(s, dtype=torch.float64) for s in sc])
        torch.cuda.synchronize()
        times = []
        for _ in range(30):
            torch.cuda.synchronize(); t = time.perf_counter()
            f(ys, gs, us, vs, *[torch.tensor(s, dtype=torch.float64) for s in sc]); torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    times.sort()
    return ys, times[len(times)//2] * 1e3, c
torch._dynamo.reset()
ya, ta, ca = run(False)
torch._dynamo.reset()
yb, tb, cb = run(True)
err = max((a - b).abs().max().item() for a, b in zip(ya, yb))
ps = [torch.nn.Parameter(t.clone()) for t in base]
for p, g in zip(ps, gs): p.grad = g.clone()
opt = torch.optim.AdamW(ps, lr=1e-3, fused=True)
for _ in range(3): opt.step()
ts = []
for _ in range(30):
    torch.cuda.synchronize(); t = time.perf_counter(); opt.step(); torch.cuda.synchronize(); ts.append(time.perf_counter() - t)
ts.sort()
print(f'sf_update compiled: {ta:.3f} ms (compile {ca:.0f}s); combo_kernels: {tb:.3f} ms (compile {cb:.0f}s); max diff {err:.2e}; AdamW fused {ts[15]*1e3:.3f} ms')
