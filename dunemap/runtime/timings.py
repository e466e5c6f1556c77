"""The seconds per window ``auto`` measured on this machine, kept for the runs after it.

Measuring every candidate costs a map seconds: each exported backend is timed in a child that starts, compiles the
export and runs a warm-up and two timed passes (MiT-b2 at 512 px on 2 cores: about 8 s, BENCHMARKS.md). A backend's
speed belongs to the machine, the model and the settings, not to the raster being mapped, so :func:`remember` keeps
what was measured in ``cache_root()/auto``, one small JSON file per :func:`timing_key`. The key holds everything the
speed depends on: the checkpoint's SHA-256, the window, the batch of a call, the torch threads (and with them the
streams), the runners' version, the input the exports are fed, the candidates, the CPU's model and speed flags, and
the packages' versions.

Agreement with fp32 torch is never kept: it belongs to the raster. A later run with the same key
(:func:`dunemap.runtime.select.select_backend`) checks the fastest kept candidate on a window of its own raster, and
measures every candidate again when that one falls below the bar. A file that cannot be read as a record is measured
over and replaced; a cache that cannot be written costs only the next run's measuring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from dunemap.io.atomic import atomic_path
from dunemap.runtime.device import cpu_info
from dunemap.runtime.engines import RUNNERS_VERSION
from dunemap.runtime.export import EXPORT_GRAPH, cache_root

log = logging.getLogger(__name__)

TIMINGS_FORMAT = 1  # raised when a record's meaning changes: records of another format are measured over
PACKAGES = ("torch", "onnxruntime", "openvino")  # the versions a backend's speed depends on


@dataclass(frozen=True)
class Recorded:
    """What an earlier run measured under one key: seconds per window by backend name (``torch`` in its
    precision), the raster it measured on and when, and the file holding it."""

    seconds: dict[str, float]
    source: str
    when: str
    path: Path

    def ranked(self) -> list[str]:
        """The backends measured, the fastest first (ties by name)."""
        return sorted(self.seconds, key=lambda name: (self.seconds[name], name))

    def fastest(self) -> str:
        return self.ranked()[0]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def timing_key(**settings) -> dict:
    """The key of a measurement: ``settings`` (checkpoint, window, batch, threads, input, candidates) with the
    export's graph and the runners' versions, this machine's CPU and the versions of the packages that run the
    backends."""
    return {"format": TIMINGS_FORMAT, "graph": EXPORT_GRAPH, "runners": RUNNERS_VERSION, **settings, "cpu": cpu_info(),
            "packages": {p: _version(p) for p in PACKAGES}}


def timings_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    return cache_root() / "auto" / f"timings_{digest}.json"


def recall(key: dict) -> Recorded | None:
    """What was measured under ``key``, or None: never measured, or a file that is not such a record (logged; the
    candidates are measured again and the file replaced)."""
    path = timings_path(key)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if record["key"] != json.loads(json.dumps(key)):
            raise ValueError("its key is not this run's")
        seconds = {str(name): float(s) for name, s in record["seconds"].items()}
        if not seconds or not all(s > 0 for s in seconds.values()):
            raise ValueError("no positive seconds per window")
        if not set(seconds) <= {"torch", *key.get("candidates", ())}:
            raise ValueError(f"backends that are not candidates: {sorted(set(seconds) - set(key['candidates']))}")
        return Recorded(seconds, str(record["source"]), str(record["when"]), path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        log.warning("backend auto: %s is not a record of timings (%s); measuring again", path, exc)
        return None


def remember(key: dict, seconds: dict[str, float], source: str) -> Path | None:
    """Keep ``seconds`` per window by backend name, measured on ``source``, under ``key`` (written whole under a
    temporary name, then renamed: :func:`dunemap.io.atomic.atomic_path`); the path, or None where the cache cannot
    be written (logged)."""
    path = timings_path(key)
    record = {"key": key, "seconds": seconds, "source": source, "when": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    try:
        with atomic_path(path, suffix="") as tmp:  # its temporary name ends in .tmp
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    except OSError as exc:  # a full disk too (NoSpaceError is one)
        log.info("backend auto: could not keep the timings for later runs (%s)", exc)
        return None
    return path


__all__ = ["PACKAGES", "TIMINGS_FORMAT", "Recorded", "recall", "remember", "timing_key", "timings_path"]
