"""lmforge.corpus.tokenize: Dolma documents -> OLMo token files (dolma's raw .npy + .csv.gz format)."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.data.documents import DataError
from lmforge.data.token_files import SUMMARY_NAME, choose_dtype, detokenize_check, read_metadata, read_summary, read_token_file
from tests.conftest import run_tokenize

_WORDS = "the model reads open data and learns to predict next token river café 日本語 emoji 🙂 def f(a, b): return a + b".split()


def _text(rng: random.Random) -> str:
    lines = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 6))]
    text = "\n".join(lines)
    if rng.random() < 0.3:
        text = "  " + text + "\n\n"  # leading/trailing whitespace is kept (round trip is exact)
    return text


def _docs(n: int, seed: int, prefix: str) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f'{prefix}-{i},"q"' if i % 7 == 0 else f"{prefix}-{i}", "text": _text(rng), "source": "test"} for i in range(n)]


def _write(path, lines: list[str]) -> None:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from lmforge.tokenizer import train_bpe

    d = tmp_path_factory.mktemp("tok")
    rng = random.Random(1)
    (d / "corpus.txt").write_text("\n".join(_text(rng) for _ in range(300)), encoding="utf-8")
    t = train_bpe([str(d / "corpus.txt")], 400, d / "tok.json", show_progress=False)
    return t, d / "tok.json"


@pytest.fixture()
def corpus(tmp_path):
    """Three shards: gz, plain, and one with malformed lines. Returns (root, {shard name: docs})."""
    root = tmp_path / "documents"
    shards = {
        "a.jsonl.gz": _docs(120, 0, "a"),
        "b.jsonl": _docs(40, 1, "b"),
    }
    for name, docs in shards.items():
        _write(root / name, [json.dumps(d, ensure_ascii=False) for d in docs])
    good = _docs(10, 2, "c")
    lines = [json.dumps(good[0]), "{not json", json.dumps({"id": "x"}), "", json.dumps({"id": "e", "text": "  \n"}), json.dumps(good[1]), "[1, 2]"]
    lines += [json.dumps(d) for d in good[2:]]
    _write(root / "sub" / "c.jsonl.gz", lines)
    shards["sub/c.jsonl.gz"] = good
    return root, shards


def _all_rows(out):
    s = read_summary(out)
    for f in s["files"]:
        toks = read_token_file(out / f["npy"], s["dtype"])
        yield f, toks, read_metadata(out / f["metadata"])


def test_round_trip_metadata_and_eos(tok, corpus, tmp_path):
    t, tok_path = tok
    root, shards = corpus
    out = tmp_path / "out"
    s = run_tokenize([root], tok_path, out, max_tokens_per_file=2000)
    texts = {d["id"]: d["text"] for docs in shards.values() for d in docs}
    seen = {}
    total = 0
    for f, toks, rows in _all_rows(out):
        assert toks.dtype == np.uint16
        assert len(toks) <= 2000 and len(toks) == f["tokens"]
        assert rows[0].start == 0 and rows[-1].end == len(toks)
        for prev, r in zip(rows, rows[1:]):
            assert r.start == prev.end
        for r in rows:
            assert toks[r.end - 1] == t.eos_token_id
            assert t.decode(toks[r.start : r.end - 1].tolist()) == texts[r.id]
            assert r.src.endswith(".jsonl.gz") or r.src.endswith(".jsonl")
            seen[r.id] = (r.src, r.loc)
        total += len(toks)
    assert set(seen) == set(texts)
    assert seen["c-1"][1] == 6  # 1-based line number in the source file
    assert s["tokens"] == total and s["documents"] == len(texts)
    names = [f["npy"] for f in s["files"]]
    assert names == sorted(names) and names[0] == "part-00000-00000.npy" and "part-00000-00001.npy" in names
    assert s["tokenizer"]["eos_token_id"] == t.eos_token_id and len(s["tokenizer"]["sha256"]) == 64
    rep = detokenize_check(out, samples=None)
    assert rep["ok"], rep["problems"]
    assert rep["documents_decoded"] == len(texts)


def test_raw_memmap_without_header_and_dolma_csv(tok, corpus, tmp_path):
    _, tok_path = tok
    root, _ = corpus
    out = tmp_path / "out"
    s = run_tokenize([root / "b.jsonl"], tok_path, out)
    npy = out / "part-00000-00000.npy"
    assert npy.stat().st_size == 2 * s["tokens"]  # no numpy header
    with gzip.open(out / "part-00000-00000.csv.gz", "rt", newline="") as f:
        first = f.readline()
    assert first.endswith("\r\n") and first.split(",")[0] == "0"  # start,end,id,src,loc (dolma's csv)


def test_malformed_lines_accounted(tok, corpus, tmp_path):
    _, tok_path = tok
    root, shards = corpus
    s = run_tokenize([root], tok_path, tmp_path / "out")
    acct = s["accounting"]
    assert acct["balanced"] and acct["kept"] == sum(len(d) for d in shards.values())
    assert acct["malformed"] == {"bad JSON": 1, "missing text": 1, "blank line": 1, "empty document": 1, "not a JSON object": 1}
    assert acct["read"] == acct["kept"] + 5
    assert any(w.endswith("c.jsonl.gz:2") for w in acct["malformed_examples"]["bad JSON"])


def test_dtype_rule_and_override(tok, corpus, tmp_path):
    t, tok_path = tok
    root, _ = corpus
    assert choose_dtype(50_304) == np.uint16 and choose_dtype(65_536) == np.uint16
    assert choose_dtype(65_537) == np.uint32 and choose_dtype(100_278) == np.uint32
    a = run_tokenize([root], tok_path, tmp_path / "a")
    b = run_tokenize([root], tok_path, tmp_path / "b", dtype="uint32")
    assert b["dtype"] == "uint32" and read_summary(tmp_path / "b")["dtype"] == "uint32"
    for fa, fb in zip(a["files"], b["files"]):
        ta = read_token_file(tmp_path / "a" / fa["npy"])
        tb = read_token_file(tmp_path / "b" / fb["npy"])
        assert tb.dtype == np.uint32 and (tmp_path / "b" / fb["npy"]).stat().st_size == 4 * len(tb)
        assert np.array_equal(ta.astype(np.uint32), tb)
    with pytest.raises(DataError, match="uint8 cannot hold"):
        run_tokenize([root], tok_path, tmp_path / "c", dtype="uint8")


def test_workers_do_not_change_bytes(tok, corpus, tmp_path):
    _, tok_path = tok
    root, _ = corpus
    one = run_tokenize([root], tok_path, tmp_path / "w1", workers=1, max_tokens_per_file=1500)
    two = run_tokenize([root], tok_path, tmp_path / "w2", workers=2, max_tokens_per_file=1500)
    assert one["files"] == two["files"]
    names = sorted(p.name for p in (tmp_path / "w1").iterdir() if p.name.startswith("part-"))
    assert names == sorted(p.name for p in (tmp_path / "w2").iterdir() if p.name.startswith("part-"))
    assert len(names) >= 6
    for n in names:
        assert (tmp_path / "w1" / n).read_bytes() == (tmp_path / "w2" / n).read_bytes(), n


def test_truncated_gz_keeps_earlier_documents(tok, corpus, tmp_path):
    t, tok_path = tok
    root, shards = corpus
    bad = root / "a.jsonl.gz"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "out"
    with pytest.raises(DataError) as e:
        run_tokenize([root], tok_path, out)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and "truncated" in msg
    s = read_summary(out)
    assert len(s["errors"]) == 1 and str(bad) in s["errors"][0]
    a_rows = [r for f, _, rows in _all_rows(out) for r in rows if r.src == str(bad)]
    assert 0 < len(a_rows) < len(shards["a.jsonl.gz"])
    assert s["accounting"]["kept"] == len(a_rows) + len(shards["b.jsonl"]) + len(shards["sub/c.jsonl.gz"])
    assert s["accounting"]["balanced"]
    assert detokenize_check(out, samples=None)["ok"]
    # the CLI: exit code 1 and a one-line message; a rerun skips the finished shards but reports again
    assert main(["data", "tokenize", "--documents", str(root), "--tokenizer", str(tok_path), "--out", str(out)]) == 1
    assert read_summary(out)["shards_skipped"] == 3


def test_rerun_skips_complete_outputs(tok, corpus, tmp_path):
    _, tok_path = tok
    root, _ = corpus
    out = tmp_path / "out"
    first = run_tokenize([root], tok_path, out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")}
    second = run_tokenize([root], tok_path, out)
    assert second["shards_skipped"] == 3 and second["files"] == first["files"]
    assert second["accounting"] == first["accounting"] and second["tokens"] == first["tokens"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*")} == mtimes
    # a damaged output or a changed input is redone; the rest is skipped
    (out / "part-00002-00000.npy").write_bytes(b"xx")
    _write(root / "b.jsonl", [json.dumps(d) for d in _docs(5, 9, "b")])
    third = run_tokenize([root], tok_path, out)
    assert third["shards_skipped"] == 1
    assert (out / "part-00000-00000.npy").stat().st_mtime_ns == mtimes["part-00000-00000.npy"]
    assert third["accounting"]["kept"] == first["accounting"]["kept"] - 35
    assert detokenize_check(out, samples=None)["ok"]
    # fewer inputs: files of vanished shard indices are removed
    run_tokenize([root / "a.jsonl.gz"], tok_path, out)
    assert sorted(p.name for p in out.glob("part-*.npy")) == ["part-00000-00000.npy"]
    assert not list(out.glob(".*.tmp"))


def test_bos_strip_and_cli(tok, corpus, tmp_path, capsys):
    t, tok_path = tok
    root, shards = corpus
    with pytest.raises(DataError, match="no BOS"):
        run_tokenize([root], tok_path, tmp_path / "x", add_bos=True)
    s = run_tokenize([root / "b.jsonl"], tok_path, tmp_path / "bos", add_bos=True, bos_id=t.pad_token_id, strip_whitespace=True)
    docs = {d["id"]: d["text"] for d in shards["b.jsonl"]}
    for _, toks, rows in _all_rows(tmp_path / "bos"):
        for r in rows:
            assert toks[r.start] == t.pad_token_id and toks[r.end - 1] == t.eos_token_id
            assert toks[r.start + 1 : r.end - 1].tolist() == t.encode(docs[r.id].strip())
    assert s["bos_written"] == t.pad_token_id
    assert detokenize_check(tmp_path / "bos", samples=None)["ok"]
    assert main(["data", "tokenize", "--documents", str(root), "--tokenizer", str(tok_path), "--out", str(tmp_path / "cli"), "--workers", "2"]) == 0
    assert "tokenized 170 documents" in capsys.readouterr().out
    assert (tmp_path / "cli" / SUMMARY_NAME).is_file()
    assert main(["data", "tokenize", "--documents", str(tmp_path / "nothing"), "--tokenizer", str(tok_path), "--out", str(tmp_path / "cli2")]) == 2
    err = capsys.readouterr().err
    assert "nothing" in err and err.startswith("lmforge: error:")


def test_document_longer_than_file_limit_gets_its_own_file(tok, corpus, tmp_path):
    _, tok_path = tok
    root, shards = corpus
    s = run_tokenize([root / "b.jsonl"], tok_path, tmp_path / "out", max_tokens_per_file=2)
    assert len(s["files"]) == len(shards["b.jsonl"]) == s["documents"]
    assert all(f["documents"] == 1 for f in s["files"])
    assert detokenize_check(tmp_path / "out", samples=None)["ok"]


def test_cli_accepts_an_olmo_tokenizer_name(corpus, tmp_path, capsys):
    """`--tokenizer olmo2` resolves to OLMo-2's own file (fetched once) with its registered EOS id."""
    from lmforge.tokenizer.olmo import load_olmo_tokenizer

    root, shards = corpus
    assert main(["data", "tokenize", "--documents", str(root / "b.jsonl"), "--tokenizer", "olmo2", "--out", str(tmp_path / "o2")]) == 0
    olmo2 = load_olmo_tokenizer("olmo2")
    docs = {d["id"]: d["text"] for d in shards["b.jsonl"]}
    rows = [(toks, r) for _, toks, rs in _all_rows(tmp_path / "o2") for r in rs]
    assert rows and read_summary(tmp_path / "o2")["dtype"] == "uint32"  # 100,278 ids do not fit uint16
    for toks, r in rows:
        assert toks[r.end - 1] == 100257
        assert toks[r.start : r.end - 1].tolist() == olmo2.encode(docs[r.id])
    assert main(["data", "tokenize", "--documents", str(root), "--tokenizer", "olmo3", "--out", str(tmp_path / "x")]) == 2
    assert "olmo3" in capsys.readouterr().err
