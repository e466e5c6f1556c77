"""Helpers of the safety tests: run the real CLI in subprocesses, hash files, write small real inputs.

Starting Python and importing torch costs seconds per process, which a matrix of dozens of cases
cannot afford on two cores. :class:`CliServer` pays it once: a helper process imports dunemap's
heavy dependencies (running nothing else) and, for each case, forks a fresh child that runs
``python -m dunemap ARGV`` exactly as the interpreter would (``runpy``; an uncaught exception prints
its traceback and exits 1), with its own stdout/stderr files and exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from scipy import ndimage

from recompute import hashes  # noqa: F401  (the safety tests' file hashes)

REPO = Path(__file__).resolve().parents[2]
TRANSFORM = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 7_000_000.0)
CRS = "EPSG:32733"
BANDS = 16


def run_cli(*argv: str, timeout: float = 240, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """``python -m dunemap ARGV`` in a fresh process (this worktree first on the path), started through
    ``prefix`` (e.g. a ``setpriv`` command line) when given."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([*prefix, sys.executable, "-m", "dunemap", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


# Root ignores file permissions through these capabilities; without them it is held to the mode bits like a user.
PERMISSION_CAPS = "-dac_override,-dac_read_search,-fowner,-linux_immutable"


def permission_bound_prefix() -> tuple[str, ...]:
    """A command prefix under which this user is held to file permissions: none for a user; for root,
    ``setpriv`` dropping the capabilities that override them (kept out of the bounding and inheritable sets,
    so no program it starts gets them back)."""
    if os.geteuid() != 0:
        return ()
    return ("setpriv", f"--bounding-set={PERMISSION_CAPS}", f"--inh-caps={PERMISSION_CAPS}", "--")


SERVER = r"""
import json, os, runpy, sys, traceback
import numpy, rasterio, torch, pyogrio, dunemap.cli  # heavy imports once; no torch op runs before a fork
for line in sys.stdin:
    req = json.loads(line)
    pid = os.fork()
    if pid == 0:
        for fd, name in ((1, req["stdout"]), (2, req["stderr"])):
            os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.chdir(req["cwd"])
        sys.argv = ["dunemap", *req["argv"]]
        code = 0
        try:
            runpy.run_module("dunemap", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class CliServer:
    """Run ``python -m dunemap ARGV`` in forked children of one pre-imported helper process."""

    def __init__(self, scratch: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.scratch = scratch
        self.count = 0
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=REPO)

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        import json

        self.count += 1
        out, err = self.scratch / f"{self.count}.out", self.scratch / f"{self.count}.err"
        self.proc.stdin.write(json.dumps({"argv": [str(a) for a in argv], "stdout": str(out), "stderr": str(err),
                                          "cwd": str(REPO)}) + "\n")
        self.proc.stdin.flush()
        code = json.loads(self.proc.stdout.readline())["code"]
        return subprocess.CompletedProcess(argv, code, out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


def assert_one_line_error(proc: subprocess.CompletedProcess, pattern: str) -> None:
    """Exit 1, no traceback, and exactly one stderr line ``dunemap: error: ...`` matching ``pattern``."""
    import re

    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("dunemap: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert re.search(pattern, errors[0]), errors[0]


def unit_vectors(height: int, width: int, bands: int = BANDS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.standard_normal((bands, height, width)), sigma=(0, 3, 3))
    return (x / np.linalg.norm(x, axis=0, keepdims=True)).astype(np.float32)


def write_tif(path: Path, data: np.ndarray, crs: str | None = CRS, nodata: float | None = None,
              colormap: dict | None = None, tags: dict | None = None) -> Path:
    c, h, w = data.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=c, dtype=data.dtype.name, crs=crs,
                       transform=TRANSFORM, nodata=nodata) as dst:
        dst.write(data)
        if colormap:
            dst.write_colormap(1, colormap)
        if tags:
            dst.update_tags(**tags)
    return path


def write_tiny_dataset(root: Path, tiles: dict[str, int], size: int = 32, classes: int = 3) -> Path:
    """A seed-layout dataset of smooth class blobs with matching embeddings, plus its ``catalog.yaml``."""
    from dunemap.data.seed_layout import write_sample

    rng = np.random.default_rng(0)
    means = rng.standard_normal((classes, BANDS))
    for split, n in tiles.items():
        for i in range(n):
            label = ndimage.gaussian_filter(rng.standard_normal((classes, size, size)), (0, 4, 4)).argmax(0)
            image = means[label].transpose(2, 0, 1) + 0.2 * rng.standard_normal((BANDS, size, size))
            image /= np.linalg.norm(image, axis=0, keepdims=True)
            write_sample(root, split, f"{split}_{i}", image.astype(np.float32), label.astype(np.uint8))
    (root / "catalog.yaml").write_text("version: 1\nname: blobs\nclasses:\n" + "".join(
        f"  - {{id: {k}, name: c{k}, label: C{k}, color: [{60 * k}, 80, 160], description: Class {k}.}}\n"
        for k in range(classes)))
    return root
