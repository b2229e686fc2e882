"""Reader for the IDX format of MNIST and Fashion-MNIST (gzipped or not).

The format is tiny, so reading it ourselves avoids torchvision's md5 checks
(which small test files cannot pass) and gives a DataError, not a struct
traceback, when a file is truncated.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from fedunlearn.common.data.sources import corrupt_file_error

__all__ = ["read_idx"]

# IDX type byte -> element type; data is big-endian on disk.
_IDX_TYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: Path) -> np.ndarray:
    """Return the array stored in an IDX file (``.gz`` is decompressed), in native byte order."""
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise corrupt_file_error(path, "it does not start with an IDX header")
    dtype = np.dtype(_IDX_TYPES[data[2]])
    ndim = data[3]
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise corrupt_file_error(path, "its IDX header is cut short")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header_end + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise corrupt_file_error(
            path, f"the header promises shape {shape} ({expected} bytes) but the file has {len(data)} bytes"
        )
    flat = np.frombuffer(data, dtype=dtype, offset=header_end)
    return flat.reshape(shape).astype(dtype.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    """Whole file contents; a broken gzip stream is a DataError like any other corruption."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                return stream.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise corrupt_file_error(path, str(exc)) from exc
