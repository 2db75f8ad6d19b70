"""``lmforge generate``: complete prompts from the command line, or chat-style from stdin."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO, Any

from lmforge.config import ConfigError
from lmforge.generate.config import GenerationConfig
from lmforge.generate.text import generate, stream as stream_text

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


def cmd_generate(
    model_path: str,
    prompts: Sequence[str] | None,
    gen: GenerationConfig,
    stream: bool = True,
    *,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Load a model (lmforge checkpoint or HF export directory) and complete prompts.

    With ``prompts``, print each prompt followed by its completion. Without, read prompts from
    stdin, one a line, until EOF, an empty line or ``exit``. Returns the process exit code.
    """
    from lmforge.release import load_pretrained  # imported here: optional for the rest of generate

    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    try:
        gen.validate()
        model, tokenizer = load_pretrained(model_path)
    except (ConfigError, OSError, ValueError) as e:
        print(f"lmforge generate: {e}", file=sys.stderr)
        return 1
    model.eval()

    try:
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
