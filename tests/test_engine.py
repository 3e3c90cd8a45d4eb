"""Loading models: reuse, one model per process, guards before llama.cpp, memory check."""

from __future__ import annotations

import shutil
import subprocess
import sys
from types import SimpleNamespace

import gguf
import numpy as np
import pytest

from offgrid_nb import engine
from offgrid_nb.errors import InsufficientMemoryError, ModelLoadError, NotFoundError


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


def test_loading_another_model_frees_the_first(tiny_model, tmp_path):
    other = shutil.copyfile(tiny_model, tmp_path / "other.gguf")
    first = engine.load_model(tiny_model)
    second = engine.load_model(other)
    assert second is not first
    assert engine.loaded_model() is second
    assert first.llama._model.model is None  # llama.cpp freed the first model's weights
    assert second.llama._model.model is not None


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
