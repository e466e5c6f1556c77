"""Reports as a pair of files: a JSON record and a CSV table beside it, written one way by every command.

``--out`` names the report; its extension (``.json`` or ``.csv``) says which of the two files it names,
and the other goes beside it under the same name. The pair is published as one set, the JSON last.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from dunemap.errors import InputError
from dunemap.io.outputs import check_outputs, claim_outputs, staged_outputs

REPORT_SUFFIXES = (".json", ".csv")


def report_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """The (JSON, CSV) paths of the report ``out`` names; any other extension is refused in one line."""
    out = Path(out)
    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise InputError(f"{out}: a report is a JSON file and a CSV table beside it; give a name ending in .json "
                         "or .csv")
    return out.with_suffix(".json"), out.with_suffix(".csv")


@contextlib.contextmanager
def claimed_report(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                   overwrite: bool = False) -> Iterator[tuple[Path, Path]]:
    """Claim the report pair ``out`` names (:func:`dunemap.io.outputs.claim_outputs`) for the block; yields it.

    An ``out`` that is one of the inputs is refused as such before its extension is looked at.
    """
    inputs = list(inputs)
    check_outputs([out], inputs, overwrite=True)
    paths = report_paths(out)
    with claim_outputs(paths, inputs, overwrite=overwrite):
        yield paths


def write_report(out: str | os.PathLike, record: dict[str, Any], columns: Sequence[str],
                 rows: Iterable[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``record`` as JSON and ``rows`` (dicts with ``columns``) as CSV, as one set; returns (JSON, CSV)."""
    json_path, csv_path = report_paths(out)
    with staged_outputs(csv_path, json_path) as (tmp_csv, tmp_json):
        with open(tmp_csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        tmp_json.write_text(json.dumps(record, indent=2) + "\n")
    return json_path, csv_path
