"""The dataset registry: every dataset becomes a DatasetBundle with stable sample ids.

Sample ids are positions in the dataset's own split (for digits, which has no
official split, row indices of scikit-learn's array), so they stay valid
through partitioning, forgetting and purging. Files are read directly in their
official formats; torchvision is used only to download them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fedunlearn.common.data.cifar import read_cifar_batches, read_cifar_names
from fedunlearn.common.data.idx import read_idx
from fedunlearn.common.data.sources import DataSource, corrupt_file_error, locate
from fedunlearn.common.data.splits import stratified_pick, train_holdout_split
from fedunlearn.common.data.svhn import read_svhn_mat
from fedunlearn.common.data.tensors import DatasetBundle, LabeledData, Preprocessing
from fedunlearn.common.registry import Registry

__all__ = [
    "DATASETS",
    "DIGITS_TEST_FRACTION",
    "DatasetLoader",
    "load_dataset",
    "train_holdout_split",
]


class DatasetLoader(Protocol):
    """What every registered loader accepts; loaders without files ignore root and download."""

    def __call__(self, *, root: Path | None, download: bool, seed: int) -> DatasetBundle: ...


DATASETS: Registry[DatasetLoader] = Registry("dataset")

DIGITS_TEST_FRACTION = 0.25
_DIGIT_NAMES = tuple(str(d) for d in range(10))
_FASHION_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# Per-channel mean/std of the training images after dividing by `scale`; the
# digits figures were measured once on all 1797 images, the others are the
# published per-dataset statistics.
_DIGITS_PREP = Preprocessing(scale=16.0, mean=(0.3053,), std=(0.3760,))
_MNIST_PREP = Preprocessing(scale=255.0, mean=(0.1307,), std=(0.3081,))
_FASHION_PREP = Preprocessing(scale=255.0, mean=(0.2860,), std=(0.3530,))
_CIFAR10_PREP = Preprocessing(scale=255.0, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
_CIFAR100_PREP = Preprocessing(scale=255.0, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
_SVHN_PREP = Preprocessing(scale=255.0, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970))


def load_dataset(
    name: str, *, root: Path | str | None = None, download: bool = False, seed: int = 0
) -> DatasetBundle:
    """Load a registered dataset; ``seed`` only matters where the split is ours (digits)."""
    loader = DATASETS.get(name)
    directory = Path(root).expanduser() if root is not None else None
    return loader(root=directory, download=download, seed=seed)


def _torchvision_download(class_name: str, root: Path, **options: object) -> None:
    """The one download path: let torchvision fetch (and checksum) the official files into root."""
    import torchvision.datasets

    getattr(torchvision.datasets, class_name)(str(root), download=True, **options)


@dataclass(frozen=True)
class _RawSplit:
    """One split in loader units: images (N, C, H, W), labels (N,)."""

    images: np.ndarray
    labels: np.ndarray


def _labeled(split: _RawSplit, prep: Preprocessing) -> LabeledData:
    """Model-ready samples whose ids are their positions in the official split."""
    x = prep.apply(torch.from_numpy(split.images))
    y = torch.from_numpy(split.labels).to(torch.int64)
    return LabeledData(x, y, torch.arange(len(y), dtype=torch.int64))


def _bundle(
    name: str,
    directory: Path,
    splits: tuple[_RawSplit, _RawSplit],
    class_names: tuple[str, ...],
    prep: Preprocessing,
) -> DatasetBundle:
    """Check labels against the class list, then normalise both (train, test) splits."""
    for split in splits:
        if split.labels.size and not 0 <= split.labels.min() <= split.labels.max() < len(class_names):
            raise corrupt_file_error(
                directory,
                f"{name} labels span {split.labels.min()}..{split.labels.max()}, "
                f"outside 0..{len(class_names) - 1}",
            )
    train, test = splits
    return DatasetBundle(name, _labeled(train, prep), _labeled(test, prep), class_names, prep)


# --- digits: bundled with scikit-learn --------------------------------------------------------------


@DATASETS.register("digits")
def _load_digits(*, root: Path | None, download: bool, seed: int) -> DatasetBundle:
    """scikit-learn's 8x8 digits with our own seeded, stratified 75/25 split (root, download unused)."""
    from sklearn.datasets import load_digits  # here: scikit-learn is slow to import and only digits needs it

    digits = load_digits()
    raw = torch.from_numpy(digits.images).reshape(-1, 1, 8, 8)
    labels = torch.from_numpy(digits.target).to(torch.int64)
    ids = torch.arange(len(labels), dtype=torch.int64)
    count = round(DIGITS_TEST_FRACTION * len(labels))
    test_rows = stratified_pick(labels, count, torch.Generator().manual_seed(seed))
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[test_rows] = True
    x = _DIGITS_PREP.apply(raw)
    train = LabeledData(x[~is_test], labels[~is_test], ids[~is_test])
    test = LabeledData(x[is_test], labels[is_test], ids[is_test])
    return DatasetBundle("digits", train, test, _DIGIT_NAMES, _DIGITS_PREP)


# --- MNIST and Fashion-MNIST: IDX files ---------------------------------------------------------------

_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_source(
    name: str, torchvision_class: str, *, system_dirs: tuple[Path, ...] = (), hint: str = ""
) -> DataSource:
    """IDX files sit in the root itself or in torchvision's ``<Class>/raw`` layout, gzipped or not."""
    return DataSource(
        name=name,
        files=_IDX_FILES,
        subdirs=("", f"{torchvision_class}/raw"),
        suffixes=("", ".gz"),
        fetch=functools.partial(_torchvision_download, torchvision_class),
        system_dirs=system_dirs,
        hint=hint,
    )


_MNIST = _idx_source("mnist", "MNIST")
_FASHION = _idx_source(
    "fashion-mnist",
    "FashionMNIST",
    system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    hint="install Debian's package (apt-get install dataset-fashion-mnist)",
)


def _read_idx_split(source: DataSource, directory: Path, prefix: str) -> _RawSplit:
    images_path = source.path_in(directory, f"{prefix}-images-idx3-ubyte")
    images = read_idx(images_path)
    labels = read_idx(source.path_in(directory, f"{prefix}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise corrupt_file_error(
            images_path, f"{images.shape} images do not match {labels.shape} labels in {prefix}-labels"
        )
    return _RawSplit(images[:, None], labels)


def _load_idx(
    source: DataSource,
    class_names: tuple[str, ...],
    prep: Preprocessing,
    *,
    root: Path | None,
    download: bool,
) -> DatasetBundle:
    directory = locate(source, root, download=download)
    splits = (_read_idx_split(source, directory, "train"), _read_idx_split(source, directory, "t10k"))
    return _bundle(source.name, directory, splits, class_names, prep)


@DATASETS.register("mnist")
def _load_mnist(*, root: Path | None, download: bool, seed: int) -> DatasetBundle:
    return _load_idx(_MNIST, _DIGIT_NAMES, _MNIST_PREP, root=root, download=download)


@DATASETS.register("fashion-mnist")
def _load_fashion_mnist(*, root: Path | None, download: bool, seed: int) -> DatasetBundle:
    return _load_idx(_FASHION, _FASHION_NAMES, _FASHION_PREP, root=root, download=download)


# --- CIFAR-10 and CIFAR-100: python pickle batches -------------------------------------------------


@dataclass(frozen=True)
class _CifarLayout:
    """Which pickles hold which split, and which keys hold labels and class names."""

    name: str
    folder: str  # the archive's top folder, as torchvision extracts it
    torchvision_class: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int

    @property
    def source(self) -> DataSource:
        return DataSource(
            name=self.name,
            files=(*self.train_files, *self.test_files, self.meta_file),
            subdirs=(self.folder, ""),
            fetch=functools.partial(_torchvision_download, self.torchvision_class),
        )


_CIFAR10 = _CifarLayout(
    name="cifar10",
    folder="cifar-10-batches-py",
    torchvision_class="CIFAR10",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
)
_CIFAR100 = _CifarLayout(
    name="cifar100",
    folder="cifar-100-python",
    torchvision_class="CIFAR100",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
)


def _load_cifar(
    layout: _CifarLayout, prep: Preprocessing, *, root: Path | None, download: bool
) -> DatasetBundle:
    directory = locate(layout.source, root, download=download)
    train, test = (
        _RawSplit(*read_cifar_batches([directory / f for f in files], layout.label_key))
        for files in (layout.train_files, layout.test_files)
    )
    names = read_cifar_names(directory / layout.meta_file, layout.names_key, layout.num_classes)
    return _bundle(layout.name, directory, (train, test), names, prep)


@DATASETS.register("cifar10")
def _load_cifar10(*, root: Path | None, download: bool, seed: int) -> DatasetBundle:
    return _load_cifar(_CIFAR10, _CIFAR10_PREP, root=root, download=download)


@DATASETS.register("cifar100")
def _load_cifar100(*, root: Path | None, download: bool, seed: int) -> DatasetBundle:
    return _load_cifar(_CIFAR100, _CIFAR100_PREP, root=root, download=download)


# --- SVHN: MATLAB files -------------------------------------------------------------------------------


def _download_svhn(root: Path) -> None:
    """torchvision fetches SVHN one split at a time."""
    for split in ("train", "test"):
        _torchvision_download("SVHN", root, split=split)


_SVHN = DataSource(
    name="svhn", files=("train_32x32.mat", "test_32x32.mat"), subdirs=("", "svhn"), fetch=_download_svhn
)


@DATASETS.register("svhn")
def _load_svhn(*, root: Path | None, download: bool, seed: int) -> DatasetBundle:
    directory = locate(_SVHN, root, download=download)
    train, test = (_RawSplit(*read_svhn_mat(directory / name)) for name in _SVHN.files)
    return _bundle("svhn", directory, (train, test), _DIGIT_NAMES, _SVHN_PREP)
