"""scikit-learn's 8x8 digits: embedded in the package, offline, no test split of its own (a seeded 20% is held out)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..config import DataConfig


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (images 8x8, targets), read from scikit-learn's own CSV.

    Importing sklearn.datasets costs more than a second (it imports most of
    scikit-learn); the file it reads is found without importing it. Where the
    file is not (another scikit-learn layout), its loader is used.
    """
    spec = importlib.util.find_spec("sklearn")
    csv = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        d = load_digits()
        return d.images, d.target
    data = np.loadtxt(csv, delimiter=",")  # (what sklearn's load_digits does)
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int, copy=False)


def load(cfg: DataConfig):
    images, y = _arrays()
    x = (images / 16.0).astype(np.float32)[:, None]
    # No official test split: hold out a fixed, seeded 20%.
    perm = np.random.default_rng(12345).permutation(len(y))
    n_test = len(y) // 5
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return x[train], y[train], x[test], y[test]
