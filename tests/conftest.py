"""Shared fixtures: generated GGUF models, a Hub folder built from them, our mirror serving it.

Nothing here downloads anything: the Hub our tests talk to is ``offgrid_nb.mirror`` on loopback,
reached through the real ``huggingface_hub`` client.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import platformdirs
import pytest

os.environ["HF_HUB_DISABLE_XET"] = "1"  # read by huggingface_hub at import
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from traitlets.config import Config

from offgrid_nb import bundled_model, clear_cache
from offgrid_nb.engine import unload_model
from offgrid_nb.library import hash_file
from offgrid_nb.mirror import MirrorServer
from offgrid_nb.synthetic import with_chat_template, write_tiny_model

TOKEN = "hf_test_token_for_gated_repos"


def _ago(days: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days)).isoformat().replace("+00:00", "Z")


def _blob(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))


def _repo(root: Path, repo_id: str, meta: dict, files: dict[str, int | Path]) -> None:
    folder = root / repo_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "repo.json").write_text(json.dumps(meta))
    for name, content in files.items():
        if isinstance(content, Path):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(content, folder / name)
        else:
            _blob(folder / name, content)


# Where other tools keep models (offgrid_nb.sources): never this machine's own folders.
SOURCE_ENV = ("HF_HUB_CACHE", "OFFGRID_LMSTUDIO_DIRS", "OLLAMA_MODELS", "LLAMA_CACHE")


@pytest.fixture(scope="session", autouse=True)
def no_machine_sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Point every model source at an empty folder, so no test sees (or depends on) the HF
    cache, LM Studio, Ollama or llama.cpp models of the machine it runs on."""
    empty = tmp_path_factory.mktemp("no-sources")
    with pytest.MonkeyPatch.context() as patch:
        for name in SOURCE_ENV:
            patch.setenv(name, str(empty / name.lower()))
        patch.delenv("OFFGRID_MODEL_DIRS", raising=False)
        patch.delenv("OFFGRID_SOURCES", raising=False)
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight llama GGUF (F32), generated once per session."""
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama-F32.gguf")


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A Hub folder with repos in the styles the real Hub has.

    Sizes are chosen so that size filters have exact answers: for every repo the Q4_K_M file
    is smaller than the Q8_0 file, and only ``offgrid-test/tiny-llama-GGUF`` holds a real model.
    """
    root = tmp_path_factory.mktemp("hub")
    _repo(
        root,
        "TheBloke/Llama-2-7B-Chat-GGUF",
        {"downloads": 2_500_000, "likes": 342, "lastModified": _ago(400), "tags": ["llama"]},
        {
            "llama-2-7b-chat.Q4_K_M.gguf": 3800,
            "llama-2-7b-chat.Q5_K_M.gguf": 4600,
            "llama-2-7b-chat.Q8_0.gguf": 7200,
            "llama-2-7b-chat.Q2_K.gguf": 2800,
            "README.md": 100,
        },
    )
    _repo(
        root,
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        {"downloads": 900_000, "likes": 120, "lastModified": _ago(30), "tags": ["conversational"]},
        {
            "Qwen2.5-7B-Instruct-Q4_K_M.gguf": 4000,
            "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00001-of-00002.gguf": 4000,
            "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00002-of-00002.gguf": 3500,
            "Qwen2.5-7B-Instruct.imatrix": 50,
            "mmproj-Qwen2.5-7B-Instruct-f16.gguf": 900,
        },
    )
    _repo(
        root,
        "meta-llama/Llama-3.2-1B-Instruct-GGUF",
        {"downloads": 5_000_000, "likes": 900, "gated": "manual", "lastModified": _ago(10)},
        {"Llama-3.2-1B-Instruct-Q4_K_M.gguf": 1500, "Llama-3.2-1B-Instruct-Q8_0.gguf": 2500},
    )
    _repo(
        root,
        "unsloth/Qwen3-30B-A3B-GGUF",
        {"downloads": 300_000, "likes": 80, "lastModified": _ago(2)},
        {"Qwen3-30B-A3B-UD-Q4_K_XL.gguf": 17000, "Qwen3-30B-A3B-Q2_K.gguf": 11000},
    )
    _repo(
        root,
        "someone/plain-safetensors",
        {"downloads": 9_000_000, "likes": 5, "tags": ["transformers"]},
        {"model.safetensors": 2000, "config.json": 20},
    )
    _repo(
        root,
        "offgrid-test/tiny-llama-GGUF",
        {"downloads": 12, "likes": 1, "lastModified": _ago(1), "tags": ["conversational"]},
        {"tiny-llama-F32.gguf": tiny_model},
    )
    return root


@pytest.fixture(scope="session")
def mirror(hub_root: Path) -> Iterator[MirrorServer]:
    """Our Hub mirror over ``hub_root``, on an ephemeral loopback port."""
    with MirrorServer(hub_root, tokens=[TOKEN]) as server:
        yield server


@pytest.fixture
def hub(mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> MirrorServer:
    """Point offgrid_nb (and huggingface_hub) at the mirror; isolate tokens and folders."""
    monkeypatch.setenv("HF_ENDPOINT", mirror.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("OFFGRID_CACHE_DIR", str(tmp_path / "cache"))
    clear_cache()
    mirror.requests.clear()
    mirror.log.clear()
    return mirror


@pytest.fixture
def hub_token() -> str:
    """The token ``mirror`` accepts for gated repos (tests should not import conftest)."""
    return TOKEN


# --- GGUF headers and memory fit (tests/test_gguf_info.py, tests/test_fit.py) -----------------

BIG_VOCAB = 150_000  # extra tokens: a ~4 MB header, as 5 GB-class models have
BIG_FILE_SIZE = 1 << 30


@pytest.fixture(scope="session")
def gguf_hub_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A Hub folder of real GGUF files, apart from ``hub_root`` so its search results stay put.

    - ``offgrid-test/fit-GGUF``: the tiny model as F32 and quantized to Q2_K, Q4_K_M, Q8_0;
    - ``offgrid-test/split-GGUF``: the tiny model as the first shard of two, the second 4 MB;
    - ``offgrid-test/big-vocab-GGUF``: a 150k-token vocabulary padded to 1 GiB with a hole (a
      sparse file: no disk used); repo.json gives its sha256 so the mirror does not hash it;
    - ``offgrid-test/broken-GGUF``: a file that is not a GGUF, and the tiny model truncated.
    """
    from offgrid_nb.synthetic import TinyModelSpec, quantize

    root = tmp_path_factory.mktemp("gguf_hub")
    fit = root / "offgrid-test" / "fit-GGUF"
    _repo(root, "offgrid-test/fit-GGUF", {"downloads": 30}, {"fit-F32.gguf": tiny_model})
    for quant in ("Q2_K", "Q4_K_M", "Q8_0"):
        quantize(tiny_model, fit / f"fit-{quant}.gguf", quant)
    _repo(
        root,
        "offgrid-test/split-GGUF",
        {"downloads": 20},
        {"split-F32-00001-of-00002.gguf": tiny_model, "split-F32-00002-of-00002.gguf": 4_000_000},
    )
    big = root / "offgrid-test" / "big-vocab-GGUF" / "big-vocab-F32.gguf"
    spec = TinyModelSpec(
        n_layers=1, n_embd=32, n_ff=64, n_head=2, n_head_kv=1, extra_vocab=BIG_VOCAB, name="big"
    )
    write_tiny_model(big, spec)
    os.truncate(big, BIG_FILE_SIZE)
    sha256 = {big.name: "b" * 64}  # any value: the mirror advertises it instead of hashing 1 GiB
    (big.parent / "repo.json").write_text(json.dumps({"downloads": 10, "sha256": sha256}))
    broken = {"broken-Q4_K_M.gguf": 300_000, "broken-Q8_0.gguf": tiny_model}
    _repo(root, "offgrid-test/broken-GGUF", {"downloads": 5}, broken)
    truncated = root / "offgrid-test" / "broken-GGUF" / "broken-Q8_0.gguf"
    os.truncate(truncated, truncated.stat().st_size - 1000)
    return root


@pytest.fixture(scope="session")
def gguf_mirror(gguf_hub_root: Path) -> Iterator[MirrorServer]:
    """Our Hub mirror over ``gguf_hub_root``."""
    with MirrorServer(gguf_hub_root) as server:
        yield server


@pytest.fixture
def gguf_hub(
    hub: MirrorServer, gguf_mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch
) -> MirrorServer:
    """Like ``hub`` (isolated folders, caches and tokens), pointed at ``gguf_mirror``."""
    return _point_at(gguf_mirror, monkeypatch)


def _point_at(mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch) -> MirrorServer:
    """Send this test's Hub calls to ``mirror``, its request list emptied."""
    monkeypatch.setenv("HF_ENDPOINT", mirror.url)
    mirror.requests.clear()
    return mirror


@pytest.fixture(scope="session")
def unknown_arch_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid GGUF of an architecture nobody knows: one 4x32 tensor, no llama-style keys."""
    import gguf
    import numpy as np

    path = tmp_path_factory.mktemp("models") / "mystery.gguf"
    writer = gguf.GGUFWriter(str(path), "mystery-arch")
    writer.add_uint32("mystery-arch.widgets", 7)
    writer.add_tensor("w", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- other tools' model folders (tests/test_sources.py, tests/test_server.py) -------------------


class SourceLayouts:
    """Builds the folders other tools keep models in, as those tools lay them out, under
    ``root``; the settings point at them (the environment variables each tool reads)."""

    def __init__(self, root: Path, endpoint: str) -> None:
        self.root, self.endpoint = root, endpoint
        self.hf_cache = root / "hf-cache"
        self.lmstudio = root / "lmstudio" / "models"
        self.ollama = root / "ollama" / "models"
        self.llama_cache = root / "llama.cpp"
        self.extra = root / "extra"

    def hub_download(self, repo_id: str, filename: str) -> Path:
        """``hf_hub_download`` from the mirror into the HF cache: the real cache layout."""
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(
            repo_id, filename, cache_dir=self.hf_cache, endpoint=self.endpoint, token=False
        )
        return Path(path)

    def lmstudio_model(self, org: str, repo: str, filename: str, source: Path) -> Path:
        """A file in LM Studio's ``<org>/<repo>/`` folders."""
        target = self.lmstudio / org / repo / filename
        _link_or_copy(source, target)
        return target

    def llama_cpp_model(self, repo_id: str, filename: str, source: Path) -> Path:
        """A file as ``llama-cli -hf`` caches it: flat name plus its ``manifest=`` JSON."""
        owner, repo = repo_id.split("/")
        target = self.llama_cache / f"{owner}_{repo}_{filename}"
        _link_or_copy(source, target)
        manifest = self.llama_cache / f"manifest={owner}={repo}=latest.json"
        manifest.write_text(json.dumps({"ggufFile": {"rfilename": filename, "size": 1}}))
        return target

    def ollama_blob(self, content: bytes) -> str:
        """Store ``content`` as Ollama does (``blobs/sha256-<hex>``); returns its digest."""
        digest = hashlib.sha256(content).hexdigest()
        blob = self.ollama / "blobs" / f"sha256-{digest}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        return f"sha256:{digest}"

    def ollama_model(
        self,
        name: str,
        content: bytes,
        *,
        file_type: str = "Q8_0",
        host: str = "registry.ollama.ai",
    ) -> Path:
        """An Ollama model ``[namespace/]model:tag``: model and config blobs, and the manifest
        (schema 2, as ``ollama pull`` writes it) naming them."""
        path, tag = name.rsplit(":", 1)
        namespace, model = path.split("/") if "/" in path else ("library", path)
        config = json.dumps({"model_format": "gguf", "file_type": file_type, "model_type": "1M"})
        layers = [
            (self.ollama_blob(content), "application/vnd.ollama.image.model", len(content)),
            (self.ollama_blob(b'{"stop": ["</s>"]}'), "application/vnd.ollama.image.params", 18),
        ]
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": self.ollama_blob(config.encode()),
                "size": len(config),
            },
            "layers": [{"mediaType": t, "digest": d, "size": n} for d, t, n in layers],
        }
        target = self.ollama / "manifests" / host / namespace / model / tag
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(manifest))
        return target


@pytest.fixture
def sources(
    gguf_hub: MirrorServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> SourceLayouts:
    """Every other source on, each at an empty folder of its own (built by the test), and
    ``gguf_hub`` as the Hub."""
    layouts = SourceLayouts(tmp_path / "tools", gguf_hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(layouts.hf_cache))
    monkeypatch.setenv("OFFGRID_LMSTUDIO_DIRS", str(layouts.lmstudio))
    monkeypatch.setenv("OLLAMA_MODELS", str(layouts.ollama))
    monkeypatch.setenv("LLAMA_CACHE", str(layouts.llama_cache))
    monkeypatch.setenv("OFFGRID_MODEL_DIRS", str(layouts.extra))
    return layouts


# --- the notebooks' Hub (tests/test_notebooks.py, tests/test_browser.py) ------------------------

NOTEBOOK_REPO = "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
# file name part -> llama.cpp type, as in the real repo
NOTEBOOK_QUANTS = {
    "q2_k": "Q2_K", "q3_k_m": "Q3_K_M", "q4_0": "Q4_0", "q4_k_m": "Q4_K_M", "q5_0": "Q5_0",
    "q5_k_m": "Q5_K_M", "q6_k": "Q6_K", "q8_0": "Q8_0", "fp16": "F16",
}  # fmt: skip


@pytest.fixture(scope="session")
def notebook_hub_root(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A Hub folder with the repos and file names ``notebooks/`` use, holding generated models.

    The notebooks name real repos; served by our mirror, this folder lets them run offline,
    unchanged, in seconds (each file is the tiny model quantized, a few MB).
    """
    from offgrid_nb.synthetic import quantize

    made = tmp_path_factory.mktemp("notebook_models")
    files = {q: quantize(tiny_model, made / f"{q}.gguf", t) for q, t in NOTEBOOK_QUANTS.items()}
    root = tmp_path_factory.mktemp("notebook_hub")
    _repo(
        root,
        NOTEBOOK_REPO,
        {"downloads": 250_000, "likes": 140, "lastModified": _ago(20), "tags": ["conversational"]},
        {f"qwen2.5-0.5b-instruct-{q}.gguf": path for q, path in files.items()},
    )
    _repo(
        root,
        "bartowski/Qwen2.5-0.5B-Instruct-GGUF",
        {"downloads": 40_000, "likes": 12, "lastModified": _ago(90), "tags": ["conversational"]},
        {f"Qwen2.5-0.5B-Instruct-{q.upper()}.gguf": files[q] for q in ("q4_k_m", "q6_k", "q8_0")},
    )
    return root


# pytest-jupyter's fixtures (jp_fetch, jp_serverapp...) for the server's tests.
pytest_plugins = ["pytest_jupyter.jupyter_server"]
SERVER_MODEL_FILE = "tiny-llama-F32.gguf"


@pytest.fixture
def jp_server_config():
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"offgrid_nb": True}},
            "OffgridAPI": {
                "max_queued_generations": 0,
                "parallel": 2,  # two generations at once, none waiting
                "max_download_jobs": 1,
                "default_threads": 1,  # benchmarks leave a core to the IOLoop
            },
        }
    )


@pytest.fixture
def library(hub, tiny_model, tmp_path):
    """The models folder ``hub`` set (OFFGRID_MODELS_DIR), holding the tiny model."""
    folder = tmp_path / "models" / "local"
    folder.mkdir(parents=True)
    shutil.copyfile(tiny_model, folder / SERVER_MODEL_FILE)
    yield folder.parent
    unload_model()


@pytest.fixture
def jupyter_v1(jp_serverapp, http_server, jp_http_port, jp_base_url):
    """The URL of our endpoints in the running Jupyter server, for clients other than jp_fetch."""
    return f"http://127.0.0.1:{jp_http_port}{jp_base_url}offgrid/v1"


# --- JupyterLab on loopback (tests/test_notebooks.py, tests/test_browser.py) ---------------------


class JupyterLab:
    """A ``jupyter lab`` subprocess on loopback with a token, serving ``root``."""

    def __init__(self, root: Path, token: str, port: int, log: Path) -> None:
        self.root, self.token, self.port, self.log = root, token, port, log
        self.url = f"http://127.0.0.1:{port}/"

    def page(self, path: str) -> str:
        """The URL of a page (``lab/tree/x.ipynb``) that logs in with the token."""
        return f"{self.url}{path}?token={self.token}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_lab(
    hub: MirrorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[JupyterLab]:
    """JupyterLab (with our server extension) whose kernels use ``hub``; stopped afterwards.

    Config, runtime, settings and workspace folders are fresh, so nothing of the user's leaks
    in; kernels started by the test itself share the runtime folder and find this server.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    for name in ("config", "runtime", "settings", "workspaces"):
        (tmp_path / name).mkdir()
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "settings"))
    monkeypatch.setenv("JUPYTERLAB_WORKSPACES_DIR", str(tmp_path / "workspaces"))
    news = tmp_path / "settings/@jupyterlab/apputils-extension/notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    lab = JupyterLab(tmp_path / "lab", "offgrid-test-token", _free_port(), tmp_path / "lab.log")
    lab.root.mkdir()
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={lab.port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={lab.token}", f"--ServerApp.root_dir={lab.root}",
        "--ServerApp.allow_root=True",  # CI runs as root; the server only listens on loopback
    ]  # fmt: skip
    with lab.log.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{lab.url}api/status?token={lab.token}", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{lab.log.read_text()}")
                time.sleep(0.2)
        yield lab
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- The real model (tests marked `real`): google/gemma-3-270m Q4_K_M from a registry package ---

REAL_CACHE = Path(platformdirs.user_cache_dir("offgrid_nb"))  # where `offgrid demo` keeps it
GEMMA_IT_TEMPLATE = Path(__file__).parent / "data" / "gemma-3-it.jinja"
TEMPLATED_REPO = "offgrid-test/gemma-3-270m-it-GGUF"
TEMPLATED_FILE = "gemma-3-270m-it-q4_k_m.gguf"


@pytest.fixture(scope="session")
def real_model() -> Path:
    """The real base model (no chat template), assembled once per machine and kept there.

    The folder is named by its sha256, and the file is never rewritten when present.
    """
    path = bundled_model.bundled_model_path(REAL_CACHE)
    if path is None:
        pytest.skip(f"the real model's package is not installed ({bundled_model.INSTALL_HINT})")
    return path


@pytest.fixture(scope="session")
def templated_model(real_model: Path) -> Path:
    """The real model with gemma-3-it's own Jinja template in its metadata, made once per
    machine: it stands for an instruct model that carries its template."""
    template = GEMMA_IT_TEMPLATE.read_text(encoding="utf-8")
    key = hashlib.sha256(template.encode()).hexdigest()[:12]
    target = real_model.parent / key / TEMPLATED_FILE
    if not target.is_file():
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        with_chat_template(real_model, partial, template)
        os.replace(partial, target)
    return target


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@pytest.fixture(scope="session")
def real_hub_root(
    tmp_path_factory: pytest.TempPathFactory, real_model: Path, templated_model: Path
) -> Path:
    """A Hub folder serving the real model under its real repo id (and the templated copy)."""
    root = tmp_path_factory.mktemp("real-hub")
    meta = {"downloads": 4321, "likes": 7, "lastModified": _ago(20), "tags": ["gguf"]}
    for repo, name, source, sha in (
        (bundled_model.REPO_ID, bundled_model.FILENAME, real_model, bundled_model.SHA256),
        (TEMPLATED_REPO, TEMPLATED_FILE, templated_model, None),
    ):
        _link_or_copy(source, root / repo / name)
        digest = sha or hash_file(source).hexdigest()
        (root / repo / "repo.json").write_text(json.dumps({**meta, "sha256": {name: digest}}))
    return root


@pytest.fixture(scope="session")
def real_mirror(real_hub_root: Path) -> Iterator[MirrorServer]:
    """Our Hub mirror over ``real_hub_root``."""
    with MirrorServer(real_hub_root) as server:
        yield server


@pytest.fixture
def real_hub(
    hub: MirrorServer, real_mirror: MirrorServer, monkeypatch: pytest.MonkeyPatch
) -> MirrorServer:
    """Like ``hub`` (isolated folders, caches and tokens), pointed at ``real_mirror``."""
    return _point_at(real_mirror, monkeypatch)


@pytest.fixture
def real_library(hub, real_model, templated_model, tmp_path):
    """The models folder ``hub`` set, holding the real model and its templated copy."""
    folder = tmp_path / "models" / "local"
    folder.mkdir(parents=True)
    for model in (real_model, templated_model):
        try:
            os.link(model, folder / model.name)
        except OSError:
            shutil.copyfile(model, folder / model.name)
    yield folder.parent
    unload_model()
