"""Dataset loaders: each registered dataset on small files in its real format, plus the real Fashion-MNIST."""

from __future__ import annotations

import gzip
import os
import pickle
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.error import URLError

import numpy as np
import pytest
import scipy.io
import torch
from sklearn.datasets import load_digits

from fedunlearn.common.data.datasets import DATASETS, DIGITS_TEST_FRACTION, load_dataset, train_holdout_split
from fedunlearn.common.data.idx import read_idx
from fedunlearn.common.data.sources import DATA_ROOT_ENV, default_data_root
from fedunlearn.common.data.tensors import LabeledData
from fedunlearn.common.errors import ConfigError, DataError, UnknownNameError

if TYPE_CHECKING:
    from .conftest import FakeDownloads, Writers

FILE_DATASETS = ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"]
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_registry_holds_every_dataset_of_the_design() -> None:
    assert DATASETS.names() == ["digits", *FILE_DATASETS]


def test_unknown_dataset_lists_the_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="valid names: digits, mnist, fashion-mnist"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_loader_returns_a_consistent_bundle(name: str, tmp_path: Path, writers: Writers) -> None:
    if name != "digits":
        writers.fake(name, tmp_path)
    bundle = load_dataset(name, root=tmp_path)
    assert bundle.name == name
    for split in (bundle.train, bundle.test):
        assert split.x.dtype == torch.float32 and split.x.ndim == 4
        assert split.x.shape[1:] == bundle.input_shape
        assert split.y.dtype == torch.int64 and split.ids.dtype == torch.int64
        assert int(split.y.min()) >= 0 and int(split.y.max()) < bundle.num_classes
        assert len(torch.unique(split.ids)) == len(split)
    assert len(bundle.preprocessing.mean) == len(bundle.preprocessing.std) == bundle.input_shape[0]


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_file_loaders_keep_pixels_labels_and_official_positions(
    name: str, tmp_path: Path, writers: Writers
) -> None:
    raw = writers.fake(name, tmp_path)
    bundle = load_dataset(name, root=tmp_path)
    prep = bundle.preprocessing
    for split, x, y in ((bundle.train, raw.train_x, raw.train_y), (bundle.test, raw.test_x, raw.test_y)):
        assert torch.equal(split.x, prep.apply(torch.from_numpy(x)))
        assert torch.equal(split.y, torch.from_numpy(y))
        assert torch.equal(split.ids, torch.arange(len(y)))


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [
        ("digits", "0", "9"),
        ("mnist", "0", "9"),
        ("svhn", "0", "9"),
        ("fashion-mnist", "T-shirt/top", "Ankle boot"),
        ("cifar10", "class_000", "class_009"),  # read from the fake batches.meta
        ("cifar100", "class_000", "class_099"),  # read from the fake meta's fine names
    ],
)
def test_class_names(name: str, first: str, last: str, tmp_path: Path, writers: Writers) -> None:
    if name != "digits":
        writers.fake(name, tmp_path)
    names = load_dataset(name, root=tmp_path).class_names
    assert (names[0], names[-1]) == (first, last)
    assert len(names) == (100 if name == "cifar100" else 10)


# --- digits ---------------------------------------------------------------------------------------------


def test_digits_split_is_stratified_and_ids_are_row_indices() -> None:
    digits = load_digits()
    bundle = load_dataset("digits", seed=3)
    ids = torch.cat([bundle.train.ids, bundle.test.ids])
    assert torch.equal(torch.sort(ids).values, torch.arange(len(digits.target)))
    assert len(bundle.test) == round(DIGITS_TEST_FRACTION * len(digits.target))
    rows = bundle.test.ids.numpy()
    expected_x = bundle.preprocessing.apply(torch.from_numpy(digits.images[rows]).reshape(-1, 1, 8, 8))
    assert torch.equal(bundle.test.x, expected_x)
    assert torch.equal(bundle.test.y, torch.from_numpy(digits.target[rows]))
    share = torch.bincount(bundle.test.y, minlength=10) / torch.bincount(torch.from_numpy(digits.target))
    assert torch.all((share - DIGITS_TEST_FRACTION).abs() < 0.01)


def test_digits_split_depends_only_on_the_seed() -> None:
    first, again, other = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    assert torch.equal(first.test.ids, again.test.ids) and torch.equal(first.train.x, again.train.x)
    assert not torch.equal(first.test.ids, other.test.ids)


def test_digits_constants_normalise_the_training_data() -> None:
    bundle = load_dataset("digits")
    assert bundle.preprocessing.scale == 16.0
    assert abs(float(bundle.train.x.mean())) < 0.05 and abs(float(bundle.train.x.std()) - 1.0) < 0.05


# --- IDX: MNIST and Fashion-MNIST --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", "i2", "i4", "f4", "f8"])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(dtype: str, suffix: str, tmp_path: Path, writers: Writers) -> None:
    array = (np.arange(24) * 3 - (0 if dtype == "u1" else 20)).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"a-idx3-ubyte{suffix}"
    writers.idx(path, array)
    loaded = read_idx(path)
    assert loaded.dtype == np.dtype(dtype) and np.array_equal(loaded, array)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("subdir", ["", "MNIST/raw"])
def test_mnist_reads_plain_or_gz_in_the_root_or_torchvision_layout(
    gz: bool, subdir: str, tmp_path: Path, writers: Writers
) -> None:
    raw = writers.idx_dataset(tmp_path / subdir, gz=gz, n_train=15, n_test=5)
    bundle = load_dataset("mnist", root=tmp_path)
    assert (len(bundle.train), len(bundle.test)) == (15, 5)
    assert torch.equal(bundle.test.y, torch.from_numpy(raw.test_y))


def _break(path: Path, how: str) -> None:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    broken = {
        "truncated": data[:-7],
        "trailing-bytes": data + b"\x00\x01",
        "bad-magic": b"\x01\x02" + data[2:],
        "short-header": data[:6],
        "bad-gzip": path.read_bytes()[:40],  # a cut gzip stream
    }[how]
    path.write_bytes(broken if how == "bad-gzip" or path.suffix != ".gz" else gzip.compress(broken))


@pytest.mark.parametrize("how", ["truncated", "trailing-bytes", "bad-magic", "short-header", "bad-gzip"])
def test_corrupt_idx_is_a_data_error_naming_the_file_and_the_fix(
    how: str, tmp_path: Path, writers: Writers
) -> None:
    writers.idx_dataset(tmp_path)
    victim = tmp_path / "train-images-idx3-ubyte.gz"
    _break(victim, how)
    with pytest.raises(DataError, match="corrupt or truncated") as error:
        load_dataset("fashion-mnist", root=tmp_path)
    assert str(victim) in str(error.value) and "download" in str(error.value)


def test_idx_images_and_labels_must_agree(tmp_path: Path, writers: Writers) -> None:
    writers.idx_dataset(tmp_path, gz=False)
    writers.idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", root=tmp_path)


def test_labels_outside_the_class_list_are_a_data_error(tmp_path: Path, writers: Writers) -> None:
    writers.idx_dataset(tmp_path, gz=False, n_train=4)
    writers.idx(tmp_path / "train-labels-idx1-ubyte", np.array([0, 1, 12, 3], dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels span 0\.\.12"):
        load_dataset("mnist", root=tmp_path)


@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason=f"{DEBIAN_FASHION} absent: install dataset-fashion-mnist"
)
def test_real_fashion_mnist_from_the_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))  # the cache is empty: only the system copy can answer
    bundle = load_dataset("fashion-mnist")
    assert (len(bundle.train), len(bundle.test)) == (60000, 10000)
    assert bundle.input_shape == (1, 28, 28)
    assert torch.equal(torch.bincount(bundle.train.y), torch.full((10,), 6000))
    assert torch.equal(bundle.train.ids, torch.arange(60000))
    assert bundle.class_names[int(bundle.train.y[0])] == "Ankle boot"  # the first official training image
    x = bundle.train.x
    assert abs(float(x.mean())) < 0.01 and abs(float(x.std()) - 1.0) < 0.01


# --- CIFAR pickles ---------------------------------------------------------------------------------------


def test_cifar100_uses_fine_labels_and_fine_names(tmp_path: Path, writers: Writers) -> None:
    raw = writers.cifar(tmp_path, fine=True, n_train=200)
    bundle = load_dataset("cifar100", root=tmp_path)  # the batch folder itself is accepted as root
    assert torch.equal(bundle.train.y, torch.from_numpy(raw.train_y))
    assert int(bundle.train.y.max()) > 20  # coarse labels stop at 19
    assert bundle.class_names == raw.class_names


def test_truncated_cifar_batch_is_a_data_error(tmp_path: Path, writers: Writers) -> None:
    writers.fake("cifar10", tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_3.*corrupt"):
        load_dataset("cifar10", root=tmp_path)


class _Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickles_cannot_run_code(tmp_path: Path, writers: Writers) -> None:
    writers.fake("cifar10", tmp_path)
    marker = tmp_path / "pwned"
    writers.pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {"data": _Payload(marker)})
    with pytest.raises(DataError, match=r"test_batch.*never does"):
        load_dataset("cifar10", root=tmp_path)
    assert not marker.exists()


def test_cifar_batch_without_images_is_a_data_error(tmp_path: Path, writers: Writers) -> None:
    writers.fake("cifar10", tmp_path)
    writers.pickle(tmp_path / "cifar-10-batches-py" / "test_batch", {"labels": [1, 2]})
    with pytest.raises(DataError, match="'data' is not an"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_labels_that_are_not_integers_are_a_data_error(tmp_path: Path, writers: Writers) -> None:
    raw = writers.fake("cifar10", tmp_path)
    batch = {"data": raw.test_x.reshape(len(raw.test_x), -1), "labels": ["cat"] * len(raw.test_x)}
    writers.pickle(tmp_path / "cifar-10-batches-py" / "test_batch", batch)
    with pytest.raises(DataError, match="'labels' are not integers"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_names_are_read_from_pickles_with_bytes_keys(tmp_path: Path, writers: Writers) -> None:
    """Python 2's pickles may come back with bytes keys; both spellings must work."""
    writers.fake("cifar10", tmp_path)
    names = [f"n{i}" for i in range(10)]
    writers.pickle(tmp_path / "cifar-10-batches-py" / "batches.meta", {b"label_names": names})
    assert load_dataset("cifar10", root=tmp_path).class_names == tuple(names)


# --- SVHN .mat ------------------------------------------------------------------------------------------


def test_svhn_maps_label_10_to_digit_0_and_keeps_pixel_positions(tmp_path: Path, writers: Writers) -> None:
    raw = writers.svhn(tmp_path)
    stored = scipy.io.loadmat(tmp_path / "train_32x32.mat")
    bundle = load_dataset("svhn", root=tmp_path)
    zero = int(np.flatnonzero(raw.train_y == 0)[0])
    assert int(stored["y"][zero, 0]) == 10 and int(bundle.train.y[zero]) == 0
    # (row 1, column 2, channel 0) in the file's (H, W, C, N) is x[n, 0, 1, 2] in ours
    pixel = torch.tensor([[[[float(stored["X"][1, 2, 0, zero])]]]])
    assert torch.equal(bundle.train.x[zero, 0, 1, 2], bundle.preprocessing.apply(pixel)[0, 0, 0, 0])


def test_corrupt_svhn_is_a_data_error(tmp_path: Path, writers: Writers) -> None:
    writers.svhn(tmp_path)
    (tmp_path / "test_32x32.mat").write_bytes(b"not a mat file" * 20)
    with pytest.raises(DataError, match=r"test_32x32\.mat.*corrupt"):
        load_dataset("svhn", root=tmp_path)


# --- missing data, default root, downloads -------------------------------------------------------------


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_missing_dataset_names_the_directory_and_how_to_get_it(name: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_dataset(name, root=tmp_path)
    message = str(error.value)
    assert f"dataset {name} not found" in message and str(tmp_path) in message
    assert "download=True" in message and "data root" in message


def test_missing_fashion_mnist_suggests_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)


def test_default_root_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, writers: Writers
) -> None:
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    assert default_data_root() == tmp_path
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
        load_dataset("mnist")
    writers.idx_dataset(tmp_path / "MNIST" / "raw", n_train=6)
    assert len(load_dataset("mnist").train) == 6
    monkeypatch.delenv(DATA_ROOT_ENV)
    assert default_data_root() == Path.home() / ".cache" / "fedunlearn" / "data"


@pytest.mark.parametrize("name", FILE_DATASETS)
def test_download_goes_through_torchvision_then_reads_the_raw_files(
    name: str, tmp_path: Path, fake_torchvision: FakeDownloads
) -> None:
    bundle = load_dataset(name, root=tmp_path / "new", download=True)
    assert fake_torchvision.calls and all(options["download"] for _, options in fake_torchvision.calls)
    (written,) = fake_torchvision.written.values()
    assert torch.equal(bundle.train.y, torch.from_numpy(written.train_y))
    if name == "svhn":  # torchvision fetches SVHN one split at a time
        assert [options["split"] for _, options in fake_torchvision.calls] == ["train", "test"]


def test_present_files_are_never_downloaded_again(
    tmp_path: Path, writers: Writers, fake_torchvision: FakeDownloads
) -> None:
    writers.fake("cifar10", tmp_path)
    load_dataset("cifar10", root=tmp_path, download=True)
    assert fake_torchvision.calls == []


@pytest.mark.parametrize(
    "failure", [URLError("no route to host"), RuntimeError("File not found or corrupted.")]
)
def test_failed_download_is_a_data_error(
    failure: Exception, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torchvision.datasets

    def refuse(*args: object, **kwargs: object) -> None:
        raise failure

    monkeypatch.setattr(torchvision.datasets, "MNIST", refuse)
    with pytest.raises(
        DataError, match=rf"downloading mnist into {re.escape(str(tmp_path))} failed: .*Check the network"
    ):
        load_dataset("mnist", root=tmp_path, download=True)


def test_download_that_leaves_no_files_is_a_data_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "SVHN", lambda *args, **kwargs: None)
    with pytest.raises(DataError, match="are not there"):
        load_dataset("svhn", root=tmp_path, download=True)


def test_protocol_2_pickles_like_the_python_2_originals_load(tmp_path: Path, writers: Writers) -> None:
    raw = writers.fake("cifar10", tmp_path)
    batch = {"data": raw.test_x.reshape(len(raw.test_x), -1), "labels": raw.test_y.tolist()}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(batch, protocol=2))
    assert torch.equal(load_dataset("cifar10", root=tmp_path).test.y, torch.from_numpy(raw.test_y))


# --- train / hold-out split ---------------------------------------------------------------------------


def _labeled(labels: list[int]) -> LabeledData:
    n = len(labels)
    return LabeledData(
        torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.tensor(labels), 100 + torch.arange(n)
    )


def test_train_holdout_split_is_disjoint_stratified_and_capped() -> None:
    data = _labeled([0] * 60 + [1] * 30 + [2] * 10)
    train, holdout = train_holdout_split(data, train_size=50, holdout_size=20, seed=0)
    assert (len(train), len(holdout)) == (50, 20)
    assert not set(train.ids.tolist()) & set(holdout.ids.tolist())
    assert torch.equal(torch.bincount(holdout.y), torch.tensor([12, 6, 2]))
    assert torch.equal(torch.bincount(train.y), torch.tensor([30, 15, 5]))
    for part in (train, holdout):  # rows stay aligned with their ids
        assert torch.equal(part.x.flatten().long() + 100, part.ids)
        assert torch.equal(part.ids, torch.sort(part.ids).values)


def test_train_holdout_split_without_cap_keeps_every_other_sample_and_is_seeded() -> None:
    data = _labeled([0, 1] * 25)
    train, holdout = train_holdout_split(data, train_size=None, holdout_size=10, seed=4)
    assert len(train) == 40 and torch.equal(torch.sort(torch.cat([train.ids, holdout.ids])).values, data.ids)
    again = train_holdout_split(data, train_size=None, holdout_size=10, seed=4)[1]
    other = train_holdout_split(data, train_size=None, holdout_size=10, seed=5)[1]
    assert torch.equal(holdout.ids, again.ids) and not torch.equal(holdout.ids, other.ids)


@pytest.mark.parametrize(
    ("train_size", "holdout_size", "error", "message"),
    [
        (10, 0, ConfigError, "holdout_size must be >= 1"),
        (0, 5, ConfigError, "train_size must be >= 1"),
        (40, 20, DataError, "has 50 samples, too few for train_size=40 \\+ holdout_size=20"),
        (None, 50, DataError, "at least 1 training sample"),
    ],
)
def test_train_holdout_split_rejects_sizes_that_do_not_fit(
    train_size: int | None, holdout_size: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        train_holdout_split(_labeled([0, 1] * 25), train_size=train_size, holdout_size=holdout_size, seed=0)
