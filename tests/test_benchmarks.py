"""The benchmarks the README and docs/performance.md quote run end to end (on tiny data: the figures themselves come
from full runs on a quiet machine, never from the suite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import IDX_STEMS, idx_bytes

ROOT = Path(__file__).resolve().parents[1]


def learnable_fashion(folder: Path, n_train: int, n_test: int) -> None:
    """Fashion-MNIST-shaped IDX files a network learns at once (a bright row per class over noise): a search refuses
    a dense network at chance."""
    rng = np.random.default_rng(0)

    def images(labels):
        x = rng.integers(0, 60, (len(labels), 28, 28), dtype=np.uint8)
        x[np.arange(len(labels)), 2 + 2 * labels, :] = 255
        return x

    train, test = np.arange(n_train) % 10, np.arange(n_test) % 10
    folder.mkdir()
    for stem, arr in zip(IDX_STEMS, (images(train), train, images(test), test), strict=True):
        (folder / stem).write_bytes(idx_bytes(arr.astype(np.uint8)))


def test_the_memory_benchmark_measures_torch_the_data_path_and_a_search_each_in_its_own_process(tmp_path):
    learnable_fashion(tmp_path / "data", n_train=5_100, n_test=50)  # (5,000 validation images are held out)
    out = tmp_path / "memory.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory.py"), "--iterations", "20",
                          "--data-dir", str(tmp_path / "data"), "--json", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    peaks = figures["medians_mb"]
    assert set(peaks) == {"torch", "data", "search"}
    # every process imports torch, so none can peak below a few hundred MB; a search holds the data too
    assert all(mb > 100 for mb in peaks.values()) and peaks["search"] > peaks["data"] - 50
    assert "ticket search, 7 levels x 20 it" in run.stdout and "over import torch" in run.stdout


def test_the_kernel_benchmark_times_every_level_on_each_kernel_and_reports_auto_s_crossovers(tmp_path):
    out = tmp_path / "speed.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sparse_speed.py"), "--part", "round",
                          "--iterations", "10", "--repeats", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    rounds = json.loads(out.read_text())["round"]
    densities = [row["density"] for row in rounds["rows"]]
    assert densities[0] == 1.0 and densities == sorted(densities, reverse=True) and densities[-1] < 0.036
    for row in rounds["rows"]:
        assert set(row["seconds"]) == {"dense", "sparse", "auto"} and all(s > 0 for s in row["seconds"].values())
        assert row["sparse_vs_dense"] == row["seconds"]["sparse"] / row["seconds"]["dense"]
    assert set(rounds["auto"]["crossovers"]) == {"fc1", "fc2", "fc3"}
    assert "auto against dense: at most" in run.stdout


def test_the_sparse_training_benchmark_times_rigl_and_static_on_both_kernels_and_says_whether_they_agree(tmp_path):
    out = tmp_path / "dst.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sparse_training_speed.py"), "--iterations",
                          "120", "--repeats", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    figures = json.loads(out.read_text())
    rows = {(r["method"], r["level"]): r for r in figures["rows"]}
    assert set(rows) == {(m, level) for m in ("rigl", "static") for level in (15, 10)}
    assert rows["rigl", 15]["density"] == pytest.approx(0.036, abs=0.001) == rows["static", 15]["density"]
    assert rows["rigl", 10]["density"] == pytest.approx(0.108, abs=0.001)
    for row in rows.values():
        assert set(row["seconds"]) == {"dense", "sparse"} and all(s > 0 for s in row["seconds"].values())
        assert row["sparse_vs_dense"] == row["all_seconds"]["sparse"][0] / row["all_seconds"]["dense"][0]
        # (120 iterations, one RigL update at 100: the kernels agree to float noise, the masks exactly)
        assert row["masks_identical"] and row["max_weight_difference"] < 1e-3
    assert [rows[k]["goal"] for k in (("rigl", 15), ("static", 15), ("rigl", 10))] == [0.5, 0.4, 0.8]
    assert "sparse/dense" in run.stdout and "load average" in run.stdout
