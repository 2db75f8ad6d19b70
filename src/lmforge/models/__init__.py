"""The OLMo model family: configs, presets and the model."""

from lmforge.models.olmo import OLMo, ModelConfig
from lmforge.models.presets import PRESETS, get_preset

__all__ = ["OLMo", "ModelConfig", "PRESETS", "get_preset"]
