"""Benchmarks across a real Dask LocalCluster (two worker processes, one thread each).

The workers download from our mirror on loopback: they have no HF_ENDPOINT of their own (the
client sends its endpoint with each task) and each has its own models folder.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest

distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from offgrid_nb import cli  # noqa: E402
from offgrid_nb.bench import benchmark, load_runs, plot_comparison, save_runs  # noqa: E402
from offgrid_nb.corpus import sample_text  # noqa: E402
from offgrid_nb.download import download  # noqa: E402
from offgrid_nb.errors import ClusterError, InvalidArgumentError  # noqa: E402
from offgrid_nb.fleet import (  # noqa: E402
    FLEET_QUALITY_COLUMNS,
    FleetProgress,
    HubModel,
    compare,
    connect,
    fleet_benchmark,
    hub_model,
    version_differences,
)
from offgrid_nb.mirror import MirrorServer  # noqa: E402
from offgrid_nb.synthetic import quantize  # noqa: E402
from offgrid_nb.widgets import BenchmarkPanel  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/

REPO = "offgrid-test/fleet-GGUF"
QUANTS = ("Q8_0", "Q4_K_M", "Q4_0", "Q2_K")
MODELS = [f"{REPO}:{q}" for q in QUANTS]
BROKEN = "offgrid-test/fleet-broken-GGUF/broken-Q4_0.gguf"
FAST = {"prompt_tokens": 8, "output_tokens": 4, "iterations": 1, "warmup": False, "n_threads": 1}
SLOWER = {**FAST, "output_tokens": 64, "iterations": 3}  # a run outlasts the client's poll
# generated models have ASCII byte tokens only (llama.cpp aborts on a byte it lacks)
TEXT = sample_text()[:3000].encode("ascii", "ignore").decode()


@pytest.fixture(scope="module")
def fleet_mirror(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("fleet_hub")
    for quant in QUANTS:
        quantize(tiny_model, root / REPO / f"fleet-{quant}.gguf", quant)
    broken = root / BROKEN
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a gguf file" * 1000)
    with MirrorServer(root) as server:
        yield server


def _own_folders(root: str, dask_worker) -> str:
    """Run on each worker: its own models and cache folders (no HF_ENDPOINT: sent per task)."""
    folder = Path(root) / str(dask_worker.name)
    os.environ["OFFGRID_MODELS_DIR"] = str(folder / "models")
    os.environ["OFFGRID_CACHE_DIR"] = str(folder / "cache")
    os.environ.pop("HF_ENDPOINT", None)
    return os.environ["OFFGRID_MODELS_DIR"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            resources={"bench": 1},
            dashboard_address=None,
        ) as local,
        distributed.Client(local) as client,
    ):
        folders = client.run(_own_folders, str(tmp_path_factory.mktemp("workers")))
        yield client, {address: Path(folder) for address, folder in folders.items()}


@pytest.fixture
def client(cluster, fleet_mirror, monkeypatch, tmp_path):
    """The cluster's client; this process (only) points at the mirror."""
    monkeypatch.setenv("HF_ENDPOINT", fleet_mirror.url)
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path / "client-models"))
    fleet_mirror.requests.clear()
    return cluster[0]


def _overlaps(runs: pd.DataFrame) -> list[str]:
    found = []
    for worker, tasks in runs.drop_duplicates("task_start").groupby("worker"):
        spans = sorted(zip(tasks["task_start"], tasks["task_end"], strict=True))
        found += [worker for (_, end), (start, _) in itertools.pairwise(spans) if start < end]
    return found


def test_four_models_spread_over_two_workers_one_at_a_time(client, cluster, fleet_mirror):
    runs = fleet_benchmark(MODELS, **FAST)
    assert len(runs) == 4
    assert runs["error"].isna().all()
    assert set(runs["worker"]) == set(cluster[1])  # both workers used
    assert not _overlaps(runs)
    assert (runs["generation_tokens_per_sec"] > 0).all()
    assert list(runs["quant"]) == list(QUANTS)  # rows in the order the models were given
    # each model really downloaded, from the mirror, into the folder of the worker that ran it
    assert fleet_mirror.requests["resolve"] >= 4
    for row in runs.itertuples():
        assert (cluster[1][row.worker] / REPO / f"{row.model}.gguf").is_file()
    assert (runs["download_s"] > 0).all()


def test_per_worker_runs_every_model_on_every_worker(client, cluster):
    runs = fleet_benchmark(MODELS[:2], per="worker", **FAST)
    pairs = set(zip(runs["model"], runs["worker"], strict=True))
    assert len(runs) == 4
    assert pairs == {(f"fleet-{q}", w) for q in QUANTS[:2] for w in cluster[1]}
    assert not _overlaps(runs)


def test_per_host_is_one_worker_per_machine(client):
    runs = fleet_benchmark(MODELS[:1], per="host", **FAST)
    assert len(runs) == 1  # both workers are on this machine
    assert runs["host"].iloc[0] == os.uname().nodename
    assert (runs["backend"].iloc[0], runs["gpu_layers"].iloc[0]) == ("CPU", 0)  # per host


def test_the_same_model_twice_is_two_runs(client):
    runs = compare([MODELS[0], MODELS[0]], client=client, **FAST)
    assert len(runs) == 2
    assert runs["task_start"].nunique() == 2
    assert runs["error"].isna().all()


def test_a_second_run_downloads_nothing(client, fleet_mirror):
    fleet_benchmark(MODELS[:2], per="worker", **FAST)
    fleet_mirror.requests.clear()
    runs = fleet_benchmark(MODELS[:2], per="worker", **FAST)
    assert runs["error"].isna().all()
    assert fleet_mirror.requests["resolve"] == 0


def test_a_broken_model_is_an_error_row_and_the_others_finish(client):
    progress: list[FleetProgress] = []
    runs = fleet_benchmark([MODELS[0], BROKEN, MODELS[1]], progress=progress.append, **FAST)
    assert list(runs["model"]) == ["fleet-Q8_0", BROKEN, "fleet-Q4_K_M"]
    assert runs["error"].isna().tolist() == [True, False, True]
    assert "GGUF" in runs["error"].iloc[1]
    assert runs["generation_tokens_per_sec"].isna().tolist() == [False, True, False]
    assert sorted(p.done for p in progress) == [1, 2, 3]
    assert {p.total for p in progress} == {3}
    assert [p.error is not None for p in progress].count(True) == 1


def test_no_worker_with_the_resource_fails_at_once(client, fleet_mirror):
    with pytest.raises(ClusterError, match="resource 'gpu'") as caught:
        fleet_benchmark(MODELS, resource="gpu", **FAST)
    assert "--resources" in caught.value.hint
    assert fleet_mirror.requests["resolve"] == 0  # nothing was submitted


def test_cancel_skips_the_models_not_started(client):
    cancel = threading.Event()
    runs = fleet_benchmark(  # one worker: the runs come one after another
        MODELS[:3], per="host", progress=lambda _: cancel.set(), cancel=cancel, **SLOWER
    )
    errors = runs.drop_duplicates("task_start")["error"]
    assert errors.isna().sum() in (1, 2)  # the first run, and maybe the one started meanwhile
    assert (errors.dropna() == "cancelled before it started").all()
    assert runs.loc[runs["error"].notna(), "generation_tokens_per_sec"].isna().all()


def test_bad_arguments_fail_before_anything_runs(client):
    with pytest.raises(InvalidArgumentError, match="per"):
        fleet_benchmark(MODELS, per="rack")
    with pytest.raises(InvalidArgumentError, match="Unknown benchmark options: tokens"):
        fleet_benchmark(MODELS, tokens=3, iterations=1)
    with pytest.raises(InvalidArgumentError, match="iterations"):
        fleet_benchmark(MODELS, iterations=0)
    with pytest.raises(InvalidArgumentError, match="neither a Hub model nor a local one"):
        fleet_benchmark(["no-such-model"])


def test_version_differences_name_the_worker_and_package(client, cluster):
    versions = client.get_versions(packages=["offgrid-nb", "llama-cpp-python"])
    workers = sorted(cluster[1])
    assert version_differences(versions, workers) == []
    versions["workers"][workers[0]]["packages"]["llama-cpp-python"] = "0.0.1"
    assert version_differences(versions, workers) == [
        f"{workers[0]}: llama-cpp-python 0.0.1 (client: "
        f"{versions['client']['packages']['llama-cpp-python']})"
    ]


def test_hub_model_names(client, tmp_path):
    assert hub_model("a/b") == HubModel("a/b")
    assert hub_model("a/b:Q4_K_M") == HubModel("a/b", quant="Q4_K_M")
    assert hub_model("a/b/sub/x-Q8_0.gguf") == HubModel("a/b", file="sub/x-Q8_0.gguf")
    # a local model downloaded from the Hub stands for its Hub file
    download(REPO, quant="Q2_K")
    assert hub_model("fleet-Q2_K") == HubModel(REPO, file="fleet-Q2_K.gguf")
    handmade = Path(os.environ["OFFGRID_MODELS_DIR"]) / "handmade-Q8_0.gguf"
    handmade.write_bytes(b"x")
    with pytest.raises(InvalidArgumentError, match="no manifest"):
        hub_model("handmade")


def test_cli_benchmarks_on_the_scheduler(client, capsys):
    address = client.scheduler.address
    code = cli.main(["benchmark", *MODELS[:2], "--scheduler", address, "--per", "worker",
                     "--prompt-tokens", "8", "--output-tokens", "4", "--iterations", "1",
                     "--threads", "1", "--json"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 4
    assert {r["host"] for r in rows} == {os.uname().nodename}
    assert err.count("done") == 4  # a progress line per run


def test_cli_fleet_errors_are_one_line(client, capsys):
    code = cli.main(["benchmark", BROKEN, "--scheduler", client.scheduler.address])
    out, err = capsys.readouterr()
    assert code == 1
    assert BROKEN in out  # the table still shows the failed run
    assert "error: 1 of the runs failed" in err
    assert cli.main(["benchmark", "x", "--per", "host"]) == 1
    assert "error: --per needs --scheduler" in capsys.readouterr().err


def test_an_unreachable_scheduler_is_a_clear_error():
    with pytest.raises(
        ClusterError, match=r"Cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"
    ):
        connect("tcp://127.0.0.1:9", timeout=0.5)


def test_import_never_imports_dask_and_no_client_is_a_clear_error():
    code = (
        "import sys, offgrid_nb as og\n"
        "og.compare, og.fleet_benchmark\n"
        "import offgrid_nb.widgets.bench\n"
        "assert not {'dask', 'distributed'} & set(sys.modules), 'dask imported'\n"
        "try:\n"
        "    og.fleet_benchmark(['a/b'])\n"
        "except og.OffgridError as exc:\n"
        "    print(exc.message)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "No Dask client: connect to a cluster first"


def test_fleet_runs_plot_hosts_side_by_side_and_save_with_local_runs(client, tiny_model, tmp_path):
    runs = fleet_benchmark([*MODELS[:2], BROKEN], per="worker", **FAST)
    first = runs["worker"].iloc[0]
    runs["host"] = ["node-a" if w == first else "node-b" for w in runs["worker"]]  # two machines
    figure = plot_comparison(runs)
    prompt = figure.axes[0]
    assert [t.get_text() for t in prompt.get_xticklabels()] == ["fleet-Q8_0", "fleet-Q4_K_M"]
    assert [t.get_text() for t in prompt.get_legend().get_texts()] == ["node-a", "node-b"]
    assert len(prompt.patches) == 4  # two models x two hosts; the broken model has no bar
    csv = tmp_path / "runs.csv"
    save_runs(benchmark(tiny_model, **FAST).to_frame(), csv)  # a local run first
    save_runs(runs, csv)  # then fleet runs: more columns
    save_runs(benchmark(tiny_model, **FAST).to_frame(), csv)
    saved = load_runs(csv)
    assert len(saved) == len(runs) + 2
    assert saved["host"].isna().tolist() == [True] + [False] * len(runs) + [True]
    assert saved["error"].notna().sum() == 2  # the broken model, on each worker


def test_each_worker_measures_quality_and_save_runs_keeps_it(client, tiny_model, tmp_path):
    text = tmp_path / "text.txt"  # a file of the client's: the workers get its text
    text.write_text(TEXT)
    options = {"text": text, "n_ctx": 32, "chunks": 2, "reference": MODELS[0]}
    runs = fleet_benchmark(MODELS[:2], per="worker", quality=True, quality_options=options,
                           **{**FAST, "iterations": 2})  # fmt: skip
    assert runs["error"].isna().all()
    assert len(runs) == 2 * 2 * 2  # two models on two workers, two iterations each
    assert set(FLEET_QUALITY_COLUMNS) | {"quality_reference"} <= set(runs.columns)
    assert (runs["quality_reference"] == "fleet-Q8_0").all()
    assert (runs["tokens_scored"] == 2 * (32 - 1 - 16)).all()
    by_model = runs.groupby("model")
    assert by_model["ppl"].nunique().tolist() == [1, 1]  # the same figures on every worker
    q8, q4 = (runs[runs["model"] == f"fleet-{q}"].iloc[0] for q in ("Q8_0", "Q4_K_M"))
    assert q8["kld"] == pytest.approx(0.0, abs=1e-6)  # the reference against itself
    assert q8["same_top_pct"] == 100.0
    assert q4["kld"] > 0
    assert q4["ppl"] != q8["ppl"]
    csv = tmp_path / "runs.csv"
    save_runs(benchmark(tiny_model, **FAST).to_frame(), csv)  # a run without quality first
    save_runs(runs, csv)
    saved = load_runs(csv)
    assert saved["ppl"].isna().tolist() == [True] + [False] * len(runs)
    assert saved["kld"].iloc[1:].tolist() == pytest.approx(runs["kld"].tolist())
    assert saved["quality_reference"].iloc[1:].tolist() == runs["quality_reference"].tolist()
    alone_options = {"text": TEXT, "n_ctx": 32, "chunks": 1}
    alone = fleet_benchmark(MODELS[1:2], quality=True, quality_options=alone_options, **FAST)
    assert alone["quality_reference"].iloc[0] == "fleet-Q4_K_M"  # no reference: PPL alone
    assert alone["ppl"].iloc[0] > 0
    assert "ppl" not in fleet_benchmark(MODELS[1:2], **FAST)


def test_bad_quality_options_fail_before_anything_runs(client, fleet_mirror):
    for options, error in [
        ({"n_ctx": 8}, "at least 16"),
        ({"bogus": 1}, "Unknown quality options: bogus"),
        ({"text": "x", "dataset": "wikitext-2"}, "not both"),
    ]:
        with pytest.raises(InvalidArgumentError, match=error):
            fleet_benchmark(MODELS, quality=True, quality_options=options, **FAST)
    assert fleet_mirror.requests["resolve"] == 0  # nothing was submitted


def test_panel_targets_the_cluster_when_a_client_exists(client):
    panel = BenchmarkPanel(MODELS[:2], **{k: FAST[k] for k in ("prompt_tokens", "iterations")})
    assert [value for _, value in panel.target.options] == ["local", "cluster"]
    panel.target.value, panel.per.value = "cluster", "worker"
    panel.run()
    assert panel.wait(60)
    assert panel.status.kind == "note", panel.status.value
    assert "Done: 4 runs on the cluster" in panel.status.value
    assert len(panel.runs) == 4 * FAST["iterations"]
    assert panel.runs["worker"].nunique() == 2
    assert (panel.progress.value, panel.progress.max) == (4, 4)
    assert bytes(panel.plot.value).startswith(b"\x89PNG")


def test_a_crashed_worker_is_an_error_row_and_the_others_finish(client, cluster):
    # Last in the module: the nanny restarts the killed worker without our folder settings.
    killed = []

    def crash(event: FleetProgress) -> None:
        if not killed:  # the first run is done: kill its worker while it runs its second
            killed.append(event.rows["worker"].iloc[0])
            with contextlib.suppress(Exception):  # the worker dies before it can answer
                client.run(os._exit, 1, workers=killed)

    runs = fleet_benchmark(MODELS[:2], per="worker", progress=crash, **SLOWER)
    client.wait_for_workers(2)
    by_worker = runs.drop_duplicates("task_start").groupby("worker")["error"]
    survivor = next(w for w in cluster[1] if w not in killed)
    assert by_worker.get_group(survivor).isna().all()  # both its runs finished
    errors = by_worker.get_group(killed[0]).dropna()
    assert len(errors) == 1
    assert f"worker {killed[0]} left the cluster" in errors.iloc[0]
