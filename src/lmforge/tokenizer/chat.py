"""Chat templates: conversations -> token ids, with the mask of tokens an SFT/DPO loss counts.

OLMo-7B-SFT and OLMo-7B-Instruct were trained on the Tulu format:

    <|endoftext|><|user|>
    {content}
    <|assistant|>
    {content}<|endoftext|>
    <|user|>
    ...

(system turns as ``<|system|>\\n{content}\\n``; the EOS token also opens the sequence, OLMo's
tokenizers having no BOS). One :class:`ChatTemplate` describes a format once; from it come

* :meth:`ChatTemplate.render`: the text plus the character spans the loss counts (each assistant
  turn's content and its end-of-turn token, not the role header nor the newline after),
* :meth:`ChatTemplate.jinja`: the same format as a Jinja template for ``tokenizer_config.json``, so
  stock ``transformers`` ``apply_chat_template`` and ``pipeline`` produce exactly the training tokens
  (tested token for token),
* :func:`encode_chat`: ids and loss mask, by tokenizing the whole text once and mapping the spans
  through the tokenizer's character offsets (no re-tokenising of prefixes, so no boundary guesswork).

Messages are ``{"role": "system" | "user" | "assistant", "content": str}``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

from lmforge.tokenizer.core import Tokenizer, TokenizerError

__all__ = ["ChatTemplate", "CHAT_TEMPLATES", "get_chat_template", "encode_chat", "ChatEncoding", "validate_messages"]

ROLES = ("system", "user", "assistant")
_EOS = "{eos}"  # placeholder for the tokenizer's EOS string inside a template's pieces


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    """A chat format. ``prefix[role]`` opens a turn; ``suffix[role]`` closes it, where ``{eos}``
    stands for the tokenizer's EOS token. The loss covers an assistant turn's content and its
    suffix up to and including ``loss_end`` (the end-of-turn marker)."""

    name: str
    prefix: Mapping[str, str]
    suffix: Mapping[str, str]
    loss_end: str  # the part of the assistant suffix the model must learn to produce, e.g. "{eos}"
    bos: bool  # begin the sequence with the EOS token (OLMo: EOS doubles as BOS)
    description: str = ""

    def _suffix(self, role: str, eos: str) -> tuple[str, int]:
        """(suffix text, how many of its characters the loss covers) for ``role``."""
        raw = self.suffix[role]
        text = raw.replace(_EOS, eos)
        if role != "assistant":
            return text, 0
        head = raw[: raw.index(self.loss_end) + len(self.loss_end)]
        return text, len(head.replace(_EOS, eos))

    def render(
        self, messages: Sequence[Mapping[str, str]], eos_token: str, *, add_generation_prompt: bool = False, loss_turns: str = "all"
    ) -> tuple[str, list[tuple[int, int]]]:
        """The conversation as text, and the ``[start, end)`` character spans the loss counts.

        ``loss_turns``: ``"all"`` assistant turns (SFT) or only the ``"last"`` (DPO's response)."""
        parts: list[str] = [eos_token] if self.bos else []
        pos = len(parts[0]) if parts else 0
        spans: list[tuple[int, int]] = []
        last_assistant = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
        for i, m in enumerate(messages):
            role, content = m["role"], m["content"]
            head = self.prefix[role]
            tail, loss_chars = self._suffix(role, eos_token)
            start = pos + len(head)
            if role == "assistant" and (loss_turns == "all" or i == last_assistant):
                spans.append((start, start + len(content) + loss_chars))
            piece = head + content + tail
            parts.append(piece)
            pos += len(piece)
        if add_generation_prompt:
            parts.append(self.prefix["assistant"])
        return "".join(parts), spans

    def generation_prompt(self) -> str:
        return self.prefix["assistant"]

    def jinja(self) -> str:
        """The same format for ``tokenizer_config.json`` (transformers' ``apply_chat_template``)."""

        def lit(s: str) -> str:  # a Jinja string expression for a piece that may contain {eos}
            bits = s.split(_EOS)
            out = " + eos_token + ".join(json.dumps(b) for b in bits)
            return out.replace('"" + ', "").replace(' + ""', "") or '""'

        body = "{% for message in messages %}"
        for k, role in enumerate(ROLES):
            kw = "if" if k == 0 else "elif"
            body += (
                f"{{% {kw} message['role'] == '{role}' %}}"
                f"{{{{ {lit(self.prefix[role])} + message['content'] + {lit(self.suffix[role])} }}}}"
            )
        body += "{% else %}{{ raise_exception('unknown role ' + message['role'] + '; use system, user or assistant') }}{% endif %}"
        body += "{% endfor %}"
        body += f"{{% if add_generation_prompt %}}{{{{ {lit(self.prefix['assistant'])} }}}}{{% endif %}}"
        return ("{{ eos_token }}" if self.bos else "") + body


CHAT_TEMPLATES: dict[str, ChatTemplate] = {
    t.name: t
    for t in (
        ChatTemplate(
            name="tulu",
            prefix={"system": "<|system|>\n", "user": "<|user|>\n", "assistant": "<|assistant|>\n"},
            suffix={"system": "\n", "user": "\n", "assistant": _EOS + "\n"},
            loss_end=_EOS,
            bos=True,
            description="Tulu / OLMo-SFT: <|user|>\\n{content}\\n<|assistant|>\\n{content}{eos}\\n, EOS as BOS",
        ),
        ChatTemplate(
            name="chatml",
            prefix={"system": "<|im_start|>system\n", "user": "<|im_start|>user\n", "assistant": "<|im_start|>assistant\n"},
            suffix={"system": "<|im_end|>\n", "user": "<|im_end|>\n", "assistant": "<|im_end|>" + _EOS + "\n"},
            loss_end=_EOS,
            bos=False,
            description="ChatML: <|im_start|>role\\n{content}<|im_end|>, the assistant's turn ending in {eos}",
        ),
        ChatTemplate(
            name="plain",
            prefix={"system": "System:\n", "user": "User:\n", "assistant": "Assistant:\n"},
            suffix={"system": "\n\n", "user": "\n\n", "assistant": _EOS + "\n\n"},
            loss_end=_EOS,
            bos=True,
            description="plain text role names (for tokenizers without chat markers)",
        ),
    )
}


def get_chat_template(name: str) -> ChatTemplate:
    t = CHAT_TEMPLATES.get(name)
    if t is None:
        raise TokenizerError(f"unknown chat template {name!r}; known: {', '.join(CHAT_TEMPLATES)}")
    return t


def validate_messages(messages: Any, *, need_assistant: bool = True) -> str | None:
    """None when ``messages`` is a well-formed conversation, else a short reason (for accounting)."""
    if not isinstance(messages, list) or not messages:
        return "messages is not a non-empty list"
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            return "a message is not {role: str, content: str}"
        if m["role"] not in ROLES:
            return f"unknown role {m['role'][:20]!r}"
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        return "no assistant turn"
    return None


@dataclasses.dataclass
class ChatEncoding:
    ids: list[int]
    loss_mask: list[bool]  # True where the token is predicted by the loss (assistant content + EOS)
    truncated: bool = False

    @property
    def n_loss_tokens(self) -> int:
        return sum(self.loss_mask)


def encode_chat(
    tokenizer: Tokenizer,
    messages: Sequence[Mapping[str, str]],
    template: ChatTemplate | str = "tulu",
    *,
    max_length: int | None = None,
    add_generation_prompt: bool = False,
    loss_turns: str = "all",
) -> ChatEncoding:
    """Token ids of a conversation and which of them the loss counts.

    A token counts when it *starts* inside a loss span, so a token that merges the role header's
    newline with the content's first character stays with the prompt. ``max_length`` truncates
    from the right (the beginning of a conversation is kept)."""
    if isinstance(template, str):
        template = get_chat_template(template)
    text, spans = template.render(messages, tokenizer.eos_token, add_generation_prompt=add_generation_prompt, loss_turns=loss_turns)
    enc = tokenizer.backend.encode(text, add_special_tokens=False)
    ids, offsets = list(enc.ids), enc.offsets
    mask = [False] * len(ids)
    j = 0
    for i, (s, _e) in enumerate(offsets):
        while j < len(spans) and s >= spans[j][1]:
            j += 1
        if j < len(spans) and spans[j][0] <= s < spans[j][1]:
            mask[i] = True
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, mask = ids[:max_length], mask[:max_length]
    return ChatEncoding(ids, mask, truncated)
