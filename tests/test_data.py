"""hf_tna.example_data: the offline loaders shared by the examples and benchmarks, and their errors."""

import gzip
import struct

import numpy as np
import pytest
import torch

from hf_tna.example_data import (
    QUOTE_TOPICS,
    accuracy,
    build_federated_model,
    federated_test_set,
    find_fashion_mnist,
    load_digits_uint8,
    load_image_split,
    load_quote_topics,
    package_dir,
    partition_clients,
    read_idx,
)


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip_and_truncation(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte.gz", array)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), array)
    with gzip.open(tmp_path / "bad.gz", "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x08, 1) + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "bad.gz")
    with gzip.open(tmp_path / "float.gz", "wb") as f:
        f.write(struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(ValueError, match="unsigned-byte"):
        read_idx(tmp_path / "float.gz")


def test_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        find_fashion_mnist(tmp_path)


def test_digits_are_uint8_images():
    images, labels = load_digits_uint8()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8 and images.max() == 255
    assert set(labels.tolist()) == set(range(10))


def test_fashion_mnist_idx_files_parse():
    try:
        folder = find_fashion_mnist()
    except FileNotFoundError:
        pytest.skip("dataset-fashion-mnist is not installed")
    labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))


def test_image_splits_and_their_errors():
    images, labels = load_image_split("test", "synthetic")
    assert images.shape == (2000, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert not np.array_equal(images, load_image_split("train", "synthetic")[0])
    with pytest.raises(ValueError, match="data must be one of"):
        load_image_split("train", "mnist")
    with pytest.raises(ValueError, match="split must be one of"):
        load_image_split("validation", "synthetic")


def test_federated_partitions_split_one_seeded_subsample():
    parts = partition_clients("synthetic", train_size=500, alpha=0.5, seed=3, num_clients=4)
    assert len(parts) == 4 and sum(len(y) for _, y in parts) == 500
    assert all(len(y) >= 10 and x.shape[1:] == (1, 28, 28) for x, y in parts)
    again = partition_clients("synthetic", train_size=500, alpha=0.5, seed=3, num_clients=4)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(parts, again))
    x_test, y_test = federated_test_set("synthetic", test_size=100, seed=3)
    model = build_federated_model("cnn", seed=0)
    assert model(x_test[:2]).shape == (2, 10) and 0.0 <= accuracy(model, x_test, y_test) <= 1.0
    with pytest.raises(ValueError, match="cnn or mlp"):
        build_federated_model("resnet")


def test_text_loaders_give_capped_labelled_texts():
    try:
        texts, labels = load_quote_topics(per_label=5)
    except FileNotFoundError:
        pytest.skip("Debian's fortunes package is not installed")
    assert sorted(set(labels)) == sorted(QUOTE_TOPICS) and len(texts) == len(labels) == 5 * len(QUOTE_TOPICS)
    assert len(set(texts)) == len(texts)
    with pytest.raises(FileNotFoundError, match="pip install"):
        package_dir("hf_tna_no_such_package")
