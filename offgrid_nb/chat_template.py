"""A model's chat template (from its GGUF metadata) as a prompt formatter."""

from __future__ import annotations

from typing import Any

from llama_cpp.llama_chat_format import ChatFormatterResponse, Jinja2ChatFormatter

# Used only when a GGUF carries no `tokenizer.chat_template`: ChatML is what most recent
# open chat models are trained on, and what llama.cpp's server falls back to as well.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _token_text(llama: Any, token_id: int) -> str:
    return llama._model.token_get_text(token_id) if token_id >= 0 else ""


def formatter_for(llama: Any) -> Jinja2ChatFormatter:
    """The formatter for a loaded ``llama_cpp.Llama``, built as llama-cpp-python builds it."""
    template = llama.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE
    return Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(llama, llama.token_eos()),
        bos_token=_token_text(llama, llama.token_bos()),
        stop_token_ids=[llama.token_eos()],
    )


def render(formatter: Jinja2ChatFormatter, messages: list[dict[str, str]]) -> ChatFormatterResponse:
    """The prompt text and stop strings for ``messages``, with the generation prompt added."""
    return formatter(messages=messages)
