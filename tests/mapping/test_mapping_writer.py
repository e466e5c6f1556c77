"""Map output: partial GeoTIFFs written by block, COG conversion, colour table, legend tags, overviews."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from mapping_helpers import UTM_CRS, UTM_TRANSFORM
from rasterio.crs import CRS
from rio_cogeo.cogeo import cog_validate

from dunemap.errors import ConfigError, RasterIOError
from dunemap.mapping.writer import GridSpec, PartialMap
from dunemap.raster.cog import validate_cog
from dunemap.raster.geometry import Box
from dunemap.raster.legend import ClassLegend, read_legend

LEGEND = ClassLegend.build(["interdune", "barchan / crescentic", "linear"],
                           [(200, 200, 200), (230, 120, 0), (20, 90, 200)])
GRID = GridSpec(96, 80, CRS.from_string(UTM_CRS), UTM_TRANSFORM)


def _blocks(grid: GridSpec, size: int) -> list[Box]:
    return [Box(r, c, min(size, grid.height - r), min(size, grid.width - c))
            for r in range(0, grid.height, size) for c in range(0, grid.width, size)]


def _write_map(out: Path, order: list[int] | None, classes: np.ndarray, probs: np.ndarray, cog_tile: int = 512) -> dict:
    grid = GridSpec(classes.shape[0], classes.shape[1], GRID.crs, GRID.transform)
    partial = PartialMap(out, grid, LEGEND, 32, confidence="uint8", probabilities="float32")
    partial.create()
    boxes = _blocks(grid, 32)
    for i in order or range(len(boxes)):
        b = boxes[i]
        rows, cols = slice(b.row, b.row_stop), slice(b.col, b.col_stop)
        partial.write_block(b, classes[rows, cols], probs.max(axis=0)[rows, cols], probs[:, rows, cols])
    return partial.finalize(cog_tile)


@pytest.fixture
def class_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(96, 80)).transpose(2, 0, 1).astype(np.float32)
    classes = probs.argmax(axis=0).astype(np.uint8)
    classes[:10, :10] = 255
    probs[:, :10, :10] = np.nan
    return classes, probs


def test_cog_products_carry_grid_legend_and_colours(tmp_path: Path, class_data) -> None:
    classes, probs = class_data
    products = _write_map(tmp_path / "map.tif", list(range(9)), classes, probs)
    assert set(products) == {"classes", "confidence", "probabilities"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.qml", "map.tif", "map.tif.aux.xml",
                                                        "map_confidence.tif", "map_probabilities.tif"]
    for path in products.values():
        ok, errors, _ = cog_validate(str(path), quiet=True)
        assert ok, errors
    with rasterio.open(products["classes"]) as src:
        assert src.crs == GRID.crs and src.transform == GRID.transform
        assert src.dtypes[0] == "uint8" and src.nodata == 255 and src.block_shapes[0] == (512, 512)
        assert src.compression is not None
        np.testing.assert_array_equal(src.read(1), classes)
        cmap = src.colormap(1)
        assert cmap[1] == (230, 120, 0, 255) and cmap[255][3] == 0
        assert read_legend(src) == LEGEND
        assert src.tags()["CLASS_1"] == "barchan / crescentic"
        assert src.descriptions[0] == "dune class"  # the classes are in the tags, the categories and the RAT
    with rasterio.open(products["confidence"]) as src:
        conf = src.read(1)
        assert src.nodata == 255 and np.isclose(src.scales[0], 1 / 254)
        assert (conf[:10, :10] == 255).all()
        np.testing.assert_allclose(conf[10:] * src.scales[0], probs.max(axis=0)[10:], atol=0.5 / 254 + 1e-6)
    with rasterio.open(products["probabilities"]) as src:
        assert src.count == 3 and src.dtypes[0] == "float32"
        np.testing.assert_array_equal(src.read(), probs)
        assert src.descriptions[2] == "probability: linear"


def test_block_order_does_not_change_a_byte(tmp_path: Path, class_data) -> None:
    classes, probs = class_data
    a = _write_map(tmp_path / "a" / "map.tif", list(range(9)), classes, probs)
    b = _write_map(tmp_path / "b" / "map.tif", [8, 3, 5, 0, 7, 1, 2, 6, 4], classes, probs)
    for key in a:
        assert a[key].read_bytes() == b[key].read_bytes()


def test_overviews_use_the_mode(tmp_path: Path) -> None:
    # 2x2 cells with three pixels of class 1 and one (top-left) of class 2: the mode is 1, nearest would be 2
    classes = np.ones((256, 200), dtype=np.uint8)
    classes[::2, ::2] = 2
    probs = np.full((3, 256, 200), 1 / 3, dtype=np.float32)
    products = _write_map(tmp_path / "map.tif", None, classes, probs, cog_tile=128)
    with rasterio.open(products["classes"]) as src:
        assert src.overviews(1) == [2]
    with rasterio.open(products["classes"], overview_level=0) as ovr:
        assert ovr.shape == (128, 100)
        assert (ovr.read(1) == 1).all()
    ok, errors, _ = cog_validate(str(products["classes"]), quiet=True)
    assert ok, errors


def test_validation_rejects_a_plain_geotiff(tmp_path: Path) -> None:
    path = tmp_path / "striped.tif"
    with rasterio.open(path, "w", driver="GTiff", height=600, width=600, count=1, dtype="uint8",
                       crs=UTM_CRS, transform=UTM_TRANSFORM) as dst:
        dst.write(np.zeros((1, 600, 600), dtype=np.uint8))
    with pytest.raises(RasterIOError, match=r"striped\.tif: not a valid Cloud-Optimized GeoTIFF"):
        validate_cog(path)


def test_a_map_one_overview_tile_wide_is_a_valid_cog(tmp_path: Path) -> None:
    """A 2048 x 1024 map: its first overview, 1024 x 512, is one 512 px tile wide (rio-cogeo calls it a strip)."""
    from dunemap.mapping.writer import write_class_map

    classes = np.random.default_rng(1).integers(0, 3, (2048, 1024)).astype(np.uint8)
    out = write_class_map(tmp_path / "tall.tif", classes, GridSpec(2048, 1024, GRID.crs, GRID.transform), LEGEND,
                          {}, cog_tile=512)
    assert cog_validate(str(out), quiet=True)[1] == ["Overview of index 0 is not tiled"]  # rio-cogeo's words
    with rasterio.open(out, overview_level=0) as ovr:
        assert ovr.shape == (1024, 512) and ovr.block_shapes[0] == (512, 512)  # tiled all the same
    with rasterio.open(out) as src:
        assert (src.read(1) == classes).all()


def test_write_class_map_makes_a_class_map_every_product_reads(tmp_path: Path) -> None:
    """A class array from elsewhere (the demo's random forest) gets the map writer's COG, legend and overviews."""
    from dunemap.cli import main
    from dunemap.mapping.writer import write_class_map

    rng = np.random.default_rng(0)
    classes = rng.integers(0, 3, (300, 280)).astype(np.uint8)
    classes[:10] = 255
    grid = GridSpec(300, 280, GRID.crs, GRID.transform)
    out = write_class_map(tmp_path / "rf.tif", classes, grid, LEGEND, {"MODEL": "random forest"}, cog_tile=128)
    assert cog_validate(str(out), quiet=True)[0]
    with rasterio.open(out) as src:
        assert (src.read(1) == classes).all() and src.nodata == 255
        assert src.colormap(1)[1] == (230, 120, 0, 255) and src.colormap(1)[255][3] == 0  # QGIS shows colours
        assert src.overviews(1) == [2, 4]  # down to one 128 px tile: 300 -> 150 -> 75 px
        assert src.tags()["MODEL"] == "random forest" and src.tags()["DUNEMAP_PRODUCT"] == "classes"
        assert read_legend(src) == LEGEND
    assert (tmp_path / "rf.tif.aux.xml").is_file() and (tmp_path / "rf.qml").is_file()
    assert not (tmp_path / "rf.tif.partial").exists()
    assert main(["quicklook", str(out)]) == 0  # the command refused the demo's plain GeoTIFF
    assert (tmp_path / "rf.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="does not fit the grid"):
        write_class_map(tmp_path / "bad.tif", classes[:10], grid, LEGEND)
