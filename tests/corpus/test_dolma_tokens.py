"""Token files written by `dolma tokens` (dolma 1.2.1) are read, mixed and trained on by lmforge.

The fixture (fixtures/dolma_tokens, see its README.md for the exact command) holds the documents, a
small BPE tokenizer and what dolma wrote from them; dolma itself is not needed to run these tests.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmforge.data.dataset import TokenDataset
from lmforge.data.documents import DataError, read_documents
from lmforge.data.mixture import DataConfig, SourceConfig, document_ids
from lmforge.data.token_files import read_metadata, read_token_file
from tests.conftest import run_tokenize
from lmforge.tokenizer.core import Tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "dolma_tokens"
EOS, PAD = 0, 1
DTYPE = "uint16"
ENDS_WITH_EOS_TEXT = "doc-019"  # its text ends with "<|endoftext|>": dolma adds no second EOS
PADDED = "doc-003"  # leading/trailing whitespace: dolma strips it


def per_document(token_dir: Path, dtype: str | None) -> dict[str, tuple[list[int], str, int]]:
    """{id: (tokens incl. EOS, src file name, loc)} from token files and their .csv.gz metadata."""
    out = {}
    for npy in sorted(token_dir.glob("*.npy")):
        toks = read_token_file(npy, dtype)
        for r in read_metadata(npy):
            assert r.id not in out
            out[r.id] = (toks[r.start : r.end].tolist(), Path(r.src).name, r.loc)
    return out


@pytest.fixture(scope="module")
def dolma(tmp_path_factory) -> Path:
    """A private copy of the fixture (tests must not touch the committed files)."""
    d = tmp_path_factory.mktemp("dolma") / "fixture"
    shutil.copytree(FIXTURE, d)
    return d


@pytest.fixture(scope="module")
def documents(dolma) -> dict[str, str]:
    return {d.id: d.text for p in sorted((dolma / "documents").glob("*.jsonl.gz")) for d in read_documents(p)}


def test_dolma_files_are_what_the_readme_says(dolma, documents):
    tokens = dolma / "tokens"
    names = sorted(p.name for p in tokens.iterdir())
    npys = [n for n in names if n.endswith(".npy")]
    assert npys == [f"part-0-{i:05d}.npy" for i in range(4)]  # one group: a one-digit group number
    assert names == sorted(npys + [n[: -len(".npy")] + ".csv.gz" for n in npys])  # nothing else: no summary, no dtype
    for npy in npys:
        path = tokens / npy
        assert path.stat().st_size % 2 == 0 and path.stat().st_size < 2 * 2500  # --max_size counts tokens
        with pytest.raises(ValueError):
            np.load(path)  # a raw memmap, no numpy header
        raw = gzip.decompress(path.with_name(npy[:-4] + ".csv.gz").read_bytes()).decode("utf-8")
        lines = raw.split("\r\n")  # excel dialect: CRLF after every row, no header
        assert lines[-1] == "" and all(line and "\n" not in line for line in lines[:-1])
        assert lines[0].startswith("0,")
        rows = read_metadata(path)  # the .npy path finds dolma's .csv.gz beside it
        toks = read_token_file(path, DTYPE)
        assert rows[0].start == 0 and rows[-1].end == len(toks)
        assert all(a.end == b.start for a, b in zip(rows, rows[1:]))  # contiguous, in file order
        for r in rows:
            assert int(toks[r.end - 1]) == EOS and int(np.sum(toks[r.start : r.end] == EOS)) == 1
            assert r.src.startswith("documents/") and r.loc >= 1
    raw_all = "".join(gzip.decompress((tokens / n).read_bytes()).decode("utf-8") for n in names if n.endswith(".csv.gz"))
    assert '"doc-007,""quoted"""' in raw_all  # csv quoting of an id with a comma and quotes
    ids = [r.id for npy in npys for r in read_metadata(tokens / npy)]
    assert len(ids) == len(set(ids)) == 52
    assert set(ids) == set(documents) - {"blank"}  # dolma skips the whitespace-only document
    assert 'doc-007,"quoted"' in ids  # CSV quoting read back
    # dolma shuffles: file order is not input order
    assert ids != sorted(ids)


def test_lmforge_reads_dolma_files_only_with_a_dtype(dolma):
    with pytest.raises(DataError) as e:
        DataConfig(sources=[SourceConfig(paths=[str(dolma / "tokens")])]).build(64)
    assert "set data.dtype" in str(e.value) and "\n" not in str(e.value)
    mix = DataConfig(sources=[SourceConfig(paths=[str(dolma / "tokens")], name="dolma")], dtype=DTYPE, eos_id=EOS).build(64)
    ds = TokenDataset([dolma / "tokens"], 64, dtype=DTYPE)
    assert len(mix) == len(ds) == sum(len(read_token_file(f, DTYPE)) // 64 for f in ds.files) > 100
    assert mix.eos_id == EOS
    for f in ds.files:  # the instances of a file are its tokens, tail dropped
        toks = np.asarray(read_token_file(f, DTYPE))
        mine = [ds[i] for i in range(len(ds)) if ds[i].file == f]
        assert np.array_equal(np.concatenate([m.tokens for m in mine]), toks[: len(mine) * 64])
        assert [m.start for m in mine] == list(range(0, len(mine) * 64, 64))
    mix.check_ids([mix[p] for p in range(len(mix))], vocab_size=384)
    with pytest.raises(DataError, match=r"part-0-0000\d\.npy: token id \d+ at token offset \d+"):
        mix.check_ids([mix[p] for p in range(len(mix))], vocab_size=300)


def test_dolma_tokens_equal_lmforge_tokenization(dolma, documents, tmp_path):
    tok_path = dolma / "tokenizer.json"
    theirs = per_document(dolma / "tokens", DTYPE)
    run_tokenize([str(dolma / "documents")], str(tok_path), str(tmp_path / "strip"), strip_whitespace=True, progress=False, raise_on_error=False)
    ours = per_document(tmp_path / "strip", None)
    assert set(ours) == set(theirs)
    for doc_id, (toks, src, loc) in theirs.items():
        mine, my_src, my_loc = ours[doc_id]
        assert (src, loc) == (my_src, my_loc), doc_id  # same file and 1-based line
        if doc_id == ENDS_WITH_EOS_TEXT:
            assert mine[-2:] == [EOS, EOS] and toks == mine[:-1]  # the documented difference
        else:
            assert toks == mine, doc_id
    # without strip_whitespace only the padded document differs
    run_tokenize([str(dolma / "documents")], str(tok_path), str(tmp_path / "raw"), progress=False, raise_on_error=False)
    raw = per_document(tmp_path / "raw", None)
    assert {k for k in raw if raw[k][0] != ours[k][0]} == {PADDED}
    # and the tokens decode to the documents' (stripped) texts
    tok = Tokenizer.from_file(str(tok_path))
    for doc_id, (toks, _, _) in theirs.items():
        text = documents[doc_id].strip()
        if doc_id == ENDS_WITH_EOS_TEXT:  # the text's own "<|endoftext|>" is the document's EOS
            assert tok.decode(toks) == text and text.endswith("<|endoftext|>")
        else:
            assert tok.decode(toks[:-1]) == text, doc_id


def test_instance_doc_ids_come_from_dolma_metadata(dolma, tmp_path):
    run_tokenize([str(dolma / "documents")], str(dolma / "tokenizer.json"), str(tmp_path / "lm"), strip_whitespace=True, progress=False, raise_on_error=False)
    ours = {k: v[0] for k, v in per_document(tmp_path / "lm", None).items()}
    ours[ENDS_WITH_EOS_TEXT] = ours[ENDS_WITH_EOS_TEXT][:-1]
    ds = TokenDataset([dolma / "tokens"], 64, dtype=DTYPE)
    spans = 0
    for i in range(len(ds)):
        inst = ds[i]
        rows = read_metadata(inst.file)
        want = tuple(r.id for r in rows if r.start < inst.start + 64 and r.end > inst.start)
        assert inst.doc_ids == want and want, i
        # independent of dolma's token files: the named documents, tokenized by lmforge and joined,
        # hold the instance at the offset the metadata gives
        first = next(r for r in rows if r.id == want[0])
        joined = np.concatenate([ours[d] for d in want])
        assert np.array_equal(joined[inst.start - first.start :][:64], inst.tokens), i
        # and the EOS tokens cut the instance into exactly those documents
        assert len(np.unique(document_ids(inst.tokens, EOS))) == len(want)
        spans += len(want) > 1
    assert spans > 10
    assert sum("doc-011" in ds[i].doc_ids for i in range(len(ds))) >= 19  # 1,247 tokens: at least 19 instances


def test_two_training_steps_on_dolma_files_then_inspect(dolma, tmp_path, capsys):
    from lmforge.cli import main
    from lmforge.train.config import TrainConfig
    from lmforge.train.run import train
    from tests.train.conftest import run_config

    data = {
        "sources": [{"paths": [str(dolma / "tokens")], "name": "dolma"}],
        "dtype": DTYPE,
        "eos_id": EOS,
        "document_masking": True,
        "tokenizer": str(dolma / "tokenizer.json"),
        "seed": 3,
    }
    run = tmp_path / "run"
    cfg = TrainConfig.from_dict(run_config({"train": dolma / "tokens"}, run, data=data, trainer={"max_steps": 2}, schedule={"total_steps": 2}))
    last = train(cfg, quiet=True)
    assert last["step"] == 2 and math.isfinite(last["loss"])
    order = json.loads((run / "data_order.json").read_text(encoding="utf-8"))
    assert [Path(f["path"]).name for f in order["files"]] == [f"part-0-{i:05d}.npy" for i in range(4)]
    assert order["sources"][0]["name"] == "dolma"

    capsys.readouterr()
    assert main(["data", "inspect", "--run", str(run), "--step", "2", "--jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 8
    tok = Tokenizer.from_file(str(dolma / "tokenizer.json"))
    mix = cfg.data.build(cfg.seq_len)
    for r, m in zip(rows, mix.batch(1, 8)):
        assert r["tokens"] == m.instance.tokens.tolist() and r["doc_ids"] == list(m.instance.doc_ids) and r["doc_ids"]
        assert r["text"] == tok.decode(r["tokens"])
        assert all(d.startswith("doc-") for d in r["doc_ids"])
