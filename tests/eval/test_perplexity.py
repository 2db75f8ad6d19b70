"""Paloma-style perplexity suite: windowing, exact per-document sums, per-domain and macro figures,
bits per byte in bytes, layouts, accounting of empty/malformed lines, the results file."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
import torch

from lmforge.config import ConfigError
from lmforge.cli.eval import cmd_perplexity
from lmforge.eval.config import PerplexityEvalConfig
from lmforge.eval.perplexity import (
    Window,
    discover_domains,
    perplexity_suite,
    plan_windows,
    score_token_lists,
)
from lmforge.nn.loss import IGNORE_INDEX
from tests.conftest import tiny_config

L = 8
LENGTHS = (1, 7, 8, 9, 20, 33)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = tiny_config(vocab_size=384, max_seq_len=64).build()
    return m.eval()


def write_jsonl(path, rows, raw_lines=()):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows] + list(raw_lines)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if str(path).endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)


def docs(*texts):
    return [{"id": str(i), "text": t, "source": "test"} for i, t in enumerate(texts)]


def expected_start(k: int, n: int, max_len: int) -> int:
    """The rule, stated independently: token k (0-based) is target seq[k+1]; blocks of max_len
    predicted tokens; a full block reads from its own first position, the last partial block reads the
    last max_len positions of seq."""
    b = k // max_len
    if (b + 1) * max_len <= n:
        return b * max_len
    return max(0, n - max_len)


def brute_force_nll(model, tokens, prefix_id, max_len) -> float:
    """One forward per token, with exactly the context the rule gives it."""
    seq = [prefix_id] + list(tokens)
    total = 0.0
    with torch.no_grad():
        for k in range(len(tokens)):
            j = k + 1
            ctx = torch.tensor([seq[expected_start(k, len(tokens), max_len) : j]])
            logits = model(ctx)[0, -1].double()
            total += float(torch.logsumexp(logits, -1) - logits[seq[j]])
    return total


# --- windows ------------------------------------------------------------------------------------------
def test_plan_windows_examples():
    assert plan_windows(0, L) == []
    assert plan_windows(1, L) == [Window(0, 1, 1)]
    assert plan_windows(8, L) == [Window(0, 8, 8)]
    assert plan_windows(9, L) == [Window(0, 8, 8), Window(1, 9, 1)]
    assert plan_windows(20, L) == [Window(0, 8, 8), Window(8, 16, 8), Window(12, 20, 4)]


@pytest.mark.parametrize("max_len", [1, 2, 3, 8])
def test_every_token_predicted_once_with_the_right_context(max_len):
    for n in (*LENGTHS, *range(0, 26)):
        windows = plan_windows(n, max_len)
        predicted = []
        for w in windows:
            assert 0 <= w.start < w.end <= n and 1 <= w.n_scored <= w.end - w.start
            assert w.end - w.start == min(max_len, n)  # every window is as long as the document allows
            targets = list(range(w.end - w.n_scored + 1, w.end + 1))  # positions in seq = [prefix] + tokens
            for j in targets:
                # target seq[j] is predicted from seq[w.start:j]: earlier tokens only, never itself
                assert w.start == expected_start(j - 1, n, max_len)
            predicted += targets
        assert predicted == list(range(1, n + 1)), (n, max_len, windows)  # each exactly once, in order


def test_window_sums_match_brute_force(model):
    rng = np.random.default_rng(0)
    token_lists = [rng.integers(0, 384, size=n).tolist() for n in LENGTHS]
    prefix = 0
    for batch_size in (1, 3, 16):  # padding and mixed-length batches change nothing
        got = score_token_lists(model, token_lists, prefix_id=prefix, max_len=L, batch_size=batch_size)
        want = [brute_force_nll(model, t, prefix, L) for t in token_lists]
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-5)


def test_per_token_nll_agrees_with_the_model_loss(model):
    from lmforge.eval.perplexity import _token_nll

    ids = torch.randint(0, 384, (3, 10), generator=torch.Generator().manual_seed(1))
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, :-1] = ids[:, 1:]
    labels[1, :6] = IGNORE_INDEX
    with torch.no_grad():
        per_token = _token_nll(model, ids, labels)
        ref = model(ids, labels=labels, reduction="sum")
    assert torch.allclose(per_token.sum().double(), ref.ce.double(), rtol=1e-5)
    assert (per_token[labels == IGNORE_INDEX] == 0).all()


# --- the suite ------------------------------------------------------------------------------------------
TEXTS_A = ("The model reads open data.", "Science history river mountain city language music number table chair window garden light " * 3)
TEXTS_B = ("x = f(y) + 1", "def f(a, b):\n  return a", "Tokenizer bytes merge pairs")


def by_hand(model, tok, texts):
    nll = sum(brute_force_nll(model, tok.encode(t), tok.eos_token_id, L) for t in texts)
    tokens = sum(len(tok.encode(t)) for t in texts)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    return nll, tokens, nbytes


def test_domains_and_macro_by_hand(model, bpe_tokenizer, tmp_path):
    write_jsonl(tmp_path / "src" / "alpha" / "part-0.jsonl", docs(TEXTS_A[0]))
    write_jsonl(tmp_path / "src" / "alpha" / "part-1.jsonl.gz", docs(TEXTS_A[1]))
    write_jsonl(tmp_path / "src" / "beta" / "0.jsonl", docs(*TEXTS_B))
    r = perplexity_suite(model, bpe_tokenizer, tmp_path / "src", max_seq_len=L, batch_size=4, progress=False)
    assert r["settings"]["first_token_context"] == "eos" and r["settings"]["prefix_token_id"] == bpe_tokenizer.eos_token_id
    assert list(r["domains"]) == ["src/alpha", "src/beta"]
    want = {}
    for key, texts in (("src/alpha", TEXTS_A), ("src/beta", TEXTS_B)):
        nll, tokens, nbytes = by_hand(model, bpe_tokenizer, texts)
        d = r["domains"][key]
        assert d["documents"] == len(texts) and d["tokens"] == tokens and d["bytes"] == nbytes
        assert d["nll"] == pytest.approx(nll, rel=2e-5)
        assert d["ppl"] == pytest.approx(math.exp(nll / tokens), rel=2e-5)
        assert d["bpb"] == pytest.approx(nll / (nbytes * math.log(2)), rel=2e-5)
        want[key] = (nll, tokens, nbytes, math.exp(nll / tokens), nll / (nbytes * math.log(2)))
    s = r["sources"]["src"]
    (na, ta, ba, pa, bpa), (nb, tb, bb, pb, bpb_b) = want["src/alpha"], want["src/beta"]
    assert s["domains"] == s["scored_domains"] == 2
    assert s["macro_ppl"] == pytest.approx((pa + pb) / 2, rel=2e-5)
    assert s["macro_bpb"] == pytest.approx((bpa + bpb_b) / 2, rel=2e-5)
    assert s["micro_ppl"] == pytest.approx(math.exp((na + nb) / (ta + tb)), rel=2e-5)
    assert s["micro_bpb"] == pytest.approx((na + nb) / ((ba + bb) * math.log(2)), rel=2e-5)
    assert s["macro_bpb"] != pytest.approx(s["micro_bpb"], rel=1e-6)  # the two weightings differ here
    assert r["overall"]["macro_bpb"] == pytest.approx(s["macro_bpb"])


def test_bits_per_byte_counts_utf8_bytes(model, bpe_tokenizer, tmp_path):
    text = "Café naïve 日本語 Ünïcödé emoji 🙂"
    write_jsonl(tmp_path / "d" / "uni.jsonl", docs(text))
    r = perplexity_suite(model, bpe_tokenizer, tmp_path / "d", max_seq_len=L, progress=False)
    d = r["domains"]["d/uni"]
    assert d["bytes"] == len(text.encode("utf-8")) > len(text)
    assert d["bpb"] == pytest.approx(d["nll"] / (len(text.encode("utf-8")) * math.log(2)))
    nll, tokens, _ = by_hand(model, bpe_tokenizer, [text])
    assert d["tokens"] == tokens and d["nll"] == pytest.approx(nll, rel=2e-5)


def test_layouts(tmp_path):
    # Paloma: SOURCE/val/val_DOMAIN.jsonl.gz (the test split is ignored)
    write_jsonl(tmp_path / "paloma" / "dolma" / "val" / "val_books.jsonl.gz", docs("a"))
    write_jsonl(tmp_path / "paloma" / "dolma" / "val" / "val_wiki.jsonl.gz", docs("b"))
    write_jsonl(tmp_path / "paloma" / "dolma" / "test" / "test_books.jsonl.gz", docs("c"))
    write_jsonl(tmp_path / "paloma" / "c4_en" / "val" / "val.jsonl.gz", docs("d"))
    got = [(d.key, len(d.files)) for d in discover_domains(tmp_path / "paloma" / "dolma")]
    assert got == [("dolma/books", 1), ("dolma/wiki", 1)]
    # the whole download: each child with val/ is a source
    got = [d.key for d in discover_domains(tmp_path / "paloma")]
    assert got == ["c4_en/c4_en", "dolma/books", "dolma/wiki"]
    with pytest.warns(UserWarning, match="c4_en: has no test/ directory"):
        assert [d.key for d in discover_domains(tmp_path / "paloma", split="test")] == ["dolma/books"]
    # DIR/<domain>/ shards, and files directly in DIR as domains of their own
    write_jsonl(tmp_path / "mine" / "news" / "a" / "0.jsonl", docs("e"))
    write_jsonl(tmp_path / "mine" / "news" / "1.jsonl", docs("f"))
    write_jsonl(tmp_path / "mine" / "code.jsonl", docs("g"))
    (tmp_path / "mine" / "README.md").write_text("not data")
    got = [(d.key, len(d.files)) for d in discover_domains(tmp_path / "mine")]
    assert got == [("mine/code", 1), ("mine/news", 2)]
    # one file; several paths
    f = tmp_path / "paloma" / "dolma" / "val" / "val_books.jsonl.gz"
    assert [d.key for d in discover_domains(f)] == ["dolma/books"]
    assert [d.key for d in discover_domains([tmp_path / "mine", f])] == ["mine/code", "mine/news", "dolma/books"]
    from lmforge.data.documents import DataError

    with pytest.raises(DataError, match="no such file"):
        discover_domains(tmp_path / "missing")
    with pytest.raises(DataError, match="found twice"):
        discover_domains([tmp_path / "mine", tmp_path / "mine"])
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DataError, match="no document files"):
        discover_domains(tmp_path / "emptydir")


def test_empty_and_malformed_are_counted(model, bpe_tokenizer, tmp_path):
    good = docs("Good text here.", "More good text.")
    empties = [{"id": "e1", "text": ""}, {"id": "e2", "text": "  \n\t"}]
    bad = ["{not json", "", json.dumps({"id": "x"}), json.dumps([1, 2])]
    write_jsonl(tmp_path / "s" / "mixed.jsonl", good + empties, raw_lines=bad)
    write_jsonl(tmp_path / "s" / "nothing.jsonl", empties)
    r = perplexity_suite(model, bpe_tokenizer, tmp_path / "s", max_seq_len=L, progress=False)
    a = r["domains"]["s/mixed"]["accounting"]
    assert (a["scored"], a["empty"], a["malformed"]) == (2, 2, 4)
    assert a["detail"]["balanced"] and a["detail"]["read"] == 8
    assert any(w.endswith("mixed.jsonl:5") for ex in a["detail"]["malformed_examples"].values() for w in ex)
    n = r["domains"]["s/nothing"]
    assert n["documents"] == 0 and n["ppl"] is None and n["bpb"] is None and n["accounting"]["empty"] == 2
    s = r["sources"]["s"]
    assert s["unscored_domains"] == ["s/nothing"] and s["scored_domains"] == 1
    assert s["macro_bpb"] == pytest.approx(r["domains"]["s/mixed"]["bpb"])


def test_max_documents_and_bad_settings(model, bpe_tokenizer, tmp_path):
    write_jsonl(tmp_path / "s" / "a.jsonl", docs("one", "two", "three"))
    r = perplexity_suite(model, bpe_tokenizer, tmp_path / "s", max_seq_len=L, max_documents=2, progress=False)
    assert r["domains"]["s/a"]["documents"] == 2
    with pytest.raises(ConfigError, match="exceeds"):
        perplexity_suite(model, bpe_tokenizer, tmp_path / "s", max_seq_len=65, progress=False)


def test_cmd_perplexity_writes_results(model, bpe_tokenizer, tmp_path, capsys, monkeypatch):
    from lmforge.checkpoint.unsharded import save_model

    ckpt = save_model(tmp_path / "ckpt", model, tokenizer=bpe_tokenizer)
    write_jsonl(tmp_path / "data" / "a" / "0.jsonl", docs(*TEXTS_A))
    write_jsonl(tmp_path / "data" / "b" / "0.jsonl", docs(*TEXTS_B))
    monkeypatch.setattr("sys.argv", ["lmforge", "eval", "perplexity", str(ckpt), str(tmp_path / "data")])
    out = tmp_path / "res" / "ppl.json"
    cfg = PerplexityEvalConfig(model=str(ckpt), data=[str(tmp_path / "data")], out=str(out), max_seq_len=L, batch_size=4, device="cpu", progress=False)
    doc = cmd_perplexity(cfg)
    loaded = json.loads(out.read_text())
    assert loaded == json.loads(json.dumps(doc))
    assert loaded["model"] == str(ckpt) and loaded["command"][:3] == ["lmforge", "eval", "perplexity"]
    assert loaded["config"]["max_seq_len"] == 64 and loaded["lmforge_version"] and loaded["date"]
    assert set(loaded["domains"]) == {"data/a", "data/b"} and loaded["sources"]["data"]["scored_domains"] == 2
    assert [p.name for p in out.parent.iterdir()] == ["ppl.json"]  # atomic: no temporary left behind
    printed = capsys.readouterr().out
    assert "| data | a |" in printed and "macro bpb" in printed
    # the same model in memory gives the same numbers
    direct = perplexity_suite(model, bpe_tokenizer, tmp_path / "data", max_seq_len=L, progress=False)
    assert loaded["sources"]["data"]["macro_bpb"] == pytest.approx(direct["sources"]["data"]["macro_bpb"], rel=1e-6)
