"""``dunemap prepare`` end to end: several scenes and regions into one dataset, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from dunemap.cli import main
from dunemap.data.manifest import read_manifest
from dunemap.io.aef import quantize

UTM = "EPSG:32733"


def write_scenes(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A float scene and an AEF int8 scene 2 km apart, one GeoPackage labelling parts of both."""
    rng = np.random.default_rng(7)
    float_tif, aef_tif = tmp_path / "scene_a.tif", tmp_path / "scene_b.tif"
    with rasterio.open(float_tif, "w", driver="GTiff", width=48, height=32, count=4, dtype="float32", crs=UTM,
                       transform=Affine(10, 0, 500000, 0, -10, 7000000)) as ds:
        ds.write(rng.normal(size=(4, 32, 48)).astype(np.float32))
    vec = rng.normal(size=(4, 32, 32)).astype(np.float32)
    with rasterio.open(aef_tif, "w", driver="GTiff", width=32, height=32, count=4, dtype="int8", nodata=-128,
                       crs=UTM, transform=Affine(10, 0, 502000, 0, 10, 6999680)) as ds:  # bottom-up
        ds.write(quantize(vec / np.linalg.norm(vec, axis=0)))
    polys = [shapely.box(500000, 6999680, 500480, 7000000), shapely.box(502000, 6999680, 502320, 6999840)]
    gpkg = tmp_path / "labels.gpkg"
    pyogrio.raw.write(gpkg, np.array(shapely.to_wkb(polys), dtype=object), [np.array(["linear", "star"], dtype=object)],
                      ["landform"], geometry_type="Polygon", crs=UTM, driver="GPKG")
    return float_tif, aef_tif, gpkg


def test_cli_prepare_two_regions(tmp_path, capsys):
    float_tif, aef_tif, gpkg = write_scenes(tmp_path)
    out = tmp_path / "ds"
    argv = ["prepare", "--image", str(float_tif), "--image", str(aef_tif), "--labels", str(gpkg),
            "--class-field", "landform", "--region", "namib", "--region", "mojave", "--out", str(out),
            "--tile", "16", "--bands", "4", "--block-tiles", "1", "--min-valid", "0.75", "--split", "0.5,0.25,0.25",
            "--seed", "1"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("wrote 8 tiles") and "linear" in printed and "star" in printed
    records = read_manifest(out)
    # scene a: 6 tiles, all labelled; scene b: the labelled southern half (stored rows 0..15 = north-up rows 16..31)
    assert sorted((r.region, r.row_off, r.col_off) for r in records) == sorted(
        [("namib", r, c) for r in (0, 16) for c in (0, 16, 32)] + [("mojave", 0, 0), ("mojave", 0, 16)])
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["tiles"].values()) == 8 and summary["skipped_nodata"] == 2
    assert sum(sum(v.values()) for v in summary["regions"].values()) == 8
    linear, star = summary["class_names"].index("linear"), summary["class_names"].index("star")
    assert sum(summary["class_pixels"][s][linear] for s in summary["tiles"]) == 6 * 256
    assert sum(summary["class_pixels"][s][star] for s in summary["tiles"]) == 2 * 256
    for rec in records:
        assert (out / "img_dir" / rec.split / f"{rec.name}.npy").exists()

    assert main(argv) == 1  # the dataset exists: refuse, keep it
    assert "already holds a dataset" in capsys.readouterr().err
    assert main(argv + ["--overwrite", "--seed", "2"]) == 0
    assert len(read_manifest(out)) == 8
    assert sorted(p.name for p in out.iterdir()) == ["ann_dir", "img_dir", "manifest.csv", "summary.json"]


def test_cli_prepare_split_by_scene_holds_a_whole_image_out(tmp_path, capsys):
    float_tif, aef_tif, gpkg = write_scenes(tmp_path)
    out = tmp_path / "ds"
    argv = ["prepare", "--image", str(float_tif), "--image", str(aef_tif), "--labels", str(gpkg),
            "--class-field", "landform", "--region", "namib", "--region", "namib", "--out", str(out),
            "--tile", "16", "--bands", "4", "--block-tiles", "1", "--min-valid", "0.75", "--split", "0.5,0.25,0.25",
            "--split-by", "scene"]
    assert main(argv) == 0
    splits_of: dict[str, set[str]] = {}
    for rec in read_manifest(out):
        splits_of.setdefault(rec.source, set()).add(rec.split)
    held = [src for src, splits in splits_of.items() if "train" not in splits]
    assert len(held) == 1 and len(splits_of[held[0]]) == 1  # one image went whole to one evaluation split
    assert json.loads((out / "summary.json").read_text())["config"]["split_by"] == "scene"
    with pytest.raises(SystemExit):  # argparse lists the valid modes
        main(argv[:-1] + ["scenes", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'scenes'" in capsys.readouterr().err


def test_cli_prepare_bad_labels_exit_one_line(tmp_path):
    float_tif, _, _ = write_scenes(tmp_path)
    labels = tmp_path / "labels_utm34.tif"
    with rasterio.open(labels, "w", driver="GTiff", width=48, height=32, count=1, dtype="uint8", crs="EPSG:32734",
                       transform=Affine(10, 0, 500000, 0, -10, 7000000)) as ds:
        ds.write(np.zeros((1, 32, 48), dtype=np.uint8))
    out = tmp_path / "ds"
    proc = subprocess.run([sys.executable, "-m", "dunemap", "prepare", "--image", str(float_tif), "--labels",
                           str(labels), "--out", str(out), "--tile", "16", "--bands", "4"], capture_output=True,
                          text=True)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert err.startswith("dunemap: error: label raster") and "\n" not in err
    assert "EPSG:32734" in err and "EPSG:32733" in err and str(float_tif) in err
    assert not out.exists()


@pytest.mark.parametrize("block_tiles", ["0", "1"])
def test_split_by_scene_on_images_of_the_same_ground_names_the_cause(tmp_path, capsys, block_tiles):
    """Three images of one place (three years, say): each held-out one takes the others' tiles under it."""
    float_tif, _, gpkg = write_scenes(tmp_path)
    copies = []
    for year in (2021, 2022, 2023):
        copies.append(tmp_path / f"scene_{year}.tif")
        copies[-1].write_bytes(float_tif.read_bytes())
    argv = ["prepare", *[a for c in copies for a in ("--image", str(c))], "--labels", str(gpkg), "--bands", "4",
            "--class-field", "landform", *["--region", "namib"] * 3, "--out", str(tmp_path / "ds"), "--tile", "16",
            "--block-tiles", block_tiles, "--min-valid", "0.75", "--split", "0.5,0.25,0.25", "--split-by", "scene"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--split-by scene left no training tile: the images cover the same ground" in err
    assert "scene_2021.tif and scene_2022.tif: 100%" in err and "tile size" not in err and "--tile" not in err
    assert not (tmp_path / "ds").exists()
