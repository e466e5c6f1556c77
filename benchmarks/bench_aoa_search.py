"""How fast is the area of applicability's nearest-neighbour search, and which search to use?

Takes a checkpoint with an area of applicability and a raster, runs the model over the raster's
first ``--windows`` 128 px windows to get the cells the map searches (decoder features and, where the
record has it, the input per cell), projects them as the map does, and times the search for each
cell's nearest training sample against the record's samples:

- exact brute force in torch (what ``dunemap map`` runs), in query chunks of several sizes;
- scikit-learn's k-d tree and ball tree (exact; built once, build time given apart).

Every method must return the same distances (the largest difference is printed). Times are the
median of ``--repeats`` runs inside one process, as milliseconds per 1,000 cells.

    python benchmarks/bench_aoa_search.py --weights RUN/best_model.pth --raster EMB.tif
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rasterio
import torch
from rasterio.windows import Window
from sklearn.neighbors import BallTree, KDTree

from dunemap.io.aef import dequantize
from dunemap.runtime import load_predictor
from dunemap.trust.applicability import POOL, nearest_distance, pool_features, pool_inputs

WINDOW = 128


def cells(weights: str, raster: str, windows: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Projected query cells and the record's samples of each space: {space: (queries (M, R), samples (N, R))}."""
    predictor = load_predictor(weights, device="cpu", precision="fp32")
    aoa = predictor.applicability
    if aoa is None:
        raise SystemExit(f"{weights}: no area of applicability; fit one with dunemap calibrate")
    with rasterio.open(raster) as src:
        per_row = src.width // WINDOW
        boxes = [Window((i % per_row) * WINDOW, (i // per_row) * WINDOW, WINDOW, WINDOW) for i in range(windows)]
        blocks = [src.read(window=w) for w in boxes]
    x = np.stack([dequantize(b)[0] if b.dtype == np.int8 else np.nan_to_num(b) for b in blocks])
    x = torch.from_numpy(x)
    with torch.inference_mode():
        _, features = predictor.model.forward_with_features(x)
    spaces = {"features": (aoa, pool_features(features.float(), aoa.pool))}
    if aoa.inputs is not None:
        spaces["input"] = (aoa.inputs, pool_inputs(x, aoa.inputs.pool))
    out = {}
    for name, (record, grid) in spaces.items():
        flat = grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1])
        out[name] = (record.project(flat), record.samples)
    return out


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", required=True)
    ap.add_argument("--raster", required=True)
    ap.add_argument("--windows", type=int, default=32, help="128 px windows from the raster's top rows")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; pool {POOL}")
    results = {}
    for space, (queries, samples) in cells(args.weights, args.raster, args.windows).items():
        m = queries.shape[0]
        per_k = 1000.0 / m
        reference = nearest_distance(queries, samples)
        row = {"cells": m, "samples": int(samples.shape[0]), "dims": int(samples.shape[1])}
        for chunk in (128, 512, 2048, 4096):
            row[f"torch_chunk_{chunk}_ms_per_1k"] = median_ms(lambda: nearest_distance(queries, samples, chunk),
                                                              args.repeats) * per_k
        q64, s64 = queries.astype(np.float64), samples.astype(np.float64)
        for name, tree_class in (("kdtree", KDTree), ("balltree", BallTree)):
            tree = tree_class(s64)
            row[f"{name}_build_ms"] = median_ms(lambda: tree_class(s64), args.repeats)
            row[f"{name}_ms_per_1k"] = median_ms(lambda: tree.query(q64, k=1), args.repeats) * per_k
            row[f"{name}_max_difference"] = float(np.abs(tree.query(q64, k=1)[0][:, 0] - reference).max())
        results[space] = row
        print(json.dumps({space: row}))


if __name__ == "__main__":
    main()
