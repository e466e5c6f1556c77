"""The generator's purpose: on the same small split, a per-pixel random forest gets clearly fewer pixels right
than a small segmentation model, because class identity lives in spatial pattern."""

from __future__ import annotations

from pathlib import Path

from dunemap.comparison.pixel import PixelConfig, fit_pixel_classifier, pixel_confusion
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
    # can no longer tell the two regions' class sets apart from colour alone in fewer.
    # No end-of-run calibration: a temperature and an area of applicability change no argmax, so no OA.
    result = train(TrainConfig(root, tmp_path / "run", model="mit_tiny", epochs=8, batch_size=4, lr=3e-3,
                               text="random", precision="bf16", device="cpu", progress=False, seed=0,
                               calibrate=False))
    seg = evaluate(EvalConfig(root, result.best_checkpoint, "test", out_dir=tmp_path / "eval", precision="bf16",
                              device="cpu", progress=False)).metrics

    # Overall accuracy, not mIoU: the 10 test tiles hold 3-4 classes, so one rare class swings the mean IoU. Over
    # dataset and training seeds 0-3 (bf16, 8 epochs) the SegFormer's test OA beat the forest's by 0.27, 0.20, 0.10
    # and 0.22 (0.10-0.31 with 12 or 16 epochs, and on val+test pooled), while its mIoU lead was 0.37, 0.05, 0.06
    # and 0.19, and on seed 2's val+test the forest led in mIoU (0.415 against 0.367).
    assert seg.oa >= rf.oa + 0.05, (seg.oa, rf.oa)
