"""Every ``dunemap ...`` command line that README.md and docs/*.md show works as written.

How a printed command becomes a test (the rules, so that a new line in the docs is covered by itself):

- **Placeholders are real tiny files.** Each upper-case or example name (``EMB.tif``, ``MAP.tif``, ``DATA``,
  ``RUN``, ``best_model.pth``, ``zones.gpkg`` ...) maps to a file of a small world built once
  (:func:`world`): a 96 x 96 px synthetic namib scene, a tiny synthetic dataset, a mit_tiny trained one step
  (calibrated, with an area of applicability), its map, labelled reference points, zones, the packaged catalog
  and the MADS-layout checkpoint fixture for the published weights. A command runs in a fresh folder where its
  input names link to those files; a name that follows ``--out``/``--save-dir``/``--out-dir`` is an output and
  is not created, so the command writes it as a user's would.
- **Optional parts are included**: ``[--zones zones.gpkg]`` runs with the option; ``a|b`` takes ``a``.
- **Sizes are made tiny by appending options** (the last flag wins in argparse), listed in ``TINY``: e.g.
  ``train ... --epochs 50`` runs with ``--model mit_tiny --epochs 1 --max-steps-per-epoch 1``.
- **Checked by parsing only** (the options exist and the line parses) where running needs what a test has not:
  a network or an Earth Engine account (``fetch-gee``, ``fetch-aef``), a Dask cluster (``--workers``,
  ``--scheduler``), or minutes of CPU (``demo``, ``benchmark``; they have their own tests); and lines with
  ``...`` (fragments), whose ``--options`` must each exist for that command.
- A bare command name in prose (``map``, ``train``) must be a command.

Commands run through :func:`dunemap.cli.main`, the entry point of the ``dunemap`` script, in this process
(one torch start-up instead of thirty); tests/cli run the same entry point in subprocesses.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from doc_commands import doc_commands
from recompute import hashes

from dunemap.cli import build_parser, leaf_parsers, main

COMMANDS = doc_commands()
PARSER = build_parser()
LEAVES = leaf_parsers(PARSER)

PARSE_ONLY = {  # command words -> why it is not run here
    "demo": "about ten CPU minutes (tests/test_demo.py runs a tiny demo)",
    "fetch-gee": "needs an Earth Engine account and the network",
    "fetch-aef": "reads public COGs over the network (tests/acquire run it on local COGs)",
    "benchmark quality": "minutes to hours (tests/benchmark run the micro preset)",
    "benchmark speed": "minutes of timing (tests/benchmark run it tiny)",
}
CLUSTER_FLAGS = ("--workers", "--scheduler")  # a Dask cluster: tests/mapping/test_mapping_dask.py
TINY = {  # options appended to make a printed command tiny
    "synth scene": ["--size", "64"],
    "synth dataset": ["--regions", "namib", "--scenes-per-region", "2", "--scene-size", "64", "--tile", "32",
                      "--block-tiles", "1"],
    "prepare": ["--tile", "32"],
    "suggest": ["--size", "16", "--n", "3", "--window", "64", "--stride", "32", "--device", "cpu"],
    "train": ["--model", "mit_tiny", "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "2",
              "--no-calibrate", "--device", "cpu"],
    "evaluate": ["--batch-size", "2", "--device", "cpu"],
    "map": ["--window", "64", "--stride", "32", "--device", "cpu", "--threads", "1"],
    "calibrate": ["--device", "cpu"],
    "quicklook": ["--max-size", "200", "--dpi", "50"],
}
OUTPUT_FLAGS = ("--out", "--save-dir", "--out-dir")


def _words(argv: list[str]) -> str:
    """The command words of argv: 'synth scene', 'map', ..."""
    for n in (2, 1):
        if " ".join(argv[:n]) in LEAVES:
            return " ".join(argv[:n])
    return argv[0]


SYMBOLS = {"FILE": "my.yaml", "FILE.npy": "text.npy", "N": "1", "DIR": "cache"}  # symbolic values in usage lines


def _expand(text: str) -> str:
    """Optional parts included, the first of alternatives a|b, symbolic values given."""
    text = re.sub(r"\[([^\]]*)\]", r"\1", text)
    text = re.sub(r"(\S+?)\|\S+", r"\1", text)
    return " ".join(SYMBOLS.get(t, t) for t in text.split(" "))


def _missing_required(words: str, argv: list[str]) -> bool:
    """True for a prose fragment such as 'prepare --split-by scene': a required option or argument is not given."""
    parser = LEAVES.get(words)
    if parser is None:
        return False
    given = set(argv)
    for action in parser._actions:
        if action.required and action.option_strings and not given & set(action.option_strings):
            return True
        if not action.option_strings and action.nargs in (None, "+") and action.dest not in ("func",) \
                and len(argv) == len(words.split()):
            return True
    return False


def _kind(cmd) -> str:
    argv = shlex.split(_expand(cmd.text), comments=True)
    words = _words(argv)
    if argv == words.split() and (words in LEAVES or any(w.startswith(words + " ") for w in LEAVES)) \
            and _missing_required(words, argv) or len(argv) == 1:
        return "mention"
    if "..." in argv or _missing_required(words, argv):
        return "fragment"
    if words in PARSE_ONLY or any(f in argv for f in CLUSTER_FLAGS):
        return "parse"
    return "run"


def test_the_docs_show_commands() -> None:
    kinds = [_kind(c) for c in COMMANDS]
    assert kinds.count("run") >= 20, kinds  # the extraction finds the README's table


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _kind(c) in ("mention", "fragment", "parse")],
                         ids=lambda c: f"{c.source} {c.text}")
def test_doc_command_parses(cmd) -> None:
    argv = shlex.split(_expand(cmd.text), comments=True)
    words = _words(argv)
    assert words in LEAVES or any(w.startswith(words + " ") for w in LEAVES), f"{cmd.source}: no command {words!r}"
    if _kind(cmd) == "mention":
        return
    flags = {s for a in LEAVES[words]._actions for s in a.option_strings}
    for token in argv:
        if token.startswith("--"):
            assert token.split("=")[0] in flags, f"{cmd.source}: {words} has no option {token}"
    if _kind(cmd) == "parse":
        args = PARSER.parse_args(_placeholders(argv))
        assert args.func is not None


def _placeholders(argv: list[str]) -> list[str]:
    """Values for the symbolic arguments of parse-only lines (W S E N, a year, N workers)."""
    subs = {"W": "14.5", "S": "-24.1", "E": "14.6", "N": "-24.0", "Y": "2023"}
    out, prev = [], ""
    for t in argv:
        out.append("2" if prev in ("--workers",) and not t.isdigit() else subs.get(t, t))
        prev = t
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mads) -> dict[str, Path]:
    """The tiny files every placeholder name stands for."""
    import pyogrio.raw
    import rasterio
    import rasterio.shutil
    import shapely
    from rasterio import features

    from dunemap.accuracy.sampling import draw_sample
    from dunemap.adapt.suggest import SuggestConfig, suggest_patches
    from dunemap.data.prepare import PrepareConfig, prepare_dataset
    from dunemap.mapping.config import MapConfig
    from dunemap.mapping.engine import map_raster
    from dunemap.runtime import load_predictor as load_map_predictor
    from dunemap.synth.dataset import write_dataset
    from dunemap.synth.scene import SceneConfig
    from dunemap.synth.writers import write_scene_files
    from dunemap.training import TrainConfig, train
    from dunemap.training.finetune import finetune_config

    root = tmp_path_factory.mktemp("world")
    scene = write_scene_files(SceneConfig(size=(96, 96), region="namib", seed=1), root / "scene")
    data = write_dataset(root / "DATA", regions=["namib"], scenes_per_region=3, scene_size=64, tile=32,
                         block_tiles=1, seed=2)
    train(TrainConfig(data_root=data, save_dir=root / "RUN", model="mit_tiny", epochs=1, max_steps_per_epoch=1,
                      batch_size=2, text="random", device="cpu", progress=False, check_data=False))
    weights = root / "RUN" / "best_model.pth"
    predictor = load_map_predictor(weights, device="cpu")
    map_raster(scene.embedding, predictor, root / "MAP.tif",
               MapConfig(window=64, stride=32, confidence="uint8", applicability=True, progress=False))
    # the adaptation loop: patches to label, the truth as the labeller, their tiles, a fine-tune with replay
    suggest_patches(scene.embedding, root / "patches.gpkg", SuggestConfig(n=3, size=16), predictor,
                    MapConfig(window=64, stride=32, progress=False))
    prepare_dataset(PrepareConfig(images=[scene.embedding], labels=[scene.labels], out=root / "NEW", tile=32,
                                  patches=root / "patches.gpkg", progress=False))
    train(finetune_config(weights, root / "NEW", root / "RUN2", replay=data, max_steps_per_epoch=1, batch_size=2,
                          device="cpu", progress=False, check_data=False))
    sample = draw_sample(root / "MAP.tif", 60, 3, 0, None)
    xy = shapely.to_wkb(shapely.points(sample.x, sample.y))
    pyogrio.raw.write(root / "points.gpkg", xy, [sample.map_class.astype(np.int32)], ["ref_class"], crs=str(sample.crs),
                      driver="GPKG", geometry_type="Point")  # labelled by an expert who agrees with the map
    with rasterio.open(scene.labels) as src:  # the scene's truth as QGIS polygons with a 'class' field
        labels, crs = src.read(1), src.crs
        shapes = list(features.shapes(labels, labels != 255, transform=src.transform))
        left, bottom, right, top = src.bounds
    _write_polygons(root / "dunes.gpkg", [shapely.geometry.shape(g) for g, _ in shapes], "class",
                    np.array([int(v) for _, v in shapes], np.int32), crs)
    mid = (left + right) / 2
    _write_polygons(root / "zones.gpkg", [shapely.box(left, bottom, mid, top), shapely.box(mid, bottom, right, top)],
                    "name", np.array(["west", "east"], dtype=object), crs)
    catalog = Path(__file__).resolve().parents[2] / "dunemap" / "knowledge" / "dune_classes.yaml"
    rasterio.shutil.copy(scene.embedding, root / "MOSAIC.vrt", driver="VRT")  # a GDAL VRT over the scene
    _write_aef_archive(root / "aef")
    _write_zone_set(root, weights)
    files = {
        "EMB.tif": scene.embedding, "namib.tif": scene.embedding, "MAP.tif": root / "MAP.tif",
        "MAP_applicability.tif": root / "MAP_applicability.tif", "MAP_confidence.tif": root / "MAP_confidence.tif",
        "MOSAIC.vrt": root / "MOSAIC.vrt", "DATA": data, "RUN": root / "RUN", "RUN2": root / "RUN2",
        "LABELS": scene.labels, "patches.gpkg": root / "patches.gpkg", "NEW": root / "NEW",
        "W": weights, "calibrated.pth": weights, "b2.pth": weights, "dunes.gpkg": root / "dunes.gpkg",
        "zones.gpkg": root / "zones.gpkg", "points.gpkg": root / "points.gpkg",
        "aef_index.parquet": root / "aef" / "aef_index.parquet", "my.yaml": catalog, "my_classes.yaml": catalog,
        "FILE": catalog, "DESERT": root / "DESERT", "desert_points.gpkg": root / "desert_points.gpkg",
    }
    files["best_model.pth"] = mads.weights  # the published weights' layout
    files["text_embeds_detailed.npy"] = mads.text
    return files


@pytest.fixture(scope="module")
def world_hashes(world: dict[str, Path]) -> dict[Path, str]:
    """sha256 of every file of the world (folders' files included), before any command ran."""
    return hashes(*world.values())


def _write_aef_archive(folder: Path) -> None:
    """A one-tile AEF archive: the namib scene as an int8 COG stored bottom-up (year 2023) and its index."""
    import pandas as pd
    import rasterio
    from rasterio.warp import transform_bounds

    from dunemap.synth.scene import SceneConfig
    from dunemap.synth.writers import write_scene_files

    tile = write_scene_files(SceneConfig(size=(96, 96), region="namib", seed=1), folder / "2023", dtype="int8",
                             bottom_up=True).embedding
    with rasterio.open(tile) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        crs = src.crs.to_string()
    pd.DataFrame([{"path": str(tile.relative_to(folder)), "year": 2023, "crs": crs, "utm_zone": "33S",
                   "wgs84_west": w, "wgs84_south": s, "wgs84_east": e, "wgs84_north": n}]).to_parquet(
        folder / "aef_index.parquet")


def _write_zone_set(root: Path, weights: Path) -> None:
    """``DESERT``: the one-tile archive mapped as a zone set (map --index), and ``desert_points.gpkg``, a sample of
    it labelled by an expert who agrees with the map."""
    import pyogrio.raw
    import shapely

    from dunemap.accuracy.sampling import draw_sample
    from dunemap.acquire.archive import ArchiveConfig, map_archive
    from dunemap.mapping.config import MapConfig

    map_archive(ArchiveConfig(index=str(root / "aef" / "aef_index.parquet"), year=2023, out=root / "DESERT",
                              bbox=(15.196, -25.104, 15.204, -25.096)),
                weights, MapConfig(window=64, stride=32, progress=False), device="cpu")
    sample = draw_sample(root / "DESERT", 40, 3, 0)
    pyogrio.raw.write(root / "desert_points.gpkg", shapely.to_wkb(shapely.points(sample.x, sample.y)),
                      [sample.map_class.astype(np.int32)], ["ref_class"], crs=str(sample.crs), driver="GPKG",
                      geometry_type="Point")


def _write_polygons(path: Path, geoms: list, field: str, values: np.ndarray, crs) -> None:
    import pyogrio.raw
    import shapely

    pyogrio.raw.write(path, np.asarray(shapely.to_wkb(geoms), dtype=object), [values], [field], crs=str(crs),
                      driver="GPKG", geometry_type="MultiPolygon", promote_to_multi=True)


def _outputs(argv: list[str]) -> set[str]:
    return {argv[i + 1].split("/")[0] for i, t in enumerate(argv[:-1]) if t in OUTPUT_FLAGS}


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if _kind(c) == "run"], ids=lambda c: f"{c.source} {c.text}")
def test_doc_command_runs(cmd, world: dict[str, Path], world_hashes: dict[Path, str], tmp_path: Path,
                          monkeypatch, capsys) -> None:
    argv = shlex.split(_expand(cmd.text), comments=True)
    words = _words(argv)
    outputs = _outputs(argv)
    for token in {t.split("/")[0] for t in argv} - outputs:
        if token in world:
            (tmp_path / token).symlink_to(world[token])
            for companion in world[token].parent.glob(world[token].stem + "_*.tif"):  # MAP_applicability.tif ...
                if not (tmp_path / companion.name).exists():
                    (tmp_path / companion.name).symlink_to(companion)
        elif re.fullmatch(r"[A-Z][A-Z_]*(\.\w+)?|\w+\.(tif|vrt|pth|npy|gpkg|yaml)", token) and token not in outputs:
            pytest.fail(f"{cmd.source}: no tiny file stands for {token!r}; add it to the world fixture")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    before = {p.name for p in tmp_path.iterdir()}
    code = main([*argv, *TINY.get(words, [])])
    out, err = capsys.readouterr()
    assert code == 0, f"{cmd.source}: dunemap {cmd.text} -> exit {code}\n{err}"
    assert "Traceback" not in err
    written = {p.name for p in tmp_path.iterdir()} - before
    if words not in ("text show", "gee-script"):
        assert written, f"{cmd.source}: dunemap {cmd.text} wrote nothing into its folder"
    assert hashes(*world.values()) == world_hashes, f"{cmd.source}: dunemap {cmd.text} changed an input's bytes"


def test_default_outputs_never_overwrite(world: dict[str, Path], tmp_path: Path, monkeypatch, capsys) -> None:
    """``stats MAP.tif`` and ``quicklook MAP.tif`` write beside the map; a second run needs --overwrite."""
    shutil.copy(world["MAP.tif"], tmp_path / "MAP.tif")
    monkeypatch.chdir(tmp_path)
    for argv, made in ((["stats", "MAP.tif"], "MAP_areas.csv"), (["quicklook", "MAP.tif"], "MAP.png")):
        assert main(argv) == 0 and (tmp_path / made).is_file()
        stamp = (tmp_path / made).stat().st_mtime_ns
        assert main(argv) == 1
        assert "already exists; pass --overwrite" in capsys.readouterr().err
        assert (tmp_path / made).stat().st_mtime_ns == stamp
    assert main(["synth", "scene", "--region", "namib", "--size", "64"]) == 0
    assert (tmp_path / "namib_0_emb.tif").is_file() and (tmp_path / "namib_0_labels.tif").is_file()
    stamp = (tmp_path / "namib_0_emb.tif").stat().st_mtime_ns
    assert main(["synth", "scene", "--region", "namib", "--size", "64"]) == 1
    assert (tmp_path / "namib_0_emb.tif").stat().st_mtime_ns == stamp


def test_readme_python_imports_work_as_printed_and_the_api_is_documented() -> None:
    from doc_commands import DOCS

    import dunemap

    readme = DOCS[0].read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README.md shows no Python"
    imports = [line for b in blocks for line in b.splitlines() if line.startswith(("import ", "from "))]
    assert any("predict_array" in line for line in imports)
    exec("\n".join(imports), {})  # noqa: S102  (the README's own lines)
    called = set(re.findall(r"dunemap\.(\w+)\(", "\n".join(blocks)))
    for name in called | {"train", "evaluate", "map_raster", "load_predictor", "predict_array", "map_statistics",
                          "generate_scene"}:
        doc = getattr(dunemap, name).__doc__ or ""
        assert all(part in doc for part in ("Args:", "Returns:", "Raises:")), f"dunemap.{name}: docstring incomplete"
    assert "train" in dir(dunemap) and "train" in dunemap.__all__
