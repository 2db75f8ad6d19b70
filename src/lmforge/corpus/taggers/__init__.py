"""Document taggers: small classes in a registry, many run in one pass over a shard, all offline.

>>> from lmforge.corpus.taggers import get_tagger, list_taggers, tag
>>> tag("ROOT/documents", ["gopher_quality", "c4", "pii"], experiment="quality", workers=2)

Each tagger returns ``{key: [[start, end, score], ...]}`` (Dolma's spans); the stage writes them
as ``EXPERIMENT__TAGGER__KEY`` attributes to ``ROOT/attributes/EXPERIMENT/...``.
"""

from lmforge.corpus.taggers.base import Tagger, doc_span, get_tagger, list_taggers, register, tagger_class

# built-in taggers register themselves on import (the language models load lazily, on first use)
from lmforge.corpus.taggers import c4, code, gopher, language, pii  # noqa: E402,F401  isort: skip
from lmforge.corpus.taggers.stage import TagTask, tag, tag_shard  # noqa: E402

__all__ = ["Tagger", "TagTask", "doc_span", "get_tagger", "list_taggers", "register", "tag", "tag_shard", "tagger_class"]
