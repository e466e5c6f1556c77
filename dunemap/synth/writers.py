"""Writers for synthetic scenes: georeferenced embedding and label GeoTIFFs, hillshade PNGs, and scene files.

Every file goes to a temporary sibling first and is renamed when complete
(:func:`dunemap.io.atomic.atomic_path`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dunemap.errors import RasterIOError
from dunemap.io.aef import AEF_BANDS
from dunemap.io.atomic import atomic_path
from dunemap.io.formats import EMBEDDING_TILE, embedding_creation
from dunemap.knowledge.catalog import load_catalog
from dunemap.raster.legend import ClassLegend, style_paths
from dunemap.registry import choose
from dunemap.synth.embedding import hillshade
from dunemap.synth.encoding import ENCODINGS
from dunemap.synth.landforms import NODATA_LABEL
from dunemap.synth.scene import Scene, SceneConfig, check_scene_memory, generate_scene

log = logging.getLogger(__name__)



def _profile(scene: Scene, count: int, dtype: str, nodata: float, bottom_up: bool) -> dict:
    """The creation profile of a scene's raster: embeddings as dunemap writes them all
    (:func:`~dunemap.io.formats.embedding_creation`), labels (one uint8 band) in DEFLATE, which every GIS reads."""
    from affine import Affine

    h, w = scene.shape
    t = scene.transform
    if bottom_up:  # rows stored south to north: origin at the southern edge, positive pixel height
        t = Affine(t.a, t.b, t.c, t.d, -t.e, t.f + t.e * h)
    grid = {"width": w, "height": h, "count": count, "crs": scene.crs, "transform": t, "nodata": nodata}
    if count == 1:
        return {"driver": "GTiff", "dtype": dtype, "tiled": True, "blockxsize": EMBEDDING_TILE,
                "blockysize": EMBEDDING_TILE, "compress": "deflate", "predictor": 2, **grid}
    return {**embedding_creation(dtype), **grid}


def _catalog_legend():
    """The packaged catalog's class names and colours: the classes the synthetic labels use."""
    catalog = load_catalog()
    return ClassLegend.build(catalog.names, catalog.colors, catalog.labels)


def write_scene_geotiff(
    scene: Scene,
    image_path: str | Path,
    label_path: str | Path,
    dtype: str = "float32",
    bottom_up: bool = False,
) -> tuple[Path, Path]:
    """Write the 64-band embedding GeoTIFF and the uint8 label GeoTIFF (nodata 255) on the same grid.

    ``dtype`` is ``"float32"`` (nodata NaN) or ``"int8"`` (AEF quantisation, nodata -128).
    ``bottom_up`` stores rows south to north with a positive pixel height, as AEF's public COGs do.
    Both files appear only when both are complete, the labels with the same legend companions as a
    predicted map (GDAL categories and attribute table, QGIS style: :func:`dunemap.raster.legend.style_paths`).
    """
    import rasterio
    from rasterio.errors import RasterioError

    enc = choose(ENCODINGS, dtype, "embedding dtype")
    image_path, label_path = Path(image_path), Path(label_path)
    data = enc.encode(scene.embedding, scene.valid)
    label = scene.label
    if bottom_up:
        data, label = data[:, ::-1, :], label[::-1, :]

    legend = _catalog_legend()
    styles = style_paths(label_path)
    tags = {"region": scene.config.region, "seed": str(scene.config.seed), "generator": "dunemap.synth",
            "embedding_seed": str(scene.config.embedding_seed), "wind_drift_deg": f"{scene.wind.drift_deg:.1f}"}
    try:
        with atomic_path(image_path) as tmp_img, atomic_path(label_path) as tmp_lbl, \
                atomic_path(styles["aux"], suffix=".xml") as tmp_aux, atomic_path(styles["qml"]) as tmp_qml:
            tmp_aux.write_text(legend.pam_xml())  # published before the labels, which are published before the image
            tmp_qml.write_text(legend.raster_qml())
            with rasterio.open(tmp_img, "w", **_profile(scene, AEF_BANDS, enc.dtype, enc.nodata, bottom_up)) as dst:
                dst.write(np.ascontiguousarray(data))
                dst.descriptions = tuple(f"A{i:02d}" for i in range(AEF_BANDS))
                dst.update_tags(**tags)
            with rasterio.open(tmp_lbl, "w", **_profile(scene, 1, "uint8", NODATA_LABEL, bottom_up)) as dst:
                dst.write_colormap(1, legend.colormap())  # before the pixels: a palette is a header field
                dst.write(np.ascontiguousarray(label)[None])
                dst.update_tags(**tags, **legend.tags())  # the catalog's names and colours, as on a predicted map
    except RasterioError as exc:
        raise RasterIOError(f"cannot write {image_path} / {label_path}: {exc}") from None
    log.debug("wrote %s and %s", image_path, label_path)
    return image_path, label_path


def hillshade_rgb(scene: Scene, overlay_labels: bool = False, exaggeration: float = 3.0) -> np.ndarray:
    """An (H, W, 3) uint8 picture of the height field; optionally tinted by class colour.

    Nodata pixels are darkened. Class colours come from the default catalog.
    """
    # Two lights (north-west and north-east) so ridges of every orientation show.
    shade = 0.6 * hillshade(scene.height, 315.0, 40.0, exaggeration) + 0.4 * hillshade(scene.height, 45.0, 40.0, exaggeration)
    grey = (0.12 + 0.88 * shade)[..., None]
    rgb = np.repeat(grey, 3, axis=2)
    if overlay_labels:
        colors = np.zeros((256, 3), np.float32)
        colors[: len(load_catalog().colors)] = np.asarray(load_catalog().colors, np.float32) / 255.0
        tint = colors[scene.label]
        rgb = np.where(scene.valid[..., None], 0.45 * rgb + 0.55 * tint * (0.35 + 0.65 * rgb), rgb)
    rgb = np.where(scene.valid[..., None], rgb, 0.3 * rgb)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def write_hillshade_png(scene: Scene, path: str | Path, overlay_labels: bool = False) -> Path:
    """Write :func:`hillshade_rgb` as a PNG so a person can see the dunes (and their classes)."""
    from PIL import Image

    path = Path(path)
    rgb = hillshade_rgb(scene, overlay_labels=overlay_labels)
    try:
        with atomic_path(path) as tmp:
            Image.fromarray(rgb, mode="RGB").save(tmp, format="PNG")
    except OSError as exc:
        raise RasterIOError(f"cannot write {path}: {exc}") from None
    return path


@dataclass(frozen=True)
class SceneFiles:
    """The files :func:`write_scene_files` wrote."""

    embedding: Path
    labels: Path
    hillshade: Path
    overlay: Path

    def paths(self) -> list[Path]:
        return [self.embedding, self.labels, self.hillshade, self.overlay]


def write_scene_files(cfg: SceneConfig, out_dir: str | Path, dtype: str = "float32", bottom_up: bool = False) -> SceneFiles:
    """Generate a scene and write ``<region>_<seed>_emb.tif``, ``_labels.tif``, ``_hillshade.png``, ``_overlay.png``."""
    choose(ENCODINGS, dtype, "embedding dtype")  # fail before the expensive part
    check_scene_memory(cfg.size)
    scene = generate_scene(cfg)
    out = Path(out_dir)
    stem = out / scene.name
    emb, lbl = write_scene_geotiff(scene, f"{stem}_emb.tif", f"{stem}_labels.tif", dtype=dtype, bottom_up=bottom_up)
    shade = write_hillshade_png(scene, f"{stem}_hillshade.png")
    overlay = write_hillshade_png(scene, f"{stem}_overlay.png", overlay_labels=True)
    return SceneFiles(embedding=emb, labels=lbl, hillshade=shade, overlay=overlay)
