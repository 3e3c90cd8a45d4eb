"""The ``offgrid`` command: parse arguments, call one core function, print the result.

Errors never reach the user as a traceback: an :class:`OffgridError` prints ``error: <message>``
and its hint on stderr and exits 1; a bad flag exits 2 (argparse); Ctrl+C exits 130.
``--debug`` shows the traceback of an unexpected error.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from . import __version__
from .errors import OffgridError
from .sizes import parse_size

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


def _non_negative_int(text: str) -> int:
    if text.isdigit():
        return int(text)
    raise argparse.ArgumentTypeError(f"not a whole number >= 0: {text!r}")


def cmd_search(args: argparse.Namespace) -> int:
    """``offgrid search``: blocks for people, JSON for scripts."""
    from .hub import search
    from .render import search_blocks, to_json

    df = search(
        args.query,
        author=args.author,
        quant=args.quant,
        sort=args.sort,
        limit=args.limit,
        include_gated=args.all,
        min_downloads=args.min_downloads,
        max_size=args.max_size,
    )
    if args.json:
        print(to_json(df.drop(columns=["variants"]), total=df.attrs["total"]))
    else:
        print(search_blocks(df))
    return 0


def cmd_mirror(args: argparse.Namespace) -> int:
    """``offgrid mirror DIR``: serve a folder as a read-only Hub."""
    from .mirror import serve

    serve(args.dir, host=args.host, port=args.port, latency_ms=args.latency_ms)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``offgrid demo``: the whole pipeline offline, on a generated model."""
    from .demo import run_demo

    run_demo(keep=args.keep)
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
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=cmd_search)

    p = sub.add_parser("mirror", help="serve a models folder as a read-only Hub mirror")
    p.add_argument("dir", help="folder laid out as <org>/<repo>/<files>")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    p.add_argument("--port", type=_positive_int, default=8080)
    p.add_argument("--latency-ms", type=float, default=0.0, help="simulate a slow link")
    p.set_defaults(handler=cmd_mirror)

    p = sub.add_parser("demo", help="run search -> download -> chat -> benchmark offline")
    p.add_argument("--keep", action="store_true", help="keep the demo's temporary folder")
    p.set_defaults(handler=cmd_demo)
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
