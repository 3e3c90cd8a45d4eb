"""The ``offgrid`` command: parse arguments, call one core function, print the result.

Errors never reach the user as a traceback: an :class:`OffgridError` prints ``error: <message>``
and its hint on stderr and exits 1; a bad flag exits 2 (argparse); Ctrl+C exits 130.
``--debug`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from . import __version__
from .errors import (
    AmbiguousError,
    ChecksumMismatchError,
    InvalidArgumentError,
    NotFoundError,
    OffgridError,
)
from .sizes import parse_size

if TYPE_CHECKING:
    from .chat_template import TemplateChoice
    from .gguf_info import GGUFInfo
    from .hub import Variant

Handler = Callable[[argparse.Namespace], int]


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except OffgridError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def _non_negative_int(text: str) -> int:
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"not a whole number >= 0: {text!r}")


def cmd_search(args: argparse.Namespace) -> int:
    """``offgrid search``: blocks for people, JSON for scripts."""
    from .render import search_blocks, to_json
    from .search_fit import search

    df = search(
        args.query,
        author=args.author,
        quant=args.quant,
        sort=args.sort,
        limit=args.limit,
        include_gated=args.all,
        min_downloads=args.min_downloads,
        max_size=args.max_size,
        ram_gb=args.ram,
        vram_gb=args.vram,
        fits_only=args.ram is not None or args.vram is not None,
    )
    if args.json:
        print(to_json(df.drop(columns=["variants"]), total=df.attrs["total"]))
    else:
        if args.ram is not None:
            print(f"Models that fit in {args.ram:g} GB at 4096 tokens of context; each repo's")
            print("recommended file is its best quantization that fits.\n")
        if args.vram is not None:
            print(f"Offload to a {args.vram:g} GB GPU: gpu (every layer), partial, or cpu.\n")
        print(search_blocks(df))
    return 0


def _inspect_text(repo: str, filename: str, info: GGUFInfo, choice: TemplateChoice) -> list[str]:
    """The header summary of ``offgrid inspect``."""
    from .sizes import format_size

    def number(value: int | None, unit: str = "") -> str:
        return "?" if value is None else f"{value:,}{unit}"

    count = info.parameter_count
    params = f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
    if info.split_count > 1:
        params += f" in this shard of {info.split_count}"
    from .chat_template import GGUF

    template = choice.describe()
    if choice.kind == GGUF:
        first = (info.chat_template or "").strip().splitlines()[0]
        template += f": {first[:50]}{'...' if len(first) > 50 else ''}"
    return [
        f"{info.name or filename}  ({repo} / {filename})",
        f"  architecture   {info.architecture or '?'}",
        f"  parameters     {params}",
        f"  context        {number(info.context_length, ' tokens')} (trained)",
        f"  layers         {number(info.n_layers)}",
        f"  embedding      {number(info.n_embd)}",
        f"  heads          {number(info.n_head)} attention, {number(info.n_head_kv)} key/value"
        f" (head size {number(info.head_dim)})",
        f"  feed-forward   {number(info.n_ff)}",
        f"  vocabulary     {number(info.vocab_size, ' tokens')}"
        f" (tokenizer: {info.tokenizer_model or '?'})",
        f"  quantization   {info.quant or '?'}",
        f"  tensor data    {format_size(info.tensor_data_size)} in {info.tensor_count} tensors"
        f" (header {format_size(info.header_size)}, file {format_size(info.file_size)})",
        f"  template       {template}",
    ]


def cmd_inspect(args: argparse.Namespace) -> int:
    """``offgrid inspect REPO FILE``: a remote GGUF header and the memory the model needs."""
    import json
    from dataclasses import asdict

    from .chat_template import choose_template
    from .errors import UnsupportedModelError
    from .fit import available_memory, estimate_memory, machine_plan
    from .gguf_info import inspect_gguf
    from .sizes import format_size

    available = available_memory(args.ram)
    info = inspect_gguf(args.repo, args.file)
    choice = choose_template(info, f"{args.repo}/{args.file}")
    try:
        estimate = estimate_memory(info, args.ctx, args.kv_type)
    except UnsupportedModelError as exc:
        estimate, reason = None, exc.message
    plan = machine_plan(info, estimate, ram_gb=args.ram, vram_gb=args.vram) if estimate else None
    verdict = plan.ram_verdict if plan else None
    if args.json:
        data = {
            "info": info.to_dict(),
            "template": choice.describe(),
            "estimate": asdict(estimate) if estimate else None,
            "offload": asdict(plan) if plan else None,
        }
        print(json.dumps({**data, "available_bytes": available, "fits": verdict}, indent=2))
        return 0
    lines = _inspect_text(args.repo, args.file, info, choice)
    if estimate is None:
        lines.append(f"  memory         unknown: {reason}")
    else:
        lines += [
            f"  memory         {format_size(estimate.total_bytes)} at {estimate.n_ctx:,} tokens"
            f" = weights {format_size(estimate.weights_bytes)}"
            f" + KV cache {format_size(estimate.kv_cache_bytes)} ({estimate.kv_type})"
            f" + compute {format_size(estimate.compute_bytes)}",
            f"  verdict        {verdict} ({format_size(available)} available;"
            " fits: up to 80%, tight: up to 100%)",
            f"  offload        {plan.summary}"
            + "".join(f", {name} {format_size(n)}" for name, n in plan.device_bytes),
        ]
    print("\n".join(lines))
    return 0


def _ask(question: str) -> str | None:
    """The line typed in answer to ``question``; ``None`` when the input ended (Ctrl-D)."""
    try:
        return input(question)
    except EOFError:
        print()  # end the question's line
        return None


def _menu(options: list[Variant], recommended: Variant, fits: dict[str, str]) -> Variant:
    """A numbered menu on the terminal; Enter takes the recommended variant."""
    from .sizes import format_size

    options = [recommended] + [v for v in options if v != recommended]
    for i, variant in enumerate(options, start=1):
        note = "  (recommended)" if variant == recommended else ""
        fit = f"  {fits[variant.filename]}" if fits.get(variant.filename) else ""
        size = format_size(variant.size)
        print(f"  {i}. {variant.filename}  {variant.quant or '?'}  {size}{fit}{note}")
    while True:
        answer = _ask(f"Choose a file [1-{len(options)}, Enter = 1]: ")
        if answer is None:
            raise InvalidArgumentError(
                "No file chosen: the input ended",
                hint="name one with --file or --quant, or take the recommended one with -y",
            )
        answer = answer.strip() or "1"
        if answer.isdigit() and 1 <= int(answer) <= len(options):
            return options[int(answer) - 1]
        print(f"Please type a number from 1 to {len(options)}.")


def _pick_variant(args: argparse.Namespace) -> Variant:
    """The variant to download: as told; else the best that fits this machine's memory
    (``-y`` or no terminal), or chosen from a menu that marks it."""
    from .download import select_variant
    from .fit import recommend
    from .hub import variants

    interactive = sys.stdin.isatty() and not args.yes
    found = {v.filename: v for v in variants(args.repo)}
    if args.file or args.quant:
        try:
            return select_variant(args.repo, args.file, quant=args.quant)
        except AmbiguousError as exc:
            if not (interactive or args.yes):
                raise
            options = [found[name] for name in exc.candidates]
            return options[0] if args.yes else _menu(options, options[0], {})
    table = recommend(args.repo)
    picked = table.loc[table["recommended"], "filename"]
    if picked.empty:
        print("note: no variant fits in the memory available now; recommending by quality")
        chosen = select_variant(args.repo)
    else:
        chosen = found[picked.iloc[0]]
    if not interactive:
        return chosen
    fits = {row.filename: row.fits for row in table.itertuples() if isinstance(row.fits, str)}
    return _menu(list(found.values()), chosen, fits)


def cmd_download(args: argparse.Namespace) -> int:
    """``offgrid download-hf REPO``: resumable, verified download into the models folder."""
    from .download import check_connections, download
    from .render import ProgressPrinter

    if args.connections is not None:
        check_connections(args.connections)  # before the menu and any Hub call
    variant = _pick_variant(args)
    print(f"Downloading {args.repo} / {variant.filename}")
    path = download(
        args.repo,
        variant.filename,
        progress=ProgressPrinter(sys.stdout),
        connections=args.connections,
    )
    print(f"Model saved to: {path}")
    print(f"Run with: offgrid run {path.name.removesuffix('.gguf')}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """``offgrid list``: the local models."""
    from .library import list_models
    from .render import models_table

    print(models_table(list_models()))
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    """``offgrid rm NAME``: delete a local model (all shards and its manifest)."""
    from .library import remove_model

    removed = remove_model(args.name)
    shards = [path.name for path in removed if path.suffix == ".gguf"]
    more = f" and {len(shards) - 1} more shards" if len(shards) > 1 else ""
    print(f"Removed {shards[0]}{more}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``offgrid verify [NAME]``: re-hash local models against their manifests."""
    from .library import list_models, verify_model

    names = [args.name] if args.name else list(list_models()["name"])
    failed = 0
    for name in names:
        try:
            checked = verify_model(name)
        except ChecksumMismatchError as exc:
            failed += 1
            print(f"FAILED  {name}: {exc.message}")
            continue
        print(f"{'OK' if checked else 'SKIPPED (no manifest)':<8}{name}")
    return 1 if failed else 0


def _resolve_or_offer(name: str) -> str:
    """A local model, or a Hub reference downloaded first (with progress), or (for a catalog
    alias on a terminal) a download offered first."""
    from .catalog import lookup
    from .download import download, pull_model
    from .render import ProgressPrinter

    try:
        return str(pull_model(name, progress=ProgressPrinter(sys.stdout)))
    except NotFoundError as exc:
        entry = lookup(name)
        if entry is None:
            raise
        command = f"offgrid download-hf {entry.repo_id} --file {entry.filename}"
        if not sys.stdin.isatty():
            raise NotFoundError(exc.message, hint=f"get it with: {command}") from None
        answer = _ask(f"{name} is not downloaded. Download {entry.repo_id}? [Y/n] ")
        if answer is None or answer.strip().lower() not in ("", "y", "yes"):
            raise NotFoundError(exc.message, hint=f"get it with: {command}") from None
    return str(download(entry.repo_id, entry.filename, progress=ProgressPrinter(sys.stdout)))


def cmd_run(args: argparse.Namespace) -> int:
    """``offgrid run MODEL``: an interactive chat in the terminal."""
    from .chat import Chat
    from .repl import run_session

    chat = Chat(
        _resolve_or_offer(args.model),
        system=args.system,
        n_ctx=args.ctx,
        n_threads=args.threads,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        template=args.template,
    )
    return run_session(chat, args.model, stdin=sys.stdin, stdout=sys.stdout)


def _benchmark_options(args: argparse.Namespace) -> dict[str, int | bool | None]:
    return {
        "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens,
        "iterations": args.iterations,
        "n_threads": args.threads,
        "n_ctx": args.ctx,
        "depth": args.depth,
        "llama_bench": args.llama_bench,
    }


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``offgrid benchmark MODEL...``: llama-bench-style figures as a table, JSON or CSV."""
    if args.scheduler:
        return _fleet_benchmark(args)
    if args.per:
        raise InvalidArgumentError(
            "--per needs --scheduler", hint="e.g. --scheduler tcp://HOST:8786"
        )
    from .bench import benchmark
    from .render import benchmark_table

    results = [benchmark(model, **_benchmark_options(args)) for model in args.model]
    if args.json:
        data = [r.to_dict() for r in results]
        print(json.dumps(data[0] if len(data) == 1 else data, indent=2))
    elif args.csv:
        import pandas as pd

        pd.concat([r.to_frame() for r in results]).to_csv(sys.stdout, index=False)
    else:
        print("\n\n".join(benchmark_table(r) for r in results))
    return 0


def _fleet_benchmark(args: argparse.Namespace) -> int:
    """``offgrid benchmark MODEL... --scheduler ADDRESS``: on the cluster's workers."""
    from .fleet import FleetProgress, connect, fleet_benchmark
    from .render import fleet_table

    def report(event: FleetProgress) -> None:
        outcome = f"failed: {event.error}" if event.error else "done"
        print(f"[{event.done}/{event.total}] {event.model} {outcome}", file=sys.stderr)

    with connect(args.scheduler) as client:
        df = fleet_benchmark(
            args.model,
            client,
            per=args.per or "spread",
            progress=report,
            **_benchmark_options(args),
        )
    if args.json:
        print(df.to_json(orient="records", indent=2))
    elif args.csv:
        df.to_csv(sys.stdout, index=False)
    else:
        print(fleet_table(df))
    failed = df.drop_duplicates(["model", "worker", "task_start"])["error"].notna().sum()
    if failed:
        print(f"error: {failed} of the runs failed (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def cmd_mirror(args: argparse.Namespace) -> int:
    """``offgrid mirror DIR``: serve a folder as a read-only Hub."""
    from .mirror import serve

    serve(
        args.dir,
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        rate_per_connection=args.rate_per_connection,
        rate_total=args.rate_total,
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """``offgrid serve``: the REST API (``/v1/...``) as a standalone server."""
    from .server.config import OffgridAPI
    from .server.standalone import serve

    config = OffgridAPI(parallel=args.parallel, default_threads=args.threads or 0)
    serve(
        host=args.host, port=args.port, token=args.token, config=config,
        ollama_port=args.ollama_port,
    )  # fmt: skip
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    """``offgrid ps``: what a running server (``offgrid serve``, or Jupyter's) has loaded."""
    import time
    import urllib.error
    import urllib.request

    from .errors import HubUnavailableError
    from .sizes import format_size

    url = args.url.rstrip("/") + "/v1/ps"
    request = urllib.request.Request(url)
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            models = json.load(response)["models"]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise HubUnavailableError(
            f"No offgrid server answered at {url}: {getattr(exc, 'reason', exc)}",
            hint="start one with offgrid serve, or pass --url (and --token)",
        ) from None
    print(f"{'NAME':<40}{'MEMORY':>10}{'CONTEXT':>9}  UNTIL")
    for model in models:
        left = model["expires_at"]
        until = "kept" if left is None else f"{max(0, left - time.time()) / 60:.1f} min"
        memory = format_size(model["memory_bytes"])
        print(f"{model['name']:<40}{memory:>10}{model['n_ctx']:>9}  {until}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``offgrid demo``: the whole pipeline offline, on a generated model."""
    from .demo import run_demo

    run_demo(keep=args.keep, generated=args.generated)
    return 0


def cmd_hardware(args: argparse.Namespace) -> int:
    """``offgrid hardware``: the devices of this llama.cpp build and their memory."""
    from .devices import hardware
    from .render import to_json

    df = hardware()
    if args.json:
        print(to_json(df, backends=df.attrs["backends"], notice=df.attrs["notice"]))
        return 0
    print(f"llama.cpp backends: {', '.join(df.attrs['backends'])}")
    for row in df.itertuples(index=False):
        print(
            f"  {row.name:<10} {row.kind:<5} {row.free_gb:6.1f} GB free of {row.total_gb:6.1f}"
            f"  {row.description}" + ("  (unified with RAM)" if row.unified else "")
        )
    if df.attrs["notice"]:
        print(f"note: {df.attrs['notice']}")
    return 0


def cmd_perplexity(args: argparse.Namespace) -> int:
    """``offgrid perplexity MODEL``: printed as llama-perplexity prints it."""
    from .perplexity import ChunkProgress, perplexity

    def show(event: ChunkProgress) -> None:
        print(f"[{event.done}]{event.ppl:.4f},", end="", flush=True)

    result = perplexity(
        args.model, args.file, dataset=args.dataset, n_ctx=args.ctx, chunks=args.chunks,
        batch_size=args.batch_size, n_threads=args.threads, progress=None if args.json else show,
    )  # fmt: skip
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(f"\nFinal estimate: PPL = {result.ppl:.4f} +/- {result.ppl_err:.5f}")
    return 0


def cmd_quality(args: argparse.Namespace) -> int:
    """``offgrid quality REPO|MODEL...``: PPL, KLD, same-top (and speed) per variant."""
    from .quality import quality

    models = args.models[0] if len(args.models) == 1 and "/" in args.models[0] else args.models
    quants = args.quants.split(",") if args.quants else None
    df = quality(
        models, quants=quants, reference=args.reference, text=args.file, dataset=args.dataset,
        n_ctx=args.ctx, chunks=args.chunks, speed=not args.no_speed, n_threads=args.threads,
    )  # fmt: skip
    if args.json:
        print(df.to_json(orient="records", indent=2))
    elif args.csv:
        df.to_csv(sys.stdout, index=False)
    else:
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full ``offgrid`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="offgrid",
        description="Find, pull, chat with and benchmark GGUF models from the Hugging Face Hub.",
    )
    parser.add_argument("--version", action="version", version=f"offgrid_nb {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("search", help="search the Hub for GGUF models")
    p.add_argument("query", nargs="?", help="text to look for in repo ids")
    p.add_argument("-a", "--author", help="only repos of this user or organisation")
    p.add_argument("-q", "--quant", help="only repos with this quantization, e.g. Q4_K_M")
    p.add_argument(
        "-s",
        "--sort",
        default="downloads",
        help="downloads (default), likes, created, modified, relevance, trending",
    )
    p.add_argument("-l", "--limit", type=_positive_int, default=20, help="at most N repos (20)")
    p.add_argument("--all", action="store_true", help="include gated repos")
    p.add_argument("--min-downloads", type=_non_negative_int, default=0, metavar="N")
    p.add_argument("--max-size", type=_size_arg, metavar="SIZE", help="e.g. 4GB or 500MB")
    p.add_argument(
        "--ram", type=_positive_float, metavar="GB", help="only models that fit in this much memory"
    )
    p.add_argument("--vram", type=_positive_float, metavar="GB", help="and a GPU of this much")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("inspect", help="read a GGUF header on the Hub; estimate memory and fit")
    p.add_argument("repo", help="owner/name on the Hub")
    p.add_argument("file", help="the GGUF file in the repo")
    p.add_argument("--ctx", type=_positive_int, help="context in tokens (default: model's, <=4096)")
    p.add_argument("--kv-type", default="f16", help="KV cache type: f16 (default), q8_0, q4_0...")
    p.add_argument(
        "--ram", type=_positive_float, metavar="GB", help="memory to fit in (default: available)"
    )
    p.add_argument(
        "--vram", type=_positive_float, metavar="GB", help="GPU memory (default: this machine's)"
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_inspect)

    p = sub.add_parser("download-hf", help="download a GGUF model from the Hub (resumable)")
    p.add_argument("repo", help="owner/name on the Hub")
    which = p.add_mutually_exclusive_group()
    which.add_argument("-f", "--file", help="exact file in the repo")
    which.add_argument("-q", "--quant", help="quantization, e.g. Q4_K_M")
    p.add_argument("-y", "--yes", action="store_true", help="take the recommended file, no menu")
    p.add_argument(
        "--connections",
        type=_positive_int,
        metavar="N",
        help="parts fetched at once (default: adaptive, OFFGRID_DOWNLOAD_CONNECTIONS)",
    )
    p.set_defaults(handler=cmd_download)

    p = sub.add_parser("run", help="chat with a local model in the terminal")
    p.add_argument("model", help="model name (see offgrid list), path, or catalog alias")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--ctx", type=_positive_int, help="context window in tokens")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--max-tokens", type=_positive_int, default=512)
    p.add_argument("--threads", type=_positive_int, metavar="N", help="default: physical cores")
    p.add_argument(
        "--template",
        metavar="NAME",
        help="chat template: a llama.cpp built-in name (gemma, llama2, chatml...), none, or Jinja",
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("benchmark", help="measure prompt and generation speed of models")
    p.add_argument(
        "model",
        nargs="+",
        help="model name (see offgrid list) or path; with --scheduler also owner/name[:QUANT] "
        "or owner/name/file.gguf on the Hub",
    )
    p.add_argument("--prompt-tokens", type=_positive_int, default=512, metavar="N")
    p.add_argument("--output-tokens", type=_positive_int, default=128, metavar="N")
    p.add_argument(
        "--iterations", type=_positive_int, metavar="N", help="default 3 (5 with --llama-bench)"
    )
    p.add_argument("--threads", type=_positive_int, metavar="N", help="default: physical cores")
    p.add_argument("--ctx", type=_positive_int, metavar="N", help="context to allocate")
    p.add_argument(
        "--depth",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="tokens in the KV cache before each timed phase (llama-bench -d)",
    )
    p.add_argument(
        "--llama-bench",
        action="store_true",
        help="llama-bench's tests: pp and tg each from the (depth-filled) cache, 5 repetitions",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on a Dask cluster's workers (tcp://HOST:8786; needs offgrid-nb[cluster])",
    )
    p.add_argument(
        "--per",
        choices=["spread", "worker", "host"],
        help="with --scheduler: each model once (spread, the default), on every worker, or "
        "once per host",
    )
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the JSON result")
    output.add_argument("--csv", action="store_true", help="print one CSV row per iteration")
    p.set_defaults(handler=cmd_benchmark)

    p = sub.add_parser("list", help="list local models")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("rm", help="delete a local model")
    p.add_argument("name", help="model name (see offgrid list)")
    p.set_defaults(handler=cmd_rm)

    p = sub.add_parser("verify", help="re-hash local models against their sha256")
    p.add_argument("name", nargs="?", help="one model (default: all)")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("mirror", help="serve a models folder as a read-only Hub mirror")
    p.add_argument("dir", help="folder laid out as <org>/<repo>/<files>")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    p.add_argument("--port", type=_positive_int, default=8080)
    p.add_argument("--latency-ms", type=float, default=0.0, help="simulate a slow link")
    for flag, what in (
        ("--rate-per-connection", "each connection carries, e.g. 25MB"),
        ("--rate-total", "all connections together carry, e.g. 100MB"),
    ):
        p.add_argument(flag, type=_size_arg, metavar="BYTES", help=f"bytes/s {what}")
    p.set_defaults(handler=cmd_mirror)

    p = sub.add_parser("serve", help="serve the REST API (OpenAI-compatible chat) on /v1")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    p.add_argument("--port", type=_non_negative_int, default=11611, help="0 picks a free port")
    p.add_argument("--token", help="require the header Authorization: Bearer TOKEN")
    p.add_argument(
        "--ollama-port",
        type=_non_negative_int,
        metavar="PORT",
        help="also listen on PORT (11434 is Ollama's), for clients set up for Ollama",
    )
    p.add_argument(
        "--parallel",
        type=_positive_int,
        default=4,
        metavar="N",
        help="generations decoded together, each with its own context (default 4)",
    )
    p.add_argument("--threads", type=_positive_int, metavar="N", help="default: physical cores")
    p.set_defaults(handler=cmd_serve)

    p = sub.add_parser("ps", help="show the model a running server has loaded")
    p.add_argument("--url", default="http://127.0.0.1:11611", help="the server (offgrid serve's)")
    p.add_argument("--token", help="its token (Authorization: Bearer)")
    p.set_defaults(handler=cmd_ps)

    p = sub.add_parser("demo", help="run search -> download -> chat -> benchmark offline")
    p.add_argument("--keep", action="store_true", help="keep the demo's temporary folder")
    p.add_argument(
        "--generated", action="store_true", help="use a generated model, not the real one"
    )
    p.set_defaults(handler=cmd_demo)

    p = sub.add_parser("hardware", help="the devices llama.cpp can use here, and their memory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_hardware)

    for name, help_text in (
        ("perplexity", "perplexity of a local model, as llama-perplexity computes it"),
        ("quality", "PPL and KL-divergence of a repo's variants (or local models) vs a reference"),
    ):
        p = sub.add_parser(name, help=help_text)
        if name == "perplexity":
            p.add_argument("model", help="a local model name or path")
            p.add_argument("-b", "--batch-size", type=_positive_int, help="tokens per decode")
        else:
            p.add_argument("models", nargs="+", help="owner/repo, or local models")
            p.add_argument("--quants", help="comma-separated, e.g. Q4_K_M,Q8_0")
            p.add_argument("--reference", help="the reference variant (default: the largest)")
            p.add_argument("--no-speed", action="store_true", help="skip the speed benchmark")
            p.add_argument("--csv", action="store_true", help="print CSV")
        text = p.add_mutually_exclusive_group()
        text.add_argument(
            "-f", "--file", help="a text file (default: a sample shipped with Python)"
        )
        text.add_argument("--dataset", help="a Hub dataset: wikitext-2")
        p.add_argument("-c", "--ctx", type=_positive_int, default=512, help="tokens per chunk")
        p.add_argument("--chunks", type=_positive_int, help="score at most this many chunks")
        p.add_argument("-t", "--threads", type=_positive_int, help="CPU threads")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(handler=cmd_perplexity if name == "perplexity" else cmd_quality)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``offgrid`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except OffgridError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of ours: one line, the traceback only on request
        if args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print("hint: rerun with --debug and report the traceback", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
