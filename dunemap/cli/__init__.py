"""The ``dunemap`` command: a thin argparse layer; each subcommand module calls one library function.

Every subcommand lives in its own module exposing ``register(subparsers)``; the module list below is
the only place that knows them all. Heavy imports happen inside each command's ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from dunemap import __version__
from dunemap.cli.options import HelpFormatter, add_quiet, add_verbose
from dunemap.errors import DunemapError

COMMAND_MODULES: tuple[str, ...] = (
    "dunemap.cli.train",
    "dunemap.cli.evaluate",
    "dunemap.cli.calibrate",
    "dunemap.cli.text",
    "dunemap.cli.prepare",
    "dunemap.cli.acquire",
    "dunemap.cli.map",
    "dunemap.cli.suggest",
    "dunemap.cli.products",
    "dunemap.cli.accuracy",
    "dunemap.cli.synth",
    "dunemap.cli.benchmark",
    "dunemap.cli.demo",
)


class Parser(argparse.ArgumentParser):
    """Every (sub)command's parser: defaults shown in the help, metavars named after the option."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("allow_abbrev", False)  # a config file must know which options the command line gave
        super().__init__(*args, **kwargs)


def leaf_parsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """Every runnable command's parser by its command words, e.g. ``{"synth scene": ...}``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return {prefix.strip(): parser}
    out = {}
    for name, child in subs[0].choices.items():
        out.update(leaf_parsers(child, f"{prefix} {name}"))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="dunemap",
        description="Map aeolian landforms from satellite embedding rasters with a text-fused SegFormer.",
    )
    parser.add_argument("--version", action="version", version=f"dunemap {__version__}")
    add_verbose(parser)
    add_quiet(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    for leaf in leaf_parsers(parser).values():
        if leaf is not parser:
            add_quiet(leaf, default=argparse.SUPPRESS)  # also after the command: dunemap map ... --quiet
            add_verbose(leaf, default=argparse.SUPPRESS)  # and dunemap map ... -v
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)
    # our own progress at INFO; libraries (GDAL via rasterio, pyogrio, ...) only when something is wrong
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("dunemap").setLevel(logging.DEBUG if args.verbose else logging.WARNING if args.quiet
                                          else logging.INFO)
    if args.quiet or not sys.stderr.isatty():  # no carriage-return bars in logs and pipes
        args.progress = False
    if not getattr(args, "progress", True):
        os.environ["TQDM_DISABLE"] = "1"  # also the library bars that take no progress argument
    try:
        return int(args.func(args) or 0)
    except DunemapError as exc:
        print(f"dunemap: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dunemap: interrupted", file=sys.stderr)
        return 130
