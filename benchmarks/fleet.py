"""What does the fleet add per model, and does a second run download anything?

Four generated models (the tiny model at four quantizations) on a Dask ``LocalCluster`` of two
worker processes (one thread each, ``bench=1``, each with its own models folder), served by our
mirror on loopback. Interleaved rounds of:

- ``fleet``: ``fleet_benchmark(models)`` (spread). Overhead per model = (wall time - the busiest
  worker's task time) / models: scheduling, shipping the task and the rows, the version check,
  the cancel check, polling. Target: under 1 s. Round 1 is cold (the workers download the
  models); from round 2 on a model already on its worker must not be fetched again.
- ``local``: ``bench.compare(models)`` in this process, one after another: the baseline.

    python benchmarks/fleet.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import distributed
import pandas as pd

from offgrid_nb import bench
from offgrid_nb.fleet import fleet_benchmark
from offgrid_nb.mirror import MirrorServer
from offgrid_nb.synthetic import quantize, write_tiny_model

REPO = "bench/fleet-GGUF"
QUANTS = ("Q8_0", "Q4_K_M", "Q4_0", "Q2_K")
OPTIONS = {"prompt_tokens": 128, "output_tokens": 64, "iterations": 3, "n_threads": 1}


def own_folders(root: str, dask_worker: distributed.Worker) -> str:
    folder = Path(root) / str(dask_worker.name)
    os.environ["OFFGRID_MODELS_DIR"] = str(folder / "models")
    os.environ["OFFGRID_CACHE_DIR"] = str(folder / "cache")
    return str(folder)


def busiest_worker_seconds(runs: pd.DataFrame) -> float:
    tasks = runs.drop_duplicates("task_start")
    spans = pd.to_datetime(tasks["task_end"]) - pd.to_datetime(tasks["task_start"])
    return spans.groupby(tasks["worker"]).sum().max().total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = write_tiny_model(root / "src" / "fleet-F32.gguf")
        local = [quantize(source, root / "hub" / REPO / f"fleet-{q}.gguf", q) for q in QUANTS]
        models = [f"{REPO}:{q}" for q in QUANTS]
        with (
            MirrorServer(root / "hub") as mirror,
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     resources={"bench": 1}, dashboard_address=None) as cluster,
            distributed.Client(cluster) as client,
        ):  # fmt: skip
            client.run(own_folders, str(root / "workers"))
            print(f"{'round':>5}  {'kind':<6}{'wall s':>8}{'busiest s':>11}"
                  f"{'overhead/model s':>18}{'files fetched':>15}{'download s':>12}")  # fmt: skip
            overheads, walls = [], {"fleet": [], "local": []}
            for number in range(1, args.rounds + 1):
                mirror.requests.clear()
                start = time.perf_counter()
                runs = fleet_benchmark(models, client, endpoint=mirror.url, **OPTIONS)
                wall = time.perf_counter() - start
                assert runs["error"].isna().all(), runs["error"].dropna().tolist()
                busiest = busiest_worker_seconds(runs)
                overhead = (wall - busiest) / len(models)
                fetched = mirror.requests["resolve"]
                download = runs.drop_duplicates("task_start")["download_s"].median()
                print(f"{number:>5}  {'fleet':<6}{wall:>8.2f}{busiest:>11.2f}{overhead:>18.3f}"
                      f"{fetched:>15}{download:>12.3f}")  # fmt: skip
                if number > 1:  # round 1 also downloads: measured, but not the steady state
                    overheads.append(overhead)
                    walls["fleet"].append(wall)
                    assert fetched == 0, f"round {number} fetched {fetched} files again"
                start = time.perf_counter()
                bench.compare(local, **OPTIONS)
                wall = time.perf_counter() - start
                walls["local"].append(wall)
                print(f"{number:>5}  {'local':<6}{wall:>8.2f}")
        fleet, here = statistics.median(walls["fleet"]), statistics.median(walls["local"])
        print(
            f"\nrounds 2-{args.rounds}, medians: overhead {statistics.median(overheads):.3f} s "
            f"per model (target < 1 s); fleet wall {fleet:.2f} s vs local {here:.2f} s "
            f"= {fleet / here:.2f}x; files fetched after round 1: 0 (download once)"
        )


if __name__ == "__main__":
    main()
