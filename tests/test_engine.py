"""Loading models: reuse, several at once (LRU), guards before llama.cpp, memory check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from types import SimpleNamespace

import gguf
import llama_cpp
import numpy as np
import pytest

from offgrid_nb import engine, llama_backend, threadpool
from offgrid_nb.chat import generate
from offgrid_nb.devices import Device, list_devices
from offgrid_nb.errors import (
    InsufficientMemoryError,
    InvalidArgumentError,
    ModelLoadError,
    NotFoundError,
)


@pytest.fixture(autouse=True)
def _unload():
    yield
    engine.unload_model()


def test_load_reuses_the_same_model(tiny_model):
    first = engine.load_model(tiny_model)
    assert first.n_ctx == 2048  # the model's own context, under the 4096 cap
    assert first.n_threads >= 1
    assert engine.load_model(tiny_model) is first
    assert engine.loaded_model() is first


def test_models_load_side_by_side_and_the_least_recently_used_is_freed_first(
    tiny_model, tmp_path, monkeypatch
):
    monkeypatch.setenv("OFFGRID_MAX_LOADED_MODELS", "2")
    a, b, c = (shutil.copyfile(tiny_model, tmp_path / f"{name}.gguf") for name in "abc")
    first, second = engine.load_model(a), engine.load_model(b)
    assert engine.loaded_models() == [second, first]  # both held, the most recent first
    assert engine.load_model(a) is first  # used again: now the most recent
    third = engine.load_model(c)  # a third: the least recently used (b) makes room
    assert second.closed
    assert second.llama._model.model is None  # llama.cpp freed its weights
    assert engine.loaded_models() == [third, first]
    engine.unload_model(a)  # one by name or path
    assert first.closed
    assert engine.loaded_models() == [third]


def test_the_same_file_with_other_options_replaces_its_earlier_load(tiny_model):
    small = engine.load_model(tiny_model, n_ctx=256)
    large = engine.load_model(tiny_model, n_ctx=512)
    assert small.closed
    assert engine.loaded_models() == [large]


def test_a_model_that_does_not_fit_beside_the_others_frees_them_first(
    tiny_model, tmp_path, monkeypatch
):
    other = shutil.copyfile(tiny_model, tmp_path / "other.gguf")
    info = engine.inspect_file(tiny_model)
    need = engine._plan(info, tiny_model, 2048, 1, list_devices(), force=False).ram_bytes
    # room for one model's weights, cache and compute, but not for a second's weights beside
    room = need + tiny_model.stat().st_size // 2
    monkeypatch.setattr(engine.psutil, "virtual_memory", lambda: SimpleNamespace(available=room))
    first = engine.load_model(tiny_model)
    second = engine.load_model(other)
    assert first.closed
    assert engine.loaded_models() == [second]


def test_memory_check_refuses_and_force_overrides(tiny_model, monkeypatch):
    monkeypatch.setattr(
        engine.psutil, "virtual_memory", lambda: SimpleNamespace(available=1_000_000)
    )
    with pytest.raises(InsufficientMemoryError, match=r"needs about .* only 1\.0 MB"):
        engine.load_model(tiny_model)
    assert engine.loaded_model() is None
    assert engine.load_model(tiny_model, force=True).path == tiny_model.resolve()


def test_missing_model_names_the_library(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path))
    with pytest.raises(NotFoundError, match="No local model matches 'nope'"):
        engine.load_model("nope")


def test_llama_cpp_refusal_quotes_its_reason(tmp_path):
    path = tmp_path / "alien.gguf"
    writer = gguf.GGUFWriter(str(path), "no-such-arch")
    writer.add_tensor("w", np.zeros(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelLoadError, match=r"could not load alien\.gguf: .*architecture"):
        engine.load_model(path, force=True)


LOAD = "from offgrid_nb.engine import load_model; load_model({path!r})"


def _load_in_subprocess(path) -> subprocess.CompletedProcess:
    code = (
        "import sys\nfrom offgrid_nb.errors import OffgridError\n"
        f"try:\n    {LOAD.format(path=str(path))}\n"
        "except OffgridError as exc:\n    print(exc.message); sys.exit(3)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("random", "not a GGUF"),
        ("truncated_header", ""),
        ("truncated_tensors", ""),
        ("empty", ""),
    ],
)
def test_damaged_files_give_clear_errors_not_crashes(tiny_model, tmp_path, damage, message):
    data = tiny_model.read_bytes()
    damaged = {
        "random": np.random.default_rng(0).bytes(4096),
        "truncated_header": data[:2000],
        "truncated_tensors": data[: len(data) - 100_000],
        "empty": b"",
    }[damage]
    path = tmp_path / f"{damage}.gguf"
    path.write_bytes(damaged)
    result = _load_in_subprocess(path)
    assert result.returncode == 3, result.stderr  # our named error, not a signal
    assert path.name in result.stdout
    assert message.lower() in result.stdout.lower()


# --- offload: n_gpu_layers="auto" and the retry ------------------------------------------------

OUT_OF_MEMORY = (
    "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 512.00 MiB on device 0: "
    "cudaMalloc failed: out of memory\n"
)


def test_auto_offload_on_this_cpu_build(tiny_model):
    loaded = engine.load_model(tiny_model)
    assert loaded.n_gpu_layers == 0
    assert (loaded.devices, loaded.backend, loaded.offload_notice) == (("CPU",), "CPU", None)


@pytest.fixture
def gpu_machine(monkeypatch):
    """This machine plus an 8 GB CUDA card, and a Llama that fails as a CUDA build does
    (``log`` in llama.cpp's log, then an error) when given more than ``fits`` layers."""
    card = Device("CUDA0", "test card", "gpu", "CUDA", 8 << 30, 8 << 30)
    monkeypatch.setattr(engine, "list_devices", lambda: [*list_devices(), card])
    module = llama_backend.llama_cpp()
    real = module.Llama
    state = SimpleNamespace(calls=[], fits=1, log=OUT_OF_MEMORY)

    def llama(*, n_gpu_layers, **options):
        state.calls.append(n_gpu_layers)
        if n_gpu_layers > state.fits:
            llama_backend._LOG.append(state.log)
            raise ValueError("Failed to load model from file")
        return real(n_gpu_layers=n_gpu_layers, **options)

    monkeypatch.setattr(module, "Llama", llama)
    return state


def test_out_of_gpu_memory_retries_once_with_fewer_layers(tiny_model, gpu_machine, caplog):
    loaded = engine.load_model(tiny_model)
    assert gpu_machine.calls == [3, 1]  # 2 layers + output all fit on paper; half did
    assert loaded.n_gpu_layers == 1
    assert loaded.offload_notice == (
        "tiny-llama-F32.gguf: 3 layers did not fit in GPU memory; loaded with 1"
    )
    assert loaded.offload_notice in caplog.text
    assert (loaded.devices, loaded.backend) == (("CUDA0", "CPU"), "CUDA+CPU")
    assert loaded.llama._model.model is not None


def test_a_second_failure_is_a_clear_error(tiny_model, gpu_machine):
    gpu_machine.fits = 0
    with pytest.raises(ModelLoadError, match="out of memory"):
        engine.load_model(tiny_model)
    assert gpu_machine.calls == [3, 1]
    assert engine.loaded_model() is None


def test_other_failures_are_not_retried(tiny_model, gpu_machine):
    gpu_machine.log = (
        "llama_model_load: error loading model: tensor 'x' data is not within bounds\n"
    )
    with pytest.raises(ModelLoadError, match="not within bounds"):
        engine.load_model(tiny_model)
    assert gpu_machine.calls == [3]


def test_layers_given_by_hand_are_used(tiny_model, gpu_machine):
    assert engine.load_model(tiny_model, n_gpu_layers=1).n_gpu_layers == 1
    assert gpu_machine.calls == [1]


def test_bad_n_gpu_layers_is_a_clear_error(tiny_model):
    with pytest.raises(InvalidArgumentError, match="Invalid n_gpu_layers: 'all'"):
        engine.load_model(tiny_model, n_gpu_layers="all")


def test_every_context_gets_a_threadpool_freed_with_it(tiny_model):
    assert threadpool.live_pools() == 0
    for cycle in range(12):  # a server loads and frees models for weeks: no pool may stay
        options = [{}, {"parallel": 3}, {"embedding": True}][cycle % 3]
        loaded = engine.load_model(tiny_model, **options)
        assert threadpool.live_pools() == 1  # the split context's alone when parallel > 1
        engine.unload_model()
        assert loaded.closed
        assert threadpool.live_pools() == 0
    llama = engine.load_model(tiny_model).llama
    engine.load_model(tiny_model, n_threads=1)  # another context: the first one's pool freed
    assert threadpool.live_pools() == 1
    assert llama._ctx.ctx is None


def test_greedy_output_is_identical_with_and_without_the_pool(tiny_model):
    prompts = ["hello there", "the model says"]
    load = {"n_ctx": 2048, "n_threads": 2}
    ours = [generate(tiny_model, prompt=p, max_tokens=24, temperature=0, **load) for p in prompts]
    engine.unload_model()
    bare = llama_cpp.Llama(model_path=str(tiny_model), n_ctx=2048, n_threads=2, verbose=False)
    try:  # llama-cpp-python's own context: ggml makes a throwaway pool per decode
        theirs = []
        for prompt in prompts:
            bare.reset()
            theirs.append(bare.create_completion(prompt, max_tokens=24, temperature=0))
    finally:
        bare.close()
    assert ours == [t["choices"][0]["text"] for t in theirs]


@pytest.mark.parametrize(
    ("name", "value"),
    [("OFFGRID_POLL", "fast"), ("OFFGRID_POLL", "101"), ("OFFGRID_THREADS", "0")],
)
def test_bad_thread_settings_are_clear_errors(tiny_model, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidArgumentError, match=f"Invalid {name}: '{value}'") as caught:
        engine.load_model(tiny_model)
    assert "a whole number from" in caught.value.hint
    assert threadpool.live_pools() == 0


def test_thread_settings_are_used(tiny_model, monkeypatch):
    monkeypatch.setenv("OFFGRID_THREADS", "1")
    monkeypatch.setenv("OFFGRID_POLL", "0")
    assert engine.load_model(tiny_model).n_threads == 1
    assert threadpool.live_pools() == 1
