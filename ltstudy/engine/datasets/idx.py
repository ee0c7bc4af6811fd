"""IDX files (MNIST, Fashion-MNIST): reading them, finding the four of a dataset, and torchvision's fetch."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ..errors import DataError
from .pixels import unit_float

READ_CHUNK = 1 << 20  # bytes decompressed per read
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or .gz) into a numpy array.

    The data is decompressed straight into the array, a chunk at a time: no bytes object of the whole file is
    held beside it (reading Fashion-MNIST's training images whole held two 47 MB copies at once).
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            zero, dtype_code, ndim = struct.unpack(">HBB", fh.read(4))
            if zero != 0 or dtype_code != 0x08:
                raise ValueError("not an unsigned-byte IDX file")
            shape = struct.unpack(f">{ndim}I", fh.read(4 * ndim))
            data = np.empty(shape, dtype=np.uint8)
            flat, got = memoryview(data.reshape(-1)), 0
            while got < data.size and (n := fh.readinto(flat[got:got + READ_CHUNK])):
                got += n
            if got != data.size or fh.read(1):
                raise ValueError(f"the header says {data.size} data bytes, the file holds "
                                 f"{got if got < data.size else 'more'}")
        return data
    except (OSError, ValueError, MemoryError, struct.error, EOFError) as exc:
        raise DataError(f"{path} is not a readable IDX file ({exc}); delete it and fetch it again") from None


def find(dirs: list[Path]) -> list[Path] | None:
    """The four files (plain or .gz) from the first folder that has all of them."""
    for d in dirs:
        found = []
        for stem in FILES:
            match = next((d / f"{stem}{ext}" for ext in ("", ".gz") if (d / f"{stem}{ext}").is_file()), None)
            if match is None:
                break
            found.append(match)
        else:
            return found
    return None


def arrays(files: list[Path]):
    """The four files as (train_x, train_y, test_x, test_y), images scaled to [0, 1] with one channel."""
    tx, ty, sx, sy = (read_idx(f) for f in files)
    if len(tx) != len(ty) or len(sx) != len(sy):
        raise DataError(f"{files[0].parent}: image and label counts differ; the IDX files are incomplete")
    return unit_float(tx[:, None]), ty, unit_float(sx[:, None]), sy


def torchvision_fetch(cls, root: Path, name: str) -> None:
    """Download a dataset with torchvision (only with --download: the machine may be offline)."""
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataError(f"{name}: download into {root} failed ({type(exc).__name__}: {str(exc)[:120]}); "
                        "fetch the files by hand into --data-dir") from None
