"""The teacher of black-box distillation: loaded from the hub (or a local directory), or trained by sfbench.

Offline default: a small GPT trained on the task's own training split on first use and cached under
`CACHE/teachers/<key>/` (transformers' `save_pretrained` layout), where the key hashes the teacher's configuration
and the token file it was trained on; later runs, and the other runs of a sweep, load it. A file lock makes
concurrent jobs of a sweep wait for one training instead of all training it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from ..files import locked, temp_name
from .base import ConfigError
from .tokenizer import quiet_transformers
from .gpt_model import GPT2, gpt2, logits_of, next_token_ce

TEACHER_FORMAT = 2


def load_hub_teacher(name_or_path: str, device: torch.device) -> torch.nn.Module:
    """`AutoModelForCausalLM.from_pretrained(name_or_path)`, frozen, in eval mode."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        where = "directory" if Path(name_or_path).exists() else "hub name (needs network or a local copy)"
        raise ConfigError(f"task.teacher.name_or_path={name_or_path!r}: could not load a causal LM from this "
                          f"{where}: {str(err).splitlines()[0]}") from None
    return freeze(model.to(device))


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def teacher_key(config: dict[str, Any], tokens_id: str) -> str:
    blob = json.dumps({"format": TEACHER_FORMAT, "config": config, "tokens": tokens_id}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def trained_teacher(config: dict[str, Any], data, vocab_size: int, block_size: int, cache_dir: Path,
                    device: torch.device, seed: int, val_frac: float) -> tuple[torch.nn.Module, dict]:
    """The cached teacher for (config, token data), training it first if there is none yet."""
    quiet_transformers()
    # the split matters: a teacher trained on a larger training split has seen part of a smaller one's validation
    key = teacher_key(dict(config, vocab_size=vocab_size, block_size=block_size, seed=seed, val_frac=val_frac),
                      Path(data.path).name)
    target = Path(cache_dir) / "teachers" / key
    with locked(target.with_suffix(".lock")):
        for stale in target.parent.glob(f"{temp_name(target)}*"):   # a save that was killed (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        damaged = _damage(target) if target.exists() else None
        if damaged:
            print(f"sfbench: the teacher cached at {target} is damaged ({damaged}); training it again",
                  file=sys.stderr)
        if damaged or not target.exists():
            _train(config, data, vocab_size, block_size, target, seed, device)
        else:
            print(f"sfbench: reusing the teacher cached at {target}", file=sys.stderr)
        model = GPT2.from_pretrained(target)
        info = json.loads((target / INFO).read_text())
    info["path"] = str(target)
    return freeze(model.to(device)), info


INFO = "info.json"


def _digests(folder: Path) -> dict[str, str]:
    """sha256 of every file of a saved teacher but info.json (which holds these)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != INFO}


def _damage(target: Path) -> str | None:
    """What is wrong with a cached teacher (None: whole): info.json unreadable, or a file missing, added or changed
    since it was saved — a copy cut short, a disk error."""
    try:
        info = json.loads((target / INFO).read_text())
        kept = info["files"]
        found = _digests(target)
    except KeyError:
        return f"{INFO} holds no digests of its files (saved by an earlier sfbench)"
    except (OSError, ValueError, TypeError) as err:
        return f"{INFO}: {type(err).__name__}"
    changed = sorted(set(kept) ^ set(found) | {n for n in kept if found.get(n) != kept[n]})
    return f"{', '.join(changed)} not as saved" if changed else None


def _save(model, info: dict, target: Path) -> None:
    """Save in transformers' layout under a temporary name only sfbench makes, fsync every file with info.json
    (the files' digests) last, then put it in place with one rename; a crash at any point leaves either no teacher
    or the old one, never a cut-short one that looks whole."""
    tmp = target.with_name(f"{temp_name(target)}{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    (tmp / INFO).write_text(json.dumps(dict(info, files=_digests(tmp)), indent=2))
    for path in [*tmp.iterdir(), tmp]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if target.exists():                 # a damaged teacher of sfbench's own cache (checked by _damage first)
        shutil.rmtree(target)
    os.replace(tmp, target)
    fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _train(config, data, vocab_size, block_size, target: Path, seed, device) -> None:
    from tqdm import tqdm

    from ..terminal import tqdm_width_options
    from .windows import eval_windows, sample_windows

    torch.manual_seed(seed)
    model = gpt2(vocab_size, block_size, config["n_layer"], config["n_embd"], config["n_head"],
                 key="task.teacher").to(device)
    steps, lr, batch_size = config["steps"], config["lr"], config["batch_size"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, betas=(0.9, 0.99))
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: min(1.0, (t + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps))))
    print(f"sfbench: training the distillation teacher ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
          f"parameters, {steps} steps); it is cached at {target} for later runs", file=sys.stderr)
    start = time.time()
    bar = tqdm(range(steps), desc="teacher", disable=None, file=sys.stderr, **tqdm_width_options())
    last_print = start
    for step in bar:
        x, y = (t.to(device) for t in sample_windows(data.train, batch_size, block_size, seed + 7919, step))
        loss = next_token_ce(logits_of(model, x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if bar.disable and step + 1 == min(10, steps):        # the time it will take, once it can be measured
            per_step = (time.time() - start) / (step + 1)
            print(f"sfbench: teacher: about {per_step * steps:.0f} s for {steps} steps ({per_step * 1e3:.0f} ms a "
                  f"step here)", file=sys.stderr)
        if bar.disable and time.time() - last_print > 30:
            print(f"sfbench: teacher step {step + 1}/{steps} loss {loss.item():.3f}", file=sys.stderr)
            last_print = time.time()
        elif not bar.disable and step % 10 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    with torch.no_grad():
        losses = [next_token_ce(logits_of(model, x.to(device)), y.to(device)).item()
                  for x, y in eval_windows(data.val, batch_size, block_size, 8)]
    info = dict(key=target.name, config=dict(config), vocab_size=vocab_size, block_size=block_size, seed=seed,
                val_loss=sum(losses) / len(losses), train_seconds=time.time() - start, tokens=Path(data.path).name)
    _save(model, info, target)
    print(f"sfbench: teacher trained in {info['train_seconds']:.0f} s, val loss {info['val_loss']:.3f}",
          file=sys.stderr)
