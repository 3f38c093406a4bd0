"""What the language-model tasks (`gpt`, `distill`) share: their `data` and model settings, and loading tokens."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from .base import ConfigError, check_choice, check_fraction, check_positive_int

SOURCES = ("shakespeare", "file", "hf")
DATA_KEYS = ("source", "path", "hf_dataset", "hf_config", "hf_split", "hf_text_field", "hf_streaming", "max_chars",
             "max_tokens", "tokenizer", "block_size", "batch_size", "val_frac")
MODEL_KEYS = ("n_layer", "n_embd", "n_head", "dropout")


def settings(key: str, value: Any, known: tuple[str, ...]) -> dict:
    """A sub-group as a dict, refusing what isn't one and keys it doesn't know (a typo must not be ignored)."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}={value!r} is not allowed; {key} is a group of settings ({key}.<name>=…): "
                          f"{', '.join(known)}")
    for name in value:
        if name not in known:
            raise ConfigError(f"{key}.{name}: unknown setting; choose among {', '.join(known)}")
    return dict(value)


def check_data(data: Any) -> dict:
    d = settings("task.data", data, DATA_KEYS)
    check_choice("task.data.source", d.get("source"), SOURCES)
    check_positive_int("task.data.block_size", d.get("block_size"), 2)
    check_positive_int("task.data.batch_size", d.get("batch_size"))
    check_fraction("task.data.val_frac", d.get("val_frac"))
    if d.get("max_chars") is not None:
        check_positive_int("task.data.max_chars", d["max_chars"])
    if d["source"] == "file":
        path = d.get("path")
        if not path or not Path(os.path.expanduser(str(path))).is_file():
            raise ConfigError(f"task.data.path={path!r}: no such text file; with task.data.source=file give the path "
                              "of a UTF-8 text file")
    if d["source"] == "hf" and not d.get("hf_dataset"):
        raise ConfigError("task.data.hf_dataset=None: with task.data.source=hf name a Hugging Face dataset (hub name "
                          "or a local directory saved with save_to_disk)")
    if d.get("max_tokens") is not None:
        check_positive_int("task.data.max_tokens", d["max_tokens"], 2)
        if not d.get("hf_streaming"):
            raise ConfigError(f"task.data.max_tokens={d['max_tokens']!r} applies to a streamed dataset only "
                              "(task.data.hf_streaming=true); to shorten other sources use task.data.max_chars")
    if d.get("hf_streaming", False) not in (True, False):
        raise ConfigError(f"task.data.hf_streaming={d['hf_streaming']!r} is not allowed; use true or false")
    if d.get("hf_streaming"):
        if d["source"] != "hf":
            raise ConfigError(f"task.data.hf_streaming=true needs task.data.source=hf, not {d['source']!r}")
        if d.get("max_tokens") is None:
            raise ConfigError("task.data.max_tokens=None: a streamed dataset (task.data.hf_streaming=true) is read "
                              "up to a token budget; set task.data.max_tokens (e.g. 1000000000 for 1B tokens)")
    return d


def check_model(key: str, model: Any) -> dict:
    m = settings(key, model, MODEL_KEYS)
    for name in ("n_layer", "n_embd", "n_head"):
        check_positive_int(f"{key}.{name}", m.get(name))
    check_fraction(f"{key}.dropout", m.get("dropout", 0.0), lo_open=False)
    if m["n_embd"] % m["n_head"]:
        raise ConfigError(f"{key}.n_embd={m['n_embd']} is not allowed; it must be a multiple of "
                          f"{key}.n_head={m['n_head']}")
    return m


def load_tokens(d: dict, tokenizer: str, cache_dir: Path, batch_size: int, block_size: int):
    """Corpus → tokenizer → content-keyed token cache; checks that the splits fit the windows before training."""
    from . import text

    if d.get("hf_streaming"):
        data = text.stream_tokens_cached(d["hf_dataset"], text.make_tokenizer(tokenizer), Path(cache_dir) / "tokens",
                                         d["max_tokens"], config=d.get("hf_config"), split=d.get("hf_split", "train"),
                                         text_field=d.get("hf_text_field", "text"), val_frac=d["val_frac"])
        for split in ("train", "val"):
            text.eval_windows(getattr(data, split), batch_size, block_size, 1)
        return data
    corpus = text.load_text(d["source"], path=d.get("path"), hf_dataset=d.get("hf_dataset"), hf_config=d.get("hf_config"),
                            hf_split=d.get("hf_split", "train"), hf_text_field=d.get("hf_text_field", "text"),
                            max_chars=d.get("max_chars"))
    data = text.tokenize_cached(corpus, text.make_tokenizer(tokenizer), Path(cache_dir) / "tokens",
                                val_frac=d["val_frac"])
    for split in ("train", "val"):
        text.eval_windows(getattr(data, split), batch_size, block_size, 1)
    return data
