"""Render a conversation with a model's own chat template, as transformers does.

The template is the Jinja string in the model directory's ``tokenizer_config.json`` (written by
lmforge's SFT/DPO runs, see ``lmforge.tokenizer.chat``); it is rendered in the same sandboxed
Jinja environment transformers uses (``trim_blocks``, ``lstrip_blocks``), so ``lmforge generate
--chat`` and ``transformers.pipeline`` see the same prompt text.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["render_chat"]


def _raise(message: str):
    from lmforge.tokenizer.core import TokenizerError

    raise TokenizerError(f"chat template: {message}")


def render_chat(tokenizer: Any, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        from lmforge.tokenizer.core import TokenizerError

        raise TokenizerError(f"tokenizer {tokenizer.source} has no chat template")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(template).render(
        messages=list(messages),
        add_generation_prompt=add_generation_prompt,
        eos_token=tokenizer.eos_token,
        bos_token=tokenizer.bos_token or "",
        pad_token=tokenizer.pad_token,
    )
