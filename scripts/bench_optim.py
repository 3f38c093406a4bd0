#!/usr/bin/env python
"""Step time and state memory of sfbench's SF optimizers against PyTorch's, the reference package's and the other
schedule-free implementations (heavyball, pytorch_optimizer); ScheduleFree(base) against its base.

Everything runs in one process, interleaved round by round in a shuffled order, on copies of the same parameters
with the same gradients, so the ratios are side by side on the same machine state. The parameter set mimics a small
GPT (default: 6 blocks × 12 tensors = 72 fp32 tensors, ~8.7M elements). Reported per optimizer: median step time,
its ratio to the baseline it replaces (the median over rounds of the two times of one round), and the bytes of
optimizer state.

    python scripts/bench_optim.py                     # CPU, the 72-tensor set
    python scripts/bench_optim.py --device cuda       # on a GPU
    python scripts/bench_optim.py --json out.json     # also write the numbers
    python scripts/bench_optim.py --muon --only Muon  # Muon+AdamW and ScheduleFree around it

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
from sfbench.optim import SFSGD, MuonAdamW, ScheduleFree, SFAdamW  # noqa: E402


def gpt_like_shapes(layers: int, width: int) -> list[tuple[int, ...]]:
    d = width
    block = [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    return [s for _ in range(layers) for s in block]


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of tensors in the optimizer's state (a wrapper's own plus its base's)."""
    own = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    return own + (state_bytes(opt.base) if isinstance(getattr(opt, "base", None), torch.optim.Optimizer) else 0)


def reference_wrapper(base: torch.optim.Optimizer):
    """`schedulefree.ScheduleFreeWrapper` around `base`, its state made by hand: the wrapper keeps z in the base's own
    state, so torch's Adam never runs its first-step initialisation (the reference's own tests do the same)."""
    import schedulefree
    if isinstance(base, torch.optim.Adam | torch.optim.AdamW):
        for group in base.param_groups:
            for p in group["params"]:
                base.state[p].update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p),
                                     exp_avg_sq=torch.zeros_like(p))
    return schedulefree.ScheduleFreeWrapper(base)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=348)
    ap.add_argument("--rounds", type=int, default=30, help="timed steps per optimizer")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer after the first")
    ap.add_argument("--no-reference", action="store_true", help="skip the schedulefree package")
    ap.add_argument("--eager", action="store_true", help="also time our eager paths (foreach and per-tensor)")
    ap.add_argument("--no-wrapper", action="store_true", help="skip ScheduleFree(base) against its base")
    ap.add_argument("--muon", action="store_true", help="also Muon+AdamW and ScheduleFree around it (slow on CPU)")
    ap.add_argument("--only", help="comma-separated substrings: time only the optimizers whose names contain one")
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    shapes = gpt_like_shapes(args.layers, args.width)
    init = [torch.randn(s, device=device) * 0.02 for s in shapes]
    grads = [torch.randn(s, device=device) * 1e-3 for s in shapes]
    numel = sum(t.numel() for t in init)

    candidates = {     # name: (factory, the baseline its ratio is to)
        "AdamW (fused)": (lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True), None),
        "SFAdamW (fused)": (lambda ps: SFAdamW(ps, lr=1e-3, fused=True), "AdamW (fused)"),
        "SFAdamW-Polyak (fused)": (lambda ps: SFAdamW(ps, lr=1e-3, lr_rule="polyak", fused=True), "AdamW (fused)"),
        "SGD-momentum (foreach)": (lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, foreach=True), None),
        "SFSGD (fused)": (lambda ps: SFSGD(ps, lr=1e-2, fused=True), "SGD-momentum (foreach)"),
    }
    if args.eager:
        candidates.update({
            "SFAdamW (foreach)": (lambda ps: SFAdamW(ps, lr=1e-3, fused=False, foreach=True), "AdamW (fused)"),
            "SFAdamW (per-tensor)": (lambda ps: SFAdamW(ps, lr=1e-3, fused=False, foreach=False), "AdamW (fused)"),
            "SFAdamW-Polyak (foreach)": (lambda ps: SFAdamW(ps, lr=1e-3, lr_rule="polyak", fused=False),
                                         "AdamW (fused)"),
            "SFSGD (foreach)": (lambda ps: SFSGD(ps, lr=1e-2, fused=False, foreach=True), "SGD-momentum (foreach)"),
        })
    if not args.no_reference:      # the peers: the reference package and two other schedule-free AdamWs
        import heavyball
        import pytorch_optimizer
        import schedulefree
        candidates.update({
            "schedulefree AdamW": (lambda ps: schedulefree.AdamWScheduleFree(ps, lr=1e-3), "AdamW (fused)"),
            "schedulefree SGD": (lambda ps: schedulefree.SGDScheduleFree(ps, lr=1e-2), "SGD-momentum (foreach)"),
            "heavyball SFAdamW (compiled)": (lambda ps: heavyball.SFAdamW(ps, lr=1e-3, betas=(0.9, 0.999)),
                                             "AdamW (fused)"),
            "pytorch_optimizer ScheduleFreeAdamW": (
                lambda ps: pytorch_optimizer.ScheduleFreeAdamW(ps, lr=1e-3, foreach=True), "AdamW (fused)"),
        })
    if not args.no_wrapper:        # schedule-free around a base optimizer, against that base and the reference's
        sgd_m = lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, foreach=True)     # noqa: E731
        adamw = lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True)                   # noqa: E731
        candidates.update({
            "ScheduleFree(SGD-momentum)": (lambda ps: ScheduleFree(sgd_m(ps)), "SGD-momentum (foreach)"),
            "ScheduleFree(AdamW fused)": (lambda ps: ScheduleFree(adamw(ps)), "AdamW (fused)"),
        })
        if not args.no_reference:
            candidates.update({
                "schedulefree Wrapper(SGD-momentum)": (lambda ps: reference_wrapper(sgd_m(ps)),
                                                       "SGD-momentum (foreach)"),
                "schedulefree Wrapper(AdamW fused)": (lambda ps: reference_wrapper(adamw(ps)), "AdamW (fused)"),
            })
    if args.muon:                  # Newton–Schulz in bfloat16: slow on a CPU, hence optional
        candidates.update({
            "Muon+AdamW": (lambda ps: MuonAdamW(ps, lr=1e-3), None),
            "ScheduleFree(Muon+AdamW)": (lambda ps: ScheduleFree(MuonAdamW(ps, lr=1e-3)), "Muon+AdamW"),
        })
    if args.only:
        keep = set(args.only.split(","))
        candidates = {k: v for k, v in candidates.items() if any(word in k for word in keep)}
        for name, (_, base) in list(candidates.items()):     # a ratio needs its baseline in the same rounds
            if base and base not in candidates:
                raise SystemExit(f"--only keeps {name!r} but not its baseline {base!r}")

    runs = {}
    for name, (make, _) in candidates.items():
        params = [torch.nn.Parameter(t.clone()) for t in init]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = make(params)
        if hasattr(opt, "train") and callable(opt.train):
            opt.train()
        runs[name] = dict(opt=opt, params=params, times=[])

    def one_step(name: str) -> float:
        run = runs[name]
        # Some steps write into .grad (schedulefree's AdamW, SF-Polyak-Adam's P g) or drop it (heavyball): restore
        # it for all (untimed)
        for p, g in zip(run["params"], grads):
            if p.grad is None:
                p.grad = g.clone()
            else:
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

    def paired(a: str, b: str) -> float:
        """The median over rounds of a's time / b's time in that round: drift between rounds cancels."""
        return statistics.median(x / y for x, y in zip(runs[a]["times"], runs[b]["times"]))
    mem = {name: state_bytes(run["opt"]) for name, run in runs.items()}
    baseline = {name: base for name, (_, base) in candidates.items()}
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
        # the median over rounds of the paired ratio (both timed in the same round): drift between rounds cancels
        ratio = paired(name, base) if base else 1.0
        rows.append(dict(name=name, step_ms=med[name] * 1e3, baseline=base, ratio=ratio,
                         state_mib=mem[name] / 2 ** 20, first_step_s=compile_s[name]))
        print(f"| {name} | {med[name] * 1e3:.2f} | {ratio:.2f}× {base or ''} | {mem[name] / 2 ** 20:.1f} | "
              f"{compile_s[name]:.2f} |")
    derived = {}
    for peer in ("schedulefree AdamW", "heavyball SFAdamW (compiled)", "pytorch_optimizer ScheduleFreeAdamW"):
        if peer in med and "SFAdamW (fused)" in med:
            derived[f"{peer} / SFAdamW (fused)"] = paired(peer, "SFAdamW (fused)")
    if "schedulefree SGD" in med and "SFSGD (fused)" in med:
        derived["schedulefree SGD / SFSGD (fused)"] = paired("schedulefree SGD", "SFSGD (fused)")
    if "SFAdamW (fused)" in mem and "AdamW (fused)" in mem:
        derived["SFAdamW state / AdamW state"] = mem["SFAdamW (fused)"] / max(mem["AdamW (fused)"], 1)
    for key, value in derived.items():
        print(f"{key}: {value:.2f}")
    ratio = {row["name"]: row["ratio"] for row in rows}
    targets = [("SFAdamW (fused)", 1.05), ("SFSGD (fused)", 0.85), ("SFAdamW-Polyak (fused)", 2.0),
               ("ScheduleFree(SGD-momentum)", 2.0), ("ScheduleFree(AdamW fused)", 2.0), ("ScheduleFree(Muon+AdamW)", 2.0)]
    print("| target | measured | |\n|---|---:|---|")
    for name, limit in targets:
        if name in ratio:
            met = "met" if ratio[name] <= limit else "NOT met"
            print(f"| {name} ≤ {limit}× {baseline[name]} | {ratio[name]:.2f}× | {met} |")
    peers = [k for k in derived if k.endswith("/ SFAdamW (fused)") and "pytorch_optimizer" not in k]
    if peers:
        closest = min(derived[k] for k in peers)
        met = "met" if closest > 1 else "NOT met"
        print(f"| SFAdamW faster than schedulefree and heavyball | the closer takes {closest:.2f}× its time | {met} |")
    for base in ("SGD-momentum", "AdamW fused"):
        ours, theirs = f"ScheduleFree({base})", f"schedulefree Wrapper({base})"
        if ours in med and theirs in med:
            met = "met" if paired(ours, theirs) <= 1 else "NOT met"
            print(f"| {ours} no slower than {theirs} | {paired(ours, theirs):.2f}× its time | {met} |")
    if args.json:
        args.json.write_text(json.dumps(dict(info=info, rows=rows, derived=derived), indent=2))


if __name__ == "__main__":
    main()
