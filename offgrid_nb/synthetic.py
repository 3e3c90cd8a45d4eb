"""Tiny llama-architecture GGUF models with random weights, made on the spot.

They load in llama.cpp and chat (gibberish), which is all the demo, the tests and the
benchmarks need: the pipeline is exercised without downloading a single weight.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

# ChatML, the template generated models carry (their special tokens are ChatML's).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_N_BYTES = 128
_EOS = 4
_SPECIAL = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
_PIECES = [
    "\u2581the", "\u2581a", "\u2581to", "\u2581and", "\u2581of", "\u2581is", "\u2581you",
    "\u2581hello", "\u2581model", "\u2581local", "\u2581chat", "e", "t", "a", "o", "n", "s",
    "\u2581", "er", "in", "on", "an", "re", "\u2581I", "\u2581it", "\u2581in", "\u2581that",
]  # fmt: skip


@dataclass(frozen=True)
class TinyModelSpec:
    """Shape of a generated model. Defaults give a ~6 MB F32 file that K-quants can shrink."""

    n_layers: int = 2
    n_embd: int = 256
    n_ff: int = 512
    n_head: int = 4
    n_head_kv: int = 2
    n_ctx: int = 2048
    extra_vocab: int = 0
    name: str = "tiny-llama"
    seed: int = 0
    chat_template: str | None = CHATML_TEMPLATE  # None: a base model


def _vocab(extra: int) -> tuple[list[str], list[int], list[float]]:
    # ASCII byte-fallback tokens only: random weights then can only produce valid UTF-8, so
    # streamed text is never held back waiting for the rest of a multi-byte character.
    bytes_ = [f"<0x{i:02X}>" for i in range(_N_BYTES)]
    extras = [f"\u2581tok{i}" for i in range(extra)]
    tokens = _SPECIAL + bytes_ + _PIECES + extras
    control = gguf.TokenType.CONTROL
    types = [gguf.TokenType.UNKNOWN] + [control] * (len(_SPECIAL) - 1)
    types += [gguf.TokenType.BYTE] * _N_BYTES + [gguf.TokenType.NORMAL] * (len(_PIECES) + extra)
    scores = [0.0] * (len(_SPECIAL) + _N_BYTES) + [-float(i) for i in range(len(_PIECES) + extra)]
    return tokens, [int(t) for t in types], scores


def write_tiny_model(path: str | Path, spec: TinyModelSpec | None = None) -> Path:
    """Write a random-weight llama GGUF (all tensors F32) to ``path`` and return it.

    Args:
        path: where to write the ``.gguf`` file (parent folders are created).
        spec: the model's shape; :class:`TinyModelSpec` defaults when omitted.

    Returns:
        The path written.
    """
    spec = spec or TinyModelSpec()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    tokens, types, scores = _vocab(spec.extra_vocab)
    head_dim = spec.n_embd // spec.n_head
    n_embd_kv = head_dim * spec.n_head_kv

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(spec.name)
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_context_length(spec.n_ctx)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layers)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(_EOS)  # <|im_end|>, so a ChatML reply can end
    writer.add_add_bos_token(True)
    if spec.chat_template is not None:
        writer.add_chat_template(spec.chat_template)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    def norm() -> np.ndarray:
        return np.ones(spec.n_embd, dtype=np.float32)

    writer.add_tensor("token_embd.weight", weight(len(tokens), spec.n_embd))
    writer.add_tensor("output_norm.weight", norm())
    # Sharper logits (std ~1.6) with zero rows for end-of-sequence and the other control tokens
    # (a reply stops at any of them): a reply rarely ends at once, so streaming, length limits
    # and stop handling are actually exercised.
    output = weight(len(tokens), spec.n_embd) * 5
    output[1 : len(_SPECIAL)] = 0.0
    writer.add_tensor("output.weight", output)
    for i in range(spec.n_layers):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", norm())
        writer.add_tensor(f"{blk}.attn_q.weight", weight(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"{blk}.attn_k.weight", weight(n_embd_kv, spec.n_embd))
        writer.add_tensor(f"{blk}.attn_v.weight", weight(n_embd_kv, spec.n_embd))
        writer.add_tensor(f"{blk}.attn_output.weight", weight(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"{blk}.ffn_norm.weight", norm())
        writer.add_tensor(f"{blk}.ffn_gate.weight", weight(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"{blk}.ffn_up.weight", weight(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"{blk}.ffn_down.weight", weight(spec.n_embd, spec.n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def quantize(source: str | Path, target: str | Path, quant: str) -> Path:
    """Quantize a GGUF file with llama.cpp (``quant`` such as ``Q4_K_M`` or ``Q8_0``).

    Raises:
        ValueError: llama.cpp knows no such file type, or quantization failed.
    """
    from .llama_backend import llama_cpp as load_llama_cpp

    llama_cpp = load_llama_cpp()
    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        raise ValueError(f"llama.cpp cannot quantize to {quant!r}")
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), llama_cpp.byref(params)
    )
    if status != 0:
        raise ValueError(f"quantizing {source} to {quant} failed (llama.cpp status {status})")
    return target


def with_chat_template(source: str | Path, target: str | Path, template: str) -> Path:
    """Copy a GGUF model to ``target`` with ``template`` as its ``tokenizer.chat_template``.

    The tensors are copied as they are (gguf's own ``gguf_new_metadata`` does the copy), so a
    real base model becomes a stand-in for an instruct model that carries its template.
    """
    from gguf.scripts.gguf_new_metadata import MetadataDetails, copy_with_new_metadata

    reader = gguf.GGUFReader(str(source))
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(target), arch=arch.contents(), endianess=reader.endianess)
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = alignment.contents()
    template_value = MetadataDetails(gguf.GGUFValueType.STRING, template)
    copy_with_new_metadata(reader, writer, {gguf.Keys.Tokenizer.CHAT_TEMPLATE: template_value}, [])
    return target


@dataclass(frozen=True)
class LlamaShape:
    """The shape of a real llama-architecture model (defaults: Llama-3.1-8B)."""

    n_layers: int = 32
    n_embd: int = 4096
    n_ff: int = 14336
    n_head: int = 32
    n_head_kv: int = 8
    vocab_size: int = 128256
    context_length: int = 131072
    tied_output: bool = False  # no output.weight: the token embeddings serve as output


def _more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's ``use_more_bits`` (src/llama-quant.cpp): the layers Q4_K_M keeps in Q6_K."""
    eighth = n_layers // 8
    return layer < eighth or layer >= 7 * n_layers // 8 or (layer - eighth) % 3 == 2


def write_q4_k_m_header(path: str | Path, shape: LlamaShape | None = None) -> Path:
    """Write a GGUF with the header of a real model quantized as Q4_K_M and no weights.

    Tensor names, shapes and types are those llama.cpp's quantizer gives (``token_embd`` and
    the attention/feed-forward matrices Q4_K, ``output`` Q6_K, ``attn_v`` and ``ffn_down`` Q6_K
    in the ``use_more_bits`` layers, norms F32); the data region is a sparse hole of the right
    size, so the file reads as a 5 GB model but takes the header's bytes on disk. For header
    consumers (fit, inspect), not for llama.cpp to load.

    Args:
        path: where to write.
        shape: the model's shape (default: Llama-3.1-8B).

    Returns:
        ``path``.
    """
    shape = shape or LlamaShape()
    path = Path(path)
    q4, q6, f32 = (gguf.GGMLQuantizationType[name] for name in ("Q4_K", "Q6_K", "F32"))
    head_dim = shape.n_embd // shape.n_head
    kv_dim = head_dim * shape.n_head_kv
    tensors: list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType]] = [
        ("token_embd.weight", (shape.vocab_size, shape.n_embd), q4)
    ]
    for i in range(shape.n_layers):
        more = q6 if _more_bits(i, shape.n_layers) else q4
        tensors += [
            (f"blk.{i}.attn_norm.weight", (shape.n_embd,), f32),
            (f"blk.{i}.attn_q.weight", (shape.n_embd, shape.n_embd), q4),
            (f"blk.{i}.attn_k.weight", (kv_dim, shape.n_embd), q4),
            (f"blk.{i}.attn_v.weight", (kv_dim, shape.n_embd), more),
            (f"blk.{i}.attn_output.weight", (shape.n_embd, shape.n_embd), q4),
            (f"blk.{i}.ffn_norm.weight", (shape.n_embd,), f32),
            (f"blk.{i}.ffn_gate.weight", (shape.n_ff, shape.n_embd), q4),
            (f"blk.{i}.ffn_up.weight", (shape.n_ff, shape.n_embd), q4),
            (f"blk.{i}.ffn_down.weight", (shape.n_embd, shape.n_ff), more),
        ]
    tensors.append(("output_norm.weight", (shape.n_embd,), f32))
    if not shape.tied_output:
        tensors.append(("output.weight", (shape.vocab_size, shape.n_embd), q6))
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(shape.n_layers)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_vocab_size(shape.vocab_size)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    data_size = 0
    for name, dims, qtype in tensors:
        block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        elements = int(np.prod(dims))
        n_bytes = elements // block * type_size
        writer.add_tensor_info(name, dims, np.dtype(np.float32), n_bytes, raw_dtype=qtype)
        data_size += gguf.GGUFWriter.ggml_pad(n_bytes, writer.data_alignment)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    header = path.stat().st_size
    os.truncate(path, gguf.GGUFWriter.ggml_pad(header, writer.data_alignment) + data_size)
    return path
