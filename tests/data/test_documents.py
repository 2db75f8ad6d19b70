"""Dolma-format documents: reading and writing (plain, gzip, zstd), malformed lines, truncated files."""

import gzip
import json

import pytest

from lmforge.data.documents import (
    Accounting,
    DataError,
    Document,
    TruncatedFileError,
    attributes_path,
    list_shards,
    read_attributes,
    read_documents,
    write_attributes,
    write_documents,
)


@pytest.mark.parametrize("ext", ["jsonl", "jsonl.gz", "jsonl.zst"])
def test_round_trip_all_compressions(tmp_path, ext):
    docs = [Document(id=str(i), text=f"hello {i} ünï 🙂\nline", source="s", metadata={"url": f"u{i}"}) for i in range(50)]
    path = tmp_path / "documents" / f"a.{ext}"
    assert write_documents(path, docs) == 50
    acct = Accounting()
    assert list(read_documents(path, acct)) == docs
    assert acct.read == 50 and not acct.malformed
    assert not list(path.parent.glob(".*tmp")), "temporary file left behind"


def test_dolma_fields_are_kept(tmp_path):
    line = {"id": "x", "text": "t", "source": "wiki", "added": "2024-01-01", "created": "2020", "metadata": {"a": 1}}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(line) + "\n")
    (doc,) = read_documents(path)
    assert doc.to_json() == line


def test_malformed_lines_are_counted_with_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id":1,"text":"ok"}\n{bad\n\xff\xfe\n{"id":2}\n{"id":3,"text":"  "}\n[1]\n\n{"text":"x"}\n')
    acct = Accounting()
    docs = list(read_documents(path, acct))
    acct.keep(len(docs))
    assert [d.id for d in docs] == ["1"]
    assert acct.malformed == {
        "bad JSON": 1, "invalid UTF-8": 1, "missing text": 1, "empty document": 1,
        "not a JSON object": 1, "blank line": 1, "missing id": 1,
    }
    assert acct.examples["invalid UTF-8"] == [f"{path}:3"]
    acct.check()
    assert acct.read == 8


def test_truncated_gzip_names_the_file_after_yielding_what_was_read(tmp_path):
    docs = [Document(id=str(i), text="some text " * 20) for i in range(2000)]
    data = gzip.compress(b"".join(json.dumps(d.to_json()).encode() + b"\n" for d in docs))
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(TruncatedFileError) as info:
        for d in read_documents(path):
            got.append(d)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert 0 < len(got) < 2000 and got == docs[: len(got)]


def test_attribute_layout_and_listing(tmp_path):
    doc_path = tmp_path / "root" / "documents" / "sub" / "a.jsonl.gz"
    assert attributes_path(doc_path, "pii") == tmp_path / "root" / "attributes" / "pii" / "sub" / "a.jsonl.gz"
    with pytest.raises(DataError, match="'documents' directory"):
        attributes_path(tmp_path / "a.jsonl", "x")
    write_attributes(attributes_path(doc_path, "pii"), [("1", {"pii__email": [[0, 3, 1.0]]})])
    assert list(read_attributes(attributes_path(doc_path, "pii"))) == [{"id": "1", "attributes": {"pii__email": [[0, 3, 1.0]]}}]
    write_documents(doc_path, [Document(id="1", text="abc")])
    (tmp_path / "root" / "documents" / "notes.txt").write_text("ignored")
    assert list_shards(tmp_path / "root" / "documents") == [doc_path]
    with pytest.raises(DataError, match="no such file"):
        list_shards(tmp_path / "missing")
