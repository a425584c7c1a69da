"""MNIST's IDX files in <data_dir>/MNIST/raw, checked before torchvision reads them.

A user's .gz files are unpacked here (torchvision reads only the unpacked ones); a damaged file, packed or
unpacked, is named with what is wrong (expected N bytes, found M), and an unpacked file left damaged by an
earlier attempt is unpacked again from a good .gz instead of failing forever.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

from cep.errors import DataError
from cep.reading import ReadRefused, open_limited

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
MAX_IDX_BYTES = 16 + 100_000 * 28 * 28  # more images than MNIST has (60,000)
_FIX = "delete it to download MNIST again, or replace it with a good copy"


def idx_problem(path: Path) -> str:
    """What is wrong with an unpacked IDX file of MNIST ("" when it is well formed); ReadRefused when it is
    not a regular file or too large."""
    with open_limited(path, MAX_IDX_BYTES, "MNIST file") as f:
        head, size = f.read(16), os.fstat(f.fileno()).st_size
    return _header_problem(head, size, images="images" in path.name)


def _header_problem(head: bytes, size: int, images: bool) -> str:
    dims = 3 if images else 1
    if size == 0:
        return "it is empty (0 bytes)"
    if len(head) < 4 + 4 * dims or head[:3] != b"\x00\x00\x08" or head[3] != dims:
        return f"not an IDX file of {'images' if images else 'labels'} ({size:,} bytes, header {head[:4].hex()})"
    shape = struct.unpack(f">{dims}I", head[4:4 + 4 * dims])
    if images and shape[1:] != (28, 28):
        return f"images of {shape[1]}x{shape[2]} pixels, not 28x28"
    expected = 4 + 4 * dims + math.prod(shape)
    if size != expected:
        what = f"{shape[0]:,} {'images of 28x28' if images else 'labels'}"
        return f"expected {expected:,} bytes for {what}, found {size:,} (truncated or damaged)"
    return ""


def prepare_raw(raw: Path) -> None:
    """Unpack the .gz files placed in `raw` and check every MNIST file there; a damaged one is a DataError."""
    for name in MNIST_FILES:
        packed, target = raw / f"{name}.gz", raw / name
        try:
            problem = idx_problem(target) if target.exists() else "missing"
        except ReadRefused as e:
            raise DataError(f"{e}; {_FIX}") from None
        if problem and packed.exists():  # missing, or left damaged by an earlier attempt: unpack it (again)
            _unpack(packed, target)
        elif problem and problem != "missing":
            raise DataError(f"{target} is damaged: {problem}; {_FIX}")


def _unpack(packed: Path, target: Path) -> None:
    """Unpack `packed` to `target` atomically, at most MAX_IDX_BYTES; a damaged .gz is a DataError."""
    try:
        with open_limited(packed, MAX_IDX_BYTES, "MNIST download") as f, gzip.GzipFile(fileobj=f) as z:
            data = z.read(MAX_IDX_BYTES + 1)
    except ReadRefused as e:
        raise DataError(f"{e}; {_FIX}") from None
    except (OSError, EOFError, zlib.error) as e:  # truncated download, not gzip at all
        raise DataError(f"{packed} is damaged ({type(e).__name__}: {e}); {_FIX}") from None
    if len(data) > MAX_IDX_BYTES:
        raise DataError(f"{packed} unpacks to more than {MAX_IDX_BYTES:,} bytes, more than MNIST has; {_FIX}")
    problem = _header_problem(data[:16], len(data), images="images" in target.name)
    if problem:
        raise DataError(f"{packed} is damaged: unpacked, {problem}; {_FIX}")
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(target)
    except OSError as e:
        raise DataError(f"{target}: cannot unpack {packed.name} there ({e.strerror or e}); free space or "
                        "make the folder writable") from None
    finally:
        tmp.unlink(missing_ok=True)
