"""What the language-model tasks (`gpt`, `distill`) share: their `data` and model settings, and loading tokens."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .base import ConfigError, check_choice, check_fraction, check_positive_int
from .sources import TEXT_SOURCES, DataError, load_text
from .token_cache import stream_tokens_cached, tokenize_cached
from .tokenizer import make_tokenizer
from .windows import eval_windows

DATA_KEYS = ("source", "path", "hf_dataset", "hf_config", "hf_split", "hf_text_field", "hf_streaming", "max_chars",
             "max_tokens", "tokenizer", "block_size", "batch_size", "val_frac", "train_chars", "val_chars")
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
    check_choice("task.data.source", d.get("source"), TEXT_SOURCES)
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
    ranges = [d.get("train_chars"), d.get("val_chars")]
    if (ranges[0] is None) != (ranges[1] is None):
        raise ConfigError(f"task.data.train_chars={ranges[0]!r}, task.data.val_chars={ranges[1]!r}: set both "
                          "character ranges (each [start, end]) or neither (then task.data.val_frac splits)")
    for key, r in zip(("train_chars", "val_chars"), ranges):
        if r is not None and not (isinstance(r, Sequence) and not isinstance(r, str) and len(r) == 2 and
                                  all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in r)
                                  and r[0] < r[1]):
            raise ConfigError(f"task.data.{key}={r!r} is not allowed; use [start, end], character offsets with "
                              "0 <= start < end (the text's characters start:end, as a Python slice)")
    if ranges[0] is not None and d.get("hf_streaming"):
        raise ConfigError("task.data.train_chars applies to a text read whole, not to a streamed dataset "
                          "(task.data.hf_streaming=true); use task.data.val_frac there")
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
    """Corpus → tokenizer → token cache (under `cache_dir/tokens`); checks that the splits fit the windows before
    training."""
    tokens_dir = Path(cache_dir) / "tokens"
    if d.get("hf_streaming"):
        data = stream_tokens_cached(d["hf_dataset"], make_tokenizer(tokenizer), tokens_dir, d["max_tokens"],
                                    config=d.get("hf_config"), split=d.get("hf_split", "train"),
                                    text_field=d.get("hf_text_field", "text"), val_frac=d["val_frac"])
    else:
        corpus = load_text(d["source"], path=d.get("path"), hf_dataset=d.get("hf_dataset"),
                           hf_config=d.get("hf_config"), hf_split=d.get("hf_split", "train"),
                           hf_text_field=d.get("hf_text_field", "text"), max_chars=d.get("max_chars"))
        if d.get("train_chars") is None:
            data = tokenize_cached(corpus, make_tokenizer(tokenizer), tokens_dir, val_frac=d["val_frac"])
        else:       # two character ranges, each tokenized on its own (as a dataset's separate splits are)
            for key in ("train_chars", "val_chars"):
                if d[key][1] > len(corpus):
                    raise DataError(f"task.data.{key}={list(d[key])}: the text has only {len(corpus):,} characters; "
                                    "give ranges within it")
            train, val = (tokenize_cached(corpus[slice(*d[key])], make_tokenizer(tokenizer), tokens_dir, val_frac=0.0)
                          for key in ("train_chars", "val_chars"))
            data = dataclasses.replace(train, val=val.tokens)
    for split in ("train", "val"):
        eval_windows(getattr(data, split), batch_size, block_size, 1)
    return data
