"""The ``offgrid`` command as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from offgrid_nb.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_search_prints_one_block_per_repo(hub, capsys):
    code, out, _ = run(capsys, "search", "llama", "-l", "1")
    assert code == 0
    assert out.splitlines() == [
        "1. TheBloke/Llama-2-7B-Chat-GGUF",
        "   ↓ 2.5M downloads  ❤ 342 likes  │  Recommended: Q4_K_M (3.8 KB)",
        "   Available: Q2_K (2.8KB), Q4_K_M (3.8KB), Q5_K_M (4.6KB), Q8_0 (7.2KB)",
        "   Download: offgrid download-hf TheBloke/Llama-2-7B-Chat-GGUF "
        "--file llama-2-7b-chat.Q4_K_M.gguf",
    ]


def test_search_flags_and_json(hub, capsys):
    code, out, _ = run(
        capsys, "search", "-a", "bartowski", "-q", "Q8_0", "-s", "likes", "--max-size", "1MB",
        "--min-downloads", "10", "--json",
    )  # fmt: skip
    assert code == 0
    data = json.loads(out)
    assert data["total"] == 1
    (repo,) = data["results"]
    assert repo["id"] == "bartowski/Qwen2.5-7B-Instruct-GGUF"
    assert repo["best_quant"] == "Q8_0"
    assert repo["best_size"] == 7500


def test_all_includes_gated(hub, capsys):
    _, out, _ = run(capsys, "search", "--all", "-l", "1")
    assert out.startswith("1. meta-llama/Llama-3.2-1B-Instruct-GGUF  [gated]")


def test_no_results_says_so(hub, capsys):
    code, out, _ = run(capsys, "search", "no-such-model-anywhere")
    assert code == 0
    assert out.startswith("No models found.")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--max-size", "huge"], "Invalid size: 'huge'"),
        (["search", "-l", "0"], "must be at least 1"),
        (["search", "-l", "-3"], "must be at least 1"),
        (["search", "--min-downloads", "-1"], "not a whole number >= 0"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_core_errors_are_one_line_and_exit_1(hub, capsys):
    code, out, err = run(capsys, "search", "-s", "popularity")
    assert code == 1
    assert out == ""
    assert err.splitlines()[0] == "error: Invalid sort: 'popularity'"
    assert err.splitlines()[1].startswith("hint: use one of: downloads")


def test_console_script_reports_unreachable_hub_without_traceback(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "offgrid_nb.cli", "search", "llama"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: The Hub at http://127.0.0.1:9 is unreachable")


def test_offline_flag(hub, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(capsys, "search", "llama")
    assert code == 1
    assert err.startswith("error: Offline mode is on (HF_HUB_OFFLINE=1)")


def test_demo_runs_offline(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the demo must not need it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "untouched"))
    code, out, _ = run(capsys, "demo")
    assert code == 0
    assert "1. offgrid-demo/Tiny-Llama-Chat-GGUF" in out
    assert "Recommended: Q4_K_M" in out
    assert not (tmp_path / "untouched").exists()
