"""The fault suite reuses the trainer tests' real token files."""

from tests.train.conftest import token_dirs  # noqa: F401 - a fixture
