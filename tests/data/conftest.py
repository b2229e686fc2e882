"""Small datasets written in each dataset's real on-disk format, and a stand-in for torchvision's downloaders.

The writers follow the published formats (IDX header, CIFAR pickle dicts,
SVHN's (H, W, C, N) MATLAB arrays with 10 for the digit 0), so the loaders
are tested on the same bytes they will meet, without any network.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torchvision.datasets

IDX_TYPE_CODES = {
    np.dtype(t): code for t, code in [("u1", 0x08), ("i2", 0x0B), ("i4", 0x0C), ("f4", 0x0D), ("f8", 0x0E)]
}


@dataclass(frozen=True)
class RawSplits:
    """What a writer put on disk, in loader units: images (N, C, H, W) uint8 and labels (N,)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    class_names: tuple[str, ...] | None = None


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: two zero bytes, a type code, the rank, big-endian uint32 dims, big-endian data."""
    header = bytes([0, 0, IDX_TYPE_CODES[array.dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


def _raw(seed: int, n: int, shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes  # every class present
    rng.shuffle(labels)
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8), labels.astype(np.int64)


def write_idx_dataset(directory: Path, *, gz: bool = True, n_train: int = 30, n_test: int = 10) -> RawSplits:
    suffix = ".gz" if gz else ""

    def write_split(prefix: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = _raw(seed, n, (28, 28), 10)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels.astype(np.uint8))
        return images[:, None], labels

    return RawSplits(*write_split("train", 0, n_train), *write_split("t10k", 1, n_test))


def write_pickle(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(content))


def write_cifar(directory: Path, *, fine: bool, n_train: int = 60, n_test: int = 12) -> RawSplits:
    """CIFAR-10 (five train batches, batches.meta) or CIFAR-100 (train/test/meta, fine and coarse labels)."""
    num_classes = 100 if fine else 10
    label_key, names_key = ("fine_labels", "fine_label_names") if fine else ("labels", "label_names")
    train_files = ["train"] if fine else [f"data_batch_{i}" for i in range(1, 6)]
    test_file, meta_file = ("test", "meta") if fine else ("test_batch", "batches.meta")

    def write_batch(name: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = _raw(seed, n, (3, 32, 32), num_classes)
        batch: dict[str, object] = {
            "batch_label": name,
            "data": images.reshape(n, -1),
            label_key: labels.tolist(),
        }
        if fine:
            batch["coarse_labels"] = (labels // 5).tolist()
        write_pickle(directory / name, batch)
        return images, labels

    train = [write_batch(name, seed, n_train // len(train_files)) for seed, name in enumerate(train_files)]
    test = write_batch(test_file, 99, n_test)
    names = tuple(f"class_{i:03d}" for i in range(num_classes))
    write_pickle(directory / meta_file, {names_key: list(names)})
    train_x, train_y = (np.concatenate(column) for column in zip(*train, strict=True))
    return RawSplits(train_x, train_y, *test, names)


def write_svhn(directory: Path, *, n_train: int = 20, n_test: int = 10) -> RawSplits:
    """SVHN .mat files: X is (32, 32, 3, N) and y is (N, 1) with 10 standing for the digit 0."""
    directory.mkdir(parents=True, exist_ok=True)

    def write_split(name: str, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        images, labels = _raw(seed, n, (3, 32, 32), 10)
        stored = np.where(labels == 0, 10, labels).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(directory / name, {"X": images.transpose(2, 3, 1, 0), "y": stored})
        return images, labels

    return RawSplits(*write_split("train_32x32.mat", 0, n_train), *write_split("test_32x32.mat", 1, n_test))


# Each file-backed dataset written where the loader looks under a root.
FAKE_WRITERS: dict[str, Callable[[Path], RawSplits]] = {
    "mnist": write_idx_dataset,
    "fashion-mnist": write_idx_dataset,
    "cifar10": lambda root: write_cifar(root / "cifar-10-batches-py", fine=False),
    "cifar100": lambda root: write_cifar(root / "cifar-100-python", fine=True),
    "svhn": write_svhn,
}

# Where torchvision's own downloaders put each dataset under a root.
TORCHVISION_LAYOUT: dict[str, tuple[str, Callable[[Path], RawSplits]]] = {
    "mnist": ("MNIST", lambda root: write_idx_dataset(root / "MNIST" / "raw", gz=False)),
    "fashion-mnist": ("FashionMNIST", lambda root: write_idx_dataset(root / "FashionMNIST" / "raw")),
    "cifar10": ("CIFAR10", FAKE_WRITERS["cifar10"]),
    "cifar100": ("CIFAR100", FAKE_WRITERS["cifar100"]),
    "svhn": ("SVHN", write_svhn),
}


@dataclass(frozen=True)
class Writers:
    """The format writers, handed to tests as one fixture."""

    idx: Callable[[Path, np.ndarray], None] = write_idx
    idx_dataset: Callable[..., RawSplits] = write_idx_dataset
    pickle: Callable[[Path, object], None] = write_pickle
    cifar: Callable[..., RawSplits] = write_cifar
    svhn: Callable[..., RawSplits] = write_svhn

    @staticmethod
    def fake(name: str, root: Path) -> RawSplits:
        """A small copy of a file-backed dataset under root, in the layout a user would have."""
        return FAKE_WRITERS[name](root)


@pytest.fixture
def writers() -> Writers:
    return Writers()


@dataclass
class FakeDownloads:
    """Records the torchvision constructor calls the loaders made, and what each 'downloaded'."""

    calls: list[tuple[str, dict[str, object]]]
    written: dict[str, RawSplits]

    def fake_class(self, class_name: str, writer: Callable[[Path], RawSplits]) -> Callable[..., None]:
        def construct(root: str, *, download: bool = False, **options: object) -> None:
            self.calls.append((class_name, {"download": download, **options}))
            self.written[class_name] = writer(Path(root))

        return construct


@pytest.fixture
def fake_torchvision(monkeypatch: pytest.MonkeyPatch) -> FakeDownloads:
    """Replace torchvision's dataset classes with ones that 'download' small files into the root."""
    record = FakeDownloads(calls=[], written={})
    for class_name, writer in TORCHVISION_LAYOUT.values():
        monkeypatch.setattr(torchvision.datasets, class_name, record.fake_class(class_name, writer))
    return record
