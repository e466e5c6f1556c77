#!/usr/bin/env bash
# GPU check for mapping: the model's Mpx/s on the GPU, per backend with a GPU build, against this machine's
# CPU decode and COG write rates.
#
# Usage: benchmarks/gpu_check.sh [MODEL] [SECONDS]    (default mit_b2, about SECONDS (20) of timing per rate)
#
# Prints one line per measurement, then a summary line. The model is randomly initialised (the speed does not
# depend on the weights); windows are 512 px (the fallback window of `dunemap map`), in the batch size mapping
# picks from free GPU memory. Rates:
#   torch        the model on the device (bf16 where `--precision auto` picks it), int8 codes decoded on the
#                device from pinned memory as mapping does on a GPU (dunemap.mapping.decode.decode_on_device)
#   onnxruntime  the fp32 ONNX export with ONNX Runtime's CUDAExecutionProvider, where onnxruntime-gpu is installed
#   openvino     the fp32 ONNX export on OpenVINO's GPU device (Intel GPUs), where OpenVINO lists one
#   decode       int8 codes -> model input on one CPU thread (dunemap.mapping.decode.window_batch)
#   write        the class-map COG conversion with overviews
# Without CUDA it says so and exits 1 (DEVICE=cpu runs the same measurements on the CPU, to check the script).
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

from dunemap.mapping.config import FALLBACK_WINDOW
from dunemap.mapping.decode import decode_on_device, window_batch, window_codes
from dunemap.mapping.predict import GPU_BYTES_PER_WINDOW_PIXEL
from dunemap.models import create_model
from dunemap.raster.cog import write_cog
from dunemap.raster.geometry import Box
from dunemap.raster.reader import BlockData
from dunemap.runtime import gpu_batch_size, resolve_precision
from dunemap.runtime.export import INPUT_NAME, export_onnx

WINDOW = FALLBACK_WINDOW
precision = resolve_precision("auto", device)
dtype = torch.bfloat16 if precision == "bf16" else torch.float32
batch = gpu_batch_size(device, WINDOW * WINDOW * GPU_BYTES_PER_WINDOW_PIXEL) if device.type == "cuda" else 1
pixels = batch * WINDOW * WINDOW


def rate(fn, pixels_per_call):
    fn()  # warm-up (cuDNN autotuning, allocator, session set-up)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < budget or calls < 3:
        fn()
        calls += 1
    return calls * pixels_per_call / (time.perf_counter() - t0) / 1e6


torch.manual_seed(0)
model = create_model(model_name, num_classes=10, text_dim=512).eval()
model.set_text(F.normalize(torch.randn(10, 512), dim=1))
rng = np.random.default_rng(0)
codes = rng.integers(-127, 128, (64, WINDOW, WINDOW * batch), dtype=np.int8)
box = Box(0, 0, WINDOW, WINDOW * batch)
data = BlockData(box, codes, np.ones(box.shape, dtype=bool))
windows = [Box(0, i * WINDOW, WINDOW, WINDOW) for i in range(batch)]
pinned = window_codes(data, windows, pin=device.type == "cuda")
on_device = model.to(device, memory_format=torch.channels_last)


def torch_step():
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        x = decode_on_device(pinned, dtype, device)
        torch.softmax(on_device(x).float(), dim=1).to("cpu")


torch.set_num_threads(1)
rates = {f"torch {precision}": rate(torch_step, pixels)}
with tempfile.TemporaryDirectory() as tmp:
    x = window_batch(data, windows, torch.float32).contiguous().numpy()
    onnx = export_onnx(model.to("cpu", memory_format=torch.contiguous_format).float(), WINDOW, Path(tmp) / "m.onnx")
    try:
        import onnxruntime as ort
    except ImportError:
        print("onnxruntime: not installed")
    else:
        provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
        if provider in ort.get_available_providers():
            session = ort.InferenceSession(str(onnx), providers=[provider])
            rates[f"onnxruntime fp32 ({provider})"] = rate(lambda: session.run(None, {INPUT_NAME: x}), pixels)
        else:
            print(f"onnxruntime: no {provider} in this build (the GPU build is the onnxruntime-gpu package)")
    try:
        import openvino as ov
    except ImportError:
        print("openvino: not installed")
    else:
        target = "GPU" if device.type == "cuda" else "CPU"
        if target in ov.Core().available_devices:
            compiled = ov.Core().compile_model(str(onnx), target, {"INFERENCE_PRECISION_HINT": "f32"})
            request = compiled.create_infer_request()
            rates[f"openvino fp32 ({target})"] = rate(lambda: request.infer({0: x}), pixels)
        else:
            print(f"openvino: no {target} device (OpenVINO's GPU device is an Intel GPU)")
    decode = rate(lambda: window_batch(data, windows, dtype), pixels)
    src = Path(tmp) / "classes.tif"
    side = 4096
    with rasterio.open(src, "w", driver="GTiff", height=side, width=side, count=1, dtype="uint8", nodata=255,
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate", crs="EPSG:32733",
                       transform=rasterio.Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_300_000.0)) as dst:
        dst.write((rng.integers(0, 10, (side // 16, side // 16)).repeat(16, 0).repeat(16, 1)).astype(np.uint8), 1)
    write = rate(lambda: write_cog(src, Path(tmp) / "cog.tif"), side * side)
name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU)"
for what, mpx in rates.items():
    print(f"{what}: {mpx:.2f} Mpx/s on {device}")
best = max(rates, key=rates.get)
print(f"gpu_check: {name}, {model_name} batch {batch}: fastest {best} {rates[best]:.2f} Mpx/s; "
      f"CPU decode {decode:.1f} Mpx/s per thread, COG write {write:.1f} Mpx/s; "
      f"CPU decode threads to keep it busy if decoding on the CPU: {rates[best] / decode:.1f}")
PY
