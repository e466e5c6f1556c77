"""The ``dunemap`` command: a thin argparse layer; each subcommand module calls one library function.

Every subcommand lives in its own module exposing ``register(subparsers)``; the module list below is
the only place that knows them all. Heavy imports happen inside each command's ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dunemap import __version__
from dunemap.errors import DunemapError

COMMAND_MODULES: tuple[str, ...] = (
    "dunemap.cli.train",
    "dunemap.cli.evaluate",
    "dunemap.cli.calibrate",
    "dunemap.cli.text",
    "dunemap.cli.prepare",
    "dunemap.cli.acquire",
    "dunemap.cli.map",
    "dunemap.cli.products",
    "dunemap.cli.accuracy",
    "dunemap.cli.synth",
    "dunemap.cli.benchmark",
    "dunemap.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dunemap",
        description="Map aeolian landforms from satellite embedding rasters with a text-fused SegFormer.",
    )
    parser.add_argument("--version", action="version", version=f"dunemap {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except DunemapError as exc:
        print(f"dunemap: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dunemap: interrupted", file=sys.stderr)
        return 130
