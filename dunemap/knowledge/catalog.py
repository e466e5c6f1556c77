"""The dune-class catalog: class ids, names, colours and expert descriptions, loaded and validated from YAML or TOML."""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from dunemap.errors import ConfigError, InputError

log = logging.getLogger(__name__)

DEFAULT_CATALOG_RESOURCE = "dune_classes.yaml"
IGNORE_INDEX = 255  # label/class-map value for ignore / nodata; real class ids stay below it
MAX_CLASSES = IGNORE_INDEX  # ids 0..254, so 255 stays free for ignore / nodata
MIN_CLASSES = 2

_REQUIRED_KEYS = ("id", "name", "color", "description")
_OPTIONAL_KEYS = ("label",)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_HEX_RE = re.compile(r"^#?([0-9A-Fa-f]{6})$")


@dataclass(frozen=True)
class ClassInfo:
    """One landform class: its id in label rasters, a short name, a display colour and an expert description."""

    id: int
    name: str
    color: tuple[int, int, int]
    description: str
    label: str = ""  # display label; defaults to the name with underscores as spaces, capitalised

    def __post_init__(self) -> None:
        object.__setattr__(self, "color", tuple(int(c) for c in self.color))
        if not self.label:
            object.__setattr__(self, "label", self.default_label(self.name))

    @staticmethod
    def default_label(name: str) -> str:
        """The label of a class whose catalog gives none: the name with underscores as spaces, capitalised."""
        return name.replace("_", " ").capitalize()

    @property
    def text(self) -> str:
        """The canonical text a sentence encoder embeds for this class: ``"<label>: <description>"``."""
        return f"{self.label}: {' '.join(self.description.split())}"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "label": self.label, "color": list(self.color),
                "description": self.description}


@dataclass(frozen=True)
class Catalog:
    """An ordered, validated set of classes (ids 0..N-1); build it with :func:`load_catalog` or :meth:`from_dict`."""

    classes: tuple[ClassInfo, ...]
    version: str = "1"
    name: str = "custom"
    source: str = field(default="<memory>", compare=False)  # file or resource it was read from

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        _check_classes(self.classes, self.source)

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self) -> Iterator[ClassInfo]:
        return iter(self.classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.classes]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]

    @property
    def descriptions(self) -> list[str]:
        return [c.description for c in self.classes]

    @property
    def texts(self) -> list[str]:
        """The per-class strings handed to a text encoder, in id order."""
        return [c.text for c in self.classes]

    @property
    def canonical_text(self) -> str:
        """A stable JSON rendering of (id, name, text) per class: exactly what the embeddings depend on."""
        rows = [{"id": c.id, "name": c.name, "text": c.text} for c in self.classes]
        return json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    @property
    def sha256(self) -> str:
        """SHA-256 of :attr:`canonical_text`; colours and the catalog's own name do not affect it."""
        return hashlib.sha256(self.canonical_text.encode("utf-8")).hexdigest()

    def index(self, name: str) -> int:
        """The id of the class called ``name``; a ConfigError lists the valid names."""
        for c in self.classes:
            if c.name == name:
                return c.id
        raise ConfigError(f"unknown class {name!r} in catalog {self.source}; valid: {', '.join(self.names)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-safe dict (with ``sha256``) that :meth:`from_dict` turns back into an equal catalog."""
        return {"version": self.version, "name": self.name, "sha256": self.sha256,
                "classes": [c.to_dict() for c in self.classes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> "Catalog":
        """Validate ``data`` (the layout of the YAML file or of :meth:`to_dict`); errors name ``source``.

        When ``data`` carries a ``sha256`` (as a saved checkpoint does) it must match the rebuilt catalog.
        """
        if not isinstance(data, Mapping):
            raise InputError(f"catalog {source}: expected a mapping with a 'classes' list, got {type(data).__name__}")
        unknown = sorted(set(data) - {"version", "name", "sha256", "classes"})
        if unknown:
            raise InputError(f"catalog {source}: unknown top-level key(s) {', '.join(unknown)}; "
                             "expected version, name, classes")
        raw = data.get("classes")
        if not isinstance(raw, list) or not raw:
            raise InputError(f"catalog {source}: 'classes' must be a non-empty list of class entries")
        classes = [_parse_class(entry, i, source) for i, entry in enumerate(raw)]
        classes.sort(key=lambda c: c.id)
        catalog = cls(classes=tuple(classes), version=str(data.get("version", "1")),
                      name=str(data.get("name", Path(source).stem if source[:1] != "<" else "custom")),
                      source=source)
        expected = data.get("sha256")
        if expected is not None and expected != catalog.sha256:
            raise InputError(f"catalog {source}: recorded sha256 {str(expected)[:12]}... does not match its "
                             f"classes ({catalog.sha256[:12]}...); the text was edited after it was saved")
        return catalog


def _parse_class(entry: Any, position: int, source: str) -> ClassInfo:
    where = f"catalog {source}: class #{position}"
    if not isinstance(entry, Mapping):
        raise InputError(f"{where}: expected a mapping with {', '.join(_REQUIRED_KEYS)}, got {type(entry).__name__}")
    if "name" in entry and isinstance(entry["name"], str):
        where = f"catalog {source}: class #{position} ({entry['name']!r})"
    missing = [k for k in _REQUIRED_KEYS if k not in entry]
    if missing:
        raise InputError(f"{where}: missing {', '.join(missing)}")
    unknown = sorted(set(entry) - set(_REQUIRED_KEYS) - set(_OPTIONAL_KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; "
                         f"expected {', '.join(_REQUIRED_KEYS + _OPTIONAL_KEYS)}")
    cid = entry["id"]
    if isinstance(cid, bool) or not isinstance(cid, int):
        raise InputError(f"{where}: id {cid!r} is not an integer")
    name = entry["name"]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"{where}: name {name!r} must be a short word of letters, digits, '_', '.', '-'")
    label = entry.get("label") or ""
    if not isinstance(label, str):
        raise InputError(f"{where}: label {label!r} is not a string")
    description = entry["description"]
    if not isinstance(description, str) or not description.strip():
        raise InputError(f"{where}: description is empty; write a few sentences describing the class")
    return ClassInfo(id=cid, name=name, color=_parse_color(entry["color"], where), description=description.strip(),
                     label=label.strip())


def _parse_color(value: Any, where: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        m = _HEX_RE.match(value.strip())
        if not m:
            raise InputError(f"{where}: color {value!r} is not '#RRGGBB' or three integers 0..255")
        h = m.group(1)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if (not isinstance(value, (list, tuple)) or len(value) != 3
            or any(isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255 for v in value)):
        raise InputError(f"{where}: color {value!r} must be three integers 0..255 (or '#RRGGBB')")
    return int(value[0]), int(value[1]), int(value[2])


def _check_classes(classes: tuple[ClassInfo, ...], source: str) -> None:
    """Whole-catalog rules: 2..255 classes, ids exactly 0..N-1 in order, unique names."""
    n = len(classes)
    if not MIN_CLASSES <= n <= MAX_CLASSES:
        raise InputError(f"catalog {source}: has {n} classes; expected {MIN_CLASSES}..{MAX_CLASSES} "
                         f"({IGNORE_INDEX} is reserved for ignore / nodata)")
    seen_ids: dict[int, str] = {}
    seen_names: dict[str, int] = {}
    for c in classes:
        if len(c.color) != 3 or any(not 0 <= v <= 255 for v in c.color):
            raise InputError(f"catalog {source}: class {c.name!r} color {c.color} must be three integers 0..255")
        if not c.description.strip():
            raise InputError(f"catalog {source}: class {c.name!r} has an empty description")
        if c.id in seen_ids:
            raise InputError(f"catalog {source}: duplicate id {c.id} (classes {seen_ids[c.id]!r} and {c.name!r})")
        if c.name in seen_names:
            raise InputError(f"catalog {source}: duplicate name {c.name!r} (ids {seen_names[c.name]} and {c.id})")
        seen_ids[c.id] = c.name
        seen_names[c.name] = c.id
    ids = [c.id for c in classes]
    if ids != list(range(n)):
        missing = sorted(set(range(n)) - set(ids))
        extra = sorted(set(ids) - set(range(n)))
        detail = (f"missing {missing}" if missing else "") + ("; " if missing and extra else "") + \
                 (f"out of range {extra}" if extra else "")
        if not detail:
            detail = f"order {ids}"
        raise InputError(f"catalog {source}: ids must be contiguous 0..{n - 1} in order; {detail}")
    colors: dict[tuple[int, int, int], str] = {}
    for c in classes:
        if c.color in colors:
            log.warning("catalog %s: classes %r and %r share colour %s", source, colors[c.color], c.name, c.color)
        colors.setdefault(c.color, c.name)


def _read_text_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"catalog {path}: file not found") from None
    except OSError as exc:
        raise InputError(f"catalog {path}: cannot be read ({exc.strerror or exc})") from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(raw.decode("utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"catalog {path}: invalid YAML ({first})") from None
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ModuleNotFoundError:
                raise ConfigError(f"catalog {path}: reading TOML on Python 3.10 needs the 'tomli' package; "
                                  "use a .yaml catalog or install tomli") from None
        try:
            return tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"catalog {path}: invalid TOML ({str(exc).splitlines()[0]})") from None
    raise InputError(f"catalog {path}: unsupported file type {suffix or '(none)'!r}; expected .yaml, .yml or .toml")


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate a class catalog; ``None`` loads the packaged default (10 dune classes).

    The format is chosen by suffix (``.yaml``/``.yml`` or ``.toml``); every error names the file.
    """
    if path is None:
        resource = importlib.resources.files("dunemap.knowledge").joinpath(DEFAULT_CATALOG_RESOURCE)
        import yaml

        data = yaml.safe_load(resource.read_text(encoding="utf-8"))
        return Catalog.from_dict(data, source=f"<default {DEFAULT_CATALOG_RESOURCE}>")
    path = Path(path)
    return Catalog.from_dict(_read_text_file(path), source=str(path))


def class_texts(names: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(label, description) of each class name, from the packaged catalog where it has the name.

    A class map records machine names (``barchanoid_transverse``); legends, styles and STAC show the
    catalog's labels. A name the default catalog lacks gets the label a catalog would give it (the name
    with spaces, capitalised) and no description.
    """
    known = {c.name: (c.label, " ".join(c.description.split())) for c in load_catalog()}
    return [known.get(n, (ClassInfo.default_label(n), "")) for n in names]
