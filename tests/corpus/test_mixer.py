"""The mixer: typed rules over attributes, span edits (PII masks, paragraph removal), sampling,
bounded shards, accounting of every input line, and the warnings for rules that never fire."""

import json
from pathlib import Path

import pytest

from lmforge.data.documents import Accounting, DataError, Document, list_shards, read_documents, write_attributes, write_documents
from lmforge.corpus.mixer import MixerConfig, MixRule, SpanEdit, apply_span_edits, copies_for, mix, pii_span_edits


def make_corpus(root: Path, n_shards: int = 2, per_shard: int = 10, malformed: bool = False):
    """Documents with known attributes: quality score = i % 3, one email span in every 4th doc."""
    docs_dir = root / "documents"
    for s in range(n_shards):
        docs, rows = [], []
        for j in range(per_shard):
            i = s * per_shard + j
            text = f"Document {i} is here.\nSecond paragraph {i}.\n"
            attrs = {"q__quality__score": [[0, len(text), i % 3]], "q__pii__email": []}
            if i % 4 == 0:
                text = f"Mail me at a{i}@example.com please.\n" + text
                attrs = {"q__quality__score": [[0, len(text), i % 3]], "q__pii__email": [[11, 11 + len(f"a{i}@example.com"), 1.0]]}
            source = "web" if i % 2 else "books"
            docs.append(Document(id=f"d{i}", text=text, source=source))
            rows.append((f"d{i}", attrs))
        path = docs_dir / f"shard-{s}.jsonl.gz"
        write_documents(path, docs)
        if malformed:  # append junk lines: counted as malformed, no attribute lines for them
            import gzip

            with gzip.open(path, "ab") as f:
                f.write(b"{not json\n\xff\xfe\n")
        write_attributes(root / "attributes" / "q" / f"shard-{s}.jsonl.gz", rows)
    return docs_dir


def read_all(out: Path):
    docs = []
    for p in list_shards(out / "documents"):
        docs.extend(read_documents(p))
    return docs


def test_rules_drop_and_keep_with_int_float_equality(tmp_path):
    docs_dir = make_corpus(tmp_path)
    # the attribute holds integers (0, 1, 2); the rule uses floats: 1 == 1.0 must match
    cfg = MixerConfig(
        documents=[str(docs_dir)], attributes=["q"], output=str(tmp_path / "out"),
        rules=[MixRule(attribute="q__quality__score", op="==", value=1.0, action="drop", name="score is 1")],
    )
    summary = mix(cfg, progress=False)
    kept = read_all(tmp_path / "out")
    assert {d.id for d in kept} == {f"d{i}" for i in range(20) if i % 3 != 1}
    acct = summary["accounting"]
    assert acct["read"] == 20 and acct["kept"] == 13 and acct["dropped"] == {"score is 1": 7} and acct["balanced"]
    assert summary["rules"]["score is 1"] == {"matched": 7, "dropped": 7}

    keep = MixerConfig(
        documents=[str(docs_dir)], attributes=["q"], output=str(tmp_path / "out2"),
        rules=[MixRule(attribute="q__quality__score", op=">=", value=2, action="keep")],
    )
    assert {d.id for d in read_all(Path(mix(keep, progress=False)["files"][0]).parents[1])} == {f"d{i}" for i in range(20) if i % 3 == 2}


def test_rules_that_never_fire_are_reported(tmp_path):
    docs_dir = make_corpus(tmp_path)
    cfg = MixerConfig(
        documents=[str(docs_dir)], attributes=["q"], output=str(tmp_path / "out"),
        rules=[
            MixRule(attribute="q__quality__scor", op="<", value=1),  # typo: key never present
            MixRule(attribute="q__quality__score", op=">", value=5),  # present, never true
        ],
    )
    summary = mix(cfg, progress=False)
    assert summary["accounting"]["kept"] == 20
    warnings = "\n".join(summary["warnings"])
    assert "'q__quality__scor' never present" in warnings
    assert "never dropped a document" in warnings


def test_pii_masking_and_paragraph_removal():
    text = "Write to bob@example.com today.\nDup paragraph.\nKeep me.\n"
    attrs = {
        "q__pii__email": [[9, 24, 1.0]],
        "dd__paragraph": [[32, 47, 1]],  # "Dup paragraph.\n"
    }
    edits = pii_span_edits("q") + [SpanEdit(attribute="dd__paragraph", replacement="")]
    from collections import Counter

    counts = Counter()
    out = apply_span_edits(text, attrs, edits, counts)
    assert out == "Write to |||EMAIL_ADDRESS||| today.\nKeep me.\n"
    assert counts == {"q__pii__email": 1, "dd__paragraph": 1}
    # overlapping spans merge; a low score below min_score is left alone
    assert apply_span_edits("abcdef", {"k": [[1, 4, 1], [2, 5, 1]]}, [SpanEdit(attribute="k", replacement="X")], Counter()) == "aXf"
    assert apply_span_edits("abcdef", {"k": [[1, 4, 0.2]]}, [SpanEdit(attribute="k", replacement="X", min_score=0.5)], Counter()) == "abcdef"


def test_mixer_masks_pii_in_output(tmp_path):
    docs_dir = make_corpus(tmp_path)
    cfg = MixerConfig(documents=[str(docs_dir)], attributes=["q"], output=str(tmp_path / "out"), span_edits=pii_span_edits("q"))
    summary = mix(cfg, progress=False)
    docs = {d.id: d for d in read_all(tmp_path / "out")}
    assert docs["d0"].text.startswith("Mail me at |||EMAIL_ADDRESS||| please.")
    assert not any("@example.com" in d.text for d in docs.values())
    assert summary["span_edits"] == {"q__pii__email": 5}
    assert any("phone" in w for w in summary["warnings"])  # no phone attribute in this corpus: said so


def test_sampling_per_source_is_deterministic(tmp_path):
    docs_dir = make_corpus(tmp_path, per_shard=50)
    cfg = MixerConfig(documents=[str(docs_dir)], attributes=["q"], output=str(tmp_path / "out"), sampling={"web": 2.0, "books": 0.5}, seed=3)
    summary = mix(cfg, progress=False)
    docs = read_all(tmp_path / "out")
    web = [d for d in docs if d.source == "web"]
    books = [d for d in docs if d.source == "books"]
    assert len(web) == 2 * 50  # every web document twice
    expected_books = sum(copies_for(f"d{i}", 0.5, 3) for i in range(100) if i % 2 == 0)
    assert len(books) == expected_books and 10 < expected_books < 40
    acct = summary["accounting"]
    assert acct["kept"] + acct["dropped"].get("sampled out (books)", 0) == 100
    assert summary["written_documents"] == 100 + expected_books


def test_bounded_shards_workers_and_rerun(tmp_path):
    docs_dir = make_corpus(tmp_path, n_shards=3, per_shard=20)
    base = dict(documents=[str(docs_dir)], attributes=["q"], max_shard_bytes=300, compression="none")
    one = mix(MixerConfig(output=str(tmp_path / "w1"), workers=1, **base), progress=False)
    two = mix(MixerConfig(output=str(tmp_path / "w2"), workers=2, **base), progress=False)
    assert len(one["files"]) > 3  # shards were split at the size bound
    for a, b in zip(one["files"], two["files"]):
        assert Path(a).name == Path(b).name and Path(a).read_bytes() == Path(b).read_bytes()
    before = {f: Path(f).stat().st_mtime_ns for f in one["files"]}
    again = mix(MixerConfig(output=str(tmp_path / "w1"), workers=1, **base), progress=False)
    assert again["accounting"] == one["accounting"]
    assert {f: Path(f).stat().st_mtime_ns for f in one["files"]} == before  # finished shards skipped


def test_accounting_adds_up_with_malformed_input(tmp_path):
    docs_dir = make_corpus(tmp_path, malformed=True)
    cfg = MixerConfig(documents=[str(docs_dir)], attributes=["q"], output=str(tmp_path / "out"),
                      rules=[MixRule(attribute="q__quality__score", op="==", value=0, name="zero")])
    acct = Accounting.from_json(mix(cfg, progress=False)["accounting"])
    assert acct.read == 24 and acct.malformed == {"bad JSON": 2, "invalid UTF-8": 2}
    assert acct.kept + sum(acct.dropped.values()) + sum(acct.malformed.values()) == acct.read
    assert any("shard-0.jsonl.gz:11" in ex for ex in acct.examples["bad JSON"])


def test_stale_attributes_are_a_clear_error(tmp_path):
    docs_dir = make_corpus(tmp_path)
    write_attributes(tmp_path / "attributes" / "q" / "shard-1.jsonl.gz", [("other", {})])
    cfg = MixerConfig(documents=[str(docs_dir)], attributes=["q"], output=str(tmp_path / "out"))
    with pytest.raises(DataError, match=r"shard-1.jsonl.gz: expected attributes for document id 'd10', found id 'other'"):
        mix(cfg, progress=False)
    cfg = MixerConfig(documents=[str(docs_dir)], attributes=["nope"], output=str(tmp_path / "out3"))
    with pytest.raises(DataError, match="attribute file missing"):
        mix(cfg, progress=False)


def test_mixer_config_from_yaml_validates(tmp_path):
    (tmp_path / "mix.yaml").write_text(
        "documents: [x]\nrules:\n  - {attribute: a__b__c, op: '>=', value: 1, action: drop}\n  - {atribute: a, op: '<'}\n"
    )
    from lmforge.config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown config key 'rules\[1\].atribute'; did you mean 'rules\[1\].attribute'"):
        MixerConfig.from_yaml(tmp_path / "mix.yaml")
    (tmp_path / "ok.yaml").write_text("documents: [x]\nrules:\n  - {attribute: a__b__c, op: '>=', value: 1}\nsampling: {web: 0.5}\n")
    cfg = MixerConfig.from_yaml(tmp_path / "ok.yaml")
    assert cfg.rules[0].value == 1.0 and isinstance(cfg.rules[0], MixRule)
    assert MixerConfig.from_yaml(cfg.save(tmp_path / "again.yaml")) == cfg
