"""The mirror, through the real ``huggingface_hub`` client: shapes, downloads, errors and safety."""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx2
import pytest
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from offgrid_nb import mirror as mirror_module
from offgrid_nb.errors import InvalidArgumentError
from offgrid_nb.mirror import MirrorServer, make_app, serve

TOKEN = "let-me-in"
TAMPERED = "deadbeef" * 8
SECRET = b"TOP-SECRET, outside the mirror's root"
TINY_GGUFS = ["tiny.Q4_K_M.gguf", "tiny.Q8_0.gguf"]
# repo id -> (repo.json or None, {path: size})
REPOS: dict[str, tuple[dict | None, dict[str, int]]] = {
    "acme/tiny-GGUF": (
        {
            "downloads": 50,
            "likes": 5,
            "createdAt": "2024-01-02T03:04:05Z",
            "lastModified": "2024-06-01T12:00:00.250Z",
            "tags": ["llama"],
            "pipeline_tag": "text-generation",
            "gguf": {"architecture": "llama", "context_length": 2048},
        },
        {"tiny.Q4_K_M.gguf": 3000, "tiny.Q8_0.gguf": 5000, "README.md": 40},
    ),
    "acme/split-GGUF": (
        {
            "downloads": 500,
            "likes": 1,
            "createdAt": "2023-05-01T00:00:00+00:00",
            "sha256": {"big/x-00002-of-00002.gguf": TAMPERED},
        },
        {"big/x-00001-of-00002.gguf": 2000, "big/x-00002-of-00002.gguf": 1500, "README.md": 30},
    ),
    "other/gated-GGUF": (
        {"downloads": 10, "likes": 50, "createdAt": "2024-03-01T00:00:00Z", "gated": "manual"},
        {"g.Q4_0.gguf": 1200},
    ),
    "other/notes": (None, {"notes.txt": 10}),
}


@pytest.fixture(autouse=True)
def _client_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub reads its env vars once, in constants.py at import: patch both."""
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_PROGRESS_BARS", True)
    monkeypatch.setattr(mirror_module, "HASH_CACHE_DIR", tmp_path / "hash-cache")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A Hub folder (``tmp_path/hub``) with a secret file next to it, outside of it."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    hub = tmp_path / "hub"
    for seed, (repo_id, (meta, files)) in enumerate(REPOS.items()):
        folder = hub / repo_id
        for name, size in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(random.Random(f"{seed}{name}").randbytes(size))
        if meta is not None:
            (folder / "repo.json").write_text(json.dumps(meta))
    (hub / "acme/tiny-GGUF/.hidden.gguf").write_bytes(b"hidden")
    (hub / "acme/tiny-GGUF/.git").mkdir()
    (hub / "acme/tiny-GGUF/.git/config").write_bytes(b"hidden too")
    return hub


@pytest.fixture
def server(root: Path) -> Iterator[MirrorServer]:
    with MirrorServer(root, tokens=[TOKEN]) as hub:
        yield hub


@pytest.fixture
def api(server: MirrorServer) -> HfApi:
    return HfApi(endpoint=server.url, token=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _resolve_url(server: MirrorServer, repo_id: str, path: str, rev: str = "main") -> str:
    return f"{server.url}/{repo_id}/resolve/{rev}/{path}"


def test_list_models_search_author_filter_gated_sort_limit(api, server):
    def ids(**kwargs) -> list[str]:
        return [model.id for model in api.list_models(**kwargs)]

    assert ids(search="gguf", sort="downloads") == [
        "acme/split-GGUF",
        "acme/tiny-GGUF",
        "other/gated-GGUF",
    ]
    assert ids(search="TINY") == ["acme/tiny-GGUF"]
    assert ids(author="acme", sort="likes") == ["acme/tiny-GGUF", "acme/split-GGUF"]
    # "gguf" is a tag of every repo holding a .gguf file, whatever repo.json says
    assert ids(filter="gguf", sort="likes") == [
        "other/gated-GGUF",
        "acme/tiny-GGUF",
        "acme/split-GGUF",
    ]
    assert ids(filter=["gguf", "llama"]) == ["acme/tiny-GGUF"]
    assert ids(gated=True) == ["other/gated-GGUF"]
    assert "other/gated-GGUF" not in ids(gated=False)
    # other/notes has no repo.json: its creation date is its file's mtime, i.e. now
    assert ids(sort="created_at") == [
        "other/notes",
        "other/gated-GGUF",
        "acme/tiny-GGUF",
        "acme/split-GGUF",
    ]
    assert ids(sort="downloads", limit=2) == ["acme/split-GGUF", "acme/tiny-GGUF"]
    bad_sort = httpx2.get(f"{server.url}/api/models", params={"sort": "size"})
    assert bad_sort.status_code == 400
    assert "Invalid sort" in bad_sort.json()["error"]


def test_list_models_fields_come_back_typed(api):
    fields = ["downloads", "likes", "createdAt", "lastModified", "gated", "tags"]
    [model] = api.list_models(search="tiny", expand=fields)
    assert (model.downloads, model.likes, model.gated) == (50, 5, False)
    assert model.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert model.last_modified == datetime(2024, 6, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
    assert model.tags == ["llama", "gguf", "text-generation"]
    assert (model.pipeline_tag, model.sha, model.siblings) == (None, None, None)  # not expanded
    [gated] = api.list_models(search="gated", expand=["gated"])
    assert (gated.gated, gated.downloads) == ("manual", None)

    [default] = api.list_models(search="tiny")  # the Hub's default fields
    assert (default.downloads, default.likes, default.pipeline_tag) == (50, 5, "text-generation")
    assert (default.last_modified, default.sha) == (None, None)

    [full] = api.list_models(search="tiny", full=True)
    assert re.fullmatch(r"[0-9a-f]{40}", full.sha)
    assert [s.rfilename for s in full.siblings] == ["README.md", *TINY_GGUFS]  # no hidden files


def test_pages_follow_the_link_header(api, server, monkeypatch):
    monkeypatch.setattr(mirror_module, "PAGE_SIZE", 2)
    assert len(list(api.list_models())) == 4
    assert server.requests["list"] == 2
    assert len(list(api.list_models(limit=3))) == 3
    assert server.requests["list"] == 4
    link = httpx2.get(f"{server.url}/api/models", params={"limit": 1}).headers["Link"]
    assert re.fullmatch(r'<http://[^>]+/api/models\?limit=1&cursor=1>; rel="next"', link)

    tree = [entry.path for entry in api.list_repo_tree("acme/split-GGUF", recursive=True)]
    assert (len(tree), server.requests["tree"]) == (4, 2)


def test_model_info_with_files_metadata(api, root):
    info = api.model_info("acme/tiny-GGUF", files_metadata=True)
    siblings = {s.rfilename: s for s in info.siblings}
    assert set(siblings) == {"README.md", *TINY_GGUFS}  # no repo.json
    for name, sibling in siblings.items():
        path = root / "acme/tiny-GGUF" / name
        assert sibling.size == sibling.lfs.size == path.stat().st_size
        assert sibling.lfs.sha256 == _sha256(path)
        assert re.fullmatch(r"[0-9a-f]{40}", sibling.blob_id)
    assert re.fullmatch(r"[0-9a-f]{40}", info.sha)
    assert (info.author, info.private, info.gated, info.disabled) == ("acme", False, False, False)
    assert info.gguf == {"architecture": "llama", "context_length": 2048}
    assert info.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)

    assert api.model_info("acme/tiny-GGUF", revision=info.sha).sha == info.sha
    only = api.model_info("acme/tiny-GGUF", expand=["downloads"])
    assert (only.downloads, only.sha, only.siblings) == (50, None, None)


def test_list_repo_tree(api, root):
    tree = list(api.list_repo_tree("acme/split-GGUF", recursive=True))
    assert [(type(e).__name__, e.path) for e in tree] == [
        ("RepoFile", "README.md"),
        ("RepoFolder", "big"),
        ("RepoFile", "big/x-00001-of-00002.gguf"),
        ("RepoFile", "big/x-00002-of-00002.gguf"),
    ]
    shard = tree[2]
    assert shard.size == 2000
    assert shard.lfs.sha256 == _sha256(root / "acme/split-GGUF/big/x-00001-of-00002.gguf")
    top = [e.path for e in api.list_repo_tree("acme/split-GGUF")]
    assert top == ["README.md", "big"]
    inside = [e.path for e in api.list_repo_tree("acme/split-GGUF", path_in_repo="big")]
    assert inside == ["big/x-00001-of-00002.gguf", "big/x-00002-of-00002.gguf"]
    commit = api.model_info("acme/split-GGUF").sha
    expanded = list(api.list_repo_tree("acme/split-GGUF", expand=True))
    assert {e.last_commit.oid for e in expanded} == {commit}


def test_hf_hub_download(server, root, tmp_path):
    for repo_id, name in [
        ("acme/tiny-GGUF", "tiny.Q4_K_M.gguf"),
        ("acme/split-GGUF", "big/x-00001-of-00002.gguf"),
    ]:
        path = hf_hub_download(
            repo_id, name, endpoint=server.url, cache_dir=tmp_path / "hf", token=False
        )
        assert Path(path).read_bytes() == (root / repo_id / name).read_bytes()
        # the client stores the blob under the advertised ETag
        assert Path(path).resolve().name == _sha256(root / repo_id / name)


def test_head_headers(api, server, root):
    sha = _sha256(root / "acme/tiny-GGUF/tiny.Q8_0.gguf")
    commit = api.model_info("acme/tiny-GGUF").sha
    response = httpx2.head(_resolve_url(server, "acme/tiny-GGUF", "tiny.Q8_0.gguf"))
    headers = response.headers
    assert response.status_code == 200
    assert headers["ETag"] == headers["X-Linked-Etag"] == f'"{sha}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == "5000"
    assert headers["X-Repo-Commit"] == commit
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Content-Type"] == "application/octet-stream"
    assert not [name for name in headers if name.lower().startswith("x-xet")]

    url = hf_hub_url("acme/tiny-GGUF", "tiny.Q8_0.gguf", endpoint=server.url)
    metadata = get_hf_file_metadata(url, token=False)
    assert (metadata.etag, metadata.size, metadata.commit_hash) == (sha, 5000, commit)


def test_range_requests(server, root):
    data = (root / "acme/tiny-GGUF/tiny.Q4_K_M.gguf").read_bytes()
    url = _resolve_url(server, "acme/tiny-GGUF", "tiny.Q4_K_M.gguf")
    for header, (start, end) in {
        "bytes=10-19": (10, 20),
        "bytes=2990-": (2990, 3000),
        "bytes=-5": (2995, 3000),
        "bytes=100-99999": (100, 3000),
    }.items():
        response = httpx2.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == data[start:end]
        assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/3000"
        assert response.headers["X-Linked-Size"] == "3000"
    for header in ("bytes=3000-", "bytes=5000-6000", "bytes=-0"):
        response = httpx2.get(url, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["Content-Range"] == "bytes */3000"
    multi = httpx2.get(url, headers={"Range": "bytes=0-1,5-6"})  # ignored, as RFC 9110 allows
    assert (multi.status_code, multi.content) == (200, data)


def test_errors_map_to_hub_exceptions(api, server, tmp_path):
    download = partial(hf_hub_download, endpoint=server.url, cache_dir=tmp_path, token=False)
    with pytest.raises(RepositoryNotFoundError) as missing_repo:
        api.model_info("acme/missing")
    assert type(missing_repo.value) is RepositoryNotFoundError  # not its GatedRepoError subclass
    with pytest.raises(RepositoryNotFoundError):
        download("acme/missing", "x.gguf")
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/tiny-GGUF", revision="v9")
    with pytest.raises(RevisionNotFoundError):
        download("acme/tiny-GGUF", "tiny.Q8_0.gguf", revision="v9")
    with pytest.raises(RemoteEntryNotFoundError):
        download("acme/tiny-GGUF", "missing.gguf")
    with pytest.raises(RemoteEntryNotFoundError):
        list(api.list_repo_tree("acme/tiny-GGUF", path_in_repo="missing"))

    response = httpx2.get(f"{server.url}/api/models/acme/missing")
    assert (response.status_code, response.headers["X-Error-Code"]) == (404, "RepoNotFound")
    assert response.json() == {"error": "Repository not found"}


def test_gated_repo_files_need_a_token(api, server, root, tmp_path):
    assert api.model_info("other/gated-GGUF").gated == "manual"  # metadata stays public
    assert [e.path for e in api.list_repo_tree("other/gated-GGUF")] == ["g.Q4_0.gguf"]
    download = partial(
        hf_hub_download, "other/gated-GGUF", "g.Q4_0.gguf", endpoint=server.url, cache_dir=tmp_path
    )
    with pytest.raises(GatedRepoError, match="Access to model other/gated-GGUF is restricted"):
        download(token=False)
    with pytest.raises(GatedRepoError) as wrong_token:
        download(token="not-the-token")
    assert wrong_token.value.response.status_code == 403
    path = download(token=TOKEN)
    assert Path(path).read_bytes() == (root / "other/gated-GGUF/g.Q4_0.gguf").read_bytes()


def test_paths_never_leave_the_root(api, server, root, tmp_path):
    secret = tmp_path / "secret.txt"
    repo = root / "acme/tiny-GGUF"
    (repo / "leak.gguf").symlink_to(secret)
    (repo / "escape").symlink_to(tmp_path, target_is_directory=True)
    (repo / "alias.gguf").symlink_to(root / "other/notes/notes.txt")  # inside the root: fine
    attempts = [
        "/acme/tiny-GGUF/resolve/main/../../../secret.txt",
        "/acme/tiny-GGUF/resolve/main/..%2f..%2f..%2fsecret.txt",
        "/acme/tiny-GGUF/resolve/main/%2e%2e%2F%2e%2e%2F%2e%2e%2Fsecret.txt",
        "/acme/tiny-GGUF/resolve/main/..%5c..%5c..%5csecret.txt",
        "/acme/tiny-GGUF/resolve/main/" + quote(str(secret), safe=""),
        "/acme/tiny-GGUF/resolve/main/" + str(secret),
        "/acme/tiny-GGUF/resolve/main/leak.gguf",
        "/acme/tiny-GGUF/resolve/main/escape/secret.txt",
        "/%2e%2e/hub/resolve/main/secret.txt",
        "/acme/..%2f..%2f/resolve/main/secret.txt",
        "/api/models/acme/tiny-GGUF/tree/main/..%2f..%2f..",
        "/api/models/acme/tiny-GGUF/tree/main/escape",
    ]
    address = urlsplit(server.url)
    for target in attempts:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=5)
        connection.request("GET", target)  # sent as is: no client-side normalisation
        response = connection.getresponse()
        body = response.read()
        connection.close()
        assert 400 <= response.status < 500, target
        assert b"TOP-SECRET" not in body, target

    listed = {s.rfilename for s in api.model_info("acme/tiny-GGUF").siblings}
    assert "alias.gguf" in listed
    assert not listed & {"leak.gguf", "escape/secret.txt"}
    alias = httpx2.get(_resolve_url(server, "acme/tiny-GGUF", "alias.gguf"))
    assert alias.content == (root / "other/notes/notes.txt").read_bytes()


def test_sha256_from_repo_json_is_advertised(api, server, root, tmp_path):
    name = "big/x-00002-of-00002.gguf"
    assert _sha256(root / "acme/split-GGUF" / name) != TAMPERED
    info = api.model_info("acme/split-GGUF", files_metadata=True)
    assert {s.rfilename: s.lfs.sha256 for s in info.siblings}[name] == TAMPERED
    [tree_entry] = [e for e in api.list_repo_tree("acme/split-GGUF", "big") if e.path == name]
    assert tree_entry.lfs.sha256 == TAMPERED
    head = httpx2.head(_resolve_url(server, "acme/split-GGUF", name))
    assert head.headers["ETag"] == f'"{TAMPERED}"'
    path = hf_hub_download(
        "acme/split-GGUF", name, endpoint=server.url, cache_dir=tmp_path / "hf", token=False
    )
    assert Path(path).resolve().name == TAMPERED  # huggingface_hub does not check: we must


def test_changed_files_get_a_new_commit_and_checksum(api, root):
    before = api.model_info("acme/tiny-GGUF", files_metadata=True)
    (root / "acme/tiny-GGUF/tiny.Q4_K_M.gguf").write_bytes(b"new weights")
    after = api.model_info("acme/tiny-GGUF", files_metadata=True)
    assert after.sha != before.sha
    new_sha = {s.rfilename: s.lfs.sha256 for s in after.siblings}["tiny.Q4_K_M.gguf"]
    assert new_sha == hashlib.sha256(b"new weights").hexdigest()
    with pytest.raises(RevisionNotFoundError):
        api.model_info("acme/tiny-GGUF", revision=before.sha)


def test_latency_delays_every_request_without_blocking(root):
    with MirrorServer(root, latency_ms=200) as slow:
        start = time.perf_counter()
        assert httpx2.get(f"{slow.url}/api/models").status_code == 200
        assert time.perf_counter() - start >= 0.2
        start = time.perf_counter()
        with ThreadPoolExecutor(5) as pool:
            responses = list(pool.map(httpx2.get, [f"{slow.url}/api/models"] * 5))
        assert [r.status_code for r in responses] == [200] * 5
        assert time.perf_counter() - start < 0.8  # 1 s if requests waited in turn


def test_a_throttled_mirror_streams_files_whole_at_its_rate(root):
    path = root / "acme/tiny-GGUF/tiny.Q8_0.gguf"
    rate = path.stat().st_size / 0.5  # the file in half a second
    with MirrorServer(root, bytes_per_second=rate) as slow:
        start = time.perf_counter()
        response = httpx2.get(_resolve_url(slow, "acme/tiny-GGUF", "tiny.Q8_0.gguf"))
        assert time.perf_counter() - start >= 0.5  # sleeps before each write: a lower bound
    assert response.content == path.read_bytes()


def test_requests_are_counted_by_kind(api, server):
    server.requests.clear()
    list(api.list_models())
    api.model_info("acme/tiny-GGUF")
    list(api.list_repo_tree("acme/tiny-GGUF"))
    httpx2.head(_resolve_url(server, "acme/tiny-GGUF", "README.md"))
    httpx2.get(_resolve_url(server, "acme/tiny-GGUF", "README.md"))
    httpx2.get(f"{server.url}/no/such/route/here")
    assert server.requests == Counter(list=1, info=1, tree=1, resolve=2, other=1)


def test_read_only(server):
    url = _resolve_url(server, "acme/tiny-GGUF", "README.md")
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert httpx2.request(method, url).status_code == 405, method
    assert httpx2.post(f"{server.url}/api/models").status_code == 405
    unknown = httpx2.get(f"{server.url}/api/spaces")
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Not Found"})


def test_big_files_checksums_are_kept_on_disk(root, tmp_path, monkeypatch):
    monkeypatch.setattr(mirror_module, "HASH_CACHE_MIN_SIZE", 4000)  # Q8_0 (5000 B) is "big"
    cache_file = tmp_path / "hash-cache/sha256.json"
    with MirrorServer(root) as hub:
        for name in ("tiny.Q4_K_M.gguf", "tiny.Q8_0.gguf"):
            assert httpx2.head(_resolve_url(hub, "acme/tiny-GGUF", name)).status_code == 200
    cache = json.loads(cache_file.read_text())
    assert list(cache.values()) == [_sha256(root / "acme/tiny-GGUF/tiny.Q8_0.gguf")]
    # a new mirror takes the stored value (keyed by path, size and mtime) instead of hashing
    cache_file.write_text(json.dumps({key: "0" * 64 for key in cache}))
    with MirrorServer(root) as hub:
        head = httpx2.head(_resolve_url(hub, "acme/tiny-GGUF", "tiny.Q8_0.gguf"))
    assert head.headers["ETag"] == f'"{"0" * 64}"'


def test_bad_arguments_are_refused(root, tmp_path):
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        serve(tmp_path / "missing")
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        MirrorServer(root / "acme/tiny-GGUF/README.md")
    with pytest.raises(InvalidArgumentError, match="latency_ms"):
        make_app(root, latency_ms=-1)
    with pytest.raises(InvalidArgumentError, match="bytes_per_second"):
        make_app(root, bytes_per_second=-1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InvalidArgumentError, match="cannot listen"):
            serve(root, port=taken.getsockname()[1])


def test_binds_loopback_by_default(root):
    with MirrorServer(root) as hub:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", hub.url)
        assert int(hub.url.rsplit(":", 1)[1]) > 0
