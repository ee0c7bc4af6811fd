"""Datasets as in-memory tensors on the training device; the loaders are in `datasets/`, one per file.

A loader (registered in `registry.DATASETS`) returns raw numpy arrays; here they
are split (a seeded validation sample of the training split), normalised with
the training split's statistics and moved to the device once. Batches are index
slices of a seeded per-epoch permutation (no DataLoader): iteration i always sees
the same examples for a given seed, which is what lets a rewound round replay the
data order from iteration k.
"""

from __future__ import annotations

import atexit
import functools
import sys
from dataclasses import dataclass

import numpy as np
import torch

from .config import DataConfig
from .errors import ConfigError, DataError
from .hashing import bytes_digest, canonical
from .registry import DATASETS
from .seeds import stream_seed

ALIGN = 64  # bytes: where torch's CPU allocator starts a tensor's memory


@dataclass
class Split:
    """One split of a dataset: normalised images `x` (n, channels, height, width) and labels `y`."""

    x: torch.Tensor  # float32, (n, c, h, w), normalised
    y: torch.Tensor  # int64, (n,)

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    """A dataset's train, validation and test splits on one device, normalised as every round sees them."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    augment: bool = False
    digest: str = ""  # of the arrays actually read and the split: cache keys carry it
    # x' = (x - mean) / std per channel, x as the loader returns it (the training split's statistics; float32 values):
    # saved with every ticket, so the exported model is fed what it was trained on. Empty: not known.
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]


def load_dataset(cfg: DataConfig, device: torch.device | str = "cpu") -> Dataset:
    """Load, split, normalise and move to `device`; cached per process for studies."""
    DATASETS.get(cfg.name)  # an unknown name is one line, with a suggestion
    return _load_cached(cfg.name, cfg.root, cfg.download, cfg.val_size, cfg.split_seed, cfg.augment, str(device))


@functools.lru_cache(maxsize=4)
def _load_cached(name, root, download, val_size, split_seed, augment, device) -> Dataset:
    spec = DATASETS.get(name)
    cfg = DataConfig(name=name, root=root, download=download, val_size=val_size, split_seed=split_seed, augment=augment)
    # A list, and no local name for the images: `_own` takes them out and works on them in place where nothing
    # else holds them.
    arrays = list(spec.load()(cfg))
    train_y, test_y = arrays[1], arrays[3]
    n_val = spec.default_val_size if val_size < 0 else val_size
    if not 0 < n_val < len(train_y):
        raise ConfigError(f"data.val_size must be between 1 and {len(train_y) - 1} for {name}, got {n_val}")
    image = tuple(arrays[0].shape[1:])
    if augment and min(image[1:]) < 8:
        raise ConfigError(f"data.augment needs images of at least 8x8; {name} is {image[1]}x{image[2]}")
    shape = spec.meta.get("input_shape")
    if shape is not None and image != tuple(shape):
        raise DataError(f"{name}: the files hold images of shape {image}, but {name} images are "
                        f"{tuple(shape)}; point --data-dir at the real {name} files")
    digest = bytes_digest([canonical([n_val, split_seed]).encode(),
                           *(part for a in arrays for part in (canonical([a.dtype.str, a.shape]).encode(),
                                                               np.ascontiguousarray(a).data))])
    # The validation split is a seeded sample of the training split, independent of the run seed.
    perm = np.random.default_rng(split_seed).permutation(len(train_y))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    n_train = len(train_idx)

    # One buffer holds the training rows, then the validation rows, each split a view of it; normalised in place.
    rows_layout, test_layout = _layout(arrays[0], rows=True), _layout(arrays[2], rows=False)
    x = _own(arrays, 0)
    _split_in_place(x.numpy(), train_idx, val_idx)
    test_x = _own(arrays, 2)
    mean = x[:n_train].mean(dim=(0, 2, 3), keepdim=True)  # statistics of the training split only
    std = x[:n_train].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    x = x.sub_(mean).div_(std).to(device)  # (on another device, the host copy goes when this returns)
    test_x = test_x.sub_(mean).div_(std).to(device)
    val_x = x[n_train:]
    if val_x.data_ptr() % ALIGN:  # (rows of a size that leaves the view misaligned: a copy of its own, small)
        val_x = val_x.clone()

    def labels(ys: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(ys.astype(np.int64)).to(device)

    return Dataset(name, Split(_laid_out(x[:n_train], rows_layout), labels(train_y[train_idx])),
                   Split(_laid_out(val_x, rows_layout), labels(train_y[val_idx])),
                   Split(_laid_out(test_x, test_layout), labels(test_y)), spec.num_classes, augment, digest,
                   tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()))


def _layout(a, rows: bool) -> tuple[int, ...]:
    """The strides a split of `a` had when each split was a copy, `(x - mean) / std` of the rows indexed out of the
    loader's array (`rows`) or of the array itself: computed on two rows. The strides of dimensions of size 1 are
    arbitrary, yet conv kernels read them (a channel dimension of 1 with stride 1 runs channels-last): the same
    numbers need the same ones."""
    part = np.asarray(a[:2])
    part = part[np.arange(len(part))] if rows else part
    t = torch.from_numpy(np.ascontiguousarray(part)).float()
    return ((t - torch.zeros(1, t.shape[1], 1, 1)) / torch.ones(1, t.shape[1], 1, 1)).contiguous().stride()


def _laid_out(t: torch.Tensor, strides: tuple[int, ...]) -> torch.Tensor:
    """The contiguous t as a view with these strides, where they describe a contiguous tensor of its shape."""
    if len(t) and torch.empty_strided(t.shape, strides, device="meta").is_contiguous():
        return t.as_strided(t.shape, strides)
    return t


# The cached datasets go when the program ends, before the interpreter's teardown: torch's teardown pages in about
# 130 MB, which would add to a process's peak memory while a dataset is still resident (`import torch` alone peaks
# at exit; a Fashion-MNIST search peaked at 916 MB where 797 MB were ever needed).
atexit.register(_load_cached.cache_clear)


def _own(arrays: list, i: int) -> torch.Tensor:
    """arrays[i] as a C-contiguous float32 tensor that may be changed in place, taken out of the list.

    The loader's array itself where nothing else holds it and its memory is aligned as torch aligns its own (the
    built-in loaders return fresh arrays in torch's memory: a 188 MB split is not copied); else a copy, so that an
    array a loader keeps (a plugin's cache) is never changed. (The alignment matters: some conv kernels sum in
    another order on memory aligned otherwise, which moved pinned bits.)
    """
    a, arrays[i] = arrays[i], None
    alone = np.empty(0)  # (reference counts to compare with: one local name, as `a` has; one holder, as its base)
    base = a.base if isinstance(a, np.ndarray) else None
    if (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable
            and a.ctypes.data % ALIGN == 0 and sys.getrefcount(a) <= sys.getrefcount(alone)
            and (a.flags.owndata or (isinstance(base, torch.Tensor) and sys.getrefcount(base) <= 3))):
        return torch.from_numpy(a)
    out = torch.empty(np.shape(a), dtype=torch.float32)
    out.numpy()[...] = a
    return out


def _split_in_place(x: np.ndarray, first: np.ndarray, rest: np.ndarray) -> None:
    """x with its rows reordered in place to x[first] followed by x[rest]; `first` sorted, the two a partition.

    Only the `rest` rows are copied aside. Moving the `first` rows forward in order, a chunk at a time, never
    overwrites a row before it is read: the row written at position j comes from first[j] >= j, and every row
    still to be read lies at first[k] >= k > j.
    """
    aside, chunk = x[rest], max(1, (1 << 20) // max(1, x[:1].nbytes))  # (rows in a megabyte)
    for start in range(0, len(first), chunk):
        rows = first[start:start + chunk]
        x[start:start + len(rows)] = x[rows]
    x[len(first):] = aside


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
            g = torch.Generator().manual_seed(stream_seed(self.seed, epoch, 1_000_003))
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
