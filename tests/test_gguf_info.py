"""GGUF header reading: fields, remote Range reads, the disk cache, and the load guard."""

from __future__ import annotations

import json
import os
import struct
import time
import tracemalloc

import gguf
import httpx2
import pytest

from offgrid_nb import gguf_info
from offgrid_nb.cli import main
from offgrid_nb.config import get_settings
from offgrid_nb.errors import InvalidModelError, NotFoundError
from offgrid_nb.gguf_info import GGUFInfo, inspect_file, inspect_gguf
from offgrid_nb.hub import clear_cache
from offgrid_nb.synthetic import CHATML_TEMPLATE, TinyModelSpec

FIT_REPO = "offgrid-test/fit-GGUF"
BIG_REPO, BIG_FILE = "offgrid-test/big-vocab-GGUF", "big-vocab-F32.gguf"


@pytest.fixture(scope="module")
def n_tokens(tiny_model) -> int:
    """Tokens in the tiny model's vocabulary, as gguf's own reader counts them."""
    return len(gguf.GGUFReader(tiny_model).fields[gguf.Keys.Tokenizer.LIST].data)


# --- local files -----------------------------------------------------------------------------


def test_header_fields_are_those_written(tiny_model, n_tokens):
    spec = TinyModelSpec()
    info = inspect_file(tiny_model)
    head_dim = spec.n_embd // spec.n_head
    assert (info.architecture, info.name, info.version) == ("llama", spec.name, 3)
    assert (info.n_layers, info.n_embd, info.n_ff) == (spec.n_layers, spec.n_embd, spec.n_ff)
    assert (info.n_head, info.n_head_kv, info.head_dim) == (spec.n_head, spec.n_head_kv, head_dim)
    assert info.context_length == spec.n_ctx
    assert info.vocab_size == n_tokens
    assert (info.quant, info.file_type) == ("F32", int(gguf.LlamaFileType.ALL_F32))
    assert info.chat_template == CHATML_TEMPLATE
    assert (info.tokenizer_model, info.bos_token_id, info.eos_token_id) == ("llama", 1, 4)
    assert info.split_count == 1
    assert info.known_architecture
    # Tensors: embeddings, output norm, output, and 9 per layer.
    assert info.tensor_count == 3 + 9 * spec.n_layers
    n_kv = head_dim * spec.n_head_kv
    per_layer = 2 * spec.n_embd + 2 * spec.n_embd**2 + 2 * n_kv * spec.n_embd
    per_layer += 3 * spec.n_ff * spec.n_embd
    assert info.parameter_count == 2 * n_tokens * spec.n_embd + spec.n_embd + 2 * per_layer
    assert info.tensor_data_size == 4 * info.parameter_count  # F32, no padding between
    assert info.file_size == tiny_model.stat().st_size
    reader = gguf.GGUFReader(tiny_model)  # an independent reading of the layout
    assert info.tensor_data_offset == reader.data_offset
    assert info.header_size <= info.tensor_data_offset < info.header_size + 32


def test_quantization_comes_from_the_file_type(gguf_hub_root):
    info = inspect_file(gguf_hub_root / FIT_REPO / "fit-Q4_K_M.gguf")
    assert (info.quant, info.file_type) == ("Q4_K_M", int(gguf.LlamaFileType.MOSTLY_Q4_K_M))
    assert info.tensor_data_offset + info.tensor_data_size <= info.file_size


def test_info_round_trips_through_json(tiny_model):
    info = inspect_file(tiny_model)
    assert GGUFInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


def test_unknown_architecture_parses(unknown_arch_model):
    info = inspect_file(unknown_arch_model)
    assert info.architecture == "mystery-arch"
    assert not info.known_architecture
    assert (info.n_layers, info.n_head, info.parameter_count) == (None, None, 128)


# --- the load guard: bad files give a named one-line error, fast and without big allocations ---


def _str(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, vtype: int, payload: bytes) -> bytes:
    return _str(key) + struct.pack("<I", vtype) + payload


def _tensor(name: str, dims: tuple[int, ...], ttype: int = 0, offset: int = 0) -> bytes:
    shape = struct.pack(f"<I{len(dims)}Q", len(dims), *dims)
    return _str(name) + shape + struct.pack("<IQ", ttype, offset)


def _gguf(kvs: list[bytes] = (), tensors: list[bytes] = (), *, counts=None, version=3) -> bytes:
    n_tensors, n_kv = counts or (len(tensors), len(kvs))
    head = b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)
    return head + b"".join(kvs) + b"".join(tensors)


VT = gguf.GGUFValueType
ARCH = _kv("general.architecture", VT.STRING, _str("llama"))
BAD_FILES = {
    "not a GGUF": (b"PK\x03\x04" + bytes(100), "not a GGUF file"),
    "empty": (b"", "not a GGUF file"),
    "old version": (_gguf(version=1), "unsupported GGUF version 1"),
    "big-endian": (b"GGUF" + struct.pack(">IQQ", 3, 0, 0), "big-endian"),
    "string of 2^60 bytes": (
        _gguf([_kv("general.name", VT.STRING, struct.pack("<Q", 2**60))]),
        "past the end of the file",
    ),
    "2^40 tensors": (_gguf(counts=(2**40, 0)), "1,099,511,627,776 tensors"),
    "more entries than bytes": (_gguf(counts=(0, 1000)), "past the end of the file"),
    "array of 2^40 strings": (
        _gguf([_kv("tokenizer.ggml.tokens", VT.ARRAY, struct.pack("<IQ", VT.STRING, 2**40))]),
        "past the end of the file",
    ),
    "array of arrays": (
        _gguf([_kv("x", VT.ARRAY, struct.pack("<IQ", VT.ARRAY, 1))]),
        "holds arrays",
    ),
    "unknown value type": (_gguf([_kv("x", 99, b"\0" * 8)]), "unknown value type 99"),
    "alignment not a power of two": (
        _gguf([_kv("general.alignment", VT.UINT32, struct.pack("<I", 24))]),
        "not a power of two",
    ),
    "9 dimensions": (_gguf([ARCH], [_tensor("w", (1,) * 9)]), "9 dimensions"),
    "unknown tensor type": (_gguf([ARCH], [_tensor("w", (32,), ttype=200)]), "unknown type 200"),
    "partial quant block": (
        _gguf([ARCH], [_tensor("w", (33,), ttype=gguf.GGMLQuantizationType.Q8_0)]),
        "not a multiple of Q8_0 blocks",
    ),
    "misaligned data": (_gguf([ARCH], [_tensor("w", (4,), offset=5)]), "not 32-aligned"),
    "data past the end": (_gguf([ARCH], [_tensor("w", (4,), offset=2**40)]), "past the end"),
    "duplicate tensor": (
        _gguf([ARCH], [_tensor("w", (4,)), _tensor("w", (4,), offset=32)]),
        "appears twice",
    ),
    "long tensor name": (_gguf([ARCH], [_tensor("w" * 64, (4,))]), "longer than 63 bytes"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_is_a_named_error(tmp_path, case):
    content, message = BAD_FILES[case]
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InvalidModelError, match=message) as caught:
            inspect_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - started < 1.0
    assert peak < 4 << 20  # no allocation sized by a hostile count or length
    assert str(path) in caught.value.message
    assert "\n" not in caught.value.message
    assert caught.value.http_status == 422


def test_header_larger_than_the_cap(tmp_path):
    path = tmp_path / "huge.gguf"
    claimed = gguf_info.MAX_HEADER_BYTES + 1
    path.write_bytes(_gguf([_kv("general.name", VT.STRING, struct.pack("<Q", claimed))]))
    os.truncate(path, 2 * gguf_info.MAX_HEADER_BYTES)  # sparse: the bytes exist but are holes
    with pytest.raises(InvalidModelError, match="larger than the 64 MiB cap"):
        inspect_file(path)


@pytest.mark.parametrize(
    ("keep", "message"),
    [(3, "not a GGUF file"), (5000, "past the end of the file"), (-1000, "tensor 'blk")],
)
def test_truncated_model(tiny_model, tmp_path, keep, message):
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_model.read_bytes()[:keep])
    with pytest.raises(InvalidModelError, match=message):
        inspect_file(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(NotFoundError):
        inspect_file(tmp_path / "nope.gguf")
    with pytest.raises(InvalidModelError, match="is a folder"):
        inspect_file(tmp_path)


# --- remote files: Range reads, the cache --------------------------------------------------------


@pytest.fixture
def reads(monkeypatch):
    """Every byte range the HTTP reader fetched, as (start, end, bytes received)."""
    seen: list[tuple[int, int, int]] = []
    original = gguf_info._RangeReader.read

    def read(self, start, end):
        data = original(self, start, end)
        seen.append((start, end, len(data)))
        return data

    monkeypatch.setattr(gguf_info._RangeReader, "read", read)
    return seen


def test_remote_header_equals_local(gguf_hub, gguf_hub_root, reads):
    remote = inspect_gguf(FIT_REPO, "fit-Q8_0.gguf")
    assert remote == inspect_file(gguf_hub_root / FIT_REPO / "fit-Q8_0.gguf")
    assert gguf_hub.requests["resolve"] == 1  # the whole header was in the first range
    assert reads == [(0, gguf_info.FIRST_READ, gguf_info.FIRST_READ)]  # 1 MiB of the 1.4 MB


def test_big_header_takes_two_requests_and_under_1_percent(gguf_hub, reads, n_tokens):
    info = inspect_gguf(BIG_REPO, BIG_FILE)
    assert info.vocab_size == n_tokens + 150_000
    assert info.header_size > 3_000_000
    assert info.file_size == 1 << 30
    assert gguf_hub.requests["resolve"] == len(reads) == 2
    fetched = sum(received for _, _, received in reads)
    assert info.header_size < fetched < 0.01 * info.file_size


def test_cache_hit_makes_no_request(gguf_hub, tmp_path):
    first = inspect_gguf(FIT_REPO, "fit-Q4_K_M.gguf")
    assert list((tmp_path / "cache" / "gguf_info").glob("*.json"))
    gguf_hub.requests.clear()
    assert inspect_gguf(FIT_REPO, "fit-Q4_K_M.gguf") == first
    assert sum(gguf_hub.requests.values()) == 0
    clear_cache()  # the repo listing (with the sha256) expired: one listing, no file read
    assert inspect_gguf(FIT_REPO, "fit-Q4_K_M.gguf") == first
    assert dict(gguf_hub.requests) == {"info": 1}


def test_unreadable_cache_entry_is_read_again(gguf_hub, tmp_path):
    first = inspect_gguf(FIT_REPO, "fit-Q4_K_M.gguf")
    for entry in (tmp_path / "cache" / "gguf_info").glob("*.json"):
        entry.write_text("{not json")
    gguf_hub.requests.clear()
    assert inspect_gguf(FIT_REPO, "fit-Q4_K_M.gguf") == first
    assert gguf_hub.requests["resolve"] == 1


@pytest.mark.parametrize(
    ("filename", "message"),
    [("broken-Q4_K_M.gguf", "not a GGUF file"), ("broken-Q8_0.gguf", "past the end of the file")],
)
def test_remote_bad_file_names_repo_and_file(gguf_hub, filename, message):
    with pytest.raises(InvalidModelError, match=message) as caught:
        inspect_gguf("offgrid-test/broken-GGUF", filename)
    assert caught.value.message.startswith(f"offgrid-test/broken-GGUF/{filename}: ")


def test_remote_missing_file(gguf_hub):
    with pytest.raises(NotFoundError, match="not found"):
        inspect_gguf(FIT_REPO, "nope.gguf")


def test_server_ignoring_range_is_read_only_as_far_as_needed(gguf_hub_root, monkeypatch, n_tokens):
    """A server that answers 200 with the whole file: we stop reading once we have the range."""
    path = gguf_hub_root / BIG_REPO / BIG_FILE
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8 << 20)  # the header and more; the rest of the file is a hole
    served: list[int] = []

    class WholeFile(httpx2.SyncByteStream):
        def __iter__(self):
            for start in range(0, size, 1 << 20):  # 1024 chunks if read to the end
                served.append(start)
                yield head[start : start + (1 << 20)] or bytes(1 << 20)

    def whole_file(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"Content-Length": str(size)}, stream=WholeFile())

    client = httpx2.Client(transport=httpx2.MockTransport(whole_file))
    monkeypatch.setattr(gguf_info, "get_session", lambda: client)
    reader = gguf_info._RangeReader(get_settings(), "http://mirror.test/big.gguf", "big.gguf")
    info = gguf_info._read_growing(reader.read, reader.size, "big.gguf")
    assert info.vocab_size == n_tokens + 150_000
    assert info.file_size == size
    assert len(served) < 16  # two reads of a few MB, not the whole file


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_inspect_prints_summary_and_estimate(gguf_hub, capsys, n_tokens):
    assert main(["inspect", FIT_REPO, "fit-Q4_K_M.gguf", "--ram", "16"]) == 0
    out = capsys.readouterr().out
    for expected in ("llama", "Q4_K_M", "2,048 tokens", f"{n_tokens} tokens", "<|im_start|>"):
        assert expected in out
    assert "verdict        fits" in out


def test_cli_inspect_error_is_one_line(gguf_hub, capsys):
    assert main(["inspect", "offgrid-test/broken-GGUF", "broken-Q4_K_M.gguf"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: offgrid-test/broken-GGUF/broken-Q4_K_M.gguf: not a GGUF")


def test_cli_inspect_json(gguf_hub, capsys):
    assert main(["inspect", FIT_REPO, "fit-Q8_0.gguf", "--json", "--ctx", "512"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["info"]["quant"] == "Q8_0"
    assert data["estimate"]["n_ctx"] == 512
    assert data["fits"] in ("fits", "tight", "too large")
