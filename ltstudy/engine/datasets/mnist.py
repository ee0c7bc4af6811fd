"""MNIST 28x28: the four IDX files from --data-dir (downloaded by torchvision only with --download)."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from . import idx


def load(cfg: DataConfig):
    root = Path(cfg.root)
    files = idx.find([root / "MNIST" / "raw", root / "mnist", root])
    if files is None:
        if not cfg.download:
            raise DataError(f"mnist: no IDX files in {root / 'MNIST' / 'raw'}, {root / 'mnist'} or {root}; copy the "
                            "four MNIST files there or pass --download (needs internet)")
        from torchvision.datasets import MNIST

        idx.torchvision_fetch(MNIST, root, "mnist")
        files = idx.find([root / "MNIST" / "raw"])
    return idx.arrays(files)
