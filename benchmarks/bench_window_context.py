"""How much context a pixel's label needs: accuracy by the pixel's distance to the edge of its window (issue 11).

A window classifies the pixels near its edge with context on one side only. This maps the held-out
scenes of ``bench_heldout.py`` with non-overlapping windows on four grid offsets (0, 1/4, 1/2 and 3/4 of
the window), so every pixel is predicted at four distances from an edge, and scores the predictions by
that distance (bins of 8 px), the scenes pooled: pixel accuracy and mIoU. Then the worst-case context of a
sliding-window map follows from its stride: a pixel lies at most ``stride / 2`` from the nearest window
centre, so at least ``(window - stride) / 2`` from that window's edge.

Usage: ``python benchmarks/bench_window_context.py WORK WEIGHTS [--window 128]`` (WORK as for
``bench_heldout.py``, whose held-out scenes it generates when missing); prints one JSON line and
appends it to ``WORK/context.jsonl``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import rasterio
import torch
from bench_heldout import held_out_scenes

from dunemap.mapping.predict import window_batch
from dunemap.metrics import ConfusionMatrix
from dunemap.raster.geometry import Box
from dunemap.raster.reader import EmbeddingReader
from dunemap.runtime import load_predictor

BIN = 8  # px per distance bin


def edge_distance(size: int) -> np.ndarray:
    """(size, size) distance of each pixel of a window to its nearest edge, in pixels (0 on the border)."""
    d = np.minimum(np.arange(size), np.arange(size)[::-1])
    return np.minimum(d[:, None], d[None, :])


def score_by_distance(work: Path, weights: Path, window: int) -> dict:
    predictor = load_predictor(weights, device="cpu", precision="fp32")
    distance = edge_distance(window) // BIN
    bins = [ConfusionMatrix(predictor.num_classes) for _ in range(int(distance.max()) + 1)]
    for _, emb, lab in held_out_scenes(work):
        with EmbeddingReader(emb) as reader, rasterio.open(lab) as src:
            data, truth = reader.read(Box(0, 0, reader.height, reader.width)), src.read(1)
        h, w = truth.shape
        for offset in range(0, window, window // 4):
            boxes = [Box(r, c, window, window) for r in range(offset, h - window + 1, window)
                     for c in range(offset, w - window + 1, window)]
            for box in boxes:
                with torch.inference_mode():
                    pred = predictor.predict(window_batch(data, [box])).argmax(1)[0].numpy()
                t = truth[box.row : box.row_stop, box.col : box.col_stop]
                for b, cm in enumerate(bins):
                    sel = distance == b
                    cm.update(pred[sel], t[sel])
    rows = []
    for b, cm in enumerate(bins):
        m = cm.compute()
        rows.append(dict(distance_px=f"{b * BIN}-{b * BIN + BIN - 1}", pixels=int(cm.matrix.sum()),
                         accuracy=round(float(m.oa), 3), miou=round(float(m.miou), 3)))
    return dict(weights=str(weights), window=window, by_edge_distance=rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("weights", type=Path)
    ap.add_argument("--window", type=int, default=128)
    args = ap.parse_args()
    line = score_by_distance(args.work, args.weights, args.window)
    print(json.dumps(line))
    with open(args.work / "context.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
