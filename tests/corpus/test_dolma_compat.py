"""Dolma compatibility: attributes written by dolma 1.2.1 (from documents lmforge wrote) drive
lmforge's mixer. The fixture was produced by the command in fixtures/dolma/README.md."""

import shutil
from pathlib import Path

from lmforge.data.documents import list_shards, read_attributes, read_documents
from lmforge.corpus.mixer import MixerConfig, MixRule, SpanEdit, mix

FIXTURE = Path(__file__).parent / "fixtures" / "dolma"
EXP = "pii_regex_with_counts_fast_v2"
KEY = f"{EXP}__{EXP}__"


def test_dolma_attributes_line_up_and_mask(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    docs = list(read_documents(root / "documents" / "a.jsonl.gz"))
    rows = list(read_attributes(root / "attributes" / EXP / "a.jsonl.gz"))
    assert [r["id"] for r in rows] == [d.id for d in docs] and len(docs) == 20
    s, e, _ = rows[0]["attributes"][KEY + "EMAIL_ADDRESS"][0]
    assert docs[0].text[s:e].strip() == "a0@example.com"  # dolma's PII spans include the spaces around

    cfg = MixerConfig(
        documents=[str(root / "documents")], attributes=[EXP], output=str(tmp_path / "out"),
        rules=[MixRule(attribute=KEY + "doc_count", op=">", value=5, action="drop", name="many emails")],
        span_edits=[SpanEdit(attribute=KEY + "EMAIL_ADDRESS", replacement="|||EMAIL_ADDRESS|||")],
    )
    summary = mix(cfg, progress=False)
    out = [d for p in list_shards(tmp_path / "out" / "documents") for d in read_documents(p)]
    assert len(out) == 20 and all("|||EMAIL_ADDRESS|||" in d.text and "@example.com" not in d.text for d in out)
    assert summary["span_edits"] == {KEY + "EMAIL_ADDRESS": 20}
    assert any("many emails" in w and "never dropped" in w for w in summary["warnings"])
