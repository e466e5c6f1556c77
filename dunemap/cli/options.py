"""The option registry: options shared by several commands, defined once, with defaults from the library.

A command adds a shared option with :func:`add` (``add(p, "seed", TrainConfig)``); its default is
read from the named dataclass field (or keyword default of a function, e.g. ``write_dataset``), so
the library stays the one source of every default. ``p.set_defaults(config_class=TrainConfig)`` tells
the tests which dataclass a command builds, and :func:`config_from_args` builds it from the parsed
options. :class:`HelpFormatter` appends each option's default to its help and names metavars after
the option, never after internal field names.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from dunemap.runtime.spec import ModelSpec

log = logging.getLogger("dunemap.cli")


def csv_list(value: str) -> list[str]:
    """Parse ``a,b,c`` into ``["a", "b", "c"]``."""
    return [v.strip() for v in value.split(",") if v.strip()]


def defaults_of(source: type | Callable) -> dict[str, Any]:
    """The default of every field of a dataclass (or keyword parameter of a function) that has one."""
    if dataclasses.is_dataclass(source):
        out = {}
        for f in dataclasses.fields(source):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = f.default_factory()
        return out
    return {name: p.default for name, p in inspect.signature(source).parameters.items()
            if p.default is not inspect.Parameter.empty}


def default_of(source: type | Callable, name: str) -> Any:
    defaults = defaults_of(source)
    if name not in defaults:
        raise KeyError(f"{getattr(source, '__name__', source)} has no default for {name!r}")
    return defaults[name]


def _has_field(source: type | Callable, name: str) -> bool:
    if dataclasses.is_dataclass(source):
        return name in {f.name for f in dataclasses.fields(source)}
    return name in inspect.signature(source).parameters


def config_from_args(config_class: type, args: argparse.Namespace, **extra: Any) -> Any:
    """Build ``config_class`` from the parsed options that are its fields (plus ``extra``)."""
    names = {f.name for f in dataclasses.fields(config_class)}
    values = {k: v for k, v in vars(args).items() if k in names}
    values.update(extra)
    return config_class(**values)


def model_from_args(args: argparse.Namespace, **extra: Any) -> ModelSpec:
    """The :class:`ModelSpec` of the parsed model options (``--weights``, ``--device``, ...) the command has,
    plus ``extra``; the ones it lacks keep ModelSpec's defaults."""
    from dunemap.runtime.spec import ModelSpec  # deferred: dunemap.runtime imports torch; `dunemap --help` needs none

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ModelSpec) if hasattr(args, f.name)}
    return ModelSpec(**{**values, **extra})


def show_default(value: Any) -> str:
    """A default as the command line spells it: lists comma-separated, tuples too."""
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, vals in value.items() for v in (vals if isinstance(vals, list) else [vals]))
    if isinstance(value, (list, tuple)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class HelpFormatter(argparse.HelpFormatter):
    """Append ``(default: X)`` to every option whose help does not state its default; metavars from the flag."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or action.required or default is None
                or default is argparse.SUPPRESS or isinstance(default, bool) or action.nargs == 0):
            return text
        return f"{text} (default: {show_default(default).replace('%', '%%')})".strip()

    def _get_default_metavar_for_optional(self, action: argparse.Action) -> str:
        return max(action.option_strings, key=len).lstrip("-").replace("-", "_").upper()


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of an option: stores into the new option's dest and says which name to use."""

    def __init__(self, option_strings, dest, new: str = "", convert: Callable[[Any], Any] | None = None, **kwargs):
        self.new, self.convert = new, convert
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        log.warning("%s is deprecated; use %s", option_string, self.new)
        setattr(namespace, self.dest, self.convert(values) if self.convert else values)


def add_alias(parser: argparse.ArgumentParser, old: str, new: str, dest: str, type: Callable = str,
              convert: Callable[[Any], Any] | None = None) -> None:
    """Keep ``old`` working (hidden) as a deprecated spelling of ``new``."""
    parser.add_argument(old, dest=dest, type=type, action=DeprecatedAlias, new=new, convert=convert)


def fraction(value: str) -> float:
    try:
        f = float(value)
    except ValueError:
        f = float("nan")
    if not 0.0 <= f <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {value!r}")
    return f


# name -> (flags, argparse keywords); the default comes from the command's config class
_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "data_root": (("--data-root",), dict(type=Path, metavar="DATA", help="seed-layout dataset (img_dir/, ann_dir/)")),
    "weights": (("--weights",), dict(type=Path, metavar="PTH",
                                     help="a dunemap checkpoint or a published MADS state_dict")),
    "text_embeddings": (("--text-embeddings",), dict(type=Path, metavar="NPY",
                                                     help="(K, D) .npy of class text embeddings; needed only for a "
                                                          "published MADS state_dict (default: the checkpoint's own)")),
    "catalog": (("--catalog",), dict(type=Path, metavar="FILE",
                                     help="class catalog (.yaml/.toml; default: the packaged 10 dune classes)")),
    "replace_text": (("--replace-text",), dict(action="store_true",
                                               help="let --text-embeddings replace the class text a dunemap "
                                                    "checkpoint carries (without it, other rows are an error)")),
    "model": (("--model",), dict(metavar="ARCH", help="architecture")),
    "in_channels": (("--bands",), dict(type=int, metavar="N", help="bands of every image (AEF: 64)")),
    "batch_size": (("--batch-size",), dict(type=int, metavar="N", help="samples per batch")),
    "epochs": (("--epochs",), dict(type=int, metavar="N", help="training epochs")),
    "lr": (("--lr",), dict(type=float, help="AdamW learning rate")),
    "seed": (("--seed",), dict(type=int, help="random seed; the same seed gives the same result")),
    "regions": (("--regions",), dict(type=csv_list, metavar="A,B,...",
                                     help="only tiles of these regions (comma-separated, from manifest.csv)")),
    "holdout_regions": (("--holdout-region",), dict(type=csv_list, metavar="A,B,...",
                                                    help="leave these regions out (comma-separated; "
                                                         "leave-one-region-out)")),
    "tile": (("--tile",), dict(type=int, metavar="PX", help="tile side in pixels")),
    "block_tiles": (("--block-tiles",), dict(type=int, metavar="TILES",
                                             help="side of a spatial block in tiles; whole blocks go to one split")),
    "split": (("--split",), dict(metavar="TRAIN,VAL,TEST", help="fractions of tiles per split")),
    "min_valid": (("--min-valid",), dict(type=fraction, metavar="FRAC",
                                         help="skip tiles with a smaller fraction of valid, labelled pixels")),
    "patches": (("--patches",), dict(type=Path, metavar="FILE",
                                     help="labelling patches (e.g. from dunemap suggest): one --tile tile around each "
                                          "patch, labels only inside it (unlabelled patch pixels are ignored), every "
                                          "tile in the train split (default: none: tiles over the whole image)")),
    "scene_size": (("--scene-size",), dict(type=int, metavar="PX", help="synthetic scene side in pixels")),
    "scenes_per_region": (("--scenes-per-region",), dict(type=int, metavar="N", help="synthetic scenes per region")),
    "region_px": (("--region-px",), dict(type=float, metavar="PX",
                                         help="typical width of one landform region in pixels")),
    "embedding_seed": (("--embedding-seed",), dict(type=int, metavar="N",
                                                   help="seed of the frozen embedding model (default: the one every "
                                                        "synthetic dataset uses); another seed shows the same ground "
                                                        "through a model no network here was trained on")),
    "encoder": (("--encoder",), dict(metavar="NAME", help="text encoder of the catalog: minilm or st:DIR")),
    "device": (("--device",), dict(help="auto, cpu, cuda or cuda:N")),
    "precision": (("--precision",), dict(choices=("auto", "fp32", "bf16"),
                                         help="auto: bf16 autocast where the CPU/GPU supports it natively, else fp32")),
    "threads": (("--threads",), dict(type=int, metavar="N", help="torch CPU threads (default: torch's choice)")),
}


def add(parser: argparse.ArgumentParser, name: str, source: type | Callable | None = None, *,
        field: str | None = None, **overrides: Any) -> argparse.Action:
    """Add the registered option ``name``; its default is ``source``'s (a dataclass or function) field ``field or name``."""
    flags, kwargs = _OPTIONS[name]
    kwargs = {**kwargs, **overrides}
    kwargs.setdefault("dest", name)
    if source is not None and "default" not in overrides and not kwargs.get("required"):
        key = field or name
        if not _has_field(source, key):
            raise KeyError(f"{getattr(source, '__name__', source)} has no field {key!r}")
        kwargs["default"] = defaults_of(source).get(key)  # a field without a default: the option has none
    return parser.add_argument(*flags, **kwargs)


def add_precision_device(parser: argparse.ArgumentParser, source: type | Callable | None = None, *,
                         precision: str | None = None) -> None:
    """``--precision`` and ``--device``, with ``source``'s defaults where it has them, else :class:`ModelSpec`'s
    (auto and auto); ``precision`` replaces the precision default (evaluation's exact fp32)."""
    from dunemap.runtime.spec import ModelSpec  # deferred: dunemap.runtime imports torch

    defaults = {**defaults_of(ModelSpec), **(defaults_of(source) if source is not None else {})}
    add(parser, "precision", default=precision or defaults["precision"])
    add(parser, "device", default=defaults["device"])


def add_windows(parser: argparse.ArgumentParser) -> None:
    """``--window`` and ``--stride`` of mapping, with MapConfig's defaults (0: from the checkpoint)."""
    from dunemap.mapping.config import FALLBACK_WINDOW, MapConfig  # deferred: options stay free of the pipelines

    d = MapConfig()
    parser.add_argument("--window", type=int, default=d.window, metavar="PX",
                        help="window side in pixels; 0 = the tile size the model was trained on (checkpoints that "
                             f"record none: {FALLBACK_WINDOW})")
    parser.add_argument("--stride", type=int, default=d.stride, metavar="PX",
                        help="step between windows in pixels; 0 = from the window, so that every pixel lies at least "
                             "min(64, window / 4) px inside a window (docs/quality.md)")


def add_maps(parser: argparse.ArgumentParser, as_one: str) -> None:
    """The MAP positional of a product command: one class map, or several, or a zone set of ``map --index``
    (its folder or catalog.json); ``as_one`` ends the help, saying what the command makes of several."""
    parser.add_argument("map", type=Path, nargs="+", metavar="MAP",
                        help="class map (uint8 GeoTIFF, 255 = nodata); several maps, or a zone set of map --index (its "
                             f"folder or catalog.json), {as_one}")


def add_backend(parser: argparse.ArgumentParser) -> None:
    """``--backend`` (with ``--backend-agreement`` and ``--remeasure``) of mapping, with MapConfig's defaults."""
    from dunemap.mapping.config import BACKEND_NAMES, MapConfig  # deferred: options stay free of the pipelines

    d = MapConfig()
    parser.add_argument("--backend", default=d.backend, choices=BACKEND_NAMES,
                        help="what runs the model: torch; onnxruntime or openvino (fp32, openvino-bf16 on CPUs "
                             "with native bf16, or -int8 calibrated on windows of the raster) from an ONNX export "
                             "cached in ~/.cache/dunemap/exports; auto "
                             "times the installed ones on the raster and takes the fastest whose classes agree "
                             "with fp32 torch on --backend-agreement of the pixels (docs/mapping.md)")
    parser.add_argument("--backend-agreement", type=fraction, default=d.backend_agreement, metavar="FRAC",
                        help="the least share of pixels a backend must classify as fp32 torch does to be chosen "
                             "by --backend auto")
    parser.add_argument("--remeasure", action="store_true", default=d.remeasure,
                        help="--backend auto times every backend again instead of reusing the times it measured "
                             "on this machine with the same model and settings (kept in ~/.cache/dunemap/auto; "
                             "its agreement is checked on each raster)")


def add_overwrite(parser: argparse.ArgumentParser, what: str = "an existing output") -> None:
    """``--overwrite``: the one flag that lets a command replace what an earlier run wrote."""
    parser.add_argument("--overwrite", action="store_true", help=f"replace {what}")


def add_no_progress(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (also off by itself when stderr is not a terminal)."""
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="hide progress bars (they are hidden anyway when stderr is not a terminal)")


def add_quiet(parser: argparse.ArgumentParser, default: Any = False) -> None:
    """``-q/--quiet``: warnings and errors only, no progress bars; results still go to stdout."""
    parser.add_argument("-q", "--quiet", action="store_true", default=default,
                        help="log only warnings and errors and hide progress bars; results still go to stdout")


def add_verbose(parser: argparse.ArgumentParser, default: Any = False) -> None:
    """``-v/--verbose``: debug messages, before or after the command."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="log debug messages")


def add_replace_text(parser: argparse.ArgumentParser) -> None:
    from dunemap.runtime.spec import ModelSpec  # deferred: dunemap.runtime imports torch

    add(parser, "replace_text", ModelSpec)
