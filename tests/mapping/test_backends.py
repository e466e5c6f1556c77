"""Inference backends: cached ONNX exports, ONNX Runtime and OpenVINO against torch, int8 calibration, auto."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mapping_helpers import interrupted_run

from dunemap.errors import ConfigError, InputError
from dunemap.mapping.backend import sample_windows
from dunemap.mapping.config import BACKEND_NAMES, MapConfig
from dunemap.raster.reader import EmbeddingReader
from dunemap.runtime import load_predictor
from dunemap.runtime.backends import BACKENDS, BackendChoice, Samples, argmax_agreement, build_exported, window_tensor
from dunemap.runtime.device import bf16_supported
from dunemap.runtime.export import export_path
from dunemap.runtime.predictor import softmax
from dunemap.runtime.select import select_backend

pytest.importorskip("onnx")
WINDOW = 64


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty export cache of this test's own."""
    root = tmp_path / "cache"
    monkeypatch.setenv("DUNEMAP_CACHE", str(root))
    return root / "exports"


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    """One export cache for the tests that only use exports (the model is exported once for all of them)."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DUNEMAP_CACHE", str(root))
        yield root / "exports"


def _fp32(checkpoint: Path):
    return load_predictor(checkpoint, device="cpu", precision="fp32")


def _samples(raster: Path, window: int = WINDOW) -> Samples:
    with EmbeddingReader(raster, bands=64) as reader:
        return sample_windows(reader, MapConfig(backend="onnxruntime-int8").for_model(window))


def test_the_registry_is_the_options_choices() -> None:
    assert tuple(BACKENDS) == BACKEND_NAMES


def test_export_is_made_once_keyed_by_checkpoint_and_window_and_rebuilt_when_corrupt(
        cache: Path, tiny_checkpoint: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("onnxruntime")
    predictor = _fp32(tiny_checkpoint)
    with caplog.at_level(logging.INFO, logger="dunemap"):
        build_exported(predictor, "onnxruntime", WINDOW)
    path = export_path(predictor.checkpoint_sha256, WINDOW, "fp32")
    assert path.parent == cache and path.is_file() and predictor.checkpoint_sha256 in path.name
    assert not any(p.suffix == ".onnx" for p in tiny_checkpoint.parent.iterdir())  # never beside the weights
    assert sum("exporting the model" in r.message for r in caplog.records) == 1
    made = path.stat().st_mtime_ns

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dunemap"):
        build_exported(predictor, "onnxruntime", WINDOW)  # a cache hit: not exported again
        build_exported(predictor, "onnxruntime", 96)  # another window: another file
    assert path.stat().st_mtime_ns == made
    assert [r.message for r in caplog.records if "exporting" in r.message] == [
        f"exporting the model to ONNX for 96 px windows: {export_path(predictor.checkpoint_sha256, 96)}"]

    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a half-copied file
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="dunemap"):
        rebuilt = build_exported(predictor, "onnxruntime", WINDOW)
    corrupt = [r for r in caplog.records if "does not match its checksum" in r.message]
    assert len(corrupt) == 1 and str(path) in corrupt[0].getMessage()
    x = window_tensor(np.random.default_rng(0).standard_normal((64, WINDOW, WINDOW)).astype(np.float32))
    torch.testing.assert_close(rebuilt.predict(x), predictor.predict(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_fp32_backends_give_torch_calibrated_logits(name: str, shared: Path, tiny_checkpoint: Path,
                                                    aef_raster) -> None:
    pytest.importorskip(BACKENDS[name].package)
    predictor = _fp32(tiny_checkpoint)
    predictor.temperature = 1.7  # the calibration a Predictor applies is applied to the backend's logits too
    predictor.class_bias = torch.linspace(-0.5, 0.5, predictor.num_classes)
    samples = _samples(aef_raster(height=128, width=128))
    built = build_exported(predictor, name, WINDOW)
    x = torch.from_numpy(np.stack(samples.windows[:2]))  # a batch of two
    got, want = built.predict(x), predictor.predict(x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert argmax_agreement(got[:1], want[:1], samples.valid[0]) == 1.0
    assert built.choice.tags() == {"BACKEND": name, "BACKEND_PRECISION": "fp32"}
    # mapping's numpy path: the same calibrated logits, and the softmax torch takes
    torch.testing.assert_close(torch.from_numpy(built.numpy_logits(x)), got)
    torch.testing.assert_close(torch.from_numpy(softmax(built.numpy_logits(x))), torch.softmax(got, dim=1))
    # what a map blends: OpenVINO computes it in its graph, given the temperature and the class bias
    rows = x.numpy()
    assert hasattr(built.runner_for(rows), "probabilities") == (name == "openvino")
    torch.testing.assert_close(torch.from_numpy(built.numpy_probabilities(x)), torch.softmax(want, dim=1))
    odd = torch.from_numpy(samples.windows[0][:, :48, :40].copy())[None]  # another size runs through torch
    torch.testing.assert_close(built.predict(odd), predictor.predict(odd))


@pytest.mark.parametrize("name", ["torch", "onnxruntime", "openvino"])
def test_auto_batches_small_windows_on_a_cpu_into_the_one_at_a_time_map(
        name: str, shared: Path, tmp_path: Path, tiny_checkpoint: Path, aef_raster,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch 0 (auto) on a CPU runs 64 px windows 16 a forward pass, band-interleaved for an export;
    its map has the probabilities and classes of batch 1's, to float32 rounding."""
    import rasterio
    from dataclasses import replace

    from dunemap.mapping.engine import map_raster
    from dunemap.raster.tags import product_paths

    predictor = _fp32(tiny_checkpoint)
    if name != "torch":
        pytest.importorskip(BACKENDS[name].package)
        predictor = build_exported(predictor, name, WINDOW)
    calls: list[tuple[int, bool]] = []
    method = "predict" if name == "torch" else "numpy_probabilities"  # what mapping calls of an export: numpy
    predict = getattr(type(predictor), method)

    def counted(self, x):
        calls.append((x.shape[0], x.is_contiguous()))
        return predict(self, x)

    monkeypatch.setattr(type(predictor), method, counted)
    invalid = np.zeros((160, 192), dtype=bool)
    invalid[:40, :70] = True  # windows wholly nodata are left out of the batches
    path = aef_raster(height=160, width=192, seed=2, invalid=invalid)
    config = MapConfig(window=WINDOW, stride=32, probabilities="float32", block_size=0, progress=False)
    maps = {}
    for batch in (0, 1):
        calls.clear()
        out = tmp_path / f"batch{batch}.tif"
        map_raster(path, predictor, out, replace(config, batch_size=batch))
        with rasterio.open(product_paths(out)["probabilities"]) as src, rasterio.open(out) as classes:
            maps[batch] = src.read(), classes.read(1), list(calls)
    (auto, auto_classes, auto_calls), (one, one_classes, one_calls) = maps[0], maps[1]
    assert {b for b, _ in one_calls} == {1} and len(auto_calls) < len(one_calls)
    assert sum(b for b, _ in auto_calls) == len(one_calls) and max(b for b, _ in auto_calls) > 1
    assert all(contiguous == (name != "torch") for _, contiguous in auto_calls + one_calls)
    # float32's tolerances in torch.testing: oneDNN's convolutions round a batch a little differently
    torch.testing.assert_close(torch.from_numpy(auto), torch.from_numpy(one), equal_nan=True)
    top2 = np.sort(np.nan_to_num(one), axis=0)[-2:]
    clear = (top2[1] - top2[0]) > 2e-5  # pixels whose two likeliest classes differ by more than that tolerance
    assert np.array_equal(auto_classes[clear], one_classes[clear]) and clear.mean() > 0.5


@pytest.mark.parametrize("name", ["onnxruntime-int8", "openvino-int8"])
def test_int8_is_calibrated_statically_on_the_raster(name: str, shared: Path, tiny_checkpoint: Path,
                                                     aef_raster) -> None:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip(BACKENDS[name].package)
    predictor = _fp32(tiny_checkpoint)
    samples = _samples(aef_raster(height=160, width=160, seed=4))
    assert len(samples.windows) > 1
    built = build_exported(predictor, name, WINDOW, samples)
    stem = export_path(predictor.checkpoint_sha256, WINDOW, "int8").stem
    files = sorted(shared.glob(f"{stem}.{samples.digest()}.onnx"))
    assert len(files) == 1
    ops = {node.op_type for node in onnx.load(str(files[0])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    x = window_tensor(samples.windows[0])
    agreement = argmax_agreement(built.predict(x), predictor.predict(x), samples.valid[0])
    assert 0.5 < agreement <= 1.0
    assert built.choice.precision == "int8" and built.choice.calibration == samples.digest()


def test_int8_refuses_a_raster_without_valid_windows(cache: Path, tiny_checkpoint: Path, aef_raster) -> None:
    pytest.importorskip("onnxruntime")
    invalid = np.ones((96, 96), bool)
    invalid[:20, :20] = False  # a corner of data: no window is half valid
    raster = aef_raster(height=96, width=96, invalid=invalid)
    with pytest.raises(InputError, match=f"{raster}: too few valid pixels"):
        build_exported(_fp32(tiny_checkpoint), "onnxruntime-int8", WINDOW, _samples(raster))
    assert not cache.exists() or not list(cache.glob("*int8*"))


def test_auto_takes_the_fastest_backend_at_or_above_the_agreement(shared: Path, tiny_checkpoint: Path,
                                                                  aef_raster) -> None:
    pytest.importorskip("onnxruntime")
    predictor = load_predictor(tiny_checkpoint, device="cpu", precision="auto")
    samples = _samples(aef_raster(height=128, width=128, seed=5))

    def choose(threshold: float, codes: bool):
        return select_backend(predictor, "auto", WINDOW, lambda: samples,
                              lambda: _fp32(tiny_checkpoint), min_agreement=threshold, codes=codes)

    agreements = {}
    for threshold, codes in ((0.0, False), (1.0, True), (0.0, True)):
        runner, choice = choose(threshold, codes)
        names = {name for name, _, _ in choice.measured}
        assert {"torch", "onnxruntime", "openvino"} <= names and not any("int8" in n for n in names)  # by name only
        faithful = [(s, name) for name, agreement, s in choice.measured if agreement >= threshold]
        assert choice.agreement >= threshold and (choice.seconds, choice.name) == min(faithful)
        assert getattr(runner, "backend", "torch") == choice.name
        # an int8 raster's codes go in undecoded where the engine decodes them itself: OpenVINO in fp32; OpenVINO in
        # bf16 is fed windows decoded into bf16
        assert getattr(runner, "takes_codes", False) == (codes and choice.name == "openvino")
        if choice.name == "openvino-bf16":
            assert runner.input_dtype == torch.bfloat16
        agreements[threshold, codes] = {name: a for name, a, _ in choice.measured if name != "torch"}
    assert agreements[0.0, True] == agreements[0.0, False]  # timed on codes, OpenVINO classifies as on values


def test_auto_without_the_backend_packages_is_torch_in_one_line(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    for package in ("onnxruntime", "openvino"):
        monkeypatch.setitem(sys.modules, package, None)  # as if not installed: importing it fails
    predictor = _fp32(tiny_checkpoint)
    with caplog.at_level(logging.INFO, logger="dunemap"):
        runner, choice = select_backend(predictor, "auto", WINDOW, lambda: pytest.fail("the raster was read"),
                                        lambda: pytest.fail("a reference was loaded"), min_agreement=0.995)
    assert runner is predictor and (choice.engine, choice.precision) == ("torch", "fp32")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ['backend auto: onnxruntime, openvino not installed (pip install -e ".[fast]" adds them); '
                     'mapping with torch']


def test_auto_resumes_an_interrupted_run_with_its_backend(shared: Path, tmp_path: Path, tiny_checkpoint: Path,
                                                          aef_raster) -> None:
    """Measuring again could choose another backend and discard the finished blocks: auto takes the journal's, also
    where an earlier map of the run (a zone of a set) measured another one."""
    from dunemap.mapping.batch import executor_for, run_jobs
    from dunemap.mapping.jobs import MapJob

    pytest.importorskip("openvino")
    pytest.importorskip("onnxruntime")
    path, out = aef_raster(height=128, width=96), tmp_path / "map.tif"
    config = MapConfig(window=64, stride=32, block_size=48, progress=False)
    exported = build_exported(_fp32(tiny_checkpoint), "openvino", WINDOW)
    interrupted_run(path, out, exported, config)  # an openvino run that predicted two blocks, then died
    with executor_for(tiny_checkpoint, precision="fp32") as executor:  # backend auto
        onnx = build_exported(_fp32(tiny_checkpoint), "onnxruntime", WINDOW)
        earlier = BackendChoice("onnxruntime", "fp32", 1.0, 0.001, "measured", measured=(("onnxruntime", 1.0, 0.001),))
        executor.kept.keep(config, onnx, earlier)  # as if an earlier zone of this run had measured it
        assert executor.kept.reuse(config, MapJob((path,), tmp_path / "fresh.tif")) == (onnx, earlier)
        result = run_jobs([MapJob((path,), out)], executor, config).maps[0]
    assert result.blocks_resumed == 2 and result.backend["BACKEND"] == "openvino"


def test_an_export_that_fails_is_one_error_by_name_and_left_out_by_auto(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_checkpoint: Path, aef_raster,
        caplog: pytest.LogCaptureFixture) -> None:
    from dunemap.errors import DunemapError

    pytest.importorskip("onnxruntime")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would be made\n")  # every export fails to be written
    monkeypatch.setenv("DUNEMAP_CACHE", str(blocker))
    predictor = _fp32(tiny_checkpoint)
    samples = _samples(aef_raster(height=96, width=96))
    with pytest.raises(DunemapError, match="^--backend onnxruntime: the model could not be run by onnxruntime: "):
        select_backend(predictor, "onnxruntime", WINDOW, lambda: samples, lambda: predictor, min_agreement=0.995)
    with caplog.at_level(logging.INFO, logger="dunemap"):
        runner, choice = select_backend(predictor, "auto", WINDOW, lambda: samples, lambda: predictor,
                                        min_agreement=0.995)
    assert runner is predictor and choice.engine == "torch" and choice.agreement == 1.0
    left_out = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert left_out and all("failed on this model" in m and "left out" in m for m in left_out)
    assert blocker.read_text() == "a file where the cache folder would be made\n"


def test_sampling_stops_reading_once_the_kept_windows_are_entirely_valid() -> None:
    from dunemap.mapping.backend import SAMPLE_WINDOWS, _samples
    from dunemap.raster.reader import BlockData

    data = np.random.default_rng(0).standard_normal((4, 256, 256)).astype(np.float32)
    valid = np.ones((256, 256), bool)
    valid[:16, :] = False  # the first row of windows is 3/4 valid: read, kept until full ones come

    def sample(backend: str) -> tuple[Samples, list]:
        boxes = []

        def read(win):
            boxes.append(win)
            rows, cols = win.slices()
            return BlockData(win, data[:, rows, cols], valid[rows, cols])

        config = MapConfig(backend=backend, window=WINDOW, stride=WINDOW)  # 4 x 4 windows, all candidates
        return _samples(256, 256, config, read, "the array"), boxes

    one, read_one = sample("onnxruntime")  # the first entirely valid window is the 5th
    assert len(read_one) == 5 and [read_one[-1].row, read_one[-1].col] == [64, 0]
    assert one.valid[0].all() and np.array_equal(one.windows[0], data[:, 64:128, :64])
    eight, read_eight = sample("onnxruntime-int8")
    assert len(read_eight) == 4 + SAMPLE_WINDOWS and all(v.all() for v in eight.valid)
    assert np.array_equal(eight.windows[0], one.windows[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_memory_freed_after_measuring_goes_back_to_the_os() -> None:
    from dunemap.mapping.backend import release_freed_memory

    def resident_mib() -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 2**20

    held = [np.ones(16384, np.float32) for _ in range(2048)]  # 128 MiB in 64 KiB pieces: glibc's heap, not mmap
    del held[::2]  # 64 MiB freed in holes, which the heap's top cannot give back by itself
    before = resident_mib()
    if not release_freed_memory():
        pytest.skip("the C library has no malloc_trim")
    assert before - resident_mib() > 32


def test_openvino_bf16_is_offered_where_the_cpu_computes_bf16(shared: Path, tiny_checkpoint: Path,
                                                             aef_raster) -> None:
    """openvino-bf16 is an auto candidate (for precision auto and bf16, never fp32) exactly where OpenVINO reports
    native bf16; there it runs the fp32 export in bf16, close to fp32 torch; elsewhere asking for it is one error."""
    pytest.importorskip("openvino")
    import openvino as ov

    from dunemap.runtime.backends import candidates

    native = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert ("openvino-bf16" in candidates("auto")) == native == ("openvino-bf16" in candidates("bf16"))
    assert "openvino-bf16" not in candidates("fp32")
    predictor = _fp32(tiny_checkpoint)
    if not native:
        with pytest.raises(ConfigError, match="--backend openvino-bf16: this CPU does not compute bf16 natively"):
            build_exported(predictor, "openvino-bf16", WINDOW)
        return
    samples = _samples(aef_raster(height=128, width=128, seed=3))
    built = build_exported(predictor, "openvino-bf16", WINDOW)
    x = torch.from_numpy(np.stack(samples.windows[:2]))
    got, want = built.predict(x), predictor.predict(x)
    torch_bf16 = load_predictor(tiny_checkpoint, device="cpu", precision="bf16").predict(x)
    error, torch_error = (float((y - want).abs().mean()) for y in (got, torch_bf16))
    assert 0 < error <= 2 * torch_error  # bf16 arithmetic (not the fp32 graph), as faithful as torch's bf16
    # it is built for bf16 windows: fed the same values rounded to bf16 (as mapping decodes them), the same logits
    assert set(built.runners) == {"bf16", "values"} and built.input_dtype == torch.bfloat16
    torch.testing.assert_close(built.predict(x.to(torch.bfloat16)), got, atol=1e-5, rtol=1e-5)
    assert built.choice.tags() == {"BACKEND": "openvino", "BACKEND_PRECISION": "bf16"}
    assert built.choice.name == "openvino-bf16"


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_an_export_of_codes_gives_the_logits_of_the_export_of_their_values(name: str, cache: Path,
                                                                           tiny_checkpoint: Path, aef_raster) -> None:
    """The export that takes AEF codes decodes them by the codec's table first: on a real int8 raster its logits
    are those of the values export on the decoded windows. Only OpenVINO is built to take codes; a backend built
    for one input runs the other too (its runner made on first use)."""
    from dunemap.runtime.backends import takes_codes

    pytest.importorskip(BACKENDS[name].package)
    samples = _samples(aef_raster(height=128, width=128, seed=4))
    values = torch.from_numpy(np.stack(samples.windows[:3]))  # (3, C, h, w) float32, nodata 0
    codes = torch.from_numpy(np.stack(samples.codes[:3]))  # the same windows as uint8 code bits
    assert codes.dtype == torch.uint8 and codes.shape == values.shape
    built = build_exported(_fp32(tiny_checkpoint), name, WINDOW, codes=True)
    assert built.takes_codes == takes_codes(name, True) == (name == "openvino")
    assert set(built.runners) == {"codes" if name == "openvino" else "values"}
    from_codes, from_values = built.predict(codes), built.predict(values)
    assert set(built.runners) == {"codes", "values"}
    torch.testing.assert_close(from_codes, from_values, atol=1e-6, rtol=1e-6)
    sha = built.base.checkpoint_sha256
    assert export_path(sha, WINDOW, codes=True).is_file() == (name == "openvino")  # ONNX Runtime: decoded in numpy
    odd = codes[:1, :, :48, :40].contiguous()  # another size runs through the torch model, decoded by the table
    torch.testing.assert_close(built.predict(odd), built.predict(values[:1, :, :48, :40].contiguous()))


@pytest.mark.parametrize("backend, fed", [("openvino", (torch.uint8, torch.float32)),
                                          ("openvino-bf16", (torch.bfloat16, torch.bfloat16))])
def test_an_int8_raster_mapped_through_an_export_is_the_map_of_its_values(
        backend: str, fed: tuple[torch.dtype, torch.dtype], shared: Path, tmp_path: Path, tiny_checkpoint: Path,
        aef_raster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mapping an int8 GeoTIFF with OpenVINO in fp32 feeds the backend codes, never decoding a window; in bf16 the
    windows are decoded into bf16 (the export's decoding was dearer). Either way the probabilities are those of
    mapping the float32 GeoTIFF of the same values, whose windows go in as float32 (fp32) or bf16 values."""
    pytest.importorskip("openvino")
    if backend == "openvino-bf16" and not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU does not compute bf16 natively")
    import rasterio
    from mapping_helpers import write_raster

    from dunemap.cli import main
    from dunemap.io.aef import dequantize
    from dunemap.raster.tags import product_paths
    from dunemap.runtime.backends import ExportedPredictor

    invalid = np.zeros((160, 144), dtype=bool)
    invalid[100:, :50] = True
    int8 = aef_raster(height=160, width=144, seed=5, invalid=invalid)
    with rasterio.open(int8) as src:
        values, valid = dequantize(src.read())
    values[:, ~valid] = np.nan
    floats = write_raster(tmp_path / "values.tif", values, nodata=float("nan"))
    seen: list[torch.dtype] = []
    probabilities = ExportedPredictor.numpy_probabilities

    def recorded(self, x):
        seen.append(x.dtype)
        return probabilities(self, x)

    monkeypatch.setattr(ExportedPredictor, "numpy_probabilities", recorded)
    maps = {}
    for name, raster in (("codes", int8), ("values", floats)):
        seen.clear()
        out = tmp_path / f"map_{name}.tif"
        assert main(["map", str(raster), "--weights", str(tiny_checkpoint), "--out", str(out), "--window", "64",
                     "--stride", "32", "--probabilities", "float32", "--backend", backend, "--no-progress"]) == 0
        with rasterio.open(product_paths(out)["probabilities"]) as src:
            maps[name] = src.read(), set(seen)
    assert (maps["codes"][1], maps["values"][1]) == ({fed[0]}, {fed[1]})
    torch.testing.assert_close(torch.from_numpy(maps["codes"][0]), torch.from_numpy(maps["values"][0]),
                               atol=1e-6, rtol=1e-6, equal_nan=True)


def test_auto_counts_the_time_preparing_each_candidates_input(shared: Path, tiny_checkpoint: Path,
                                                              aef_raster) -> None:
    """A candidate's seconds are its input's preparation plus its model's: values (decoded windows) for ONNX
    Runtime, codes for OpenVINO on an int8 raster, channels-last windows for torch."""
    from dataclasses import replace

    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    predictor = load_predictor(tiny_checkpoint, device="cpu", precision="fp32")
    samples = _samples(aef_raster(height=128, width=128, seed=6))
    assert set(samples.preparation()) == {"channels_last", "values", "bf16", "codes"}  # on the int8 raster
    slow = replace(samples, prepare_seconds={"channels_last": 50.0, "values": 100.0, "bf16": 100.0, "codes": 0.0})
    _, choice = select_backend(predictor, "auto", WINDOW, lambda: slow, lambda: _fp32(tiny_checkpoint),
                               min_agreement=0.0, codes=True)
    seconds = {name: s for name, _, s in choice.measured}
    assert 50 <= seconds["torch"] < 100 <= seconds["onnxruntime"] and seconds["openvino"] < 50
    assert choice.engine == "openvino"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_openvino_streams_split_a_batch_without_changing_its_logits(precision: str, shared: Path,
                                                                    tiny_checkpoint: Path, aef_raster) -> None:
    """Windows run in 2 streams, compiled for a static batch of 16 windows of 64 px: a batch of 3 runs as one chunk
    padded with zeros, a batch of 35 as chunks of 16, 16 and 3, two at a time; each window gets the logits it gets
    alone and in one unsplit request (fp32: to fp32 rounding; bf16: the class of nearly every pixel)."""
    pytest.importorskip("openvino")
    from dunemap.runtime.device import bf16_supported
    from dunemap.runtime.engines import OpenVinoRunner, request_batch, stream_count
    from dunemap.runtime.export import export_onnx

    if precision == "bf16" and not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU does not compute bf16 natively")
    predictor = _fp32(tiny_checkpoint)
    path = export_onnx(predictor.model, WINDOW, export_path(predictor.checkpoint_sha256, WINDOW, "fp32"))
    x = np.stack(_samples(aef_raster(height=128, width=128, seed=5)).windows[:3])
    streamed, single = OpenVinoRunner(path, 2, precision), OpenVinoRunner(path, 1, precision)
    assert len(streamed.requests) == stream_count(2) == 2 and len(single.requests) == 1
    assert streamed.batch == single.batch == request_batch(WINDOW * WINDOW) == 16
    many = np.concatenate([x * (1 + 0.01 * i) for i in range(12)])[:35]  # 35 windows, each its own
    for batch in (x, many):
        got = streamed(batch)
        alone = np.concatenate([streamed(batch[i : i + 1]) for i in range(len(batch))])
        unsplit = single(batch)
        assert got.shape == (len(batch), predictor.num_classes, WINDOW, WINDOW)
        for want in (alone, unsplit):
            if precision == "fp32":
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            else:
                assert (got.argmax(1) == want.argmax(1)).mean() >= 0.999
        assert not np.allclose(got[0], got[1]) and not np.allclose(got[-1], got[-2])  # a mix-up of chunks shows


def test_a_cpu_maps_automatic_batch_gives_every_openvino_stream_a_window() -> None:
    """OpenVINO runs every window size in min(threads, 2) streams, and a CPU map's automatic batch for its runner holds
    at least a window a stream, so no stream idles while another works (only torch and ONNX Runtime run one)."""
    from types import SimpleNamespace

    from dunemap.mapping.predict import batch_size_for
    from dunemap.runtime.engines import stream_count

    for side in (64, 128, 160, 181, 182, 256, 512):
        for threads in (1, 2, 8):
            streams = stream_count(threads)
            runner = SimpleNamespace(device=torch.device("cpu"), streams=streams)
            assert streams == min(threads, 2) and stream_count(threads, "onnxruntime") == 1
            assert batch_size_for(runner, MapConfig(window=side)) % streams == 0, (side, threads)


def test_openvino_streams_each_get_the_batch_one_call_gets_and_auto_times_them_so(
        shared: Path, tiny_checkpoint: Path, aef_raster, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU map gives each OpenVINO stream the automatic batch one call gets (2 streams of 4 windows of 128 px were
    faster a window than 2 of 2), and ``auto`` times every candidate on the batch its map would run; a batch asked
    for by size is the batch of every backend."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    import dunemap.runtime.select as select
    from dunemap.mapping.predict import batch_size_for
    from dunemap.runtime.engines import request_batch, stream_count

    reference = _fp32(tiny_checkpoint)
    runner = build_exported(reference, "openvino", WINDOW)
    config = MapConfig().for_model(WINDOW)
    streams = stream_count(torch.get_num_threads())
    assert runner.streams == streams == len(runner.runners["values"].requests)
    assert streams == min(2, torch.get_num_threads())  # 64-px windows run in streams wherever there are 2 threads
    assert batch_size_for(runner, config) == batch_size_for(reference, config) * streams
    assert build_exported(reference, "onnxruntime", WINDOW).streams == 1
    assert batch_size_for(runner, MapConfig(batch_size=3).for_model(WINDOW)) == 3

    timed: dict[str, int] = {}
    measure_apart, measure = select.measure_apart, select.measure

    def apart(engine, path, x, **kw):
        for precision in kw["precisions"]:
            timed[f"{engine}-{precision}"] = len(x)
        return measure_apart(engine, path, x, **kw)

    def in_process(predictor, x):
        timed["torch"] = len(x)
        return measure(predictor, x)

    monkeypatch.setattr(select, "measure_apart", apart)
    monkeypatch.setattr(select, "measure", in_process)
    samples = _samples(aef_raster(height=128, width=128, seed=6))
    for per_stream in (True, False):
        timed.clear()
        select_backend(reference, "auto", WINDOW, lambda: samples, lambda: reference, min_agreement=0.0, batch=2,
                       batch_per_stream=per_stream, codes=True)
        ov = 2 * streams if per_stream else 2
        assert timed["torch"] == timed["onnxruntime-fp32"] == 2 and timed["openvino-fp32"] == ov, timed
    # OpenVINO compiles the windows a stream gets a call: the automatic batch's, or its share of a batch asked for
    for per_stream, want in ((True, request_batch(WINDOW * WINDOW)), (False, -(-3 // streams))):
        built, _ = select_backend(reference, "openvino", WINDOW, lambda: samples, lambda: reference,
                                  min_agreement=0.0, batch=3, batch_per_stream=per_stream, codes=True)
        assert [r.batch for r in built.runners.values()] == [want], per_stream


def test_one_child_times_each_precision_of_an_export_and_reports_each_failure_apart(
        shared: Path, tiny_checkpoint: Path, tmp_path: Path) -> None:
    """OpenVINO's fp32 and bf16 are timed in turn by one child process, each with the logits of its own run; an export
    that cannot be run is a RuntimeError for each precision asked for, not an error of the whole measurement."""
    pytest.importorskip("openvino")
    from dunemap.runtime.backends import measure_apart
    from dunemap.runtime.device import bf16_supported
    from dunemap.runtime.engines import OpenVinoRunner
    from dunemap.runtime.export import export_onnx

    predictor = _fp32(tiny_checkpoint)
    path = export_onnx(predictor.model, WINDOW, export_path(predictor.checkpoint_sha256, WINDOW))
    x = torch.from_numpy(np.random.default_rng(3).normal(0, 0.1, (2, 64, WINDOW, WINDOW)).astype(np.float32))
    precisions = ("fp32", "bf16") if bf16_supported(torch.device("cpu")) else ("fp32",)
    results = measure_apart("openvino", path, x, precisions=precisions)
    assert set(results) == set(precisions)
    for precision in precisions:
        logits, seconds = results[precision]
        want = OpenVinoRunner(path, torch.get_num_threads(), precision)(x.numpy())
        assert logits.shape == (2, predictor.num_classes, WINDOW, WINDOW) and seconds > 0
        if precision == "fp32":
            np.testing.assert_allclose(logits.numpy(), want, rtol=1e-5, atol=1e-5)
        else:
            assert (logits.numpy().argmax(1) == want.argmax(1)).mean() >= 0.999
    if "bf16" in precisions:  # bf16 values go to the child as their bits, and it feeds them to OpenVINO as bf16
        logits, seconds = measure_apart("openvino", path, x.to(torch.bfloat16), precisions=("bf16",))["bf16"]
        bits = x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        want = OpenVinoRunner(path, torch.get_num_threads(), "bf16", bf16_input=True)(bits)
        np.testing.assert_allclose(logits.numpy(), want, rtol=1e-5, atol=1e-5)
        assert (want.argmax(1) == results["bf16"][0].numpy().argmax(1)).mean() >= 0.999 and seconds > 0
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an ONNX model")
    failed = measure_apart("openvino", broken, x, precisions=precisions)
    assert set(failed) == set(precisions) and all(isinstance(e, RuntimeError) and str(e) for e in failed.values())
