"""The quickstart seen in a real browser: JupyterLab driven by Debian's Chromium via Playwright.

Runs the notebook with the Run menu, as a user would, and checks what the user would see: the
panels rendered (no "Error displaying widget"), the search table has rows, the chat panel shows
a reply, the benchmark panel shows its chart, no cell wrote to stderr. Screenshots go to
``test-artifacts/browser/``. Skipped without ``/usr/bin/chromium`` or the ``playwright``
package (``.ci/run`` installs both; never a downloaded browser).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from offgrid_nb.mirror import MirrorServer

sync_api = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT_MS = 90_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin"),
]


@pytest.fixture(scope="session")
def mirror(notebook_hub_root: Path) -> Iterator[MirrorServer]:
    """Serve the notebooks' repos instead of the tests' (``hub`` points everything at it)."""
    with MirrorServer(notebook_hub_root) as server:
        yield server


@pytest.fixture
def page(tmp_path: Path) -> Iterator[sync_api.Page]:
    """A page of a fresh headless Chromium profile."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield browser.pages[0] if browser.pages else browser.new_page()
        finally:
            browser.close()


def shoot(target: sync_api.Page | sync_api.Locator, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target.screenshot(path=ARTIFACTS / f"{name}.png")


def test_quickstart_panels_render_and_work_in_jupyterlab(jupyter_lab, page):
    # Every cell in the DOM (no windowing), so off-screen outputs can be checked too.
    tracker = Path(os.environ["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab/notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    shutil.copy(ROOT / "notebooks" / "01_quickstart.ipynb", jupyter_lab.root)

    try:
        run_all(page, jupyter_lab.page("lab/tree/01_quickstart.ipynb"))
        check_panels(page)
        use_the_app(page)
    finally:
        shoot(page, "99-last")
        shutil.copy(jupyter_lab.log, ARTIFACTS / "jupyterlab.log")


def idle(page: sync_api.Page) -> None:
    """Wait until the notebook's kernel is idle (the status bar says so)."""
    page.locator("#jp-main-statusbar").get_by_text(re.compile(r"\| Idle")).wait_for(timeout=WAIT_MS)


def run_all(page: sync_api.Page, url: str) -> None:
    """Open the notebook and run every cell through the Run menu."""
    page.goto(url)
    page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=WAIT_MS)
    idle(page)
    shoot(page, "01-opened")
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    page.locator(".offgrid-app").wait_for(timeout=WAIT_MS)  # the last cell: og.panel()
    idle(page)


def check_panels(page: sync_api.Page) -> None:
    """The panels rendered and did their work; screenshots of each."""
    search = page.locator(".offgrid-search").first
    rows = search.locator("table tbody tr")
    rows.first.wait_for(timeout=WAIT_MS)
    reply = page.locator(".offgrid-chat .offgrid-message.assistant").first
    reply.wait_for(timeout=WAIT_MS)
    page.locator(".offgrid-benchmark img").first.wait_for(timeout=WAIT_MS)

    shoot(search, "02-search-panel")
    shoot(page.locator(".offgrid-download").nth(1), "03-download-panel")
    shoot(page.locator(".offgrid-chat").first, "04-chat-panel")
    shoot(page.locator(".offgrid-benchmark").first, "05-benchmark-panel")
    shoot(page.locator(".offgrid-app"), "06-app")

    assert page.get_by_text("Error displaying widget").count() == 0
    assert rows.count() >= 1
    assert "Qwen/Qwen2.5-0.5B-Instruct-GGUF" in rows.first.inner_text()
    assert search.get_by_role("button", name="Download").count() >= 2  # one per variant
    assert reply.inner_text().removeprefix("Assistant").strip()
    assert page.locator(".offgrid-error").count() == 0
    assert page.locator('[data-mime-type="application/vnd.jupyter.stderr"]').count() == 0


def use_the_app(page: sync_api.Page) -> None:
    """Type and click in the tabbed app, as a user would: a search, then a chat message."""
    app = page.locator(".offgrid-app")
    app.get_by_placeholder("e.g. qwen 0.5b").fill("Qwen2.5")
    app.get_by_role("button", name="Search").click()
    rows = app.locator(".offgrid-search table tbody tr")
    rows.first.wait_for(timeout=WAIT_MS)
    app.get_by_role("button", name="Download").nth(1).wait_for(timeout=WAIT_MS)  # variants
    shoot(app, "07-app-search")
    assert rows.count() == 2

    app.get_by_role("tab", name="Chat").click()
    app.get_by_placeholder("Message").fill("Hello from the browser")
    app.get_by_role("button", name="Send").click()
    reply = app.locator(".offgrid-chat .offgrid-message.assistant")
    reply.wait_for(timeout=WAIT_MS)
    app.get_by_text("tokens/s").wait_for(timeout=WAIT_MS)  # the reply is complete
    shoot(app, "08-app-chat")
    sent = app.locator(".offgrid-chat .offgrid-message.user").inner_text()
    assert "Hello from the browser" in sent


# --- the JupyterLab sidebar (no kernel involved) -------------------------------------------------

SIDEBAR_FILE = "qwen2.5-0.5b-instruct-q4_k_m.gguf"
DOWNLOAD_SECONDS = 10  # the throttled mirror streams the file in about this long
DARK = {"theme": "JupyterLab Dark"}


@pytest.fixture
def throttled_hub(hub, notebook_hub_root, monkeypatch) -> Iterator[MirrorServer]:
    """The notebooks' Hub, streaming files slowly enough to reload the page mid-download."""
    size = (notebook_hub_root / "Qwen/Qwen2.5-0.5B-Instruct-GGUF" / SIDEBAR_FILE).stat().st_size
    with MirrorServer(notebook_hub_root, rate_total=size / DOWNLOAD_SECONDS) as slow:
        monkeypatch.setenv("HF_ENDPOINT", slow.url)
        yield slow


def by_id(scope: sync_api.Page | sync_api.Locator, test_id: str) -> sync_api.Locator:
    return scope.locator(f'[data-testid="{test_id}"]')


def open_sidebar(page: sync_api.Page) -> sync_api.Locator:
    """Show the sidebar (its tab in the left bar) and return it."""
    page.locator("#jupyterlab-splash").wait_for(state="detached", timeout=WAIT_MS)  # restored
    tab = page.locator('.jp-SideBar li[data-id="offgrid-sidebar"]')
    tab.wait_for(timeout=WAIT_MS)
    sidebar = page.locator("#offgrid-sidebar")
    for _ in range(5):  # the layout restorer may still be toggling the left area
        if sidebar.is_visible():
            return sidebar
        if tab.get_attribute("aria-selected") != "true":  # a click on the open tab closes it
            tab.click()
        with contextlib.suppress(sync_api.TimeoutError):
            sidebar.wait_for(timeout=3000)
    sidebar.wait_for(timeout=1)  # fails with the locator's state
    return sidebar


def progress(page: sync_api.Page) -> tuple[str, int]:
    """The first job's status and its progress bar's percent."""
    job = by_id(page, "offgrid-job").first
    return job.get_attribute("data-status"), int(
        by_id(job, "offgrid-progress").get_attribute("aria-valuenow")
    )


def test_sidebar_search_download_reload_chat_benchmark(throttled_hub, jupyter_lab, page):
    """The path of the sidebar issue, in light and then dark theme; screenshots of each step."""
    try:
        page.goto(jupyter_lab.page("lab"))
        sidebar = open_sidebar(page)
        by_id(sidebar, "offgrid-search-input").fill("Qwen2.5")
        by_id(sidebar, "offgrid-search-button").click()
        results = by_id(sidebar, "offgrid-result")
        results.first.wait_for(timeout=WAIT_MS)
        assert results.count() == 2
        assert "Qwen/Qwen2.5-0.5B-Instruct-GGUF" in results.first.inner_text()
        assert "250.0k" in results.first.inner_text()

        results.first.locator(".offgrid-ResultHead").click()
        variants = by_id(results.first, "offgrid-variant")
        variants.first.wait_for(timeout=WAIT_MS)
        assert variants.count() == 9
        assert "fits" in variants.first.inner_text()
        shoot(sidebar, "sidebar-01-search-variants")

        row = variants.filter(has_text="Q4_K_M")
        by_id(row, "offgrid-download").click()
        by_id(sidebar, "offgrid-job").first.wait_for(timeout=WAIT_MS)
        page.wait_for_function(
            """() => {
                const bar = document.querySelector('[data-testid="offgrid-progress"]');
                return bar && Number(bar.getAttribute('aria-valuenow')) >= 10;
            }""",
            timeout=WAIT_MS,
        )
        status, before = progress(page)
        assert status == "downloading"
        assert before < 90
        shoot(sidebar, "sidebar-02-downloading")

        page.reload()  # the job runs in the Jupyter server: it is still there, still moving
        sidebar = open_sidebar(page)
        by_id(sidebar, "offgrid-job").first.wait_for(timeout=WAIT_MS)
        status, after = progress(page)
        assert status in ("downloading", "verifying", "done")
        assert after >= before
        page.locator('[data-testid="offgrid-job"][data-status="done"]').wait_for(timeout=WAIT_MS)
        assert progress(page) == ("done", 100)
        local = by_id(sidebar, "offgrid-local-model")
        local.first.wait_for(timeout=WAIT_MS)
        assert "qwen2.5-0.5b-instruct-q4_k_m" in local.first.inner_text()
        assert "Q4_K_M" in local.first.inner_text()
        shoot(sidebar, "sidebar-03-downloaded")

        local.first.get_by_role("button", name="Chat").click()
        chat = page.locator(".offgrid-Chat")
        by_id(chat, "offgrid-chat-input").fill("Hello from the sidebar")
        by_id(chat, "offgrid-chat-send").click()
        by_id(chat, "offgrid-chat-usage").wait_for(timeout=WAIT_MS)  # the reply is complete
        messages = by_id(chat, "offgrid-chat-message")
        assert [m.get_attribute("data-role") for m in messages.all()] == ["user", "assistant"]
        assert "Hello from the sidebar" in messages.first.inner_text()
        assert messages.nth(1).locator(".offgrid-Markdown .jp-RenderedMarkdown").count() == 1
        assert "tokens/s" in by_id(chat, "offgrid-chat-usage").inner_text()
        shoot(page, "sidebar-04-chat")

        local.first.get_by_role("button", name="Benchmark").click()
        bench = page.locator(".offgrid-Benchmark")
        for name, value in (("prompt tokens", "16"), ("output tokens", "8"), ("iterations", "1")):
            bench.get_by_label(name).fill(value)
        by_id(bench, "offgrid-benchmark-run").click()
        by_id(bench, "offgrid-benchmark-results").wait_for(timeout=WAIT_MS)
        assert bench.locator(".offgrid-Chart rect").count() == 1
        shoot(page, "sidebar-05-benchmark")
        assert page.locator('[data-testid="offgrid-error"]').count() == 0

        theme = Path(os.environ["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab/apputils-extension"
        theme.mkdir(parents=True, exist_ok=True)
        (theme / "themes.jupyterlab-settings").write_text(json.dumps(DARK))
        page.reload()
        page.locator('body[data-jp-theme-light="false"]').wait_for(
            state="attached", timeout=WAIT_MS
        )
        sidebar = open_sidebar(page)
        local = by_id(sidebar, "offgrid-local-model")
        local.first.get_by_role("button", name="Benchmark").click()
        by_id(page, "offgrid-benchmark-results").wait_for(timeout=WAIT_MS)  # kept by the server
        shoot(page, "sidebar-06-dark-benchmark")
        local.first.get_by_role("button", name="Chat").click()
        chat = page.locator(".offgrid-Chat:visible")
        by_id(chat, "offgrid-chat-input").fill("And in the dark?")
        by_id(chat, "offgrid-chat-send").click()
        by_id(chat, "offgrid-chat-usage").wait_for(timeout=WAIT_MS)
        shoot(page, "sidebar-07-dark-chat")

        local.first.get_by_role("button", name="Verify").click()
        local.first.get_by_text("sha256 ok").wait_for(timeout=WAIT_MS)
        local.first.get_by_role("button", name="Delete").click()
        dialog = page.locator(".jp-Dialog")
        dialog.wait_for(timeout=WAIT_MS)
        shoot(page, "sidebar-08-dark-delete-dialog")
        dialog.get_by_role("button", name="Delete").click()
        sidebar.get_by_text("No local models yet.").wait_for(timeout=WAIT_MS)
        assert local.count() == 0
        assert page.locator('[data-testid="offgrid-error"]').count() == 0
    finally:
        shoot(page, "sidebar-99-last")
        shutil.copy(jupyter_lab.log, ARTIFACTS / "jupyterlab-sidebar.log")


def test_sidebar_quality_of_the_local_variants(hub, jupyter_lab, page, tiny_model):
    """The Benchmark tab measures the model's local variants against the largest: a table
    and the Pareto chart (screenshot ``sidebar-quality.png``)."""
    from offgrid_nb.corpus import sample_text
    from offgrid_nb.synthetic import quantize

    folder = Path(os.environ["OFFGRID_MODELS_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiny_model, folder / "tiny-llama-F32.gguf")
    for quant in ("Q8_0", "Q4_K_M", "Q2_K"):
        quantize(tiny_model, folder / f"tiny-llama-{quant}.gguf", quant)
    ascii_text = sample_text()[:6000].encode("ascii", "ignore").decode()  # generated models
    try:
        page.goto(jupyter_lab.page("lab"))
        sidebar = open_sidebar(page)
        local = by_id(sidebar, "offgrid-local-model").filter(has_text="tiny-llama-Q8_0")
        local.get_by_role("button", name="Benchmark").click()
        quality = by_id(page.locator(".offgrid-Benchmark"), "offgrid-quality")
        variants = by_id(quality, "offgrid-quality-variant")
        variants.first.wait_for(timeout=WAIT_MS)
        assert variants.count() == 4
        quality.get_by_label("context").fill("64")
        quality.get_by_label("chunks").fill("2")
        quality.get_by_label("text", exact=True).select_option("text")
        quality.get_by_label("text to measure on").fill(ascii_text)
        by_id(quality, "offgrid-quality-run").click()
        by_id(quality, "offgrid-quality-job").wait_for(timeout=WAIT_MS)
        table = by_id(quality, "offgrid-quality-results")
        table.wait_for(timeout=WAIT_MS)
        rows = table.locator("tbody tr")
        assert rows.count() == 4
        assert rows.first.inner_text().startswith("F32 (reference)")
        chart = by_id(quality, "offgrid-quality-chart")
        points = by_id(chart, "offgrid-quality-point")
        assert points.count() == 4
        front = chart.locator('[data-front="true"]')
        assert front.filter(has_text="F32 (ref)").count() == 1  # KLD 0: always on the front
        assert chart.locator("polyline").count() == 1
        assert "generation tokens/s" in chart.text_content()
        assert {p.text_content() for p in points.all()} == {"F32 (ref)", "Q8_0", "Q4_K_M", "Q2_K"}
        quality.scroll_into_view_if_needed()
        shoot(quality, "sidebar-quality")
        assert page.locator('[data-testid="offgrid-error"]').count() == 0
    finally:
        shoot(page, "sidebar-quality-99-last")
        shutil.copy(jupyter_lab.log, ARTIFACTS / "jupyterlab-quality.log")
