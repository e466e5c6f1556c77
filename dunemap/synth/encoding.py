"""On-disk encodings of embedding rasters: float32 with NaN nodata, or AEF int8 with -128 nodata.

Kept free of heavy imports so that the CLI can offer the registry's keys as choices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dunemap.io.aef import quantize

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class EmbeddingEncoding:
    """How (64, H, W) unit-vector embeddings are stored in a GeoTIFF."""

    dtype: str  # GDAL / numpy data type name
    nodata: float

    def encode(self, embedding: "np.ndarray", valid: "np.ndarray") -> "np.ndarray":
        """The stored array: nodata pixels (``valid`` False) become NaN or -128."""
        import numpy as np

        if self.dtype == "int8":
            return quantize(embedding, valid)
        out = np.array(embedding, dtype=np.float32, copy=True)
        out[:, ~np.asarray(valid, dtype=bool)] = np.nan
        return out


ENCODINGS: dict[str, EmbeddingEncoding] = {
    "float32": EmbeddingEncoding("float32", float("nan")),
    "int8": EmbeddingEncoding("int8", -128.0),
}
