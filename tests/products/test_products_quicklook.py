"""Quicklook PNGs: class colours on the page, hillshading, scale-bar lengths, CLI and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from products_helpers import LEGEND, write_class_map

from dunemap.cli import main
from dunemap.errors import InputError
from dunemap.products.quicklook import format_length, hillshade, nice_length, render_quicklook

TRANSFORM = Affine(10, 0, 300_000, 0, -10, 7_300_000)


def _classes() -> np.ndarray:
    c = np.zeros((120, 160), dtype=np.uint8)
    c[:, 80:] = 1
    c[40:80, 40:120] = 3
    c[:10, :10] = 255
    return c


@pytest.mark.parametrize(("target", "expected"), [(7.3, 5), (1.0, 1), (19_999, 10_000), (2_500, 2_000), (0.03, 0.02)])
def test_nice_scale_bar_lengths(target: float, expected: float) -> None:
    assert nice_length(target) == pytest.approx(expected)


def test_length_labels() -> None:
    assert format_length(500) == "500 m" and format_length(2000) == "2 km" and format_length(2500) == "2.5 km"


def test_hillshade_faces_the_light() -> None:
    y, x = np.mgrid[0:50, 0:50].astype(float)
    west_up = x * -5.0  # rises towards the west: faces the north-west light
    east_up = x * 5.0
    assert hillshade(west_up, 10, 10).mean() > hillshade(east_up, 10, 10).mean()
    flat = hillshade(np.zeros((5, 5)), 10, 10)
    assert np.allclose(flat, np.sin(np.radians(45)))


def test_quicklook_draws_the_class_colours(tmp_path: Path) -> None:
    path = write_class_map(tmp_path / "map.tif", _classes(), "EPSG:32733", TRANSFORM)
    png = render_quicklook(path, tmp_path / "look.png", title="Namib test")
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[0] > 300 and image.shape[1] > 300
    colours = {tuple(c) for c in image.reshape(-1, 3)[:: 7].tolist()}
    for class_id in (0, 1, 3):
        assert LEGEND.colors[class_id] in colours, LEGEND.names[class_id]
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == ["look.png"]


def test_quicklook_with_hillshade_and_geographic_map(tmp_path: Path) -> None:
    path = write_class_map(tmp_path / "geo.tif", _classes(), "EPSG:4326", Affine(0.0001, 0, 15, 0, -0.0001, -24))
    dem = tmp_path / "dem.tif"
    yy, xx = np.mgrid[0:60, 0:80].astype(np.float32)
    with rasterio.open(dem, "w", driver="GTiff", height=60, width=80, count=1, dtype="float32", crs="EPSG:4326",
                       transform=Affine(0.0002, 0, 15, 0, -0.0002, -24)) as dst:
        dst.write((20 * np.sin(xx / 6) * np.cos(yy / 9))[np.newaxis])
    plain = np.asarray(Image.open(render_quicklook(path, tmp_path / "plain.png")).convert("RGB"), dtype=float)
    shaded = np.asarray(Image.open(render_quicklook(path, tmp_path / "shaded.png", hillshade_from=dem)).convert("RGB"),
                        dtype=float)
    assert plain.shape == shaded.shape
    assert shaded.mean() < plain.mean()  # shading only darkens


def test_cli_quicklook_and_errors(tmp_path: Path, capsys) -> None:
    path = write_class_map(tmp_path / "map.tif", _classes(), "EPSG:32733", TRANSFORM)
    out = tmp_path / "q" / "look.png"
    assert main(["quicklook", str(path), "--out", str(out), "--max-size", "64", "--dpi", "60"]) == 0
    assert out.exists() and f"wrote {out}" in capsys.readouterr().out
    floats = tmp_path / "floats.tif"
    with rasterio.open(floats, "w", driver="GTiff", height=8, width=8, count=1, dtype="float32", crs="EPSG:32733",
                       transform=TRANSFORM) as dst:
        dst.write(np.zeros((1, 8, 8), np.float32))
    assert main(["quicklook", str(floats), "--out", str(tmp_path / "bad.png")]) == 1
    assert "floats.tif: expected a uint8 class map, found float32" in capsys.readouterr().err
    with pytest.raises(InputError, match="hillshade not found"):
        render_quicklook(path, tmp_path / "x.png", hillshade_from=tmp_path / "nope.tif")
    assert not (tmp_path / "bad.png").exists() and not (tmp_path / "x.png").exists()


def test_hillshade_from_an_embedding_raster_is_refused(tmp_path: Path, capsys) -> None:
    path = write_class_map(tmp_path / "map.tif", _classes(), "EPSG:32733", TRANSFORM)
    embedding = tmp_path / "emb.tif"
    with rasterio.open(embedding, "w", driver="GTiff", height=30, width=40, count=64, dtype="float32",
                       crs="EPSG:32733", transform=Affine(40, 0, 300_000, 0, -40, 7_300_000)) as dst:
        dst.write(np.random.default_rng(0).standard_normal((64, 30, 40)).astype(np.float32))
    out = tmp_path / "look.png"
    assert main(["quicklook", str(path), "--out", str(out), "--hillshade-from", str(embedding)]) == 1
    err = capsys.readouterr().err
    assert "emb.tif: has 64 bands; --hillshade-from takes an elevation raster (DEM) of one band" in err
    assert not out.exists()
