"""Mapping on a GPU: batches chosen from free memory, the same map as on the CPU (skipped without CUDA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from dunemap.mapping.config import MapConfig
from dunemap.mapping.engine import map_raster
from dunemap.raster.tags import PRECISION_TAG
from dunemap.runtime import MAX_GPU_BATCH, gpu_batch_size, load_predictor

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_batch_size_follows_free_memory() -> None:
    cuda = torch.device("cuda", 0)  # only a name: no GPU is touched when the free memory is given
    assert gpu_batch_size(torch.device("cpu"), 10**9) == 1
    assert gpu_batch_size(cuda, 10**9, free_bytes=8 * 10**9) == 4  # half of the free memory, 1 GB per window
    assert gpu_batch_size(cuda, 10**9, free_bytes=10**8) == 1  # at least one window
    assert gpu_batch_size(cuda, 1, free_bytes=10**12) == MAX_GPU_BATCH


@CUDA
def test_map_on_cuda_matches_the_cpu_map(tmp_path: Path, aef_raster, tiny_checkpoint: Path) -> None:
    invalid = np.zeros((160, 144), dtype=bool)
    invalid[40:70, 30:90] = True
    path = aef_raster(160, 144, invalid=invalid)
    config = MapConfig(window=64, stride=48, block_size=64, progress=False)  # batch size 0: from free GPU memory
    cpu = map_raster(path, load_predictor(tiny_checkpoint, device="cpu", precision="fp32"), tmp_path / "cpu.tif",
                     config)
    gpu = map_raster(path, load_predictor(tiny_checkpoint, device="cuda", precision="fp32"), tmp_path / "gpu.tif",
                     config)
    with rasterio.open(cpu.path) as a, rasterio.open(gpu.path) as b:
        x, y = a.read(1), b.read(1)
        assert b.tags()[PRECISION_TAG] == "fp32"
    assert ((x == 255) == (y == 255)).all() and (y[invalid] == 255).all()
    assert (x == y)[x != 255].mean() >= 0.99  # TF32/cuDNN kernels may flip near-ties only
