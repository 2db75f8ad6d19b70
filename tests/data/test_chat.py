"""lmforge.data.chat: reading SFT/DPO JSONL with full accounting; padded and packed instances; the order."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from lmforge.data.chat import IGNORE_INDEX, PreferenceDataset, SFTDataset, read_preferences, read_sft
from lmforge.corpus.chat_demo import build_chat_demo, parse_definitions
from lmforge.data.documents import DataError, Document, write_documents
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.chat import encode_chat
from tests.train.chat_data import OBJECTS, dpo_rows, sft_rows, write_jsonl


@pytest.fixture()
def tok(bpe_tokenizer) -> Tokenizer:
    return Tokenizer.from_file(bpe_tokenizer.source)


def test_sft_accounting_counts_every_row(tok, tmp_path):
    good = sft_rows(OBJECTS, 30, seed=0)
    bad = [
        "{not json",
        json.dumps({"text": "no messages"}),
        json.dumps({"messages": []}),
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps([1, 2]),
    ]
    path = write_jsonl(tmp_path / "a.jsonl", good, bad)
    with open(path, "ab") as f:
        f.write(b'{"messages": "\xff\xfe"}\n')  # invalid UTF-8
    # A conversation whose answer lies beyond the sequence length is dropped, with its reason.
    long = [{"messages": [{"role": "user", "content": "tell me " * 200}, {"role": "assistant", "content": "ok"}]}]
    write_jsonl(tmp_path / "b.jsonl", long)
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps(good[0]) + "\n")

    examples, acct = read_sft([str(tmp_path)], tok, "tulu", seq_len=128)
    assert acct.balanced and acct.read == 30 + 7 + 1 + 1
    assert acct.kept == len(examples) == 31
    assert dict(acct.malformed) == {
        "invalid JSON": 1,
        "invalid UTF-8": 1,
        "no 'messages' key": 1,
        "messages is not a non-empty list": 1,
        "no assistant turn": 1,
        "unknown role 'robot'": 1,
        "not a JSON object": 1,
    }
    assert dict(acct.dropped) == {"no assistant tokens within 128 tokens": 1}
    assert acct.examples["invalid JSON"] == [f"{tmp_path / 'a.jsonl'}:31"]
    for ex in examples:
        assert len(ex.ids) <= 128 and ex.loss_mask[1:].any()


def test_preference_rules(tok, tmp_path):
    rows = dpo_rows(OBJECTS, 10, seed=1)
    other_prompt = dict(rows[0])
    other_prompt["rejected"] = [{"role": "user", "content": "another question"}] + rows[0]["rejected"][1:]
    same = {"chosen": rows[1]["chosen"], "rejected": rows[1]["chosen"]}
    ends_with_user = {"chosen": rows[2]["chosen"] + [{"role": "user", "content": "?"}], "rejected": rows[2]["rejected"] + [{"role": "user", "content": "?"}]}
    write_jsonl(tmp_path / "p.jsonl", rows, [json.dumps(other_prompt), json.dumps(same), json.dumps(ends_with_user), json.dumps({"chosen": rows[0]["chosen"]})])
    pairs, acct = read_preferences([str(tmp_path / "p.jsonl")], tok, "tulu", seq_len=128)
    assert acct.balanced and acct.kept == len(pairs) == 10 and acct.read == 14
    assert dict(acct.malformed) == {
        "chosen and rejected prompts differ": 1,
        "chosen and rejected responses are identical": 1,
        "chosen/rejected do not end in an assistant turn": 1,
        "no 'chosen'/'rejected' key": 1,
    }
    p = pairs[0]
    # The loss covers the final response only, and the prompt tokens are shared.
    chosen_text = tok.decode(p.chosen.ids[p.chosen.loss_mask])
    assert chosen_text == rows[0]["chosen"][-1]["content"] + tok.eos_token
    k = int(np.argmax(p.chosen.loss_mask))
    assert (p.chosen.ids[:k] == p.rejected.ids[:k]).all()


def test_labels_follow_the_mask(tok):
    examples = [encode_chat(tok, r["messages"], "tulu") for r in sft_rows(OBJECTS, 5, seed=2)]
    from lmforge.data.chat import ChatExample

    ds = SFTDataset([ChatExample(np.array(e.ids), np.array(e.loss_mask), "x") for e in examples], 256, pad_id=tok.pad_token_id)
    mb = ds.rows_micro_batch([0, 1, 2, 3, 4])
    for row, e in enumerate(examples):
        n = len(e.ids)
        want = [e.ids[t + 1] if e.loss_mask[t + 1] else IGNORE_INDEX for t in range(n - 1)] + [IGNORE_INDEX]
        assert mb["labels"][row, :n].tolist() == want
        assert (mb["labels"][row, n:] == IGNORE_INDEX).all() and (mb["input_ids"][row, n:] == tok.pad_token_id).all()


def test_packing_rows_documents_and_positions(tok, tmp_path):
    write_jsonl(tmp_path / "s.jsonl", sft_rows(OBJECTS, 40, seed=3))
    examples, _ = read_sft([str(tmp_path)], tok, "tulu", seq_len=256)
    packed = SFTDataset(examples, 256, pad_id=tok.pad_token_id, packing=True)
    assert packed.n < len(examples)
    assert sorted(i for inst in packed.instances for i in inst) == list(range(len(examples)))  # each conversation once
    mb = packed.rows_micro_batch(list(range(packed.n)))
    for row, inst in enumerate(packed.instances):
        start = 0
        for k, i in enumerate(inst):
            n = len(examples[i].ids)
            assert (mb["input_ids"][row, start : start + n] == examples[i].ids).all()
            assert (mb["document_ids"][row, start : start + n] == k).all()
            assert mb["position_ids"][row, start : start + n].tolist() == list(range(n))
            assert mb["labels"][row, start + n - 1] == IGNORE_INDEX  # no label crosses into the next conversation
            start += n
        assert start <= 256 and (mb["document_ids"][row, start:] == -1).all()


def test_order_is_deterministic_sharded_and_reshuffled_per_epoch(tok, tmp_path):
    write_jsonl(tmp_path / "s.jsonl", sft_rows(OBJECTS, 20, seed=4))
    examples, _ = read_sft([str(tmp_path)], tok, "tulu", seq_len=128)
    ds = SFTDataset(examples, 128, pad_id=tok.pad_token_id, seed=5)
    epoch0 = [i for step in range(5) for i in ds.batch_indices(step, 4)]
    epoch1 = [i for step in range(5, 10) for i in ds.batch_indices(step, 4)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(20)) and epoch0 != epoch1
    assert ds.batch_indices(3, 4) == SFTDataset(examples, 128, pad_id=tok.pad_token_id, seed=5).batch_indices(3, 4)
    for step in range(8):  # two ranks together see exactly the one-process batch
        assert sorted(ds.batch_indices(step, 4, 0, 2) + ds.batch_indices(step, 4, 1, 2)) == sorted(ds.batch_indices(step, 4))
    assert ds.steps_for_epochs(3, 4) == 15 and ds.steps_for_epochs(1.5, 8) == 4
    assert ds.fingerprint() == SFTDataset(examples, 128, pad_id=tok.pad_token_id, seed=5).fingerprint()
    assert ds.fingerprint()["sha256"] != SFTDataset(examples[1:], 128, pad_id=tok.pad_token_id, seed=5).fingerprint()["sha256"]
    pairs, _ = read_preferences([str(write_jsonl(tmp_path / "p" / "p.jsonl", dpo_rows(OBJECTS, 6, seed=6)))], tok, "tulu", 128)
    pds = PreferenceDataset(pairs, 128, pad_id=tok.pad_token_id)
    mb = pds.pair_micro_batch([0, 1, 2])
    assert mb["input_ids"].shape[0] == 6 and mb["pair_index"].tolist() == [0, 1, 2]
    assert (mb["input_ids"][0, : len(pairs[0].chosen.ids)] == pairs[0].chosen.ids).all()
    assert (mb["input_ids"][3, : len(pairs[0].rejected.ids)] == pairs[0].rejected.ids).all()


def test_no_files_is_a_clear_error(tok, tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match=r"no \.jsonl"):
        read_sft([str(tmp_path)], tok, "tulu", 64)


def test_chat_demo_from_dictionary_documents(tmp_path):
    lines = [f"word{i}, synonym{i} ({pos}): meaning number {i} of the {pos}; \"an example {i}\"" for i in range(300) for pos in ("noun",)]
    docs = [Document(id=f"wn{k}", text="\n\n".join(lines[k * 30 : (k + 1) * 30]), source="wordnet") for k in range(10)]
    write_documents(tmp_path / "docs" / "wordnet.jsonl.gz", docs + [Document(id="other", text="no definitions here", source="x")])
    assert parse_definitions(lines[3]) == [("word3", "noun", "meaning number 3 of the noun")]
    s = build_chat_demo([str(tmp_path / "docs")], tmp_path / "out", max_sft=100, max_pairs=50)
    assert s["definitions"] == 300 and s["documents"]["read"] == s["documents"]["kept"] == 11
    read = lambda p: [json.loads(x) for x in (tmp_path / "out" / p).read_text().splitlines()]  # noqa: E731
    sft, dpo, held = read("sft/train.jsonl"), read("dpo/train.jsonl"), read("dpo/heldout.jsonl")
    assert len(sft) == 100 and len(dpo) == 50 and held
    asked = lambda rows, key: {r[key][0]["content"].split('"')[1] for r in rows}  # noqa: E731
    train_words = asked(sft, "messages") | asked(dpo, "chosen")
    assert not train_words & asked(held, "chosen")  # no held-out word is trained on
    for r in dpo:
        assert r["chosen"][:-1] == r["rejected"][:-1] and r["chosen"][-1] != r["rejected"][-1]
    write_documents(tmp_path / "d2" / "x.jsonl", [Document(id="a", text="plain text", source="s")])
    with pytest.raises(DataError, match="dictionary lines"):
        build_chat_demo([str(tmp_path / "d2")], tmp_path / "o2")
