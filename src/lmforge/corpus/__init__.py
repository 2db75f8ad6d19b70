"""lmforge.corpus: the offline corpus pipeline, Dolma documents in and OLMo token files out.

fetch (package registries -> documents) -> tag (attributes) -> dedup (attributes) -> mix (documents)
-> tokenize (token files), plus analysis reports. Every stage is a function of one input shard run
by an executor, accounts for every document (kept / dropped with its rule / malformed with file:line)
and writes atomically. The formats both sides share (Dolma documents, token files) and what training
reads live in :mod:`lmforge.data`.
"""
