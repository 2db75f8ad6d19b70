"""The whole data pipeline through the CLI: tag -> dedup -> mix (shipped example config) -> tokenize
-> analyze, with every input document accounted for at each stage."""

import json
from pathlib import Path

import numpy as np

from lmforge.cli import main
from lmforge.data.documents import Document, list_shards, read_documents, write_documents
from lmforge.data.token_files import read_metadata
from tests.conftest import corpus_lines

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "data" / "mix_example.yaml"


def build_corpus(root: Path) -> int:
    lines = corpus_lines(600, seed=1)
    good = [" ".join(lines[i : i + 12]) + "\n\n" + " ".join(lines[i + 12 : i + 24]) for i in range(0, 480, 24)]
    docs = [Document(id=f"g{i}", text=t * 3, source="web" if i % 2 else "books") for i, t in enumerate(good)]
    docs[3].text += "\n\nContact me at jane.doe@example.org or 555-123-4567."
    docs.append(Document(id="copy", text=docs[0].text, source="web"))  # exact duplicate
    docs.append(Document(id="short", text="too short to pass gopher", source="web"))
    write_documents(root / "documents" / "a.jsonl.gz", docs[:12])
    write_documents(root / "documents" / "b.jsonl.gz", docs[12:])
    with (root / "documents" / "c.jsonl").open("w") as f:
        f.write('{"id": "bad", "text": \n{"id": "empty", "text": ""}\n')
    return len(docs) + 2


def test_pipeline_end_to_end(tmp_path, bpe_tokenizer, capsys):
    root = tmp_path / "corpus"
    n_lines = build_corpus(root)
    docs = str(root / "documents")
    assert main(["data", "tag", "--documents", docs, "--taggers", "gopher_quality", "pii", "--experiment", "quality", "--workers", "2"]) == 0
    assert main(["data", "dedup", "--documents", docs, "--mode", "documents"]) == 0
    assert main(["data", "dedup", "--documents", docs, "--mode", "paragraphs"]) == 0
    out = tmp_path / "mixed"
    assert main(["data", "mix", str(CONFIG), f"--documents=[{docs}]", f"--output={out}", "--workers=1"]) == 0
    summary = json.loads((out / "mix_summary.json").read_text())
    acct = summary["accounting"]
    assert acct["balanced"] and acct["read"] == n_lines
    assert acct["malformed"] == {"bad JSON": 1, "empty document": 1}
    assert acct["dropped"].get("duplicate document") == 1
    assert acct["dropped"].get("gopher quality", 0) >= 1  # the short document
    mixed = [d for p in list_shards(out / "documents") for d in read_documents(p)]
    assert "copy" not in {d.id for d in mixed} and "short" not in {d.id for d in mixed}
    g3 = next(d for d in mixed if d.id == "g3")
    assert "|||EMAIL_ADDRESS|||" in g3.text and "|||PHONE_NUMBER|||" in g3.text and "@example.org" not in g3.text

    tok_path = tmp_path / "tok.json"
    bpe_tokenizer.save(tok_path)
    assert main(["data", "tokenize", "--documents", str(out / "documents"), "--tokenizer", str(tok_path), "--out", str(tmp_path / "tokens")]) == 0
    total = 0
    for npy in sorted((tmp_path / "tokens").glob("*.npy")):
        tokens = np.fromfile(npy, dtype=np.uint16)
        meta = read_metadata(npy.with_suffix(".csv.gz"))
        assert meta[-1].end == len(tokens)
        for row in meta:
            assert tokens[row.end - 1] == bpe_tokenizer.eos_token_id
        total += len(meta)
    assert total == len(mixed)

    assert main(["data", "analyze", "--documents", str(out / "documents"), "--out", str(tmp_path / "report"), "--tasks", ""]) == 0
    assert (tmp_path / "report" / "report.md").is_file()
