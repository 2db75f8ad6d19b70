"""Corpus analysis: per-source counts, duplicates, n-grams, benchmark contamination, report files."""

import json

import numpy as np
import pytest

from lmforge.corpus.analysis import analyze, ngram_hashes, words_of
from lmforge.data.documents import Document, write_attributes, write_documents


def test_ngram_hashes_are_stable_and_positional():
    a = ngram_hashes(words_of("the quick brown fox jumps"), 3)
    assert len(a) == 3 and a.dtype == np.uint64
    assert np.array_equal(a, ngram_hashes(["the", "quick", "brown", "fox", "jumps"], 3))
    assert ngram_hashes(["a", "b", "c"], 3)[0] != ngram_hashes(["c", "b", "a"], 3)[0]  # order matters
    assert len(ngram_hashes(["a", "b"], 3)) == 0


@pytest.mark.parametrize("bucket_bytes", [1 << 30, 64])  # one bucket of text hashes, or one per 64 input bytes (many)
def test_counts_duplicates_and_near_duplicate_attribute(tmp_path, monkeypatch, bucket_bytes):
    import lmforge.corpus.analysis as analysis

    monkeypatch.setattr(analysis, "HASH_BUCKET_BYTES", bucket_bytes)
    root = tmp_path / "c"
    docs = [Document(id=f"w{i}", text=f"web page number {i} " * (i + 1), source="web") for i in range(6)]
    docs += [Document(id="b0", text="a book chapter about rivers and mountains", source="books")]
    docs += [Document(id="dup", text=docs[0].text, source="web")]  # exact duplicate of w0
    write_documents(root / "documents" / "s0.jsonl", docs[:4])
    write_documents(root / "documents" / "s1.jsonl", docs[4:])
    (root / "documents" / "s1.jsonl").open("a").write("{broken\n")
    write_attributes(root / "attributes" / "nd" / "s0.jsonl", [(d.id, {"nd__minhash__dup": []}) for d in docs[:4]])
    write_attributes(root / "attributes" / "nd" / "s1.jsonl", [(d.id, {"nd__minhash__dup": [[0, 1, 1]] if d.id == "dup" else []}) for d in docs[4:]])
    r = analyze([str(root / "documents")], tmp_path / "out", eval_tasks=[], near_dup="nd/nd__minhash__dup", progress=False)
    assert r["per_source"]["web"]["documents"] == 7 and r["per_source"]["books"]["documents"] == 1
    assert r["per_source"]["books"]["words"] == 7
    assert r["exact_duplicates"]["duplicates"] == 1
    assert r["near_duplicates"]["duplicates"] == 1
    assert r["accounting"]["malformed"] == {"bad JSON": 1} and r["accounting"]["read"] == 9
    top = dict(r["top_ngrams"][1])
    assert top["web"] == sum(i + 1 for i in range(6)) + 1  # counted in every web page, incl. the duplicate
    for f in ("report.md", "analysis.json", "sources.png", "lengths.png"):
        assert (tmp_path / "out" / f).is_file(), f
    assert "Exact duplicates (identical text): 1 of 8 documents" in (tmp_path / "out" / "report.md").read_text()
    assert not list((tmp_path / "out").glob(".analyze-work-*"))  # the scratch of the counting step is gone


@pytest.mark.network
def test_contamination_finds_planted_benchmark_examples(tmp_path):
    from lmforge.data.evalsets import EvalSets

    arc = EvalSets().examples("arc_easy")
    planted = [text for _, text in sorted(arc.items()) if len(words_of(text)) >= 13][:5]
    docs = [Document(id=f"d{i}", text=f"Some preamble text. {t} And more after.", source="web") for i, t in enumerate(planted)]
    docs.append(Document(id="clean", text="Nothing to see here, only ordinary words in a line.", source="web"))
    write_documents(tmp_path / "documents" / "a.jsonl.gz", docs)
    r = analyze([str(tmp_path / "documents")], tmp_path / "out", eval_tasks=["arc_easy", "piqa"], workers=2, progress=False)
    arc_c = r["contamination"]["arc_easy"]
    assert arc_c["contaminated"] >= 5 and arc_c["checked"] <= len(arc)
    assert r["contamination"]["piqa"]["contaminated"] == 0
    assert (tmp_path / "out" / "contamination.png").is_file()
    saved = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert saved["contamination"]["arc_easy"]["contaminated"] == arc_c["contaminated"]
