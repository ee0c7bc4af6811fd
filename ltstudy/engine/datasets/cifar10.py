"""CIFAR-10 32x32x3: torchvision's python batches from --data-dir (any complete local copy)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..errors import DataError
from .idx import torchvision_fetch
from .pixels import unit_float


def load(cfg: DataConfig):
    from torchvision.datasets import CIFAR10

    class LocalCIFAR10(CIFAR10):
        # torchvision checks MD5s of the official files; accept any complete local copy
        # (a corrupt one fails below when unpickled).
        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            names = [name for name, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all((base / name).is_file() for name in names)

        def _load_meta(self) -> None:
            # torchvision's version MD5-checks batches.meta too, rejecting any non-official copy.
            with (Path(self.root) / self.base_folder / self.meta["filename"]).open("rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    root = Path(cfg.root)
    if cfg.download:
        torchvision_fetch(CIFAR10, root, "cifar10")
    try:
        train, test = LocalCIFAR10(str(root), train=True), LocalCIFAR10(str(root), train=False)
    except RuntimeError:
        raise DataError(f"cifar10: no CIFAR-10 python batches in {root / 'cifar-10-batches-py'}; extract "
                        "cifar-10-python.tar.gz into --data-dir or pass --download (needs internet)") from None
    except Exception as exc:  # unpickling a damaged file raises many types
        raise DataError(f"cifar10: cannot read {root / 'cifar-10-batches-py'} ({type(exc).__name__}); "
                        "extract cifar-10-python.tar.gz again") from None

    def arrays(ds) -> tuple[np.ndarray, np.ndarray]:
        # (channel-first in memory too: the data path then keeps the floats as they are, with no copy)
        return unit_float(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))), np.asarray(ds.targets)

    return (*arrays(train), *arrays(test))
