"""``lmforge trace``: which spans of a model's output occur verbatim in its training data, how often,
and in which documents (OLMoTrace's rule, on an index from ``lmforge data index``).

    lmforge trace --index runs/quickstart/index --model runs/quickstart/release --prompt "def main():"
    lmforge trace --index runs/quickstart/index --text "any text" --json
"""

from __future__ import annotations

import json


def cmd_trace(args, overrides) -> int:
    from lmforge.cli.common import no_overrides
    from lmforge.config import ConfigError
    from lmforge.data.corpus_index import CorpusIndex

    no_overrides(overrides, "'lmforge trace'")
    if (args.text is None) == (args.model is None):
        raise ConfigError("lmforge trace: give --text TEXT, or --model MODEL with --prompt PROMPT (its greedy continuation is traced)")
    idx = CorpusIndex.load(args.index)
    if idx.tokenizer is None:
        raise ConfigError(f"{args.index}: the index has no tokenizer.json; build it from token files whose tokenize_summary.json names one")
    prompt = ""
    if args.model is not None:
        if args.prompt is None:
            raise ConfigError("lmforge trace --model needs --prompt")
        from lmforge.checkpoint import load_pretrained
        from lmforge.generate.config import GenerationConfig
        from lmforge.generate.text import generate

        model, _ = load_pretrained(args.model)
        prompt = args.prompt
        text = generate(model.eval(), idx.tokenizer, prompt, GenerationConfig(max_new_tokens=args.max_new_tokens, do_sample=False))
    else:
        text = args.text
    ids = idx.tokenizer.encode(text)
    spans = idx.spans(ids, min_len=args.min_len, docs=args.docs)
    if args.json:
        print(json.dumps({"prompt": prompt, "text": text, "tokens": len(ids), "min_len": args.min_len,
                          "spans": [s.to_json() for s in spans]}, ensure_ascii=False, indent=1))
        return 0
    print(f"{'prompt: ' + repr(prompt) + chr(10) if prompt else ''}text ({len(ids)} tokens): {text!r}")
    print(f"{len(spans)} span(s) of >= {args.min_len} tokens found verbatim in {idx.record['tokens']:,} tokens of training data")
    for s in spans:
        print(f"  [{s.start}:{s.end}] x{s.count:,}  {s.text!r}")
        for d in s.documents:
            print(f"      {d.get('id', '?')} ({d.get('src', '?')}): ...{d['snippet']!r}...")
    return 0


def add_commands(sub) -> None:
    t = sub.add_parser("trace", help="the spans of a model's output (or a text) that occur verbatim in the indexed training data")
    t.add_argument("--index", required=True, help="index directory (lmforge data index TOKENS --out DIR)")
    t.add_argument("--model", default=None, help="lmforge checkpoint or HF directory: trace its greedy continuation of --prompt")
    t.add_argument("--prompt", default=None)
    t.add_argument("--text", default=None, help="trace this text instead of a model's output")
    t.add_argument("--max-new-tokens", type=int, default=64)
    t.add_argument("--min-len", type=int, default=6, help="shortest span, in tokens (default: %(default)s)")
    t.add_argument("--docs", type=int, default=3, help="source documents shown per span")
    t.add_argument("--json", action="store_true", help="JSON for tools")
    t.set_defaults(func=cmd_trace)
