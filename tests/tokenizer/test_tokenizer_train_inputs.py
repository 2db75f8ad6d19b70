"""``lmforge tokenizer train`` reads what its help promises: text files, Dolma JSONL document files
(plain, .gz, .zst: the ``text`` field only) and directories of them, counting malformed lines."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
import zstandard

from lmforge.cli import main
from lmforge.tokenizer import Tokenizer, train_bpe
from lmforge.tokenizer.train import TrainingTexts
from tests.conftest import corpus_lines

RARE = "quokkaberry"  # appears only in the documents' text fields
KEY_WORDS = ("metadata", "wombatsource", "lmforgeid")  # JSON keys and non-text values of the same documents


def _docs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    lines = corpus_lines(n, seed=seed)
    return [
        {
            "id": f"lmforgeid-{seed}-{i}",
            "text": f"{line} The {RARE} grows {rng.choice(['here', 'there'])}, a {RARE} again.",
            "source": "wombatsource",
            "added": "2024-01-01",
            "metadata": {"wombatsource": "metadata metadata"},
        }
        for i, line in enumerate(lines)
    ]


def _jsonl(docs: list[dict]) -> bytes:
    return "".join(json.dumps(d) + "\n" for d in docs).encode()


@pytest.fixture()
def doc_dir(tmp_path) -> Path:
    """documents/a/*.jsonl.gz, documents/b/part.jsonl.zst, a .txt file, and files a directory skips."""
    root = tmp_path / "documents"
    (root / "a").mkdir(parents=True)
    (root / "b" / "deeper").mkdir(parents=True)
    for i in range(3):
        (root / "a" / f"shard-{i}.jsonl.gz").write_bytes(gzip.compress(_jsonl(_docs(120, seed=i))))
    (root / "b" / "deeper" / "part.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(_docs(120, seed=9))))
    (root / "b" / "notes.txt").write_text("\n".join(corpus_lines(50, seed=5)) + "\n", encoding="utf-8")
    (root / "b" / "manifest.json").write_text(json.dumps({"xylophonekey": ["xylophonekey"] * 500}))  # not a document shard
    return root


def _vocab_words(tok: Tokenizer) -> set[str]:
    return {t.lstrip("Ġ") for t in tok.backend.get_vocab()}


def test_directory_of_jsonl_documents_trains_on_the_text_fields(doc_dir, tmp_path, capsys):
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", str(doc_dir), "--vocab-size", "700", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "training data: read 530 texts from 5 file(s)" in captured.out  # 4 x 120 documents + 50 lines
    words = _vocab_words(Tokenizer.from_file(out))
    assert RARE in words
    for word in KEY_WORDS + ("xylophonekey",):
        assert not any(word in w for w in words), word


def test_a_jsonl_file_is_read_as_documents_not_as_text(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_bytes(_jsonl(_docs(300, seed=1)))
    words = _vocab_words(train_bpe([f], 700, show_progress=False))
    assert RARE in words and not any(k in w for w in words for k in KEY_WORDS)


def test_malformed_lines_are_counted_and_reported(tmp_path, capsys):
    good = _docs(200, seed=2)
    lines = [json.dumps(d).encode() for d in good]
    lines[3] = b'{"id": "x", "text": "unterminated'  # bad JSON
    lines[7] = b'["a", "list"]'  # not an object
    lines[11] = b'{"id": "y", "text": 42}'  # no string text
    lines[13] = b'{"id": "z", "text": "caf\xe9"}'  # latin-1, not UTF-8
    lines[17] = b'{"id": "w", "metadata": {}}'  # no text
    f = tmp_path / "docs.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", str(f), "--vocab-size", "600", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "read 195 texts from 1 file(s); skipped 5 malformed line(s)" in err
    assert f"bad JSON 1 (first at {f}:4)" in err and f"not a JSON object 1 (first at {f}:8)" in err
    assert f"no string 'text' 2 (first at {f}:12)" in err and f"invalid UTF-8 1 (first at {f}:14)" in err
    assert RARE in _vocab_words(Tokenizer.from_file(out))


def test_truncated_compressed_file_keeps_what_was_read(tmp_path):
    data = gzip.compress(_jsonl(_docs(200, seed=3)))
    f = tmp_path / "cut.jsonl.gz"
    f.write_bytes(data[: len(data) * 2 // 3])
    texts = TrainingTexts([f])
    tok = train_bpe(texts, 600, show_progress=False)
    assert 0 < texts.texts < 200 and len(texts.errors) == 1 and "truncated or corrupt" in texts.errors[0]
    assert "1 damaged file(s)" in texts.summary() and RARE in _vocab_words(tok)


def test_no_usable_input_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["tokenizer", "train", str(tmp_path / "empty"), "--vocab-size", "600", "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lmforge: error:") and "training directory" in err[0] and str(tmp_path / "empty") in err[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n{}\n")
    assert main(["tokenizer", "train", str(bad), "--vocab-size", "600", "--out", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no training text" in err[0] and "bad JSON 1" in err[0]


def test_text_files_train_exactly_as_tokenizers_reads_them(tmp_path):
    # Plain text goes through the same reader; the result is the one tokenizers' own file reader gives.
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    from lmforge.tokenizer.train import SPECIAL_TOKENS

    f = tmp_path / "corpus.txt"
    f.write_text("\n".join(corpus_lines(300, seed=4)) + "\nlast line without newline", encoding="utf-8")
    ours = train_bpe([f], 600, show_progress=False)
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600, min_frequency=2, show_progress=False,
        special_tokens=[tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train([str(f)], trainer)
    assert ours.backend.get_vocab() == backend.get_vocab()
