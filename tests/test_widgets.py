"""The notebook panels without a browser: set values, click, observe traits, read the widgets."""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from offgrid_nb import clear_cache, fit
from offgrid_nb.corpus import sample_text
from offgrid_nb.devices import Device, list_devices
from offgrid_nb.mirror import MirrorServer
from offgrid_nb.synthetic import quantize
from offgrid_nb.widgets import BenchmarkPanel, ChatPanel, DownloadPanel, SearchPanel, panel
from offgrid_nb.widgets.chat import conversation_html
from offgrid_nb.widgets.search import _fit_text

TINY_REPO, TINY_FILE = "offgrid-test/tiny-llama-GGUF", "tiny-llama-F32.gguf"
TIMEOUT = 60


def body_rows(table_html: str) -> int:
    return table_html.split("<tbody>", 1)[1].count("<tr>") if "<tbody>" in table_html else 0


def changes(widget, name="value"):
    seen = []
    widget.observe(lambda change: seen.append(change["new"]), name)
    return seen


@pytest.fixture
def library(hub, tmp_path, tiny_model):
    """The models folder with the tiny model in F32 and Q8_0."""
    folder = tmp_path / "models" / "local"
    folder.mkdir(parents=True)
    f32 = shutil.copyfile(tiny_model, folder / "tiny-llama-F32.gguf")
    q8 = quantize(tiny_model, folder / "tiny-llama-Q8_0.gguf", "Q8_0")
    return [f32, q8]


# --- packaging ------------------------------------------------------------------------------------


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )


def test_importing_offgrid_nb_does_not_import_ipywidgets():
    result = run_python(
        """
        import sys
        import offgrid_nb
        assert "ipywidgets" not in sys.modules, "imported ipywidgets"
        assert offgrid_nb.panel().widget.titles[0] == "Search"  # imported on first use
        """
    )
    assert result.returncode == 0, result.stderr


def test_without_ipywidgets_the_panels_say_how_to_get_it():
    result = run_python(
        """
        import sys
        sys.modules["ipywidgets"] = None  # as if it were not installed
        import offgrid_nb
        try:
            offgrid_nb.panel()
        except ImportError as exc:
            print(exc)
        """
    )
    assert "needs ipywidgets 8: pip install 'ipywidgets>=8,<9'" in result.stdout, result.stderr


# --- search ---------------------------------------------------------------------------------------


def test_search_fills_the_table_and_lists_the_first_repos_variants(hub):
    search = SearchPanel("llama", limit=10)
    search.search_button.click()
    assert search.wait(TIMEOUT)

    ids = list(search.frame["id"])
    assert ids[0] == "TheBloke/Llama-2-7B-Chat-GGUF"  # most downloads first
    assert body_rows(search.table.value) == len(ids)
    assert "2.5M" in search.table.value
    assert "Q4_K_M" in search.table.value
    assert search.results.options == tuple(ids)
    assert search.results.value == ids[0]
    assert set(search.download_buttons) == {
        "llama-2-7b-chat.Q2_K.gguf",
        "llama-2-7b-chat.Q4_K_M.gguf",
        "llama-2-7b-chat.Q5_K_M.gguf",
        "llama-2-7b-chat.Q8_0.gguf",
    }
    assert search.status.kind == "note"
    assert not search.search_button.disabled


def test_filters_reach_the_search(hub):
    search = SearchPanel("qwen", quant="Q4_K_XL", sort="likes")
    search.search()
    assert search.wait(TIMEOUT)
    assert list(search.frame["id"]) == ["unsloth/Qwen3-30B-A3B-GGUF"]


def test_variants_say_where_the_layers_go_on_a_gpu_machine(hub, monkeypatch):
    card = Device("CUDA0", "test card", "gpu", "CUDA", 16 * 10**9, 16 * 10**9)
    monkeypatch.setattr(fit, "list_devices", lambda: [*list_devices(), card])
    search = SearchPanel("tiny")
    search.search()
    assert search.wait(TIMEOUT)
    search.results.value = TINY_REPO
    assert search.wait(TIMEOUT)
    cells = [getattr(w, "value", "") for w in search.variants.children]
    assert any("fits" in c and c.endswith("all on GPU") for c in cells), cells


def test_partial_offload_reads_as_mostly_cpu_bound():
    row = SimpleNamespace(offload="partial", gpu_layers=17, n_layers=33)
    text = _fit_text("fits", 5.8, row)
    assert text.endswith("17/33 layers on GPU (mostly CPU-bound)")


def test_picking_a_row_lists_its_variants_with_fit_and_download(hub):
    search = SearchPanel("tiny")
    search.search()
    assert search.wait(TIMEOUT)

    search.results.value = TINY_REPO  # what picking the row in the dropdown does
    assert search.wait(TIMEOUT)
    assert list(search.download_buttons) == [TINY_FILE]
    cells = [getattr(w, "value", "") for w in search.variants.children]
    assert any("fits" in c for c in cells), cells  # a few MB fit any machine
    assert any("recommended" in c for c in cells)

    search.download_buttons[TINY_FILE].click()
    assert search.download.wait(TIMEOUT)
    path = search.download.path
    assert path is not None
    assert path.name == TINY_FILE
    assert path.is_file()
    assert search.download.progress.value == 1.0
    assert search.download.progress.bar_style == "success"
    assert str(path) in search.download.status.value


def test_search_errors_are_shown_in_the_panel(hub, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    search = SearchPanel("llama")
    search.search()
    assert search.wait(TIMEOUT)
    assert search.status.kind == "error"
    assert "offline" in search.status.value.lower()
    assert 'role="alert"' in search.status.value
    assert not search.search_button.disabled


# --- download -------------------------------------------------------------------------------------


def test_cancel_mid_download_then_resume(hub, hub_root, monkeypatch, tmp_path, request):
    slow = MirrorServer(hub_root, rate_per_connection=4_000_000).start()  # 5 MB: about 1.3 s
    request.addfinalizer(slow.stop)
    monkeypatch.setenv("HF_ENDPOINT", slow.url)
    clear_cache()
    panel = DownloadPanel(TINY_REPO, TINY_FILE)
    fractions = changes(panel.progress)

    def cancel_past_half(change):
        if change["new"] > 0.5 and not panel.task.cancelled.is_set():
            panel.cancel_button.click()

    panel.progress.observe(cancel_past_half, "value")
    panel.start_button.click()
    assert panel.wait(TIMEOUT)

    partial = tmp_path / "models" / TINY_REPO / f"{TINY_FILE}.part"
    assert partial.is_file()
    assert not partial.with_suffix("").exists()  # nothing under the final name
    assert panel.start_button.description == "Resume"
    assert panel.progress.bar_style == "warning"
    assert "cancelled" in panel.status.value
    assert panel.status.kind == "note"
    assert 0.5 < max(fractions) < 1.0

    panel.progress.unobserve(cancel_past_half, "value")
    fractions.clear()
    panel.start_button.click()
    assert panel.wait(TIMEOUT)
    assert panel.path.read_bytes() == (hub_root / TINY_REPO / TINY_FILE).read_bytes()
    assert min(f for f in fractions if f > 0) > 0.5  # resumed: the kept bytes count at once
    assert panel.progress.value == 1.0
    assert "MB/s" in panel.detail.value or "KB/s" in panel.detail.value
    assert panel.start_button.description == "Download"


def test_download_errors_are_shown_in_the_panel(hub):
    panel = DownloadPanel("nobody/missing-GGUF")
    panel.start()
    assert panel.wait(TIMEOUT)
    assert panel.status.kind == "error"
    assert "was not found" in panel.status.value
    assert panel.start_button.description == "Retry"
    assert panel.progress.bar_style == "danger"
    assert not panel.start_button.disabled
    assert panel.cancel_button.disabled


# --- chat -----------------------------------------------------------------------------------------


def test_reply_streams_into_the_panel_while_the_kernel_stays_free(library):
    chat = ChatPanel(library[0], max_tokens=48, seed=3, temperature=1.0)
    drawn = changes(chat.history)
    chat.prompt.value = "Hello there"
    chat.send_button.click()
    assert chat.task.running  # send returned at once; the reply is generated in a thread
    assert chat.prompt.value == ""
    assert chat.wait(TIMEOUT)

    reply = chat.chat.history[-1]
    assert reply["role"] == "assistant"
    assert reply["content"]
    assert "Hello there" in drawn[0]
    assert "assistant" not in drawn[0]
    partials = [d for d in drawn[1:-1] if 'offgrid-message assistant"' in d]
    assert partials, "the reply was not shown while it was generated"
    assert drawn[-1] == conversation_html(chat.chat.history)
    assert "tokens/s" in chat.status.value


def test_stop_keeps_the_partial_reply(library):
    chat = ChatPanel(library[0], max_tokens=400, seed=5, temperature=1.0)

    def stop_at_first_piece(change):
        if 'offgrid-message assistant"' in change["new"]:
            chat.stop_button.click()

    chat.history.observe(stop_at_first_piece, "value")
    chat.send("Tell me a long story")
    assert chat.wait(TIMEOUT)
    assert chat.status.value.count("Stopped") == 1
    assert chat.chat.history[-1]["role"] == "assistant"
    assert chat.chat.usage.completion_tokens < 10
    assert chat.stop_button.disabled
    assert not chat.send_button.disabled


def test_a_second_message_waits_for_the_reply(library):
    chat = ChatPanel(library[0], max_tokens=200, seed=2)
    notes = changes(chat.status)
    chat.send("first")
    chat.send("second")  # while the first reply is generated: refused, in the panel
    assert chat.wait(TIMEOUT)
    assert any("Busy" in note for note in notes)
    assert [m["content"] for m in chat.chat.history if m["role"] == "user"] == ["first"]


def test_clear_starts_a_new_conversation(library):
    chat = ChatPanel(library[0], system="Be brief.", max_tokens=4)
    chat.send("one")
    assert chat.wait(TIMEOUT)
    chat.clear_button.click()
    assert chat.chat.history == [{"role": "system", "content": "Be brief."}]
    assert "offgrid-message" not in chat.history.value


def test_chat_errors_are_shown_in_the_panel(library):
    chat = ChatPanel("no-such-model")
    chat.send("hi")
    assert chat.wait(TIMEOUT)
    assert chat.status.kind == "error"
    assert "No local model matches 'no-such-model'" in html.unescape(chat.status.value)
    chat.send("   ")
    assert "Type a message first" in chat.status.value


def test_the_picker_lists_the_library_and_the_model_given(library, tiny_model):
    chat = ChatPanel(tiny_model)
    values = [value for _, value in chat.model.options]
    assert values[:2] == [str(p) for p in library]
    assert chat.model.value == str(tiny_model)  # outside the folder: added as given
    assert ChatPanel("tiny-llama-Q8_0").model.value == str(library[1])  # a library name


def test_conversation_html_escapes_the_text():
    page = conversation_html([{"role": "user", "content": "<script>alert(1)</script>"}])
    assert "<script>" not in page
    assert "&lt;script&gt;" in page


# --- benchmark ------------------------------------------------------------------------------------


def test_benchmark_compares_models_in_a_table_and_a_plot(library):
    bench = BenchmarkPanel(library, prompt_tokens=16, output_tokens=4, iterations=2)
    assert bench.models.value == tuple(str(p) for p in library)
    bench.run_button.click()
    assert bench.run_button.disabled
    assert not bench.cancel_button.disabled
    assert bench.wait(TIMEOUT)

    assert list(bench.runs["model"].unique()) == ["tiny-llama-F32", "tiny-llama-Q8_0"]
    assert len(bench.runs) == 4
    assert (bench.runs["generation_tokens_per_sec"] > 0).all()
    assert body_rows(bench.table.value) == 2
    assert bytes(bench.plot.value).startswith(b"\x89PNG")
    assert bench.progress.value == 2
    assert bench.status.value.count("Done") == 1
    assert not bench.run_button.disabled
    assert bench.cancel_button.disabled


def test_cancel_stops_after_the_current_model(library):
    bench = BenchmarkPanel(library, prompt_tokens=16, output_tokens=4, iterations=1)
    bench.table.observe(lambda _: bench.cancel_button.click(), "value")
    bench.run()
    assert bench.wait(TIMEOUT)
    assert list(bench.runs["model"].unique()) == ["tiny-llama-F32"]
    assert "Cancelled after 1 of 2 models" in bench.status.value


def test_an_unexpected_error_is_shown_not_raised(library, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("llama.cpp said no")

    monkeypatch.setattr("offgrid_nb.widgets.bench.benchmark", broken)
    bench = BenchmarkPanel(library[:1])
    bench.run()
    assert bench.wait(TIMEOUT)
    assert bench.status.kind == "error"
    assert "RuntimeError: llama.cpp said no" in bench.status.value
    assert not bench.run_button.disabled
    assert bench.cancel_button.disabled


def test_benchmark_needs_a_model(library):
    bench = BenchmarkPanel()
    bench.run()
    assert bench.status.kind == "error"
    assert "Select at least one model" in bench.status.value


# --- quality ------------------------------------------------------------------------------------

# generated models have ASCII byte tokens only
ASCII_TEXT = sample_text()[:6000].encode("ascii", "ignore").decode()
QUALITY = {"text": "", "n_ctx": 64, "chunks": 1, "prompt_tokens": 16, "output_tokens": 4}


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text(ASCII_TEXT)
    return path


def test_quality_of_the_variants_in_a_table_and_a_pareto_chart(library, text_file):
    q2 = quantize(library[0], library[0].parent / "tiny-llama-Q2_K.gguf", "Q2_K")
    bench = BenchmarkPanel([*library, q2], **{**QUALITY, "text": text_file}, iterations=1)
    done = changes(bench.progress)
    bench.quality_button.click()
    assert bench.quality_button.disabled
    assert bench.run_button.disabled
    assert bench.wait(TIMEOUT)

    df = bench.quality_results
    assert list(df["quant"]) == ["F32", "Q8_0", "Q2_K"]  # the largest file is the reference
    assert df.iloc[2]["kld"] > 0
    table = bench.quality_table.value
    assert body_rows(table) == 3
    for header in ("PPL", "KLD", "Same top (%)", "Generation tokens/s", "Memory (MB)"):
        assert f">{header}</th>" in table
    assert "reference" in table
    assert "★ Pareto front (speed)" in table
    assert bytes(bench.quality_plot.value).startswith(b"\x89PNG")
    assert bench.quality_plot.layout.display == ""  # hidden until then
    assert done[-1] == bench.progress.max == 3  # one chunk per model
    assert bench.progress.description == "Chunks"
    assert "Done: 3 variants against tiny-llama-F32" in bench.status.value
    assert not bench.quality_button.disabled
    assert bench.cancel_button.disabled


def test_quality_of_a_repos_variants_downloads_them(gguf_hub, text_file):
    bench = BenchmarkPanel(repo="offgrid-test/fit-GGUF", quants="Q8_0, Q2_K", speed=False,
                           **{**QUALITY, "text": text_file})  # fmt: skip
    bench.measure_quality()
    assert bench.wait(TIMEOUT)
    assert list(bench.quality_results["quant"]) == ["Q8_0", "Q2_K"]
    assert ">Generation tokens/s</th>" not in bench.quality_table.value
    assert "★ Pareto front (size)" in bench.quality_table.value
    assert bytes(bench.quality_plot.value).startswith(b"\x89PNG")
    assert bench.status.kind == "note"


def test_cancel_stops_the_quality_run(library, text_file):
    bench = BenchmarkPanel(library, **{**QUALITY, "text": text_file})
    bench.progress.observe(lambda _: bench.cancel_button.click(), "value")
    bench.measure_quality()
    assert bench.wait(TIMEOUT)
    assert "Quality run cancelled" in bench.status.value
    assert bench.quality_results.empty
    assert bench.quality_table.value == ""
    assert bench.quality_plot.layout.display == "none"


def test_quality_errors_are_shown_in_the_panel(library):
    bench = BenchmarkPanel(library, **QUALITY)  # the built-in sample is not ASCII
    bench.measure_quality()
    assert bench.wait(TIMEOUT)
    assert bench.status.kind == "error"
    assert "no tokens for non-ASCII text" in bench.status.value
    assert not bench.quality_button.disabled

    empty = BenchmarkPanel()
    empty.measure_quality()
    assert "Select the variants of one model, or give a Hub repo" in empty.status.value


# --- the app --------------------------------------------------------------------------------------


def test_app_has_four_tabs_and_downloads_reach_chat_and_benchmark(hub):
    app = panel()
    assert app.widget.titles == ("Search", "Download", "Chat", "Benchmark")
    assert app.widget.children[1] is app.search.download.widget
    assert app.chat.model.options == ()

    app.download.start(TINY_REPO, TINY_FILE)
    assert app.download.wait(TIMEOUT)
    assert app.chat.model.value == str(app.download.path)
    assert [v for _, v in app.benchmark.models.options] == [str(app.download.path)]


def test_the_chat_panel_says_which_template_and_when_the_model_is_a_base_model(library, tiny_model):
    chat = ChatPanel(tiny_model, max_tokens=4)
    chat.send("hi")
    assert chat.wait(TIMEOUT)
    assert html.unescape(chat.template.value) == "template: gguf"
    base = ChatPanel(tiny_model, max_tokens=4, template="none")
    base.send("hi")
    assert base.wait(TIMEOUT)
    note = html.unescape(base.template.value)
    assert note.startswith("template: none (base model) · ")
    assert note.endswith(
        "has no chat template: treating it as a base model; your text is continued"
    )
