"""Report pairs: ``--out`` names the JSON or the CSV, the twin goes beside it, in ``stats`` and ``accuracy`` alike."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely
from affine import Affine
from products_helpers import write_class_map

from dunemap.cli import main
from dunemap.errors import InputError
from dunemap.io.reports import report_paths

ORIGIN = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 3_300_000.0)


def _dunemap(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dunemap", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_report_paths_follow_the_extension() -> None:
    assert report_paths("a/areas.json") == (Path("a/areas.json"), Path("a/areas.csv"))
    assert report_paths("a/areas.CSV") == (Path("a/areas.json"), Path("a/areas.CSV").with_suffix(".csv"))
    with pytest.raises(InputError, match=r"areas\.txt: a report is a JSON file and a CSV table"):
        report_paths("areas.txt")


@pytest.mark.parametrize("name", ["areas.json", "areas.csv"])
def test_stats_and_accuracy_write_the_pair_the_out_names(tmp_path: Path, name: str, capsys) -> None:
    classes = np.zeros((20, 30), np.uint8)
    classes[:, 15:] = 2
    mapped = write_class_map(tmp_path / "m.tif", classes, "EPSG:32633", ORIGIN)
    proc = _dunemap("stats", mapped, "--out", tmp_path / name)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "areas.json").read_text())  # JSON in the .json file, whichever was named
    with open(tmp_path / "areas.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert {c["id"]: c["pixels"] for c in record["zones"][0]["classes"]}[2] == 300
    assert {int(r["class_id"]): int(r["pixels"]) for r in table}[2] == 300

    # one point per pixel centre of two columns, labelled as the map says: user's accuracy 1 for both classes
    xs = 500_000 + 10 * np.array([2, 20]) + 5.0
    points = tmp_path / "points.gpkg"
    pyogrio.raw.write(points, np.array(shapely.to_wkb(shapely.points(np.repeat(xs, 4), 3_300_000 - 5.0 - 10 *
                                                                     np.tile(np.arange(4), 2))), dtype=object),
                      [np.array([0] * 4 + [2] * 4, np.int32)], ["ref_class"], crs="EPSG:32633", driver="GPKG",
                      geometry_type="Point")
    report = tmp_path / name.replace("areas", "acc")
    proc = _dunemap("accuracy", mapped, "--reference", points, "--out", report)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(report.with_suffix(".json").read_text())["overall_accuracy"]["estimate"] == pytest.approx(1.0)
    with open(report.with_suffix(".csv"), newline="") as fh:
        assert {int(r["id"]) for r in csv.DictReader(fh)} >= {0, 2}

    capsys.readouterr()  # the pair is claimed as a whole (through main in this process: stats ran as a process above)
    assert main(["stats", str(mapped), "--out", str(tmp_path / "areas.json")]) == 1
    assert "already exists; pass --overwrite" in capsys.readouterr().err
