"""Fixed-length instances over token files, seeded global order, rank slices, document ids."""

import numpy as np
import pytest

from lmforge.data.dataset import TokenDataset
from lmforge.data.documents import DataError, Document, write_documents
from tests.conftest import run_tokenize
from tests.conftest import corpus_lines


@pytest.fixture()
def tokens_dir(tmp_path, bpe_tokenizer):
    lines = corpus_lines(300, seed=2)
    docs = [Document(id=f"d{i}", text=" ".join(lines[i * 5 : i * 5 + 5]), source="s") for i in range(60)]
    write_documents(tmp_path / "documents" / "a.jsonl", docs[:30])
    write_documents(tmp_path / "documents" / "b.jsonl", docs[30:])
    tok = tmp_path / "tok.json"
    bpe_tokenizer.save(tok)
    run_tokenize([str(tmp_path / "documents")], str(tok), str(tmp_path / "tokens"))
    return tmp_path / "tokens"


def test_instances_cover_each_file_in_order(tokens_dir):
    ds = TokenDataset([tokens_dir], seq_len=32)
    files = sorted(tokens_dir.glob("*.npy"))
    raw = [np.fromfile(f, dtype=np.uint16) for f in files]
    assert len(ds) == sum(len(r) // 32 for r in raw) and ds.num_tokens == len(ds) * 32
    joined = np.concatenate([r[: len(r) // 32 * 32] for r in raw])
    assert np.array_equal(np.concatenate([ds[i].tokens for i in range(len(ds))]), joined)
    first = ds[0]
    assert first.doc_ids[0] == "d0" and first.start == 0
    # the documents named by an instance are exactly those whose token ranges overlap it
    from lmforge.data.token_files import read_metadata

    for i in range(len(ds)):
        inst = ds[i]
        rows = read_metadata(inst.file)
        expected = tuple(r.id for r in rows if r.start < inst.start + 32 and r.end > inst.start)
        assert inst.doc_ids == expected, i
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_global_order_is_seeded_and_ranks_partition_the_batch(tokens_dir):
    ds = TokenDataset([tokens_dir], seq_len=16)
    a, b = ds.global_order(seed=7), ds.global_order(seed=7)
    assert np.array_equal(a, b) and sorted(a.tolist()) == list(range(len(ds)))
    assert not np.array_equal(ds.global_order(seed=7, epoch=1), a)
    full = ds.instances_at_step(3, global_batch=8, seed=7)
    parts = [ds.instances_at_step(3, global_batch=8, seed=7, rank=r, world_size=2) for r in range(2)]
    assert parts[0] + parts[1] == full == a[24:32].tolist()
    per_epoch = len(ds) // 8
    assert ds.instances_at_step(per_epoch, 8, seed=7) == ds.global_order(7, epoch=1)[:8].tolist()
    with pytest.raises(DataError, match="not divisible"):
        ds.instances_at_step(0, global_batch=8, seed=7, world_size=3)


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="no token files"):
        TokenDataset([tmp_path], seq_len=8)
    with pytest.raises(DataError, match="positive"):
        TokenDataset([tmp_path], seq_len=0)
