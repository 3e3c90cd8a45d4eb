"""offgrid_nb.library: the models folder as a DataFrame; resolve, verify and remove models.

Downloaded models come from our mirror through ``offgrid_nb.download`` (so their manifests are
the real thing); "copied in by hand" models are plain files written by the test.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from offgrid_nb.errors import (
    AlreadyDownloadingError,
    AmbiguousError,
    ChecksumMismatchError,
    InvalidArgumentError,
    NotFoundError,
)
from offgrid_nb.library import (
    COLUMNS,
    list_models,
    model_lock,
    remove_model,
    resolve_model,
    verify_model,
)

dl = importlib.import_module("offgrid_nb.download")

LLAMA = "TheBloke/Llama-2-7B-Chat-GGUF"
QWEN = "bartowski/Qwen2.5-7B-Instruct-GGUF"
QWEN_Q8 = f"{QWEN}/Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0"  # + the shard suffix


@pytest.fixture
def library(hub, tmp_path: Path) -> Path:
    """A models folder with two downloads (one split), a hand-copied file and work files."""
    dl.download(LLAMA, quant="Q4_K_M")
    dl.download(QWEN, quant="Q8_0")
    models = tmp_path / "models"
    (models / "mine").mkdir()
    (models / "mine" / "handmade-3B-Q6_K.gguf").write_bytes(b"GGUF" + os.urandom(500))
    (models / "mine" / "half-Q8_0-00001-of-00002.gguf").write_bytes(b"GGUF")  # shard 2 missing
    (models / "mine" / "partial-Q4_0.gguf.part").write_bytes(b"GGUF")
    (models / "mine" / "mmproj-f16.gguf").write_bytes(b"GGUF")  # a projector, not a model
    return models


def test_an_empty_or_missing_folder_lists_no_models(tmp_path):
    df = list_models(tmp_path / "nothing-here")
    assert list(df.columns) == COLUMNS
    assert df.empty


def test_list_models_shows_downloads_split_models_and_hand_copied_files(library):
    df = list_models().set_index("name")

    assert list(df.index) == [
        "handmade-3B-Q6_K",
        "llama-2-7b-chat.Q4_K_M",
        "Qwen2.5-7B-Instruct-Q8_0",
    ]
    llama = df.loc["llama-2-7b-chat.Q4_K_M"]
    path = library / LLAMA / "llama-2-7b-chat.Q4_K_M.gguf"
    assert llama.path == str(path)
    assert (llama["size"], llama.quant, llama.param_size, llama.repo_id) == (
        3800,
        "Q4_K_M",
        "7B",
        LLAMA,
    )
    assert llama.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert isinstance(llama.downloaded_at, pd.Timestamp)
    assert str(llama.downloaded_at.tz) == "UTC"
    qwen = df.loc["Qwen2.5-7B-Instruct-Q8_0"]
    assert (qwen["size"], qwen.n_shards) == (4000 + 3500, 2)
    assert qwen.path.endswith("Qwen2.5-7B-Instruct-Q8_0-00001-of-00002.gguf")
    handmade = df.loc["handmade-3B-Q6_K"]
    assert (handmade.quant, handmade.param_size, handmade.n_shards) == ("Q6_K", "3B", 1)
    assert pd.isna(handmade.repo_id)  # missing values are NA, as pandas keeps them
    assert pd.isna(handmade.sha256)
    assert pd.isna(handmade.downloaded_at)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama-2-7b-chat.Q4_K_M.gguf", f"{LLAMA}/llama-2-7b-chat.Q4_K_M.gguf"),
        ("llama-2-7b-chat.Q4_K_M", f"{LLAMA}/llama-2-7b-chat.Q4_K_M.gguf"),
        ("LLAMA-2", f"{LLAMA}/llama-2-7b-chat.Q4_K_M.gguf"),
        ("Qwen2.5-7B-Instruct-Q8_0", f"{QWEN_Q8}-00001-of-00002.gguf"),
        ("bartowski/", f"{QWEN_Q8}-00001-of-00002.gguf"),
        ("handmade", "mine/handmade-3B-Q6_K.gguf"),
        ("Qwen2.5-7B-Instruct-Q8_0-00002-of-00002.gguf", f"{QWEN_Q8}-00001-of-00002.gguf"),
    ],
)
def test_resolve_model_accepts_file_names_names_and_unique_parts(library, name, expected):
    assert resolve_model(name) == library / expected


def test_resolve_model_accepts_an_existing_gguf_path_anywhere(library, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "my.gguf"
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"GGUF")
    assert resolve_model(str(elsewhere)) == elsewhere
    inside = library / LLAMA / "llama-2-7b-chat.Q4_K_M.gguf"
    assert resolve_model(inside) == inside


def test_an_ambiguous_name_lists_the_candidates(library):
    with pytest.raises(AmbiguousError, match="'q' matches 3 local models") as excinfo:
        resolve_model("q")
    assert excinfo.value.candidates == [
        "handmade-3B-Q6_K",
        "llama-2-7b-chat.Q4_K_M",
        "Qwen2.5-7B-Instruct-Q8_0",
    ]


def test_the_same_name_in_two_repos_is_ambiguous_by_path(library):
    copy = library / "someone/copy-GGUF/llama-2-7b-chat.Q4_K_M.gguf"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(library / LLAMA / copy.name, copy)

    with pytest.raises(AmbiguousError) as excinfo:
        resolve_model("llama-2-7b-chat.Q4_K_M")
    assert excinfo.value.candidates == [
        f"{LLAMA}/llama-2-7b-chat.Q4_K_M.gguf",
        "someone/copy-GGUF/llama-2-7b-chat.Q4_K_M.gguf",
    ]


@pytest.mark.parametrize(
    "name", ["mistral", "../../etc/passwd", "/etc/passwd", "half-Q8_0", "mmproj"]
)
def test_unknown_names_and_paths_that_are_not_models_are_not_found(library, name):
    with pytest.raises(NotFoundError, match="No local model matches") as excinfo:
        resolve_model(name)
    assert "handmade-3B-Q6_K" in excinfo.value.message  # what there is
    assert "offgrid list" in excinfo.value.hint
    assert "offgrid download-hf" in excinfo.value.hint


def test_an_empty_name_is_invalid(library):
    with pytest.raises(InvalidArgumentError, match="Invalid model name"):
        resolve_model("  ")


def test_verify_model_rehashes_every_shard(library):
    assert verify_model("Qwen2.5-7B-Instruct-Q8_0") is True
    assert verify_model("handmade") is False  # no manifest: nothing to compare with

    shard = library / QWEN / "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00002-of-00002.gguf"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match=f"{shard.name} is corrupt") as excinfo:
        verify_model("Qwen2.5-7B-Instruct-Q8_0")
    assert "download it again" in excinfo.value.hint


def test_remove_model_deletes_every_shard_and_the_manifest(library):
    folder = library / QWEN / "Qwen2.5-7B-Instruct-Q8_0"
    removed = remove_model("Qwen2.5-7B-Instruct-Q8_0")

    first = folder / "Qwen2.5-7B-Instruct-Q8_0-00001-of-00002.gguf"
    assert removed == [
        first,
        first.with_name(first.name + ".offgrid.json"),
        folder / "Qwen2.5-7B-Instruct-Q8_0-00002-of-00002.gguf",
    ]
    assert not (library / QWEN).exists()  # emptied folders go too
    assert "Qwen2.5-7B-Instruct-Q8_0" not in set(list_models().name)
    with pytest.raises(NotFoundError):
        resolve_model("Qwen2.5-7B-Instruct-Q8_0")


def test_a_model_being_downloaded_is_not_removed(library):
    path = library / LLAMA / "llama-2-7b-chat.Q4_K_M.gguf"
    with (
        model_lock(path, timeout=0),
        pytest.raises(AlreadyDownloadingError, match="being downloaded"),
    ):
        remove_model("llama-2-7b-chat.Q4_K_M")
    assert path.is_file()


def test_remove_model_refuses_files_outside_the_folder(library, tmp_path):
    elsewhere = tmp_path / "elsewhere.gguf"
    elsewhere.write_bytes(b"GGUF")
    with pytest.raises(NotFoundError):
        remove_model(str(elsewhere))
    assert elsewhere.is_file()
