"""``dunemap train --init-from``: fine-tuning a trained run on labelled patches of new ground, with replay.

A tiny base run (mit_tiny, 16 bands, 4 classes) on a tiny dataset, a GeoTIFF of "new ground" with a truth label
raster (the simulated labeller), three 16 px patches on it turned into 32 px training tiles by ``prepare
--patches``, and the real CLI in subprocesses (forked from one pre-imported helper, see safety_helpers).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyogrio.raw
import pytest
import shapely
import torch
import yaml
from PIL import Image

from safety_helpers import CRS, TRANSFORM, CliServer, assert_one_line_error, hashes, write_tif

from dunemap.cli import main
from dunemap.io.checksum import file_sha256
from dunemap.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FINETUNE = ["--device", "cpu", "--precision", "fp32", "--no-progress", "--batch-size", "4"]
PATCHES = [(8, 8), (40, 56), (70, 20)]  # top-left (row, col) of the 16 px labelling patches on the 96 px scene


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory):
    server = CliServer(tmp_path_factory.mktemp("cli"))
    yield server.run
    server.close()


def _patches(path: Path, corners: list[tuple[int, int]], size: int = 16) -> Path:
    x0, y0, res = TRANSFORM.c, TRANSFORM.f, TRANSFORM.a
    boxes = [shapely.box(x0 + c * res, y0 - (r + size) * res, x0 + (c + size) * res, y0 - r * res) for r, c in corners]
    pyogrio.raw.write(path, np.array(shapely.to_wkb(boxes), dtype=object),
                      [np.arange(1, len(boxes) + 1, dtype=np.int32)], ["rank"], geometry_type="Polygon", crs=CRS,
                      driver="GPKG")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, make_tiny_dataset, make_tiny_tile) -> dict[str, Path]:
    """Read-only inputs: DATA (8 train, 2 val tiles of 64 px), its base RUN, and NEW (3 patch tiles of 32 px)."""
    root = tmp_path_factory.mktemp("finetune")
    data = make_tiny_dataset(root / "DATA", n_train=8, n_val=2, n_test=0)
    catalog = data / "catalog.yaml"
    assert main(["train", "--data-root", str(data), "--save-dir", str(root / "RUN"), "--model", "mit_tiny", "--bands",
                 "16", "--epochs", "2", "--lr", "5e-3", "--text", "random", "--catalog", str(catalog), "--seed", "3",
                 "--device", "cpu", "--precision", "fp32", "--no-progress"]) == 0
    image, truth = make_tiny_tile(np.random.default_rng(11), 96)
    emb = write_tif(root / "new_ground.tif", image)
    labels = write_tif(root / "truth.tif", truth[None])  # the simulated labeller: truth on the image grid
    patches = _patches(root / "patches.gpkg", PATCHES)
    assert main(["prepare", "--image", str(emb), "--labels", str(labels), "--patches", str(patches), "--out",
                 str(root / "NEW"), "--tile", "32", "--catalog", str(catalog), "--no-progress"]) == 0
    return {"root": root, "data": data, "catalog": catalog, "run": root / "RUN", "ckpt": root / "RUN" / "best_model.pth",
            "new": root / "NEW"}


@pytest.fixture(scope="module")
def base_hashes(world: dict[str, Path]) -> dict[Path, str]:
    return hashes(world["run"], world["data"], world["new"])


def _finetune(world: dict[str, Path], save: Path, *extra) -> list:
    return ["train", "--init-from", world["ckpt"], "--data-root", world["new"], "--replay", world["data"],
            "--save-dir", save, *FINETUNE, *extra]


@pytest.fixture(scope="module")
def tuned(world: dict[str, Path], cli, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The recipe with the decoder trained (BatchNorm statistics frozen, lr 3e-4) for 3 steps."""
    save = tmp_path_factory.mktemp("tuned") / "RUN2"
    proc = cli(*_finetune(world, save, "--max-steps-per-epoch", "3", "--train-layers", "decoder"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return save


def test_finetune_starts_from_the_base_keeps_its_model_and_records_it(world, base_hashes, tuned: Path) -> None:
    assert hashes(world["run"], world["data"], world["new"]) == base_hashes  # the base run and the data untouched
    assert sorted(p.name for p in world["run"].iterdir()) == sorted(["best_model.pth", "last.pth", "metrics.csv",
                                                                    "metrics.json", "config.yaml"])
    base, new = load_checkpoint(world["ckpt"]), load_checkpoint(tuned / "best_model.pth")
    before, after = base.model.state_dict(), new.model.state_dict()
    backbone = [k for k in before if not k.startswith("decode_head.")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # frozen: the base's, bit for bit
    for key in ("decode_head.linear_fuse.weight", "decode_head.linear_pred.weight", "decode_head.batch_norm.weight"):
        assert not torch.equal(before[key], after[key]), key  # the decoder trained
    for key in ("decode_head.batch_norm.running_mean", "decode_head.batch_norm.running_var"):
        assert torch.equal(before[key], after[key]), key  # --freeze-bn (the recipe): statistics kept
    assert torch.equal(base.model.text_embeddings, new.model.text_embeddings)  # the checkpoint's text, not a new draw
    assert new.class_names == base.class_names and new.config == base.config

    config = yaml.safe_load((tuned / "config.yaml").read_text())
    assert config["init_from"] == str(world["ckpt"]) and config["init_from_sha256"] == file_sha256(world["ckpt"])
    assert config["replay"] == str(world["data"]) and config["data_root"] == str(world["new"])
    # the checkpoint's options (not TrainConfig's defaults mit_b2 / 64 bands / catalog text) and the recipe's
    assert (config["model"], config["in_channels"], config["text"]) == ("mit_tiny", 16, "random")
    assert (config["lr"], config["epochs"], config["train_layers"], config["freeze_bn"]) == (3e-4, 1, "decoder", True)
    assert config["max_steps_per_epoch"] == 3 and config["replay_share"] == 0.5
    assert new.metrics["train_config"] == config | {"resume": False, "overwrite": False}


def test_temperature_and_area_of_applicability_are_refitted_with_the_patch_tiles(world, tuned: Path) -> None:
    base, new = load_checkpoint(world["ckpt"]), load_checkpoint(tuned / "best_model.pth")
    assert new.calibration["split"] == "val" and new.calibration["pixels"] == 2 * 64 * 64  # the replay val tiles
    assert new.temperature != base.temperature
    # training cells: every 64 px replay tile gives 8 x 8, each 32 px patch tile those of its 4 x 4 cell centres
    # (one per 8 px) that lie inside its labelled patch
    labels = [np.asarray(Image.open(p)) for p in sorted((world["new"] / "ann_dir" / "train").glob("*.png"))]
    patch_cells = sum(int((label[4::8, 4::8] != 255).sum()) for label in labels)
    assert len(labels) == len(PATCHES) and patch_cells > 0
    assert base.applicability["samples"].shape[0] == 8 * 64
    assert new.applicability["samples"].shape[0] == 8 * 64 + patch_cells


def test_replay_tiles_fill_half_of_every_batch(world, tuned: Path, cli, tmp_path: Path) -> None:
    """The metrics count the samples of each source; a replay copy whose train labels name other classes changes
    the fine-tuned weights (the same batches otherwise), so the replay tiles really reach the loss."""
    history = json.loads((tuned / "metrics.json").read_text())
    assert [(row["new_samples"], row["replay_samples"]) for row in history] == [(6, 6)]  # 3 steps of 2 + 2
    other = shutil.copytree(world["data"], tmp_path / "DATA")
    for png in (other / "ann_dir" / "train").glob("*.png"):
        label = np.asarray(Image.open(png))
        Image.fromarray(((label + 1) % 4).astype(np.uint8)).save(png)
    proc = cli(*_with(_finetune(world, tmp_path / "RUN3", "--max-steps-per-epoch", "3", "--no-calibrate"),
                      "--replay", other))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = load_checkpoint(tuned / "last.pth").model.state_dict(), \
        load_checkpoint(tmp_path / "RUN3" / "last.pth").model.state_dict()
    assert not torch.equal(first["decode_head.linear_pred.weight"], second["decode_head.linear_pred.weight"])


def test_a_negligible_learning_rate_leaves_the_base_weights(world, cli, tmp_path: Path) -> None:
    """Every layer trained at lr 1e-30: each update is far below float32 resolution, so the fine-tuned weights
    are the base's, which the fine-tune therefore started from."""
    proc = cli(*_finetune(world, tmp_path / "RUN2", "--lr", "1e-30", "--train-layers", "all",
                          "--max-steps-per-epoch", "2", "--no-calibrate"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = load_checkpoint(world["ckpt"]).model.state_dict()
    after = load_checkpoint(tmp_path / "RUN2" / "best_model.pth").model.state_dict()
    assert all(torch.allclose(before[k].double(), after[k].double(), rtol=0, atol=1e-20) for k in before)


def test_the_default_fine_tune_keeps_the_network_and_refits_its_trust_record(world, cli, tmp_path: Path) -> None:
    """--train-layers none (the recipe's default, docs/adapt.md): every weight is the base's, bit for bit; the
    temperature, the area of applicability (with the patch tiles) and the new ground's class shares are fitted."""
    proc = cli(*_finetune(world, tmp_path / "RUN2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr  # no optimizer step, so no scheduler step either
    base, new = load_checkpoint(world["ckpt"]), load_checkpoint(tmp_path / "RUN2" / "best_model.pth")
    before, after = base.model.state_dict(), new.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert yaml.safe_load((tmp_path / "RUN2" / "config.yaml").read_text())["train_layers"] == "none"
    assert new.applicability["samples"].shape[0] > base.applicability["samples"].shape[0]
    assert new.calibration["scene_prior"]["labelled_pixels"] > 0


def test_the_new_grounds_class_shares_are_fitted_and_maps_use_them_on_that_ground_only(world, tuned, cli,
                                                                                        tmp_path: Path) -> None:
    """The fine-tune stores the class shares of its patches' source raster (EM over its calibrated probabilities,
    the patches' labels included); a map of that raster adds min(log(q / pi), 0) to the calibrated logits and
    says so in its tags, a map of the same values in another UTM zone does not. One 96 px window: exact."""
    import rasterio

    prior = load_checkpoint(tuned / "best_model.pth").calibration["scene_prior"]
    emb = world["root"] / "new_ground.tif"
    labels = [np.asarray(Image.open(p)) for p in sorted((world["new"] / "ann_dir" / "train").glob("*.png"))]
    assert [g["source"] for g in prior["ground"]] == [str(emb)]
    assert prior["labelled_pixels"] == sum(int((label != 255).sum()) for label in labels) > 0
    assert prior["sampled_pixels"] == 96 * 96  # a small raster: every pixel sampled
    assert sum(prior["shares"]) == pytest.approx(1.0) and len(prior["shares"]) == 4
    with rasterio.open(emb) as src:
        elsewhere = write_tif(tmp_path / "other_zone.tif", src.read(), crs="EPSG:32734")
    probs = {}
    for name, raster in (("on", emb), ("off", elsewhere)):
        out = tmp_path / f"{name}.tif"
        proc = cli("map", raster, "--weights", tuned / "best_model.pth", "--out", out, "--window", "96", "--stride",
                   "96", "--probabilities", "float32", "--device", "cpu", "--precision", "fp32", "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
        with rasterio.open(out) as m:
            assert ("SCENE_PRIOR" in m.tags()) == (name == "on")
        with rasterio.open(tmp_path / f"{name}_probabilities.tif") as p:
            probs[name] = p.read().astype(np.float64)  # (K, H, W)
    q, pi = np.clip(prior["shares"], 1e-6, None), np.clip(prior["train_shares"], 1e-6, None)
    expected = probs["off"] * np.minimum(q / pi, 1.0)[:, None, None]
    expected /= expected.sum(axis=0, keepdims=True)
    np.testing.assert_allclose(probs["on"], expected, atol=2e-5)
    assert not np.allclose(probs["on"], probs["off"], atol=1e-3)


def _bad_replay(w, t):
    from dunemap.data.seed_layout import write_sample

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        write_sample(t / "R32", split, f"{split}_0", rng.standard_normal((32, 64, 64)).astype(np.float32),
                     np.zeros((64, 64), np.uint8))
    return _with(_finetune(w, t / "RUN2"), "--replay", t / "R32")


def _new_with_class(w, t, class_id: int) -> Path:
    new = shutil.copytree(w["new"], t / "NEW")
    png = sorted((new / "ann_dir" / "train").glob("*.png"))[1]
    label = np.asarray(Image.open(png)).copy()
    label[label != 255] = class_id  # the labeller named a class the model does not have
    Image.fromarray(label).save(png)
    return new


def _with(argv: list, flag: str, value) -> list:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


def _changed_sha(w, t):
    config = yaml.safe_load(Path(w["tuned_config"]).read_text())
    config["init_from_sha256"] = "0" * 64
    (t / "run.yaml").write_text(yaml.safe_dump(config))
    return ["train", "--config", t / "run.yaml", "--save-dir", t / "RUN3"]


CASES = {  # name -> (argv builder, pattern of the one error line)
    "another --model": (lambda w, t: _finetune(w, t / "RUN2", "--model", "mit_b0"),
                        r"--model mit_b0: .*best_model\.pth is a model of --model mit_tiny"),
    "another --text": (lambda w, t: _finetune(w, t / "RUN2", "--text", "catalog"),
                       r"--text catalog: .*--text random; a fine-tune keeps the checkpoint's model"),
    "replay of 32 bands": (_bad_replay, r"--replay .*R32: its tiles have 32 bands .*takes 16"),
    "new class in a patch": (lambda w, t: _with(_finetune(w, t / "RUN2"), "--data-root", _new_with_class(w, t, 5)),
                             r"NEW/ann_dir/train/\S+\.png: class id 5, which .*best_model\.pth does not have "
                             r"\(4 classes: blob_0"),
    "save dir is the base run": (lambda w, t: _finetune(w, w["run"]), r"--save-dir .*RUN is inside the folder"),
    "save dir inside the base run": (lambda w, t: _finetune(w, w["run"] / "ft"),
                                     r"--save-dir .*RUN/ft is inside the folder of --init-from"),
    "no --replay": (lambda w, t: _finetune(w, t / "RUN2")[:5] + ["--save-dir", t / "RUN2", *FINETUNE],
                    r"--init-from needs --replay DATA"),
    "--replay without --init-from": (lambda w, t: ["train", "--data-root", w["data"], "--replay", w["data"],
                                                   "--save-dir", t / "RUN2", *FINETUNE],
                                     r"--replay needs --init-from"),
    "--train-layers without --init-from": (lambda w, t: ["train", "--data-root", w["data"], "--train-layers",
                                                         "decoder", "--save-dir", t / "RUN2", *FINETUNE],
                                           r"--train-layers decoder needs --init-from"),
    "--replay-share 1": (lambda w, t: _finetune(w, t / "RUN2", "--replay-share", "1"),
                         r"--replay-share 1\.0 must be at least 0 and below 1"),
    "the base changed since the recorded run": (_changed_sha, r"--init-from .*its sha256 is .* but the run's options "
                                                              r"record 000000000000; the checkpoint changed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_fine_tunes_are_one_line_errors_that_write_nothing(case, world, base_hashes, tuned, cli,
                                                               tmp_path: Path) -> None:
    build, pattern = CASES[case]
    argv = build({**world, "tuned_config": tuned / "config.yaml"}, tmp_path)
    entries = set(tmp_path.rglob("*")) | set(world["root"].rglob("*"))
    assert_one_line_error(cli(*argv), pattern)
    assert set(tmp_path.rglob("*")) | set(world["root"].rglob("*")) == entries  # no file, folder or lock left
    assert hashes(world["run"], world["data"], world["new"]) == base_hashes


def test_open_vocabulary_model_learns_a_new_class_its_catalog_describes(world, cli, tmp_path: Path,
                                                                       monkeypatch) -> None:
    """A --head text model: a label of class 4 is refused until --catalog describes it after the model's 4
    classes; then the fine-tuned model has 5 classes, the old ones' text rows exactly as trained."""
    monkeypatch.setenv("DUNEMAP_CACHE", str(tmp_path / "cache"))
    base = tmp_path / "OV"
    assert main(["train", "--data-root", str(world["data"]), "--save-dir", str(base), "--model", "mit_tiny", "--bands",
                 "16", "--epochs", "1", "--lr", "5e-3", "--head", "text", "--catalog", str(world["catalog"]),
                 "--device", "cpu", "--precision", "fp32", "--no-progress", "--no-calibrate"]) == 0
    new = _new_with_class(world, tmp_path, 4)
    five = yaml.safe_load(world["catalog"].read_text())
    five["classes"].append({"id": 4, "name": "star_dune", "label": "Star dune", "color": [200, 30, 30],
                            "description": "Pyramidal dune with three or more sinuous arms radiating from a peak."})
    (tmp_path / "five.yaml").write_text(yaml.safe_dump(five))
    five["classes"][1]["name"] = "blobby"
    (tmp_path / "reordered.yaml").write_text(yaml.safe_dump(five))
    argv = ["train", "--init-from", base / "best_model.pth", "--data-root", new, "--replay", world["data"],
            "--max-steps-per-epoch", "2", "--no-calibrate", *FINETUNE]
    assert_one_line_error(cli(*argv, "--save-dir", tmp_path / "R1"), r"train/\S+\.png: class id 4, which .*OV/best_"
                                                                     r"model\.pth does not have .*--catalog")
    assert_one_line_error(cli(*argv, "--save-dir", tmp_path / "R1", "--catalog", tmp_path / "reordered.yaml"),
                          r"--catalog .*reordered\.yaml: class 1 is 'blobby' but .*class 1 is 'blob_1'")
    assert_one_line_error(cli(*_with(argv, "--init-from", world["ckpt"]), "--save-dir", tmp_path / "R1",
                              "--catalog", tmp_path / "five.yaml"), r"trained with 4 classes but catalog .*five\.yaml")
    assert not (tmp_path / "R1").exists()

    proc = cli(*argv, "--save-dir", tmp_path / "R2", "--catalog", tmp_path / "five.yaml")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = load_checkpoint(base / "best_model.pth"), load_checkpoint(tmp_path / "R2" / "best_model.pth")
    assert after.class_names == before.class_names + ["star_dune"] and after.config.num_classes == 5
    assert torch.equal(after.model.text_embeddings[:4], before.model.text_embeddings)
    assert yaml.safe_load((tmp_path / "R2" / "config.yaml").read_text())["catalog"] == str(tmp_path / "five.yaml")
