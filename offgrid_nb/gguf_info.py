"""GGUF headers, read by hand: from a local file, or from a prefix of a remote one over HTTP.

Why not ``gguf.GGUFReader``: it memory-maps a whole local file and builds numpy views of every
field, so it cannot work from a prefix fetched over HTTP, and it trusts the lengths it reads,
so a hostile header can make it allocate without bound. This parser walks a bytes buffer with
``struct``; it checks every count and length against the bytes the file has and against
:data:`MAX_HEADER_BYTES` before using it, and when the buffer ends before the header does it
raises :class:`_NeedMore`, which the reader answers by reading further (a larger HTTP Range)
and parsing again. The tables (value types, tensor types and block sizes, file types, key
names) come from the ``gguf`` package.

This is also the load guard: llama.cpp can crash on a corrupt file, so the engine calls
:func:`inspect_file` before loading one. Every problem is an :class:`InvalidModelError` whose
one-line message names the file and what is wrong.

Remote headers are cached on disk (``<cache_dir>/gguf_info/<sha256>.json``): a file's sha256
(from the Hub's file listing) or ETag names its content, so an entry never goes stale.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import gguf
import httpx2
import numpy as np
from huggingface_hub import hf_hub_url
from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

from . import hub
from .config import Settings, get_settings
from .errors import HubUnavailableError, InvalidModelError, NotFoundError, OffgridError
from .jsonfile import write_json

#: A header may not be larger than this (a 256k-token vocabulary with merges is ~15 MB).
MAX_HEADER_BYTES = 64 << 20
#: The first read. Headers of models with a 32k vocabulary fit; bigger ones need a second read,
#: sized from how far the first one got (see :func:`_next_end`).
FIRST_READ = 1 << 20
MAX_TENSORS = 1 << 16  # big MoE models have a few thousand
MAX_KV = 1 << 16  # real files have 20 to 60
MAX_TENSOR_NAME = 63  # GGML_MAX_NAME - 1: llama.cpp refuses longer names
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_KEPT_ARRAY = 4096  # numeric arrays up to this long keep their values (per-layer settings)
CACHE_FORMAT = 2  # bump when GGUFInfo changes, so old cache entries are ignored

_GGUF_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_INT64_MAX = 2**63 - 1
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_VT = gguf.GGUFValueType
# Scalar value types -> little-endian numpy dtypes (the gguf package's own table).
_SCALARS = {
    vtype: np.dtype(np_type).newbyteorder("<")
    for vtype, np_type in gguf.GGUFReader.gguf_scalar_to_np.items()
}
_KNOWN_ARCHS = frozenset(gguf.MODEL_ARCH_NAMES.values())
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class GGUFInfo:
    """What a GGUF header says about a model.

    Counts cover the tensors of this file: for a split model (``split_count > 1``) that is one
    shard, and ``parameter_count`` / ``tensor_data_size`` are the shard's. Architecture fields
    are ``None`` when the file does not give them.

    Attributes:
        version: GGUF format version (2 or 3).
        architecture: ``general.architecture`` (``"llama"``, ``"qwen2"``...).
        name: ``general.name``.
        parameter_count: elements over all tensors of this file.
        context_length: the context the model was trained for.
        n_layers, n_embd, n_head, n_head_kv, n_ff: block count, embedding size, attention
            heads, key/value heads (the most of any layer when given per layer), feed-forward
            size (the largest when given per layer).
        n_head_kv_by_layer: key/value heads of each layer, when the file gives them per layer
            (0 marks a layer without attention, as in hybrid recurrent models).
        head_dim, head_dim_v: size of one key head and one value head.
        vocab_size: tokens in the vocabulary.
        file_type: ``general.file_type`` (a ``gguf.LlamaFileType`` value).
        quant: quantization name, e.g. ``"Q4_K_M"`` (from ``file_type``, else the tensor type
            holding most bytes).
        chat_template: ``tokenizer.chat_template``.
        tokenizer_model: ``tokenizer.ggml.model`` (``"llama"`` for SentencePiece, ``"gpt2"``
            for BPE...).
        bos_token_id, eos_token_id: special token ids.
        tensor_count: tensors in this file.
        tensor_data_offset: where tensor data starts (the header, aligned).
        tensor_data_size: bytes from there to the end of the last tensor.
        header_size: bytes of header before alignment padding.
        file_size: bytes in the file.
        split_count: number of files of the model (1 when not split).
        pooling_type: how an embedding model pools token vectors (llama.cpp's enum), if set.
        layer_bytes: tensor bytes of each repeating layer (``blk.N.*``) of this file, by N.
        output_bytes: tensor bytes of the output layer (``output*``; the token embeddings when
            the output matrix is tied to them, as llama.cpp then copies them to the GPU).
    """

    version: int
    architecture: str | None
    name: str | None
    parameter_count: int
    context_length: int | None
    n_layers: int | None
    n_embd: int | None
    n_head: int | None
    n_head_kv: int | None
    n_head_kv_by_layer: tuple[int, ...] | None
    head_dim: int | None
    head_dim_v: int | None
    n_ff: int | None
    vocab_size: int | None
    file_type: int | None
    quant: str | None
    chat_template: str | None
    tokenizer_model: str | None
    bos_token_id: int | None
    eos_token_id: int | None
    tensor_count: int
    tensor_data_offset: int
    tensor_data_size: int
    header_size: int
    file_size: int
    split_count: int
    pooling_type: int | None = None  # ``{arch}.pooling_type``: embedding models set it
    layer_bytes: tuple[int, ...] = ()
    output_bytes: int = 0

    @property
    def known_architecture(self) -> bool:
        """Whether the installed ``gguf`` package knows this architecture."""
        return self.architecture in _KNOWN_ARCHS

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        data = asdict(self)
        if self.n_head_kv_by_layer is not None:
            data["n_head_kv_by_layer"] = list(self.n_head_kv_by_layer)
        data["layer_bytes"] = list(self.layer_bytes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GGUFInfo:
        """The inverse of :meth:`to_dict`.

        Raises:
            TypeError: a field is missing or unknown.
        """
        by_layer = data.get("n_head_kv_by_layer")
        layers = tuple(data.get("layer_bytes", ()))
        by_layer = None if by_layer is None else tuple(by_layer)
        return cls(**{**data, "n_head_kv_by_layer": by_layer, "layer_bytes": layers})


# --- the parser ------------------------------------------------------------------------------


class _NeedMore(Exception):
    """The buffer ended before the header did: read at least up to ``needed``.

    ``estimate`` is a guess of where the header ends, so the next read can take it all.
    """

    def __init__(self, needed: int, estimate: int | None = None) -> None:
        super().__init__(needed)
        self.needed = needed
        self.estimate = max(needed, estimate or 0)


@dataclass(frozen=True)
class _Array:
    """An array value: its length, and its values when numeric and short."""

    count: int
    values: tuple[Any, ...] | None


class _Cursor:
    """A position in a header buffer that checks every read against the file and the cap."""

    def __init__(self, buf: bytes | bytearray, file_size: int, name: str) -> None:
        self.buf = buf
        self.file_size = file_size
        self.name = name
        self.pos = 0
        self.tokenizer_model: str | None = None  # once read: it tells what follows the tokens

    def error(self, problem: str) -> InvalidModelError:
        return InvalidModelError(f"{self.name}: {problem}")

    def room(self, n_bytes: int, what: str) -> None:
        """Check that ``n_bytes`` from here can be part of the header (no buffer needed)."""
        end = self.pos + n_bytes
        if end > self.file_size:
            raise self.error(
                f"{what} at byte {self.pos:,} needs {n_bytes:,} bytes, past the end of the file "
                f"({self.file_size:,} bytes): it is truncated or corrupt"
            )
        if end > MAX_HEADER_BYTES:
            raise self.error(
                f"{what} at byte {self.pos:,} would make the header larger than the "
                f"{MAX_HEADER_BYTES >> 20} MiB cap: not a sane model file"
            )

    def take(self, n_bytes: int, what: str) -> int:
        """Advance over ``n_bytes`` and return where they start."""
        self.room(n_bytes, what)
        start, end = self.pos, self.pos + n_bytes
        if end > len(self.buf):
            raise _NeedMore(end)
        self.pos = end
        return start

    def u32(self, what: str) -> int:
        return _U32.unpack_from(self.buf, self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack_from(self.buf, self.take(8, what))[0]

    def string(self, what: str) -> str:
        length = self.u64(what)
        start = self.take(length, what)
        return bytes(self.buf[start : self.pos]).decode("utf-8", errors="replace")

    def value(self, vtype: int, key: str) -> Any:
        if vtype == _VT.STRING:
            return self.string(f"string value of {key!r}")
        if vtype == _VT.ARRAY:
            return self.array(key)
        dtype = self.dtype(vtype, key)
        start = self.take(dtype.itemsize, f"value of {key!r}")
        return np.frombuffer(self.buf, dtype, count=1, offset=start)[0].item()

    def array(self, key: str) -> _Array:
        what = f"array {key!r}"
        item_type = self.u32(what)
        count = self.u64(what)
        if item_type == _VT.ARRAY:
            raise self.error(f"{what} holds arrays, which GGUF readers do not support")
        if item_type == _VT.STRING:
            self.skip_strings(count, key)
            return _Array(count, None)
        dtype = self.dtype(item_type, key)
        start = self.take(count * dtype.itemsize, what)
        if count > MAX_KEPT_ARRAY:
            return _Array(count, None)
        return _Array(count, tuple(np.frombuffer(self.buf, dtype, count, start).tolist()))

    def skip_strings(self, count: int, key: str) -> None:
        what = f"array {key!r}"
        start = self.pos
        self.room(count * 8, what)  # each string has at least its 8-byte length
        for done in range(count):
            try:
                self.take(self.u64(what), what)
            except _NeedMore as more:
                raise _NeedMore(more.needed, self.projected_end(key, start, done, count)) from None

    def projected_end(self, key: str, start: int, done: int, count: int) -> int:
        """Where the header likely ends, seen from inside a string array that ran out of buffer.

        The array's end is projected from its bytes per string so far. The token list is
        followed by arrays as long: token types and scores (together about as big as the list)
        or, for BPE tokenizers (``gpt2``), token types and merges (about 3x as big). Another
        256 KiB covers the tensor infos of a large model.
        """
        array_end = start + (self.pos - start) * count // max(done, 1)
        follows = 0
        if key == gguf.Keys.Tokenizer.LIST:
            follows = 3 if self.tokenizer_model == "gpt2" else 1
        return array_end + follows * (array_end - start) + (256 << 10)

    def dtype(self, vtype: int, key: str) -> np.dtype:
        dtype = _SCALARS.get(vtype)  # type: ignore[call-overload]
        if dtype is None:
            raise self.error(f"unknown value type {vtype} for {key!r}")
        return dtype


@dataclass(frozen=True)
class _Tensors:
    count: int
    parameter_count: int
    data_size: int
    main_type: str | None  # the tensor type holding most bytes
    layer_bytes: tuple[int, ...] = ()  # bytes of blk.N.* by N
    output_bytes: int = 0  # output.weight and output_norm (token_embd when the output is tied)


def _layer_sizes(extents: list[tuple[str, int, int]]) -> tuple[tuple[int, ...], int]:
    """Bytes per repeating layer and of the output layer, from tensor names (``blk.N.*``,
    ``output*``; a model without ``output.weight`` reuses ``token_embd.weight`` there)."""
    by_layer: dict[int, int] = {}
    output = embeddings = 0
    has_output_matrix = False
    for name, _offset, n_bytes in extents:
        match = re.match(r"blk\.(\d+)\.", name)
        if match:
            index = int(match.group(1))
            by_layer[index] = by_layer.get(index, 0) + n_bytes
        elif name.startswith("output"):
            output += n_bytes
            has_output_matrix |= name == "output.weight"
        elif name == "token_embd.weight":
            embeddings = n_bytes
    if not has_output_matrix:
        output += embeddings
    count = max(by_layer) + 1 if by_layer else 0
    return tuple(by_layer.get(i, 0) for i in range(count)), output


def _read_tensor_infos(c: _Cursor, count: int, alignment: int) -> tuple[_Tensors, int]:
    """Walk the tensor infos; check names, shapes, types and that all data is in the file."""
    seen: set[str] = set()
    extents: list[tuple[str, int, int]] = []
    bytes_by_type: dict[str, int] = {}
    parameters = 0
    for index in range(count):
        name = c.string(f"name of tensor {index}")
        if len(name.encode()) > MAX_TENSOR_NAME:
            raise c.error(f"tensor name {name[:80]!r}... is longer than {MAX_TENSOR_NAME} bytes")
        if name in seen:
            raise c.error(f"tensor name {name!r} appears twice")
        seen.add(name)
        n_dims = c.u32(f"tensor {name!r}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise c.error(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        dims = [c.u64(f"tensor {name!r}") for _ in range(n_dims)]
        type_id = c.u32(f"tensor {name!r}")
        offset = c.u64(f"tensor {name!r}")
        elements = 1
        for dim in dims:
            elements *= dim
            if elements > _INT64_MAX:
                raise c.error(f"tensor {name!r} has an impossible shape {dims}")
        try:
            qtype = gguf.GGMLQuantizationType(type_id)
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise c.error(f"tensor {name!r} has unknown type {type_id}") from None
        if dims[0] % block:
            raise c.error(f"tensor {name!r}: {dims[0]} is not a multiple of {qtype.name} blocks")
        if offset % alignment:
            raise c.error(f"tensor {name!r} data offset {offset} is not {alignment}-aligned")
        n_bytes = elements // block * type_size
        extents.append((name, offset, n_bytes))
        bytes_by_type[qtype.name] = bytes_by_type.get(qtype.name, 0) + n_bytes
        parameters += elements
    header_size = c.pos
    data_offset = -(-header_size // alignment) * alignment
    data_size = 0
    for name, offset, n_bytes in extents:
        end = data_offset + offset + n_bytes
        if end > c.file_size:
            raise c.error(
                f"tensor {name!r} ends at byte {end:,}, past the end of the file "
                f"({c.file_size:,} bytes): the file is truncated or corrupt"
            )
        data_size = max(data_size, offset + n_bytes)
    main_type = max(bytes_by_type, key=bytes_by_type.__getitem__) if bytes_by_type else None
    layers, output = _layer_sizes(extents)
    return _Tensors(count, parameters, data_size, main_type, layers, output), header_size


def _parse(buf: bytes | bytearray, file_size: int, name: str) -> GGUFInfo:
    """Parse a GGUF header from the first bytes of a file.

    Raises:
        _NeedMore: ``buf`` ends before the header does.
        InvalidModelError: not a GGUF file, or a corrupt, truncated or hostile one.
    """
    c = _Cursor(buf, file_size, name)
    if file_size < 4 or (len(buf) >= 4 and bytes(buf[:4]) != _GGUF_MAGIC):
        start = bytes(buf[:4])
        raise c.error(f"not a GGUF file (it starts with {start!r}, not {_GGUF_MAGIC!r})")
    c.take(4, "magic")
    version = c.u32("version")
    if version not in _VERSIONS:
        if version & 0xFFFF == 0 and version >> 16:
            raise c.error("big-endian GGUF files are not supported")
        raise c.error(f"unsupported GGUF version {version} (2 and 3 are supported)")
    n_tensors, n_kv = c.u64("tensor count"), c.u64("metadata count")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise c.error(
            f"claims {n_tensors:,} tensors and {n_kv:,} metadata entries "
            f"(at most {MAX_TENSORS:,} of each are sane)"
        )
    c.room(n_kv * 13 + n_tensors * 24, "the header")  # the smallest possible entries
    meta: dict[str, Any] = {}
    for index in range(n_kv):
        key = c.string(f"metadata key {index}")
        meta[key] = c.value(c.u32(f"type of {key!r}"), key)
        if key == gguf.Keys.Tokenizer.MODEL:
            c.tokenizer_model = _text(meta[key])
    alignment = meta.get(gguf.Keys.General.ALIGNMENT, gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise c.error(f"general.alignment {alignment!r} is not a power of two")
    tensors, header_size = _read_tensor_infos(c, n_tensors, alignment)
    return _info_from(meta, tensors, version, header_size, alignment, file_size)


def _info_from(
    meta: dict[str, Any],
    tensors: _Tensors,
    version: int,
    header_size: int,
    alignment: int,
    file_size: int,
) -> GGUFInfo:
    arch = _text(meta.get(gguf.Keys.General.ARCHITECTURE))

    def arch_value(template: str) -> Any:
        return meta.get(template.format(arch=arch)) if arch else None

    n_embd = _largest(arch_value(gguf.Keys.LLM.EMBEDDING_LENGTH))
    n_head = _largest(arch_value(gguf.Keys.Attention.HEAD_COUNT))
    kv_value = arch_value(gguf.Keys.Attention.HEAD_COUNT_KV)
    n_head_kv = _largest(kv_value) if kv_value is not None else n_head
    by_layer = kv_value.values if isinstance(kv_value, _Array) and kv_value.values else None
    head_dim = _largest(arch_value(gguf.Keys.Attention.KEY_LENGTH))
    if head_dim is None and n_embd and n_head:
        head_dim = n_embd // n_head
    head_dim_v = _largest(arch_value(gguf.Keys.Attention.VALUE_LENGTH)) or head_dim
    tokens = meta.get(gguf.Keys.Tokenizer.LIST)
    vocab = _largest(arch_value(gguf.Keys.LLM.VOCAB_SIZE))
    if vocab is None and isinstance(tokens, _Array):
        vocab = tokens.count
    file_type = _largest(meta.get(gguf.Keys.General.FILE_TYPE))
    return GGUFInfo(
        version=version,
        architecture=arch,
        name=_text(meta.get(gguf.Keys.General.NAME)),
        parameter_count=tensors.parameter_count,
        context_length=_largest(arch_value(gguf.Keys.LLM.CONTEXT_LENGTH)),
        n_layers=_largest(arch_value(gguf.Keys.LLM.BLOCK_COUNT)),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        n_head_kv_by_layer=tuple(int(n) for n in by_layer) if by_layer else None,
        head_dim=head_dim,
        head_dim_v=head_dim_v,
        n_ff=_largest(arch_value(gguf.Keys.LLM.FEED_FORWARD_LENGTH)),
        vocab_size=vocab,
        file_type=file_type,
        quant=_quant_name(file_type) or tensors.main_type,
        chat_template=_text(meta.get(gguf.Keys.Tokenizer.CHAT_TEMPLATE)),
        tokenizer_model=_text(meta.get(gguf.Keys.Tokenizer.MODEL)),
        bos_token_id=_largest(meta.get(gguf.Keys.Tokenizer.BOS_ID)),
        eos_token_id=_largest(meta.get(gguf.Keys.Tokenizer.EOS_ID)),
        tensor_count=tensors.count,
        tensor_data_offset=-(-header_size // alignment) * alignment,
        tensor_data_size=tensors.data_size,
        header_size=header_size,
        file_size=file_size,
        split_count=_largest(meta.get(gguf.Keys.Split.LLM_KV_SPLIT_COUNT)) or 1,
        pooling_type=_largest(arch_value(gguf.Keys.LLM.POOLING_TYPE)),
        layer_bytes=tensors.layer_bytes,
        output_bytes=tensors.output_bytes,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _largest(value: Any) -> int | None:
    """An integer setting; for a per-layer array, its largest value."""
    if isinstance(value, _Array):
        numbers = [v for v in value.values or () if isinstance(v, int) and not isinstance(v, bool)]
        return max(numbers) if numbers else None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _quant_name(file_type: int | None) -> str | None:
    """``15`` -> ``"Q4_K_M"``, ``0`` -> ``"F32"``; ``None`` for unknown or guessed types."""
    try:
        name = gguf.LlamaFileType(file_type).name
    except ValueError:
        return None
    return None if name == "GUESSED" else name.removeprefix("MOSTLY_").removeprefix("ALL_")


# --- reading: a growing prefix ---------------------------------------------------------------


def _next_end(have: int, more: _NeedMore) -> int:
    """How far the next read goes: the estimate, at least what is needed, at least double."""
    return max(more.needed, more.estimate, 2 * have)


def _read_growing(
    read: Callable[[int, int], bytes], size: Callable[[], int], name: str
) -> GGUFInfo:
    """Parse a header, reading ``read(start, end)`` further each time the parser needs more.

    ``size()`` is the file size, known once the first read is done.
    """
    buf = bytearray()
    end = FIRST_READ
    while True:
        start = len(buf)
        chunk = read(start, end)
        buf += chunk
        limit = min(size(), MAX_HEADER_BYTES)
        if len(buf) < min(end, limit):
            raise InvalidModelError(f"{name}: the file ended at byte {len(buf):,} while reading")
        try:
            return _parse(buf, size(), name)
        except _NeedMore as more:  # never past `limit`: the cursor checks that first
            end = min(_next_end(len(buf), more), limit)


def inspect_file(path: str | Path) -> GGUFInfo:
    """Read and check the header of a local GGUF file (the load guard before llama.cpp).

    Checks the magic, the version (2 or 3), counts against sane caps, every string and array
    length against the bytes available, tensor shapes and types, and that every tensor's data
    lies within the file. Reads only the header (1 MB, more when the header is bigger).

    Args:
        path: the ``.gguf`` file (for a split model, any shard).

    Returns:
        The :class:`GGUFInfo` of the file.

    Raises:
        InvalidModelError: not a GGUF file, or a truncated, corrupt or hostile one.
        NotFoundError: the file does not exist.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            file_size = os.fstat(fh.fileno()).st_size

            def read(start: int, end: int) -> bytes:
                fh.seek(start)
                return fh.read(end - start)

            return _read_growing(read, lambda: file_size, str(path))
    except FileNotFoundError:
        raise NotFoundError(f"No such model file: {path}") from None
    except IsADirectoryError:
        raise InvalidModelError(f"{path}: is a folder, not a GGUF file") from None


# --- reading over HTTP -----------------------------------------------------------------------


class _RangeReader:
    """Reads byte ranges of one remote file; learns its size and ETag from the first answer."""

    def __init__(self, settings: Settings, url: str, name: str) -> None:
        self.settings = settings
        self.url = url
        self.name = name
        self.file_size: int | None = None
        self.etag: str | None = None

    def size(self) -> int:
        assert self.file_size is not None  # set by the first read
        return self.file_size

    def read(self, start: int, end: int) -> bytes:
        """Bytes ``start`` to ``end`` (or to the end of the file), with retries."""
        return hub._call(
            self.settings, f"Reading the header of {self.name}", lambda: self._get(start, end)
        )

    def _get(self, start: int, end: int) -> bytes:
        headers = {
            **build_hf_headers(token=self.settings.token),
            "Range": f"bytes={start}-{end - 1}",
            "Accept-Encoding": "identity",
        }
        # Streamed, and never read past `end`: a server that ignores Range must not make us
        # download the whole file.
        session = get_session()
        with session.stream(
            "GET", self.url, headers=headers, timeout=self.settings.hub_timeout
        ) as response:
            hf_raise_for_status(response)
            skip = self._learn(response, start)
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) >= skip + end - start:
                    break
        return bytes(data[skip : skip + end - start])

    def _learn(self, response: httpx2.Response, start: int) -> int:
        """Take the file size and ETag from a response; return the bytes to skip."""
        for answer in (*response.history, response):
            etag = answer.headers.get("X-Linked-Etag") or answer.headers.get("ETag")
            self.etag = _cache_key(etag) or self.etag
        if response.status_code == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != start:
                raise HubUnavailableError(f"{self.name}: the server sent a wrong byte range")
            self.file_size = int(match.group(3))
            return 0
        length = response.headers.get("Content-Length")  # 200: the server ignored Range
        if length is None or not length.isdigit():
            raise HubUnavailableError(f"{self.name}: the server did not say how big the file is")
        self.file_size = int(length)
        return start


def _cache_key(tag: str | None) -> str | None:
    """A file name from a sha256 or ETag (quotes and weak prefix dropped); None if unusable."""
    if not tag:
        return None
    key = tag.strip().removeprefix("W/").strip('"')
    return key if re.fullmatch(r"[A-Za-z0-9_-]{8,128}", key) else None


def _cache_path(settings: Settings, key: str) -> Path:
    return settings.cache_dir / "gguf_info" / f"{key}.json"


def _cached(settings: Settings, key: str | None) -> GGUFInfo | None:
    if key is None:
        return None
    try:
        data = json.loads(_cache_path(settings, key).read_text(encoding="utf-8"))
        if data.get("format") == CACHE_FORMAT:
            return GGUFInfo.from_dict(data["info"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        pass  # missing or unreadable: read the header again
    return None


def _store(settings: Settings, key: str, info: GGUFInfo) -> None:
    with contextlib.suppress(OSError):  # a cache we cannot write is only a slower next time
        write_json(_cache_path(settings, key), {"format": CACHE_FORMAT, "info": info.to_dict()})


def _listed_sha256(
    settings: Settings, repo_id: str, filename: str, revision: str | None
) -> str | None:
    """The sha256 the Hub lists for a GGUF model file (``None`` for other files)."""
    for variant in hub.variants(repo_id, revision=revision, settings=settings):
        for remote in variant.files:
            if remote.path == filename:
                return remote.sha256
    return None


def inspect_gguf(repo_id: str, filename: str, *, revision: str | None = None) -> GGUFInfo:
    """Read the header of a GGUF file on the Hub without downloading the file.

    Only the header is fetched, with HTTP Range requests: the first megabyte, then (for big
    vocabularies) one more range sized from how far the first got. Results are cached on disk
    by the file's sha256 (or ETag), so asking again makes no request while the repo listing
    is cached (:data:`offgrid_nb.hub.CACHE_TTL`) and one listing request after that.

    Args:
        repo_id: ``owner/name`` on the Hub.
        filename: the file's path in the repo (for a split model, a shard, usually the first).
        revision: a branch, tag or commit (default: the main branch).

    Returns:
        The :class:`GGUFInfo` of the file.

    Raises:
        InvalidModelError: the file is not a GGUF file, or is corrupt, truncated or hostile.
        NotFoundError: no such repo, revision or file.
        GatedRepoError, HubUnavailableError, OfflineError: as the Hub answers.
    """
    settings = get_settings()
    name = f"{repo_id}/{filename}"
    key = _cache_key(_listed_sha256(settings, repo_id, filename, revision))
    info = _cached(settings, key)
    if info is not None:
        return info
    url = hf_hub_url(repo_id, filename, revision=revision, endpoint=settings.endpoint)
    reader = _RangeReader(settings, url, name)
    info = _read_growing(reader.read, reader.size, name)
    key = key or reader.etag
    if key is not None:
        _store(settings, key, info)
    return info


def local_header(path: Path) -> GGUFInfo | None:
    """A local file's header, or ``None`` when it is unreadable or not a valid GGUF.

    Cached per file version (path, size, mtime), so listing a library reads each header once.
    """
    try:
        stat = path.stat()
    except OSError:
        return None
    return _local_header(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=1024)
def _local_header(path: Path, size: int, mtime_ns: int) -> GGUFInfo | None:
    try:
        return inspect_file(path)
    except OffgridError:
        return None


__all__ = ["MAX_HEADER_BYTES", "GGUFInfo", "inspect_file", "inspect_gguf", "local_header"]
