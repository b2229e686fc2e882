"""The on-device runtime: run an exported fedunlearn model with numpy and ONNX Runtime only.

This file ships to devices on its own. It imports the standard library, numpy and
onnxruntime (Pillow lazily, for image files) and nothing from the project, so it
can be copied next to an export and run as a script::

    python runtime.py model.onnx digit.png batch.npy [--top 3] [--json]

It trusts nothing it reads: the manifest beside the model (docs/edge-contract.md)
must describe the model file, whose sha256 is checked before ONNX Runtime sees a
byte of it, and every input is checked for shape, dtype, finiteness and range in
raw loader units before it is normalised exactly as in training. A path the
manifest names is only followed inside the export folder (``export_file``).

Input size is bounded before anything is allocated: a .npy header's shape and
dtype are checked against the model and the file's real size before its data is
read, and the data is then memory-mapped, never loaded whole; an image's claimed
size is checked before Pillow decodes a pixel; at most MAX_SAMPLES inputs are
taken per call, and they reach ONNX Runtime CHUNK samples at a time, so memory
stays flat however large the batch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

__all__ = [
    "CHUNK",
    "MANIFEST_FORMAT",
    "MAX_IMAGE_PIXELS",
    "MAX_SAMPLES",
    "EdgeError",
    "EdgeInputError",
    "EdgeModel",
    "EdgeModelError",
    "LoadedInputs",
    "Manifest",
    "Prediction",
    "export_file",
    "format_predictions",
    "load_inputs",
    "main",
    "parse_manifest",
    "preprocess",
    "read_manifest",
    "softmax",
    "validate_raw",
]

MANIFEST_FORMAT = "fedunlearn-manifest/1"
MANIFEST_NAME = "manifest.json"
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".pgm", ".ppm", ".pnm", ".bmp"})
MAX_SAMPLES = 1 << 20  # inputs per call: bounds the predictions kept, about 0.5 KB each
MAX_IMAGE_PIXELS = 1 << 24  # what an image header may claim; Pillow refuses larger ones before decoding
CHUNK = 256  # samples per ONNX Runtime call: its activation memory does not grow with the batch
_CHECK_VALUES = 1 << 22  # values converted to float64 at a time while checking a batch
FloatArray = npt.NDArray[np.floating[Any]]


class EdgeError(Exception):
    """Anything the user can fix: a bad model file, manifest or input. The message names the fix."""


class EdgeModelError(EdgeError):
    """The model file or its manifest cannot be trusted or loaded."""


class EdgeInputError(EdgeError):
    """An input file or array does not fit the model."""


@dataclass(frozen=True)
class Manifest:
    """manifest.json, validated and typed where a reader relies on it; ``raw`` is the whole JSON object.

    ``input_chw`` is (C, H, W). The runtime itself needs the input, output, preprocessing and artifacts;
    architecture, parent_model_sha256 and source_checkpoint are for tools (None when absent).
    """

    path: Path
    architecture: str | None
    parent_model_sha256: str | None
    source_checkpoint: str | None
    class_names: tuple[str, ...]
    input_name: str
    output_name: str
    input_chw: tuple[int, int, int]
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    raw_min: float
    raw_max: float
    artifacts: dict[str, dict[str, Any]]
    raw: dict[str, Any]


@dataclass(frozen=True)
class LoadedInputs:
    """Validated batches in raw loader units, each (N_i, C, H, W) (memory-mapped for a .npy), and their files."""

    batches: tuple[npt.NDArray[Any], ...]
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)  # slots: up to MAX_SAMPLES of these are kept
class Prediction:
    """One sample's answer: the best class and the ``top`` (class name, probability) pairs, best first."""

    source: str
    index: int
    class_name: str
    probability: float
    top: tuple[tuple[str, float], ...]


def _number(value: Any, where: str, manifest: Path) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EdgeModelError(f"{manifest}: {where} must be a finite number, got {value!r}")
    return float(value)


def _field(blob: dict[str, Any], key: str, kind: type, manifest: Path) -> Any:
    value = blob.get(key)
    if not isinstance(value, kind):
        raise EdgeModelError(f"{manifest}: key {key!r} must be a {kind.__name__}, got {value!r}; "
                             "re-export the model with `fedunlearn edge export`")
    return value


def _text(blob: dict[str, Any], key: str) -> str | None:
    value = blob.get(key)
    return value if isinstance(value, str) else None


def read_manifest(model_path: Path) -> Manifest:
    """Read and validate the manifest.json beside ``model_path`` (the model file itself is not read)."""
    path = Path(model_path).parent / MANIFEST_NAME
    try:
        blob = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise EdgeModelError(f"no manifest beside the model: {path} is missing; copy the whole export "
                             "folder (model + manifest.json), the runtime refuses a model it cannot verify") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EdgeModelError(f"{path} is not valid JSON ({err}); copy it again from the export") from err
    return parse_manifest(blob, path)


def parse_manifest(blob: Any, path: Path) -> Manifest:
    """Validate a manifest's JSON object; ``path`` is where it lives (or will), for messages and file names."""
    if not isinstance(blob, dict) or blob.get("format") != MANIFEST_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise EdgeModelError(f"{path}: format must be {MANIFEST_FORMAT!r}, got {found!r}")
    names = _field(blob, "class_names", list, path)
    if not names or not all(isinstance(n, str) for n in names) or blob.get("num_classes") != len(names):
        raise EdgeModelError(f"{path}: class_names must be num_classes strings, got {names!r} "
                             f"for num_classes={blob.get('num_classes')!r}")
    spec, output = _field(blob, "input", dict, path), _field(blob, "output", dict, path)
    shape = spec.get("shape")
    if (not isinstance(shape, list) or len(shape) != 4 or not all(
            isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape[1:])):
        raise EdgeModelError(f"{path}: input.shape must be [null, C, H, W] with positive C, H, W, got {shape!r}")
    channels = shape[1]
    prep = _field(blob, "preprocessing", dict, path)
    mean, std = prep.get("mean"), prep.get("std")
    if not (isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == channels):
        raise EdgeModelError(f"{path}: preprocessing.mean and .std need one value per input channel "
                             f"({channels}), got {mean!r} and {std!r}")
    std_values = tuple(_number(s, "preprocessing.std", path) for s in std)
    scale = _number(prep.get("scale"), "preprocessing.scale", path)
    raw_min = _number(prep.get("raw_min"), "preprocessing.raw_min", path)
    raw_max = _number(prep.get("raw_max"), "preprocessing.raw_max", path)
    if scale <= 0 or min(std_values) <= 0 or raw_min >= raw_max:
        raise EdgeModelError(f"{path}: preprocessing needs scale > 0, std > 0 and raw_min < raw_max, got {prep!r}")
    artifacts = _field(blob, "artifacts", dict, path)
    return Manifest(
        path=path, architecture=_text(blob, "architecture"), parent_model_sha256=_text(blob, "parent_model_sha256"),
        source_checkpoint=_text(blob, "source_checkpoint"), class_names=tuple(names),
        input_name=str(spec.get("name", "input")), output_name=str(output.get("name", "logits")),
        input_chw=(shape[1], shape[2], shape[3]), scale=scale,
        mean=tuple(_number(m, "preprocessing.mean", path) for m in mean), std=std_values,
        raw_min=raw_min, raw_max=raw_max, artifacts=artifacts, raw=blob,
    )


def export_file(manifest: Manifest, name: str, what: str) -> Path:
    """``name``, a path the manifest gives (``what`` says which), resolved inside the manifest's folder.

    A manifest arrives with an export from elsewhere: a name that is absolute, climbs out with
    ``..`` or leads out through a symlink is refused, so it cannot point a tool at any other file.
    """
    folder = manifest.path.parent.resolve()
    resolved = (folder / name).resolve()
    if Path(name).is_absolute() or resolved == folder or not resolved.is_relative_to(folder):
        raise EdgeModelError(f"{manifest.path}: {what} {name!r} is not a file inside the export folder {folder}; "
                             "a manifest may only name files beside it")
    return resolved


def _verified_bytes(model_path: Path, manifest: Manifest) -> bytes:
    """The model file's bytes, only if the manifest lists it with this sha256 (hashing what will be loaded)."""
    entry = manifest.artifacts.get(model_path.name)
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        listed = ", ".join(sorted(manifest.artifacts)) or "none"
        raise EdgeModelError(f"{model_path.name} is not listed in {manifest.path} (artifacts: {listed}); "
                             "refusing a model the manifest does not vouch for")
    payload = model_path.read_bytes()
    actual = hashlib.sha256(payload).hexdigest()
    if actual != entry["sha256"].lower():
        raise EdgeModelError(f"{model_path} does not match its manifest: sha256 is {actual}, manifest says "
                             f"{entry['sha256']}; the file is corrupt or was replaced, copy the export again")
    return payload


def preprocess(raw: FloatArray, manifest: Manifest) -> npt.NDArray[np.float32]:
    """(N, C, H, W) raw loader units -> float32 model input, (raw / scale - mean[c]) / std[c] as in training."""
    shape = (1, -1, 1, 1)
    mean = np.asarray(manifest.mean, dtype=np.float32).reshape(shape)
    std = np.asarray(manifest.std, dtype=np.float32).reshape(shape)
    x = np.asarray(raw, dtype=np.float32) / np.float32(manifest.scale)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def _check_dtype(dtype: np.dtype[Any], source: str) -> None:
    if dtype.kind not in "iuf":
        raise EdgeInputError(f"{source}: dtype {dtype} is not a real number type; give integer or float "
                             "pixel values (bool, complex, string and object arrays are refused)")


def _batch_shape(shape: tuple[int, ...], manifest: Manifest, source: str) -> tuple[int, int, int, int]:
    """The (N, C, H, W) an input of ``shape`` is read as; (H, W) and (N, H, W) are grey images.

    Works on the shape alone, so a .npy header is judged before its data is touched.
    """
    c, h, w = manifest.input_chw
    batch: tuple[int, ...]
    if len(shape) == 2 and c == 1:
        batch = (1, 1, *shape)
    elif len(shape) == 3 and c == 1 and shape[0] != 1:
        batch = (shape[0], 1, *shape[1:])  # a stack of grey images, (N, H, W)
    elif len(shape) == 3:
        batch = (1, *shape)
    else:
        batch = shape
    accepted = f"(H, W) = ({h}, {w}), (N, H, W), " if c == 1 else ""
    if len(batch) != 4 or batch[1:] != (c, h, w) or batch[0] == 0:
        raise EdgeInputError(f"{source}: shape {shape} does not fit the model; expected "
                             f"{accepted}(C, H, W) = ({c}, {h}, {w}) or (N, {c}, {h}, {w}) with N >= 1")
    if batch[0] > MAX_SAMPLES:
        raise EdgeInputError(f"{source}: {batch[0]} samples, more than the {MAX_SAMPLES} the runtime takes in "
                             "one call; split the input over several calls")
    return batch[0], c, h, w


def _check_values(batch: npt.NDArray[Any], manifest: Manifest, source: str) -> None:
    """Every value of an (N, C, H, W) batch finite and in [raw_min, raw_max], checked a slice at a time,
    so a memory-mapped file is never copied whole."""
    step = max(1, _CHECK_VALUES // math.prod(manifest.input_chw))
    bad, low, high = 0, math.inf, -math.inf
    for start in range(0, len(batch), step):
        values = np.asarray(batch[start:start + step], dtype=np.float64)
        finite = np.isfinite(values)
        bad += int(finite.size - np.count_nonzero(finite))
        if not bad:
            low, high = min(low, float(values.min())), max(high, float(values.max()))
    if bad:
        raise EdgeInputError(f"{source}: {bad} value(s) are NaN or infinite; inputs must be finite")
    if low < manifest.raw_min or high > manifest.raw_max:
        raise EdgeInputError(f"{source}: values span [{low:g}, {high:g}] but the model takes raw values in "
                             f"[{manifest.raw_min:g}, {manifest.raw_max:g}] (loader units, before normalisation)")


def validate_raw(array: Any, manifest: Manifest, source: str = "input") -> FloatArray:
    """Check a raw array and return it as (N, C, H, W) float64.

    Accepts (H, W) and (N, H, W) for one-channel models, (C, H, W) and (N, C, H, W); values must be
    real, finite numbers in [raw_min, raw_max] (raw loader units, before normalisation).
    """
    array = np.asarray(array)
    _check_dtype(array.dtype, source)
    batch = array.reshape(_batch_shape(array.shape, manifest, source))
    _check_values(batch, manifest, source)
    return batch.astype(np.float64)


def _read_image(path: Path, manifest: Manifest) -> FloatArray:
    """An 8-bit image as (1, C, H, W): pixels 0..255 mapped linearly onto [raw_min, raw_max], never resized."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as err:
        raise EdgeInputError(f"{path}: reading image files needs Pillow (pip install pillow); "
                             "or give the input as a .npy array") from err
    c, h, w = manifest.input_chw
    if c not in (1, 3):
        raise EdgeInputError(f"{path}: the model takes {c} channels; image files only feed 1- or 3-channel "
                             "models, give a .npy array instead")
    try:
        with _pixel_limit(Image), Image.open(path) as image:  # reads the header only, size checked by Pillow
            if image.mode in ("I", "F") or image.mode.startswith("I;"):
                raise EdgeInputError(f"{path}: {image.mode!r} images (16-bit or float) are not supported; "
                                     "save an 8-bit image or give a .npy array in raw units")
            if image.size != (w, h):
                raise EdgeInputError(f"{path}: image is {image.size[0]}x{image.size[1]} (WxH) but the model "
                                     f"takes {w}x{h}; resize it first (the runtime never resizes)")
            pixels = np.asarray(image.convert("L" if c == 1 else "RGB"), dtype=np.float64)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise EdgeInputError(f"{path}: image claims more pixels than {MAX_IMAGE_PIXELS} ({err}); "
                             f"the model takes {w}x{h}") from err
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        raise EdgeInputError(f"{path}: not a readable image ({err})") from err
    chw = pixels[None] if c == 1 else pixels.transpose(2, 0, 1)
    return (manifest.raw_min + chw / 255.0 * (manifest.raw_max - manifest.raw_min))[None]


@contextmanager
def _pixel_limit(image_module: Any) -> Iterator[None]:
    """Pillow's decompression-bomb check at MAX_IMAGE_PIXELS, as an error, for one image.

    Pillow only warns between its limit and twice that; both become errors here, and its
    process-wide limit is restored afterwards so nothing else in the process is affected.
    """
    previous = image_module.MAX_IMAGE_PIXELS
    image_module.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", image_module.DecompressionBombWarning)
            yield
    finally:
        image_module.MAX_IMAGE_PIXELS = previous


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype[Any], int]:
    """(shape, dtype, data offset) from a .npy header, reading nothing past it."""
    try:
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise EdgeInputError(f"{path}: .npy format version {version} is not supported; "
                                     "save the array with numpy.save (format 1.0)")
            return shape, dtype, handle.tell()
    except ValueError as err:  # a damaged or oversized header
        raise EdgeInputError(f"{path}: not a plain numeric .npy array ({err})") from err
    except (OSError, EOFError) as err:
        raise EdgeInputError(f"{path}: cannot read the .npy file ({err})") from err


def _read_array(path: Path, manifest: Manifest) -> npt.NDArray[Any]:
    """A .npy file as a memory-mapped (N, C, H, W) array, after its header was checked against the
    model and against the file's size, so a header claiming 10^12 samples costs nothing."""
    shape, dtype, offset = _npy_header(path)
    _check_dtype(dtype, str(path))
    batch = _batch_shape(shape, manifest, str(path))
    needed, held = math.prod(shape) * dtype.itemsize, path.stat().st_size - offset
    if held < needed:
        raise EdgeInputError(f"{path}: its header describes {shape} {dtype} ({needed} bytes) but the file holds "
                             f"{held} bytes of data; it is truncated or its header is wrong")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False).reshape(batch)
    except (ValueError, OSError) as err:
        raise EdgeInputError(f"{path}: cannot read the .npy file ({err})") from err


def load_inputs(paths: Sequence[Path], manifest: Manifest) -> LoadedInputs:
    """Read ``.npy`` arrays (raw loader units, memory-mapped) and 8-bit images, each checked whole."""
    if not paths:
        raise EdgeInputError("no input files given")
    batches: list[npt.NDArray[Any]] = []
    total = 0
    for path in map(Path, paths):
        if not path.is_file():
            raise EdgeInputError(f"input file {path} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            batch = _read_array(path, manifest)
        elif suffix in IMAGE_SUFFIXES:
            batch = _read_image(path, manifest)
        else:
            raise EdgeInputError(f"{path}: unsupported input type {suffix or '(none)'!r}; give .npy arrays "
                                 f"or images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        total += len(batch)
        if total > MAX_SAMPLES:
            raise EdgeInputError(f"the inputs hold more than {MAX_SAMPLES} samples, the most the runtime takes in "
                                 f"one call (reached at {path}); split them over several calls")
        _check_values(batch, manifest, str(path))
        batches.append(batch)
    return LoadedInputs(batches=tuple(batches), sources=tuple(str(p) for p in paths))


def softmax(logits: FloatArray) -> npt.NDArray[np.float64]:
    """Row-wise softmax of (N, K) logits, shifted by the row maximum so exp never overflows."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


class EdgeModel:
    """A verified ONNX model and its manifest. Build it with ``EdgeModel.open``."""

    def __init__(self, session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
        self.session = session
        self.manifest = manifest
        self.path = path

    @classmethod
    def open(cls, model_path: Path, *, verify: bool = True, threads: int | None = None) -> EdgeModel:
        """Check ``model_path`` against the manifest beside it, then load it on the CPU.

        verify=False skips the manifest listing and sha256 check (benchmarks of hand-edited
        files); the manifest is still needed for the input geometry and preprocessing.
        ``threads`` sets ONNX Runtime's intra-op threads (None: its default, all cores).
        """
        path = Path(model_path)
        if threads is not None and threads < 1:
            raise EdgeModelError(f"threads must be >= 1 (or None for ONNX Runtime's default), got {threads}")
        if not path.is_file():
            raise EdgeModelError(f"model file {path} does not exist")
        manifest = read_manifest(path)
        payload = _verified_bytes(path, manifest) if verify else path.read_bytes()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:  # from the verified bytes, so a file swapped after the check is never loaded
            session = ort.InferenceSession(payload, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own pybind types (InvalidProtobuf, Fail, ...)
            raise EdgeModelError(f"{path} is not a loadable ONNX model ({type(err).__name__}: {err}); "
                                 "it is truncated or corrupt, export it again") from err
        inputs = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        if inputs != [manifest.input_name] or manifest.output_name not in outputs:
            raise EdgeModelError(f"{path} takes {inputs} and gives {outputs}, but {manifest.path} describes input "
                                 f"{manifest.input_name!r} and output {manifest.output_name!r}")
        return cls(session, manifest, path)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.class_names

    def logits(self, preprocessed: FloatArray) -> npt.NDArray[np.float32]:
        """(N, C, H, W) model-ready float32 inputs -> (N, K) logits, CHUNK samples per ONNX Runtime call."""
        x = np.asarray(preprocessed)
        if x.ndim != 4 or x.shape[1:] != self.manifest.input_chw:
            raise EdgeInputError(f"preprocessed batch has shape {x.shape}, expected (N, *{self.manifest.input_chw})")
        out = np.empty((len(x), len(self.class_names)), dtype=np.float32)
        for start in range(0, len(x), CHUNK):
            part = np.ascontiguousarray(x[start:start + CHUNK], dtype=np.float32)
            try:
                (logits,) = self.session.run([self.manifest.output_name], {self.manifest.input_name: part})
            except Exception as err:  # ORT raises its own pybind types
                raise EdgeModelError(f"{self.path}: ONNX Runtime failed on a batch of {len(part)} "
                                     f"({type(err).__name__}: {err})") from err
            if logits.shape != (len(part), len(self.class_names)):
                raise EdgeModelError(f"{self.path} returned shape {logits.shape}, expected ({len(part)}, "
                                     f"{len(self.class_names)}); the model does not match its manifest")
            out[start:start + len(part)] = logits
        return out

    def _probabilities(self, batch: npt.NDArray[Any]) -> Iterator[npt.NDArray[np.float64]]:
        """(N, C, H, W) checked raw values -> (<= CHUNK, K) probabilities per step; nothing whole is copied."""
        for start in range(0, len(batch), CHUNK):
            raw = np.asarray(batch[start:start + CHUNK], dtype=np.float64)
            yield softmax(self.logits(preprocess(raw, self.manifest)))

    def predict(self, raw_batch: Any) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Raw loader units ((H, W), (C, H, W) or (N, C, H, W)) -> classes (N,) and probabilities (N, K)."""
        raw = validate_raw(raw_batch, self.manifest)
        probabilities = np.concatenate(list(self._probabilities(raw)))
        return probabilities.argmax(axis=1).astype(np.int64), probabilities

    def predict_files(self, paths: Sequence[Path], *, top: int = 3) -> list[Prediction]:
        """Load, check and classify input files; one Prediction per sample, ``path[i]`` for a batch's i-th."""
        if top < 1:
            raise EdgeInputError(f"top must be >= 1, got {top}")
        loaded = load_inputs(paths, self.manifest)
        names = self.class_names
        predictions = []
        for batch, source in zip(loaded.batches, loaded.sources, strict=True):
            rows = (row for probabilities in self._probabilities(batch) for row in probabilities)
            for i, row in enumerate(rows):
                order = np.argsort(-row, kind="stable")[:top]
                best = int(order[0])
                predictions.append(Prediction(source if len(batch) == 1 else f"{source}[{i}]", best, names[best],
                                              float(row[best]), tuple((names[int(k)], float(row[k])) for k in order)))
        return predictions


def format_predictions(predictions: Sequence[Prediction], *, as_json: bool = False) -> str:
    """The text ``fedunlearn edge predict`` and ``python runtime.py`` print: one line per sample, or JSON."""
    if as_json:
        return json.dumps({"predictions": [
            {"input": p.source, "class": p.class_name, "index": p.index, "probability": p.probability,
             "top": [{"class": name, "probability": prob} for name, prob in p.top]} for p in predictions]},
            indent=2)
    lines = []
    for p in predictions:
        ranked = ", ".join(f"{name} {prob:.4f}" for name, prob in p.top)
        lines.append(f"{p.source}\t{p.class_name}\t{p.probability:.4f}\ttop-{len(p.top)}: {ranked}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Script entry: ``python runtime.py MODEL.onnx INPUT... [--top K] [--json]``; exit 2 on a refused input."""
    parser = argparse.ArgumentParser(prog="runtime.py", description="Classify inputs with a verified ONNX export.")
    parser.add_argument("model", type=Path, help="model.onnx or model.int8.onnx, with manifest.json beside it")
    parser.add_argument("inputs", type=Path, nargs="+", help=".npy arrays (raw units) or 8-bit images")
    parser.add_argument("--top", type=int, default=3, help="how many classes to list per input (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--json", action="store_true", help="print JSON instead of lines")
    args = parser.parse_args(argv)
    try:
        model = EdgeModel.open(args.model, threads=args.threads)
        print(format_predictions(model.predict_files(args.inputs, top=args.top), as_json=args.json))
    except EdgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
