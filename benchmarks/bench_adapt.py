"""A few labels on new ground, measured without a person (issue 26): suggest, label, fine-tune, map again.

A **simulated labeller** closes the loop: it labels the patches ``dunemap suggest`` proposes from the
scene's synthetic truth, as a user would draw polygons in QGIS, by handing the truth raster to
``prepare --patches`` as the labels. For each training seed (a base model trained with the demo's
recipe on the demo's data), each of the four held-out scenes of ``bench_heldout.py`` and each round of
``k`` patches of 64 px chosen three ways (``suggest``, ``uncertainty``, ``random``) from the base model's
map of the scene (its probabilities and applicability companions, mapped once per scene), it

1. makes the patch tiles (``prepare_dataset`` with ``patches``), the truth as labels;
2. maps the scene with the base network and the class shares of the patches' ground
   (``fit_scene_prior``: what the default fine-tune stores) -- the "prior" rows;
3. in the rounds of ``--finetune-k`` and ``--recipe-methods`` (k = 10, ``suggest``), runs the real
   fine-tune (``finetune_config`` + ``train``: the library's recipe, "default") and any ``--recipe
   NAME=JSON`` (for ``--recipe-seeds``), maps the scene with each (``same_map_as_prior`` records whether
   its class pixels equal the "prior" map's) and maps the three other held-out scenes with
   each (forgetting);

and scores every map of the scene on the pixels **outside** the labelled patches (k = 0: the base map,
whole scene). Every round is kept in ``WORK/rounds/NAME/...`` with its ``result.json``, so a rerun resumes.
The summary (per-scene mean, pooled mIoU, gain over the base map on the same pixels and the scenes made
worse, share labelled, forgetting, wall time of fine-tune + map) is printed as a Markdown table and
written to ``WORK/adapt_NAME.json``.

Usage: ``python benchmarks/bench_adapt.py WORK [--name NAME] [--seeds 0 1] [--k 0 5 10 20]
[--methods suggest uncertainty random] [--finetune-k 10] [--recipe decoder='{"train_layers": "decoder"}']``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_heldout import held_out_scenes  # noqa: E402  (the four held-out scenes, generated once)

from dunemap.adapt.suggest import SuggestConfig, suggest_patches  # noqa: E402
from dunemap.data.dataset import SeedLayoutDataset  # noqa: E402
from dunemap.data.patches import read_patches  # noqa: E402
from dunemap.data.prepare import PrepareConfig, prepare_dataset  # noqa: E402
from dunemap.demo import DemoConfig  # noqa: E402
from dunemap.mapping.config import MapConfig  # noqa: E402
from dunemap.mapping.engine import map_raster  # noqa: E402
from dunemap.metrics import ConfusionMatrix, metrics_from_matrix  # noqa: E402
from dunemap.raster.reader import EmbeddingReader  # noqa: E402
from dunemap.raster.tags import product_paths  # noqa: E402
from dunemap.runtime import Predictor, load_predictor  # noqa: E402
from dunemap.synth.dataset import write_dataset  # noqa: E402
from dunemap.training import TrainConfig, train  # noqa: E402
from dunemap.training.finetune import finetune_config  # noqa: E402
from dunemap.trust.fit import fit_scene_prior  # noqa: E402

DEMO = DemoConfig()  # the base models' data and recipe (--demo replaces fields: the smoke test's tiny world)
PATCH = 64  # patch side, pixels (the figure: 10 patches are under 4 % of a 1024 px scene); --patch
TILE = DEMO.tile  # training tile and mapping window of the demo's model (128)
STRIDE = TILE // 2


def base_model(work: Path, seed: int) -> Path:
    """The demo's recipe trained on the demo's data (scenes_per_region 6 x 384 px), seed ``seed``; cached."""
    c = DEMO
    data = work / "data"
    if not (data / "manifest.csv").exists():
        write_dataset(data, regions=c.regions, scenes_per_region=c.scenes_per_region, scene_size=c.scene_size,
                      tile=c.tile, seed=0, region_px=c.region_px, split_by=c.split_by, overwrite=True)
    run = work / f"base_s{seed}"
    if not (run / "trained").exists():  # written once train() returned: calibrated and complete
        train(TrainConfig(data_root=data, save_dir=run, model=c.model, epochs=c.epochs, batch_size=c.batch_size,
                          lr=c.lr, augment=c.augment, class_weights=c.class_weights, seed=seed, precision="auto",
                          device="cpu", progress=False, overwrite=True))
        (run / "trained").touch()
    return run / "best_model.pth"


def map_scene(weights: Path | Predictor, emb: Path, out: Path, companions: bool = False) -> Path:
    """Map ``emb`` at the demo's 128/64 (with probabilities and applicability when ``companions``); cached."""
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        predictor = weights if isinstance(weights, Predictor) else load_predictor(weights, device="cpu",
                                                                                    precision="auto")
        map_raster(emb, predictor, out, MapConfig(window=TILE, stride=STRIDE, progress=False,
                                                  probabilities="float32" if companions else "none",
                                                  applicability=companions))
    return out


def confusion(class_map: Path, truth: Path, patches: Path | None = None, emb: Path | None = None) -> ConfusionMatrix:
    """The map against the truth, the pixels inside ``patches`` (the labelled ones, boxes on ``emb``) left out."""
    with rasterio.open(class_map) as m, rasterio.open(truth) as t:
        pred, lab = m.read(1), t.read(1).copy()
    if patches is not None:
        with EmbeddingReader(emb) as image:
            for p in read_patches(patches, image):
                lab[p.box.row:p.box.row_stop, p.box.col:p.box.col_stop] = 255
    cm = ConfusionMatrix(10)
    cm.update(pred, lab)
    return cm


def _score(cm: ConfusionMatrix) -> dict:
    return {"matrix": cm.matrix.tolist(), "miou": float(cm.compute().miou)}


def _prior_predictor(work: Path, base: Path, new_data: Path) -> Predictor:
    """The base network with the class shares of the patches' ground: what the default fine-tune
    (``--train-layers none``) gives, computed without its run folder."""
    fitter = load_predictor(base, device="cpu", precision="fp32", prepare=False)
    counts = SeedLayoutDataset(work / "data", "train", 10, 64).class_counts()
    predictor = load_predictor(base, device="cpu", precision="auto")
    predictor.scene_prior = fit_scene_prior(fitter, [new_data], counts)
    return predictor


def _finetune(work: Path, base: Path, folder: Path, seed: int, recipe: dict) -> tuple[Path, float]:
    """``train --init-from`` with ``recipe`` over the library's fine-tune recipe; its best checkpoint and seconds."""
    t0 = time.time()
    if not (folder / "trained").exists():
        train(finetune_config(base, folder.parent / "data", folder, replay=work / "data", seed=seed, device="cpu",
                              precision="auto", progress=False, overwrite=True, **recipe))
        (folder / "trained").touch()
    return folder / "best_model.pth", time.time() - t0


def run_round(work: Path, name: str, seed: int, scene: tuple[str, Path, Path], method: str, k: int,
              recipes: dict[str, dict], others: list[tuple[str, Path, Path]]) -> dict:
    """One round: suggest k patches, label them from the truth (prepare --patches), then map the scene with
    the base network and the patches' class shares ("prior") and with each fine-tune of ``recipes``; score
    on the unlabelled pixels; map ``others`` with each fine-tune (forgetting). Cached in result.json."""
    scene_name, emb, truth = scene
    folder = work / "rounds" / name / f"s{seed}" / scene_name / f"{method}_k{k}"
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    base = base_model(work, seed)
    base_map = map_scene(base, emb, work / "maps" / f"s{seed}" / f"{scene_name}.tif", companions=True)
    paths = product_paths(base_map)
    folder.mkdir(parents=True, exist_ok=True)
    patches = folder / "patches.gpkg"
    suggest_patches(emb, patches, SuggestConfig(n=k, size=PATCH, method=method, seed=seed, overwrite=True),
                    probabilities=paths["probabilities"], applicability=paths["applicability"])
    t0 = time.time()
    prepare_dataset(PrepareConfig(images=[emb], labels=[truth], out=folder / "data", tile=TILE, patches=patches,
                                  overwrite=True, progress=False))
    t_prepare = time.time() - t0
    with rasterio.open(truth) as t:
        size = t.width * t.height
    with EmbeddingReader(emb) as image:
        labelled = sum(p.box.height * p.box.width for p in read_patches(patches, image))
    result = {"seed": seed, "scene": scene_name, "method": method, "k": k, "labelled_share": labelled / size,
              "base": _score(confusion(base_map, truth, patches, emb)), "variants": {}, "seconds": {}}
    prior_map = map_scene(_prior_predictor(work, base, folder / "data"), emb, folder / "map_prior.tif")
    result["variants"]["prior"] = _score(confusion(prior_map, truth, patches, emb))
    for recipe_name, recipe in recipes.items():
        weights, t_train = _finetune(work, base, folder / recipe_name, seed, recipe)
        t1 = time.time()
        out = map_scene(weights, emb, folder / f"map_{recipe_name}.tif")
        result["variants"][recipe_name] = _score(confusion(out, truth, patches, emb))
        result["seconds"][recipe_name] = {"prepare": round(t_prepare, 1), "finetune": round(t_train, 1),
                                          "map": round(time.time() - t1, 1),
                                          "total": round(t_prepare + t_train + time.time() - t1, 1)}
        result["same_map_as_prior"] = result.get("same_map_as_prior", {})
        with rasterio.open(out) as a, rasterio.open(prior_map) as b:  # the pixels (the tags name other files)
            result["same_map_as_prior"][recipe_name] = bool(np.array_equal(a.read(1), b.read(1)))
        for other, o_emb, o_truth in others:  # forgetting: the other held-out scenes, whole, before and after
            before = confusion(map_scene(base, o_emb, work / "maps" / f"s{seed}" / f"{other}.tif", True), o_truth)
            after = confusion(map_scene(weights, o_emb, folder / f"other_{other}_{recipe_name}.tif"), o_truth)
            result.setdefault("others", {}).setdefault(other, {"before": float(before.compute().miou)})
            result["others"][other][recipe_name] = float(after.compute().miou)
    done.write_text(json.dumps(result))
    return result


def base_round(work: Path, seed: int, scene: tuple[str, Path, Path]) -> dict:
    """k = 0: the base model's map, scored on the whole scene."""
    scene_name, emb, truth = scene
    base_map = map_scene(base_model(work, seed), emb, work / "maps" / f"s{seed}" / f"{scene_name}.tif", True)
    return {"seed": seed, "scene": scene_name, "method": "none", "k": 0, "labelled_share": 0.0,
            "variants": {"base": _score(confusion(base_map, truth))}}


def summarise(results: list[dict]) -> list[dict]:
    """Per (variant, method, k): per-scene mean mIoU and pooled mIoU (each seed's scenes pooled, then the seeds
    averaged), scenes worse than the base model on the same pixels, labelled share, forgetting, wall time."""
    rows = []
    keys = sorted({(v, r["method"], r["k"]) for r in results for v in r["variants"]}, key=lambda t: (t[2], t[0], t[1]))
    for variant, method, k in keys:
        group = [r for r in results if (r["method"], r["k"]) == (method, k) and variant in r["variants"]]
        seeds = sorted({r["seed"] for r in group})
        per_seed, pooled = [], []
        for s in seeds:
            rs = [r for r in group if r["seed"] == s]
            per_seed.append(np.mean([r["variants"][variant]["miou"] for r in rs]))
            total = np.sum([np.asarray(r["variants"][variant]["matrix"], dtype=np.int64) for r in rs], axis=0)
            pooled.append(float(metrics_from_matrix(total).miou))
        row = {"variant": variant, "method": method, "k": k, "seeds": seeds, "rounds": len(group),
               "mean": round(float(np.mean(per_seed)), 3), "per_seed_mean": [round(float(v), 3) for v in per_seed],
               "pooled": round(float(np.mean(pooled)), 3),
               "labelled": round(float(np.mean([r["labelled_share"] for r in group])), 4),
               "per_scene": {f"{r['scene']}/s{r['seed']}": round(r["variants"][variant]["miou"], 3) for r in group}}
        if "base" in group[0]:
            deltas = [r["variants"][variant]["miou"] - r["base"]["miou"] for r in group]
            row.update(gain_mean=round(float(np.mean(deltas)), 3), worse=sum(d < 0 for d in deltas),
                       worst=round(float(min(deltas)), 3))
        drops = [o["before"] - o[variant] for r in group for o in r.get("others", {}).values() if variant in o]
        if drops:
            row.update(forgetting_mean=round(float(np.mean(drops)), 4), forgetting_worst=round(float(np.max(drops)), 4))
        walls = [r["seconds"][variant]["total"] for r in group if variant in r.get("seconds", {})]
        if walls:
            row.update(wall_mean_s=round(float(np.mean(walls)), 1), wall_max_s=round(float(np.max(walls)), 1))
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| adaptation | selection | k | labelled | per-scene mean | pooled | gain on the same pixels (mean, "
             "scenes worse, worst) | forgetting (mean / worst drop) | fine-tune + map (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        gain = f"{r['gain_mean']:+.3f}, {r['worse']}/{r['rounds']}, {r['worst']:+.3f}" if "gain_mean" in r else "-"
        forget = f"{r['forgetting_mean']:+.3f} / {r['forgetting_worst']:+.3f}" if "forgetting_mean" in r else "-"
        wall = f"{r['wall_mean_s']:.0f} (max {r['wall_max_s']:.0f})" if "wall_mean_s" in r else "-"
        lines.append(f"| {r['variant']} | {r['method']} | {r['k']} | {r['labelled']:.1%} | {r['mean']:.3f} | "
                     f"{r['pooled']:.3f} | {gain} | {forget} | {wall} |")
    return "\n".join(lines)


def main() -> None:
    global DEMO, PATCH, TILE, STRIDE  # --demo and --patch set the module's sizes
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("work", type=Path)
    ap.add_argument("--name", default="default", help="name of this set of rounds (default: default)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--k", type=int, nargs="+", default=[0, 5, 10, 20])
    ap.add_argument("--methods", nargs="+", default=["suggest", "uncertainty", "random"])
    ap.add_argument("--finetune-k", type=int, nargs="*", default=[10],
                    help="rounds of these k and --recipe-methods also run the real fine-tune (train --init-from, "
                         "the library's recipe) and map the other scenes with it (forgetting)")
    ap.add_argument("--recipe-methods", nargs="+", default=["suggest"])
    ap.add_argument("--recipe", action="append", default=[], metavar="NAME=JSON",
                    help="another fine-tune for those rounds of --recipe-seeds: TrainConfig fields over the "
                         "library's recipe, e.g. decoder='{\"train_layers\": \"decoder\"}'")
    ap.add_argument("--recipe-seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--scenes", type=int, nargs="+", help="indices of the held-out scenes (default: all four)")
    ap.add_argument("--demo", default="{}", help="DemoConfig fields for the base models (JSON; default: the demo's)")
    ap.add_argument("--patch", type=int, default=PATCH, help=f"patch side in pixels (default {PATCH})")
    args = ap.parse_args()
    DEMO = DemoConfig(**json.loads(args.demo))
    PATCH, TILE, STRIDE = args.patch, DEMO.tile, DEMO.tile // 2
    extra = dict(item.split("=", 1) for item in args.recipe)
    scenes = held_out_scenes(args.work)
    chosen = [scenes[i] for i in (args.scenes or range(len(scenes)))]
    results = []
    for seed in args.seeds:
        for scene in chosen:
            for k in args.k:
                if k == 0:
                    results.append(base_round(args.work, seed, scene))
                    continue
                for method in args.methods:
                    real = k in args.finetune_k and method in args.recipe_methods
                    recipes = {"default": {}} if real else {}
                    if real and seed in args.recipe_seeds:
                        recipes.update({n: json.loads(v) for n, v in extra.items()})
                    others = [s for s in scenes if s[0] != scene[0]] if recipes else []
                    r = run_round(args.work, args.name, seed, scene, method, k, recipes, others)
                    results.append(r)
                    print(json.dumps({key: r[key] for key in ("seed", "scene", "method", "k")}
                                     | {"base": round(r["base"]["miou"], 3)}
                                     | {v: round(x["miou"], 3) for v, x in r["variants"].items()}
                                     | {f"{v}_s": x["total"] for v, x in r["seconds"].items()}), flush=True)
    rows = summarise(results)
    (args.work / f"adapt_{args.name}.json").write_text(json.dumps(dict(recipes=extra, rows=rows), indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
