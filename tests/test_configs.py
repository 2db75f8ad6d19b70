"""Every shipped config under configs/ loads and validates with the class it is for."""

from pathlib import Path

import pytest

from lmforge.corpus.fetch import RecipeConfig
from lmforge.corpus.mixer import MixerConfig
from lmforge.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
KINDS = {"data": MixerConfig, "train": TrainConfig, "adapt": TrainConfig}


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads(path):
    rel = path.relative_to(CONFIGS)
    kind = RecipeConfig if rel.parts[0] == "data" and rel.name.startswith("corpus_") else KINDS[rel.parts[0]]
    cfg = kind.from_yaml(path)
    assert kind.from_dict(cfg.to_dict()) == cfg
