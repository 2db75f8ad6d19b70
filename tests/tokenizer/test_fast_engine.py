"""The tiktoken engine gives exactly HF tokenizers' ids, document by document, for OLMo-1, OLMo-2,
GPT-NeoX-PII and lmforge-trained tokenizers; what it cannot be shown to match is refused with the
reason, and ``lmforge data tokenize`` writes the same bytes with either engine and says which ran."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import tokenizers

from lmforge.tokenizer import train_bpe
from lmforge.tokenizer.core import Tokenizer
from lmforge.tokenizer.fast import EngineRefused, FastEngine, choose_engine, fast_engine
from tests.conftest import corpus_lines, run_tokenize


def _stdlib_sources(limit_chars: int) -> list[str]:
    """Real code: the standard library's own .py files (indentation, long space runs, docstrings)."""
    root = Path(json.__file__).resolve().parent.parent
    texts, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text)
        if total >= limit_chars:
            break
    return texts


def _fuzz(n: int, seed: int = 0) -> list[str]:
    """Random text over many scripts, symbols, whitespace and combining marks."""
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F),
              (0x1100, 0x11FF), (0x2000, 0x206F), (0x2190, 0x23FF), (0x3000, 0x30FF), (0x4E00, 0x4EFF), (0xAC00, 0xACFF),
              (0xFE00, 0xFE0F), (0x1F300, 0x1F6FF), (0x1F900, 0x1F9FF), (0xE0000, 0xE007F)]
    ws = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", " " * 9, "\n\n"]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(1, 80)):
            r = rng.random()
            if r < 0.15:
                chars.append(rng.choice(ws))
            elif r < 0.25:
                chars.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            else:
                lo, hi = rng.choice(ranges)
                chars.append(chr(rng.randint(lo, hi)))
        out.append("".join(chars))
    return out


EDGE = [
    "", " ", "  ", " " * 500, "\t" * 40, "\n" * 30, " \n \n  \n", "x" + " " * 33 + "y", "9" * 1000, "1 22 333 4444 55555",
    "🙂🙂🙂", "👩‍👩‍👧‍👦 family", "🇫🇷🇩🇪", "e\u0301 vs é", "ḱṷṓn", "한국어 텍스트", "日本語と English", "مرحبا بالعالم",
    "\ud83d lone surrogate".encode("utf-8", "replace").decode("utf-8"), "\x00\x01\x1f\x7f", "\ufeffBOM", "zero\u200bwidth",
    "<|endoftext|>", "a<|endoftext|>b<|endoftext|>", "<|pad|><|padding|>", "|||EMAIL_ADDRESS||| and |||PHONE_NUMBER|||",
    "<|endoftext", "endoftext|>", "<|im_start|>user\nhi<|im_end|>", "I'm we'll they've it's DON'T 'S", "   leading", "trailing   ",
]


def corpus() -> list[str]:
    return _stdlib_sources(600_000) + corpus_lines(400, seed=3) + _fuzz(1500) + EDGE


def _assert_same_ids(tok: Tokenizer, engine: FastEngine, texts: list[str]) -> None:
    theirs = tok.backend.encode_batch(texts, add_special_tokens=False)
    for threads in (1, 2):
        mine = engine.encode_batch(texts, num_threads=threads)
        for i, (a, b) in enumerate(zip(mine, theirs)):
            assert a.tolist() == b.ids, f"text {i} ({texts[i][:60]!r}) with {threads} thread(s)"


@pytest.mark.network
@pytest.mark.required_in_ci
@pytest.mark.parametrize("name", ["olmo1", "gpt-neox-pii", "olmo2"])
def test_olmo_tokenizers_get_the_same_ids_on_every_document(name):
    from lmforge.tokenizer import load_olmo_tokenizer

    tok = load_olmo_tokenizer(name)
    engine = fast_engine(tok)
    texts = corpus()
    assert sum(map(len, texts)) > 700_000
    _assert_same_ids(tok, engine, texts)


@pytest.mark.required_in_ci
def test_trained_tokenizers_get_the_same_ids(tmp_path, bpe_tokenizer):
    text = tmp_path / "train.txt"
    text.write_text("\n".join(_stdlib_sources(300_000) + _fuzz(300, seed=5)), encoding="utf-8")
    bigger = train_bpe([str(text)], vocab_size=3000, out_path=tmp_path / "tok.json", show_progress=False)
    for tok in (bpe_tokenizer, bigger):
        assert choose_engine("auto", tok) == ("tiktoken", None)
        _assert_same_ids(tok, fast_engine(tok), corpus())


def _doc(tok: Tokenizer) -> dict:
    return json.loads(tok.backend.to_str())


def _add_merges(doc: dict, pairs: list[tuple[str, str]]) -> None:
    merges = doc["model"]["merges"]
    merges += [f"{a} {b}" if isinstance(merges[0], str) else [a, b] for a, b in pairs]


def _second_split(doc: dict) -> tuple[str, str]:
    """Another way to make an existing token from two tokens than its own merge."""
    vocab, merges = doc["model"]["vocab"], doc["model"]["merges"]
    for m in merges:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        t = a + b
        for k in range(1, len(t)):
            if (t[:k], t[k:]) != (a, b) and t[:k] in vocab and t[k:] in vocab:
                return t[:k], t[k:]
    raise AssertionError("no token with a second split")


def _from_doc(doc: dict) -> Tokenizer:
    return Tokenizer(tokenizers.Tokenizer.from_str(json.dumps(doc)), eos_token_id=0, pad_token_id=1)


@pytest.mark.parametrize("change, reason", [
    (lambda d: d.update(normalizer={"type": "Lowercase"}), "normalizer 'Lowercase'"),
    (lambda d: d["model"].update(dropout=0.1), "dropout"),
    (lambda d: d.update(truncation={"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0}), "truncation"),
    (lambda d: d.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer"),
    (lambda d: d["added_tokens"][0].update(lstrip=True), "strip"),
    (lambda d: _add_merges(d, [_second_split(d)]), "two merges"),
])
def test_what_tiktoken_cannot_express_is_refused_with_the_reason(bpe_tokenizer, change, reason):
    doc = _doc(bpe_tokenizer)
    change(doc)
    with pytest.raises(EngineRefused, match=reason):
        fast_engine(_from_doc(doc))
    assert choose_engine("auto", _from_doc(doc))[0] == "hf"
    with pytest.raises(EngineRefused):
        choose_engine("tiktoken", _from_doc(doc))


def test_a_token_whose_bytes_merge_otherwise_is_refused(bpe_tokenizer):
    """tiktoken looks a whole piece up; HF merges it. Merges b+c before a+b make "abc" (made by ab+c)
    come out of HF as [a, bc]: refused, although every merge names tokens of the vocabulary."""
    doc = _doc(bpe_tokenizer)
    vocab = doc["model"]["vocab"]
    for t in ("qz", "zj", "qzj"):
        vocab.setdefault(t, len(vocab))
    _add_merges(doc, [("z", "j"), ("q", "z"), ("qz", "j")])
    for t in doc["added_tokens"]:
        t["id"] = vocab.setdefault(t["content"], t["id"])
    tok = _from_doc(doc)
    assert tok.encode("qzj") != [vocab["qzj"]]
    with pytest.raises(EngineRefused, match="'qzj'"):
        fast_engine(tok)


def test_added_tokens_match_as_hf_matches_them(bpe_tokenizer):
    """Leftmost-longest, and tokens matched on raw text before those matched on normalised text."""
    tok = Tokenizer(tokenizers.Tokenizer.from_str(bpe_tokenizer.backend.to_str()), eos_token_id=0, pad_token_id=1)
    tok.backend.add_tokens([tokenizers.AddedToken("ab", normalized=True), tokenizers.AddedToken("b", normalized=False),
                            tokenizers.AddedToken("abcd", normalized=True), tokenizers.AddedToken("ṩ", normalized=False)])
    texts = ["ab", "abcd", "xabcdx", "cab", "s\u0323\u0307", "ṩ", "abab<|endoftext|>ab"]
    _assert_same_ids(tok, fast_engine(tok), texts)


def test_tokenize_writes_the_same_bytes_with_either_engine_and_says_which_ran(tmp_path, bpe_tokenizer):
    docs = tmp_path / "docs"
    docs.mkdir()
    texts = corpus()
    for k in range(2):
        with open(docs / f"s{k}.jsonl", "w", encoding="utf-8") as f:
            for i, t in enumerate(texts[k::2]):
                if t.strip():
                    f.write(json.dumps({"id": f"{k}-{i}", "text": t, "source": "test"}) + "\n")
    tok_path = tmp_path / "tok.json"
    bpe_tokenizer.save(tok_path)
    fast = run_tokenize(docs, tok_path, tmp_path / "fast", batch_chars=50_000)
    slow = run_tokenize(docs, tok_path, tmp_path / "slow", engine="hf")
    assert fast["engine"] == "tiktoken" and fast["engine_refused"] is None and fast["shards_by_engine"] == {"tiktoken": 2}
    assert slow["engine"] == "hf" and slow["shards_by_engine"] == {"hf": 2}
    assert fast["tokens"] == slow["tokens"] > 100_000
    for f in sorted((tmp_path / "slow").glob("part-*")):
        assert (tmp_path / "fast" / f.name).read_bytes() == f.read_bytes(), f.name


def test_tokenize_with_a_refused_tokenizer(tmp_path, bpe_tokenizer, capsys):
    from lmforge.cli import main
    from lmforge.data.documents import DataError

    doc = _doc(bpe_tokenizer)
    doc["normalizer"] = {"type": "Lowercase"}
    tok_path = tmp_path / "lower.json"
    tok_path.write_text(json.dumps(doc), encoding="utf-8")
    docs = tmp_path / "d.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "Hello World", "source": "t"}) + "\n", encoding="utf-8")
    s = run_tokenize(docs, tok_path, tmp_path / "auto")
    assert s["engine"] == "hf" and "Lowercase" in s["engine_refused"]
    with pytest.raises(DataError, match="engine=tiktoken: tokenizer .*lower.json cannot be shown"):
        run_tokenize(docs, tok_path, tmp_path / "forced", engine="tiktoken")
    assert main(["data", "tokenize", "--documents", str(docs), "--tokenizer", str(tok_path), "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "engine: 1 shard(s) with hf (tiktoken not used: normalizer 'Lowercase'" in out


def test_an_audit_difference_redoes_the_shard_with_hf(tmp_path, monkeypatch):
    """The audit, with an engine that really differs: OLMo-1's BPE audited against GPT-NeoX-PII's
    file (same merges, other special-token ids), where a document holds ``<|endoftext|>`` text.
    (No tokenizer that passes the checks is known to differ; this puts one engine beside another
    file's reference to show what a difference does.)"""
    pytest.importorskip("tiktoken")
    from lmforge.corpus import tokenize as tk
    from lmforge.tokenizer import load_olmo_tokenizer
    from lmforge.tokenizer.olmo import fetch_olmo_tokenizers

    try:
        files = fetch_olmo_tokenizers()
    except Exception as e:  # no registry here
        pytest.skip(f"OLMo tokenizers not available: {e}")
    other = fast_engine(load_olmo_tokenizer("olmo1"))
    real = tk._worker_engine
    monkeypatch.setattr(tk, "_worker_engine", lambda task: other if "pii" in task.tokenizer_path else real(task))
    docs = tmp_path / "d.jsonl"
    lines = [{"id": str(i), "text": f"plain document {i}", "source": "t"} for i in range(600)]
    lines[512]["text"] = "a document with <|endoftext|> in its text"
    docs.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    s = run_tokenize(docs, files["gpt-neox-pii"], tmp_path / "out", eos_id=0, pad_id=1, batch_chars=2000)
    ref = run_tokenize(docs, files["gpt-neox-pii"], tmp_path / "ref", eos_id=0, pad_id=1, engine="hf")
    assert s["shards_by_engine"] == {"hf": 1}
    assert "document 513 of the shard" in s["engine_notes"][0] and "redone with HF" in s["engine_notes"][0]
    for f in sorted((tmp_path / "ref").glob("part-*")):
        assert (tmp_path / "out" / f.name).read_bytes() == f.read_bytes(), f.name


def test_the_verdict_is_cached_per_file(tmp_path, monkeypatch, bpe_tokenizer):
    from lmforge.config import sha256_file

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    bpe_tokenizer.save(good)
    doc = _doc(bpe_tokenizer)
    doc["normalizer"] = {"type": "Lowercase"}
    bad.write_text(json.dumps(doc), encoding="utf-8")
    assert choose_engine("auto", bpe_tokenizer, sha256=sha256_file(good)) == ("tiktoken", None)
    engine, why = choose_engine("auto", _from_doc(doc), sha256=sha256_file(bad))
    assert engine == "hf" and "Lowercase" in why
    stored = json.loads((tmp_path / "cache" / "tokenizers" / "fast-engine-verdicts.json").read_text())
    assert sorted(stored.values()) == sorted(["ok", why]) and all(k.startswith((sha256_file(good), sha256_file(bad))) for k in stored)
    # the next run reads the verdict instead of checking again (a refused file stays refused)
    assert choose_engine("auto", _from_doc(doc), sha256=sha256_file(bad)) == ("hf", why)
    with pytest.raises(EngineRefused, match="Lowercase"):
        choose_engine("tiktoken", _from_doc(doc), sha256=sha256_file(bad))
