"""Quicklook PNG of a class map: class colours, optional hillshade, legend, scale bar and north arrow.

Drawn north up whatever the file's row order (a bottom-up map, positive y pixel size, is flipped),
with axes labelled by the CRS's axis names and units, and nodata in the legend.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from affine import Affine
from rasterio.coords import BoundingBox
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject

from dunemap.errors import InputError, RasterIOError
from dunemap.io.atomic import atomic_path
from dunemap.products.classmap import map_legend, open_class_map
from dunemap.raster.legend import NODATA_CLASS, ClassLegend
from dunemap.raster.tags import PRODUCT_TAG, product_paths

log = logging.getLogger(__name__)

NICE_STEPS = (1, 2, 5)


def nice_length(target: float) -> float:
    """The largest 1, 2 or 5 times a power of ten not above ``target`` (a scale-bar length)."""
    if target <= 0 or not math.isfinite(target):
        raise InputError(f"scale bar target length must be positive, got {target}")
    power = 10 ** math.floor(math.log10(target))
    return max(s * power for s in NICE_STEPS if s * power <= target)


def format_length(metres: float) -> str:
    return f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"


def hillshade(dem: np.ndarray, dx: float, dy: float, azimuth: float = 315.0, altitude: float = 45.0) -> np.ndarray:
    """Lambertian hillshade in [0, 1] of a (H, W) elevation grid with pixel sizes ``dx``, ``dy`` in metres."""
    gy, gx = np.gradient(dem.astype(np.float64), dy, dx)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = math.radians(360.0 - azimuth + 90.0), math.radians(altitude)
    shade = np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)
    return np.clip(np.nan_to_num(shade, nan=1.0), 0.0, 1.0)


def _metres_per_unit(crs: rasterio.crs.CRS, lon: float, lat: float) -> float:
    if crs.is_geographic:
        geod = pyproj.CRS.from_user_input(crs.to_wkt()).get_geod()
        _, _, dist = geod.inv(lon, lat, lon + 0.01, lat)
        return dist / 0.01
    return float(crs.linear_units_factor[1])


def _north_angle(crs: rasterio.crs.CRS, x: float, y: float) -> tuple[float, float, float]:
    """(lon, lat, angle) at map point (x, y): angle of true north from grid up, radians, clockwise."""
    p = pyproj.CRS.from_user_input(crs.to_wkt())
    to_geo = pyproj.Transformer.from_crs(p, p.geodetic_crs, always_xy=True)
    lon, lat = to_geo.transform(x, y)
    if crs.is_geographic:
        return lon, lat, 0.0
    x2, y2 = to_geo.transform(lon, min(lat + 0.01, 89.99), direction="INVERSE")
    return lon, lat, math.atan2(x2 - x, y2 - y)


def render_quicklook(
    map_path: str | os.PathLike,
    out: str | os.PathLike,
    hillshade_from: str | os.PathLike | None = None,
    max_size: int = 1600,
    title: str | None = None,
    dpi: int = 150,
    hatch_outside: bool = False,
) -> Path:
    """Draw a class map to a PNG with a legend of the classes present, a scale bar and a north arrow.

    The map is read decimated (mode resampling) to at most ``max_size`` pixels a side. With
    ``hillshade_from`` (any elevation raster GDAL reads) the colours are shaded by its relief. With
    ``hatch_outside`` the part outside the area of applicability (from the map's
    ``MAP_applicability.tif`` companion) is hatched.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyArrow, Patch
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    map_path, out = Path(map_path), Path(out)
    if max_size < 16:
        raise InputError(f"quicklook size {max_size} is too small; use at least 16 pixels")
    with open_class_map(map_path, "a scale bar and north arrow need one") as src:
        scale = max(1, math.ceil(max(src.height, src.width) / max_size))
        h, w = max(1, src.height // scale), max(1, src.width // scale)
        classes = src.read(1, out_shape=(h, w), resampling=Resampling.mode)
        legend = map_legend(src)
        crs = src.crs
        transform = src.transform @ Affine.scale(src.width / w, src.height / h)
        outside = _outside_mask(map_path, src, (h, w)) if hatch_outside else None
    if transform.e > 0:  # rows stored south to north: flip so row 0 is the northern edge
        classes = classes[::-1]
        outside = None if outside is None else outside[::-1]
        transform = transform @ Affine.translation(0, h) @ Affine.scale(1, -1)
    bounds = _bounds(transform, h, w)
    if legend is None:
        present = np.unique(classes[classes != NODATA_CLASS])
        legend = ClassLegend.fallback(int(present.max()) + 1 if present.size else 1)

    palette = np.zeros((256, 4), dtype=np.float64)
    palette[:, :3] = 1.0  # nodata: white
    palette[: legend.num_classes, :3] = np.asarray(legend.colors, dtype=np.float64) / 255.0
    palette[: legend.num_classes, 3] = 1.0
    rgba = palette[classes]
    if hillshade_from is not None:
        shade = _hillshade_on_grid(Path(hillshade_from), crs, transform, (h, w))
        rgba[..., :3] *= (0.35 + 0.65 * shade)[..., np.newaxis]

    cx, cy = (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
    lon, lat, north = _north_angle(crs, cx, cy)
    m_per_unit = _metres_per_unit(crs, lon, lat)
    width_m = (bounds.right - bounds.left) * m_per_unit

    fig = Figure(figsize=(9, 7), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(rgba, extent=(bounds.left, bounds.right, bounds.bottom, bounds.top), interpolation="nearest")
    if crs.is_geographic:
        ax.set_aspect(1.0 / max(math.cos(math.radians(lat)), 1e-6))
    if outside is not None and outside.any():
        ax.contourf(np.linspace(bounds.left, bounds.right, w), np.linspace(bounds.top, bounds.bottom, h),
                    outside.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"])
    ax.set_title(title or map_path.name)
    xlabel, ylabel = axis_labels(crs)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.ticklabel_format(useOffset=False, style="plain")

    bar_m = nice_length(width_m / 4)
    ax.add_artist(AnchoredSizeBar(ax.transData, bar_m / m_per_unit, format_length(bar_m), "lower left",
                                  pad=0.6, sep=4, frameon=True, size_vertical=(bounds.top - bounds.bottom) / 150))
    length = (bounds.top - bounds.bottom) * 0.09
    ax_x, ax_y = bounds.right - (bounds.right - bounds.left) * 0.07, bounds.top - (bounds.top - bounds.bottom) * 0.2
    dx, dy = length * math.sin(north), length * math.cos(north)
    ax.add_patch(FancyArrow(ax_x, ax_y, dx, dy, width=length * 0.12, length_includes_head=True,
                            head_width=length * 0.4, head_length=length * 0.4, color="black"))
    ax.text(ax_x + dx * 1.25, ax_y + dy * 1.25, "N", ha="center", va="center", fontsize=11, fontweight="bold")

    ids, counts = np.unique(classes[classes != NODATA_CLASS], return_counts=True)
    share = counts / max(counts.sum(), 1)
    shown = ids if ids.size else np.arange(legend.num_classes)
    handles = [
        Patch(facecolor=np.asarray(legend.colors[i]) / 255.0 if i < legend.num_classes else "grey", edgecolor="black",
              label=f"{i} {legend.label_of(int(i))}" + (f" ({share[j] * 100:.1f} %)" if ids.size else ""))
        for j, i in enumerate(shown)
    ]
    nodata = classes == NODATA_CLASS
    if nodata.any():
        handles.append(Patch(facecolor="white", edgecolor="black",
                             label=f"{NODATA_CLASS} nodata ({nodata.mean() * 100:.1f} % of the map)"))
    if outside is not None:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="////",
                             label=f"outside area of applicability ({outside.mean() * 100:.1f} %)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="class", frameon=False)
    fig.tight_layout()
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight", pad_inches=0.2)
    log.debug("wrote %s (%dx%d, 1:%d decimation)", out, w, h, scale)
    return out


def _bounds(transform: Affine, h: int, w: int) -> BoundingBox:
    """Bounds of an (h, w) north-up grid."""
    return BoundingBox(transform.c, transform.f + transform.e * h, transform.c + transform.a * w,
                                       transform.f)


def axis_labels(crs: rasterio.crs.CRS) -> tuple[str, str]:
    """x and y axis labels: the CRS's axis names with their units, and the CRS's name (and EPSG code)."""
    p = pyproj.CRS.from_user_input(crs.to_wkt())
    axes = {a.direction.lower(): a for a in p.axis_info}
    east, north = axes.get("east"), axes.get("north")
    epsg = crs.to_epsg()
    name = f"{p.name} (EPSG:{epsg})" if epsg else p.name
    x = f"{east.name} ({east.unit_name})" if east else "x"
    y = f"{north.name} ({north.unit_name})" if north else "y"
    return f"{x}; {name}", y


def _outside_mask(map_path: Path, classes, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) bool: decimated pixels outside the area of applicability, from the map's applicability companion."""
    path = product_paths(map_path)["applicability"]
    if not path.is_file():
        raise InputError(f"{path}: not found; map with --applicability to hatch the area outside it")
    with rasterio.open(path) as src:
        if src.tags().get(PRODUCT_TAG) != "applicability" or (src.height, src.width) != (classes.height, classes.width):
            raise InputError(f"{path}: not the applicability raster of {map_path.name}")
        return src.read(2, out_shape=shape, resampling=Resampling.nearest) == 0


def _hillshade_on_grid(dem_path: Path, crs, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Shade in [0, 1] of an elevation raster resampled onto the quicklook grid."""
    if not dem_path.exists():
        raise InputError(f"{dem_path}: elevation raster for the hillshade not found")
    try:
        with rasterio.open(dem_path) as dem:
            if dem.count != 1:
                raise InputError(f"{dem_path}: has {dem.count} bands; --hillshade-from takes an elevation raster "
                                 "(DEM) of one band" + (" (this looks like an embedding raster)" if dem.count >= 16
                                                        else ""))
            grid = np.full(shape, np.nan, dtype=np.float32)
            reproject(rasterio.band(dem, 1), grid, dst_transform=transform, dst_crs=crs,
                      dst_nodata=np.nan, resampling=Resampling.bilinear)
    except RasterioError as exc:
        raise RasterIOError(f"{dem_path}: cannot read the elevation raster ({exc})") from None
    if np.isnan(grid).all():
        raise InputError(f"{dem_path}: the elevation raster does not overlap the map")
    grid = np.where(np.isnan(grid), np.nanmean(grid), grid)
    cx = transform.c + transform.a * shape[1] / 2
    cy = transform.f + transform.e * shape[0] / 2
    lon, lat, _ = _north_angle(crs, cx, cy)
    m = _metres_per_unit(crs, lon, lat)
    dy_m = abs(transform.e) * (m if not crs.is_geographic else 111_320.0)
    return hillshade(grid, abs(transform.a) * m, dy_m)
