"""A reference decoder written directly on llama.cpp's C API (through llama_cpp's bindings).

Shared by the benchmarks that check our timings (``bench_accuracy.py``) and our per-token
overhead (``chat_turns.py``): no llama-cpp-python ``Llama`` object, no Python sampling code,
just ``llama_decode`` over a batch for a prompt and single-token decodes with llama.cpp's
greedy sampler for generation, on a context with a ggml threadpool attached as llama-bench
attaches one; and the generated model both benchmarks measure.
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

from offgrid_nb.llama_backend import llama_cpp
from offgrid_nb.synthetic import TinyModelSpec, quantize, write_tiny_model
from offgrid_nb.threadpool import attach_pool

# Large enough that one generated token takes several milliseconds on 2 cores (~96 MB at Q8_0).
SPEC = TinyModelSpec(n_layers=8, n_embd=1024, n_ff=2816, n_head=16, n_head_kv=4, name="bench")


def measured_model(folder: Path, quant: str = "Q8_0") -> Path:
    """The model both reference benchmarks measure, generated in ``folder`` and quantized."""
    source = write_tiny_model(folder / "bench-F32.gguf", SPEC)
    return quantize(source, folder / f"bench-{quant}.gguf", quant)


class ReferenceDecoder:
    """A model and a context on the raw C API; ``close()`` frees them."""

    def __init__(self, path: Path, *, n_ctx: int, n_threads: int, n_batch: int = 512) -> None:
        lib = self.lib = llama_cpp()
        lib.llama_backend_init()
        self.model = lib.llama_model_load_from_file(
            str(path).encode(), lib.llama_model_default_params()
        )
        params = lib.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, n_batch, n_batch
        params.n_threads = params.n_threads_batch = n_threads
        # Flash attention off, as in llama-bench's default and in llama-cpp-python's Llama.
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = lib.llama_init_from_model(self.model, params)
        self.release_pool = attach_pool(self.ctx, n_threads)  # as llama-bench attaches one
        self.n_batch = n_batch
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self.model))
        self.sampler = lib.llama_sampler_init_greedy()

    def close(self) -> None:
        self.lib.llama_sampler_free(self.sampler)
        self.release_pool()
        self.lib.llama_free(self.ctx)
        self.lib.llama_model_free(self.model)

    def clear(self) -> None:
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)

    def _decode(self, tokens: list[int]) -> None:
        array = (ctypes.c_int32 * len(tokens))(*tokens)
        if self.lib.llama_decode(self.ctx, self.lib.llama_batch_get_one(array, len(tokens))):
            raise RuntimeError("llama_decode failed")

    def prompt(self, tokens: list[int]) -> tuple[int, float]:
        """Decode ``tokens`` in batches, sample the first token; return it and the seconds."""
        start = time.perf_counter()
        for i in range(0, len(tokens), self.n_batch):
            self._decode(tokens[i : i + self.n_batch])
        token = self.lib.llama_sampler_sample(self.sampler, self.ctx, -1)
        return token, time.perf_counter() - start

    def generate(self, token: int, n: int) -> float:
        """``n`` single-token decodes, each next token sampled greedily; return the seconds."""
        start = time.perf_counter()
        for _ in range(n):
            self._decode([token])
            token = self.lib.llama_sampler_sample(self.sampler, self.ctx, -1)
        return time.perf_counter() - start
