"""The corpus index: a suffix array equal to sorting the suffixes by hand; exact counts of planted
spans; `lmforge trace` finds the planted span of a text with its count and source documents."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.data.corpus_index import CorpusIndex, build_index, suffix_array
from lmforge.data.documents import DataError
from tests.conftest import run_tokenize

PLANTED = "the lighthouse keeper counted seventeen silver herrings every morning"
ONCE = "a violet tram hummed across the frozen harbour at noon"


def _noise(rng: random.Random, words: int) -> str:
    """Random letter strings: no long run of it occurs twice."""
    return " ".join("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(3, 8))) for _ in range(words))


def test_suffix_array_equals_sorting_the_suffixes():
    rng = np.random.default_rng(0)
    for _ in range(300):
        t = rng.integers(0, rng.integers(1, 6), rng.integers(1, 80)).astype(np.uint16)
        assert suffix_array(t).tolist() == sorted(range(len(t)), key=lambda i: t[i:].tolist())


@pytest.fixture(scope="module")
def index(tmp_path_factory, bpe_tokenizer):
    root = tmp_path_factory.mktemp("idx")
    rng = random.Random(0)
    docs = []
    for i in range(120):
        text = _noise(rng, 40)
        if i % 20 == 3:  # 6 documents hold the planted sentence
            text = f"{_noise(rng, 10)} {PLANTED} {_noise(rng, 10)}"
        if i == 77:
            text += f" {ONCE}."
        docs.append({"id": f"doc-{i}", "text": text, "source": "planted" if i % 20 == 3 else "noise"})
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    tok_path = root / "tokenizer.json"
    bpe_tokenizer.save(tok_path)
    run_tokenize(root / "docs.jsonl", tok_path, root / "tokens", max_tokens_per_file=20_000)
    assert main(["data", "index", str(root / "tokens"), "--out", str(root / "index")]) == 0
    return root / "index"


def test_counts_are_exact(index, capsys):
    idx = CorpusIndex.load(index)
    tok = idx.tokenizer
    assert idx.record["documents"] == 120 and len(idx.record["files"]) >= 2  # several token files, one index
    assert idx.count(tok.encode(" " + PLANTED)) == 6
    assert idx.count(tok.encode(" " + ONCE)) == 1
    assert idx.count(tok.encode(" " + PLANTED + " " + ONCE)) == 0
    # every occurrence the index finds is really there, and none is missed
    ids = tok.encode(" seventeen silver")
    hay = np.asarray(idx.tokens)
    brute = sum(1 for p in range(len(hay) - len(ids) + 1) if hay[p : p + len(ids)].tolist() == ids)
    assert idx.count(ids) == brute == 6
    occ = idx.occurrences(tok.encode(" " + PLANTED), limit=10)
    assert sorted(o["id"] for o in occ) == sorted(f"doc-{i}" for i in (3, 23, 43, 63, 83, 103))
    assert all(PLANTED in o["snippet"] for o in occ)
    assert main(["data", "count", str(index), " " + ONCE]) == 0
    assert capsys.readouterr().out.startswith("1\t")


def test_trace_finds_the_planted_span(index, capsys):
    text = f"ZQXV WPLK {PLANTED} JJTRK VVBN"  # upper case: the noise is lower case, so the span cannot grow into it
    assert main(["trace", "--index", str(index), "--text", text, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    spans = out["spans"]
    assert len(spans) == 1, spans
    span = spans[0]
    assert span["text"].strip() == PLANTED
    # its count is the exact count of its tokens (which may include the space token before the next
    # word: then only the documents where the next word starts so)
    idx = CorpusIndex.load(index)
    piece = idx.tokenizer.encode(text)[span["start"] : span["end"]]
    hay = np.asarray(idx.tokens)
    brute = sum(1 for p in range(len(hay) - len(piece) + 1) if hay[p : p + len(piece)].tolist() == piece)
    assert 1 <= span["count"] == brute <= 6
    planted_docs = {f"doc-{i}" for i in (3, 23, 43, 63, 83, 103)}
    assert span["documents"] and {d["id"] for d in span["documents"]} <= planted_docs
    assert all(PLANTED in d["snippet"] for d in span["documents"])
    # whitespace, punctuation and stop words alone are not spans, whatever their count
    from lmforge.data.corpus_index import informative

    assert not informative("  ,. ") and not informative(" of the and") and informative(" lighthouse keeper")
    assert main(["trace", "--index", str(index), "--text", "  ", "--json", "--min-len", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["spans"] == []
    assert main(["trace", "--index", str(index), "--text", text]) == 0
    printed = capsys.readouterr().out
    assert "1 span(s)" in printed and f"x{brute}" in printed and "doc-" in printed


def test_trace_a_models_output_and_errors(index, tmp_path, bpe_tokenizer, capsys):
    from lmforge.checkpoint import save_model
    from tests.conftest import tiny_config

    model = tiny_config("olmo2", vocab_size=bpe_tokenizer.vocab_size).build()
    save_model(tmp_path / "m", model, tokenizer=bpe_tokenizer)
    assert main(["trace", "--index", str(index), "--model", str(tmp_path / "m"), "--prompt", "the lighthouse", "--max-new-tokens", "8",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["prompt"] == "the lighthouse" and isinstance(out["spans"], list)
    assert main(["trace", "--index", str(index)]) == 2
    assert "give --text" in capsys.readouterr().err
    assert main(["trace", "--index", str(tmp_path), "--text", "x"]) == 2
    assert "not a corpus index" in capsys.readouterr().err
    with pytest.raises(DataError, match="not empty"):
        build_index([index.parent / "tokens"], index)


def test_exact_contamination_counts_through_the_index(tmp_path, bpe_tokenizer):
    """An evaluation example planted in the corpus is found with its n-gram counts; `data analyze
    --index` reports them per task."""
    from lmforge.data.corpus_index import contamination
    from lmforge.data.evalsets import EvalSets

    examples = EvalSets().examples("arc_easy")
    planted_id, planted = next(iter(examples.items()))
    rng = random.Random(1)
    docs = [{"id": f"d{i}", "text": _noise(rng, 60), "source": "noise"} for i in range(40)]
    docs[7]["text"] += "\n" + planted + "\n"
    docs[31]["text"] = planted + "\n" + docs[31]["text"]
    (tmp_path / "documents").mkdir()
    (tmp_path / "documents" / "c.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    tok_path = tmp_path / "tok.json"
    bpe_tokenizer.save(tok_path)
    run_tokenize(tmp_path / "documents" / "c.jsonl", tok_path, tmp_path / "tokens")
    build_index([tmp_path / "tokens"], tmp_path / "index")
    idx = CorpusIndex.load(tmp_path / "index")
    few = dict(list(examples.items())[:30])
    c = contamination(idx, few, n=8)
    assert c["contaminated"] >= 1 and planted_id in c["contaminated_ids"] and c["occurrences"] >= 2
    assert c["checked"] + c["too_short"] == 30
    assert main(["data", "analyze", "--documents", str(tmp_path / "documents"), "--out", str(tmp_path / "report"), "--tasks", "arc_easy",
                 "--index", str(tmp_path / "index"), "--no-progress"]) == 0
    report = json.loads((tmp_path / "report" / "analysis.json").read_text())
    exact = report["contamination"]["arc_easy"]["index"]
    assert planted_id in exact["contaminated_ids"] and exact["checked"] > 100
    assert "Exact counts in the corpus index" in (tmp_path / "report" / "report.md").read_text()
