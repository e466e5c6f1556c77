"""Class legends of class-map GeoTIFFs: names and colours stored as tags and a colour table.

A dunemap class map is a single uint8 band whose values are class ids (255 = nodata). Its legend
travels inside the file in three forms so every tool finds it: a GDAL colour table (QGIS, GDAL),
a ``CLASS_NAMES`` dataset tag holding a JSON list, and per-class tags ``CLASS_<id>`` (name) and
``CLASS_<id>_COLOR`` (``#rrggbb``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping, Sequence

from dunemap.errors import InputError

NODATA_CLASS = 255
CLASS_NAMES_TAG = "CLASS_NAMES"

# fallback colours (matplotlib's tab10) for maps that carry no legend of their own
_FALLBACK_COLORS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)


@dataclass(frozen=True)
class ClassLegend:
    """Names and RGB colours of the class ids ``0 .. len(names) - 1``."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.colors):
            raise InputError(f"legend has {len(self.names)} names but {len(self.colors)} colours")
        if not 0 < len(self.names) < NODATA_CLASS:
            raise InputError(f"legend must have 1..{NODATA_CLASS - 1} classes; got {len(self.names)}")

    @classmethod
    def build(cls, names: Sequence[str], colors: Sequence[Sequence[int]]) -> ClassLegend:
        return cls(tuple(str(n) for n in names), tuple((int(c[0]), int(c[1]), int(c[2])) for c in colors))

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

    def tags(self) -> dict[str, str]:
        """Dataset tags that carry the legend."""
        tags = {CLASS_NAMES_TAG: json.dumps(list(self.names)), "CLASS_COUNT": str(self.num_classes)}
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
    return ClassLegend.build(names, colors)


def read_legend(dataset) -> ClassLegend | None:
    """The legend of an open rasterio class-map dataset, or None when it carries none."""
    try:
        colormap = dataset.colormap(1)
    except ValueError:
        colormap = None
    return legend_from_tags(dataset.tags(), colormap, source=str(dataset.name))
