"""``dunemap synth scene`` and ``dunemap synth dataset`` driven as a user would."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from dunemap.cli import main
from dunemap.data.manifest import read_manifest


def test_synth_scene_writes_georeferenced_rasters_and_pictures(tmp_path, capsys):
    out = tmp_path / "scene"
    rc = main(["synth", "scene", "--region", "yilgarn", "--size", "64", "--seed", "2", "--out", str(out),
               "--dtype", "int8", "--bottom-up", "--nodata-holes"])
    assert rc == 0
    printed = capsys.readouterr().out
    for name in ("yilgarn_2_emb.tif", "yilgarn_2_labels.tif", "yilgarn_2_hillshade.png", "yilgarn_2_overlay.png"):
        assert (out / name).is_file() and name in printed
    with rasterio.open(out / "yilgarn_2_emb.tif") as e, rasterio.open(out / "yilgarn_2_labels.tif") as l:
        assert e.dtypes[0] == "int8" and e.transform.e > 0 and e.crs.to_epsg() == 32750
        nodata = (e.read() == -128).all(axis=0)
        assert nodata.any() and ((l.read(1) == 255) == nodata).all()


def test_synth_scene_with_another_embedding_seed_is_named_and_tagged_apart(tmp_path, capsys):
    out = tmp_path / "scene"
    base = ["synth", "scene", "--region", "mojave", "--size", "64", "--seed", "3", "--out", str(out)]
    assert main(base) == 0 and main([*base, "--embedding-seed", "5"]) == 0
    with rasterio.open(out / "mojave_3_labels.tif") as a, rasterio.open(out / "mojave_3_e5_labels.tif") as b:
        assert (a.read() == b.read()).all() and b.tags()["embedding_seed"] == "5"
    with rasterio.open(out / "mojave_3_emb.tif") as a, rasterio.open(out / "mojave_3_e5_emb.tif") as b:
        assert not np.allclose(a.read(), b.read(), atol=0.05)


def test_synth_dataset_writes_the_seed_layout(tmp_path, capsys):
    out = tmp_path / "ds"
    rc = main(["synth", "dataset", "--out", str(out), "--regions", "mojave,qaidam", "--scenes-per-region", "1",
               "--scene-size", "64", "--tile", "32", "--block-tiles", "1", "--seed", "1", "--no-progress"])
    assert rc == 0
    assert "wrote 8 tiles to" in capsys.readouterr().out
    records = read_manifest(out)
    assert len(records) == 8 and {r.region for r in records} == {"mojave", "qaidam"}
    assert np.load(out / "img_dir" / records[0].split / f"{records[0].name}.npy").shape == (64, 32, 32)


def test_bad_region_list_exits_1_with_a_one_line_error_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "x"
    rc = main(["synth", "dataset", "--out", str(out), "--regions", "namib,mars", "--scene-size", "64", "--tile", "32",
               "--no-progress"])
    assert rc == 1
    assert capsys.readouterr().err == ("dunemap: error: unknown region 'mars'; "
                                       "valid: atacama, mojave, namib, qaidam, yilgarn\n")
    assert not out.exists()


def test_bad_scene_values_exit_nonzero(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["synth", "scene", "--size", "4", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scene size 4x4 is too small" in err
    assert not out.exists()
    with pytest.raises(SystemExit) as info:
        main(["synth", "scene", "--region", "gobi", "--out", str(out)])
    assert info.value.code == 2 and "invalid choice: 'gobi'" in capsys.readouterr().err
