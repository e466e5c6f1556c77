"""``dunemap benchmark quality|speed``: the baselines users try, and how fast each model runs."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from dunemap.cli.options import add, add_alias, add_no_progress, add_overwrite, config_from_args, csv_list, default_of
from dunemap.io.outputs import claim_outputs


def _int_list(value: str) -> list[int]:
    try:
        return [int(v) for v in csv_list(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {value!r}") from None


def _model_sizes(value: str) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for item in csv_list(value):
        model, sep, size = item.partition(":")
        if not sep or not size.isdigit():
            raise argparse.ArgumentTypeError(f"expected MODEL:SIZE pairs such as mit_b2:512, got {item!r}")
        out.setdefault(model, []).append(int(size))
    return out


def _checked(choices: list[str], what: str):
    def parse(value: str) -> list[str]:
        items = csv_list(value)
        bad = [v for v in items if v not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad or value!r}; valid: {', '.join(choices)}")
        return items
    return parse


def _join(values) -> str:
    return ",".join(str(v) for v in values)


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.comparison.spec import METHODS, PRESETS, PROTOCOLS, QualityConfig
    from dunemap.comparison.speed import MODES, PRECISIONS, SpeedConfig
    from dunemap.models import ARCHITECTURES

    p = subparsers.add_parser("benchmark", help="quality against per-pixel baselines and text ablations; speed",
                              description="Benchmarks that answer: does the text help, does the SegFormer beat the "
                              "random forest on embeddings, and how fast is each model?")
    sub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")

    q = sub.add_parser("quality", help="rf, knn, SegFormer with/without text, U-Net on synthetic regions",
                       description="Train and test every method on the synthetic five-region data under "
                       "leave-one-region-out, in-scene and new-scene protocols, over several seeds; write tables, "
                       "figures and a BENCHMARKS.md section. Finished runs are stored and reused.")
    q.add_argument("--preset", default=default_of(QualityConfig, "preset"), choices=sorted(PRESETS),
                   help="micro: seconds (tests); small: <= 20 min on a 2-core CPU; full: for a GPU")
    q.add_argument("--seeds", type=_int_list, default=default_of(QualityConfig, "seeds"), metavar="A,B,...",
                   help="comma-separated training seeds")
    q.add_argument("--out", type=Path, help="results folder (default benchmark-results/quality-PRESET)")
    q.add_argument("--methods", type=_checked(list(METHODS), "method"), default=default_of(QualityConfig, "methods"),
                   metavar="A,B,...",
                   help=f"comma-separated subset of {','.join(METHODS)}")
    q.add_argument("--protocols", type=_checked(list(PROTOCOLS), "protocol"),
                   default=default_of(QualityConfig, "protocols"), metavar="A,B,...",
                   help=f"comma-separated subset of {','.join(PROTOCOLS)}")
    add(q, "holdout_regions", QualityConfig,
        help="held-out regions of leave-one-region-out, comma-separated (default: the preset's)")
    add_alias(q, "--holdout", "--holdout-region", "holdout_regions", type=csv_list)
    q.add_argument("--work-dir", type=Path, metavar="DIR", help="synthetic data and training runs (default OUT/work)")
    add(q, "data_root", QualityConfig, help="benchmark on this seed-layout dataset (manifest.csv with regions) "
                                            "instead of synthetic data (default: synthetic data)")
    add(q, "catalog", QualityConfig, help="class catalog of --data-root (default: the packaged 10 classes)")
    add(q, "in_channels", QualityConfig)
    q.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"),
                   help="markdown file whose quality section is written or replaced (default ./BENCHMARKS.md)")
    q.add_argument("--no-benchmarks-md", dest="benchmarks_md", action="store_const", const=None,
                   help="do not touch any BENCHMARKS.md")
    add(q, "precision", QualityConfig, help="auto, fp32 or bf16 (default: the preset's)")
    add(q, "device", QualityConfig)
    add(q, "threads", QualityConfig, help="torch threads (default: torch's; 1 on a busy shared CPU)")
    q.add_argument("--keep-checkpoints", action="store_true", help="keep every run's checkpoints under WORK_DIR")
    add_no_progress(q)
    q.set_defaults(func=run_quality, config_class=QualityConfig)

    s = sub.add_parser("speed", help="forward and training samples/s of each model, fp32 and bf16",
                       description="Time forward passes and training steps of each architecture on random inputs "
                       "and write speed.json, speed.md and a BENCHMARKS.md section.")
    s.add_argument("--models", type=_checked(sorted(ARCHITECTURES), "model"), metavar="A,B,...",
                   default=default_of(SpeedConfig, "models"), help="comma-separated architectures")
    s.add_argument("--sizes", type=_int_list, default=default_of(SpeedConfig, "sizes"), metavar="PX,...",
                   help="comma-separated input sizes of every model")
    s.add_argument("--extra-sizes", type=_model_sizes, default=default_of(SpeedConfig, "extra_sizes"),
                   metavar="MODEL:PX,...", help="more sizes for some models as comma-separated MODEL:SIZE pairs")
    s.add_argument("--precisions", type=_checked(list(PRECISIONS), "precision"), metavar="A,B,...",
                   default=default_of(SpeedConfig, "precisions"), help=f"comma-separated subset of {','.join(PRECISIONS)}")
    s.add_argument("--modes", type=_checked(list(MODES), "mode"), default=default_of(SpeedConfig, "modes"),
                   metavar="A,B,...", help=f"comma-separated subset of {','.join(MODES)}")
    add(s, "batch_size", SpeedConfig)
    s.add_argument("--warmup", type=int, default=default_of(SpeedConfig, "warmup"), metavar="N",
                   help="untimed iterations per case")
    s.add_argument("--iters", type=int, default=default_of(SpeedConfig, "iters"), metavar="N",
                   help="timed iterations per case (the median is reported)")
    s.add_argument("--out", type=Path, default=Path("benchmark-results/speed"), help="where speed.json/.md go")
    s.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"),
                   help="markdown file whose speed section is written or replaced (default ./BENCHMARKS.md)")
    s.add_argument("--no-benchmarks-md", dest="benchmarks_md", action="store_const", const=None,
                   help="do not touch any BENCHMARKS.md")
    add(s, "device", SpeedConfig)
    add(s, "threads", SpeedConfig)
    add_overwrite(s, "speed.json and speed.md of an earlier run in --out")
    add_no_progress(s)
    s.set_defaults(func=run_speed, config_class=SpeedConfig)


def quality_command(args: argparse.Namespace) -> str:
    """The canonical command line of a quality benchmark (every option that shapes the results spelled out)."""
    parts = ["dunemap", "benchmark", "quality", "--preset", args.preset, "--seeds", _join(args.seeds),
             "--methods", _join(args.methods), "--protocols", _join(args.protocols), "--out", str(args.out)]
    for flag, value in (("--holdout-region", args.holdout_regions and _join(args.holdout_regions)),
                        ("--work-dir", args.work_dir), ("--data-root", args.data_root), ("--catalog", args.catalog),
                        ("--precision", args.precision), ("--device", None if args.device == "auto" else args.device),
                        ("--threads", args.threads)):
        if value is not None:
            parts += [flag, str(value)]
    if args.in_channels != 64:
        parts += ["--bands", str(args.in_channels)]
    return shlex.join(parts)


def speed_command(args: argparse.Namespace) -> str:
    """The canonical command line of a speed benchmark."""
    extra = _join(f"{m}:{s}" for m, sizes in args.extra_sizes.items() for s in sizes)
    parts = ["dunemap", "benchmark", "speed", "--models", _join(args.models), "--sizes", _join(args.sizes),
             "--extra-sizes", extra, "--precisions", _join(args.precisions), "--modes", _join(args.modes),
             "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--iters", str(args.iters),
             "--out", str(args.out)]
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    return shlex.join(parts)


def run_quality(args: argparse.Namespace) -> int:
    from dunemap.comparison.quality import run_quality as run
    from dunemap.comparison.spec import QualityConfig

    if args.out is None:
        args.out = Path("benchmark-results") / f"quality-{args.preset}"
    config = config_from_args(QualityConfig, args, command=quality_command(args))
    # finished runs in OUT are reused and the BENCHMARKS.md section is replaced by design; one writer at a time
    with claim_outputs([args.benchmarks_md], [args.data_root, args.catalog], resume=True,
                       folders=[args.out, args.work_dir]):
        result = run(config)
    print(f"{len(result.ran)} run(s) computed, {len(result.reused)} reused from {config.out / 'runs'}")
    for finding in result.findings:
        print(f"- {finding}")
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return 0


def run_speed(args: argparse.Namespace) -> int:
    from dunemap.comparison.report import speed_tables
    from dunemap.comparison.speed import SpeedConfig
    from dunemap.comparison.speed import run_speed as run

    config = config_from_args(SpeedConfig, args, command=speed_command(args))
    result = run(config)  # claims its outputs (an earlier speed.json or speed.md needs --overwrite)
    print(speed_tables(result.rows))
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return 0
