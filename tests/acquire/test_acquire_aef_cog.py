"""fetch-aef against AEF-format COGs (int8, bottom-up, -128 nodata) on disk and behind a loopback HTTP range server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from aef_archive_helpers import RES, serve, write_int8_cog
from aef_archive_helpers import index_row as archive_index_row
from affine import Affine
from pyproj import Transformer

from dunemap.acquire.aef_cog import FetchConfig, aligned_offset, chunk_windows, fetch_aef, target_grid
from dunemap.acquire.index import gdal_path, read_index, select_tiles
from dunemap.cli import main
from dunemap.errors import ConfigError, InputError
from dunemap.io.aef import dequantize, quantize

SIZE = 256  # tile side in pixels (the real tiles are 8192); COG blocks of 128
BANDS = 64


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path / 'www'`` on 127.0.0.1; yields (root dir, base URL, bytes-served dict)."""
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as (base, served):
        yield root, base, served


def write_aef_cog(path: Path, epsg: int, x0: float, y_bottom: float, seed: int,
                  hole: tuple[slice, slice] | None = None) -> np.ndarray:
    """An AEF-format COG: int8 unit vectors, stored bottom-up (positive y pixel size), -128 nodata.

    Returns the de-quantised north-up float array with NaN at nodata.
    """
    rng = np.random.default_rng(seed)
    vec = rng.normal(size=(BANDS, SIZE, SIZE)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=0, keepdims=True)
    valid = np.ones((SIZE, SIZE), dtype=bool)
    if hole is not None:
        valid[hole] = False
    q = quantize(vec, valid)  # rows bottom-up: row 0 is the southern edge
    write_int8_cog(path, q, epsg, x0, y_bottom)
    values, ok = dequantize(q)
    values[:, ~ok] = np.nan
    return values[:, ::-1, :]  # north-up


def index_row(rel_path: str, epsg: int, x0: float, y_bottom: float, year: int) -> dict:
    return archive_index_row(rel_path, epsg, x0, y_bottom, year, SIZE)


# Two adjacent tiles of zone 33S just west of 18°E, and one tile of zone 34S just east of it.
LAT = -24.0
X33_EDGE = round(Transformer.from_crs("EPSG:4326", "EPSG:32733", always_xy=True).transform(18.0, LAT)[0] / RES) * RES
X34_EDGE = round(Transformer.from_crs("EPSG:4326", "EPSG:32734", always_xy=True).transform(18.0, LAT)[0] / RES) * RES
Y33 = round(Transformer.from_crs("EPSG:4326", "EPSG:32733", always_xy=True).transform(17.99, LAT)[1] / RES) * RES - 640
Y34 = round(Transformer.from_crs("EPSG:4326", "EPSG:32734", always_xy=True).transform(18.01, LAT)[1] / RES) * RES - 640


@pytest.fixture
def aef_tiles(http_root):
    """A tile index (relative paths) plus tiles A, B (33S, adjacent) and C (34S), in the served folder."""
    root, base, served = http_root
    xa, xb = X33_EDGE - 2 * SIZE * RES, X33_EDGE - SIZE * RES
    arrays = {
        "a": write_aef_cog(root / "2023/33S/a.tiff", 32733, xa, Y33, seed=1, hole=(slice(50, 60), slice(100, 110))),
        "b": write_aef_cog(root / "2023/33S/b.tiff", 32733, xb, Y33, seed=2),
        "c": write_aef_cog(root / "2023/34S/c.tiff", 32734, X34_EDGE, Y34, seed=3),
    }
    rows = [index_row("2023/33S/a.tiff", 32733, xa, Y33, 2023), index_row("2023/33S/b.tiff", 32733, xb, Y33, 2023),
            index_row("2023/34S/c.tiff", 32734, X34_EDGE, Y34, 2023),
            index_row("2022/33S/missing.tiff", 32733, xa, Y33, 2022)]  # other year: must never be opened
    pd.DataFrame(rows).to_parquet(root / "aef_index.parquet")
    origins = {"a": (xa, Y33 + SIZE * RES), "b": (xb, Y33 + SIZE * RES)}
    return root, base, served, arrays, origins


def expected_zone33(arrays: dict, origins: dict, transform: Affine, width: int, height: int) -> np.ndarray:
    """Tiles A and B pasted onto the output grid directly (no library code): NaN where they have no pixel."""
    out = np.full((BANDS, height, width), np.nan, dtype=np.float32)
    for key in ("a", "b"):
        x0, y_top = origins[key]
        col = int(round((x0 - transform.c) / RES))
        row = int(round((transform.f - y_top) / RES))
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + SIZE, height), min(col + SIZE, width)
        if r0 < r1 and c0 < c1:
            out[:, r0:r1, c0:c1] = arrays[key][:, r0 - row:r1 - row, c0 - col:c1 - col]
    return out


def bbox_33(x_west: float, x_east: float) -> tuple[float, float, float, float]:
    to_wgs = Transformer.from_crs("EPSG:32733", "EPSG:4326", always_xy=True)
    w, s = to_wgs.transform(x_west, Y33 + 400)
    e, n = to_wgs.transform(x_east, Y33 + 800)
    return w, s, e, n


def test_grid_helpers():
    t, w, h = target_grid((103.0, 195.0, 151.0, 260.0), 10.0)
    assert (t.c, t.f, w, h) == (100.0, 260.0, 6, 7)
    t, w, h = target_grid((103.0, 195.0, 151.0, 260.0), 10.0, anchor=(5.0, 1003.0))
    assert (t.c, t.f, w, h) == (95.0, 263.0, 6, 7)
    assert chunk_windows(5, 7, 4) == [(0, 0, 4, 4), (0, 4, 4, 3), (4, 0, 1, 4), (4, 4, 1, 3)]
    src = Affine(10, 0, 1000, 0, -10, 5000)
    assert aligned_offset(src, Affine(10, 0, 1200, 0, -10, 4900)) == (10, 20)
    assert aligned_offset(src, Affine(10, 0, 1205, 0, -10, 4900)) is None
    assert gdal_path("https://h/x.tiff") == "/vsicurl/https://h/x.tiff"
    assert gdal_path("s3://bucket/k.tiff") == "/vsis3/bucket/k.tiff"
    assert gdal_path("2023/a.tiff", "http://h:1/idx") == "/vsicurl/http://h:1/idx/2023/a.tiff"
    assert gdal_path("2023/a.tiff", "/data/aef") == "/data/aef/2023/a.tiff"


def test_fetch_over_http_equals_direct_read_across_two_tiles(aef_tiles, tmp_path, monkeypatch):
    root, base, served, arrays, origins = aef_tiles
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    bbox = bbox_33(X33_EDGE - 1.7 * SIZE * RES, X33_EDGE - 0.4 * SIZE * RES)  # spans A's east half and B's west part
    results = {}
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tiff"):
        for how, index in (("http", f"{base}/aef_index.parquet"), ("local", str(root / "aef_index.parquet"))):
            out = tmp_path / f"{how}.tif"
            res = fetch_aef(FetchConfig(bbox=bbox, year=2023, index=index, out=out, chunk=48, dtype="float32"))
            assert res.crs == "EPSG:32733" and res.tiles == ["2023/33S/a.tiff", "2023/33S/b.tiff"]
            with rasterio.open(out) as ds:
                assert ds.dtypes[0] == "float32" and ds.count == BANDS and np.isnan(ds.nodata)
                assert ds.transform.e < 0 and ds.descriptions[0] == "A00"
                results[how] = (ds.read(), ds.transform, ds.width, ds.height)
    got, transform, width, height = results["http"]
    np.testing.assert_array_equal(got, results["local"][0])
    want = expected_zone33(arrays, origins, transform, width, height)
    assert not np.isnan(want[0]).all()
    np.testing.assert_array_equal(got, want)  # NaN positions and every value
    assert np.isnan(got[:, ~np.isnan(want[0])]).sum() == 0
    # the hole in tile A (-128 at stored rows 50..59 = north-up rows SIZE-60..SIZE-51) is NaN in the output
    a_col = int(round((origins["a"][0] - transform.c) / RES))
    a_row = int(round((transform.f - origins["a"][1]) / RES))
    hole = got[:, a_row + SIZE - 60:a_row + SIZE - 50, a_col + 100:a_col + 110]
    assert hole.shape[1:] == (10, 10) and np.isnan(hole).all()
    assert np.isnan(got[0]).sum() == 100
    # streamed: each tile was read with range requests, well below its size, and the 2022 tile never
    for name in ("a.tiff", "b.tiff"):
        size = (root / "2023/33S" / name).stat().st_size
        assert 0 < served[name] < 0.8 * size, (name, served[name], size)
    assert 206 in served["_status"] and "missing.tiff" not in served and "c.tiff" not in served


def test_fetch_mosaics_a_second_utm_zone(aef_tiles, tmp_path, monkeypatch):
    root, base, served, arrays, origins = aef_tiles
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    bbox = bbox_33(X33_EDGE - 0.5 * SIZE * RES, X33_EDGE + 0.6 * SIZE * RES)  # B's east part and C's west part
    out = tmp_path / "two_zones.tif"
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tiff"):
        res = fetch_aef(FetchConfig(bbox=bbox, year=2023, index=f"{base}/aef_index.parquet", out=out,
                                    crs="EPSG:32733", dtype="float32"))
    assert res.tiles == ["2023/33S/b.tiff", "2023/34S/c.tiff"]
    with rasterio.open(out) as ds:
        got, transform = ds.read(), ds.transform
    want = expected_zone33(arrays, origins, transform, got.shape[2], got.shape[1])
    in_b = ~np.isnan(want[0])
    np.testing.assert_array_equal(got[:, in_b], want[:, in_b])  # zone-33 pixels are exact copies
    from_c = ~in_b & ~np.isnan(got[0])
    assert from_c.sum() > 0.3 * got.shape[1] * got.shape[2]
    # nearest resampling: every pixel taken from zone 34 is one of tile C's own vectors
    c_vectors = {arrays["c"][:, r, c].tobytes() for r in range(SIZE) for c in range(SIZE)}
    assert all(got[:, r, c].tobytes() in c_vectors for r, c in zip(*np.nonzero(from_c)))
    assert served["c.tiff"] < (root / "2023/34S/c.tiff").stat().st_size
    # bilinear: zone-33 pixels still exact copies, zone-34 pixels blended but renormalised to unit length
    with rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR", CPL_VSIL_CURL_ALLOWED_EXTENSIONS=".tiff"):
        fetch_aef(FetchConfig(bbox=bbox, year=2023, index=f"{base}/aef_index.parquet", out=tmp_path / "bil.tif",
                              crs="EPSG:32733", resampling="bilinear", dtype="float32"))
    with rasterio.open(tmp_path / "bil.tif") as ds:
        bil = ds.read()
    np.testing.assert_array_equal(bil[:, in_b], want[:, in_b])
    blended = ~in_b & ~np.isnan(bil[0])
    assert blended.sum() > 0.3 * bil.shape[1] * bil.shape[2]
    np.testing.assert_allclose(np.linalg.norm(bil[:, blended], axis=0), 1.0, rtol=1e-5)
    assert not all(bil[:, r, c].tobytes() in c_vectors for r, c in zip(*np.nonzero(blended)))


def test_fetch_int8_keeps_the_archive_codes_across_two_zones(aef_tiles, tmp_path, monkeypatch):
    root, base, served, arrays, origins = aef_tiles
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    bbox = bbox_33(X33_EDGE - 0.5 * SIZE * RES, X33_EDGE + 0.6 * SIZE * RES)  # B's east part and C's west part
    got = {}
    for dtype in ("float32", None):  # None: the default, the archive's int8
        kw = {"dtype": dtype} if dtype else {}
        res = fetch_aef(FetchConfig(bbox=bbox, year=2023, index=f"{base}/aef_index.parquet",
                                    out=tmp_path / f"{dtype or 'int8'}.tif", crs="EPSG:32733", **kw))
        assert res.tiles == ["2023/33S/b.tiff", "2023/34S/c.tiff"]
        with rasterio.open(res.out) as ds:
            assert ds.dtypes[0] == (dtype or "int8") and ds.transform.e < 0
            assert (ds.compression.name.lower(), ds.interleaving.name.lower()) == ("zstd", "pixel")  # as synth's
            got[dtype or "int8"] = (ds.read(), ds.nodata, ds.transform)
    codes, nodata, transform = got["int8"]
    assert nodata == -128 and transform == got["float32"][2]
    values, ok = dequantize(codes)
    values[:, ~ok] = np.nan
    np.testing.assert_array_equal(values, got["float32"][0])  # the same pixels, in a quarter of the bytes
    assert ok.mean() > 0.9
    with pytest.raises(ConfigError, match="int8 codes .* cannot hold"):
        fetch_aef(FetchConfig(bbox=bbox, year=2023, index=str(root / "aef_index.parquet"), out=tmp_path / "b.tif",
                              resampling="bilinear"))
    assert not (tmp_path / "b.tif").exists()


def test_cli_fetch_aef_and_errors(aef_tiles, tmp_path, capsys):
    root, base, served, arrays, origins = aef_tiles
    w, s, e, n = bbox_33(X33_EDGE - 1.2 * SIZE * RES, X33_EDGE - 0.8 * SIZE * RES)
    out = tmp_path / "cli.tif"
    args = ["fetch-aef", "--bbox", str(w), str(s), str(e), str(n), "--index", str(root / "aef_index.parquet")]
    assert main(args + ["--year", "2023", "--out", str(out), "--dtype", "float32"]) == 0
    assert "nodata = NaN" in capsys.readouterr().out and out.exists()
    assert main(args + ["--year", "2023", "--out", str(tmp_path / "q.tif")]) == 0  # int8 unless asked
    got = capsys.readouterr().out
    assert "int8" in got and "nodata = -128" in got and (tmp_path / "q.tif").stat().st_size < out.stat().st_size
    with rasterio.open(tmp_path / "q.tif") as ds:
        assert ds.dtypes[0] == "int8" and ds.nodata == -128
    assert main(args + ["--year", "2021", "--out", str(tmp_path / "none.tif")]) == 1
    err = capsys.readouterr().err
    assert "no AEF tiles of year 2021" in err and "2022, 2023" in err and not (tmp_path / "none.tif").exists()
    # the 2022 row points at a file that does not exist: a one-line error, nothing written
    assert main(args + ["--year", "2022", "--out", str(tmp_path / "bad.tif")]) == 1
    err = capsys.readouterr().err.strip()
    assert "missing.tiff" in err and "\n" not in err and not (tmp_path / "bad.tif").exists()
    assert not any(p.name.startswith(".bad") for p in tmp_path.iterdir())


def test_index_errors(tmp_path):
    pd.DataFrame({"path": ["x.tiff"], "year": [2023]}).to_parquet(tmp_path / "thin.parquet")
    with pytest.raises(InputError, match="missing column"):
        read_index(tmp_path / "thin.parquet")
    with pytest.raises(InputError, match="file not found"):
        read_index(tmp_path / "nope.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InputError, match="cannot read it as Parquet"):
        read_index(tmp_path / "junk.parquet")
    rows = [index_row("t.tiff", 32733, 500000.0, 7000000.0, 2023)]
    pd.DataFrame(rows).to_parquet(tmp_path / "i.parquet")
    idx = read_index(tmp_path / "i.parquet")
    w, s, e, n = rows[0]["wgs84_west"], rows[0]["wgs84_south"], rows[0]["wgs84_east"], rows[0]["wgs84_north"]
    assert [t.gdal_path for t in select_tiles(idx, (w, s, e, n), 2023)] == [str(tmp_path / "t.tiff")]
    assert [t.gdal_path for t in select_tiles(idx, (w, s, e, n), 2023, [("t.tiff", "https://h/t.tiff")])] \
        == ["/vsicurl/https://h/t.tiff"]
    with pytest.raises(InputError, match="no AEF tiles"):
        select_tiles(idx, (e + 0.1, s, e + 0.2, n), 2023)
