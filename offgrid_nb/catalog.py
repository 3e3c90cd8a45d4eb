"""Short aliases for well-known chat models, so ``offgrid run tinyllama-1.1b-chat`` can offer
the download the way ``ollama run`` does. Each alias names one repo and one file on the Hub."""

from __future__ import annotations

from typing import NamedTuple


class CatalogEntry(NamedTuple):
    """Where an alias's model lives on the Hub."""

    repo_id: str
    filename: str


CATALOG: dict[str, CatalogEntry] = {
    "tinyllama-1.1b-chat": CatalogEntry(
        "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF", "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"
    ),
    "qwen2.5-0.5b-instruct": CatalogEntry(
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "qwen2.5-0.5b-instruct-q4_k_m.gguf"
    ),
    "qwen2.5-1.5b-instruct": CatalogEntry(
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF", "qwen2.5-1.5b-instruct-q4_k_m.gguf"
    ),
    "llama-3.2-1b-instruct": CatalogEntry(
        "bartowski/Llama-3.2-1B-Instruct-GGUF", "Llama-3.2-1B-Instruct-Q4_K_M.gguf"
    ),
    "llama-3.2-3b-instruct": CatalogEntry(
        "bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama-3.2-3B-Instruct-Q4_K_M.gguf"
    ),
    "phi-3-mini-instruct": CatalogEntry(
        "microsoft/Phi-3-mini-4k-instruct-gguf", "Phi-3-mini-4k-instruct-q4.gguf"
    ),
    "smollm2-1.7b-instruct": CatalogEntry(
        "bartowski/SmolLM2-1.7B-Instruct-GGUF", "SmolLM2-1.7B-Instruct-Q4_K_M.gguf"
    ),
}


def lookup(alias: str) -> CatalogEntry | None:
    """The catalog entry for ``alias`` (case-insensitive, ``:latest``-style tags ignored)."""
    return CATALOG.get(alias.strip().lower().split(":")[0])
