"""Datasets as in-memory tensors on the training device (the registry is `registry.DATASETS`).

Batches are index slices of a seeded per-epoch permutation (no DataLoader):
iteration i always sees the same examples for a given seed, which is what lets
a rewound round replay the data order from iteration k.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, DataConfig
from .registry import DATASETS

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


class DataError(ConfigError):
    """Missing or unreadable data: one line saying where we looked and how to get it."""


@dataclass
class Split:
    x: torch.Tensor  # float32, (n, c, h, w), normalised
    y: torch.Tensor  # int64, (n,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    augment: bool = False
    digest: str = ""  # of the arrays actually read and the split: cache keys carry it


    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]


# A loader returns raw (train_x, train_y, test_x, test_y) as numpy arrays, x shaped (n, c, h, w).
Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load_dataset(cfg: DataConfig, device: torch.device | str = "cpu") -> Dataset:
    """Load, split, normalise and move to `device`; cached per process for studies."""
    DATASETS.get(cfg.name)  # an unknown name is one line, with a suggestion
    return _load_cached(cfg.name, cfg.root, cfg.download, cfg.val_size, cfg.split_seed, cfg.augment, str(device))


@functools.lru_cache(maxsize=4)
def _load_cached(name, root, download, val_size, split_seed, augment, device) -> Dataset:
    spec = DATASETS.get(name)
    cfg = DataConfig(name=name, root=root, download=download, val_size=val_size, split_seed=split_seed, augment=augment)
    train_x, train_y, test_x, test_y = spec.load()(cfg)
    n_val = spec.default_val_size if val_size < 0 else val_size
    if not 0 < n_val < len(train_y):
        raise ConfigError(f"data.val_size must be between 1 and {len(train_y) - 1} for {name}, got {n_val}")
    # The validation split is a seeded sample of the training split, independent of the run seed.
    digest = hashlib.blake2b(repr((n_val, split_seed)).encode(), digest_size=16)
    for a in (train_x, train_y, test_x, test_y):
        digest.update(repr((a.dtype.str, a.shape)).encode())
        digest.update(np.ascontiguousarray(a).data)
    perm = np.random.default_rng(split_seed).permutation(len(train_y))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    train_x, val_x, train_y, val_y = train_x[train_idx], train_x[val_idx], train_y[train_idx], train_y[val_idx]

    x = torch.from_numpy(np.ascontiguousarray(train_x)).float()
    mean = x.mean(dim=(0, 2, 3), keepdim=True)  # statistics of the training split only
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)

    def split(xs: np.ndarray, ys: np.ndarray) -> Split:
        xt = (torch.from_numpy(np.ascontiguousarray(xs)).float() - mean) / std
        return Split(xt.contiguous().to(device), torch.from_numpy(ys.astype(np.int64)).to(device))

    if augment and min(train_x.shape[2:]) < 8:
        raise ConfigError(f"data.augment needs images of at least 8x8; {name} is {train_x.shape[2]}x{train_x.shape[3]}")
    shape = spec.meta.get("input_shape")
    if shape is not None and tuple(train_x.shape[1:]) != tuple(shape):
        raise DataError(f"{name}: the files hold images of shape {tuple(train_x.shape[1:])}, but {name} images are "
                        f"{tuple(shape)}; point --data-dir at the real {name} files")
    return Dataset(name, split(train_x, train_y), split(val_x, val_y), split(test_x, test_y), spec.num_classes, augment,
                   digest.hexdigest())


# --------------------------------------------------------------------------- batches


class Batches:
    """Index batches for iteration i: a slice of epoch (i // per_epoch)'s seeded permutation.

    The last partial batch of an epoch is dropped, so every step sees batch_size examples.
    """

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device | str):
        self.n, self.batch_size, self.seed, self.device = n, min(batch_size, n), seed, device
        self.per_epoch = max(1, n // self.batch_size)
        self._epoch, self._perm = -1, None

    def _permute(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._epoch = torch.randperm(self.n, generator=g).to(self.device), epoch
        return self._perm

    def indices(self, iteration: int) -> torch.Tensor:
        epoch, pos = divmod(iteration, self.per_epoch)
        return self._permute(epoch)[pos * self.batch_size:(pos + 1) * self.batch_size]

    def labels(self, iteration: int, y: torch.Tensor) -> torch.Tensor:
        """`y[indices(i)]`, sliced from the epoch's permuted labels (small: one gather per epoch, not per step)."""
        epoch, pos = divmod(iteration, self.per_epoch)
        if epoch != getattr(self, "_labelled", None):
            self._y, self._labelled = y.index_select(0, self._permute(epoch)), epoch
        return self._y[pos * self.batch_size:(pos + 1) * self.batch_size]


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding of `pad`) and horizontal flip, batched on x's device."""
    b, c, h, w = x.shape
    dev = x.device
    shift = torch.randint(0, 2 * pad + 1, (2, b), generator=generator).to(dev)
    flip = torch.rand(b, generator=generator).to(dev) < 0.5
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (shift[0][:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (shift[1][:, None] + torch.arange(w, device=dev))
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    return padded[torch.arange(b, device=dev)[:, None, None, None], torch.arange(c, device=dev)[None, :, None, None],
                  rows, cols]


# --------------------------------------------------------------------------- loaders


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (images 8x8, targets), read from the package's own CSV.

    Importing sklearn.datasets costs more than a second (it imports most of
    scikit-learn); the file it reads is found without importing it. Where the
    file is not (another scikit-learn layout), its loader is used.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    data = np.loadtxt(csv, delimiter=",")  # (what sklearn's load_digits does)
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


def load_digits(cfg: DataConfig) -> Raw:
    images, y = _digits_arrays()
    x = (images / 16.0).astype(np.float32)[:, None]
    # No official test split: hold out a fixed, seeded 20%.
    perm = np.random.default_rng(12345).permutation(len(y))
    n_test = len(y) // 5
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return x[train], y[train], x[test], y[test]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or .gz) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
        if zero != 0 or dtype_code != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        return data.reshape(shape)
    except (OSError, ValueError, struct.error, EOFError) as exc:
        raise DataError(f"{path} is not a readable IDX file ({exc}); delete it and fetch it again") from None


_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _find_idx(dirs: list[Path]) -> list[Path] | None:
    for d in dirs:
        found = []
        for stem in _IDX_FILES:
            match = next((d / f"{stem}{ext}" for ext in ("", ".gz") if (d / f"{stem}{ext}").is_file()), None)
            if match is None:
                break
            found.append(match)
        else:
            return found
    return None


def _idx_raw(files: list[Path]) -> Raw:
    tx, ty, sx, sy = (read_idx(f) for f in files)
    if len(tx) != len(ty) or len(sx) != len(sy):
        raise DataError(f"{files[0].parent}: image and label counts differ; the IDX files are incomplete")
    return tx[:, None].astype(np.float32) / 255.0, ty, sx[:, None].astype(np.float32) / 255.0, sy


def load_fashion_mnist(cfg: DataConfig) -> Raw:
    root = Path(cfg.root)
    dirs = [root, root / "fashion-mnist", root / "FashionMNIST" / "raw", FASHION_SYSTEM_DIR]
    files = _find_idx(dirs)
    if files is None and cfg.download:
        from torchvision.datasets import FashionMNIST

        _torchvision_fetch(FashionMNIST, root, "fashion-mnist")
        files = _find_idx([root / "FashionMNIST" / "raw"])
    if files is None:
        raise DataError(f"fashion-mnist: no IDX files in {', '.join(map(str, dirs))}; install them with "
                        "`apt-get install dataset-fashion-mnist`, copy them into --data-dir, or pass --download")
    return _idx_raw(files)


def load_mnist(cfg: DataConfig) -> Raw:
    from torchvision.datasets import MNIST

    root = Path(cfg.root)
    files = _find_idx([root / "MNIST" / "raw", root / "mnist", root])
    if files is None:
        if not cfg.download:
            raise DataError(f"mnist: no IDX files in {root / 'MNIST' / 'raw'}, {root / 'mnist'} or {root}; copy the "
                            "four MNIST files there or pass --download (needs internet)")
        _torchvision_fetch(MNIST, root, "mnist")
        files = _find_idx([root / "MNIST" / "raw"])
    return _idx_raw(files)


def load_cifar10(cfg: DataConfig) -> Raw:
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
        _torchvision_fetch(CIFAR10, root, "cifar10")
    try:
        train, test = LocalCIFAR10(str(root), train=True), LocalCIFAR10(str(root), train=False)
    except RuntimeError:
        raise DataError(f"cifar10: no CIFAR-10 python batches in {root / 'cifar-10-batches-py'}; extract "
                        "cifar-10-python.tar.gz into --data-dir or pass --download (needs internet)") from None
    except Exception as exc:  # unpickling a damaged file raises many types
        raise DataError(f"cifar10: cannot read {root / 'cifar-10-batches-py'} ({type(exc).__name__}); "
                        "extract cifar-10-python.tar.gz again") from None

    def arrays(ds) -> tuple[np.ndarray, np.ndarray]:
        return ds.data.transpose(0, 3, 1, 2).astype(np.float32) / 255.0, np.asarray(ds.targets)

    return (*arrays(train), *arrays(test))


def _torchvision_fetch(cls, root: Path, name: str) -> None:
    try:
        cls(str(root), train=True, download=True)
        cls(str(root), train=False, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataError(f"{name}: download into {root} failed ({type(exc).__name__}: {str(exc)[:120]}); "
                        "fetch the files by hand into --data-dir") from None
