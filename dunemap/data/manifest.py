"""The dataset manifest: one CSV row per tile of a seed-layout dataset (``DATASET/manifest.csv``).

Columns: ``name`` (file stem), ``split`` (train/val/test), ``region`` (free text, used for
leave-one-region-out), ``source`` (the raster it came from), ``row_off``, ``col_off``, ``height``,
``width`` (the tile's pixel window in that raster), ``crs`` (WKT or EPSG string) and ``transform``
(the tile's own affine geotransform as six numbers ``a b c d e f``). Writers may leave the
georeferencing columns empty for data that has none.
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from dunemap.errors import InputError
from dunemap.io.atomic import atomic_path

MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class TileRecord:
    name: str
    split: str
    region: str = ""
    source: str = ""
    row_off: int = 0
    col_off: int = 0
    height: int = 0
    width: int = 0
    crs: str = ""
    transform: str = ""  # "a b c d e f" of the tile's affine transform, or "" when not georeferenced


FIELDS = [f.name for f in fields(TileRecord)]
_INT_FIELDS = {"row_off", "col_off", "height", "width"}


def write_manifest(root: str | Path, records: list[TileRecord]) -> Path:
    """Write ``records`` to ``root/manifest.csv`` atomically and return its path."""
    path = Path(root) / MANIFEST_NAME
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            writer.writeheader()
            for rec in records:
                writer.writerow(asdict(rec))
    return path


def read_manifest(root: str | Path) -> list[TileRecord] | None:
    """Read ``root/manifest.csv``; None when the dataset has no manifest."""
    path = Path(root) / MANIFEST_NAME
    if not path.exists():
        return None
    records = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"name", "split"} - set(reader.fieldnames or [])
        if missing:
            raise InputError(f"{path}: manifest lacks column(s) {sorted(missing)}")
        for i, row in enumerate(reader, start=2):
            try:
                kw = {k: (int(v) if k in _INT_FIELDS and v != "" else v) for k, v in row.items() if k in FIELDS}
                kw = {k: (0 if k in _INT_FIELDS and v == "" else v) for k, v in kw.items()}
            except ValueError as exc:
                raise InputError(f"{path}: line {i}: {exc}") from None
            records.append(TileRecord(**kw))
    return records


SCENE_GROUPS: dict[str, str] = {
    "in_scene": "tiles whose scene (manifest source) also gave training tiles",
    "new_scene": "tiles of scenes that gave no training tile",
}


def scene_groups(records: list[TileRecord], split: str = "test") -> dict[str, list[str]]:
    """Names of ``split``'s tiles by :data:`SCENE_GROUPS`: seen in training (``in_scene``) or new ground (``new_scene``).

    A tile's scene is its ``source`` (a synthetic scene, or the raster ``dunemap prepare`` cut it from);
    tiles without a source count as in-scene, so nothing unknown is ever claimed to be new ground.
    """
    train_sources = {r.source for r in records if r.split == "train"}
    out: dict[str, list[str]] = {name: [] for name in SCENE_GROUPS}
    for r in records:
        if r.split == split:
            out["in_scene" if not r.source or r.source in train_sources else "new_scene"].append(r.name)
    return out
