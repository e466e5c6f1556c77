"""``dunemap suggest``: patches ranked by uncertainty, dissimilarity and diversity, from real map products."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
import torch
from affine import Affine

from dunemap.cli import main
from dunemap.knowledge.catalog import load_catalog
from dunemap.models import create_model
from dunemap.models.checkpoint import save_checkpoint
from dunemap.raster.legend import ClassLegend

ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_400_000.0)
NAMES = ["interdune", "linear", "star", "dome"]


def _dunemap(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dunemap", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


def _in_process(*args) -> int:
    """The same command through the CLI's entry point in this process (each test runs it in a real process too)."""
    return main([str(a) for a in args])


def _write(path: Path, bands: np.ndarray, nodata: float, legend: ClassLegend | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=bands.shape[1], width=bands.shape[2], count=bands.shape[0],
                       dtype=bands.dtype, crs="EPSG:32633", transform=ORIGIN, nodata=nodata) as dst:
        dst.write(bands)
        if legend is not None:
            dst.update_tags(**legend.tags())
    return path


@pytest.fixture()
def products(tmp_path: Path) -> dict[str, Path]:
    """A 128 x 128 map's probabilities and applicability: confident linear everywhere, except
    - rows 0-31, cols 64-95: unsure (0.4 / 0.35 / 0.25), the most uncertain ground;
    - rows 96-127, cols 0-31: a little unsure but outside the area of applicability;
    - rows 64-95, cols 96-127: confidently star, the rare predicted class;
    - rows 0-31, cols 0-31: nodata."""
    p = np.zeros((4, 128, 128), np.float32)
    p[1], p[0] = 0.9, 0.1
    p[:, :32, 64:96] = np.array([0.4, 0.35, 0.25, 0.0])[:, None, None]
    p[:, 96:, :32] = np.array([0.3, 0.7, 0.0, 0.0])[:, None, None]
    p[:, 64:96, 96:] = np.array([0.1, 0.0, 0.9, 0.0])[:, None, None]
    p[:, :32, :32] = np.nan
    mask = np.ones((128, 128), np.float32)
    mask[96:, :32] = 0
    di = np.where(mask == 0, 2.0, 0.1).astype(np.float32)
    aoa = np.stack([di, mask])
    aoa[:, :32, :32] = 255
    legend = ClassLegend.build(NAMES, [(200, 200, 200), (230, 160, 60), (200, 60, 60), (90, 90, 200)])
    return {"probabilities": _write(tmp_path / "m_probabilities.tif", p, float("nan"), legend),
            "applicability": _write(tmp_path / "m_applicability.tif", aoa, 255), "root": tmp_path}


def _patches(path: Path) -> tuple[list[tuple[int, int, int, int]], dict]:
    """Pixel boxes (row, col, row_stop, col_stop) of the written patches, in rank order, and their fields."""
    meta, _, wkb, fields = pyogrio.raw.read(path, layer="patches")
    data = dict(zip(meta["fields"], fields))
    order = np.argsort(data["rank"])
    boxes = []
    for b in shapely.bounds(shapely.from_wkb(wkb))[order]:
        col0, row1 = ~ORIGIN @ (b[0], b[1])
        col1, row0 = ~ORIGIN @ (b[2], b[3])
        boxes.append(tuple(int(round(v)) for v in (row0, col0, row1, col1)))
    return boxes, {k: np.asarray(v)[order] for k, v in data.items()}


def test_suggest_ranks_uncertain_foreign_and_rare_ground(products: dict[str, Path]) -> None:
    out = products["root"] / "patches.gpkg"
    proc = _dunemap("suggest", "--probabilities", products["probabilities"], "--applicability",
                    products["applicability"], "--n", "3", "--size", "32", "--out", out)
    assert proc.returncode == 0, proc.stderr
    boxes, fields = _patches(out)
    assert list(fields["rank"]) == [1, 2, 3]
    assert boxes[0] == (96, 0, 128, 32)  # margin uncertainty 0.6 + all outside the AOA: the most to learn
    assert boxes[1] == (0, 64, 32, 96)  # the most uncertain ground inside the AOA (0.95)
    assert boxes[2] == (64, 96, 96, 128)  # confident, but the rare predicted class (star) gets its patch
    assert fields["dominant"][2] == "star" and fields["dissimilarity"][0] == pytest.approx(1.0)
    assert fields["class_mix"][1] == "interdune 100%"
    with sqlite3.connect(out) as db:  # a QGIS style numbering the patches is the layer's default
        qml, default = db.execute("SELECT styleQML, useAsDefault FROM layer_styles").fetchone()
    assert default and 'fieldName="rank"' in qml

    unsure = products["root"] / "unsure.gpkg"  # uncertainty alone: unsure ground first, the rare class forgotten
    assert _in_process("suggest", "--probabilities", products["probabilities"], "--applicability",
                       products["applicability"], "--n", "3", "--size", "32", "--method", "uncertainty",
                       "--out", unsure) == 0
    boxes, fields = _patches(unsure)
    assert boxes[:2] == [(0, 64, 32, 96), (96, 0, 128, 32)] and "star" not in set(fields["dominant"])


@pytest.mark.parametrize("method", ["suggest", "uncertainty", "random"])
def test_patches_never_touch_nodata_nor_overlap(products: dict[str, Path], method: str) -> None:
    out = products["root"] / f"{method}.gpkg"
    assert _in_process("suggest", "--probabilities", products["probabilities"], "--n", "12", "--size", "16",
                       "--method", method, "--out", out) == 0
    boxes, _ = _patches(out)
    assert len(boxes) == 12
    for i, (r0, c0, r1, c1) in enumerate(boxes):
        assert (r1 - r0, c1 - c0) == (16, 16) and 0 <= r0 and r1 <= 128 and 0 <= c0 and c1 <= 128
        assert r0 >= 32 or c0 >= 32  # the nodata corner
        for r0b, c0b, r1b, c1b in boxes[:i]:
            assert r1 <= r0b or r1b <= r0 or c1 <= c0b or c1b <= c0


def test_suggest_maps_first_or_reuses_the_maps_companions(tmp_path: Path, capsys) -> None:
    """From EMB.tif and weights the map is made first; its own companions give the same patches."""
    torch.manual_seed(0)
    model = create_model("mit_tiny", num_classes=10, text_dim=32).eval()
    model.set_text(torch.nn.functional.normalize(torch.randn(10, 32), dim=1))
    catalog = load_catalog()
    weights = save_checkpoint(tmp_path / "tiny.pth", model, list(catalog.names), [tuple(c) for c in catalog.colors])
    x = np.random.default_rng(0).standard_normal((64, 96, 96)).astype(np.float32)
    x /= np.linalg.norm(x, axis=0, keepdims=True)
    x[:, :20, :20] = np.nan
    emb = _write(tmp_path / "emb.tif", x, float("nan"))
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = _dunemap("suggest", emb, "--weights", weights, "--n", "4", "--size", "16", "--window", "64", "--stride",
                    "32", "--out", tmp_path / "a.gpkg", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["a.gpkg"])  # no work folder left
    proc = _dunemap("map", emb, "--weights", weights, "--window", "64", "--stride", "32", "--probabilities",
                    "float32", "--out", tmp_path / "m.tif", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = _dunemap("suggest", "--probabilities", tmp_path / "m_probabilities.tif", "--n", "4", "--size", "16",
                    "--out", tmp_path / "b.gpkg")
    assert proc.returncode == 0, proc.stderr
    assert _patches(tmp_path / "a.gpkg")[0] == _patches(tmp_path / "b.gpkg")[0]

    capsys.readouterr()
    assert _in_process("suggest", "--probabilities", tmp_path / "m_probabilities.tif",
                       "--out", tmp_path / "b.gpkg") == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _in_process("suggest", "--probabilities", tmp_path / "m.tif", "--out", tmp_path / "c.gpkg") == 1
    err = capsys.readouterr().err
    assert "not a dunemap probabilities product" in err and len(err.strip().splitlines()) == 1
