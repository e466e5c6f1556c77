"""The one text-source resolver: a checkpoint's own text is never silently replaced; a user matrix is never re-encoded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from dunemap.cli import main
from dunemap.errors import CheckpointError
from dunemap.knowledge.catalog import load_catalog
from dunemap.knowledge.sources import checkpoint_text, training_text
from dunemap.models import create_model
from dunemap.models.checkpoint import load_checkpoint, save_checkpoint


@pytest.fixture
def fused_checkpoint(tmp_path: Path) -> tuple[Path, np.ndarray, Path]:
    """A dunemap checkpoint of a text-fused model trained with a user's text matrix, and a GeoTIFF to map."""
    torch.manual_seed(0)
    catalog = load_catalog()
    rows = np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    text, source = training_text("catalog", catalog, "minilm", text_embeddings=tmp_path / "rows.npy")
    model = create_model("mit_tiny", num_classes=10, in_channels=8, text_dim=16).eval()
    model.set_text(torch.from_numpy(text))
    weights = save_checkpoint(tmp_path / "model.pth", model, catalog.names, catalog.colors, source)
    image = tmp_path / "scene.tif"
    with rasterio.open(image, "w", driver="GTiff", width=64, height=64, count=8, dtype="float32",
                       crs="EPSG:32633", transform=Affine(10, 0, 0, 0, -10, 640)) as dst:
        dst.write(np.random.default_rng(1).standard_normal((8, 64, 64)).astype(np.float32))
    return weights, text, image


def test_a_user_matrix_is_stored_as_its_own_text_source(fused_checkpoint) -> None:
    weights, text, _ = fused_checkpoint
    loaded = load_checkpoint(weights)
    assert loaded.text_source["mode"] == "matrix" and loaded.text_source["file"] == "rows.npy"
    assert "encoder_spec" not in loaded.text_source  # nothing to re-encode it with
    np.testing.assert_array_equal(loaded.model.text_embeddings.numpy(), text)


def test_a_user_matrix_is_never_re_encoded_for_new_classes(fused_checkpoint) -> None:
    weights, text, _ = fused_checkpoint
    loaded = load_checkpoint(weights)
    with pytest.raises(CheckpointError, match="a user-supplied matrix, which cannot encode new classes"):
        checkpoint_text("model.pth", text, loaded.text_source, loaded.class_names, loaded.colors, uses_text=True,
                        open_vocabulary=True, catalog=_eleven(weights.parent))


def _eleven(folder: Path) -> Path:
    import yaml

    classes = [c.to_dict() for c in load_catalog().classes]
    classes.append({**classes[0], "id": 10, "name": "yardang", "description": "Wind-eroded ridges of soft rock."})
    path = folder / "eleven.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "classes": classes}))
    return path


def test_other_rows_than_the_checkpoints_need_replace_text(fused_checkpoint, tmp_path, capsys) -> None:
    weights, text, image = fused_checkpoint
    other = tmp_path / "other.npy"
    np.save(other, np.random.default_rng(5).standard_normal((10, 16)).astype(np.float32))
    args = ["map", str(image), "--weights", str(weights), "--precision", "fp32", "--device", "cpu", "--no-progress",
            "--window", "64", "--stride", "64"]
    assert main([*args, "--out", str(tmp_path / "refused.tif"), "--text-embeddings", str(other)]) == 1
    err = capsys.readouterr().err.strip()
    assert "carries its own class text" in err and "other.npy" in err and "--replace-text" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "refused.tif").exists()

    assert main([*args, "--out", str(tmp_path / "own.tif")]) == 0
    assert main([*args, "--out", str(tmp_path / "same.tif"), "--text-embeddings", str(tmp_path / "rows.npy")]) == 0
    assert main([*args, "--out", str(tmp_path / "replaced.tif"), "--text-embeddings", str(other),
                 "--replace-text"]) == 0
    with rasterio.open(tmp_path / "own.tif") as a, rasterio.open(tmp_path / "same.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())  # the same rows are the checkpoint's own text
    with rasterio.open(tmp_path / "replaced.tif") as src:
        assert src.read(1).shape == (64, 64)
