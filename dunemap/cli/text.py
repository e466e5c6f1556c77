"""``dunemap text``: encode a class catalog to a text-embedding .npy, or list a catalog's classes."""

from __future__ import annotations

import argparse

from dunemap.cli.options import add, default_of

ENCODE_MODES = ("catalog", "random", "shuffled")  # text modes that produce a matrix ("none" has none)


def register(subparsers: argparse._SubParsersAction) -> None:
    from dunemap.knowledge.text import export_text_embeddings

    parser = subparsers.add_parser("text", help="class catalog and text embeddings",
                                   description="Encode or list the expert descriptions of the landform classes.")
    sub = parser.add_subparsers(dest="text_command", required=True, metavar="ACTION")

    enc = sub.add_parser("encode", help="encode a catalog's descriptions to FILE.npy (+ FILE.json provenance)")
    enc.add_argument("--catalog", metavar="FILE", default=None,
                     help="class catalog (.yaml/.toml); default: the packaged 10-class dune catalog")
    add(enc, "encoder", export_text_embeddings,
        help="text encoder: minilm (bundled, 384-d) or st:<dir> (local sentence-transformers model)")
    enc.add_argument("--mode", choices=ENCODE_MODES, default=default_of(export_text_embeddings, "mode"),
                     help="catalog, or an ablation: random (seeded unit vectors), "
                          "shuffled (catalog rows given to the wrong classes)")
    add(enc, "seed", export_text_embeddings, help="seed of the random / shuffled ablations")
    enc.add_argument("--cache-dir", metavar="DIR", default=None,
                     help="text embedding cache (default $DUNEMAP_CACHE/text or ~/.cache/dunemap/text)")
    enc.add_argument("--out", metavar="FILE.npy", required=True, help="output matrix; FILE.json gets its provenance")
    enc.add_argument("--overwrite", action="store_true", help="replace an existing FILE.npy and FILE.json")
    enc.set_defaults(func=run_encode)

    show = sub.add_parser("show", help="list the classes of a catalog")
    show.add_argument("--catalog", metavar="FILE", default=None,
                      help="class catalog (.yaml/.toml); default: the packaged 10-class dune catalog")
    show.add_argument("--descriptions", action="store_true", help="also print each class's description")
    show.set_defaults(func=run_show)


def run_encode(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dunemap.io.outputs import claim_outputs
    from dunemap.knowledge.text import export_text_embeddings, sidecar_path

    npy_input = args.encoder[4:] if args.encoder.startswith("npy:") else None
    with claim_outputs([args.out, sidecar_path(Path(args.out))], [args.catalog, npy_input], overwrite=args.overwrite):
        source = export_text_embeddings(args.out, catalog=args.catalog, encoder=args.encoder, mode=args.mode,
                                        seed=args.seed, cache_dir=args.cache_dir)
    print(f"wrote {args.out}: {source.num_classes} x {source.dim} ({source.mode}, encoder {source.encoder}, "
          f"catalog {source.catalog_sha256[:12]})")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from dunemap.knowledge.catalog import load_catalog

    catalog = load_catalog(args.catalog)
    print(f"catalog {catalog.name} v{catalog.version}: {catalog.num_classes} classes, sha256 {catalog.sha256[:12]}")
    width = max(len(n) for n in catalog.names)
    for c in catalog.classes:
        hex_color = "#{:02x}{:02x}{:02x}".format(*c.color)
        print(f"{c.id:>3}  {c.name:<{width}}  {hex_color}  {c.label}")
        if args.descriptions:
            print(f"     {' '.join(c.description.split())}")
    return 0
