"""lmforge.data: the formats the corpus pipeline writes and training reads (Dolma documents with
their accounting, OLMo token files), and training-time data: token-file datasets and weighted
mixtures, chat (SFT/DPO) sets, the evaluation sets' files, and inspecting what a step trained on.
The pipeline that makes the data is :mod:`lmforge.corpus`."""
