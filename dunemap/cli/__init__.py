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
from dunemap.io.space import full_disk_error, says_no_space

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


# Each command's module and one-line help, so that `dunemap --help` (and an unknown command) need not import
# the modules, which import the library (torch, GDAL); tests/cli checks this table against the modules.
COMMANDS: dict[str, tuple[str, str]] = {  # command -> (module, one-line help)
    "train": ("dunemap.cli.train", "train on img_dir/ann_dir tiles (the seed's recipe by default)"),
    "evaluate": ("dunemap.cli.evaluate", "OA, mIoU, Kappa, F1 of a checkpoint on a split"),
    "calibrate": ("dunemap.cli.calibrate", "calibrated confidence and an area of applicability for a checkpoint"),
    "text": ("dunemap.cli.text", "class catalog and text embeddings"),
    "prepare": ("dunemap.cli.prepare",
        "tile embedding rasters + labels into img_dir/ann_dir tiles split by spatial blocks"),
    "gee-script": ("dunemap.cli.acquire", "print an Earth Engine Code Editor script exporting AEF embeddings"),
    "fetch-gee": ("dunemap.cli.acquire", "start the same AEF export through earthengine-api"),
    "fetch-aef": ("dunemap.cli.acquire",
        "read AEF COG windows over a bbox into one GeoTIFF (the archive's int8, or float32)"),
    "map": ("dunemap.cli.map", "map a whole embedding raster to a class-map COG (sliding windows, resumable)"),
    "suggest": ("dunemap.cli.suggest",
        "propose patches to label where the model is unsure or outside its area of applicability"),
    "stats": ("dunemap.cli.products", "area in km2 of each class (per zone) of a class map, to CSV and JSON"),
    "quicklook": ("dunemap.cli.products", "PNG of a class map with legend, scale bar and north arrow"),
    "vectorize": ("dunemap.cli.products",
        "polygons of each class patch to a GeoPackage, Shapefile, GeoJSON, FlatGeobuf or GeoParquet"),
    "mosaic": ("dunemap.cli.products",
        "one class COG in a single CRS from a zone set or several class maps (nearest neighbour)"),
    "sample": ("dunemap.cli.accuracy", "stratified random reference points of a class map, to label in a GIS"),
    "accuracy": ("dunemap.cli.accuracy",
        "accuracy and error-adjusted class areas with 95 %% intervals from labelled points"),
    "synth": ("dunemap.cli.synth",
        "generate synthetic dune-field embeddings and labels (a demo scene or a training dataset)"),
    "benchmark": ("dunemap.cli.benchmark", "quality against per-pixel baselines and text ablations; speed"),
    "demo": ("dunemap.cli.demo", "synthesise dune fields, train, evaluate, map a held-out scene"),
}


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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``dunemap`` parser with every command; given ``command`` (a word of :data:`COMMANDS`, or "" for none),
    only that command's module is imported and the others are listed by name and help alone."""
    parser = Parser(
        prog="dunemap",
        description="Map aeolian landforms from satellite embedding rasters with a text-fused SegFormer.",
    )
    parser.add_argument("--version", action="version", version=f"dunemap {__version__}")
    add_verbose(parser)
    add_quiet(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    wanted = COMMAND_MODULES if command is None else [COMMANDS[command][0]] if command else []
    for name in wanted:
        importlib.import_module(name).register(sub)
    for name, (_, text) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=text)  # listed only: this run does not use it
    order = list(COMMANDS)
    sub._choices_actions.sort(key=lambda a: order.index(a.dest) if a.dest in order else len(order))
    for leaf in leaf_parsers(parser).values():
        if leaf is not parser:
            add_quiet(leaf, default=argparse.SUPPRESS)  # also after the command: dunemap map ... --quiet
            add_verbose(leaf, default=argparse.SUPPRESS)  # and dunemap map ... -v
    return parser


def _command_word(argv: list[str]) -> str:
    """The command ``argv`` names (its first word that is not an option; dunemap's own options take no value),
    or "" when it names none of :data:`COMMANDS`."""
    word = next((a for a in argv if not a.startswith("-")), "")
    return word if word in COMMANDS else ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_word(argv))
    args = parser.parse_args(argv)
    args._argv = argv
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
    except OSError as exc:
        if not says_no_space(exc):
            raise
        where = exc.filename or os.getcwd()  # a file a library wrote on its own (not one of the outputs)
        print(f"dunemap: error: {full_disk_error(exc, where)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dunemap: interrupted", file=sys.stderr)
        return 130
