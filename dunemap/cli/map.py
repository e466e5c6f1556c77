"""``dunemap map``: embedding rasters (one, tiles of one grid, or many scenes) to class-map COGs, here or on Dask."""

from __future__ import annotations

import argparse
from pathlib import Path

from dunemap.acquire.archive import ArchiveConfig, map_archive
from dunemap.cli.options import (
    add,
    add_backend,
    add_no_progress,
    add_overwrite,
    add_precision_device,
    add_replace_text,
    add_windows,
    config_from_args,
    model_from_args,
)
from dunemap.errors import ConfigError
from dunemap.io.outputs import check_outputs
from dunemap.mapping.batch import map_inputs
from dunemap.mapping.config import ClusterConfig, MapConfig
from dunemap.mapping.jobs import expand_inputs, plan_jobs
from dunemap.runtime import ModelSpec


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.mapping.config import FRACTION_ENCODINGS
    from dunemap.mapping.windows import BLEND_MODES

    d, c = MapConfig(), ClusterConfig()
    p = subparsers.add_parser(
        "map", help="map a whole embedding raster to a class-map COG (sliding windows, resumable)",
        description="Predict dune classes over a float or AEF int8 embedding raster (GeoTIFF, VRT, or several "
        "tiles mosaicked on the fly) with overlapping windows blended smoothly, streaming block by block. "
        "Writes a colour-tabled uint8 COG (255 = nodata); a killed run started again resumes.",
    )
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                   help="embedding raster(s) with the model's band count; quoted patterns such as 'scenes/*.tif' "
                        "are expanded (none with --index)")
    add(p, "weights", required=True)
    outputs = p.add_mutually_exclusive_group(required=True)
    outputs.add_argument("--out", type=Path,
                         help="one output class map (COG) of all inputs (tiles of one grid); companions go beside it; "
                              "with --index, the folder of the zone set")
    outputs.add_argument("--out-dir", type=Path,
                         help="one map per input, OUT_DIR/<stem>_classes.tif, all in one job")
    add(p, "text_embeddings", ModelSpec)
    add_replace_text(p)
    add(p, "catalog", ModelSpec,
        help="class catalog (YAML/TOML): checked against the checkpoint's; for an open-vocabulary model "
                        "(trained with --head text) it is the set of classes to map, any number of them (default: the "
                   "checkpoint's)")
    add_windows(p)
    add(p, "batch_size", MapConfig, help="windows per forward pass (0 = on a CPU as many as make 256 x 256 "
        "pixels, e.g. 4 windows of 128 px or 1 of 512 px, for each OpenVINO stream; on a GPU from its free memory)")
    p.add_argument("--blend", default=d.blend, choices=sorted(BLEND_MODES),
                   help="weighting of overlapping windows (uniform = plain averaging)")
    p.add_argument("--block-size", type=int, default=d.block_size, metavar="PX",
                   help="output block side in pixels, a multiple of 16 (default 0 = sized from the input type "
                        "to stay within the memory budget)")
    p.add_argument("--confidence", default=d.confidence, choices=sorted(FRACTION_ENCODINGS),
                   help="also write OUT_confidence.tif with the maximum class probability")
    p.add_argument("--probabilities", default=d.probabilities, choices=sorted(FRACTION_ENCODINGS),
                   help="also write OUT_probabilities.tif with one probability band per class")
    p.add_argument("--applicability", action="store_true",
                   help="also write OUT_applicability.tif: band 1 the dissimilarity index to the training data, "
                        "band 2 the area of applicability (1 inside, 0 outside, 255 nodata); see docs/trust.md")
    p.add_argument("--stac", action="store_true",
                   help="also write a STAC Item (MAP.json beside each map) describing the map and its companions")
    p.add_argument("--cog-tile", type=int, default=d.cog_tile, metavar="PX", help="COG tile side in pixels")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="ignore the journal of an earlier, interrupted run and start over")
    add_overwrite(p, "an existing map and its companions (companions this run does not write are removed)")
    p.add_argument("--allow-no-crs", action="store_true",
                   help="map an input that has no CRS (its map cannot be measured, vectorised or overlaid)")
    p.add_argument("--no-prefetch", dest="prefetch", action="store_false",
                   help="read blocks in the main thread instead of ahead in the background")
    p.add_argument("--profile", action="store_true",
                   help="print seconds per stage (read, decode, model, blend, assemble, write) and the seam index "
                        "of the finished map (class changes across window edges / elsewhere; 1 = no visible seams)")
    add(p, "threads", help="torch CPU threads, per worker with a cluster (default: torch's choice)")
    dask = p.add_argument_group("Dask cluster (see docs/scale_out.md)")
    dask.add_argument("--workers", type=int, default=c.workers, metavar="N",
                      help="start a local Dask cluster of N worker processes, one thread and one model each "
                           "(0: map in this process)")
    dask.add_argument("--scheduler", metavar="ADDRESS",
                      help="use a running Dask scheduler, e.g. tcp://HOST:8786 (default: none)")
    dask.add_argument("--max-in-flight", type=int, default=c.max_in_flight, metavar="N",
                      help="block tasks submitted at a time (0 = 2 per worker thread, at least 4)")
    dask.add_argument("--dashboard-address", metavar="ADDRESS", default=c.dashboard_address,
                      help="dashboard of a local cluster: [HOST]:PORT or ':0' for any free port")
    dask.add_argument("--allowed-failures", type=int, metavar="N", default=c.allowed_failures,
                      help="worker deaths a block task may be part of before the run fails, for clusters started "
                           "here (a running scheduler keeps its own setting)")
    _add_archive(p)
    add_precision_device(p)
    add_backend(p)
    add_no_progress(p)
    p.set_defaults(func=run, config_class=MapConfig)


def _add_archive(p: argparse.ArgumentParser) -> None:
    """``--index``: map a desert straight from the AEF archive, one map per UTM zone (dunemap.acquire.archive)."""
    from dunemap.regions import REGIONS

    a = ArchiveConfig()
    g = p.add_argument_group("AEF archive: map a desert across UTM zones from the tile index (no INPUT)")
    g.add_argument("--index", metavar="aef_index.parquet", default=a.index or None,
                   help="AEF tile index (local file or URL); maps each UTM zone of the year's tiles meeting the "
                        "area into OUT/utm<zone>.tif and lists them in OUT/catalog.json (default: none, map INPUT)")
    area = g.add_mutually_exclusive_group()
    area.add_argument("--bbox", nargs=4, type=float, metavar=("W", "S", "E", "N"), default=a.bbox,
                      help="WGS84 box to map in degrees (default: none; or --region)")
    area.add_argument("--region", choices=sorted(REGIONS), default=a.region,
                      help="a region preset's box to map (default: none; or --bbox)")
    g.add_argument("--year", type=int, default=a.year or None, help="embedding year (default: none; needed with --index)")
    g.add_argument("--rewrite", action="append", default=[], metavar="OLD=NEW",
                   help="replace a path prefix of the index, e.g. s3://bucket/=https://host/bucket/ (repeatable; "
                        "default: none)")
    g.add_argument("--context", type=int, default=a.context, metavar="PX",
                   help="pixels of embeddings read around a zone's own ground as the model's context")
    g.add_argument("--allowed-tile-failures", type=int, default=a.allowed_tile_failures, metavar="N",
                   help="tiles that may stay unreadable after the retries with the run still succeeding; each "
                        "leaves its zone's map unfinished (resumable) and is named in the catalog")


def run(args: argparse.Namespace) -> int:
    import logging

    import torch

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads {args.threads} must be at least 1")
        torch.set_num_threads(args.threads)
    config = config_from_args(MapConfig, args)
    cluster = ClusterConfig(workers=args.workers, scheduler=args.scheduler, max_in_flight=args.max_in_flight,
                            torch_threads=args.threads, allowed_failures=args.allowed_failures,
                            dashboard_address=args.dashboard_address)
    if cluster.enabled and not args.verbose:
        import distributed  # noqa: F401  (configures its loggers when imported; a local scheduler logs here)

        logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.index is not None:
        return _run_archive(args, config, cluster)
    if not args.inputs:
        raise ConfigError("give the embedding raster(s) to map (INPUT), or --index with --bbox/--region and --year")
    stac = _stac_paths(args) if args.stac else []
    result = map_inputs(args.inputs, model_from_args(args), out=args.out, out_dir=args.out_dir, config=config,
                        cluster=cluster)
    print(result.summary())
    if stac:
        from dunemap.products.provenance import write_stac_item

        sources = {job.out.absolute(): job.sources for job in plan_jobs(expand_inputs(args.inputs), args.out,
                                                                        args.out_dir)}
        for m in result.maps:
            print(f"wrote {write_stac_item(m.path, sources=sources.get(Path(m.path).absolute(), ()))}")
    return 0


def _stac_paths(args: argparse.Namespace) -> list[Path]:
    """The STAC Items ``--stac`` will write, checked against the output policy before any mapping."""
    from dunemap.products.provenance import stac_path

    jobs = plan_jobs(expand_inputs(args.inputs), args.out, args.out_dir)
    paths = [stac_path(job.out) for job in jobs]
    check_outputs(paths, [p for job in jobs for p in job.sources], overwrite=args.overwrite)
    return paths


def _run_archive(args: argparse.Namespace, config: MapConfig, cluster: ClusterConfig) -> int:
    from dunemap.acquire.index import parse_rewrite

    if args.inputs or args.out is None or args.stac:
        raise ConfigError("--index maps the archive into the folder --out; give no INPUT, no --out-dir and no --stac")
    if args.year is None:
        raise ConfigError("--index needs --year")
    archive = ArchiveConfig(index=args.index, year=args.year, out=args.out, bbox=args.bbox, region=args.region,
                            rewrites=[parse_rewrite(r) for r in args.rewrite], context=args.context,
                            allowed_tile_failures=args.allowed_tile_failures)
    result = map_archive(archive, model_from_args(args), config, cluster)
    print(result.summary())
    return 0
