#!/usr/bin/env python
"""SF-Polyak [B1] on an interpolable least-squares problem (ℓ* = 0), across β and averaging weights.

Full-batch f(w) = ½ mean((A w − b)²) with b = A w♯ (so min f = 0), A 20×50 Gaussian / √50, cap γ_max = 1e3
("large"), SGD base. Prints f at y and at x after 200, 500 and 2000 steps. Outcome recorded in docs/results.md.
The averaging weights come from the scheduled cap (constant here), as the authors run SF-Polyak, so `lr` and
`lr_power` weights equal `uniform` on this problem; weighting by the step taken (`lr`) made it stall.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sfbench.optim import SFSGD  # noqa: E402


def main() -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(20, 50, generator=g, dtype=torch.float64) / 50 ** 0.5
    b = A @ torch.randn(50, generator=g, dtype=torch.float64)
    f = lambda w: 0.5 * ((A @ w - b) ** 2).mean()   # noqa: E731
    print("| β | weighting | f(x) @200 | f(x) @500 | f(x) @2000 | f(y) @2000 | zero steps |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for beta in (0.0, 0.5, 0.9):
        for weighting in ("uniform", "lr", "lr_power"):
            w = torch.nn.Parameter(torch.zeros(50, dtype=torch.float64))
            opt = SFSGD([w], lr=1e3, momentum=beta, lr_rule="polyak", weighting=weighting)
            at_x, zeros = {}, 0
            for t in range(1, 2001):
                loss = f(w)
                opt.zero_grad()
                loss.backward()
                opt.step(loss=loss)
                zeros += opt.param_groups[0]["last_lr"] == 0.0
                if t in (200, 500, 2000):
                    opt.eval()
                    at_x[t] = f(w).item()
                    opt.train()
            print(f"| {beta} | {weighting} | {at_x[200]:.1e} | {at_x[500]:.1e} | {at_x[2000]:.1e} | "
                  f"{f(w).item():.1e} | {zeros} |")


if __name__ == "__main__":
    main()
