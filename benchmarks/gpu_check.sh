#!/usr/bin/env bash
# GPU check for mapping: the model's Mpx/s on the GPU against this machine's CPU decode and write rates.
#
# Usage: benchmarks/gpu_check.sh [MODEL] [SECONDS]    (default mit_b2, about 20 s of timing per rate)
#
# Prints one summary line. The model is randomly initialised (the speed does not depend on the
# weights); windows are 512 px as `dunemap map` uses them, in the batch size mapping picks from free
# GPU memory. "decode" is the int8 -> model-input decoding of mapping (`window_batch`) on one CPU
# thread, "write" the class-map COG conversion with overviews. Without CUDA it says so and exits 1
# (DEVICE=cpu runs the same measurement on the CPU, to check the script itself).
set -euo pipefail
MODEL="${1:-mit_b2}"
SECONDS_PER_RATE="${2:-20}"
PYTHON="${PYTHON:-python}"
exec "$PYTHON" - "$MODEL" "$SECONDS_PER_RATE" <<'PY'
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import torch
import torch.nn.functional as F

model_name, budget = sys.argv[1], float(sys.argv[2])
device = torch.device(os.environ.get("DEVICE", "cuda:0"))
if device.type == "cuda" and not torch.cuda.is_available():
    print("gpu_check: no CUDA device here; GPU figures are still missing")
    sys.exit(1)

from dunemap.mapping.config import MapConfig
from dunemap.mapping.predict import GPU_BYTES_PER_WINDOW_PIXEL, window_batch
from dunemap.raster.reader import BlockData
from dunemap.raster.geometry import Box
from dunemap.mapping.writer import write_cog
from dunemap.models import create_model
from dunemap.runtime import gpu_batch_size, resolve_precision

WINDOW = MapConfig().window
precision = resolve_precision("auto", device)
dtype = torch.bfloat16 if precision == "bf16" else torch.float32
batch = gpu_batch_size(device, WINDOW * WINDOW * GPU_BYTES_PER_WINDOW_PIXEL)


def rate(fn, pixels_per_call):
    fn()  # warm-up (cuDNN autotuning, allocator)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget or calls < 3:
        fn()
        calls += 1
    return calls * pixels_per_call / (time.perf_counter() - t0) / 1e6


torch.manual_seed(0)
model = create_model(model_name, num_classes=10, text_dim=512).eval().to(device, memory_format=torch.channels_last)
model.set_text(F.normalize(torch.randn(10, 512, device=device), dim=1))
rng = np.random.default_rng(0)
codes = rng.integers(-127, 128, (64, WINDOW, WINDOW * batch), dtype=np.int8)
box = Box(0, 0, WINDOW, WINDOW * batch)
data = BlockData(box, codes, np.ones(box.shape, dtype=bool))
windows = [Box(0, i * WINDOW, WINDOW, WINDOW) for i in range(batch)]
x = window_batch(data, windows, dtype)
x = x.pin_memory() if device.type == "cuda" else x


def gpu_step():
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        xb = x.to(device, non_blocking=True)
        torch.softmax(model(xb).float(), dim=1).to("cpu")


torch.set_num_threads(1)
gpu = rate(gpu_step, batch * WINDOW * WINDOW)
decode = rate(lambda: window_batch(data, windows, dtype), batch * WINDOW * WINDOW)
with tempfile.TemporaryDirectory() as tmp:
    src = Path(tmp) / "classes.tif"
    side = 4096
    with rasterio.open(src, "w", driver="GTiff", height=side, width=side, count=1, dtype="uint8", nodata=255,
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate") as dst:
        dst.write((rng.integers(0, 10, (side // 16, side // 16)).repeat(16, 0).repeat(16, 1)).astype(np.uint8), 1)
    write = rate(lambda: write_cog(src, Path(tmp) / "cog.tif"), side * side)
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
print(f"gpu_check: {name}, {model_name} {precision} batch {batch}: model {gpu:.2f} Mpx/s on {device}; "
      f"CPU decode {decode:.1f} Mpx/s per thread, COG write {write:.1f} Mpx/s; "
      f"decode threads to keep the GPU busy: {gpu / decode:.1f}")
PY
