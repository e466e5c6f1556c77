"""``benchmark speed --out DIR`` follows the output policy: an earlier speed.json/speed.md needs --overwrite."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from safety_helpers import assert_one_line_error, hashes, run_cli

from dunemap.cli import main

SPEED = ["benchmark", "speed", "--models", "mit_tiny", "--sizes", "32", "--extra-sizes", "", "--precisions", "fp32",
         "--modes", "forward", "--batch-size", "1", "--warmup", "0", "--iters", "1", "--threads", "1",
         "--no-progress", "--no-benchmarks-md"]


def _in_process(capsys, *argv) -> subprocess.CompletedProcess:
    """The command through the CLI's entry point in this process, its exit status and output as a process's."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    printed = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, printed.out, printed.err)


def test_benchmark_speed_refuses_to_replace_an_earlier_result_without_overwrite(tmp_path: Path, capsys) -> None:
    # real processes make and replace the result; the two refusals go through the same entry point in this process
    out = tmp_path / "speed"
    first = run_cli(*SPEED, "--out", out)
    assert first.returncode == 0, first.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["speed.json", "speed.md"]
    before = hashes(out)

    again = _in_process(capsys, *SPEED, "--out", out)
    assert_one_line_error(again, rf"{out / 'speed'}\.(json|md): already exists; pass --overwrite")
    assert hashes(out) == before  # nothing replaced, nothing left beside them

    (out / "speed.md").unlink()  # half an earlier set is still an earlier result
    assert_one_line_error(_in_process(capsys, *SPEED, "--out", out), r"speed\.json: already exists")

    replaced = run_cli(*SPEED, "--out", out, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["speed.json", "speed.md"]
    assert json.loads((out / "speed.json").read_text())["rows"][0]["model"] == "mit_tiny"
