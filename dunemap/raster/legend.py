"""Class legends of class-map GeoTIFFs: names and colours stored as tags and a colour table.

A dunemap class map is a single uint8 band whose values are class ids (255 = nodata). Its legend
travels inside the file in three forms so every tool finds it: a GDAL colour table (QGIS, GDAL),
a ``CLASS_NAMES`` dataset tag holding a JSON list, and per-class tags ``CLASS_<id>`` (name) and
``CLASS_<id>_COLOR`` (``#rrggbb``). Beside the file go GDAL's category names and a raster attribute
table (``MAP.tif.aux.xml``, :meth:`ClassLegend.pam_xml`, listed by ``gdalinfo`` as "Categories") and a
QGIS style (``MAP.qml``, :meth:`ClassLegend.raster_qml`) so QGIS's legend shows the dune types.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from dunemap.errors import InputError

NODATA_CLASS = 255
CLASS_NAMES_TAG = "CLASS_NAMES"
CLASS_LABELS_TAG = "CLASS_LABELS"  # JSON list of display labels ("Crescentic (barchan)"), beside the machine names

# fallback colours (matplotlib's tab10) for maps that carry no legend of their own
_FALLBACK_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


@dataclass(frozen=True)
class ClassLegend:
    """Names, display labels and RGB colours of the class ids ``0 .. len(names) - 1``.

    ``names`` are machine names (tags, category names, CSV columns); ``labels`` are what a person reads
    (QGIS legends, quicklooks); without labels the names are shown.
    """

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise InputError(f"legend has {len(self.names)} names but {len(self.colors)} colours")
        if self.labels and len(self.labels) != len(self.names):
            raise InputError(f"legend has {len(self.names)} names but {len(self.labels)} labels")
        if not 0 < len(self.names) < NODATA_CLASS:
            raise InputError(f"legend must have 1..{NODATA_CLASS - 1} classes; got {len(self.names)}")

    @classmethod
    def build(cls, names: Sequence[str], colors: Sequence[Sequence[int]],
              labels: Sequence[str] | None = None) -> ClassLegend:
        return cls(tuple(str(n) for n in names), tuple((int(c[0]), int(c[1]), int(c[2])) for c in colors),
                   tuple(str(v) for v in labels or ()))

    @property
    def shown(self) -> tuple[str, ...]:
        """What a person reads for each class: its label, or its name where the legend has no labels."""
        return self.labels or self.names

    def with_labels(self, labels: Sequence[str]) -> ClassLegend:
        """This legend with ``labels`` as its display labels."""
        return ClassLegend.build(self.names, self.colors, labels)

    @classmethod
    def fallback(cls, num_classes: int) -> ClassLegend:
        """Generic ``class_<id>`` names with a repeating ten-colour cycle."""
        return cls(
            tuple(f"class_{i}" for i in range(num_classes)),
            tuple(_FALLBACK_COLORS[i % len(_FALLBACK_COLORS)] for i in range(num_classes)),
        )

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def name_of(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else f"class_{class_id}"

    def label_of(self, class_id: int) -> str:
        return self.shown[class_id] if 0 <= class_id < len(self.names) else f"class_{class_id}"

    def tags(self) -> dict[str, str]:
        """Dataset tags that carry the legend."""
        tags = {CLASS_NAMES_TAG: json.dumps(list(self.names)), "CLASS_COUNT": str(self.num_classes)}
        if self.labels:
            tags[CLASS_LABELS_TAG] = json.dumps(list(self.labels), ensure_ascii=False)
        for i, (name, (r, g, b)) in enumerate(zip(self.names, self.colors)):
            tags[f"CLASS_{i}"] = name
            tags[f"CLASS_{i}_COLOR"] = f"#{r:02x}{g:02x}{b:02x}"
        return tags

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A full 256-entry colour table: class colours opaque, everything else (nodata) transparent."""
        cmap = {i: (0, 0, 0, 0) for i in range(256)}
        for i, (r, g, b) in enumerate(self.colors):
            cmap[i] = (r, g, b, 255)
        return cmap

    def hex_colors(self) -> list[str]:
        return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in self.colors]

    def pam_xml(self) -> str:
        """GDAL's ``.aux.xml`` for band 1: category names and a thematic attribute table (value, name, red, green, blue)."""
        root = ET.Element("PAMDataset")
        band = ET.SubElement(root, "PAMRasterBand", band="1")
        categories = ET.SubElement(band, "CategoryNames")
        for name in self.names:
            ET.SubElement(categories, "Category").text = name
        rat = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
        # GDAL field types: 0 integer, 2 string; usages: 5 min-max (the value), 2 name, 6/7/8 red/green/blue
        for i, (field, kind, usage) in enumerate((("Value", 0, 5), ("Name", 2, 2), ("Red", 0, 6), ("Green", 0, 7),
                                                  ("Blue", 0, 8))):
            defn = ET.SubElement(rat, "FieldDefn", index=str(i))
            ET.SubElement(defn, "Name").text = field
            ET.SubElement(defn, "Type").text = str(kind)
            ET.SubElement(defn, "Usage").text = str(usage)
        for i, (name, rgb) in enumerate(zip(self.names, self.colors)):
            row = ET.SubElement(rat, "Row", index=str(i))
            for value in (i, name, *rgb):
                ET.SubElement(row, "F").text = str(value)
        ET.indent(root)
        return ET.tostring(root, encoding="unicode") + "\n"

    def raster_qml(self) -> str:
        """A QGIS style for a class map: a paletted renderer with each class's colour and name."""
        root = ET.Element("qgis", version="3.22", styleCategories="AllStyleCategories")
        pipe = ET.SubElement(root, "pipe")
        renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1",
                                 nodataColor="")
        ET.SubElement(renderer, "rasterTransparency")
        palette = ET.SubElement(renderer, "colorPalette")
        for i, (name, color) in enumerate(zip(self.shown, self.hex_colors())):
            ET.SubElement(palette, "paletteEntry", value=str(i), color=color, alpha="255", label=name)
        ET.indent(root)
        return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"

    def vector_qml(self, field: str = "class_id") -> str:
        """A QGIS style for class polygons: a categorised renderer on ``field`` with each class's fill colour and name."""
        root = ET.Element("qgis", version="3.22", styleCategories="Symbology")
        renderer = ET.SubElement(root, "renderer-v2", type="categorizedSymbol", attr=field, symbollevels="0",
                                 enableorderby="0", forceraster="0")
        categories = ET.SubElement(renderer, "categories")
        symbols = ET.SubElement(renderer, "symbols")
        for i, (name, (r, g, b)) in enumerate(zip(self.shown, self.colors)):
            ET.SubElement(categories, "category", value=str(i), symbol=str(i), label=name, render="true")
            symbol = ET.SubElement(symbols, "symbol", type="fill", name=str(i), alpha="1", clip_to_extent="1",
                                   force_rhr="0")
            layer = ET.SubElement(symbol, "layer", {"class": "SimpleFill", "enabled": "1", "pass": "0", "locked": "0"})
            options = ET.SubElement(layer, "Option", type="Map")
            for key, value in (("color", f"{r},{g},{b},255"), ("outline_color", "35,35,35,255"),
                               ("outline_width", "0.1"), ("style", "solid")):
                ET.SubElement(options, "Option", name=key, value=value, type="QString")
        ET.indent(root)
        return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


def value_map_qml(field: str, labels: Sequence[str]) -> str:
    """A QGIS form style: ``field`` edited with a drop-down (value map) showing ``labels``, storing the class ids."""
    root = ET.Element("qgis", version="3.22", styleCategories="Fields|Forms")
    config = ET.SubElement(ET.SubElement(ET.SubElement(ET.SubElement(root, "fieldConfiguration"), "field",
                                                       name=field, configurationFlags="None"),
                                         "editWidget", type="ValueMap"), "config")
    choices = ET.SubElement(ET.SubElement(config, "Option", type="Map"), "Option", name="map", type="List")
    for i, label in enumerate(labels):
        ET.SubElement(ET.SubElement(choices, "Option", type="Map"), "Option", name=label, value=str(i), type="QString")
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


def style_paths(class_map: str | os.PathLike) -> dict[str, Path]:
    """The companions that carry a class map's legend for GIS: GDAL's ``MAP.tif.aux.xml`` and QGIS's ``MAP.qml``."""
    class_map = Path(class_map)
    return {"aux": class_map.with_name(class_map.name + ".aux.xml"), "qml": class_map.with_suffix(".qml")}


def write_styles(legend: ClassLegend, finals: dict[str, Path], folder: Path) -> list[tuple[Path, Path]]:
    """Write the legend companions (:func:`style_paths`) into ``folder``; (written file, final path) pairs to publish."""
    texts = {"aux": legend.pam_xml(), "qml": legend.raster_qml()}
    pairs = []
    for key, final in finals.items():
        tmp = folder / f".{final.name}.tmp"
        tmp.write_text(texts[key])
        pairs.append((tmp, final))
    return pairs


def legend_from_tags(
    tags: Mapping[str, str], colormap: Mapping[int, Sequence[int]] | None = None, source: str = "map"
) -> ClassLegend | None:
    """Rebuild a legend from a class map's tags (and colour table); None when it carries none."""
    raw = tags.get(CLASS_NAMES_TAG)
    if raw is None:
        if not colormap:
            return None
        # GDAL pads a colour table to 256 entries with opaque black: a trailing run of those is no class
        ids = [i for i, c in colormap.items() if i != NODATA_CLASS and len(c) > 3 and c[3] > 0
               and tuple(c[:3]) != (0, 0, 0)]
        if not ids:
            return None
        n = max(ids) + 1
        return ClassLegend.build([f"class_{i}" for i in range(n)], [tuple(colormap.get(i, (0, 0, 0)))[:3] for i in range(n)])
    try:
        names = json.loads(raw)
    except json.JSONDecodeError:
        raise InputError(f"{source}: tag {CLASS_NAMES_TAG} is not a JSON list of class names: {raw[:60]!r}") from None
    if not isinstance(names, list) or not names:
        raise InputError(f"{source}: tag {CLASS_NAMES_TAG} should be a non-empty JSON list; got {raw[:60]!r}")
    colors = []
    for i in range(len(names)):
        hex_color = tags.get(f"CLASS_{i}_COLOR")
        if hex_color and len(hex_color) == 7 and hex_color.startswith("#"):
            colors.append(tuple(int(hex_color[k : k + 2], 16) for k in (1, 3, 5)))
        elif colormap and i in colormap:
            colors.append(tuple(colormap[i])[:3])
        else:
            colors.append(_FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])
    try:
        labels = json.loads(tags.get(CLASS_LABELS_TAG, "[]"))
    except json.JSONDecodeError:
        labels = []
    good = isinstance(labels, list) and len(labels) == len(names)
    return ClassLegend.build(names, colors, labels if good else None)


def read_legend(dataset) -> ClassLegend | None:
    """The legend of an open rasterio class-map dataset, or None when it carries none."""
    try:
        colormap = dataset.colormap(1)
    except ValueError:
        colormap = None
    return legend_from_tags(dataset.tags(), colormap, source=str(dataset.name))
