"""Weighted mixtures of token files: counts, seeded orders, epochs, rank slices, id checks, document ids."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lmforge.config import ConfigError
from lmforge.data.dataset import TokenDataset
from lmforge.data.documents import DataError
from lmforge.data.mixture import DataConfig, Mixture, SourceConfig, document_ids

SEQ = 16
EOS = 0


def make_tokens(d: Path, lengths: list[int], *, seed: int = 0, dtype: str = "uint16", vocab: int = 100, summary: bool = True) -> Path:
    """Raw token files (no numpy header, as lmforge/dolma write them) of the given lengths, ids in
    [1, vocab) with an EOS every ~20 tokens, plus a tokenize_summary.json with dtype and EOS id."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, n in enumerate(lengths):
        ids = rng.integers(1, vocab, size=n)
        ids[rng.random(n) < 0.05] = EOS
        ids.astype(dtype).tofile(d / f"part-{i:05d}-00000.npy")
    if summary:
        (d / "tokenize_summary.json").write_text(json.dumps({"dtype": dtype, "tokenizer": {"eos_token_id": EOS}}))
    return d


def mix_of(*sources: tuple[Path, float, float], seed: int = 5, instances: int | None = None, seq_len: int = SEQ, **kw) -> Mixture:
    cfg = DataConfig(
        sources=[SourceConfig(paths=[str(p)], name=p.name, weight=w, max_repeat=r) for p, w, r in sources],
        seed=seed,
        instances=instances,
        **kw,
    )
    cfg.validate()
    return cfg.build(seq_len)


@pytest.fixture()
def two(tmp_path) -> tuple[Path, Path]:
    """Source "a": 640 instances of 16 tokens over 3 files; source "b": 80 instances over 2."""
    a = make_tokens(tmp_path / "a", [16 * 200 + 7, 16 * 240, 16 * 200 + 15], seed=1)
    b = make_tokens(tmp_path / "b", [16 * 50 + 3, 16 * 30], seed=2)
    return a, b


def test_single_source_of_weight_one_is_token_dataset_order(two):
    a, _ = two
    mix = mix_of((a, 1.0, 1.0), seed=7)
    ds = TokenDataset([a], SEQ)
    assert len(mix) == len(ds) == 640 and mix.counts.tolist() == [640]
    for epoch in (0, 1, 2):
        assert np.array_equal(mix.order(epoch), ds.global_order(7, epoch))
    for step in (0, 3, 79, 80, 161):  # 80 steps per epoch at global batch 8: crosses two epochs
        got = mix.batch(step, 8)
        want = ds.instances_at_step(step, 8, seed=7)
        assert [m.instance.index for m in got] == want
        assert all(np.array_equal(m.instance.tokens, ds[i].tokens) and m.source == "a" for m, i in zip(got, want))


def test_weights_and_max_repeat_give_floor_counts_of_the_largest_mix(two):
    a, b = two
    mix = mix_of((a, 0.75, 1.0), (b, 0.25, 1.0))
    sizes, ratio, cap = np.array([640, 80]), np.array([0.75, 0.25]), np.array([640, 80])
    n = max(k for k in range(1, 10_000) if np.all(k * ratio <= cap))  # the largest mix within max_repeat
    assert n == 320
    assert mix.counts.tolist() == np.floor(n * ratio).astype(int).tolist() == [240, 80]
    assert len(mix) == 320
    src = Counter(mix[p].source for p in range(len(mix)))
    assert src == {"a": 240, "b": 80}
    # down-sampled "a": 240 distinct instances; "b" used whole, each instance once
    per = {name: Counter(mix[p].instance.index for p in range(len(mix)) if mix[p].source == name) for name in "ab"}
    assert len(per["a"]) == 240 and set(per["a"].values()) == {1}
    assert sorted(per["b"]) == list(range(80)) and set(per["b"].values()) == {1}
    fp = mix.fingerprint()
    assert [(s["name"], s["instances_available"], s["instances_used"]) for s in fp["sources"]] == [("a", 640, 240), ("b", 80, 80)]
    assert sizes.sum() == sum(s["instances_available"] for s in fp["sources"])

    # weights need not sum to 1, and exact shares survive floating point (70/0.7 = 100.00000000000001)
    c = make_tokens(a.parent / "c", [16 * 70], seed=3)
    d = make_tokens(a.parent / "d", [16 * 30], seed=4)
    assert mix_of((c, 7.0, 1.0), (d, 3.0, 1.0)).counts.tolist() == [70, 30]


def test_up_sampling_repeats_whole_copies_then_a_seeded_part(two):
    a, b = two
    # max_repeat 3 lets "b" (80 instances) reach half of the mix: N = min(640 / .5, 240 / .5) = 480
    mix = mix_of((a, 0.5, 1.0), (b, 0.5, 3.0))
    assert mix.counts.tolist() == [240, 240]
    reps = Counter(mix[p].instance.index for p in range(len(mix)) if mix[p].source == "b")
    assert sorted(reps) == list(range(80)) and set(reps.values()) == {3}
    # a share that is not a whole number of copies: 2 copies + 30 instances chosen by the seed
    mix = mix_of((a, 0.5, 1.0), (b, 0.5, 3.0), instances=380)
    assert mix.counts.tolist() == [190, 190]
    reps = Counter(mix[p].instance.index for p in range(len(mix)) if mix[p].source == "b")
    assert sorted(reps) == list(range(80)) and Counter(reps.values()) == {2: 50, 3: 30}
    other = mix_of((a, 0.5, 1.0), (b, 0.5, 3.0), instances=380, seed=6)
    reps2 = Counter(other[p].instance.index for p in range(len(other)) if other[p].source == "b")
    assert {i for i, k in reps.items() if k == 3} != {i for i, k in reps2.items() if k == 3}


def test_explicit_instances_too_large_names_the_source(two):
    a, b = two
    with pytest.raises(DataError) as e:
        mix_of((a, 0.5, 1.0), (b, 0.5, 2.0), instances=400)  # "b" would need 200 > 80 * 2
    msg = str(e.value)
    assert "'b'" in msg and "200" in msg and "max_repeat" in msg and "data.instances" in msg and "\n" not in msg
    assert mix_of((a, 0.5, 1.0), (b, 0.5, 2.0), instances=320).counts.tolist() == [160, 160]


def test_deterministic_across_builds_and_seed_dependent(two):
    a, b = two
    m1, m2 = mix_of((a, 0.75, 1.0), (b, 0.25, 1.0)), mix_of((a, 0.75, 1.0), (b, 0.25, 1.0))
    assert m1.fingerprint() == m2.fingerprint()
    for step in (0, 5, 39, 40, 41):
        assert m1.positions(step, 8) == m2.positions(step, 8)
        assert all(np.array_equal(x.instance.tokens, y.instance.tokens) for x, y in zip(m1.batch(step, 8), m2.batch(step, 8)))
    m3 = mix_of((a, 0.75, 1.0), (b, 0.25, 1.0), seed=6)
    assert m3.fingerprint()["mix_sha256"] != m1.fingerprint()["mix_sha256"]  # another subset of "a"
    assert not np.array_equal(m3.order(0), m1.order(0))


def test_every_epoch_is_a_different_permutation(two):
    a, b = two
    mix = mix_of((a, 0.75, 1.0), (b, 0.25, 1.0))
    orders = [mix.order(e) for e in range(5)]
    for o in orders:
        assert sorted(o.tolist()) == list(range(len(mix)))
    assert len({o.tobytes() for o in orders}) == 5
    assert np.array_equal(mix.order(1), orders[1])  # asking again (after the cache was cleared) gives the same


def test_rank_slices_are_disjoint_and_cover_the_global_batch(two):
    a, b = two
    mix = mix_of((a, 0.75, 1.0), (b, 0.25, 1.0))
    for step in (0, 7, 40):
        full = mix.positions(step, 16)
        assert len(full) == 16 == len(set(full))
        for world in (2, 4, 8, 16):
            parts = [mix.positions(step, 16, rank=r, world_size=world) for r in range(world)]
            assert all(len(p) == 16 // world for p in parts)
            assert sum(parts, []) == full  # contiguous slices, in rank order
            assert [m.position for m in mix.batch(step, 16, rank=1, world_size=world)] == parts[1]
    with pytest.raises(DataError, match="not divisible"):
        mix.positions(0, 16, world_size=3)


def test_steps_per_epoch_and_wrap_around(two):
    a, b = two
    mix = mix_of((a, 0.75, 1.0), (b, 0.25, 1.0))  # 320 instances
    assert mix.steps_per_epoch(8) == 40 and mix.steps_per_epoch(48) == 6  # 6 * 48 = 288: the tail of 32 is dropped
    seen = [p for s in range(6) for p in mix.positions(s, 48)]
    assert seen == mix.order(0)[:288].tolist()
    assert mix.positions(6, 48) == mix.order(1)[:48].tolist()
    assert mix.positions(13, 48) == mix.order(2)[48:96].tolist()
    with pytest.raises(DataError, match="fewer than one global batch"):
        mix.steps_per_epoch(321)


def test_check_ids_names_the_file_and_token_offset(tmp_path):
    d = make_tokens(tmp_path / "src", [16 * 50, 16 * 100 + 5], seed=3)
    bad = d / "part-00001-00000.npy"
    ids = np.fromfile(bad, dtype=np.uint16)
    ids[1234] = 500  # out of range for a vocabulary of 384
    ids.tofile(bad)
    mix = mix_of((d, 1.0, 1.0))
    everything = [mix[p] for p in range(len(mix))]
    mix.check_ids(everything, vocab_size=501)  # 500 fits a vocabulary of 501
    with pytest.raises(DataError) as e:
        mix.check_ids(everything, vocab_size=384)
    msg = str(e.value)
    assert str(bad) in msg and "token offset 1234" in msg and "token id 500" in msg and "vocab_size 384" in msg
    assert "\n" not in msg
    # instances that do not hold the offset pass
    clean = [m for m in everything if not (m.instance.file == str(bad) and m.instance.start <= 1234 < m.instance.start + SEQ)]
    assert len(clean) == len(everything) - 1
    mix.check_ids(clean, vocab_size=384)


def test_document_ids_eos_belongs_to_the_document_it_ends():
    t = np.array([[5, 6, 0, 7, 0, 8], [0, 1, 2, 0, 0, 3], [4, 4, 4, 4, 4, 4]])
    assert document_ids(t, 0).tolist() == [[0, 0, 0, 1, 1, 2], [0, 1, 1, 1, 2, 3], [0, 0, 0, 0, 0, 0]]
    assert document_ids(np.array([9, 9, 9]), 9).tolist() == [0, 1, 2]  # EOS only: one document each
    assert document_ids(np.array([1, 2, 3]), 0).tolist() == [0, 0, 0]


def test_eos_comes_from_the_summary_or_the_config(tmp_path):
    d = make_tokens(tmp_path / "src", [16 * 10])
    assert mix_of((d, 1.0, 1.0)).eos_id == EOS
    assert mix_of((d, 1.0, 1.0), eos_id=3).eos_id == 3


def test_fingerprint_changes_when_a_file_changes(tmp_path):
    d = make_tokens(tmp_path / "src", [16 * 20 + 3, 16 * 10])
    before = mix_of((d, 1.0, 1.0)).fingerprint()
    f = d / "part-00001-00000.npy"
    with open(f, "ab") as fh:  # three tokens: no new instance, but the file is different
        np.array([1, 2, 3], dtype=np.uint16).tofile(fh)
    after = mix_of((d, 1.0, 1.0)).fingerprint()
    assert after != before
    assert [x["bytes"] for x in after["files"]] == [before["files"][0]["bytes"], before["files"][1]["bytes"] + 6]
    with open(f, "ab") as fh:  # a whole instance more: the mix itself changes
        np.arange(1, 17, dtype=np.uint16).tofile(fh)
    grown = mix_of((d, 1.0, 1.0)).fingerprint()
    assert grown["instances"] == before["instances"] + 1 and grown["mix_sha256"] != before["mix_sha256"]


def test_unusable_paths_give_one_line_errors_saying_what_to_do(tmp_path):
    good = make_tokens(tmp_path / "good", [16 * 10])
    dolma = make_tokens(tmp_path / "dolma", [16 * 10], summary=False)

    def err(paths, **kw) -> str:
        with pytest.raises(DataError) as e:
            DataConfig(sources=[SourceConfig(paths=paths)], **kw).build(SEQ)
        assert "\n" not in str(e.value)
        return str(e.value)

    msg = err([str(tmp_path / "missing")])
    assert "missing" in msg and "no such token file or directory" in msg and "lmforge data tokenize" in msg
    msg = err([str(tmp_path / "nothing-*.npy")])
    assert "nothing-*.npy" in msg and "data.sources[].paths" in msg and "lmforge data tokenize" in msg
    msg = err([str(dolma)])
    assert str(dolma) in msg and "set data.dtype" in msg and "uint16" in msg
    msg = err([str(good), str(dolma)])  # the second path of a source is checked too
    assert str(dolma) in msg and "set data.dtype" in msg
    msg = err([str(good)], dtype="uint32")  # a dtype that contradicts the summary would misread every token
    assert "uint32" in msg and "uint16" in msg and str(good) in msg
    msg = err([str(make_tokens(tmp_path / "short", [10]))])
    assert "no instance of 16 tokens" in msg

    # dolma's files read with the dtype given; a glob keeps only token files (not .csv.gz / summaries)
    assert len(DataConfig(sources=[SourceConfig(paths=[str(dolma)])], dtype="uint16").build(SEQ)) == 10
    (good / "part-00000-00000.csv.gz").write_bytes(b"not tokens")
    mix = DataConfig(sources=[SourceConfig(paths=[str(good / "*")])]).build(SEQ)
    assert mix.files == [str(good / "part-00000-00000.npy")] and len(mix) == 10

    with pytest.raises(ConfigError, match="data.sources is empty"):
        DataConfig().build(SEQ)
    with pytest.raises(ConfigError, match="weight must be positive"):
        SourceConfig(paths=["x"], weight=0).validate()
    with pytest.raises(ConfigError, match="names must be unique"):
        DataConfig(sources=[SourceConfig(paths=["x"], name="n"), SourceConfig(paths=["y"], name="n")]).validate()
