"""Training stores a temperature and an area of applicability; ``dunemap calibrate`` gives them to a MADS file."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from dunemap.cli import main
from dunemap.data.seed_layout import write_sample
from dunemap.models.checkpoint import load_checkpoint
from dunemap.runtime import Predictor
from dunemap.training import TrainConfig, train
from dunemap.trust.applicability import Applicability


def _dunemap(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dunemap", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, make_tiny_dataset) -> Path:
    """A finished mit_tiny run on the tiny 4-blob dataset (16 bands); its best checkpoint is calibrated."""
    root = tmp_path_factory.mktemp("trust")
    data = make_tiny_dataset(root / "data")
    config = TrainConfig(data_root=data, save_dir=root / "run", model="mit_tiny", in_channels=16,
                         epochs=3, batch_size=4, lr=5e-3, text="random", precision="fp32", device="cpu",
                         progress=False, seed=3, catalog=data / "catalog.yaml")
    train(config)
    return root / "run"


def _unfamiliar(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same landforms (labels (..., H, W)) with other spectral signatures: another sand colour."""
    other = np.random.default_rng(999).standard_normal((4, 16))
    x = np.moveaxis(other[labels], -1, -3) + 0.2 * rng.standard_normal((*labels.shape[:-2], 16, *labels.shape[-2:]))
    return (x / np.linalg.norm(x, axis=-3, keepdims=True)).astype(np.float32)


def test_training_stores_calibration_and_applicability(trained: Path, make_tiny_tile) -> None:
    best = load_checkpoint(trained / "best_model.pth")
    cal = best.calibration
    assert cal["split"] == "val" and cal["pixels"] == 2 * 64 * 64
    assert 0.05 <= best.temperature <= 20 and 0 <= cal["ece_after"] <= 1
    aoa = Applicability.from_dict(best.applicability)
    assert aoa.samples.shape[0] <= 16 * 256 and aoa.threshold > 0
    assert aoa.feature_dim == best.config.decoder_dim
    assert aoa.inputs is not None and aoa.inputs.feature_dim == 16 and aoa.inputs.pool == 8  # the input, per 8 px cell
    assert load_checkpoint(trained / "last.pth").calibration == {}  # only the finished best is calibrated

    # familiar ground (new tiles of the training distribution) inside, unfamiliar ground outside
    predictor = Predictor(best, precision="fp32")
    rng = np.random.default_rng(11)
    familiar = np.stack([make_tiny_tile(rng)[0] for _ in range(2)])  # (2, 16, 64, 64)
    strange = _unfamiliar(np.stack([make_tiny_tile(rng)[1] for _ in range(2)]), rng)
    logits, di = predictor.predict_with_dissimilarity(torch.from_numpy(familiar))
    assert di.shape == (2, 64, 64) and logits.shape == (2, 4, 64, 64)
    assert torch.allclose(logits, predictor.predict(torch.from_numpy(familiar)))
    assert float((di <= aoa.threshold).float().mean()) > 0.9
    _, di_strange = predictor.predict_with_dissimilarity(torch.from_numpy(strange))
    assert float((di_strange > aoa.threshold).float().mean()) > 0.9


def test_map_applicability_marks_unfamiliar_ground_outside(trained: Path, tmp_path: Path, make_tiny_tile,
                                                          capsys) -> None:
    """A raster half familiar (west) and half unfamiliar (east) with a nodata hole: the companion raster says which."""
    rng = np.random.default_rng(5)
    west = np.concatenate([make_tiny_tile(rng)[0] for _ in range(2)], axis=1)  # (16, 128, 64)
    east = _unfamiliar(np.concatenate([make_tiny_tile(rng)[1] for _ in range(2)], axis=0), rng)  # (16, 128, 64)
    image = np.concatenate([west, east], axis=2)  # (16, 128, 128)
    image[:, 100:120, 10:30] = np.nan
    emb = tmp_path / "emb.tif"
    profile = dict(driver="GTiff", height=128, width=128, count=16, dtype="float32", crs="EPSG:32733",
                   transform=Affine(10, 0, 500_000, 0, -10, 7_000_000))
    with rasterio.open(emb, "w", **profile) as dst:
        dst.write(image)
    common = ["--weights", trained / "best_model.pth", "--window", "64", "--stride", "48", "--precision", "fp32",
              "--device", "cpu", "--no-progress"]
    plain = _dunemap("map", emb, "--out", tmp_path / "plain.tif", *common)
    assert plain.returncode == 0, plain.stderr
    proc = _dunemap("map", emb, "--out", tmp_path / "m.tif", "--applicability", *common)
    assert proc.returncode == 0, proc.stderr
    with rasterio.open(tmp_path / "m_applicability.tif") as src:
        di, mask = src.read()
        threshold = float(src.tags()["DI_THRESHOLD"])
        assert src.tags()["DUNEMAP_PRODUCT"] == "applicability" and src.nodata == 255
    with rasterio.open(tmp_path / "m.tif") as a, rasterio.open(tmp_path / "plain.tif") as b:
        classes = a.read(1)
        assert np.array_equal(classes, b.read(1))  # the companion changes no class
    nodata = classes == 255
    assert nodata[100:120, 10:30].all() and (mask[nodata] == 255).all() and (di[nodata] == 255).all()
    assert np.array_equal(mask[~nodata] == 1, di[~nodata] <= threshold)
    assert (mask[:, :56][~nodata[:, :56]] == 1).mean() > 0.9  # familiar half inside
    assert (mask[:, 72:] == 0).mean() > 0.9  # unfamiliar half outside

    stats = _dunemap("stats", tmp_path / "m.tif", "--out", tmp_path / "areas.csv")
    assert stats.returncode == 0, stats.stderr
    assert "inside_km2" in stats.stdout
    rows = [r for r in json.loads((tmp_path / "areas.json").read_text())["zones"][0]["classes"]]
    pixel_km2 = 1e-4  # 10 m pixels of a UTM grid: true areas differ from nominal by well under a per cent
    inside = sum(r["inside_km2"] for r in rows)
    assert inside == pytest.approx(float((mask == 1).sum()) * pixel_km2, rel=0.01)
    for r in rows:
        assert r["inside_km2"] + r["outside_km2"] == pytest.approx(r["area_km2"])
    look = _dunemap("quicklook", tmp_path / "m.tif", "--out", tmp_path / "look.png", "--hatch-outside")
    assert look.returncode == 0, look.stderr
    assert (tmp_path / "look.png").read_bytes()[:4] == b"\x89PNG"
    # the refusals through the same entry point in this process (each command ran as a real process above)
    capsys.readouterr()
    assert main(["quicklook", str(tmp_path / "plain.tif"), "--out", str(tmp_path / "look2.png"),
                 "--hatch-outside"]) == 1
    assert "--applicability" in capsys.readouterr().err
    assert main(["map", str(emb), "--out", str(tmp_path / "x.tif"), "--applicability", "--weights",
                 str(trained / "last.pth"), *map(str, common[2:])]) == 1
    err = capsys.readouterr().err
    assert "no area of applicability" in err and "Traceback" not in err and not (tmp_path / "x.tif").exists()


def _mads_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            x = rng.standard_normal((64, 64, 64)).astype(np.float32)
            x /= np.linalg.norm(x, axis=0, keepdims=True)
            label = rng.integers(0, 10, (64, 64)).astype(np.uint8)
            label[:8] = 255
            write_sample(root, split, f"{split}_{i}", x, label)
    return root


def test_calibrate_cli_on_a_published_state_dict(mads, tmp_path: Path, capsys) -> None:
    data = _mads_dataset(tmp_path / "data")
    weights, text = mads.weights, mads.text
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert load_checkpoint(weights, text_embeddings=np.load(text)).calibration == {}
    out = tmp_path / "calibrated.pth"
    proc = _dunemap("calibrate", "--weights", weights, "--text-embeddings", text, "--data-root", data, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert "temperature" in proc.stdout and "ECE" in proc.stdout
    loaded = load_checkpoint(out)  # self-describing now: no --text-embeddings needed
    assert loaded.calibration["pixels"] == 2 * 56 * 64 and loaded.applicability is not None
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before

    # the refusals through the same entry point in this process (the command ran as a real process above)
    assert main(["calibrate", "--weights", str(weights), "--text-embeddings", str(text), "--data-root", str(data),
                 "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "--overwrite" in err and "Traceback" not in err
    assert main(["calibrate", "--weights", str(out), "--data-root", str(data), "--out", str(out), "--overwrite"]) == 1
    assert "would overwrite the input" in capsys.readouterr().err


def test_calibrate_cli_leaves_a_held_out_region_out(mads, tmp_path: Path) -> None:
    """``--holdout-region``: a leave-one-region-out model is calibrated and described without that region."""
    from dunemap.data.manifest import TileRecord, write_manifest

    data = _mads_dataset(tmp_path / "data")
    records = [TileRecord(f"train_{i}", "train", region="namib" if i == 0 else "mojave", source=f"s{i}")
               for i in range(3)]
    records += [TileRecord("val_0", "val", region="namib", source="v0"), TileRecord("val_1", "val", region="mojave",
                                                                                   source="v1")]
    write_manifest(data, records)
    weights, text = mads.weights, mads.text
    fits = {}
    for name, extra in (("all", ()), ("loro", ("--holdout-region", "namib"))):
        out = tmp_path / f"{name}.pth"
        # in this process: test_calibrate_cli_on_a_published_state_dict runs the command as a real process
        assert main(["calibrate", "--weights", str(weights), "--text-embeddings", str(text), "--data-root", str(data),
                     "--out", str(out), *extra]) == 0
        fits[name] = load_checkpoint(out)
    assert fits["all"].calibration["pixels"] == 2 * 56 * 64 and fits["loro"].calibration["pixels"] == 56 * 64
    every, loro = (Applicability.from_dict(f.applicability) for f in (fits["all"], fits["loro"]))
    assert loro.samples.shape[0] < every.samples.shape[0]  # two training tiles described instead of three


@pytest.mark.parametrize("split", ["none"])
def test_calibrate_without_applicability(mads, tmp_path: Path, split: str) -> None:
    data = _mads_dataset(tmp_path / "data")
    out = tmp_path / "cal.pth"
    assert main(["calibrate", "--weights", str(mads.weights), "--text-embeddings", str(mads.text), "--data-root",
                 str(data), "--out", str(out), "--applicability-split", split]) == 0  # in this process, as above
    assert load_checkpoint(out).applicability is None


def test_temperature_is_fitted_on_the_new_scenes_of_the_validation_split(trained: Path, tmp_path: Path,
                                                                         make_tiny_dataset) -> None:
    """With a manifest, only validation tiles of scenes that gave no training tile calibrate the confidence."""
    from dunemap.data.manifest import TileRecord, write_manifest
    from dunemap.trust.fit import fit_trust

    data = make_tiny_dataset(tmp_path / "data")
    names = {split: sorted(p.stem for p in (data / "img_dir" / split).glob("*.npy")) for split in ("train", "val")}
    records = [TileRecord(n, "train", source="scene_a") for n in names["train"]]
    records += [TileRecord(names["val"][0], "val", source="scene_a"), TileRecord(names["val"][1], "val", source="scene_b")]
    model = load_checkpoint(trained / "best_model.pth").model
    without = fit_trust(model, data, 4, 16, applicability_split=None).calibration
    write_manifest(data, records)
    with_manifest = fit_trust(model, data, 4, 16, applicability_split=None).calibration
    assert without["scenes"] == "all" and without["pixels"] == 2 * 64 * 64
    assert with_manifest["scenes"] == "new" and with_manifest["pixels"] == 64 * 64
