#!/usr/bin/env python
"""The GPT task's model against the script one would otherwise write: training steps per second, paired in one process.

Every contestant trains the same shape on the same batches with the same optimizer (`torch.optim.AdamW`, lr 6e-4,
betas (0.9, 0.95), weight decay 0.1, PyTorch's default implementation) in a bare PyTorch loop — batch → logits →
cross-entropy → backward → step:

- `sfbench`: the task's own model and loss (`task.model()`, `task.loss()`: sfbench/tasks/gpt_model.py, a GPT-2 in
  plain PyTorch with PyTorch's tanh GELU);
- `transformers`: transformers' `GPT2LMHeadModel` with the same weights (`gelu_pytorch_tanh`, SDPA attention); the
  largest difference of its logits from sfbench's is printed;
- `nanoGPT` (with `--nanogpt DIR`, a directory holding nanoGPT's `model.py`, e.g. copied from a checkout of
  github.com/karpathy/nanoGPT; not part of sfbench): `GPT(GPTConfig(...))` with bias, no dropout, trained as its
  `train.py` does, `logits, loss = model(x, y)`. It has its own initialisation and exact (erf) GELU, so only its
  speed is comparable, not its numbers.

Steps alternate in blocks: each round runs `--block` steps of every contestant (the order rotates every round), after
`--warmup` blocks each. Reported per contestant: median milliseconds per step over rounds, wall clock and CPU time of
the process (`time.process_time`, steadier than wall time on a shared machine), tokens/s; and each contestant's
steps/s relative to the reference (nanoGPT if given, else `transformers`) as the median of the per-round ratios.

    python scripts/bench_gpt.py --nanogpt /tmp/nanogpt                        # task=gpt's CPU default shape
    python scripts/bench_gpt.py --nanogpt /tmp/nanogpt --threads 1 --rounds 30
    python scripts/bench_gpt.py task=gpt2_small task.data.tokenizer=bytes --device cuda --precision bf16 --compile

Overrides (`task=…`, `task.model.n_layer=…`, `task.data.batch_size=…`) are Hydra overrides of sfbench's config; the
task's data is set up once (Shakespeare bytes by default), outside the timings.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from sfbench.cli.sweep import register_resolvers
    from sfbench.cli.validate import config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return compose("config", overrides=["task=gpt", "logger=none", *overrides])


def machine() -> str:
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"transformers {transformers.__version__}, Python {platform.python_version()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nanogpt", help="directory with nanoGPT's model.py (a checkout of karpathy/nanoGPT)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=5, help="steps per contestant per round")
    ap.add_argument("--warmup", type=int, default=2, help="blocks per contestant before timing")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: autocast")
    ap.add_argument("--compile", action="store_true", help="torch.compile every model")
    ap.add_argument("--only", default=None, help="comma-separated contestants (default: all)")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of sfbench's config, e.g. task=gpt2_small")
    args = ap.parse_args()

    import torch
    from hydra.utils import instantiate

    from sfbench.tasks.gpt_model import next_token_ce

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = compose(args.overrides)
    task = instantiate(cfg.task)
    if not hasattr(task, "model_cfg"):
        sys.exit("bench_gpt: error: the task must be a GPT language model task (task=gpt or task=gpt2_small)")
    task.setup(device)
    m = task.model_cfg
    B, T, V = task.batch_size, task.block_size, task.data.vocab_size
    torch.manual_seed(0)
    ours = task.model().to(device)
    batches = [task.batch(step) for step in range(8)]
    contestants = {"sfbench": (ours, lambda batch: task.loss(ours, batch)[0])}

    from transformers import GPT2Config, GPT2LMHeadModel

    c = ours.config
    theirs = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_positions=T, n_embd=c.n_embd, n_layer=c.n_layer,
                                        n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                        tie_word_embeddings=True, activation_function="gelu_pytorch_tanh",
                                        use_cache=False, bos_token_id=None, eos_token_id=None))
    theirs.load_state_dict(ours.hf_state_dict())
    theirs.to(device)
    with torch.no_grad():
        x0 = batches[0][0]
        gap = (theirs.eval()(input_ids=x0).logits - ours.eval()(x0)).abs().max().item()
    contestants["transformers"] = (theirs, lambda batch: next_token_ce(theirs(input_ids=batch[0]).logits, batch[1]))

    nano_info = None
    if args.nanogpt:
        model_py = Path(args.nanogpt).expanduser() / "model.py"
        if not model_py.is_file():
            sys.exit(f"bench_gpt: error: --nanogpt {args.nanogpt}: no model.py there; give the directory of a "
                     "nanoGPT checkout (git clone https://github.com/karpathy/nanoGPT)")
        sys.path.insert(0, str(model_py.parent))
        import model as nanogpt     # nanoGPT's model.py, from the directory given

        with contextlib.redirect_stdout(open(os.devnull, "w")):       # it prints its parameter count
            nano = nanogpt.GPT(nanogpt.GPTConfig(block_size=T, vocab_size=V, n_layer=m["n_layer"], n_head=m["n_head"],
                                                 n_embd=m["n_embd"], dropout=0.0, bias=True)).to(device)
        contestants["nanoGPT"] = (nano, lambda batch: nano(batch[0], batch[1])[1])
        nano_info = hashlib.sha256(model_py.read_bytes()).hexdigest()[:12]
    if args.only:
        keep = args.only.split(",")
        contestants = {k: v for k, v in contestants.items() if k in keep}

    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16"
                else contextlib.nullcontext())
    loops = {}
    for name, (model, loss_fn) in contestants.items():
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
        if args.compile:
            compiled = torch.compile(model)
            loss_fn = _swap_model(loss_fn, name, compiled, task)
        loops[name] = (model, opt, loss_fn)

    def block(name: str, start: int) -> tuple[float, float]:
        model, opt, loss_fn = loops[name]
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(args.block):
            with autocast:
                loss = loss_fn(batches[(start + i) % len(batches)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync()
        return (time.perf_counter() - t0) / args.block, (time.process_time() - c0) / args.block

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    names = list(loops)
    for w in range(args.warmup):
        for name in names:
            block(name, w * args.block)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            w, c = block(name, r * args.block)
            wall[name].append(w)
            cpu[name].append(c)

    ref = "nanoGPT" if "nanoGPT" in names else ("transformers" if "transformers" in names else names[0])
    print(f"# bench_gpt: {cfg.task._target_.rsplit('.', 1)[-1]} model {m['n_layer']} layers × {m['n_embd']} wide, "
          f"{m['n_head']} heads, block {T}, vocab {V}, batch {B}, {args.precision}"
          f"{', torch.compile' if args.compile else ''}, {device}; AdamW; {args.rounds} rounds × {args.block} steps "
          f"per contestant, alternating (+{args.warmup} warm-up blocks)")
    print(f"# machine: {machine()}")
    if nano_info:
        print(f"# nanoGPT model.py sha256 {nano_info} from {Path(args.nanogpt).expanduser()}")
    print(f"# transformers' GPT-2 vs sfbench's logits, same weights: max |Δ| = {gap:.2e}")
    print(f"| model | ms/step wall (median) | ms/step CPU (median) | tokens/s (wall) | steps/s vs {ref} (wall) "
          f"| vs {ref} (CPU time) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        rw = statistics.median(a / b for a, b in zip(wall[ref], wall[name]))
        rc = statistics.median(a / b for a, b in zip(cpu[ref], cpu[name]))
        mw = statistics.median(wall[name])
        print(f"| {name} | {1e3 * mw:.2f} | {1e3 * statistics.median(cpu[name]):.2f} | {B * T / mw:,.0f} | "
              f"{rw:.3f}× | {rc:.3f}× |")
    if "sfbench" in names and ref != "sfbench":
        spread = sorted(a / b for a, b in zip(wall[ref], wall["sfbench"]))
        q = max(0, math.floor(0.25 * (len(spread) - 1)))
        print(f"sfbench / {ref} steps/s, per-round wall ratios: median {statistics.median(spread):.3f}, "
              f"quartiles {spread[q]:.3f}–{spread[-1 - q]:.3f}")


def _swap_model(loss_fn, name, compiled, task):
    """The same loss through the compiled module."""
    from sfbench.tasks.gpt_model import next_token_ce

    if name == "sfbench":
        return lambda batch: task.loss(compiled, batch)[0]
    if name == "transformers":
        return lambda batch: next_token_ce(compiled(input_ids=batch[0]).logits, batch[1])
    return lambda batch: compiled(batch[0], batch[1])[1]


if __name__ == "__main__":
    main()
