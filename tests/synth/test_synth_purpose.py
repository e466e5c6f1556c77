"""The generator's purpose: on the same small split, a per-pixel random forest scores clearly below a
small segmentation model, because class identity lives in spatial pattern."""

from __future__ import annotations

from pathlib import Path

from dunemap.benchmark.pixel import PixelConfig, fit_pixel_classifier, pixel_confusion
from dunemap.data.dataset import SeedLayoutDataset
from dunemap.evaluation import EvalConfig, evaluate
from dunemap.metrics import metrics_from_matrix
from dunemap.synth.dataset import write_dataset
from dunemap.training import TrainConfig, train


def test_pixel_forest_scores_clearly_below_a_small_segformer(tmp_path: Path) -> None:
    # Blocks of the same scenes (split_by="block"): this test is about spatial pattern against per-pixel values
    # within scenes. With the default whole-scene hold-out, 8 epochs on 4 scenes do not beat the forest on the
    # new scene (seed 0: SegFormer mIoU 0.158, forest 0.175); docs/quality.md is about that gap.
    root = write_dataset(tmp_path / "ds", regions=["namib", "yilgarn"], scenes_per_region=2, scene_size=256,
                         tile=64, block_tiles=1, seed=0, split_by="block")
    train_set = SeedLayoutDataset(root, "train", num_classes=10)
    test_set = SeedLayoutDataset(root, "test", num_classes=10)

    forest = fit_pixel_classifier(train_set, PixelConfig(method="rf", pixels_per_class=300, n_estimators=50))
    rf = metrics_from_matrix(pixel_confusion(forest, [test_set], 10))

    # 8 epochs, not 6: since the regions' materials were brought closer together (presets.py) the SegFormer
    # can no longer tell the two regions' class sets apart from colour alone, and after 6 epochs its test mIoU
    # spread over seeds 0-2 from 0.47 to 0.68 (forest 0.36), straddling the margin; after 8 it is 0.55-0.57.
    result = train(TrainConfig(root, tmp_path / "run", model="mit_tiny", epochs=8, batch_size=4, lr=3e-3,
                               text="random", precision="bf16", device="cpu", progress=False, seed=0))
    seg = evaluate(EvalConfig(root, result.best_checkpoint, "test", out_dir=tmp_path / "eval", precision="bf16",
                              device="cpu", progress=False)).metrics

    assert seg.miou >= rf.miou + 0.15, (seg.miou, rf.miou)
    assert seg.oa > rf.oa
