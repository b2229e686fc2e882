"""The one way a torch model becomes an edge export: build and check, let the caller look, publish.

The federation's edge phase, ``fedunlearn edge export`` (through
``common.edge.source``) and ``fedunlearn bench --edge`` all call
``stage_package``. It writes model.onnx (and model.int8.onnx) into a private
staging folder beside the export folder, with their parity checks; the caller
may look at them there (the federation has the requesting clients audit each
file and drops those that fail) and then publishes: the files move in, the
manifest last, so a reader never sees a manifest without its files. Whatever
is not published goes with the staging folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from fedunlearn.common.edge.export import staging_dir
from fedunlearn.common.edge.inputs import PackageInputs
from fedunlearn.common.edge.manifest import MANIFEST_NAME, remove_artifact, validate_manifest, write_manifest
from fedunlearn.common.edge.package import FP32_NAME, INT8_NAME, build_artifacts
from fedunlearn.common.edge.plan import Int8Mode
from fedunlearn.common.edge.runtime import Manifest, parse_manifest
from fedunlearn.common.models import ModelSpec

__all__ = ["ExportJob", "Package", "stage_package"]


@dataclass(frozen=True)
class ExportJob:
    """One model to export into ``out``.

    description: its manifest without artifacts (``new_manifest`` or ``dataset_manifest``); the fp32
        file's parent is its ``parent_model_sha256``
    int8_notes: warnings to record in the int8 artifact's entry (e.g. why it is dynamic, not static)
    """

    model: nn.Module
    spec: ModelSpec
    description: Mapping[str, Any]
    inputs: PackageInputs
    int8: Int8Mode
    out: Path
    int8_notes: Sequence[str] = ()


@dataclass
class Package:
    """A job's checked artifacts in ``folder`` (staging), waiting for ``publish`` into ``out``.

    document: manifest.json as it will be published; replace it with the pure functions of
        ``common.edge.manifest`` (``set_audit``...) to add what the caller learned.
    verdict: why the int8 model misses its bar, or None (it is built all the same, the verdict in its entry).
    """

    folder: Path
    out: Path
    document: dict[str, Any]
    verdict: str | None

    @property
    def manifest(self) -> Manifest:
        """The document, typed and validated the way a device reads it."""
        return parse_manifest(self.document, self.out / MANIFEST_NAME)

    def drop(self, name: str) -> None:
        """Leave artifact ``name`` out of the export: its file and its manifest entry go."""
        (self.folder / name).unlink()
        self.document = remove_artifact(self.document, name)

    def publish(self) -> None:
        """Move the artifacts into ``out``, the manifest last; an int8 file this manifest does not list goes."""
        validate_manifest(self.document)
        self.out.mkdir(parents=True, exist_ok=True)
        for name in (FP32_NAME, INT8_NAME):
            if (self.folder / name).is_file():
                os.replace(self.folder / name, self.out / name)
            elif (self.out / name).is_file():
                (self.out / name).unlink()  # int8 none, or an int8 file that failed its audit: it would not match
        write_manifest(self.out, self.document)


@contextmanager
def stage_package(job: ExportJob) -> Iterator[Package]:
    """Build and check the job's artifacts in a staging folder beside ``job.out``; yields them unpublished.

    Raises ModelError (nothing written to ``out``) when an export or quantisation step fails. The staging
    folder, and anything not published from it, is removed on exit.
    """
    with staging_dir(job.out) as folder:
        document, verdict = build_artifacts(job.model, job.spec, folder, job.description, inputs=job.inputs,
                                            int8=job.int8, int8_notes=job.int8_notes)
        yield Package(folder, job.out, document, verdict)
