"""The notebooks run top to bottom without an error, against our mirror of the repos they use.

Each notebook is executed in a fresh kernel by nbclient with ``HF_ENDPOINT`` pointing at
``notebook_hub_root`` served by our mirror (the ``hub`` fixture), so the notebooks' own code,
written for the real Hub, runs offline on generated models.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from offgrid_nb.mirror import MirrorServer

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT = 120

# Run after 01_quickstart in the same kernel: the panels finished without an error, and show it.
QUICKSTART_PROBE = """
import json
panels = [search_panel, download_panel, chat_panel, bench_panel]
assert all(p.wait(60) for p in panels), "a panel is still busy"
print(json.dumps({
    "errors": [p.status.value for p in panels if p.status.kind == "error"],
    "repos": list(search_panel.frame["id"]),
    "variants": list(search_panel.download_buttons),
    "downloaded": str(download_panel.path),
    "reply": chat_panel.chat.history[-1],
    "benchmarked": sorted(set(bench_panel.runs["model"])),
}))
"""


@pytest.fixture(scope="session")
def mirror(notebook_hub_root: Path):
    """Serve the notebooks' repos instead of the tests' (``hub`` points everything at it)."""
    with MirrorServer(notebook_hub_root) as server:
        yield server


def execute(name: str, workdir: Path, probe: str | None = None) -> nbformat.NotebookNode:
    """Run a notebook (plus ``probe``, if given) in a fresh kernel with our environment."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if probe is not None:
        nb.cells.append(new_code_cell(probe))
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()  # raises CellExecutionError on the first cell that fails
    return nb


def text_of(cell: nbformat.NotebookNode) -> str:
    """What a cell printed and returned, as text."""
    return "".join(
        output.get("text", "") + output.get("data", {}).get("text/plain", "")
        for output in cell.get("outputs", [])
    )


def images_of(nb: nbformat.NotebookNode) -> list[dict]:
    return [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def stderr_of(nb: nbformat.NotebookNode) -> list[str]:
    return [
        output["text"]
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if output["output_type"] == "stream" and output["name"] == "stderr"
    ]


def test_quickstart_runs_and_its_panels_work(hub, tmp_path):
    nb = execute("01_quickstart.ipynb", tmp_path, QUICKSTART_PROBE)
    assert stderr_of(nb) == []
    report = json.loads(nb.cells[-1]["outputs"][-1]["text"])
    assert report["errors"] == []
    assert report["repos"][0] == "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
    assert "qwen2.5-0.5b-instruct-q4_k_m.gguf" in report["variants"]
    assert Path(report["downloaded"]).is_file()
    assert report["reply"]["role"] == "assistant"
    assert report["reply"]["content"]
    assert report["benchmarked"] == ["qwen2.5-0.5b-instruct-q4_k_m"]
    assert images_of(nb), "the benchmark plot was not shown"


def test_find_a_model_runs(hub, tmp_path):
    nb = execute("02_find_a_model.ipynb", tmp_path)
    assert stderr_of(nb) == []
    assert len(images_of(nb)) == 2  # sizes of one repo, sizes across repos


def test_benchmark_report_runs_and_exports(hub, tmp_path):
    nb = execute("03_benchmark_report.ipynb", tmp_path)
    assert stderr_of(nb) == []
    report = tmp_path / "benchmark-report"
    assert sorted(p.name for p in report.iterdir()) == [
        "comparison.png",
        "runs.csv",
        "summary.json",
    ]
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary) == {"Q4_K_M", "Q8_0"}


def test_rest_api_runs_against_the_jupyter_server_it_is_in(jupyter_lab):
    nb = execute("04_rest_api.ipynb", jupyter_lab.root)  # the kernel's cwd is the server's root
    assert stderr_of(nb) == []
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert text_of(code[0]).strip() == f"{jupyter_lab.url}offgrid/v1"
    assert "'status': 'done'" in text_of(code[3])  # the download job
    assert "qwen2.5-0.5b-instruct-q4_k_m" in text_of(code[4])  # the local models
    assert "completion_tokens" in text_of(code[5])  # the chat over HTTP
    assert text_of(code[6]).strip()  # the openai client streamed a reply
