"""Dataset registry, in-memory splits, seeded batches, augmentation and the file readers."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from ltstudy.engine.config import DataConfig
from ltstudy.engine.data import Batches, augment_batch, load_dataset
from ltstudy.engine.datasets.idx import read_idx
from ltstudy.engine.datasets.pixels import unit_float
from ltstudy.engine.errors import ConfigError, DataError
from ltstudy.engine.registry import DATASETS

from .conftest import IDX_STEMS, idx_bytes

pytestmark = pytest.mark.usefixtures("fresh_data_cache")


# --------------------------------------------------------------------------- digits


def test_digits_splits_partition_the_1797_images_and_live_on_the_device():
    from sklearn.datasets import load_digits

    ds = load_dataset(DataConfig(name="digits"), "cpu")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1797 - 359 - 180, 180, 359)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    for split in (ds.train, ds.val, ds.test):
        assert split.x.device.type == "cpu" and split.y.device.type == "cpu"
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and len(split.x) == len(split.y)
    labels = Counter(torch.cat([ds.train.y, ds.val.y, ds.test.y]).tolist())
    assert labels == Counter(load_digits().target.tolist())


def test_digits_splits_share_no_image():
    ds = load_dataset(DataConfig(name="digits"), "cpu")
    rows = {name: {tuple(r.tolist()) for r in s.x.flatten(1)} for name, s in
            (("train", ds.train), ("val", ds.val), ("test", ds.test))}
    assert len(rows["train"] | rows["val"] | rows["test"]) == 1797  # digits has no duplicate images
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_inputs_are_normalised_with_training_split_statistics():
    ds = load_dataset(DataConfig(name="digits"), "cpu")
    assert ds.train.x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert ds.train.x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_val_size_and_split_seed_choose_the_validation_split():
    a = load_dataset(DataConfig(name="digits", val_size=100), "cpu")
    b = load_dataset(DataConfig(name="digits", val_size=100, split_seed=1), "cpu")
    c = load_dataset(DataConfig(name="digits", val_size=100), "cpu")
    assert len(a.val) == 100 and len(a.train) == 1797 - 359 - 100
    assert not torch.equal(a.val.y, b.val.y)
    assert torch.equal(a.val.x, c.val.x)
    assert torch.equal(a.test.y, b.test.y)  # the test split never moves


def test_loading_the_same_config_twice_returns_the_cached_dataset():
    cfg = DataConfig(name="digits")
    assert load_dataset(cfg, "cpu") is load_dataset(cfg, "cpu")


@pytest.mark.parametrize("val_size", [0, 1438])
def test_validation_split_that_leaves_no_training_data_is_rejected(val_size):
    with pytest.raises(ConfigError, match="val_size must be between 1 and 1437"):
        load_dataset(DataConfig(name="digits", val_size=val_size), "cpu")


def test_unknown_dataset_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"unknown dataset 'digit'; did you mean 'digits'\? choose from digits"):
        load_dataset(DataConfig(name="digit"))


def test_every_registered_dataset_has_a_summary_and_a_validation_size():
    assert {"digits", "fashion-mnist", "mnist", "cifar10"} <= set(DATASETS)
    assert all(s.summary and s.default_val_size > 0 for s in DATASETS.values())


# --------------------------------------------------------------------------- batches


def test_batches_give_the_same_indices_for_the_same_seed_and_iteration():
    a, b = Batches(100, 12, seed=3, device="cpu"), Batches(100, 12, seed=3, device="cpu")
    order = [17, 0, 9, 17, 3, 40]  # out of order and across epochs, as a rewound round reads them
    first = [a.indices(i).clone() for i in order]
    assert all(torch.equal(x, b.indices(i)) for x, i in zip(first, order))
    assert torch.equal(first[0], first[3])


def test_different_seeds_give_different_orders():
    a, b = Batches(100, 12, seed=0, device="cpu"), Batches(100, 12, seed=1, device="cpu")
    assert not torch.equal(a.indices(0), b.indices(0))


def test_batches_are_full_and_an_epoch_never_repeats_an_example():
    batches = Batches(100, 12, seed=0, device="cpu")
    assert batches.per_epoch == 8  # the partial batch of 4 is dropped
    epoch = [batches.indices(i) for i in range(8)]
    assert all(len(b) == 12 for b in epoch)
    assert len(set(torch.cat(epoch).tolist())) == 96
    assert not torch.equal(batches.indices(0), batches.indices(8))  # the next epoch reshuffles
    assert batches.indices(0).max() < 100 and batches.indices(0).min() >= 0


def test_batch_size_larger_than_the_split_uses_the_whole_split():
    batches = Batches(10, 64, seed=0, device="cpu")
    assert sorted(batches.indices(5).tolist()) == list(range(10))


# --------------------------------------------------------------------------- augmentation


def test_augment_batch_keeps_shape_and_dtype_and_is_reproducible_for_a_seeded_generator():
    x = torch.randn(6, 3, 32, 32)
    a = augment_batch(x, torch.Generator().manual_seed(5))
    b = augment_batch(x, torch.Generator().manual_seed(5))
    c = augment_batch(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_augment_batch_without_padding_is_the_image_or_its_mirror_image():
    x = torch.randn(16, 2, 8, 8)
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    same = [torch.equal(o, i) for o, i in zip(out, x)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)


def test_augment_batch_is_a_crop_of_the_zero_padded_image():
    x = torch.arange(1.0, 17.0).view(1, 1, 4, 4).repeat(20, 1, 1, 1)
    out = augment_batch(x, torch.Generator().manual_seed(1), pad=2)
    padded = torch.nn.functional.pad(x[0], (2, 2, 2, 2))
    crops = {tuple(img.flatten().tolist()) for flip in (False, True) for r in range(5) for c in range(5)
             for img in [(padded.flip(-1) if flip else padded)[:, r:r + 4, c:c + 4]]}
    assert all(tuple(o.flatten().tolist()) in crops for o in out)
    assert len({tuple(o.flatten().tolist()) for o in out}) > 3


# --------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_reads_plain_and_gzipped_files(tmp_path, gz):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x-idx3-ubyte.gz" if gz else "x-idx3-ubyte")
    path.write_bytes(gzip.compress(idx_bytes(arr)) if gz else idx_bytes(arr))
    out = read_idx(path)
    assert out.shape == (2, 3, 4) and np.array_equal(out, arr)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd", b"\x00\x00\x08\x03\x00\x00\x00\x05\x00\x00\x00\x02"],
    ids=["empty", "float-dtype", "truncated"],
)
def test_unreadable_idx_file_raises_data_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match="bad-idx3-ubyte is not a readable IDX file"):
        read_idx(path)


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("sub", [".", "fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_reads_idx_files_under_the_data_root(tmp_path, write_idx_set, no_system_fashion, gz, sub):
    arrays = write_idx_set(tmp_path / sub, n_train=20, n_test=6, gz=gz)
    ds = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), val_size=4), "cpu")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 6)
    assert ds.input_shape == (1, 28, 28)
    assert torch.equal(ds.test.y, torch.from_numpy(arrays[IDX_STEMS[3]].astype(np.int64)))
    raw = torch.from_numpy(arrays[IDX_STEMS[2]].astype(np.float32) / 255.0)[:, None]
    corr = torch.corrcoef(torch.stack([raw.flatten(), ds.test.x.flatten()]))[0, 1]
    assert corr > 0.999  # the same images, only normalised


def test_missing_fashion_mnist_raises_a_one_line_data_error_naming_where_it_looked(tmp_path, no_system_fashion):
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path)), "cpu")
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message and str(no_system_fashion) in message


def test_idx_image_and_label_counts_must_agree(tmp_path, write_idx_set, no_system_fashion):
    write_idx_set(tmp_path, n_train=20, n_test=6)
    (tmp_path / IDX_STEMS[1]).write_bytes(idx_bytes(np.zeros(19, dtype=np.uint8)))
    with pytest.raises(DataError, match="image and label counts differ"):
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), val_size=4), "cpu")


def test_augmenting_images_smaller_than_8x8_is_rejected(tmp_path, write_idx_set, no_system_fashion):
    write_idx_set(tmp_path, size=4)
    with pytest.raises(ConfigError, match="augment needs images of at least 8x8"):
        load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), val_size=4, augment=True), "cpu")


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reads_idx_files_under_root_mnist_raw(tmp_path, write_idx_set, gz):
    arrays = write_idx_set(tmp_path / "MNIST" / "raw", n_train=30, n_test=8, gz=gz, seed=4)
    ds = load_dataset(DataConfig(name="mnist", root=str(tmp_path), val_size=5), "cpu")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (25, 5, 8)
    assert torch.equal(ds.test.y, torch.from_numpy(arrays[IDX_STEMS[3]].astype(np.int64)))


def test_missing_mnist_raises_a_one_line_data_error_naming_where_it_looked(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="mnist", root=str(tmp_path)), "cpu")
    assert "\n" not in str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)
    assert "--download" in str(info.value)


# --------------------------------------------------------------------------- memory: the images are held once


def _reference_splits(arrays: dict, n_val: int, split_seed: int = 0):
    """The splits as the data path defines them, computed the plain way (a copy at every step)."""
    train = arrays[IDX_STEMS[0]][:, None].astype(np.float32) / 255.0
    test = arrays[IDX_STEMS[2]][:, None].astype(np.float32) / 255.0
    perm = np.random.default_rng(split_seed).permutation(len(train))
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    x, v, t = (torch.from_numpy(np.ascontiguousarray(a)) for a in (train[train_idx], train[val_idx], test))
    mean, std = x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return (x - mean) / std, (v - mean) / std, (t - mean) / std, train_idx, val_idx


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same bits, and the same strides (a conv kernel reads even those of a dimension of size 1)."""
    return torch.equal(a, b) and a.stride() == b.stride()


@pytest.mark.parametrize("gz", [False, True])
def test_idx_splits_are_the_seeded_partition_normalised_bit_for_bit(tmp_path, write_idx_set, no_system_fashion, gz):
    arrays = write_idx_set(tmp_path, n_train=300, n_test=40, gz=gz, seed=7)
    ds = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), val_size=70, split_seed=3), "cpu")
    train, val, test, train_idx, val_idx = _reference_splits(arrays, 70, split_seed=3)
    assert _same(ds.train.x, train) and _same(ds.val.x, val) and _same(ds.test.x, test)
    labels = arrays[IDX_STEMS[1]].astype(np.int64)
    assert ds.train.y.tolist() == labels[train_idx].tolist() and ds.val.y.tolist() == labels[val_idx].tolist()


def test_the_splits_are_views_of_the_loaders_own_arrays_not_copies(tmp_path, write_idx_set, no_system_fashion,
                                                                   monkeypatch):
    write_idx_set(tmp_path, n_train=30, n_test=8)
    entry = DATASETS.get("fashion-mnist")
    inner, seen = entry.load(), {}

    def loader(cfg):
        out = inner(cfg)
        seen["train"], seen["test"] = out[0].ctypes.data, out[2].ctypes.data  # (addresses: no reference is kept)
        return out

    monkeypatch.setattr(entry, "target", loader)
    ds = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), val_size=6), "cpu")
    assert ds.train.x.data_ptr() == seen["train"]  # the training rows first, reordered in the loader's array ...
    assert ds.val.x.data_ptr() == seen["train"] + 24 * 28 * 28 * 4  # ... the validation rows right behind them
    assert ds.test.x.data_ptr() == seen["test"]
    assert ds.train.x.is_contiguous() and ds.val.x.is_contiguous()


def test_an_array_the_loader_keeps_is_never_changed(tmp_path, write_idx_set, no_system_fashion, monkeypatch):
    arrays = write_idx_set(tmp_path, n_train=30, n_test=8)
    entry = DATASETS.get("fashion-mnist")
    kept = entry.load()(DataConfig(name="fashion-mnist", root=str(tmp_path)))  # (a plugin's cache, say)
    before = [a.copy() for a in kept]
    monkeypatch.setattr(entry, "target", lambda cfg: kept)
    ds = load_dataset(DataConfig(name="fashion-mnist", root=str(tmp_path), val_size=6), "cpu")
    assert all(np.array_equal(a, b) for a, b in zip(kept, before, strict=True))
    train, val, test, _, _ = _reference_splits(arrays, 6)
    assert _same(ds.train.x, train) and _same(ds.val.x, val) and _same(ds.test.x, test)


def test_loading_makes_no_float_copy_of_the_images_beside_the_one_it_keeps(tmp_path, write_idx_set,
                                                                           no_system_fashion):
    import tracemalloc  # (it sees numpy's buffers, not torch's: the kept floats are torch's, and the test above
    # checks that the splits are that memory itself, normalised in place)

    write_idx_set(tmp_path, n_train=2000, n_test=500)
    cfg = DataConfig(name="fashion-mnist", root=str(tmp_path), val_size=200)
    DATASETS.get("fashion-mnist").load()  # (its modules imported outside the measurement)
    tracemalloc.start()
    try:
        ds = load_dataset(cfg, "cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    floats, pixels = 2500 * 28 * 28 * 4, 2000 * 28 * 28
    # The training pixels as read, and a little (a megabyte of rows moved at a time, the validation rows set
    # aside): a float copy of the training images (5.6 MB here) would break it, as each of the four did before.
    assert len(ds.train) == 1800 and peak < pixels + floats // 4


def test_a_program_drops_its_cached_datasets_before_the_interpreter_tears_down(tmp_path, write_idx_set):
    write_idx_set(tmp_path, n_train=30, n_test=8)
    script = tmp_path / "prog.py"
    script.write_text(
        "import atexit, weakref\n"
        "gone = []\n"
        "atexit.register(lambda: print('dropped' if gone[0]() is None else 'still held'))  # (runs last)\n"
        "from ltstudy.engine.config import DataConfig\n"
        "from ltstudy.engine.data import load_dataset\n"
        f"ds = load_dataset(DataConfig(name='fashion-mnist', root={str(tmp_path)!r}, val_size=6), 'cpu')\n"
        "gone.append(weakref.ref(ds.train.x))\n"
        "del ds\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dropped"]


@pytest.mark.parametrize("layout", ["plain", "channel-first view", "new axis"])
def test_unit_float_is_astype_then_divide_bit_for_bit_and_in_its_layout(layout):
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1).repeat(3, axis=3)
    pixels = {"plain": pixels, "channel-first view": pixels.transpose(0, 3, 1, 2),
              "new axis": pixels[..., 0][:, None]}[layout]
    out, expected = unit_float(pixels), pixels.astype(np.float32) / 255.0
    assert out.dtype == np.float32 and out.shape == expected.shape and out.strides == expected.strides
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_reads_a_file_in_chunks_and_rejects_bytes_past_the_data(tmp_path, monkeypatch, gz):
    monkeypatch.setattr("ltstudy.engine.datasets.idx.READ_CHUNK", 7)
    arr = np.arange(5 * 6, dtype=np.uint8).reshape(5, 6)
    path = tmp_path / ("x-idx2-ubyte.gz" if gz else "x-idx2-ubyte")
    write = gzip.compress if gz else bytes
    path.write_bytes(write(idx_bytes(arr)))
    assert np.array_equal(read_idx(path), arr)
    path.write_bytes(write(idx_bytes(arr) + b"\x00"))
    with pytest.raises(DataError, match=r"x-idx2-ubyte(\.gz)? is not a readable IDX file .*holds more"):
        read_idx(path)


# --------------------------------------------------------------------------- CIFAR-10 batches


def test_cifar10_reads_the_python_batches_under_the_data_root(tmp_path, write_cifar):
    written = write_cifar(tmp_path, per_batch=4)
    ds = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_size=2), "cpu")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (18, 2, 4)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert ds.test.y.tolist() == written["test_batch"][b"labels"]
    train_labels = Counter(lbl for i in range(1, 6) for lbl in written[f"data_batch_{i}"][b"labels"])
    assert Counter(torch.cat([ds.train.y, ds.val.y]).tolist()) == train_labels
    raw = torch.from_numpy(written["test_batch"][b"data"].astype(np.float32)).view(4, 3, 32, 32)
    for ch in range(3):  # channel-first, per-channel normalisation preserves the image up to scale
        corr = torch.corrcoef(torch.stack([raw[:, ch].flatten(), ds.test.x[:, ch].flatten()]))[0, 1]
        assert corr > 0.999


def test_missing_cifar10_raises_a_one_line_data_error_naming_where_it_looked(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)), "cpu")
    assert "\n" not in str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in str(info.value)


@pytest.mark.parametrize("missing", ["data_batch_3", "batches.meta"])
def test_incomplete_cifar10_raises_data_error(tmp_path, write_cifar, missing):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / missing).unlink()
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_size=2), "cpu")


def test_damaged_cifar10_batch_raises_data_error(tmp_path, write_cifar):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path), val_size=2), "cpu")


def test_labels_are_the_labels_of_the_batchs_indices():
    y = torch.arange(50)
    batches, again = Batches(50, 8, seed=4, device="cpu"), Batches(50, 8, seed=4, device="cpu")
    for it in (0, 1, 5, 6, 7, 13, 6):  # across epochs (6 batches of 8 per epoch), and back
        assert torch.equal(batches.labels(it, y), y[again.indices(it)])


def test_digits_are_read_exactly_as_scikit_learn_loads_them():
    from sklearn.datasets import load_digits

    from ltstudy.engine.datasets import digits

    images, target = digits._arrays()
    reference = load_digits()
    assert np.array_equal(images, reference.images) and images.dtype == reference.images.dtype
    assert np.array_equal(target, reference.target)
