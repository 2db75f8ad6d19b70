"""lm-evaluation-harness (``lm_eval``) on lmforge models, and lmforge's tasks in ``lm_eval``.

Two routes to the same numbers (tests/eval/test_lm_eval_agreement.py checks that they agree with
each other and with lmforge's own evaluator, per request, to 1e-4):

1. **The adapter**: an ``lm_eval`` ``LM`` (model type ``"lmforge"``) that runs an lmforge checkpoint
   or HF directory with lmforge's own code::

       python -m lmforge.eval.lm_eval_adapter --model lmforge \\
           --model_args pretrained=PATH[,batch_size=32,device=cpu,dtype=float32,tokenization=joint] \\
           --tasks hellaswag --limit 100

   (``lm_eval`` 0.4 has no plug-in hook for third-party models: its own ``lm_eval`` command only
   knows ``--model lmforge`` in a process that ran :func:`register`; ``python -m
   lmforge.eval.lm_eval_adapter`` is ``lm_eval``'s command line with the model registered.) In Python::

       from lmforge.eval.lm_eval_adapter import LMForgeLM
       lm = LMForgeLM(pretrained=PATH)                     # or LMForgeLM(model=model, tokenizer=tok)
       lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])

   - ``loglikelihood``: :func:`lmforge.eval.scoring.score_requests` (batched, sorted, shared
     prefix) with ``tokenization="joint"``, lm-eval's own ``_encode_pair`` rule; an empty context is
     scored after the prefix token (BOS, else EOS) exactly as lm-eval does.
     ``tokenization=separate`` (a model argument) switches to olmo_eval's rule instead.
   - ``loglikelihood_rolling``: whole-document log-likelihood with lmforge's Paloma windows
     (:func:`lmforge.eval.perplexity.score_token_lists`): the same disjoint windows as lm-eval's
     ``get_rolling_token_windows(context_len=1)``, every token predicted once after the prefix token.
   - ``generate_until``: :func:`lmforge.generate.generate` with the request's stop strings (``until``)
     and ``max_gen_toks`` (default 256), greedy unless ``do_sample=True``; the prompt is left-truncated
     to ``max_length - max_gen_toks`` tokens, as HF's backend does.

2. **The HF export + local task files**: ``lmforge export`` (or :func:`lmforge.release.export_hf`)
   writes a stock transformers directory that ``lm_eval --model hf --model_args pretrained=DIR``
   loads; :func:`write_lm_eval_tasks` writes lmforge's packaged tasks as lm-eval task YAMLs over
   local JSONL files, so that both routes run offline (``HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1``)
   on exactly lmforge's requests::

       python -c "from lmforge.eval.lm_eval_adapter import write_lm_eval_tasks; \\
                  write_lm_eval_tasks('lm_eval_tasks', ['arc_easy', 'hellaswag'])"
       lm_eval --model hf --model_args pretrained=DIR --include_path lm_eval_tasks \\
           --tasks lmforge_arc_easy_rc_0shot,lmforge_hellaswag_rc_0shot

lm-eval is an optional dependency (``pip install 'lmforge[eval]'``); nothing here imports it until
it is used, and a missing install is a one-line ``ImportError``.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from lmforge.config import DTYPES, parse_dtype

__all__ = ["LMForgeLM", "register", "write_lm_eval_tasks", "main", "MISSING_LM_EVAL"]

MISSING_LM_EVAL = "lm-eval is not installed: pip install 'lmforge[eval]' (lm-eval[hf]>=0.4.13,<0.5)"
MODEL_NAME = "lmforge"
DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's HFLM default

log = logging.getLogger(__name__)


def _lm_eval():
    try:
        import lm_eval.api.instance  # noqa: F401
        import lm_eval.api.model
        import lm_eval.api.registry  # noqa: F401
    except ImportError:
        raise ImportError(MISSING_LM_EVAL) from None
    return lm_eval


# --- argument parsing (lm-eval passes model_args as strings: "batch_size=16,dtype=float32") -------
def _as_bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"lmforge model argument {name}={v!r}: expected true or false")


def _as_batch_size(v: Any, default: int = 32) -> int:
    if v is None or (isinstance(v, str) and v.strip().lower().startswith("auto")):
        return default  # lm-eval's "auto": lmforge batches by rows; the default suits CPU and GPU
    n = int(v)
    if n < 1:
        raise ValueError(f"lmforge model argument batch_size must be positive, got {v!r}")
    return n


#: lm-eval's dtype names besides lmforge's (``dtype=auto`` is None: the checkpoint's own dtype).
_MODEL_ARG_DTYPES = {**DTYPES, "float": "float32", "half": "float16", "float64": "float64", "double": "float64"}


def _as_dtype(v: Any):
    if not isinstance(v, str):
        return v  # None or a torch dtype
    s = v.strip().lower().removeprefix("torch.")
    return None if s == "auto" else parse_dtype(s, key="lmforge model argument dtype", names=_MODEL_ARG_DTYPES, error=ValueError)


class _LeftTruncated:
    """A tokenizer whose ``encode`` keeps only the last ``n`` ids (prompts for ``generate_until``)."""

    def __init__(self, tokenizer: Any, n: int):
        self._tok, self._n = tokenizer, n

    def encode(self, text: str, *args: Any, **kwargs: Any) -> list[int]:
        return list(self._tok.encode(text, *args, **kwargs))[-self._n :]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


# Keys of a generate_until request's gen_kwargs that the adapter understands; others are ignored
# with a warning (HF's backend passes them on to transformers' generate()).
_GEN_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_p", "top_k", "repetition_penalty", "seed"}


class _LMForgeMethods:
    """lm-eval's ``LM`` interface over an lmforge model and tokenizer (see the module docstring).

    ``pretrained``: an lmforge checkpoint or HF model directory (loaded with
    :func:`lmforge.release.load_pretrained`), or pass ``model=`` and ``tokenizer=`` objects.
    ``tokenizer`` as a string: a tokenizer path or name for a directory that holds none.
    ``max_length`` defaults to the model's ``max_seq_len``. ``tokenization``: ``joint``
    (lm-eval's rule, default) or ``separate`` (olmo_eval's). ``shared_prefix``: encode each
    context once for all its continuations (default). ``max_batch_size`` and other arguments
    lm-eval hands every model are accepted and ignored.
    """

    def __init__(
        self,
        pretrained: str | os.PathLike | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        device: str | None = None,
        dtype: Any = None,
        batch_size: int | str | None = 32,
        max_length: int | str | None = None,
        tokenization: str = "joint",
        shared_prefix: bool | str = True,
        max_gen_toks: int | str = DEFAULT_MAX_GEN_TOKS,
        max_batch_size: Any = None,
        **kwargs: Any,
    ):
        super().__init__()
        import torch

        from lmforge.eval.loading import resolve_tokenizer

        ignored = {k: v for k, v in kwargs.items() if v is not None}
        if ignored:
            warnings.warn(f"lmforge model: ignoring arguments {sorted(ignored)}", stacklevel=2)
        if (pretrained is None) == (model is None):
            raise ValueError("lmforge model: pass pretrained=PATH or model= (with tokenizer=), not both")
        dtype = _as_dtype(dtype)
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda:0 unless told otherwise; HF's backend falls back too
            log.warning("lmforge model: device %s is not available, using cpu", device)
            device = "cpu"
        if model is None:
            from lmforge.release import load_pretrained

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model, tok = load_pretrained(pretrained, device=device, dtype=dtype)
            self._name = str(pretrained)
        else:
            tok = None
            if dtype is not None:
                model = model.to(dtype)
            if device is not None:
                model = model.to(device)
            self._name = type(model).__name__
        if tokenizer is not None:
            tok = resolve_tokenizer(tokenizer)
        if tok is None:
            raise ValueError(f"lmforge model: {pretrained} holds no tokenizer.json; pass tokenizer=PATH")
        if tokenization not in ("joint", "separate"):
            raise ValueError(f"lmforge model argument tokenization must be 'joint' or 'separate', got {tokenization!r}")
        self.model = model.eval()
        self.tokenizer = tok
        self._device = next(model.parameters()).device
        self.batch_size = _as_batch_size(batch_size)
        self._max_length = int(max_length) if max_length not in (None, "", "None") else int(model.config.max_seq_len)
        self.tokenization = tokenization
        self.shared_prefix = _as_bool("shared_prefix", shared_prefix)
        self.max_gen_toks = int(max_gen_toks)

    # -- lm-eval's properties ------------------------------------------------------------
    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def prefix_token_id(self) -> int:
        from lmforge.eval.scoring import prefix_token_id

        return prefix_token_id(self.tokenizer)

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def tokenizer_name(self) -> str:
        return f"lmforge:{self._name}"

    def get_model_info(self) -> dict:
        import lmforge

        p = next(self.model.parameters())
        return {
            "model_num_parameters": sum(x.numel() for x in self.model.parameters()),
            "model_dtype": str(p.dtype).replace("torch.", ""),
            "lmforge_version": lmforge.__version__,
            "lmforge_tokenization": self.tokenization,
        }

    # -- requests --------------------------------------------------------------------------
    def _requests(self, requests: Sequence[Any]) -> list:
        from lmforge.eval.requests import LoglikelihoodRequest

        out = []
        prefix = self.prefix_token_id
        prefix_text = None
        for i, r in enumerate(requests):
            context, continuation = r.args[0], r.args[1]
            if context == "" and self.tokenization == "joint":
                # lm-eval: an empty context is the prefix token, unless the continuation itself
                # starts with that token, which then becomes the context. A context holding the
                # prefix token's text gives exactly that split under joint tokenisation.
                ids = self.tokenizer.encode(continuation)
                if ids and ids[0] == prefix:
                    if prefix_text is None:
                        prefix_text = self.tokenizer.decode([prefix], skip_special_tokens=False)
                    if list(self.tokenizer.encode(prefix_text)) == [prefix] and continuation.startswith(prefix_text):
                        context, continuation = prefix_text, continuation[len(prefix_text) :]
            out.append(LoglikelihoodRequest(context, continuation, (i,)))
        return out

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from lmforge.eval.scoring import score_requests

        if not requests:
            return []
        scores = score_requests(
            self.model,
            self.tokenizer,
            self._requests(requests),
            batch_size=self.batch_size,
            max_length=self.max_length,
            progress=not disable_tqdm,
            tokenization=self.tokenization,  # type: ignore[arg-type]
            shared_prefix=self.shared_prefix,
        )
        out = []
        for r, s in zip(requests, scores):
            res = (float(s.logprob), bool(s.is_greedy))
            self.cache_hook.add_partial("loglikelihood", r.args, res)
            out.append(res)
        return out

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        from tqdm.auto import tqdm

        from lmforge.eval.perplexity import plan_windows, score_token_lists

        if not requests:
            return []
        texts = [r.args[0] for r in requests]
        enc = self.tokenizer.encode_batch(texts) if hasattr(self.tokenizer, "encode_batch") else [self.tokenizer.encode(t) for t in texts]
        n_windows = sum(len(plan_windows(len(ids), self.max_length)) for ids in enc)
        bar = tqdm(total=n_windows, desc="loglikelihood_rolling", unit="window", disable=disable_tqdm)
        try:
            nll = score_token_lists(
                self.model,
                [list(ids) for ids in enc],
                prefix_id=self.prefix_token_id,
                max_len=self.max_length,
                batch_size=self.batch_size,
                pad_id=getattr(self.tokenizer, "pad_token_id", None),
                bar=bar,
            )
        finally:
            bar.close()
        out = []
        for text, x in zip(texts, nll):
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), -float(x))
            out.append(-float(x))
        return out

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        from tqdm.auto import tqdm

        from lmforge.generate import GenerationConfig, generate

        results: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        kwargs_of: dict[str, dict] = {}
        for i, r in enumerate(requests):
            gk = dict(r.args[1] or {})
            key = json.dumps(gk, sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
            kwargs_of[key] = gk
        bar = tqdm(total=len(requests), desc="generate_until", disable=disable_tqdm)
        try:
            for key, idx in groups.items():
                gk = kwargs_of[key]
                unknown = sorted(set(gk) - _GEN_KEYS)
                if unknown:
                    warnings.warn(f"lmforge model: generate_until ignores gen_kwargs {unknown}", stacklevel=2)
                until = gk.get("until") or []
                until = [until] if isinstance(until, str) else [s for s in until if s]
                max_gen = int(gk.get("max_gen_toks", self.max_gen_toks))
                temperature = float(gk.get("temperature", 0.0) or 0.0)
                do_sample = bool(gk.get("do_sample", False)) and temperature > 0
                gen = GenerationConfig(
                    max_new_tokens=max_gen,
                    do_sample=do_sample,
                    temperature=temperature if do_sample else 1.0,
                    top_p=float(gk.get("top_p", 1.0) or 1.0) if do_sample else 1.0,
                    top_k=int(gk.get("top_k", 0) or 0) if do_sample else 0,
                    repetition_penalty=float(gk.get("repetition_penalty", 1.0)),
                    stop_strings=list(until),
                    seed=gk.get("seed"),
                )
                max_ctx = self.max_length - max_gen
                if max_ctx < 1:
                    raise ValueError(f"max_gen_toks {max_gen} leaves no room for a prompt in max_length {self.max_length}")
                tok = _LeftTruncated(self.tokenizer, max_ctx)
                # longest prompts first (lm-eval's order), batch_size prompts per decode
                idx = sorted(idx, key=lambda i: -len(requests[i].args[0]))
                for s in range(0, len(idx), self.batch_size):
                    chunk = idx[s : s + self.batch_size]
                    texts = generate(self.model, tok, [requests[i].args[0] for i in chunk], gen)
                    for i, text in zip(chunk, texts):
                        results[i] = text
                        self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    bar.update(len(chunk))
        finally:
            bar.close()
        return results  # type: ignore[return-value]


@functools.cache
def _adapter_class() -> type:
    """The ``LM`` subclass: lm-eval's base class with the methods above (``lm_eval`` is imported
    here, on first use, not when lmforge is)."""
    LM = _lm_eval().api.model.LM

    class LMForgeLM(_LMForgeMethods, LM):
        __doc__ = _LMForgeMethods.__doc__

    LMForgeLM.__module__ = "lmforge.eval.lm_eval_adapter"
    LMForgeLM.__qualname__ = "LMForgeLM"
    return LMForgeLM


def register() -> type:
    """Register the adapter as lm-eval model type ``"lmforge"`` (idempotent); returns the class."""
    _lm_eval()
    # lm-eval fills its registry with the built-in models only when it is empty at the first
    # lookup: load them first, or registering "lmforge" alone would hide "hf" & co.
    import lm_eval.models  # noqa: F401
    from lm_eval.api.registry import get_model, register_model

    cls = _adapter_class()
    try:
        existing = get_model(MODEL_NAME)
    except (ValueError, KeyError):
        existing = None
    if existing is None:
        register_model(MODEL_NAME)(cls)
    elif existing is not cls:
        raise ValueError(f"lm-eval already has a model named {MODEL_NAME!r}: {existing}")
    return cls


def __getattr__(name: str) -> Any:  # LMForgeLM is built (and lm_eval imported) on first use
    if name == "LMForgeLM":
        return register()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- lmforge's tasks as lm-eval task files -----------------------------------------------------------
def write_lm_eval_tasks(
    out_dir: str | os.PathLike,
    tasks: Sequence[str],
    formulation: str = "rc_0shot",
    *,
    limit: int | None = None,
    prefix: str = "lmforge_",
) -> dict[str, Path]:
    """Write lmforge's examples of ``tasks`` as lm-eval ``multiple_choice`` tasks under ``out_dir``.

    For each task: ``<prefix><task>_<formulation>.jsonl`` (one line per example: ``context``,
    ``choices`` as scored, leading space included, ``gold``; or, for per-choice contexts such as
    WinoGrande's partial scoring, ``contexts`` and the shared ``continuation``) and a YAML next to it
    with ``target_delimiter: ""`` and no few-shot examples (5-shot formulations carry their shots in
    the context already), so lm-eval sends exactly lmforge's requests (``Example.requests()``'s
    conditional ones). Metrics: ``acc`` and ``acc_norm`` (= lmforge's ``acc_per_char``, except for
    per-choice contexts, where lm-eval divides by the length of each choice's context); PMI is left
    out (lm-eval's ``acc_mutual_info`` uses an empty unconditional context, OLMES uses ``"Answer:"``).
    Returns {lm-eval task name: YAML path}. Use with ``lm_eval --include_path OUT_DIR``.
    """
    import yaml

    from lmforge.eval.tasks import load_task

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in tasks:
        examples = load_task(name, formulation, limit=limit)
        if not examples:
            raise ValueError(f"task {name!r}: no examples")
        task_name = f"{prefix}{name}_{formulation}"
        per_choice = examples[0].contexts is not None
        data = out / f"{task_name}.jsonl"
        with open(data, "w", encoding="utf-8") as f:
            for ex in examples:
                if (ex.contexts is not None) != per_choice:
                    raise ValueError(f"task {name!r}: mixes shared and per-choice contexts")
                row: dict[str, Any] = {"doc_id": ex.doc_id, "native_id": str(ex.native_id), "gold": ex.gold}
                if per_choice:
                    if len(set(ex.choices)) != 1:
                        raise ValueError(f"task {name!r} doc {ex.doc_id}: per-choice contexts with different continuations")
                    row.update(contexts=list(ex.contexts), continuation=ex.choices[0])
                else:
                    row.update(context=ex.context, choices=list(ex.choices))
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        cfg: dict[str, Any] = {
            "task": task_name,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "target_delimiter": "",
            "num_fewshot": 0,
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}],  # fmt: skip
            "metadata": {"version": 1.0, "source": f"lmforge.eval.tasks.load_task({name!r}, {formulation!r}, limit={limit})"},
        }
        if per_choice:  # lm-eval's "multiple input" mode: doc_to_text gives the gold index
            cfg.update(doc_to_text="gold", doc_to_choice="contexts", doc_to_target="continuation")
        else:
            cfg.update(doc_to_text="context", doc_to_choice="choices", doc_to_target="gold")
        path = out / f"{task_name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
        written[task_name] = path
    return written


# --- command line: lm_eval's own, with "lmforge" registered -----------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lmforge.eval.lm_eval_adapter [lm_eval arguments]``: lm-eval's command line with
    the ``lmforge`` model type registered (``--model lmforge --model_args pretrained=PATH``)."""
    try:
        # by its import name: under ``python -m`` this file also runs as ``__main__``, a second copy
        from lmforge.eval.lm_eval_adapter import register as _register

        _register()
        from lm_eval.__main__ import cli_evaluate
    except ImportError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    sys.argv = ["lm_eval", *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
