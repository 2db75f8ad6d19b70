"""The config system: YAML round trip, dotted overrides, strict validation with one-line errors."""

import dataclasses

import pytest

from lmforge.config import Config, ConfigError, parse_overrides
from lmforge.models import ModelConfig


@dataclasses.dataclass
class Optim(Config):
    lr: float = 1e-3
    betas: list[float] = dataclasses.field(default_factory=lambda: [0.9, 0.95])
    schedule: str = "cosine"


@dataclasses.dataclass
class Experiment(Config):
    name: str = "x"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: Optim = dataclasses.field(default_factory=Optim)
    steps: int | None = None


def test_yaml_round_trip(tmp_path):
    cfg = Experiment(name="run", model=ModelConfig(d_model=64, n_heads=4), steps=10)
    path = cfg.save(tmp_path / "sub" / "config.yaml")
    again = Experiment.from_yaml(path)
    assert again == cfg
    assert again.model.d_model == 64 and isinstance(again.model, ModelConfig)
    assert not list((tmp_path / "sub").glob("*.tmp")), "atomic write left a temp file"


def test_dotted_overrides_apply_with_types(tmp_path):
    path = Experiment().save(tmp_path / "c.yaml")
    cfg = Experiment.from_yaml(path, ["--model.d_model=256", "--optim.lr=3e-4", "steps=null", "--model.tie_embeddings=true"])
    assert cfg.model.d_model == 256
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)
    assert cfg.steps is None and cfg.model.tie_embeddings is True
    # untouched fields of a partially overridden section keep their values
    assert cfg.model.n_layers == ModelConfig().n_layers


def test_int_is_accepted_for_float_but_not_the_other_way():
    assert Experiment.from_dict({"optim": {"lr": 1}}).optim.lr == 1.0
    with pytest.raises(ConfigError, match=r"config key 'model.d_model' must be an integer, got 2.5"):
        Experiment.from_dict({"model": {"d_model": 2.5}})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["--model.d_modle=3"], "unknown config key 'model.d_modle'; did you mean 'model.d_model'?"),
        (["--optim.lrr=3"], "unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
        (["--modle.d_model=3"], "unknown config key 'modle'; did you mean 'model'?"),
        (["--model.tie_embeddings=maybe"], "config key 'model.tie_embeddings' must be true or false, got 'maybe'"),
        (["--model.arch=olmo3"], "did you mean 'olmo2'?"),
        (["--steps=ten"], "config key 'steps' must be int | null, got 'ten'"),
        (["--model.d_model=100", "--model.n_heads=3"], "must be divisible"),
    ],
)
def test_bad_overrides_are_one_line_errors(tmp_path, overrides, message):
    path = Experiment().save(tmp_path / "c.yaml")
    with pytest.raises(ConfigError) as info:
        Experiment.from_yaml(path, overrides)
    text = str(info.value)
    assert message in text and "\n" not in text


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {d_model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*not valid YAML"):
        Experiment.from_yaml(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        Experiment.from_yaml(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        Experiment.from_yaml(tmp_path / "list.yaml")


def test_parse_overrides_shapes():
    assert parse_overrides(["--a.b.c=1", "a.b.d=x", "e=[1, 2]"]) == {"a": {"b": {"c": 1, "d": "x"}}, "e": [1, 2]}
    with pytest.raises(ConfigError, match="must look like"):
        parse_overrides(["--a.b"])


def test_merged_returns_validated_copy():
    cfg = ModelConfig()
    bigger = cfg.merged(["d_model=512", "n_heads=8"])
    assert (bigger.d_model, cfg.d_model) == (512, 256)
    with pytest.raises(ConfigError, match="model.n_kv_heads"):
        cfg.merged({"n_kv_heads": 3}, prefix="model.")
