"""The model card: facts in a CardFacts, rendered by templates/model_card.md.j2, byte for byte what
lmforge wrote before the card became a template (tests/release/data/card_*.md, made by that code)."""

import dataclasses

import pytest

from lmforge.release.card import CardFacts, manifest_sources, model_card, render_card, revision_card
from lmforge.models.olmo import ModelConfig
from tests.release.card_cases import CARDS, DATA, REVISION_CARDS


def _facts(kw) -> CardFacts:
    kw = dict(kw)
    manifest = kw.pop("manifest", None)
    return CardFacts(model=ModelConfig.from_dict(kw.pop("model")), sources=manifest_sources(manifest) if manifest is not None else None, **kw)


@pytest.mark.parametrize("case", sorted(CARDS))
def test_card_from_facts_is_the_stored_card(case):
    expected = (DATA / f"card_{case}.md").read_text(encoding="utf-8")
    assert render_card(_facts(CARDS[case])) == expected
    assert model_card(**CARDS[case]) == expected  # the keyword form renders the same facts


@pytest.mark.parametrize("case", sorted(REVISION_CARDS))
def test_revision_card_is_the_stored_card(case):
    assert revision_card(**REVISION_CARDS[case]) == (DATA / f"card_{case}.md").read_text(encoding="utf-8")


def test_batch_and_sequence_length_from_the_checkpoint_win_over_the_config():
    facts = _facts(CARDS["full"])  # config: 8 sequences × 256 tokens
    assert "| batch | 8 sequences × 256 tokens = 2,048 tokens per step |" in render_card(facts)
    card = render_card(dataclasses.replace(facts, global_batch=16, seq_len=64))
    assert "| batch | 16 sequences × 64 tokens = 1,024 tokens per step |" in card
    bare = dataclasses.replace(facts, train_config={}, global_batch=4, seq_len=32)  # no config at all
    assert "| batch | 4 sequences × 32 tokens = 128 tokens per step |" in render_card(bare)


def test_a_card_is_one_rendering_of_its_facts():
    facts = _facts(CARDS["full"])
    assert render_card(facts) == render_card(facts)
    assert render_card(dataclasses.replace(facts, name="other")).count("# other\n") == 1
