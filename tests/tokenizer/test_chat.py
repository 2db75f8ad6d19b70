"""lmforge.tokenizer.chat: templates, the loss mask, and token-for-token agreement with transformers."""

from __future__ import annotations

import pytest

from lmforge.generate.chat import render_chat
from lmforge.tokenizer import Tokenizer, TokenizerError
from lmforge.tokenizer.chat import CHAT_TEMPLATES, encode_chat, get_chat_template, validate_messages

CONVERSATIONS = [
    [{"role": "user", "content": "What colour is the sky?"}, {"role": "assistant", "content": "The sky is blue."}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  leading spaces and a newline\n"},
        {"role": "assistant", "content": "\n\nstarts with newlines  "},
        {"role": "user", "content": "And unicode? café 日本語 🙂"},
        {"role": "assistant", "content": "Sure: ünïcode ✓ works."},
    ],
    [{"role": "user", "content": "def f(x):\n    return x"}, {"role": "assistant", "content": "It returns x.\n```python\nf(1)\n```"}],
]


@pytest.fixture()
def tok(bpe_tokenizer) -> Tokenizer:
    """A private copy of the session's BPE tokenizer (these tests set its chat_template)."""
    return Tokenizer.from_file(bpe_tokenizer.source)


@pytest.fixture()
def hf_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def olmo_files():
    from lmforge.tokenizer import fetch_olmo_tokenizers

    return fetch_olmo_tokenizers()


def _hf_tokenizer(tok: Tokenizer, template: str, tmp_path):
    import transformers

    tok.chat_template = get_chat_template(template).jinja()
    out = tmp_path / template
    tok.to_hf_files(out)
    return transformers.AutoTokenizer.from_pretrained(str(out))


def _hf_ids(hf, messages, **kw) -> list[int]:
    ids = hf.apply_chat_template(messages, tokenize=True, **kw)
    if not isinstance(ids, list):  # transformers 5 returns a BatchEncoding
        ids = ids["input_ids"]
    return list(ids)


@pytest.mark.parametrize("template", sorted(CHAT_TEMPLATES))
def test_transformers_apply_chat_template_gives_the_training_tokens(tok, template, tmp_path):
    hf = _hf_tokenizer(tok, template, tmp_path)
    t = get_chat_template(template)
    for conv in CONVERSATIONS:
        assert encode_chat(tok, conv, t).ids == _hf_ids(hf, conv)
        # The prompt for generation: the same text in transformers, in `lmforge generate --chat`, and here.
        want = t.render(conv[:-1], tok.eos_token, add_generation_prompt=True)[0]
        assert hf.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True) == want
        assert render_chat(tok, conv[:-1]) == want
        assert encode_chat(tok, conv[:-1], t, add_generation_prompt=True).ids == _hf_ids(hf, conv[:-1], add_generation_prompt=True)


def test_tulu_format_is_olmos(tok):
    eos = tok.eos_token
    text, spans = get_chat_template("tulu").render(CONVERSATIONS[1], eos)
    assert text == (
        f"{eos}<|system|>\nBe brief.\n<|user|>\n  leading spaces and a newline\n\n<|assistant|>\n\n\nstarts with newlines  {eos}\n"
        f"<|user|>\nAnd unicode? café 日本語 🙂\n<|assistant|>\nSure: ünïcode ✓ works.{eos}\n"
    )
    assert [text[a:b] for a, b in spans] == ["\n\nstarts with newlines  " + eos, "Sure: ünïcode ✓ works." + eos]
    enc = encode_chat(tok, CONVERSATIONS[0], "tulu")
    assert enc.ids[0] == tok.eos_token_id  # EOS doubles as BOS
    assert enc.ids[-2] == tok.eos_token_id  # ... and ends the assistant turn (then "\n")


@pytest.mark.parametrize("template", sorted(CHAT_TEMPLATES))
def test_loss_mask_is_exactly_the_assistant_turns(tok, template):
    t = get_chat_template(template)
    eos = tok.eos_token
    for conv in CONVERSATIONS:
        enc = encode_chat(tok, conv, t)
        runs, cur = [], []
        for i, m in zip(enc.ids, enc.loss_mask):
            if m:
                cur.append(i)
            elif cur:
                runs.append(cur)
                cur = []
        if cur:
            runs.append(cur)
        loss_end = t.loss_end.replace("{eos}", eos)
        tail = t.suffix["assistant"].replace("{eos}", eos)
        expected = [m["content"] + tail[: tail.index(loss_end) + len(loss_end)] for m in conv if m["role"] == "assistant"]
        assert [tok.decode(r) for r in runs] == expected
        # Nothing of a user or system turn is ever in the loss.
        masked_text = "".join(tok.decode(r) for r in runs)
        for m in conv:
            if m["role"] != "assistant" and len(m["content"].strip()) > 3:
                assert m["content"].strip() not in masked_text
    # DPO scores the final response only.
    last = encode_chat(tok, CONVERSATIONS[1], t, loss_turns="last")
    assert tok.decode([i for i, m in zip(last.ids, last.loss_mask) if m]).startswith("Sure: ")


def test_truncation_keeps_the_beginning(tok):
    full = encode_chat(tok, CONVERSATIONS[1], "tulu")
    cut = encode_chat(tok, CONVERSATIONS[1], "tulu", max_length=10)
    assert cut.truncated and not full.truncated
    assert cut.ids == full.ids[:10] and cut.loss_mask == full.loss_mask[:10]


@pytest.mark.network
def test_olmo2_tokenizer_with_the_tulu_template(olmo_files, tmp_path, hf_offline):
    """OLMo-2's own tokenizer: the training tokens are transformers' apply_chat_template tokens."""
    from lmforge.tokenizer import load_olmo_tokenizer

    olmo2 = load_olmo_tokenizer("olmo2")
    hf = _hf_tokenizer(olmo2, "tulu", tmp_path)
    for conv in CONVERSATIONS:
        enc = encode_chat(olmo2, conv, "tulu")
        assert enc.ids == _hf_ids(hf, conv)
        assert enc.ids[0] == 100257 and enc.n_loss_tokens > 0


def test_bad_messages_and_templates():
    assert validate_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]) is None
    assert validate_messages([]) == "messages is not a non-empty list"
    assert validate_messages("hi") == "messages is not a non-empty list"
    assert validate_messages([{"role": "user", "content": 3}]) == "a message is not {role: str, content: str}"
    assert validate_messages([{"role": "bot", "content": "x"}]) == "unknown role 'bot'"
    assert validate_messages([{"role": "user", "content": "x"}]) == "no assistant turn"
    with pytest.raises(TokenizerError, match="unknown chat template 'vicuna'; known: tulu"):
        get_chat_template("vicuna")


def test_chat_template_survives_save_and_load(tok, tmp_path):
    tok.chat_template = get_chat_template("tulu").jinja()
    tok.to_hf_files(tmp_path / "d")
    again = Tokenizer.from_dir(tmp_path / "d")
    assert again.chat_template == tok.chat_template
    tok.chat_template = None
    tok.to_hf_files(tmp_path / "e")
    assert Tokenizer.from_dir(tmp_path / "e").chat_template is None
