"""Fashion-MNIST 28x28: IDX files from --data-dir, or Debian's `dataset-fashion-mnist` package."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from ..errors import DataError
from . import idx

SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's package puts the files


def load(cfg: DataConfig):
    root = Path(cfg.root)
    dirs = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", SYSTEM_DIR]
    files = idx.find(dirs)
    if files is None and cfg.download:
        from torchvision.datasets import FashionMNIST

        idx.torchvision_fetch(FashionMNIST, root, "fashion-mnist")
        files = idx.find([root / "FashionMNIST" / "raw"])
    if files is None:
        raise DataError(f"fashion-mnist: no IDX files in {', '.join(map(str, dirs))}; install them with "
                        "`apt-get install dataset-fashion-mnist`, copy them into --data-dir, or pass --download")
    return idx.arrays(files)
