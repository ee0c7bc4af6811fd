"""Dataset loaders, one per file; each returns raw numpy arrays (train_x, train_y, test_x, test_y), x shaped
(n, c, h, w), and is registered in `registry.DATASETS` with its shapes. `data.load_dataset` does the rest, in place
on an array the loader returns fresh (the built-in ones: pixels.unit_float), on a copy of one it keeps."""
