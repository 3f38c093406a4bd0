"""The token cache: a corpus tokenized once into a memory-mapped token file, shared by concurrent processes.

:func:`tokenize_cached` keys an entry by the sha256 of (format version, tokenizer name, text);
:func:`stream_tokens_cached` reads a Hugging Face dataset as a stream and keys its entry by the dataset's identity
(name or local files' fingerprint, config, split, field, token budget). Both return a :class:`TokenData` with
read-only ``train`` / ``val`` memmaps.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..files import atomic_file, atomic_write
from .sources import DataError, PathLike

#: Bump when the on-disk token format or the tokenization procedure changes;
#: it is part of the cache key, so old cache files are simply never hit again.
CACHE_FORMAT_VERSION = 1


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies up to 65535 tokens, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


@dataclass
class TokenData:
    """Tokenized corpus backed by a read-only memory map.

    ``train`` is the first ``len - n_val`` tokens, ``val`` the last ``n_val``
    (``n_val = round(len * val_frac)``), a contiguous split.
    """

    tokens: np.memmap
    train: np.memmap
    val: np.memmap
    vocab_size: int
    tokenizer_name: str
    path: Path
    meta: dict = field(default_factory=dict)
    cache_hit: bool = False

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def _cache_key(text: str, tokenizer_name: str) -> str:
    h = hashlib.sha256()
    for part in (f"sfbench-tokens-v{CACHE_FORMAT_VERSION}", tokenizer_name):
        b = part.encode("utf-8")
        h.update(len(b).to_bytes(8, "little") + b)
    b = text.encode("utf-8", errors="surrogatepass")
    h.update(len(b).to_bytes(8, "little"))
    h.update(b)
    return h.hexdigest()


def _slug(name: str, n: int = 40) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")
    return (s[-n:] if len(s) > n else s) or "tok"


def _cached(cache_dir: PathLike, stem: str, tokenizer: Any) -> tuple[Path, Path, Optional[dict]]:
    """The entry ``<stem>.bin`` / ``<stem>.json`` in ``cache_dir`` (created if missing), and its metadata if it is
    complete and matches ``tokenizer`` (else None)."""
    cache = Path(os.path.expanduser(os.fspath(cache_dir)))
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the token cache directory {cache}: {e}") from e
    bin_path, meta_path = cache / f"{stem}.bin", cache / f"{stem}.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        ok = (
            meta.get("format_version") == CACHE_FORMAT_VERSION
            and meta.get("tokenizer") == tokenizer.name
            and int(meta.get("vocab_size", -1)) == int(tokenizer.vocab_size)
            and int(meta["length"]) > 0
            and bin_path.stat().st_size == int(meta["length"]) * dtype.itemsize
        )
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    return bin_path, meta_path, meta if ok else None


def _mapped(bin_path: Path, meta: dict, tokenizer: Any, val_frac: float, hit: bool) -> TokenData:
    """An entry's tokens as a read-only memmap, split into train and val."""
    n = int(meta["length"])
    tokens = np.memmap(bin_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(n,))
    n_train = n - int(round(n * val_frac))
    return TokenData(tokens=tokens, train=tokens[:n_train], val=tokens[n_train:], vocab_size=int(tokenizer.vocab_size),
                     tokenizer_name=tokenizer.name, path=bin_path, meta=meta, cache_hit=hit)


def tokenize_cached(text: str, tokenizer: Any, cache_dir: PathLike, val_frac: float = 0.1) -> TokenData:
    """Tokenize ``text`` once into ``cache_dir`` and return memory-mapped splits.

    The cache entry is ``<slug>-<key>.bin`` (raw uint16/uint32 tokens) plus
    ``<slug>-<key>.json`` (dtype, length, tokenizer name, vocab size, ...), where
    ``key`` is the sha256 of (format version, tokenizer name, text). Both files
    are written to a temporary file and ``os.replace``-d into place, the JSON
    last, so a reader never sees a partial entry and racing writers are safe.
    A later call with the same text and tokenizer maps the file without
    tokenizing again.
    """
    if not isinstance(text, str):
        raise DataError(f"text must be a str, got {type(text).__name__}")
    if not text:
        raise DataError("cannot tokenize an empty text")
    try:
        val_frac = float(val_frac)
    except (TypeError, ValueError):
        raise DataError(f"val_frac must be a number in [0, 1), got {val_frac!r}") from None
    if not 0.0 <= val_frac < 1.0:
        raise DataError(f"val_frac must be in [0, 1), got {val_frac}")

    vocab_size = int(tokenizer.vocab_size)
    key = _cache_key(text, tokenizer.name)
    bin_path, meta_path, meta = _cached(cache_dir, f"{_slug(tokenizer.name)}-{key[:24]}", tokenizer)
    hit = meta is not None
    if not hit:
        dtype = token_dtype(vocab_size)
        ids = np.asarray(tokenizer.encode(text))
        if ids.ndim != 1 or ids.size == 0:
            raise DataError(f"tokenizer {tokenizer.name!r} produced no tokens for a {len(text)}-character text")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise DataError(f"tokenizer {tokenizer.name!r} produced ids in [{lo}, {hi}] but reports vocab_size "
                            f"{vocab_size}; the model's embedding would be indexed out of range")
        arr = np.ascontiguousarray(ids.astype(dtype, copy=False))
        meta = {"format_version": CACHE_FORMAT_VERSION, "dtype": dtype.name, "length": int(arr.shape[0]),
                "tokenizer": tokenizer.name, "vocab_size": vocab_size, "cache_key": key, "text_chars": len(text)}
        atomic_write(bin_path, memoryview(arr).cast("B"))
        atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return _mapped(bin_path, meta, tokenizer, val_frac, hit)


def _stream_fingerprint(name: str) -> str:
    """For a local dataset directory, its files' names, sizes and modification times (a changed file is another
    corpus); for a hub name, the name itself (a hub dataset revision is fixed by its name here)."""
    local = Path(os.path.expanduser(name))
    if not local.exists():
        return name
    h = hashlib.sha256()
    for f in sorted(local.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(local)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return f"{local.resolve()}@{h.hexdigest()[:16]}"


def stream_tokens_cached(name: str, tokenizer: Any, cache_dir: PathLike, max_tokens: int, config: Optional[str] = None,
                         split: str = "train", text_field: str = "text", val_frac: float = 0.1,
                         progress_every: int = 10_000_000) -> TokenData:
    """The first ``max_tokens`` tokens of a Hugging Face dataset read as a stream
    (``datasets.load_dataset(name, config, split=split, streaming=True)``: FineWeb-sized corpora are never
    downloaded or held whole), tokenized in chunks of documents joined with ``"\\n\\n"`` (as ``load_text``
    joins rows) and appended to a token file in ``cache_dir``.

    The cache key is (format version, tokenizer name, dataset name or local files' fingerprint, config, split,
    field, max_tokens): the text is not known before it is read, so it can't be the key. A second run maps the file
    without reading the stream again. The file is written under a temporary name and renamed when complete, the
    JSON last, like :func:`tokenize_cached`.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 2:
        raise DataError(f"max_tokens must be an integer >= 2 for a streamed dataset, got {max_tokens!r}")
    try:
        import datasets
    except ImportError as e:
        raise DataError("a streamed Hugging Face dataset needs the 'datasets' package (pip install datasets)") from e
    vocab_size = int(tokenizer.vocab_size)
    spec = json.dumps([f"sfbench-stream-v{CACHE_FORMAT_VERSION}", tokenizer.name, _stream_fingerprint(str(name)),
                       config, split, text_field, int(max_tokens)])
    key = hashlib.sha256(spec.encode()).hexdigest()
    stem = f"{_slug(str(name))}-{_slug(tokenizer.name, 20)}-{key[:24]}"
    bin_path, meta_path, meta = _cached(cache_dir, stem, tokenizer)
    hit = meta is not None
    where = f"Hugging Face dataset {name!r} (config {config!r}, split {split!r}, streamed)"
    if not hit:
        local = Path(os.path.expanduser(str(name)))
        try:
            ds = datasets.load_dataset(str(local) if local.exists() else str(name), config, split=split,
                                       streaming=True)
        except Exception as e:
            raise DataError(f"could not open {where}: {type(e).__name__}: {e}; a hub name needs network (or set "
                            "task.data.hf_dataset to a local directory of data files)") from e
        dtype = token_dtype(vocab_size)
        written, docs, chars, chunk, next_report = 0, 0, 0, [], progress_every
        with atomic_file(bin_path) as out:
            def flush() -> None:
                nonlocal written, chunk
                if not chunk or written >= max_tokens:
                    chunk = []
                    return
                ids = np.asarray(tokenizer.encode("\n\n".join(chunk) + "\n\n"))
                chunk = []
                if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
                    raise DataError(f"tokenizer {tokenizer.name!r} produced ids outside [0, {vocab_size})")
                ids = ids[: max_tokens - written].astype(dtype, copy=False)
                out.write(memoryview(np.ascontiguousarray(ids)).cast("B"))
                written += int(ids.size)

            for row in ds:
                value = row.get(text_field) if isinstance(row, dict) else None
                if value is None:
                    if text_field not in row:
                        raise DataError(f"{where} has no column {text_field!r}; its columns are "
                                        f"{sorted(row)}; set task.data.hf_text_field")
                    continue
                chunk.append(str(value))
                docs, chars = docs + 1, chars + len(value)
                if sum(map(len, chunk)) >= 1_000_000:
                    flush()
                    if written >= next_report:
                        print(f"sfbench: streamed {written:,} of {max_tokens:,} tokens from {name} "
                              f"({docs:,} documents)", file=sys.stderr, flush=True)
                        next_report += progress_every
                if written >= max_tokens:
                    break
            flush()
            if written < 2:
                raise DataError(f"{where} gave no text to train on")
        meta = {"format_version": CACHE_FORMAT_VERSION, "dtype": np.dtype(dtype).name, "length": written,
                "tokenizer": tokenizer.name, "vocab_size": vocab_size, "cache_key": key, "source": spec,
                "documents": docs, "text_chars": chars, "complete_stream": written < max_tokens}
        atomic_write(meta_path, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return _mapped(bin_path, meta, tokenizer, float(val_frac), hit)
