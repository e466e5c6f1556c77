"""AEF-format archives for tests: int8 COG tiles stored bottom-up, their GeoParquet index, and a loopback HTTP server
that honours Range requests (and can fail some of them)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.warp import transform_bounds

RES = 10.0  # metres per pixel, as the public archive


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single byte-range support (206 responses); counts the bytes sent per file.

    With ``fail_every`` N > 0, every N-th GET is answered 503 (a transient error GDAL retries).
    """

    def __init__(self, *args, served: dict, lock: threading.Lock, fail_every: int = 0, **kwargs):
        self.served, self.lock, self.fail_every = served, lock, fail_every
        super().__init__(*args, **kwargs)

    def log_message(self, format, *args):  # keep test output quiet
        return

    def _target(self) -> Path | None:
        path = Path(self.translate_path(self.path))
        return path if path.is_file() else None

    def do_HEAD(self):
        path = self._target()
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        if self.fail_every:
            with self.lock:
                self.served["_gets"] = n = self.served.get("_gets", 0) + 1
                if n % self.fail_every == 0:
                    self.served["_failed"] = self.served.get("_failed", 0) + 1
            if n % self.fail_every == 0:
                self.send_error(503)
                return
        path = self._target()
        if path is None:
            self.send_error(404)
            return
        size = path.stat().st_size
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", (self.headers.get("Range") or "").strip())
        if m and (m.group(1) or m.group(2)):
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start, end = max(size - int(m.group(2)), 0), size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            with open(path, "rb") as f:  # only the range: archives of large tiles are served too
                f.seek(start)
                body = f.read(end + 1 - start)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            body = path.read_bytes()
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)
        with self.lock:
            self.served[path.name] = self.served.get(path.name, 0) + len(body)
            self.served.setdefault("_status", []).append(206 if len(body) < size else 200)


@contextlib.contextmanager
def serve(root: Path, fail_every: int = 0) -> Iterator[tuple[str, dict]]:
    """Serve ``root`` on 127.0.0.1 (a free port) while the block runs; yields (base URL, bytes-served dict)."""
    served: dict = {}
    handler = functools.partial(RangeHandler, directory=str(root), served=served, lock=threading.Lock(),
                                fail_every=fail_every)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_int8_cog(path: Path, q: np.ndarray, epsg: int, x0: float, y_bottom: float, blocksize: int = 128) -> Path:
    """Write int8 codes ``q`` (bands, H, W; row 0 = the southern edge) as an AEF COG stored bottom-up (positive y
    pixel size), -128 nodata, its south-west corner at (x0, y_bottom) in EPSG ``epsg``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bands, height, width = q.shape
    with rasterio.open(path, "w", driver="COG", width=width, height=height, count=bands, dtype="int8", nodata=-128,
                       crs=f"EPSG:{epsg}", transform=Affine(RES, 0, x0, 0, RES, y_bottom), blocksize=blocksize,
                       compress="deflate") as ds:
        ds.write(q)
    return path


def index_row(rel_path: str, epsg: int, x0: float, y_bottom: float, year: int, size: int) -> dict:
    """One row of an AEF GeoParquet index for a ``size``-pixel tile with south-west corner (x0, y_bottom)."""
    w, s, e, n = transform_bounds(f"EPSG:{epsg}", "EPSG:4326", x0, y_bottom, x0 + size * RES, y_bottom + size * RES)
    return {"path": rel_path, "year": year, "crs": f"EPSG:{epsg}",
            "utm_zone": f"{epsg % 100}{'N' if epsg < 32700 else 'S'}", "wgs84_west": w, "wgs84_south": s,
            "wgs84_east": e, "wgs84_north": n, "geometry": shapely.to_wkb(shapely.box(w, s, e, n))}
