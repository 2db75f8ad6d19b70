"""lmforge.generate: greedy parity with HF generate(), KV-cache exactness, sampling filters,
reproducibility, stop strings, streaming and incremental detokenisation, config validation, CLI."""

from __future__ import annotations

import io

import pytest
import torch
import transformers

from lmforge.config import ConfigError
from lmforge.generate import (
    BatchDecoder,
    GenerationConfig,
    IncrementalDetokenizer,
    StopStringMatcher,
    generate,
    generate_ids,
    stream,
)
from lmforge.cli.generate import run_generate
from lmforge.generate.sampling import choose_next
from lmforge.models import OLMo, ModelConfig
from lmforge.models.hf import to_hf_config, to_hf_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")


VOCAB = 300  # real vocabulary of the token-level tests; the embedding is padded to 384
PAD = 0
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [20, 21, 22], [30, 31, 32, 33, 34]]  # different lengths: left padding


def tiny_model(arch="olmo2", tie=False, kv=None, vocab=VOCAB, seed=0, std=None):
    """A random tiny model. ``std``: redraw the blocks' (and an untied head's) matrices from N(0, std²).

    At the default init (std 0.02) the blocks add little to the residual stream, so a model with
    tied embeddings scores the token it just read highest and greedy decoding repeats one token;
    with ``std=0.2`` the blocks dominate and greedy output runs through many different tokens."""
    cfg = ModelConfig(
        arch=arch, d_model=64, n_layers=2, n_heads=4, n_kv_heads=kv, mlp_hidden=96, vocab_size=vocab,
        tie_embeddings=tie, max_seq_len=128, clip_qkv=0.5 if arch == "olmo1" else None,
    )
    torch.manual_seed(seed)
    model = cfg.build().eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # norm scales away from 1, so a wrong norm placement would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif std is not None and "embed" not in name and p.dim() == 2:
                p.normal_(0.0, std, generator=g)
    return model


VARIED = 0.2  # tiny_model(std=VARIED): greedy output that varies (see tiny_model)


def assert_varied(rows, at_least=5):
    """Greedy rows that are not one token repeated: each has ``at_least`` distinct tokens."""
    assert all(len(set(r)) >= at_least for r in rows), [len(set(r)) for r in rows]


def hf_twin(model, eos_token_id):
    """A stock HF OlmoForCausalLM / Olmo2ForCausalLM holding our weights."""
    cfg = model.config
    d = to_hf_config(cfg, eos_token_id=eos_token_id, pad_token_id=PAD)
    hm = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**d)).eval()
    hm.load_state_dict(to_hf_state_dict(model.state_dict(), cfg), strict=False)  # tied: lm_head "missing"
    hm.generation_config.pad_token_id = PAD
    hm.generation_config.eos_token_id = eos_token_id
    return hm


def hf_greedy(hm, prompts, max_new_tokens, eos_token_id, **kwargs):
    """HF generate() over left-padded prompts; new tokens per row, cut after the first EOS."""
    L = max(map(len, prompts))
    ids = torch.full((len(prompts), L), PAD)
    mask = torch.zeros(len(prompts), L, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(p)
        mask[i, L - len(p):] = 1
    padded_vocab = hm.config.vocab_size
    with torch.no_grad():
        out = hm.generate(
            ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            suppress_tokens=list(range(VOCAB, padded_vocab)),  # as ours: padding ids are never chosen
            **kwargs,
        )
    rows = []
    for row in out[:, L:].tolist():
        if eos_token_id in row:
            row = row[: row.index(eos_token_id) + 1]
        rows.append(row)
    return rows


NO_EOS = VOCAB + 10  # an id in the padded vocabulary: can never be generated, so EOS never fires


# --- greedy parity with HF ---------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["olmo1", "olmo2"])
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("kv", [None, 2], ids=["mha", "gqa"])
def test_greedy_matches_hf_generate(arch, tie, kv):
    model = tiny_model(arch, tie, kv, std=VARIED)
    gen = GenerationConfig(max_new_tokens=24)
    hm = hf_twin(model, NO_EOS)

    single = generate_ids(model, PROMPTS[:1], gen, pad_token_id=PAD, eos_token_id=NO_EOS)
    assert_varied(single, at_least=8)
    assert single == hf_greedy(hm, PROMPTS[:1], 24, NO_EOS)

    batch = generate_ids(model, PROMPTS, gen, pad_token_id=PAD, eos_token_id=NO_EOS)
    assert_varied(batch)
    assert batch == hf_greedy(hm, PROMPTS, 24, NO_EOS)
    assert batch[0] == single[0]  # padding the batch changes nothing
    assert all(len(r) == 24 for r in batch)

    # An EOS that one row emits mid-way: rows finish at different steps (and are dropped).
    eos = batch[1][5]
    hm = hf_twin(model, eos)
    ours = generate_ids(model, PROMPTS, gen, pad_token_id=PAD, eos_token_id=eos)
    assert ours == hf_greedy(hm, PROMPTS, 24, eos)
    assert ours[1][-1] == eos and len(ours[1]) <= 6


def test_cached_decoding_logits_equal_full_forward(monkeypatch):
    import lmforge.generate.decode as decode

    monkeypatch.setattr(decode, "MIN_ROWS", 1)  # let the 3-row batch shrink
    model = tiny_model("olmo2", kv=2)
    first = generate_ids(model, PROMPTS, GenerationConfig(max_new_tokens=12), pad_token_id=PAD, eos_token_id=NO_EOS)
    eos = first[1][3]  # row 1 finishes early and leaves the batch: covers KVCache.reorder too
    dec = BatchDecoder(model, PROMPTS, GenerationConfig(max_new_tokens=12), pad_token_id=PAD, eos_token_id=eos)
    checked = 0
    batch_sizes = set()
    for step in dec.steps():
        batch_sizes.add(len(dec.rows))
        for row, _ in step:
            context = PROMPTS[row] + dec.tokens[row][:-1]  # what the chosen token was conditioned on
            with torch.no_grad():
                full = model(torch.tensor([context]))[0, -1]  # no cache, no padding
            cached = dec.logits[dec.rows.index(row)]
            torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
            checked += 1
    assert checked > 20 and len(batch_sizes) > 1  # some steps ran after a row was dropped


def test_small_batches_keep_finished_rows_along(monkeypatch):
    import lmforge.generate.decode as decode

    model = tiny_model("olmo2", std=VARIED)
    prompts = PROMPTS + [[40, 41], [50, 51, 52, 53], [60]]
    free = generate_ids(model, prompts, GenerationConfig(max_new_tokens=10), pad_token_id=PAD, eos_token_id=NO_EOS)
    eos = [row[2] for row in free[:5]]  # five of six rows finish by their third token: the batch shrinks
    runs = {}
    for floor in (1, 4):
        monkeypatch.setattr(decode, "MIN_ROWS", floor)
        dec = BatchDecoder(model, prompts, GenerationConfig(max_new_tokens=10), pad_token_id=PAD, eos_token_id=eos)
        sizes = [len(dec.rows) for _ in dec.steps()]
        runs[floor] = (dec.tokens, min(sizes))
    assert runs[1][0] == runs[4][0]  # the same tokens
    assert runs[4][1] >= 4 and runs[1][1] < runs[4][1]


# --- repetition penalty --------------------------------------------------------------------------
@pytest.mark.parametrize("penalty", [1.5, 0.7])
@pytest.mark.parametrize("arch", ["olmo1", "olmo2"])
def test_repetition_penalty_matches_hf(arch, penalty):
    model = tiny_model(arch, tie=True, std=VARIED)
    hm = hf_twin(model, NO_EOS)
    gen = GenerationConfig(max_new_tokens=20, repetition_penalty=penalty)
    # Same-length prompts: HF also penalises the pad ids of padded rows, which we (rightly) do not.
    prompts = [[5, 6, 7, 5, 6], [40, 41, 40, 42, 43]]
    ours = generate_ids(model, prompts, gen, pad_token_id=PAD, eos_token_id=NO_EOS)
    assert_varied(ours, at_least=3)
    assert ours == hf_greedy(hm, prompts, 20, NO_EOS, repetition_penalty=penalty)
    plain = generate_ids(model, prompts, GenerationConfig(max_new_tokens=20), pad_token_id=PAD, eos_token_id=NO_EOS)
    assert ours != plain  # the penalty actually changed something


# --- sampling ------------------------------------------------------------------------------------
PROBS = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])  # ranked: 1 (.4), 3 (.3), 4 (.15), 2 (.1), 0 (.05)


def draw(gen, n=20000):
    logits = PROBS.log().expand(n, -1).clone()
    return choose_next(logits, gen, torch.Generator().manual_seed(0))


def test_top_k_samples_only_top_k():
    counts = torch.bincount(draw(GenerationConfig(do_sample=True, top_k=2)), minlength=5)
    assert set(counts.nonzero().flatten().tolist()) == {1, 3}
    assert abs(counts[1] / counts.sum() - 0.4 / 0.7) < 0.02  # renormalised within the kept set


def test_top_p_samples_only_nucleus():
    # 0.4 + 0.3 = 0.7 < 0.8, + 0.15 = 0.85 >= 0.8: the nucleus is {1, 3, 4}
    counts = torch.bincount(draw(GenerationConfig(do_sample=True, top_p=0.8)), minlength=5)
    assert set(counts.nonzero().flatten().tolist()) == {1, 3, 4}
    assert abs(counts[4] / counts.sum() - 0.15 / 0.85) < 0.02
    # the most likely token is always kept, however small top_p
    assert set(draw(GenerationConfig(do_sample=True, top_p=0.01)).tolist()) == {1}
    both = draw(GenerationConfig(do_sample=True, top_k=2, top_p=0.99))  # top-k first, then nucleus
    assert set(both.tolist()) == {1, 3}


def test_sampling_full_distribution_and_temperature():
    counts = torch.bincount(draw(GenerationConfig(do_sample=True)), minlength=5).float()
    assert torch.allclose(counts / counts.sum(), PROBS, atol=0.02)
    hot = torch.bincount(draw(GenerationConfig(do_sample=True, temperature=100.0)), minlength=5).float()
    assert (hot / hot.sum()).min() > 0.15  # near uniform


@pytest.mark.parametrize("kwargs", [dict(top_k=5), dict(top_p=0.5), dict(top_k=8, top_p=0.6, temperature=0.7)])
def test_sampled_tokens_lie_in_the_filtered_set(kwargs):
    model = tiny_model("olmo1")
    gen = GenerationConfig(max_new_tokens=25, do_sample=True, seed=1, **kwargs)
    dec = BatchDecoder(model, PROMPTS, gen, pad_token_id=PAD, eos_token_id=NO_EOS)
    for step in dec.steps():
        for row, tok in step:
            logits = dec.logits[dec.rows.index(row), :VOCAB].double() / gen.temperature
            order = logits.argsort(descending=True)
            allowed = order[: gen.top_k] if gen.top_k else order
            probs = logits[allowed].softmax(-1)
            mass_above = probs.cumsum(-1) - probs
            nucleus = allowed[mass_above < gen.top_p + 1e-6]  # a little slack for the boundary token
            assert tok in nucleus.tolist()


def test_sampling_seed_is_reproducible():
    model = tiny_model("olmo2")

    def sample(seed):
        gen = GenerationConfig(max_new_tokens=30, do_sample=True, seed=seed)
        return generate_ids(model, PROMPTS, gen, pad_token_id=PAD, eos_token_id=NO_EOS)

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    torch.manual_seed(0)  # seed=None draws from torch's global generator
    a = sample(None)
    torch.manual_seed(0)
    assert sample(None) == a


def test_tiny_temperature_equals_greedy():
    model = tiny_model("olmo2", kv=2)
    greedy = generate_ids(model, PROMPTS, GenerationConfig(max_new_tokens=20), pad_token_id=PAD, eos_token_id=NO_EOS)
    cold = GenerationConfig(max_new_tokens=20, do_sample=True, temperature=1e-6, seed=3)
    assert generate_ids(model, PROMPTS, cold, pad_token_id=PAD, eos_token_id=NO_EOS) == greedy


def test_ids_beyond_the_vocabulary_are_never_generated():
    model = tiny_model("olmo2")
    boost = torch.zeros(model.config.padded_vocab_size)
    boost[VOCAB:] = 100.0  # make the padding ids win every argmax
    model.output = lambda h: OLMo.output(model, h) + boost
    dec = BatchDecoder(model, PROMPTS, GenerationConfig(max_new_tokens=10), pad_token_id=PAD, eos_token_id=NO_EOS)
    raw_winners = []
    for _ in dec.steps():
        raw_winners += dec.logits.argmax(-1).tolist()
    assert all(t >= VOCAB for t in raw_winners)  # unmasked, a padding id would have been picked
    assert all(t < VOCAB for row in dec.tokens for t in row)
    for kwargs in (dict(do_sample=True, seed=0), dict(do_sample=True, seed=0, top_k=50, top_p=0.9)):
        out = generate_ids(model, PROMPTS, GenerationConfig(max_new_tokens=10, **kwargs), pad_token_id=PAD, eos_token_id=None)
        assert all(t < VOCAB for row in out for t in row)
    # an explicit, smaller vocabulary (e.g. the tokenizer's) bounds the ids further
    out = generate_ids(model, PROMPTS, GenerationConfig(max_new_tokens=10, do_sample=True, seed=0),
                       pad_token_id=PAD, eos_token_id=None, vocab_size=50)
    assert all(t < 50 for row in out for t in row)


def test_edge_cases():
    model = tiny_model()
    assert generate_ids(model, PROMPTS, GenerationConfig(max_new_tokens=0), pad_token_id=PAD, eos_token_id=None) == [[], [], []]
    assert generate_ids(model, [], GenerationConfig(), pad_token_id=PAD, eos_token_id=None) == []
    with pytest.raises(ValueError, match="at least one token"):
        generate_ids(model, [[1], []], GenerationConfig(), pad_token_id=PAD, eos_token_id=None)
    # stop_at_eos=False ignores the EOS id
    first = generate_ids(model, PROMPTS[:1], GenerationConfig(max_new_tokens=8), pad_token_id=PAD, eos_token_id=None)[0]
    gen = GenerationConfig(max_new_tokens=8, stop_at_eos=False)
    assert generate_ids(model, PROMPTS[:1], gen, pad_token_id=PAD, eos_token_id=first[2])[0] == first
    # several EOS ids
    gen = GenerationConfig(max_new_tokens=8)
    assert generate_ids(model, PROMPTS[:1], gen, pad_token_id=PAD, eos_token_id=[999, first[2]])[0] == first[:3]


# --- config validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value",
    [("temperature", 0.0), ("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("top_k", -1),
     ("repetition_penalty", 0.0), ("max_new_tokens", -1), ("stop_strings", [""])],
)
def test_validation_errors_are_one_line_naming_the_key(key, value):
    for make in (lambda: GenerationConfig(**{key: value}), lambda: GenerationConfig().replace(**{key: value}),
                 lambda: GenerationConfig.from_dict({key: value})):
        with pytest.raises(ConfigError) as e:
            make()
        assert "\n" not in str(e.value) and f"generate.{key}" in str(e.value)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        GenerationConfig.from_dict({"temprature": 0.5})


# --- text: tokenizer, detokenisation, stop strings, streaming --------------------------------------
@pytest.fixture(scope="module")
def tokenizer(bpe_tokenizer):
    """lmforge's byte-level BPE (tests/conftest.py), trained on generated text with some unicode."""
    return bpe_tokenizer


class EosAs:
    """A tokenizer whose EOS is some other id (to make a random model "emit EOS" where we want)."""

    def __init__(self, tokenizer, eos_token_id):
        self._tokenizer, self.eos_token_id = tokenizer, eos_token_id

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.fixture(scope="module")
def text_model(tokenizer):
    return tiny_model("olmo2", vocab=tokenizer.vocab_size, seed=1)


TEXT_PROMPTS = ["the cat sat", "日本", "hello world and a dog ran"]


def test_stream_equals_generate_equals_decode(text_model, tokenizer):
    gen = GenerationConfig(max_new_tokens=60, stop_at_eos=False)
    batch = generate(text_model, tokenizer, TEXT_PROMPTS, gen)
    ids = generate_ids(text_model, [tokenizer.encode(p) for p in TEXT_PROMPTS], gen, pad_token_id=tokenizer.pad_token_id,
                       eos_token_id=None, vocab_size=tokenizer.vocab_size)
    for prompt, text, row in zip(TEXT_PROMPTS, batch, ids):
        pieces = list(stream(text_model, tokenizer, prompt, gen))
        assert "".join(pieces) == text == generate(text_model, tokenizer, prompt, gen)
        assert text == tokenizer.decode(row, skip_special_tokens=True)  # incremental detokenisation loses nothing
        assert len(pieces) > 5 and all(pieces)


def test_stop_strings_cut_the_text_and_the_stream(text_model, tokenizer):
    gen = GenerationConfig(max_new_tokens=60, stop_at_eos=False)
    full = generate(text_model, tokenizer, TEXT_PROMPTS[0], gen)
    stop = full[20:23]
    cut = full[: full.index(stop)]
    calls = []
    hook = text_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        stopped_gen = gen.replace(stop_strings=["NEVER PRESENT", stop])
        assert generate(text_model, tokenizer, TEXT_PROMPTS[0], stopped_gen) == cut
        assert len(calls) < 60  # decoding stopped early instead of running to max_new_tokens
        pieces = list(stream(text_model, tokenizer, TEXT_PROMPTS[0], stopped_gen))
        assert "".join(pieces) == cut
    finally:
        hook.remove()
    # the earliest of several stop strings wins; batches cut each row on its own
    earlier = full[5:7]
    assert generate(text_model, tokenizer, TEXT_PROMPTS[0], gen.replace(stop_strings=[stop, earlier])) == full[: full.index(earlier)]
    batch = generate(text_model, tokenizer, TEXT_PROMPTS, gen.replace(stop_strings=[stop]))
    plain = generate(text_model, tokenizer, TEXT_PROMPTS, gen)
    assert batch[0] == cut
    for b, p in zip(batch[1:], plain[1:]):
        assert b == (p[: p.index(stop)] if stop in p else p)


def test_eos_ends_the_text(text_model, tokenizer):
    ids = tokenizer.encode(TEXT_PROMPTS[2])
    gen = GenerationConfig(max_new_tokens=30, stop_at_eos=False)
    row = generate_ids(text_model, [ids], gen, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)[0]
    tokenizer_with_eos = EosAs(tokenizer, row[10])  # pretend a token the model emits is EOS
    text = generate(text_model, tokenizer_with_eos, TEXT_PROMPTS[2], GenerationConfig(max_new_tokens=30))
    assert text == tokenizer.decode(row[: row.index(row[10])], skip_special_tokens=True)


def test_empty_prompt_starts_from_eos(text_model, tokenizer):
    text = generate(text_model, tokenizer, "", GenerationConfig(max_new_tokens=10, stop_at_eos=False))
    ids = generate_ids(text_model, [[tokenizer.eos_token_id]], GenerationConfig(max_new_tokens=10, stop_at_eos=False),
                       pad_token_id=tokenizer.pad_token_id, eos_token_id=None, vocab_size=tokenizer.vocab_size)[0]
    assert text == tokenizer.decode(ids, skip_special_tokens=True)


def _byte_level_ids(tokenizer, data: bytes) -> list[int]:
    """One token per byte, through the byte-level alphabet (printable bytes map to themselves,
    the others to code points from 256 up, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    char = {b: chr(b) for b in printable} | {b: chr(256 + i) for i, b in enumerate(others)}
    return [tokenizer.token_to_id(char[b]) for b in data]


def test_incremental_detokenizer_never_splits_a_character(tokenizer):
    text = "日本語 café 🙂 naïve über 🚀!"
    ids = _byte_level_ids(tokenizer, text.encode())
    assert tokenizer.decode(ids, skip_special_tokens=True) == text
    detok = IncrementalDetokenizer(tokenizer)
    pieces = [detok.add(t) for t in ids] + [detok.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert pieces[:3] == ["", "", "日"]  # three bytes, one character
    # with real merges too, and after a context that is not emitted
    ctx = tokenizer.encode("the cat ")
    detok = IncrementalDetokenizer(tokenizer, ctx)
    assert "".join([detok.add(t) for t in tokenizer.encode(text)] + [detok.flush()]) == text
    # an incomplete character at the very end is flushed as U+FFFD, as decode() would
    detok = IncrementalDetokenizer(tokenizer)
    partial = _byte_level_ids(tokenizer, "a日".encode()[:3])
    assert "".join([detok.add(t) for t in partial]) == "a"
    assert detok.flush() == tokenizer.decode(partial, skip_special_tokens=True)[1:] == "\ufffd"


def test_stop_string_matcher_holds_back_possible_starts():
    m = StopStringMatcher(["\n\n", "END"])
    assert m.feed("ab") == "ab"
    assert m.feed("c\n") == "c"  # "\n" may start "\n\n"
    assert m.feed("x E") == "\nx "  # it did not; "E" may start "END"
    assert m.feed("N") == ""
    assert m.feed("Dzz") == "" and m.stopped
    assert m.feed("more") == "" and m.flush() == ""
    m = StopStringMatcher(["\n\n"])
    assert m.feed("a\n") == "a" and m.flush() == "\n"  # the stream ended: release what was held
    m = StopStringMatcher(["abc", "bd"])
    assert m.feed("xab") == "x" and m.feed("d") == "a" and m.stopped


# --- CLI ---------------------------------------------------------------------------------------------
def test_generate_command(tmp_path, text_model, tokenizer, capsys):
    from lmforge.checkpoint import save_model

    ckpt = save_model(tmp_path / "ckpt", text_model, tokenizer=tokenizer)  # the real loader reads it back
    gen = GenerationConfig(max_new_tokens=15, stop_at_eos=False)
    expected = [generate(text_model, tokenizer, p, gen) for p in TEXT_PROMPTS[:2]]

    for streaming in (True, False):
        out = io.StringIO()
        assert run_generate(str(ckpt), TEXT_PROMPTS[:2], gen, stream=streaming, stdout=out) == 0
        assert out.getvalue() == "".join(f"{p}{e}\n" for p, e in zip(TEXT_PROMPTS[:2], expected))

    out = io.StringIO()
    stdin = io.StringIO(f"{TEXT_PROMPTS[0]}\n{TEXT_PROMPTS[1]}\nexit\nnot read\n")
    assert run_generate(str(ckpt), None, gen, stdin=stdin, stdout=out) == 0
    assert out.getvalue() == "".join(f"{e}\n" for e in expected)

    from lmforge.cli import main

    assert main(["generate", "--model", str(tmp_path / "nowhere"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge: error:") and err.count("\n") == 1 and "nowhere" in err
    # the flags are the config's: greedy unless a sampling knob is given
    assert main(["generate", "--model", str(ckpt), "--prompt", TEXT_PROMPTS[0], "--max-new-tokens", "15", "--no-stream"]) == 0
    assert capsys.readouterr().out == f"{TEXT_PROMPTS[0]}{generate(text_model, tokenizer, TEXT_PROMPTS[0], GenerationConfig(max_new_tokens=15))}\n"


# --- the static-cache, compiled fast path (GenerationConfig.compile) ------------------------------
@pytest.mark.parametrize("compiled", [False, True], ids=["static-eager", "static-compiled"])
def test_static_cache_path_gives_the_plain_paths_tokens(compiled, monkeypatch):
    """compile=True: same greedy tokens as the dynamic-cache path, for batch 1 and a left-padded
    batch, with rows finishing at EOS at different steps (they stay in the static batch, their
    tokens are discarded). ``static-eager`` runs the same static step uncompiled."""
    import lmforge.generate.decode as decode

    if not compiled:
        monkeypatch.setitem(decode._COMPILED, "cpu", decode._static_step)
    model = tiny_model("olmo2", kv=2)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    plain = generate_ids(model, prompts, GenerationConfig(max_new_tokens=16, stop_at_eos=False), pad_token_id=1, eos_token_id=None)
    eos = plain[1][5]  # an id row 1 emits at step 6: it (and maybe others) stop there
    for batch in ([prompts[0]], prompts):
        for stop in (None, eos):
            want = generate_ids(model, batch, GenerationConfig(max_new_tokens=16), pad_token_id=1, eos_token_id=stop)
            got = generate_ids(model, batch, GenerationConfig(max_new_tokens=16, compile=True), pad_token_id=1, eos_token_id=stop)
            assert got == want, (batch, stop)
    assert any(len(t) < 16 for t in want)  # some row really stopped early


def test_static_cache_keeps_its_batch():
    from lmforge.nn.kv_cache import KVCache

    c = KVCache(1, 2, 1, 8, 4)
    c.advance(3)
    c.make_static()
    assert int(c.static_pos) == 3
    k = torch.ones(2, 1, 1, 4)
    keys, _ = c.update(0, k, k)
    assert keys.shape == (2, 1, 8, 4) and keys[:, :, 3].eq(1).all() and keys[:, :, 4:].eq(0).all()
    c.advance(1)
    assert int(c.static_pos) == 4 and c.length == 4
    with pytest.raises(RuntimeError, match="static KV cache keeps its batch"):
        c.reorder(torch.tensor([0]))
