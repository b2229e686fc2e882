"""Where dataset files live, how torchvision fetches them, and what to say when they are missing.

Every file-backed dataset goes through ``locate``: look in the given root (or
the system and cache directories), download with torchvision only when asked,
and otherwise fail with a message that names the directories searched and how
to get the files. One path for all of them keeps the error messages alike.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedunlearn.common.errors import DataError

__all__ = ["DATA_ROOT_ENV", "DataSource", "corrupt_file_error", "default_data_root", "locate"]

log = logging.getLogger(__name__)

DATA_ROOT_ENV = "FEDUNLEARN_DATA"


def default_data_root() -> Path:
    """``$FEDUNLEARN_DATA``, else ``~/.cache/fedunlearn/data``: where downloads go when no root is given."""
    configured = os.environ.get(DATA_ROOT_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "fedunlearn" / "data"


def corrupt_file_error(path: Path, detail: str) -> DataError:
    """The one message for unreadable dataset files: what is wrong and how to recover."""
    return DataError(
        f"cannot use {path}: {detail}. The dataset file looks corrupt or truncated; "
        "delete it and download it again (download=True), or restore a good copy"
    )


@dataclass(frozen=True)
class DataSource:
    """The on-disk facts about one dataset.

    files:       names that must all be present in one directory
    suffixes:    accepted endings of each name ("" = as is; ".gz" for gzipped IDX)
    subdirs:     where under a root the files may sit ("" = the root itself;
                 torchvision's own layout such as "MNIST/raw")
    system_dirs: searched first when no root is given (Debian's dataset packages)
    fetch:       downloads the files with torchvision into a root
    hint:        one more way to get the files, shown in the missing-dataset error
    """

    name: str
    files: tuple[str, ...]
    subdirs: tuple[str, ...]
    fetch: Callable[[Path], object]
    suffixes: tuple[str, ...] = ("",)
    system_dirs: tuple[Path, ...] = ()
    hint: str = ""

    def find_file(self, directory: Path, name: str) -> Path | None:
        """The first existing ``directory/name+suffix``, or None."""
        for suffix in self.suffixes:
            candidate = directory / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
        return None

    def path_in(self, directory: Path, name: str) -> Path:
        """Like ``find_file`` for a directory that ``locate`` returned, where the file must exist."""
        found = self.find_file(directory, name)
        if found is None:
            raise DataError(f"{self.name}: {name} vanished from {directory} while loading; place it back")
        return found

    def holds_all(self, directory: Path) -> bool:
        return all(self.find_file(directory, name) is not None for name in self.files)

    def candidates(self, root: Path | None) -> list[Path]:
        """Directories to search, in order: an explicit root replaces the defaults."""
        if root is not None:
            return [root / sub for sub in self.subdirs]
        cache = default_data_root()
        return [*self.system_dirs, *(cache / sub for sub in self.subdirs)]


def locate(source: DataSource, root: Path | None, *, download: bool) -> Path:
    """The directory holding all of ``source.files``; downloads only if allowed and needed."""
    searched = source.candidates(root)
    found = _first_holding(source, searched)
    if found is not None:
        return found
    target = root if root is not None else default_data_root()
    if not download:
        raise _missing_error(source, searched, target)
    _fetch(source, target)
    found = _first_holding(source, source.candidates(target))
    if found is None:
        raise DataError(
            f"downloaded {source.name} into {target}, but {', '.join(source.files)} are not there; "
            f"place the files in {target} yourself"
        )
    return found


def _first_holding(source: DataSource, directories: list[Path]) -> Path | None:
    return next((d for d in directories if source.holds_all(d)), None)


def _fetch(source: DataSource, target: Path) -> None:
    """Run torchvision's downloader; network and checksum failures become a DataError."""
    log.info("downloading %s into %s with torchvision", source.name, target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        source.fetch(target)
    except (OSError, RuntimeError, ValueError) as exc:
        raise DataError(
            f"downloading {source.name} into {target} failed: {exc}. Check the network connection, "
            f"or place the files ({', '.join(source.files)}) in that directory yourself"
        ) from exc


def _missing_error(source: DataSource, searched: list[Path], target: Path) -> DataError:
    where = ", ".join(str(d) for d in searched)
    endings = [s for s in source.suffixes if s]
    wanted = ", ".join(source.files) + (f" (each may end in {'/'.join(endings)})" if endings else "")
    ways = [source.hint] if source.hint else []
    ways.append("pass a directory that holds these files as the data root")
    ways.append(f"enable download (download=True) to fetch it with torchvision into {target}")
    return DataError(
        f"dataset {source.name} not found: looked for {wanted} in {where}. To get it: {'; or '.join(ways)}"
    )
