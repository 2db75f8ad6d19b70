"""Deduplication: Bloom filter, exact (documents, paragraphs, 13-gram overlap), decontamination,
MinHash near-duplicates, independence from the worker count, accounting."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.corpus.bloom import BloomFilter, build_filter
from lmforge.corpus.dedup import SUMMARY_NAME, DedupConfig, dedup
from lmforge.data.documents import DataError, read_attributes


def _write(path: Path, docs: list[dict], extra_lines: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def run_dedup(path, **kw):
    """``dedup`` over ``path`` with these config fields (paths as strings, as YAML or the CLI gives them)."""
    fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()}
    return dedup(DedupConfig(documents=[str(path)], **fields), progress=False)


def _attrs(root: Path, name: str, shard: str) -> list[dict]:
    return list(read_attributes(root / "attributes" / name / shard))


def _words(rng: random.Random, n: int) -> list[str]:
    return [f"w{rng.randrange(10**9)}" for _ in range(n)]


# --- Bloom filter -------------------------------------------------------------------------------------
def test_bloom_no_false_negatives_and_fpr_near_target():
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 2**63, size=100_000, dtype=np.uint64)
    bf = BloomFilter(100_000, 0.01)
    was = bf.add_many(keys)
    assert was.mean() < 0.02  # distinct random keys: only false positives
    assert bf.contains_many(keys).all()  # no false negatives
    other = rng.integers(0, 2**63, size=100_000, dtype=np.uint64)
    fpr = bf.contains_many(other).mean()
    assert 0.005 < fpr < 0.015, fpr
    assert 0.005 < bf.estimated_fp_rate < 0.015
    # string API, one at a time
    assert bf.add("hello") is False
    assert bf.add("hello") is True and "hello" in bf


def test_bloom_batch_counts_repeats_within_batch():
    bf = BloomFilter(1000, 1e-6)
    was = bf.add_many(["a", "b", "a", "c", "b"])
    assert was.tolist() == [False, False, True, False, True]


def test_bloom_save_load_roundtrip_and_corrupt(tmp_path):
    bf = BloomFilter(10_000, 1e-4)
    bf.add_many([f"k{i}" for i in range(5000)])
    p = bf.save(tmp_path / "bf.bin")
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temp files left
    bf2 = BloomFilter.load(p)
    assert (bf2.k, bf2.bits, bf2.items) == (bf.k, bf.bits, bf.items)
    assert bf2.contains_many([f"k{i}" for i in range(5000)]).all()
    assert np.array_equal(bf.bitmap, bf2.bitmap)
    ro = BloomFilter.load(p, read_only=True)
    with pytest.raises(ValueError, match="read-only"):
        ro.add("x")
    # corrupt: flipped byte, truncated, wrong file
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "flip.bin").write_bytes(bytes(raw))
    (tmp_path / "short.bin").write_bytes(p.read_bytes()[:-8])
    (tmp_path / "junk.bin").write_bytes(b"not a bloom filter at all" * 10)
    for bad in ("flip.bin", "short.bin", "junk.bin", "missing.bin"):
        with pytest.raises(DataError) as e:
            BloomFilter.load(tmp_path / bad)
        assert "\n" not in str(e.value) and bad in str(e.value)


# --- exact document dedup ------------------------------------------------------------------------------
def _two_shards(root: Path) -> None:
    _write(
        root / "documents" / "a.jsonl.gz",
        [
            {"id": "a1", "text": "alpha document", "metadata": {"url": "http://x/1"}},
            {"id": "a2", "text": "beta document", "metadata": {"url": "http://x/2"}},
            {"id": "a3", "text": "alpha document", "metadata": {"url": "http://x/3"}},
        ],
    )
    _write(
        root / "documents" / "b.jsonl.gz",
        [
            {"id": "b1", "text": "beta document", "metadata": {"url": "http://x/1"}},
            {"id": "b2", "text": "gamma document é", "metadata": {"url": "http://x/9"}},
            {"id": "b3", "text": "gamma document é"},
        ],
    )


def test_exact_document_dedup_across_shards(tmp_path):
    _two_shards(tmp_path)
    acct = run_dedup(tmp_path / "documents", mode="documents", name="dd", bloom_path=tmp_path / "bf.bin")
    assert acct.read == acct.kept == 6
    a, b = _attrs(tmp_path, "dd", "a.jsonl.gz"), _attrs(tmp_path, "dd", "b.jsonl.gz")
    assert [r["attributes"] for r in a] == [{}, {}, {"dd": [[0, 14, 1]]}]
    assert [r["attributes"] for r in b] == [{"dd": [[0, 13, 1]]}, {}, {"dd": [[0, 16, 1]]}]
    assert [r["id"] for r in a + b] == ["a1", "a2", "a3", "b1", "b2", "b3"]
    s = json.loads((tmp_path / "attributes" / "dd" / SUMMARY_NAME).read_text())
    assert s["duplicate_documents"] == 3 and s["accounting"]["balanced"]
    assert (tmp_path / "bf.bin").exists()
    # a later run sharing the filter: everything is now a duplicate
    run_dedup(tmp_path / "documents" / "a.jsonl.gz", mode="documents", name="dd2", bloom_path=tmp_path / "bf.bin")
    assert all(r["attributes"] for r in _attrs(tmp_path, "dd2", "a.jsonl.gz"))


def test_exact_document_dedup_by_key(tmp_path):
    _two_shards(tmp_path)
    run_dedup(tmp_path / "documents", mode="documents", name="url", key="metadata.url")
    marked = [r["id"] for s in ("a.jsonl.gz", "b.jsonl.gz") for r in _attrs(tmp_path, "url", s) if r["attributes"]]
    assert marked == ["b1"]  # b3 has no url: never a duplicate
    s = json.loads((tmp_path / "attributes" / "url" / SUMMARY_NAME).read_text())
    assert s["documents_without_key"] == 1
    run_dedup(tmp_path / "documents", mode="documents", name="byid", key="id")
    assert not any(r["attributes"] for r in _attrs(tmp_path, "byid", "a.jsonl.gz"))


# --- paragraphs ------------------------------------------------------------------------------------------
def test_paragraph_spans_exactly_located(tmp_path):
    t1 = "first para\nshared para\n\nlast"
    t2 = "new start\nshared para\nfirst para\n\nlast"
    t3 = "ü unique ü\nshared para\nü unique ü"
    _write(tmp_path / "documents" / "p.jsonl.gz", [{"id": "1", "text": t1}, {"id": "2", "text": t2}, {"id": "3", "text": t3}])
    run_dedup(tmp_path / "documents", mode="paragraphs", name="pp")
    rows = [r["attributes"]["pp"] for r in _attrs(tmp_path, "pp", "p.jsonl.gz")]
    assert rows[0] == []
    # spans include the paragraph's newline; the empty paragraph is never marked; last has none
    assert rows[1] == [[10, 22, 1], [22, 33, 1], [34, 38, 1]]
    assert [t2[s:e] for s, e, _ in rows[1]] == ["shared para\n", "first para\n", "last"]
    assert rows[2] == [[11, 23, 1], [23, 33, 1]]  # repeat inside the same document; ends at len(text)
    assert t3[23:33] == "ü unique ü" and len(t3) == 33


# --- 13-gram overlap -------------------------------------------------------------------------------------
def _ngram_corpus(root: Path) -> tuple[str, str]:
    rng = random.Random(1)
    base = _words(rng, 40)  # 28 13-grams
    # shares its first 25 words with base -> 13 of its 28 13-grams seen... make it 60%:
    # a paragraph of 40 words sharing a prefix of p words has p-12 shared 13-grams out of 28
    shared = base[:29] + _words(rng, 11)  # 17 of 28 = 0.607
    p1 = " ".join(base)
    p2 = " ".join(shared)
    _write(root / "documents" / "n.jsonl.gz", [{"id": "1", "text": p1 + "\ntiny para"}, {"id": "2", "text": "intro line here\n" + p2 + "\ntiny para"}])
    return p1, p2


def test_ngram_overlap_threshold(tmp_path):
    _, p2 = _ngram_corpus(tmp_path)
    run_dedup(tmp_path / "documents", mode="ngrams", name="ng5", overlap_threshold=0.5)
    run_dedup(tmp_path / "documents", mode="ngrams", name="ng7", overlap_threshold=0.7)
    r5 = [r["attributes"]["ng5"] for r in _attrs(tmp_path, "ng5", "n.jsonl.gz")]
    r7 = [r["attributes"]["ng7"] for r in _attrs(tmp_path, "ng7", "n.jsonl.gz")]
    assert r5[0] == [] and r7[0] == []
    start = len("intro line here\n")
    end = start + len(p2) + 1
    assert r5[1][0][:2] == [start, end] and abs(r5[1][0][2] - 17 / 28) < 1e-6
    assert r5[1][1][:2] == [end, end + len("tiny para")]  # short paragraph: one n-gram, exact match
    assert r7[1] == [[end, end + len("tiny para"), 1.0]]


def test_decontamination_read_only_marks_but_does_not_add(tmp_path):
    rng = random.Random(2)
    eval_para = " ".join(_words(rng, 30))
    corpus_para = " ".join(_words(rng, 30))
    build_filter([eval_para], tmp_path / "eval.bin", mode="ngrams")
    before = (tmp_path / "eval.bin").read_bytes()
    docs = [
        {"id": "1", "text": "unrelated words here and there\n" + eval_para},
        {"id": "2", "text": corpus_para},
        {"id": "3", "text": corpus_para},  # a corpus-internal duplicate: not marked (filter not added to)
    ]
    _write(tmp_path / "documents" / "c.jsonl.gz", docs)
    run_dedup(tmp_path / "documents", mode="ngrams", name="decon", bloom_path=tmp_path / "eval.bin", read_only=True)
    rows = [r["attributes"]["decon"] for r in _attrs(tmp_path, "decon", "c.jsonl.gz")]
    off = len("unrelated words here and there\n")
    assert rows == [[[off, off + len(eval_para), 1.0]], [], []]
    assert (tmp_path / "eval.bin").read_bytes() == before
    with pytest.raises(DataError, match="read_only"):
        run_dedup(tmp_path / "documents", mode="ngrams", name="x", bloom_path=tmp_path / "nope.bin", read_only=True)


# --- MinHash -------------------------------------------------------------------------------------------
def test_minhash_clusters_near_duplicates(tmp_path):
    rng = random.Random(3)
    base = _words(rng, 200)
    near = list(base)
    near[100] = "changed"
    other = [_words(rng, 200) for _ in range(5)]
    docs = [{"id": "u0", "text": " ".join(other[0])}, {"id": "base", "text": " ".join(base)}]
    docs += [{"id": f"u{i}", "text": " ".join(o)} for i, o in enumerate(other[1:3], 1)]
    _write(tmp_path / "documents" / "m1.jsonl.gz", docs)
    _write(tmp_path / "documents" / "m2.jsonl.gz", [{"id": "near", "text": "\n".join(near)}, {"id": "u3", "text": " ".join(other[3])}])
    run_dedup(tmp_path / "documents", mode="minhash", name="mh")
    rows = _attrs(tmp_path, "mh", "m1.jsonl.gz") + _attrs(tmp_path, "mh", "m2.jsonl.gz")
    by = {r["id"]: r["attributes"] for r in rows}
    assert by["base"] == {"mh": [[0, len(" ".join(base)), 1]]}  # cluster id = global index of its first doc
    assert by["near"]["mh"][0][2] == 1 and by["near"]["mh_is_duplicate"] == [[0, len("\n".join(near)), 1]]
    assert all(by[u] == {} for u in ("u0", "u1", "u2", "u3"))
    s = json.loads((tmp_path / "attributes" / "mh" / SUMMARY_NAME).read_text())
    assert s["clusters"] == 1 and s["duplicate_documents"] == 1


# --- determinism and accounting ----------------------------------------------------------------------------
def test_same_output_for_one_and_two_workers(tmp_path, monkeypatch):
    monkeypatch.setattr("lmforge.corpus.dedup.MIN_BYTES_PER_WORKER", 0)  # really use 2 processes
    rng = random.Random(4)
    paras = [" ".join(_words(rng, rng.randrange(3, 30))) for _ in range(40)]
    docs = [{"id": f"d{i}", "text": "\n".join(rng.choice(paras) for _ in range(rng.randrange(1, 6)))} for i in range(120)]
    for s in range(3):
        _write(tmp_path / "documents" / f"s{s}.jsonl.gz", docs[s * 40 : (s + 1) * 40])
    for mode in ("documents", "paragraphs", "ngrams", "minhash"):
        out = []
        for w in (1, 2):
            run_dedup(tmp_path / "documents", mode=mode, name=f"{mode}{w}", attribute_name=mode, workers=w, threshold=0.5)
            out.append([_attrs(tmp_path, f"{mode}{w}", f"s{s}.jsonl.gz") for s in range(3)])
        assert out[0] == out[1], mode
        for sh in range(3):  # byte-identical files
            f1, f2 = (tmp_path / "attributes" / f"{mode}{w}" / f"s{sh}.jsonl.gz" for w in (1, 2))
            assert f1.read_bytes() == f2.read_bytes(), mode
        assert json.loads((tmp_path / "attributes" / f"{mode}2" / SUMMARY_NAME).read_text())["workers"] == 2
        assert any(r["attributes"].get(mode) for sh in out[0] for r in sh), mode


@pytest.mark.parametrize("mode", ["documents", "paragraphs", "ngrams", "minhash"])
def test_malformed_lines_accounted(tmp_path, mode):
    _write(tmp_path / "documents" / "x.jsonl.gz", [{"id": "1", "text": "a"}, {"id": "2", "text": "a"}], ["{not json", '{"id": "3"}', ""])
    _write(tmp_path / "documents" / "y.jsonl.gz", [], ["{not json"])  # no valid document at all
    acct = run_dedup(tmp_path / "documents", mode=mode, name="dd")
    assert acct.read == 6 and acct.kept == 2 and sum(acct.malformed.values()) == 4 and acct.balanced
    assert len(_attrs(tmp_path, "dd", "x.jsonl.gz")) == 2 and _attrs(tmp_path, "dd", "y.jsonl.gz") == []
    s = json.loads((tmp_path / "attributes" / "dd" / SUMMARY_NAME).read_text())
    assert s["accounting"]["read"] == 6 and s["duplicate_documents"] == 1


def test_dedup_command(tmp_path, capsys):
    _two_shards(tmp_path)
    assert main(["data", "dedup", "--documents", str(tmp_path / "documents"), "--mode", "documents", "--name", "dd"]) == 0
    assert "3 of 6 documents" in capsys.readouterr().out
    assert main(["data", "dedup", "--documents", str(tmp_path / "nowhere"), "--mode", "documents", "--name", "dd"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error:") and err.count("\n") == 1 and "nowhere" in err


def test_plain_jsonl_and_odd_ids(tmp_path):
    docs = [{"id": 'q"ü', "text": "same line\nsame line"}, {"id": 7, "text": "x\nsame line\n"}]
    p = tmp_path / "documents" / "plain.jsonl"
    p.parent.mkdir(parents=True)
    p.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    run_dedup(tmp_path / "documents", mode="paragraphs", name="pp")
    rows = list(read_attributes(tmp_path / "attributes" / "pp" / "plain.jsonl"))
    assert rows == [{"id": 'q"ü', "attributes": {"pp": [[10, 19, 1]]}}, {"id": "7", "attributes": {"pp": [[2, 12, 1]]}}]


def test_partitioned_minhash_clusters_equal_the_single_pass_for_any_number_of_buckets():
    """Band buckets + union-find over the verified pairs == cluster_minhash on the same signatures."""
    from lmforge.corpus.minhash import bucket_pairs, cluster_minhash, split_bands, union_clusters

    rng = np.random.default_rng(5)
    n, bands, rows = 600, 8, 4
    sigs = rng.integers(0, 2**32, size=(n, bands * rows), dtype=np.uint64).astype(np.uint32)
    for i in range(0, n, 7):  # near-duplicates: copies with a few values changed, chained across shards
        j = (i * 13) % n
        sigs[j] = sigs[i]
        sigs[j, rng.integers(0, bands * rows, size=3)] = rng.integers(0, 2**32, size=3, dtype=np.uint64).astype(np.uint32)
    band_keys = np.stack([np.bitwise_xor.reduce(sigs[:, b * rows : (b + 1) * rows].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15), axis=1)
                          for b in range(bands)], axis=1)
    want, stats = cluster_minhash(band_keys, sigs, 0.7)
    assert stats["clusters"] > 10
    sizes = [150, 250, 200]
    offsets = [0, 150, 400]
    for buckets in (1, 3, 7):
        shards = [split_bands(band_keys[o : o + s], sigs[o : o + s], buckets) for o, s in zip(offsets, sizes)]
        found = [bucket_pairs([sh[p] for sh in shards], offsets, 0.7) for p in range(buckets)]
        verified = np.unique(np.concatenate([v for _, v in found]), axis=0)
        candidates = np.unique(np.concatenate([c for c, _ in found]), axis=0)
        nodes, cluster = union_clusters(verified)
        got = np.full(n, -1, dtype=np.int64)
        got[nodes] = cluster
        assert (got == want).all(), buckets
        assert len(candidates) == stats["candidate_pairs"] and len(verified) == stats["verified_pairs"]


def test_union_of_verified_pairs_equals_a_sequential_union_find():
    """Min-label propagation gives every cluster its smallest document, chains and stars included."""
    from lmforge.corpus.minhash import find_root, union_clusters

    rng = np.random.default_rng(2)
    graphs = [np.stack([np.arange(299), np.arange(1, 300)], 1)[::-1], np.stack([np.full(50, 7), np.arange(100, 150)], 1)]
    graphs += [np.sort(rng.integers(0, n, size=(m, 2)), axis=1) for n, m in ((50, 40), (400, 300), (1000, 2000))]
    for pairs in graphs:
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        nodes, cluster = union_clusters(pairs)
        parent = np.arange(int(pairs.max()) + 1)
        for x, y in pairs.tolist():
            rx, ry = find_root(parent, x), find_root(parent, y)
            if rx != ry:
                parent[max(rx, ry)] = min(rx, ry)
        assert (nodes == np.unique(pairs)).all()
        assert (cluster == [find_root(parent, int(i)) for i in nodes]).all()


def test_paragraph_span_text_is_the_json_of_the_spans():
    """Paragraph spans are written as text built in bulk; it must be exactly json.dumps's numbers,
    every digit count from 1 to 16, documents with no, one and many spans."""
    import numpy as np

    from lmforge.corpus.dedup_phases import _span_list_texts

    rng = np.random.default_rng(0)
    start = np.sort(np.concatenate([rng.integers(0, 10 ** d, 40) for d in range(1, 17)]))
    end = start + rng.integers(1, 10**6, len(start))
    cut = [0, 0, 1, 1, 300, 300, len(start)]
    got = _span_list_texts(start, end, cut)
    want = [json.dumps([[s, e, 1] for s, e in zip(start[a:b].tolist(), end[a:b].tolist())], separators=(",", ":"))[1:-1]
            for a, b in zip(cut[:-1], cut[1:])]
    assert got == want and got[0] == "" and got[1].count("[") == 1
    assert _span_list_texts(start[:0], end[:0], [0, 0]) == [""]


@pytest.mark.parametrize("mode", ["paragraphs", "ngrams"])
def test_bloom_filter_step_in_parts_gives_the_same_bits_and_marks(tmp_path, mode, monkeypatch):
    """The filter step split by ranges of blocks (one task per part, in parallel) must leave the
    same filter file, byte for byte, and the same attributes as one task; also across two runs
    (the second incremental, starting from the first's filter) and read-only."""
    monkeypatch.setattr("lmforge.corpus.dedup.MIN_BYTES_PER_WORKER", 0)  # really use 2 processes
    rng = random.Random(7)
    paras = [" ".join(_words(rng, rng.randrange(3, 30))) for _ in range(300)]
    docs = [{"id": f"d{i}", "text": "\n".join(rng.choice(paras) for _ in range(rng.randrange(1, 8)))} for i in range(400)]
    for s in range(4):
        _write(tmp_path / "a" / "documents" / f"s{s}.jsonl.gz", docs[s * 50 : (s + 1) * 50])
        _write(tmp_path / "b" / "documents" / f"s{s}.jsonl.gz", docs[200 + s * 50 : 200 + (s + 1) * 50])
    results = {}
    for parts, workers in ((1, 1), (2, 2), (3, 2)):
        bf = tmp_path / f"f{parts}.bloom"
        for run in ("a", "b"):
            run_dedup(tmp_path / run / "documents", mode=mode, name=f"p{parts}", attribute_name="dup", bloom_path=bf, expected_items=20_000,
                      filter_parts=parts, workers=workers)
        run_dedup(tmp_path / "a" / "documents", mode=mode, name=f"ro{parts}", attribute_name="dup", bloom_path=bf, read_only=True,
                  filter_parts=parts, workers=workers)
        files = sorted((tmp_path / r / "attributes" / n / f"s{s}.jsonl.gz") for r in "ab" for n in (f"p{parts}", f"ro{parts}") for s in range(4)
                       if (tmp_path / r / "attributes" / n).is_dir())
        results[parts] = (bf.read_bytes(), [f.read_bytes() for f in files])
        summary = json.loads((tmp_path / "b" / "attributes" / f"p{parts}" / SUMMARY_NAME).read_text())
        assert summary["bloom_filter"]["parts"] == parts and summary["keys_found_in_filter"] > 0
    assert results[1] == results[2] == results[3]
    assert any(r["attributes"]["dup"] for r in _attrs(tmp_path / "b", "p1", "s0.jsonl.gz"))  # the second run found the first's text
    with pytest.raises(Exception, match="filter_parts must be >= 1"):
        DedupConfig(documents=[str(tmp_path)], mode=mode, filter_parts=0).validate()
