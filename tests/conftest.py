"""Shared fixtures: a tiny digits configuration, the cached digits data, data-file writers."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from hypothesis import settings

import ltstudy.engine.data
import ltstudy.engine.datasets.fashion_mnist
from ltstudy.engine.config import DataConfig, TicketConfig
from ltstudy.engine.data import Dataset, load_dataset
from ltstudy.engine.searches import ticket_search
from ltstudy.engine.ticket import TicketSearch

# Small, reproducible property tests that leave no .hypothesis folder behind.
settings.register_profile("ltstudy", max_examples=25, deadline=None, database=None, derandomize=True)
settings.load_profile("ltstudy")

torch.set_num_threads(1)

TINY = {
    "seed": 0,
    "device": "cpu",
    "data": {"name": "digits"},
    "model": {"name": "lenet-300-100"},
    "train": {"iterations": 60, "eval_every": 20, "batch_size": 60},
    "prune": {"rounds": 1},
}


def _tiny_config(overrides: dict[str, Any] | None = None, **kw: Any) -> TicketConfig:
    """TINY plus dotted overrides; keyword form uses '__' for the dot: prune__rounds=2."""
    merged = {**(overrides or {}), **{k.replace("__", "."): v for k, v in kw.items()}}
    cfg = TicketConfig.from_dict(TINY)
    return cfg.replace(merged) if merged else cfg


@pytest.fixture
def tiny_cfg() -> Callable[..., TicketConfig]:
    """Factory of a validated TicketConfig: digits, lenet-300-100, 60 iterations, 1 pruning round, CPU."""
    return _tiny_config


@pytest.fixture(scope="session")
def digits() -> Dataset:
    """The digits splits on the CPU (loaded once; tests must not modify them)."""
    return load_dataset(DataConfig(name="digits"), "cpu")


@pytest.fixture
def make_search(digits: Dataset) -> Callable[..., TicketSearch]:
    """TicketSearch on the shared digits data, from a config or from tiny_cfg overrides."""

    def make(cfg: TicketConfig | None = None, **kw: Any) -> TicketSearch:
        return ticket_search(cfg if cfg is not None else _tiny_config(**kw), data=digits)

    return make


@pytest.fixture
def fresh_data_cache():
    """Empty the per-process dataset cache before and after the test."""
    ltstudy.engine.data._load_cached.cache_clear()
    yield
    ltstudy.engine.data._load_cached.cache_clear()


@pytest.fixture
def no_system_fashion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the system-wide Fashion-MNIST folder at a path that does not exist."""
    absent = tmp_path / "no-system-fashion-mnist"
    monkeypatch.setattr(ltstudy.engine.datasets.fashion_mnist, "SYSTEM_DIR", absent)
    return absent


# --------------------------------------------------------------------------- data-file writers


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic (0, 0x08, ndim), big-endian dims, raw data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@pytest.fixture
def write_idx_set() -> Callable[..., dict[str, np.ndarray]]:
    """Write the four (Fashion-)MNIST IDX files into a folder; returns the arrays written."""

    def write(folder: Path, n_train: int = 20, n_test: int = 6, size: int = 28, gz: bool = False,
              seed: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        arrays = {
            IDX_STEMS[0]: rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
            IDX_STEMS[1]: (np.arange(n_train) % 10).astype(np.uint8),
            IDX_STEMS[2]: rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
            IDX_STEMS[3]: (np.arange(n_test) % 10).astype(np.uint8),
        }
        folder.mkdir(parents=True, exist_ok=True)
        for stem, arr in arrays.items():
            raw = idx_bytes(arr)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
            else:
                (folder / stem).write_bytes(raw)
        return arrays

    return write


class _Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 `str` opcodes, the way the official CIFAR-10 batches were written.

    Loaded with encoding="bytes" the keys come back as b'data', b'labels', ...;
    with encoding="latin1" (torchvision) as 'data', 'labels', ...
    """

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: Any) -> bytes:
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


CIFAR_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


@pytest.fixture
def write_cifar() -> Callable[..., dict[str, dict]]:
    """Write tiny CIFAR-10 python batches into root/cifar-10-batches-py; returns what each holds."""

    def write(root: Path, per_batch: int = 4, seed: int = 0) -> dict[str, dict]:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        written = {}
        for i, name in enumerate(CIFAR_BATCHES):
            batch = {
                b"batch_label": name.encode(),
                b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                b"labels": [(i + j) % 10 for j in range(per_batch)],
                b"filenames": [f"{name}_{j}.png".encode() for j in range(per_batch)],
            }
            (folder / name).write_bytes(py2_pickle(batch))
            written[name] = batch
        meta = {b"label_names": [f"class{c}".encode() for c in range(10)], b"num_cases_per_batch": per_batch,
                b"num_vis": 3072}
        (folder / "batches.meta").write_bytes(py2_pickle(meta))
        return written

    return write


@pytest.fixture(autouse=True)
def _keep_process_state():
    """`ltstudy run` in-process sets its torch threads and turns SIGTERM and SIGINT into Ctrl-C: put both back.

    (A test's thread count must not reach the next test: it changes the order of float sums, so the
    pinned numbers would differ in their last bits.)
    """
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    threads = torch.get_num_threads()
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    torch.set_num_threads(threads)



@pytest.fixture(autouse=True, scope="session")
def _crossovers_of_the_tests_own(tmp_path_factory):
    """`kernels = "auto"` keeps the crossovers it times in a file: the tests' own, never the user's cache (and the
    CLI's subprocesses inherit it)."""
    saved = os.environ.get("LTSTUDY_CROSSOVERS")
    os.environ["LTSTUDY_CROSSOVERS"] = str(tmp_path_factory.mktemp("crossovers") / "crossovers.json")
    yield
    if saved is None:
        os.environ.pop("LTSTUDY_CROSSOVERS", None)
    else:
        os.environ["LTSTUDY_CROSSOVERS"] = saved
