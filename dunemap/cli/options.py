"""Options shared by several commands, defined once."""

from __future__ import annotations

import argparse


def csv_list(value: str) -> list[str]:
    """Parse ``a,b,c`` into ``["a", "b", "c"]``."""
    return [v.strip() for v in value.split(",") if v.strip()]


def add_precision_device(parser: argparse.ArgumentParser, precision: str = "auto") -> None:
    parser.add_argument("--precision", default=precision, choices=("auto", "fp32", "bf16"),
                        help=f"auto: bf16 autocast where the CPU/GPU supports it natively, else fp32 (default {precision})")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def add_overwrite(parser: argparse.ArgumentParser, what: str = "an existing output") -> None:
    """``--overwrite``: the one flag that lets a command replace what an earlier run wrote."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


def add_replace_text(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replace-text", action="store_true",
                        help="let --text-embeddings replace the class text a dunemap checkpoint carries "
                             "(without it, other rows than the checkpoint's are an error)")
