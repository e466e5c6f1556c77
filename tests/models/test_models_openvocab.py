"""Open vocabulary end to end: train with catalog text, then map with a catalog of one more class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
import torch
import yaml
from affine import Affine

from dunemap.cli import main
from dunemap.errors import CheckpointError
from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import map_raster
from dunemap.models.checkpoint import load_checkpoint
from dunemap.runtime import load_predictor
from dunemap.training import TrainConfig, train


def _grow_catalog(src: Path, dst: Path) -> Path:
    data = yaml.safe_load(src.read_text())
    data["classes"].append({"id": len(data["classes"]), "name": "star_dune", "label": "Star dune",
                            "color": [200, 30, 30],
                            "description": "Pyramidal dune with three or more sinuous arms radiating from a peak."})
    dst.write_text(yaml.safe_dump(data))
    return dst


@pytest.mark.parametrize("head", ["text", "linear"])
def test_catalog_with_a_new_class(head: str, tiny_dataset: Path, tmp_path: Path) -> None:
    catalog = tiny_dataset / "catalog.yaml"
    result = train(TrainConfig(tiny_dataset, tmp_path / "run", model="mit_tiny", in_channels=16, epochs=1,
                               lr=5e-3, text="catalog", head=head, catalog=catalog, precision="fp32", device="cpu",
                               progress=False, calibrate=False))  # last.pth is read: never calibrated
    bigger = _grow_catalog(catalog, tmp_path / "five.yaml")
    same = load_checkpoint(result.last_checkpoint, catalog=catalog)  # the training catalog always matches
    assert same.class_names == [f"blob_{i}" for i in range(4)]
    if head == "linear":
        with pytest.raises(CheckpointError, match="catalog"):
            load_checkpoint(result.last_checkpoint, catalog=bigger)
        return
    grown = load_checkpoint(result.last_checkpoint, catalog=bigger)
    assert grown.class_names[-1] == "star_dune" and grown.model.text_embeddings.shape[0] == 5
    trained = same.model.state_dict()
    assert all(torch.equal(trained[k], v) for k, v in grown.model.state_dict().items())  # no retraining
    predictor = load_predictor(result.last_checkpoint, precision="fp32", catalog=bigger)
    logits = predictor.predict(torch.randn(1, 16, 64, 64))
    assert predictor.num_classes == 5 and logits.shape == (1, 5, 64, 64)
    assert torch.isfinite(logits).all()

    # ...and maps a georeferenced raster with the five-class legend, no retraining.
    image = tmp_path / "scene.tif"
    with rasterio.open(image, "w", driver="GTiff", width=96, height=80, count=16, dtype="float32",
                       crs="EPSG:32733", transform=Affine(10, 0, 500000, 0, -10, 7300000)) as dst:
        dst.write(torch.nn.functional.normalize(torch.randn(16, 80, 96), dim=0).numpy())
    result = map_raster(image, predictor, tmp_path / "map.tif", MapConfig(window=64, stride=32, progress=False))
    with rasterio.open(result.path) as m:
        assert json.loads(m.tags()["CLASS_NAMES"]) == [f"blob_{i}" for i in range(4)] + ["star_dune"]
        assert m.tags()["CLASS_4"] == "star_dune" and len(m.colormap(1)) >= 5
        assert m.read(1).max() < 5


def test_adding_a_class_leaves_the_old_classes_logits(tiny_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    """A trained --head text checkpoint, a GeoTIFF and the CLI: `map --catalog` with one class more changes no
    old class's logit (so their probability ratios) by more than 1e-5."""
    import numpy as np

    monkeypatch.setenv("DUNEMAP_CACHE", str(tmp_path / "cache"))
    catalog = tiny_dataset / "catalog.yaml"
    run = tmp_path / "run"
    assert main(["train", "--data-root", str(tiny_dataset), "--save-dir", str(run), "--model", "mit_tiny",
                 "--bands", "16", "--epochs", "1", "--lr", "5e-3", "--head", "text", "--catalog", str(catalog),
                 "--precision", "fp32", "--device", "cpu", "--no-progress"]) == 0
    weights = run / "best_model.pth"
    bigger = _grow_catalog(catalog, tmp_path / "five.yaml")
    image = tmp_path / "scene.tif"
    x = torch.nn.functional.normalize(torch.randn(16, 80, 96, generator=torch.Generator().manual_seed(3)), dim=0)
    with rasterio.open(image, "w", driver="GTiff", width=96, height=80, count=16, dtype="float32",
                       crs="EPSG:32733", transform=Affine(10, 0, 500000, 0, -10, 7300000)) as dst:
        dst.write(x.numpy())

    four = load_predictor(weights, precision="fp32", catalog=catalog).predict(x[None])
    five = load_predictor(weights, precision="fp32", catalog=bigger).predict(x[None])
    assert five.shape[1] == 5
    assert (five[:, :4] - four).abs().max().item() < 1e-5  # the model's logits

    probs = {}
    for name, cat in (("four", catalog), ("five", bigger)):  # one window: no blending between windows
        out = tmp_path / f"{name}.tif"
        assert main(["map", str(image), "--weights", str(weights), "--out", str(out), "--catalog", str(cat),
                     "--window", "128", "--stride", "128", "--probabilities", "float32", "--precision", "fp32",
                     "--device", "cpu", "--no-progress"]) == 0
        with rasterio.open(tmp_path / f"{name}_probabilities.tif") as src:
            probs[name] = src.read().astype(np.float64)
        with rasterio.open(out) as src:
            assert src.tags()["PRECISION"] == "fp32"
    log4, log5 = np.log(probs["four"]), np.log(probs["five"][:4])
    # softmax only adds a per-pixel constant: log p_k - log p_0 is the logit difference l_k - l_0
    assert np.abs((log5 - log5[0]) - (log4 - log4[0])).max() < 1e-5
    assert np.abs(probs["five"][4]).max() > 0  # the new class is scored
