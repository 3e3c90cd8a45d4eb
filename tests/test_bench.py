"""Benchmarks on a real llama.cpp with a generated model: shape, counts, errors, plots."""

from __future__ import annotations

import json

import pytest
from matplotlib.figure import Figure

from offgrid_nb import engine
from offgrid_nb.bench import RUN_COLUMNS, benchmark, compare, load_runs, plot_comparison, save_runs
from offgrid_nb.errors import InvalidArgumentError, NotFoundError

SMALL = {"prompt_tokens": 32, "output_tokens": 8, "iterations": 2}


@pytest.fixture(scope="module")
def result(tiny_model):
    return benchmark(tiny_model, **SMALL)


def test_runs_and_summary(result):
    assert list(result.runs.columns) == RUN_COLUMNS
    assert len(result.runs) == 2
    assert (result.runs[["prompt_tokens_per_sec", "generation_tokens_per_sec"]] > 0).all().all()
    assert (result.runs["time_to_first_token_ms"] < result.runs["total_time_ms"]).all()
    assert list(result.summary.columns) == ["mean", "std"]
    assert result.summary.loc["prompt_tokens_per_sec", "mean"] == pytest.approx(
        result.runs["prompt_tokens_per_sec"].mean()
    )


def test_rows_record_where_the_layers_ran(result):
    frame = result.to_frame()
    assert set(frame["backend"]) == {"CPU"}  # this CPU-only build
    assert set(frame["devices"]) == {"CPU"}
    assert set(frame["gpu_layers"]) == {0}
    assert result.system["devices"] == ["CPU"]


def test_exact_token_counts_reach_llama_cpp(result):
    # pp32 + tg8 on a cleared cache: llama.cpp holds exactly prompt + output tokens.
    assert engine.loaded_model().llama.n_tokens == 32 + 8


def test_to_dict_has_the_documented_shape(result):
    data = json.loads(json.dumps(result.to_dict()))
    assert data["model"] == "tiny-llama-F32"
    assert {"prompt_tokens": 32, "output_tokens": 8, "iterations": 2}.items() <= data[
        "config"
    ].items()
    results = data["results"]
    for key in ("avg_prompt_tokens_per_sec", "avg_generation_tokens_per_sec",
                "avg_total_time_ms", "avg_memory_mb"):  # fmt: skip
        assert isinstance(results[key], float)
    assert len(results["runs"]) == 2
    assert set(results["runs"][0]) >= {
        "prompt_tokens_per_sec", "generation_tokens_per_sec", "total_time_ms", "memory_used_mb"
    }  # fmt: skip
    system = data["system"]
    assert {"cpu_percent", "memory_mb", "memory_total_mb", "cpu", "physical_cores",
            "threads_used", "llama_cpp_system_info"} <= set(system)  # fmt: skip


def test_plot_is_a_figure_with_two_panels(result):
    figure = result.plot()
    assert isinstance(figure, Figure)
    assert [ax.get_title() for ax in figure.axes] == ["Prompt processing", "Generation"]


def test_compare_save_and_reload(tiny_model, tmp_path):
    other = tmp_path / "copy-Q8.gguf"
    other.write_bytes(tiny_model.read_bytes())
    df = compare([tiny_model, other], prompt_tokens=16, output_tokens=4, iterations=1)
    assert list(df["model"]) == ["tiny-llama-F32", "copy-Q8"]
    assert engine.loaded_model().path == other.resolve()  # never two models at once
    csv = tmp_path / "runs.csv"
    save_runs(df, csv)
    save_runs(df, csv)  # another day: appended, one header
    again = load_runs(csv)
    assert len(again) == 4
    figure = plot_comparison(again)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["tiny-llama-F32", "copy-Q8"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_tokens": 0}, "Invalid prompt_tokens"),
        ({"output_tokens": -1}, "Invalid output_tokens"),
        ({"iterations": 0}, "Invalid iterations"),
        ({"n_threads": 0}, "Invalid n_threads"),
        ({"prompt_tokens": 3000}, "exceed tiny-llama-F32.gguf's context window"),
        ({"prompt_tokens": 100, "n_ctx": 64}, "raise n_ctx|do not fit in n_ctx=64"),
    ],
)
def test_bad_arguments(tiny_model, kwargs, message):
    with pytest.raises(InvalidArgumentError, match=message):
        benchmark(tiny_model, **kwargs)


def test_missing_model(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFGRID_MODELS_DIR", str(tmp_path))
    with pytest.raises(NotFoundError):
        benchmark("no-such-model")


def test_sampling_is_timed_beside_the_decodes(result):
    runs = result.runs
    assert (runs["sampling_ms_per_token"] > 0).all()
    assert result.to_dict()["results"]["avg_sampling_ms_per_token"] > 0
    # tokens/s count the decodes alone (as llama-bench); the total adds every sampling
    output = SMALL["output_tokens"]
    generation_ms = output / runs["generation_tokens_per_sec"] * 1000
    sampling_ms = output * runs["sampling_ms_per_token"]
    assert (runs["total_time_ms"] - runs["time_to_first_token_ms"]).tolist() == pytest.approx(
        (generation_ms + sampling_ms).tolist()
    )
    prompt_ms = SMALL["prompt_tokens"] / runs["prompt_tokens_per_sec"] * 1000
    assert (runs["time_to_first_token_ms"] > prompt_ms).all()  # + the first token's sampling


def test_llama_bench_mode_runs_each_test_in_a_context_sized_as_llama_bench_does(
    tiny_model, monkeypatch
):
    from offgrid_nb import bench

    sizes: list[int] = []
    load = bench.use_model

    def recorded(path, **options):
        sizes.append(options["n_ctx"])
        return load(path, **options)

    monkeypatch.setattr(bench, "use_model", recorded)
    result = benchmark(
        tiny_model, prompt_tokens=32, output_tokens=8, iterations=2, depth=16, llama_bench=True
    )
    assert sizes == [16 + 32, 16 + 8]  # pp32 @ d16, then tg8 @ d16: no cell to spare
    assert (result.config.prompt_test, result.config.generation_test) == ("pp32 @ d16", "tg8 @ d16")
    assert len(result.runs) == 2
    assert (result.runs[["prompt_tokens_per_sec", "generation_tokens_per_sec"]] > 0).all().all()
    assert (result.runs["time_to_first_token_ms"] < result.runs["total_time_ms"]).all()
