"""``lmforge generate``."""

from __future__ import annotations

from lmforge.config import ConfigError, check_sections

def cmd_generate(args, overrides) -> int:
    from lmforge.generate import GenerationConfig
    from lmforge.generate.cli import cmd_generate as run

    fields = dict(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample or args.temperature is not None or args.top_k is not None or args.top_p is not None,
        temperature=args.temperature if args.temperature is not None else 1.0,
        top_k=args.top_k or 0,
        top_p=args.top_p if args.top_p is not None else 1.0,
        repetition_penalty=args.repetition_penalty,
        stop_strings=args.stop or [],
        seed=args.seed,
        compile=args.compile,
    )
    check_sections(overrides, ["gen"], "'lmforge generate'")
    gen = GenerationConfig.from_dict(fields).merged(overrides.get("gen", {}), prefix="gen.")
    if args.system is not None and not args.chat:
        raise ConfigError("--system needs --chat")
    return run(args.model, args.prompt, gen, stream=not args.no_stream, chat=args.chat, system=args.system)


def add_commands(sub) -> None:
    g = sub.add_parser("generate", help="generate text (interactive when no --prompt is given)")
    g.add_argument("--model", required=True, help="lmforge checkpoint or HF model directory")
    g.add_argument("--prompt", action="append", default=None, help="a prompt (repeat for a batch)")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=None)
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--repetition-penalty", type=float, default=1.0)
    g.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--no-stream", action="store_true")
    g.add_argument("--compile", action="store_true", help="static KV cache + compiled decode step (CUDA graphs on a GPU); same greedy tokens, faster after a one-off compile")
    g.add_argument("--chat", action="store_true", help="talk to a chat model: prompts become user turns, rendered with the model's chat template")
    g.add_argument("--system", default=None, help="with --chat: a system message opening the conversation")
    g.set_defaults(func=cmd_generate)
