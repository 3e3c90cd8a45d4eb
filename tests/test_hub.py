"""Search, variants, scoring and best variant, through the real huggingface_hub and our mirror."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

import offgrid_nb
from offgrid_nb import (
    GatedRepoError,
    HubUnavailableError,
    InvalidArgumentError,
    NotFoundError,
    OfflineError,
    repo_files,
    search,
)
from offgrid_nb.config import settings_override
from offgrid_nb.hub import SEARCH_COLUMNS, score
from offgrid_nb.mirror import MirrorServer

GGUF_REPOS = [  # by downloads, gated and non-GGUF repos excluded
    "TheBloke/Llama-2-7B-Chat-GGUF",
    "bartowski/Qwen2.5-7B-Instruct-GGUF",
    "unsloth/Qwen3-30B-A3B-GGUF",
    "offgrid-test/tiny-llama-GGUF",
]


def ids(df) -> list[str]:
    return list(df["id"])


def test_search_defaults_return_gguf_repos_by_downloads(hub):
    df = search()
    assert ids(df) == GGUF_REPOS
    assert df.attrs["total"] == 4
    assert set(SEARCH_COLUMNS) <= set(df.columns)
    bloke = df.iloc[0]
    assert bloke.downloads == 2_500_000
    assert bloke.likes == 342
    assert bloke.n_variants == 4
    assert bloke.quants == ["Q2_K", "Q4_K_M", "Q5_K_M", "Q8_0"]
    assert bloke.param_size == "7B"
    assert bool(bloke.is_chat)
    assert bloke.download_command == (
        "offgrid download-hf TheBloke/Llama-2-7B-Chat-GGUF --file llama-2-7b-chat.Q4_K_M.gguf"
    )


def test_best_variant_follows_quality_preference_not_file_order(hub):
    df = search()
    rows = df.set_index("id")
    # Q2_K is smaller and sorts first, but Q4_K_M is the recommended quality.
    assert rows.loc["TheBloke/Llama-2-7B-Chat-GGUF", "best_quant"] == "Q4_K_M"
    assert rows.loc["TheBloke/Llama-2-7B-Chat-GGUF", "best_size"] == 3800
    assert rows.loc["unsloth/Qwen3-30B-A3B-GGUF", "best_quant"] == "UD-Q4_K_XL"


def test_gated_repos_are_excluded_unless_asked(hub):
    assert "meta-llama/Llama-3.2-1B-Instruct-GGUF" not in ids(search())
    df = search(include_gated=True)
    assert ids(df)[0] == "meta-llama/Llama-3.2-1B-Instruct-GGUF"
    assert bool(df.iloc[0].gated)


def test_query_and_author_filters(hub):
    assert ids(search("qwen")) == [
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        "unsloth/Qwen3-30B-A3B-GGUF",
    ]
    assert ids(search(author="unsloth")) == ["unsloth/Qwen3-30B-A3B-GGUF"]
    assert ids(search("qwen", author="TheBloke")) == []


def test_quant_filter_is_exact_and_case_insensitive(hub):
    df = search(quant="q8_0")
    assert ids(df) == ["TheBloke/Llama-2-7B-Chat-GGUF", "bartowski/Qwen2.5-7B-Instruct-GGUF"]
    assert set(df["best_quant"]) == {"Q8_0"}
    assert all(q == ["Q8_0"] for q in df["quants"])
    # A UD- dynamic quant answers to its plain name too.
    assert ids(search(quant="Q4_K_XL")) == ["unsloth/Qwen3-30B-A3B-GGUF"]


def test_max_size_filter_counts_all_shards(hub):
    df = search(max_size="5KB").set_index("id")
    assert list(df.index) == ["TheBloke/Llama-2-7B-Chat-GGUF", "bartowski/Qwen2.5-7B-Instruct-GGUF"]
    # The split Q8_0 (4000 + 3500 bytes) is over 5 KB even though each shard is under it.
    assert df.loc["bartowski/Qwen2.5-7B-Instruct-GGUF", "quants"] == ["Q4_K_M"]
    assert df.loc["TheBloke/Llama-2-7B-Chat-GGUF", "quants"] == ["Q2_K", "Q4_K_M", "Q5_K_M"]
    assert ids(search(max_size=1000)) == []


def test_min_downloads_and_limit(hub):
    assert "offgrid-test/tiny-llama-GGUF" not in ids(search(min_downloads=1000))
    df = search(limit=2)
    assert ids(df) == GGUF_REPOS[:2]
    assert df.attrs["total"] == 2


@pytest.mark.parametrize(
    ("sort", "expected_first"),
    [
        ("likes", "TheBloke/Llama-2-7B-Chat-GGUF"),
        ("modified", "offgrid-test/tiny-llama-GGUF"),
        ("lastModified", "offgrid-test/tiny-llama-GGUF"),
        ("created", None),
        ("relevance", None),
    ],
)
def test_sorts(hub, sort, expected_first):
    df = search(sort=sort)
    assert sorted(ids(df)) == sorted(GGUF_REPOS)
    if expected_first:
        assert ids(df)[0] == expected_first
    column = {"likes": "likes", "relevance": "score", "created": "created_at"}.get(sort)
    if column:
        values = list(df[column])
        assert values == sorted(values, reverse=True)


def test_relevance_uses_recency_and_query_bonus(hub):
    df = search("qwen", sort="relevance").set_index("id")
    # 30 days old: (6 - ~0.99) * 50 = ~250 recency bonus, plus 200 for the query match.
    bart = df.loc["bartowski/Qwen2.5-7B-Instruct-GGUF", "score"]
    assert bart == pytest.approx(900 + 1200 + 250.7 + 200, abs=1.0)
    # The unsloth repo was modified 2 days ago: the bonus is what puts it near the top.
    unsloth = df.loc["unsloth/Qwen3-30B-A3B-GGUF", "score"]
    assert unsloth == pytest.approx(300 + 800 + (6 - 2 / 30.44) * 50 + 200, abs=1.0)


def test_score_formula():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    base = dict(repo_id="a/Model-GGUF", downloads=5000, likes=3, gated=False, now=now)
    old = score(last_modified=now - timedelta(days=365), **base)
    assert old == 5 + 30
    fresh = score(last_modified=now - timedelta(days=0), **base)
    assert fresh == 5 + 30 + 300
    assert score(last_modified=None, query="model", **base) == 5 + 30 + 200
    assert score(last_modified=None, query="other", **base) == 5 + 30
    gated = {**base, "gated": True}
    assert score(last_modified=None, **gated) == (5 + 30) / 2


def test_repo_files_groups_shards_and_skips_non_models(hub, hub_root):
    df = repo_files("bartowski/Qwen2.5-7B-Instruct-GGUF")
    assert list(df["quant"]) == ["Q4_K_M", "Q8_0"]
    split = df.iloc[1]
    assert split.n_shards == 2
    assert split["size"] == 7500
    assert split.filename == "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00001-of-00002.gguf"
    assert split.shards == [
        "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00001-of-00002.gguf",
        "Qwen2.5-7B-Instruct-Q8_0/Qwen2.5-7B-Instruct-Q8_0-00002-of-00002.gguf",
    ]
    first = (hub_root / "bartowski/Qwen2.5-7B-Instruct-GGUF" / split.filename).read_bytes()
    assert split.sha256 == hashlib.sha256(first).hexdigest()
    assert split.size_gb == pytest.approx(7.5e-6)
    assert split.param_size == "7B"
    assert bool(split.is_chat)
    assert split.download_url == (
        f"{hub.url}/bartowski/Qwen2.5-7B-Instruct-GGUF/resolve/main/{split.filename}"
    )


def test_repo_files_of_unknown_repo_is_not_found(hub):
    with pytest.raises(NotFoundError, match="nobody/nothing"):
        repo_files("nobody/nothing")
    with pytest.raises(InvalidArgumentError):
        repo_files("../../etc/passwd")


def test_repeated_search_is_served_from_cache(hub):
    first = search("qwen", quant="Q4_K_M")
    made = sum(hub.requests.values())
    assert made >= 2  # the list call and at least one repo
    second = search("qwen", quant="Q4_K_M")
    assert sum(hub.requests.values()) == made
    assert ids(second) == ids(first)
    second.loc[0, "id"] = "changed"  # a caller's edit must not leak into the cache
    assert ids(search("qwen", quant="Q4_K_M")) == ids(first)
    offgrid_nb.clear_cache()
    search("qwen", quant="Q4_K_M")
    assert sum(hub.requests.values()) > made


def test_cheap_filters_skip_per_repo_requests(hub):
    search(quant="UD-Q4_K_XL")
    # File names from the list call already rule out every repo but one.
    assert hub.requests["info"] == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sort": "popularity"}, "Invalid sort"),
        ({"limit": 0}, "Invalid limit"),
        ({"limit": -5}, "Invalid limit"),
        ({"limit": 10_000}, "Invalid limit"),
        ({"min_downloads": -1}, "min_downloads"),
        ({"max_size": "four gigs"}, "Invalid size"),
        ({"ram_gb": -1}, "Invalid ram_gb"),
        ({"ram_gb": 0, "fits_only": True}, "Invalid ram_gb"),
    ],
)
def test_bad_arguments_raise_named_errors(hub, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        search(**kwargs)
    assert sum(hub.requests.values()) == 0


def test_offline_mode_gives_a_clear_error(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineError, match="Offline mode is on"):
        search("llama")
    assert sum(hub.requests.values()) == 0


def test_unreachable_hub(hub, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with settings_override(hub_retries=1), pytest.raises(HubUnavailableError, match="unreachable"):
        search("llama")


def test_timeout(hub, hub_root):
    with (
        MirrorServer(hub_root, latency_ms=2000) as slow,
        settings_override(endpoint=slow.url, hub_timeout=0.2, hub_retries=0),
        pytest.raises(HubUnavailableError, match="timed out"),
    ):
        search("llama")


class _StatusServer(http.server.ThreadingHTTPServer):
    """Answers requests with ``statuses`` in turn (the last one repeats) and an empty body."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.count = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(handler) -> None:
                status = self.statuses[min(self.count, len(self.statuses) - 1)]
                self.count += 1
                body = b"[]" if status == 200 else b"{}"
                handler.send_response(status)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)

            def log_message(handler, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def status_server() -> Iterator[_StatusServer]:
    servers: list[_StatusServer] = []

    def make(statuses: list[int]) -> _StatusServer:
        server = _StatusServer(statuses)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()


def test_5xx_is_retried_then_reported(hub, status_server):
    flaky = status_server([503, 200])
    with settings_override(endpoint=f"http://127.0.0.1:{flaky.server_port}"):
        assert search("x").empty
    assert flaky.count == 2

    down = status_server([502])
    with (
        settings_override(endpoint=f"http://127.0.0.1:{down.server_port}", hub_retries=2),
        pytest.raises(HubUnavailableError, match="HTTP 502"),
    ):
        search("x")
    assert down.count == 3


def test_401_is_an_access_error(hub, status_server):
    denied = status_server([401])
    with (
        settings_override(endpoint=f"http://127.0.0.1:{denied.server_port}"),
        pytest.raises(GatedRepoError, match="HF_TOKEN"),
    ):
        search("x")
