"""``lmforge generate``: complete prompts from the command line, or chat-style from stdin.

The decoding flags are :class:`lmforge.generate.GenerationConfig`'s fields (``--sample`` is
``do_sample``, ``--stop`` appends to ``stop_strings``); giving ``--temperature``, ``--top-k`` or
``--top-p`` turns sampling on.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

from lmforge.cli.args import add_config_arguments, config_from_args
from lmforge.config import ConfigError, check_sections
from lmforge.generate.config import GenerationConfig


def generate(*args: Any, **kwargs: Any):
    """:func:`lmforge.generate.text.generate`, imported on use (``lmforge`` must start without torch)."""
    from lmforge.generate.text import generate as run

    return run(*args, **kwargs)


def stream_text(*args: Any, **kwargs: Any):
    """:func:`lmforge.generate.text.stream`, imported on use."""
    from lmforge.generate.text import stream

    return stream(*args, **kwargs)

EXIT_WORDS = ("exit", "quit")


def _complete(model: Any, tokenizer: Any, prompt: str, gen: GenerationConfig, stream: bool, out: IO[str]) -> None:
    """Write the completion of one prompt (piece by piece when streaming), then a newline."""
    if stream:
        for piece in stream_text(model, tokenizer, prompt, gen):
            out.write(piece)
            out.flush()  # show each piece as it is decoded
    else:
        out.write(generate(model, tokenizer, prompt, gen))
    out.write("\n")
    out.flush()


def _chat(model: Any, tokenizer: Any, prompts: Sequence[str] | None, gen: GenerationConfig, stream: bool, system: str | None, stdin: IO[str], out: IO[str]) -> int:
    """``--chat``: each ``--prompt`` is its own one-turn conversation; interactively, the turns add up."""
    from lmforge.generate.chat import render_chat

    opening = [{"role": "system", "content": system}] if system else []
    if prompts:
        for prompt in prompts:
            out.write(f"user: {prompt}\nassistant: ")
            _complete(model, tokenizer, render_chat(tokenizer, opening + [{"role": "user", "content": prompt}]), gen, stream, out)
        return 0
    history = list(opening)
    interactive = stdin.isatty()
    while True:
        if interactive:
            print("user> ", end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line or not line.strip() or line.strip().lower() in EXIT_WORDS:
            return 0
        history.append({"role": "user", "content": line.rstrip("\r\n")})
        text = render_chat(tokenizer, history)
        if stream:
            pieces = []
            for piece in stream_text(model, tokenizer, text, gen):
                pieces.append(piece)
                out.write(piece)
                out.flush()
            reply = "".join(pieces)
        else:
            reply = generate(model, tokenizer, text, gen)
            out.write(reply)
        out.write("\n")
        out.flush()
        history.append({"role": "assistant", "content": reply})


def run_generate(
    model_path: str,
    prompts: Sequence[str] | None,
    gen: GenerationConfig,
    stream: bool = True,
    *,
    chat: bool = False,
    system: str | None = None,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Load a model (lmforge checkpoint or HF export directory) and complete prompts.

    With ``prompts``, print each prompt followed by its completion. Without, read prompts from
    stdin, one a line, until EOF, an empty line or ``exit``. ``chat``: prompts are user turns of a
    conversation rendered with the model's chat template (interactively, the conversation goes on).
    Returns 0, or 130 when interrupted; a model that cannot be loaded, or ``chat`` without a chat
    template, raises (one line).
    """
    from lmforge.release import load_pretrained

    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    gen.validate()
    model, tokenizer = load_pretrained(model_path)
    model.eval()
    if chat and (tokenizer is None or getattr(tokenizer, "chat_template", None) is None):
        raise ConfigError(
            f"{model_path} has no chat template (tokenizer_config.json 'chat_template'); train it with "
            "trainer.objective sft/dpo, or drop --chat"
        )

    try:
        if chat:
            return _chat(model, tokenizer, prompts, gen, stream, system, stdin, out)
        if prompts:
            if stream:
                for prompt in prompts:
                    out.write(prompt)
                    _complete(model, tokenizer, prompt, gen, True, out)
            else:  # without streaming, all prompts can share one batch
                for prompt, text in zip(prompts, generate(model, tokenizer, list(prompts), gen)):
                    out.write(f"{prompt}{text}\n")
                out.flush()
            return 0

        interactive = stdin.isatty()
        while True:
            if interactive:
                print("> ", end="", file=sys.stderr, flush=True)
            line = stdin.readline()
            if not line:  # EOF
                break
            prompt = line.rstrip("\r\n")
            if not prompt.strip() or prompt.strip().lower() in EXIT_WORDS:
                break
            _complete(model, tokenizer, prompt, gen, stream, out)
        return 0
    except KeyboardInterrupt:
        out.write("\n")
        return 130


def cmd_generate(args, overrides) -> int:
    # a sampling knob given on the command line means sampling (its flag has no default, so "given" shows)
    knobs = {"temperature": 1.0, "top_k": 0, "top_p": 1.0}
    given = {k: getattr(args, k) for k in knobs if getattr(args, k) is not None}
    for k, default in knobs.items():
        setattr(args, k, given.get(k, default))
    gen = config_from_args(GenerationConfig, args, do_sample=args.do_sample or bool(given))
    check_sections(overrides, ["gen"], "'lmforge generate'")
    gen = gen.merged(overrides.get("gen", {}), prefix="gen.")
    if args.system is not None and not args.chat:
        raise ConfigError("--system needs --chat")
    return run_generate(args.model, args.prompt, gen, stream=not args.no_stream, chat=args.chat, system=args.system)


def add_commands(sub) -> None:
    g = sub.add_parser("generate", help="generate text (interactive when no --prompt is given)")
    g.add_argument("--model", required=True, help="lmforge checkpoint or HF model directory")
    g.add_argument("--prompt", action="append", default=None, help="a prompt (repeat for a batch)")
    add_config_arguments(g, GenerationConfig)
    g.set_defaults(temperature=None, top_k=None, top_p=None)  # see the module docstring: given means sampling
    g.add_argument("--no-stream", action="store_true")
    g.add_argument("--chat", action="store_true", help="talk to a chat model: prompts become user turns, rendered with the model's chat template")
    g.add_argument("--system", default=None, help="with --chat: a system message opening the conversation")
    g.set_defaults(func=cmd_generate)
