"""Every script in ``benchmarks/`` still runs: each one as a user starts it, on its smallest inputs, for seconds.

Each script runs in a fresh interpreter (``python benchmarks/NAME.py ...``) from a scratch folder, with
every output under ``tmp_path``; the repository's files (bytecode aside) are the same afterwards.
A tiny world is built once: a mit_tiny trained for one step on a small synthetic dataset (calibrated,
with an area of applicability: 64 bands, 10 classes, as the scripts expect), a 128 px synthetic scene
with its truth, and that scene mapped with the model.

Two scripts have no tiny setting and are left out (what each would need is in BENCHMARKS.md):
``bench_scene_probe.py`` (a 100-tree forest on 24,000 pixels whatever the size: ~1 min) and
``bench_label_reach.py`` (it regenerates the four held-out scenes of ``bench_heldout.py`` at their full
1024/768 px to compare with the maps). Three run at sizes they fix themselves (a few seconds more):
``bench_ground_sand.py`` (the demo's 1024 px held-out scene), ``bench_identifiability.py`` (512/384 px
layouts, a 256 px scene) and, through the held-out cache, ``bench_heldout.py`` and ``bench_window_context.py``
(stand-ins of 128 px put where the scripts keep their held-out scenes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from recompute import hashes

from dunemap.runtime.device import cpu_info, describe_cpu

REPO = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO / "benchmarks"
NOT_SOURCE = {".git", ".venv", ".pytest_cache", ".ruff_cache", "__pycache__"}
HELD_OUT_STANDIN = 128  # px of the stand-ins for bench_heldout.py's held-out scenes


def run_script(script: Path, *args, cwd: Path, timeout: float = 300, cache: Path | None = None
               ) -> subprocess.CompletedProcess:
    """``python SCRIPT ARGS`` from ``cwd`` (this checkout's dunemap first on the path, no bytecode written, one
    thread); it must exit 0. Its dunemap cache (encoded class texts, model exports) is ``cache``, by default a
    fresh folder in ``cwd``: never the user's ~/.cache."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1",
           "DUNEMAP_CACHE": str(cache or cwd / "dunemap_cache")}
    proc = subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script.name} {args}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def repository_files() -> dict[Path, str]:
    """sha256 of the repository's files, bytecode and tool folders aside: any file a script adds or changes shows."""
    tops = [p for p in REPO.iterdir() if p.name not in NOT_SOURCE]
    return {p: h for p, h in hashes(*tops).items() if not NOT_SOURCE & set(p.relative_to(REPO).parts)}


@pytest.fixture(autouse=True)
def _repository_untouched():
    before = repository_files()
    yield
    after = repository_files()
    assert after == before, f"written into the repository: {sorted(set(after.items()) ^ set(before.items()))[:5]}"


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dunemap cache for the scripts that train with the catalog's class texts: the first of them encodes the
    texts (loading the bundled sentence encoder, seconds), the others read the result (dunemap.knowledge.text)."""
    return tmp_path_factory.mktemp("text_cache")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from dunemap.mapping.config import MapConfig
    from dunemap.mapping.engine import map_raster
    from dunemap.runtime import load_predictor
    from dunemap.synth.dataset import write_dataset
    from dunemap.synth.scene import SceneConfig
    from dunemap.synth.writers import write_scene_files
    from dunemap.training import TrainConfig, train

    root = tmp_path_factory.mktemp("bench_world")
    data = write_dataset(root / "data", regions=["namib"], scenes_per_region=3, scene_size=64, tile=32,
                         block_tiles=1, seed=2)
    run = root / "run"
    train(TrainConfig(data_root=data, save_dir=run, model="mit_tiny", epochs=1, max_steps_per_epoch=1, batch_size=2,
                      text="random", device="cpu", precision="fp32", progress=False, check_data=False))
    scene = write_scene_files(SceneConfig(size=(128, 128), region="namib", seed=1), root / "scene", dtype="int8")
    classes = root / "map.tif"
    map_raster(scene.embedding, load_predictor(run / "best_model.pth", device="cpu", precision="fp32"), classes,
               MapConfig(window=64, stride=32, progress=False))
    return {"weights": run / "best_model.pth", "emb": scene.embedding, "labels": scene.labels, "map": classes}


@pytest.fixture
def held_out_work(tmp_path: Path) -> Path:
    """A bench_heldout.py work folder whose held-out scene cache holds 128 px stand-ins of its four scenes."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from bench_heldout import HELD_OUT
    finally:
        sys.path.remove(str(BENCHMARKS))
    from dunemap.synth.scene import SceneConfig, generate_scene
    from dunemap.synth.writers import write_scene_geotiff

    work = tmp_path / "work"
    for region, size, seed in HELD_OUT:
        d = work / "held" / f"{region}_{size}_{seed}"
        d.mkdir(parents=True)
        scene = generate_scene(SceneConfig(size=(HELD_OUT_STANDIN,) * 2, region=region, seed=seed))
        write_scene_geotiff(scene, d / "emb.tif", d / "lab.tif", dtype="int8")
    return work


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_bench_aoa_search(world, tmp_path: Path) -> None:
    proc = run_script(BENCHMARKS / "bench_aoa_search.py", "--weights", world["weights"], "--raster", world["emb"],
                      "--windows", "1", "--repeats", "1", cwd=tmp_path)
    rows = {k: v for line in _json_lines(proc.stdout) for k, v in line.items()}
    assert set(rows) == {"features", "input"}  # both spaces the area of applicability searches
    for row in rows.values():
        assert row["cells"] > 0 and row["kdtree_max_difference"] < 1e-4 and row["balltree_max_difference"] < 1e-4


def test_bench_area(world, tmp_path: Path) -> None:
    run_script(BENCHMARKS / "bench_area.py", "--map", world["map"], "--truth", world["labels"], "--n", "60",
               "--min-per-class", "3", "--repeats", "2", "--out", tmp_path / "area.json", cwd=tmp_path)
    report = json.loads((tmp_path / "area.json").read_text())
    assert 0.0 <= report["coverage_all"] <= 1.0 and report["first_sample"]


def test_bench_archive(tmp_path: Path) -> None:
    report = tmp_path / "archive.json"
    proc = run_script(BENCHMARKS / "bench_archive.py", "--work", tmp_path / "work", "--tile", "256", "--rows", "1",
                      "--model", "mit_tiny", "--threads", "1", "--window", "128", "--stride", "64", "--precision",
                      "fp32", "--json", report, cwd=tmp_path)
    assert "| Namib Sand Sea | 34,000 |" in proc.stdout and "| 2 tiles | disk: " in proc.stdout
    runs = {r["route"]: r for r in json.loads(report.read_text())["runs"]}
    assert set(runs) == {"disk", "http", "geotiff"}
    assert runs["disk"]["mapped_px"] == runs["http"]["mapped_px"] > 0  # the same ground from disk and over HTTP
    assert runs["disk"]["extent_px"] == runs["http"]["extent_px"] > runs["disk"]["mapped_px"]  # plus context
    assert abs(runs["geotiff"]["extent_px"] - runs["disk"]["extent_px"]) < 256  # one file of as many pixels
    assert runs["http"]["served_bytes"] > 0 and runs["http"]["blocks_bytes"] > 0
    assert all(r["tmp_left"] == [] and r["peak_rss_mib"] > 0 and r["cpu_s"] > 0 for r in runs.values())
    assert {"utm33S.tif", "utm34S.tif", "catalog.json"} <= set(runs["http"]["outputs"])


def test_bench_dask(tmp_path: Path) -> None:
    # 256 px: one block task and one window, as at 512 px, for a quarter of the raster to synthesise and map
    proc = run_script(BENCHMARKS / "bench_dask.py", "--size", "256", "--model", "mit_tiny", "--block-size", "256",
                      "--workers", "1", "--precision", "fp32", "--estimate-workers", "1", "--work", tmp_path / "work",
                      cwd=tmp_path)
    assert "## Dask mapping benchmark: mit_tiny" in proc.stdout and "| Namib Sand Sea |" in proc.stdout
    with rasterio.open(tmp_path / "work" / "map_1w.tif") as src:
        assert (src.height, src.width) == (256, 256)


def test_bench_ground_sand(tmp_path: Path) -> None:
    proc = run_script(BENCHMARKS / "bench_ground_sand.py", "64", "1", cwd=tmp_path)
    assert proc.stdout.count("| demo held-out namib scene |") == 2  # without and with the cap


def test_bench_heldout_scores_an_ensemble(world, held_out_work: Path, tmp_path: Path) -> None:
    weights = tmp_path / "a" / "best_model.pth"
    other = tmp_path / "b" / "best_model.pth"
    for path in (weights, other):
        path.parent.mkdir()
        shutil.copyfile(world["weights"], path)
    proc = run_script(BENCHMARKS / "bench_heldout.py", held_out_work, "smoke", "--score-only", weights, other,
                      "--stride", "64", cwd=tmp_path)
    (line,) = _json_lines(proc.stdout)
    assert len(line["held"]) == 4 and 0.0 <= line["mean_held"] <= 1.0
    assert line["members_mean_held"] == [line["mean_held"]] * 2  # two copies of one model: their ensemble is it
    assert line["shared_errors"] == 1.0
    assert json.loads((held_out_work / "results.jsonl").read_text().splitlines()[-1]) == line


def test_bench_identifiability_run_from_a_copy(tmp_path: Path) -> None:
    """It writes its figure into ``docs/figures`` beside its own folder: run from a copy, it lands in tmp_path."""
    copy = tmp_path / "benchmarks" / "bench_identifiability.py"
    copy.parent.mkdir()
    shutil.copyfile(BENCHMARKS / "bench_identifiability.py", copy)
    proc = run_script(copy, "64", "1", cwd=tmp_path)
    assert (tmp_path / "docs" / "figures" / "identifiability.png").read_bytes()[:4] == b"\x89PNG"
    assert "AEF int8 round trip" in proc.stdout


def test_bench_model(tmp_path: Path) -> None:
    out = tmp_path / "model.json"
    run_script(BENCHMARKS / "bench_model.py", "--model", "mit_tiny", "--tile", "64", "--bands", "8", "--classes", "3",
               "--text-dim", "8", "--threads", "1", "--warmup", "0", "--repeats", "1", "--train-repeats", "1",
               "--train-batches", "1", "--precisions", "fp32", "--channels-last", "off", "--out", out, cwd=tmp_path)
    results = json.loads(out.read_text())["results"]
    assert [(r["kind"], r["batch"]) for r in results] == [("forward", 1), ("train", 1)]
    assert all(r["median_s"] > 0 for r in results)


def test_bench_synth(tmp_path: Path) -> None:
    out = tmp_path / "synth.json"
    run_script(BENCHMARKS / "bench_synth.py", "--size", "64", "--repeats", "1", "--out", out, cwd=tmp_path)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["region"] == "namib" and row["size"] == 64 and row["median_s"] > 0


def test_bench_trust(world, tmp_path: Path) -> None:
    """A demo folder holding only what the script reads with --skip-loro: the held-out scene and its truth."""
    demo = tmp_path / "demo"
    (demo / "scene").mkdir(parents=True)
    shutil.copyfile(world["emb"], demo / "scene" / "heldout_emb.tif")
    shutil.copyfile(world["labels"], demo / "scene" / "heldout_labels.tif")
    run_script(BENCHMARKS / "bench_trust.py", "--demo", demo, "--weights", world["weights"], "--work",
               tmp_path / "work", "--skip-loro", "--pairs", "1", cwd=tmp_path)
    report = json.loads((tmp_path / "work" / "trust.json").read_text())
    assert 0.0 <= report["heldout_scene"]["ece_calibrated"] <= 1.0
    assert report["heldout_scene"]["temperature"] != 1.0  # the model is calibrated
    assert 0.0 <= report["foreign_half"]["familiar_west_inside"] <= 1.0


def test_bench_window_context(world, held_out_work: Path, tmp_path: Path) -> None:
    proc = run_script(BENCHMARKS / "bench_window_context.py", held_out_work, world["weights"], "--window", "64",
                      cwd=tmp_path)
    (line,) = _json_lines(proc.stdout)
    rows = line["by_edge_distance"]
    assert [r["distance_px"] for r in rows] == [f"{8 * b}-{8 * b + 7}" for b in range(4)]
    # every pixel of the four stand-ins is predicted once per grid offset that covers it with a whole window
    assert sum(r["pixels"] for r in rows) == 4 * (2 * 2 + 3 * 1 * 1) * 64 * 64


def test_bench_mapping_compares_designs_on_a_scene(world, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_script(BENCHMARKS / "bench_mapping.py", "--size", "96", "--scene", "namib", "--weights",
                      world["weights"], "--threads", "1", "--work", tmp_path / "work", "--project", "1024",
                      "--no-defaults", "--variant", "64:32:2:fp32:uniform", "--variant", "96:96:1:fp32:gaussian:1",
                      "--remeasure", "--json", out, cwd=tmp_path)
    assert "| (a) seed: 512/256" in proc.stdout and "| variant 64:32:2:fp32:uniform |" in proc.stdout
    report = json.loads(out.read_text())
    assert report["cpu"] == cpu_info() and describe_cpu(report["cpu"]) in proc.stdout  # the library's one record
    for run in report["runs"][1:]:  # the stage table's last column: read + decode as a share of the wall time
        row = [ln for ln in proc.stdout.splitlines() if ln.startswith(f"| {run['label']} |")][-1]
        share = (run["stages"]["read"] + run["stages"]["decode"]) / run["seconds"] * 100
        assert row.split("|")[-2].strip() == f"{share:.1f} %"
    seed, small, whole = report["runs"]
    assert report["trained_weights"] and report["threads"] == 1
    assert (seed["windows"], small["windows"], whole["windows"]) == (1, 4, 1)
    assert (seed["project_windows"], small["project_windows"]) == (9, 31 ** 2)
    # the seed's single (whole-raster) window is what a whole-raster window predicts: same model, same input
    assert whole["agreement"] > 0.99
    for run in report["runs"]:
        assert 0.0 <= run["miou"] <= 1.0 and 0.0 <= run["agreement"] <= 1.0
        assert 0 < run["peak_rss_mib"] < 4096 and run["cpu_seconds"] > 0  # the mapping's memory ceiling


def test_bench_decode_times_the_paths_and_checks_them_equal(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    proc = run_script(BENCHMARKS / "bench_decode.py", "--windows", "64", "32", "--block", "96", "--repeats", "1",
                      "--rows", "1", "3", "--read-size", "128", "--json", out, cwd=tmp_path)
    report = json.loads(out.read_text())
    variants = [(r["window"], r["variant"].split(":")[0]) for r in report["windows"]]
    assert variants == [(w, v) for w in (64, 32) for v in ("baseline", "old", "old", "new", "new", "new", "new",
                                                           "GPU path, its CPU part")]
    assert all(r["ms_per_window"] > 0 for r in report["windows"])
    assert [(b["window"], b["stride"], b["windows"]) for b in report["blocks"]] == [(64, 32, 4), (32, 16, 25)]
    assert [r["GDAL_NUM_THREADS"] for r in report["reads"]] == ["1", "ALL_CPUS"]
    assert report["cpu"]["model"] in proc.stdout and "| 64 | baseline: one np.take" in proc.stdout


def test_bench_read_reads_every_block_of_both_codecs_alike(tmp_path: Path) -> None:
    out = tmp_path / "read.json"
    proc = run_script(BENCHMARKS / "bench_read.py", "--size", "300", "--window", "64", "--repeats", "1", "--json", out,
                      cwd=tmp_path)
    report = json.loads(out.read_text())
    assert [(r["codec"], r["direct"]) for r in report["reads"]] == [(c, d) for c in ("deflate", "zstd")
                                                                    for d in (False, True)]
    assert len({r["codes"] for r in report["reads"]}) == 1 and report["reads"][0]["codes"] >= 300 * 300 * 64
    assert all(r["cpu_seconds"] > 0 and r["bytes"] > 0 for r in report["reads"])
    assert "Every read gave the same codes" in proc.stdout and report["cpu"]["model"] in proc.stdout


def test_gpu_check_measures_every_installed_backend_on_the_cpu(tmp_path: Path) -> None:
    """DEVICE=cpu runs the GPU check's measurements on the CPU: torch, the ONNX Runtime and OpenVINO exports
    (installed with the test extras), CPU decode and COG write, and a summary line naming the fastest."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1",
           "DEVICE": "cpu", "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), "mit_tiny", "0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    measured = [line.split(":")[0] for line in lines if " Mpx/s on cpu" in line]
    assert measured[0].startswith("torch ") and {"onnxruntime fp32 (CPUExecutionProvider)", "openvino fp32 (CPU)"} <= \
        set(measured)
    assert lines[-1].startswith("gpu_check: CPU (no GPU), mit_tiny batch 1: fastest ") and "CPU decode" in lines[-1]
    assert not proc.stderr.strip(), proc.stderr  # no warnings


def test_train_bench_model_writes_a_loadable_checkpoint(text_cache: Path, tmp_path: Path) -> None:
    from dunemap.runtime import load_predictor

    run_script(BENCHMARKS / "train_bench_model.py", "--out", tmp_path / "out", "--model", "mit_tiny", "--scene-size",
               "64", "--tile", "32", "--scenes-per-region", "1", "--epochs", "1", "--max-steps-per-epoch", "1",
               "--batch-size", "2", "--threads", "1", cwd=tmp_path, cache=text_cache)
    record = json.loads((tmp_path / "out" / "train_bench_model.json").read_text())
    assert record["epochs_run"] == 1 and len(record["history"]) == 1
    predictor = load_predictor(tmp_path / "out" / "mit_tiny_synth.pth", precision="fp32")
    assert predictor.config.name == "mit_tiny" and predictor.num_classes == 10


def test_bench_adapt_runs_the_loop_and_bench_prior_rule_compares_the_corrections(held_out_work: Path, text_cache: Path,
                                                                                 tmp_path: Path) -> None:
    """The simulated labeller on 128 px stand-ins of the four held-out scenes: a tiny base model, rounds of 0
    and 2 patches of 16 px, the real fine-tune at k = 2 (and a decoder recipe) with forgetting; then the
    one-sided and two-sided corrections on two 128 px scenes of other regions with the same base model."""
    demo = json.dumps({"regions": ["namib", "mojave"], "scenes_per_region": 3, "scene_size": 64, "tile": 32,
                       "epochs": 1, "model": "mit_tiny", "batch_size": 2})
    proc = run_script(BENCHMARKS / "bench_adapt.py", held_out_work, "--name", "smoke", "--seeds", "0", "--k", "0",
                      "2", "--methods", "suggest", "random", "--finetune-k", "2", "--demo", demo, "--patch", "16",
                      "--recipe", 'decoder={"train_layers": "decoder", "max_steps_per_epoch": 1}', cwd=tmp_path,
                      timeout=600, cache=text_cache)
    rows = {(r["variant"], r["method"], r["k"]): r
            for r in json.loads((held_out_work / "adapt_smoke.json").read_text())["rows"]}
    assert set(rows) == {("base", "none", 0), ("prior", "suggest", 2), ("prior", "random", 2),
                         ("default", "suggest", 2), ("decoder", "suggest", 2)}
    default, prior = rows[("default", "suggest", 2)], rows[("prior", "suggest", 2)]
    assert default["rounds"] == 4 and "forgetting_worst" in default and default["wall_mean_s"] > 0
    assert default["per_scene"] == prior["per_scene"]  # the default fine-tune keeps the network: the same maps
    assert 0 < prior["labelled"] < 0.1 and "| default | suggest | 2 |" in proc.stdout
    proc = run_script(BENCHMARKS / "bench_prior_rule.py", held_out_work, "--seeds", "0", "--size", "128", "--patch",
                      "16", cwd=tmp_path, cache=text_cache)
    lines = _json_lines(proc.stdout)
    scenes = ("atacama128s10004", "yilgarn128s10005")
    assert {(line["rule"], line["scene"]) for line in lines} == {
        (rule, scene) for rule in ("none", "two-sided", "one-sided") for scene in scenes}
    assert all(0 <= line["miou"] <= 1 for line in lines)
