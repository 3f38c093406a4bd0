"""Tokenizers: :class:`ByteTokenizer` (UTF-8 bytes, vocab 256) and :class:`HFTokenizer`
(``transformers.AutoTokenizer``); :func:`make_tokenizer` picks one from a config string.

``transformers`` is imported where it is used, not at module import.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from .sources import DataError, looks_like_path


def quiet_transformers() -> None:
    """transformers' own progress bars ("Loading weights", "Writing model shards") and warnings meant for its
    pipelines ("Token indices sequence length is longer than …": sfbench cuts windows itself) are noise in run logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


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
        if looks_like_path(spec) and not local.exists():
            raise DataError(f"no tokenizer directory at {local}; set the tokenizer to 'bytes', a Hugging Face "
                            "hub name, or a directory written by tokenizer.save_pretrained")
        if local.exists() and not local.is_dir():
            raise DataError(f"tokenizer path {local} is a file, not a directory; pass the directory written by "
                            "tokenizer.save_pretrained")
        try:
            import transformers

            quiet_transformers()
        except ImportError as e:
            raise DataError(f"tokenizer {spec!r} needs the 'transformers' package; install it with "
                            "`pip install transformers`, or use the 'bytes' tokenizer") from e

        try:
            tok = transformers.AutoTokenizer.from_pretrained(
                str(local) if local.exists() else spec, **from_pretrained_kwargs
            )
        except Exception as e:
            if local.exists():
                hint = (f"{local} exists but holds no loadable tokenizer (expected e.g. tokenizer.json "
                        "and tokenizer_config.json from save_pretrained)")
            else:
                hint = ("if this is a hub name, the Hugging Face hub may be unreachable (offline) and the "
                        "tokenizer is not in the local cache: save it with tokenizer.save_pretrained(dir) "
                        "where there is network and pass that directory (HF_HUB_OFFLINE=1 makes offline "
                        "failures fast)")
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
        raise DataError(f"tokenizer must be 'bytes', a Hugging Face hub name or a tokenizer directory, got {spec!r}")
    spec = str(os.fspath(spec)).strip()
    if spec == "bytes":
        return ByteTokenizer()
    return HFTokenizer(spec)


def _as_int_array(ids: Any) -> np.ndarray:
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    return np.asarray(ids, dtype=np.int64).reshape(-1)
