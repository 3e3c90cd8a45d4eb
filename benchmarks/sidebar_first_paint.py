"""What the JupyterLab sidebar costs: /lab's first paint and time to ready, with and without it.

Two JupyterLab servers run side by side on loopback, identical but for the front-end
extensions they offer (``--LabApp.labextensions_path``: every installed extension, or every one
but ``offgrid-nb``); page loads alternate between them, each in a fresh Chromium context (cold
cache), and medians are compared. Also prints the size of the sidebar's bundle.

    flock /tmp/offgrid-heavy.lock .venv/bin/python benchmarks/sidebar_first_paint.py [loads]

Needs /usr/bin/chromium and the playwright package (the ``test`` extra).
"""

from __future__ import annotations

import gzip
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
EXTENSIONS = Path(sys.prefix) / "share/jupyter/labextensions"
NAME = "offgrid-nb"
TOKEN = "offgrid-bench"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
READY = ".jp-LauncherCard"  # the launcher's cards: JupyterLab has restored its layout


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _extensions_dir(folder: Path, *, sidebar: bool) -> Path:
    """A labextensions folder linking every installed extension (but ours, unless ``sidebar``)."""
    folder.mkdir()
    for entry in EXTENSIONS.iterdir():
        scoped = entry.name.startswith("@")
        for ext in entry.iterdir() if scoped else [entry]:
            if ext.name == NAME and not sidebar:
                continue
            link = folder / ext.relative_to(EXTENSIONS)
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(ext)
    return folder


def _start(work: Path, label: str, extensions: Path) -> tuple[subprocess.Popen, str]:
    """A JupyterLab server with its own config and settings folders; its /lab URL."""
    port = _port()
    env = {**os.environ}
    for name in ("config", "runtime", "settings", "workspaces", "root"):
        (work / label / name).mkdir(parents=True)
    env |= {
        "JUPYTER_CONFIG_DIR": str(work / label / "config"),
        "JUPYTER_RUNTIME_DIR": str(work / label / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(work / label / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(work / label / "workspaces"),
        "OFFGRID_MODELS_DIR": str(work / "models"),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={work / label / 'root'}", "--ServerApp.allow_root=True",
        f"--LabApp.labextensions_path={extensions}",
    ]  # fmt: skip
    log = (work / f"{label}.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}api/status?token={TOKEN}", timeout=2):
                return process, f"{url}lab?token={TOKEN}"
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label} server did not start") from None
            time.sleep(0.2)


def _load(browser, url: str, *, sidebar: bool) -> tuple[float, float]:
    """(first contentful paint, ready) in ms after navigation start, in a fresh context."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(url)
        page.locator(READY).first.wait_for(timeout=60_000)
        ready = page.evaluate("performance.now()")
        if sidebar:  # the sidebar is there, so the "with" loads did load it
            page.locator('.jp-SideBar li[data-id="offgrid-sidebar"]').wait_for(timeout=10_000)
        paint = page.evaluate(
            "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? NaN"
        )
        return paint, ready
    finally:
        context.close()


def bundle_size() -> tuple[int, int]:
    """(bytes, gzip bytes) of the sidebar's built JavaScript."""
    scripts = sorted((ROOT / "offgrid_nb/labextension/static").glob("*.js"))
    raw = sum(p.stat().st_size for p in scripts)
    packed = sum(len(gzip.compress(p.read_bytes(), 9)) for p in scripts)
    return raw, packed


def main(loads: int = 7) -> None:
    """Print the comparison table."""
    raw, packed = bundle_size()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        servers = {
            label: _start(work, label, _extensions_dir(work / f"ext-{label}", sidebar=sidebar))
            for label, sidebar in (("without", False), ("with", True))
        }
        times: dict[str, list[tuple[float, float]]] = {label: [] for label in servers}
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True, args=FLAGS
                )
                for label, (_, url) in servers.items():  # warm-up: server caches, not measured
                    _load(browser, url, sidebar=label == "with")
                for _ in range(loads):  # interleaved
                    for label, (_, url) in servers.items():
                        times[label].append(_load(browser, url, sidebar=label == "with"))
                browser.close()
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(timeout=20)

    base = {k: statistics.median(t[k] for t in times["without"]) for k in (0, 1)}
    print(f"sidebar bundle: {raw / 1000:.1f} kB of JavaScript ({packed / 1000:.1f} kB gzipped)")
    print(f"{loads} interleaved cold loads of /lab per variant, medians:")
    print(f"{'variant':<10}{'first paint ms':>16}{'ratio':>8}{'ready ms':>12}{'ratio':>8}")
    for label in ("without", "with"):
        paint = statistics.median(t[0] for t in times[label])
        ready = statistics.median(t[1] for t in times[label])
        print(
            f"{label:<10}{paint:>16.0f}{paint / base[0]:>8.2f}{ready:>12.0f}{ready / base[1]:>8.2f}"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 7)
