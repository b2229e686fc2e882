"""The on-device runtime: parity with torch, the torch-free proof, and a clear refusal for every bad input.

The export fixture is built by hand (tests/edge/exports.py: dynamo export + a manifest written per
docs/edge-contract.md), so these tests do not lean on the export side's code.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fedunlearn.common.data.tensors import Preprocessing
from fedunlearn.common.edge import runtime
from fedunlearn.common.edge.runtime import EdgeError, EdgeInputError, EdgeModel, EdgeModelError, read_manifest
from fedunlearn.common.errors import DataError, ModelError
from tests.edge.exports import DIGITS, write_manifest

RUNTIME_FILE = Path(runtime.__file__)


def torch_probabilities(root: Path, raw: np.ndarray, prep: dict[str, Any] = DIGITS) -> np.ndarray:
    from fedunlearn.common.checkpoint import load_checkpoint

    model, _ = load_checkpoint(root / "model.pt")
    x = Preprocessing(prep["scale"], tuple(prep["mean"]), tuple(prep["std"])).apply(torch.from_numpy(raw))
    with torch.no_grad():
        return torch.softmax(model.eval()(x), dim=1).numpy()


@pytest.fixture
def built(edge_export: Path) -> Path:
    """The session's hand-made export (read only; ``export`` is a copy a test may damage)."""
    return edge_export


@pytest.fixture
def export(built: Path, tmp_path: Path) -> Path:
    """A private copy of the export (and its checkpoint) that a test may damage."""
    shutil.copy(built.parent / "model.pt", tmp_path / "model.pt")
    return Path(shutil.copytree(built, tmp_path / "export"))


@pytest.fixture
def raw() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 17, size=(6, 1, 8, 8)).astype(np.float32)


def test_predict_matches_torch_softmax(built: Path, raw: np.ndarray) -> None:
    classes, probabilities = EdgeModel.open(built / "model.onnx").predict(raw)
    expected = torch_probabilities(built.parent, raw)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    np.testing.assert_array_equal(classes, expected.argmax(1))
    assert probabilities.shape == (6, 10) and np.allclose(probabilities.sum(1), 1)


def test_preprocess_is_the_training_transform(built: Path, raw: np.ndarray) -> None:
    manifest = read_manifest(built / "model.onnx")
    expected = Preprocessing(16.0, (0.3053,), (0.376,)).apply(torch.from_numpy(raw)).numpy()
    np.testing.assert_array_equal(runtime.preprocess(raw, manifest), expected)


def test_softmax_is_stable_for_huge_logits() -> None:
    p = runtime.softmax(np.array([[1000.0, -1000.0, 999.0], [-5e4, -5e4, -5e4]]))
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1)
    np.testing.assert_allclose(p[1], 1 / 3)


def test_files_npy_batch_single_and_png(built: Path, raw: np.ndarray, tmp_path: Path) -> None:
    np.save(tmp_path / "batch.npy", raw[:3, 0])  # (N, H, W): a stack of grey images
    np.save(tmp_path / "one.npy", raw[3, 0].astype(np.uint8))  # (H, W) uint8
    pixels = np.random.default_rng(1).integers(0, 256, size=(8, 8), dtype=np.uint8)
    Image.fromarray(pixels, mode="L").save(tmp_path / "digit.png")
    inputs = [tmp_path / "batch.npy", tmp_path / "one.npy", tmp_path / "digit.png"]
    predictions = EdgeModel.open(built / "model.onnx").predict_files(inputs, top=3)
    assert [p.source for p in predictions] == [f"{inputs[0]}[{i}]" for i in range(3)] + [str(p) for p in inputs[1:]]
    # image pixels 0..255 are mapped onto the manifest's raw range [0, 16]
    expected = torch_probabilities(built.parent, np.concatenate(
        [raw[:4], (pixels.astype(np.float32) * 16 / 255)[None, None]]))
    for prediction, row in zip(predictions, expected, strict=True):
        assert prediction.index == row.argmax() and prediction.class_name == f"digit-{row.argmax()}"
        assert prediction.probability == pytest.approx(row.max(), abs=1e-5)
        assert [name for name, _ in prediction.top] == [f"digit-{k}" for k in np.argsort(-row)[:3]]


def test_images_are_taken_as_is_when_the_range_is_8_bit(export: Path, tmp_path: Path) -> None:
    prep = {"scale": 255.0, "mean": [0.1307], "std": [0.3081], "raw_min": 0.0, "raw_max": 255.0}
    write_manifest(export, preprocessing=prep)
    colour = np.random.default_rng(2).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    Image.fromarray(colour, mode="RGB").save(tmp_path / "colour.png")  # converted to one grey channel
    (prediction,) = EdgeModel.open(export / "model.onnx").predict_files([tmp_path / "colour.png"])
    grey = np.asarray(Image.fromarray(colour).convert("L"), dtype=np.float32)[None, None]
    assert prediction.probability == pytest.approx(torch_probabilities(export.parent, grey, prep).max(), abs=1e-5)


def test_script_main_prints_lines_and_json(built: Path, raw: np.ndarray, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", raw[0])
    assert runtime.main([str(built / "model.onnx"), str(tmp_path / "x.npy")]) == 0
    line = capsys.readouterr().out.strip()
    best = torch_probabilities(built.parent, raw[:1])[0].argmax()
    assert line.startswith(f"{tmp_path / 'x.npy'}\tdigit-{best}\t") and "top-3: " in line
    assert runtime.main([str(built / "model.onnx"), str(tmp_path / "x.npy"), "--json", "--top", "2"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["predictions"]
    assert entry["class"] == f"digit-{best}" and len(entry["top"]) == 2
    assert runtime.main([str(built / "model.onnx"), str(tmp_path / "missing.npy")]) == 2
    assert "missing.npy does not exist" in capsys.readouterr().err


def test_predict_command_prints_what_the_script_prints(built: Path, raw: np.ndarray, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from fedunlearn.simulations.edge_cli import predict_command

    app = typer.Typer()
    app.command()(predict_command)
    np.save(tmp_path / "x.npy", raw[:2])
    result = CliRunner().invoke(app, [str(built / "model.onnx"), str(tmp_path / "x.npy")])
    assert result.exit_code == 0, result.output
    runtime.main([str(built / "model.onnx"), str(tmp_path / "x.npy")])
    assert result.output == capsys.readouterr().out
    bad_input = CliRunner().invoke(app, [str(built / "model.onnx"), str(tmp_path / "nope.npy")])
    assert isinstance(bad_input.exception, DataError) and "does not exist" in str(bad_input.exception)
    bad_model = CliRunner().invoke(app, [str(tmp_path / "model.onnx"), str(tmp_path / "x.npy")])
    assert isinstance(bad_model.exception, ModelError)



def test_the_old_predict_spelling_still_predicts_and_warns(built: Path, raw: np.ndarray, tmp_path: Path) -> None:
    from fedunlearn.simulations.cli import app

    np.save(tmp_path / "x.npy", raw[:2])
    argv = [str(built / "model.onnx"), str(tmp_path / "x.npy")]
    new, old = CliRunner().invoke(app, ["edge", "predict", *argv]), CliRunner().invoke(app, ["predict", *argv])
    assert new.exit_code == old.exit_code == 0, old.output
    assert old.stdout == new.stdout and new.stderr == ""
    assert old.stderr.strip() == ("warning: `fedunlearn predict` is deprecated and goes in the next release; "
                                  "use `fedunlearn edge predict`")

BLOCKER = """
import importlib.abc, runpy, sys
BLOCKED = {"torch", "torchvision", "flwr", "common"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"blocked on the device: {name}")
        return None

sys.meta_path.insert(0, Block())
sys.argv = ["runtime.py", *sys.argv[1:]]
try:
    runpy.run_path("runtime.py", run_name="__main__")
finally:
    leaked = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
    print("leaked:", leaked, file=sys.stderr)
"""


def test_runtime_runs_alone_without_torch_or_the_project(built: Path, raw: np.ndarray, tmp_path: Path) -> None:
    device = tmp_path / "device"
    device.mkdir()
    shutil.copy(RUNTIME_FILE, device / "runtime.py")
    np.save(tmp_path / "x.npy", raw[:2])
    done = subprocess.run([sys.executable, "-I", "-c", BLOCKER, str(built / "model.onnx"), str(tmp_path / "x.npy")],
                          cwd=device, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "leaked: []" in done.stderr
    expected = torch_probabilities(built.parent, raw[:2]).argmax(1)
    classes = [line.split("\t")[1] for line in done.stdout.strip().splitlines()]
    assert classes == [f"digit-{k}" for k in expected]


def test_runtime_imports_only_stdlib_numpy_and_onnxruntime() -> None:
    tree = ast.parse(RUNTIME_FILE.read_text())
    top = {alias.name.partition(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.partition(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
    assert top - set(sys.stdlib_module_names) == {"numpy", "onnxruntime"}


# --- the model and its manifest: every way to be refused --------------------------------------------------------


def _rehash(export: Path) -> None:
    write_manifest(export)


def _truncate(export: Path) -> None:
    data = (export / "model.onnx").read_bytes()
    (export / "model.onnx").write_bytes(data[: len(data) // 2])
    _rehash(export)  # the hash now matches: what fails is the corruption itself


def _garble(export: Path) -> None:
    size = (export / "model.onnx").stat().st_size
    (export / "model.onnx").write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    _rehash(export)


def _flip_a_byte(export: Path) -> None:
    data = bytearray((export / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (export / "model.onnx").write_bytes(bytes(data))


def _unlist(export: Path) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["artifacts"] = {"other.onnx": manifest["artifacts"]["model.onnx"]}
    (export / "manifest.json").write_text(json.dumps(manifest))


BAD_MODELS = {
    "missing model": (lambda e: (e / "model.onnx").unlink(), r"model file .*model\.onnx does not exist"),
    "missing manifest": (lambda e: (e / "manifest.json").unlink(), r"manifest\.json is missing"),
    "manifest not JSON": (lambda e: (e / "manifest.json").write_text("{"), r"not valid JSON"),
    "wrong format": (lambda e: write_manifest(e, format="other/2"), r"format must be 'fedunlearn-manifest/1'"),
    "no preprocessing": (lambda e: write_manifest(e, preprocessing=None), r"key 'preprocessing' must be a dict"),
    "bad std": (lambda e: write_manifest(e, preprocessing={**DIGITS, "std": [0.0]}), r"std > 0"),
    "not listed": (_unlist, r"model\.onnx is not listed in .*manifest\.json \(artifacts: other\.onnx\)"),
    "hash mismatch": (_flip_a_byte, r"does not match its manifest: sha256 is [0-9a-f]{64}, manifest says"),
    "truncated": (_truncate, r"model\.onnx is not a loadable ONNX model .*truncated or corrupt"),
    "garbage bytes": (_garble, r"model\.onnx is not a loadable ONNX model"),
    "wrong input name": (lambda e: write_manifest(e, input={"name": "pixels", "shape": [None, 1, 8, 8]}),
                         r"describes input 'pixels'"),
}


@pytest.mark.parametrize("case", BAD_MODELS)
def test_a_model_that_cannot_be_trusted_is_refused(export: Path, case: str) -> None:
    damage, message = BAD_MODELS[case]
    damage(export)
    with pytest.raises(EdgeModelError, match=message):
        EdgeModel.open(export / "model.onnx")


def test_hash_is_checked_before_onnx_runtime_sees_the_file(export: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _flip_a_byte(export)
    monkeypatch.setattr(runtime.ort, "InferenceSession", lambda *a, **k: pytest.fail("session created"))
    with pytest.raises(EdgeModelError, match="does not match its manifest"):
        EdgeModel.open(export / "model.onnx")


# --- inputs: every way to be refused ------------------------------------------------------------------------------


def _save(array: Any) -> Any:
    return lambda path: np.save(path.with_suffix(".npy"), array)


def _png(width: int, height: int) -> Any:
    return lambda path: Image.fromarray(np.zeros((height, width), np.uint8)).save(path.with_suffix(".png"))


def _png_header(width: int, height: int) -> Any:
    """A few dozen bytes of PNG that claim ``width`` x ``height`` grey pixels (no pixel data follows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return lambda path: path.with_suffix(".png").write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b""))


def _npy_header(shape: tuple[int, ...], data: bytes = b"\0" * 64) -> Any:
    """A .npy whose header claims ``shape`` float64, followed by only ``data``."""
    def write(path: Path) -> None:
        with path.with_suffix(".npy").open("wb") as handle:
            np.lib.format.write_array_header_1_0(handle, {"descr": "<f8", "fortran_order": False, "shape": shape})
            handle.write(data)
    return write


GOOD = np.full((8, 8), 3.0)
BAD_INPUTS = {
    "wrong shape": (_save(np.zeros((1, 1, 9, 8))), ".npy", r"shape \(1, 1, 9, 8\) does not fit .*\(N, 1, 8, 8\)"),
    "stack of wrong size": (_save(np.zeros((5, 8, 9))), ".npy", r"shape \(5, 8, 9\) does not fit .*\(N, H, W\)"),
    "empty batch": (_save(np.zeros((0, 1, 8, 8))), ".npy", r"N >= 1"),
    "complex": (_save(GOOD.astype(np.complex64)), ".npy", r"dtype complex64 is not a real number type"),
    "bool": (_save(GOOD > 0), ".npy", r"dtype bool is not a real number type"),
    "strings": (_save(np.full((8, 8), "7")), ".npy", r"dtype <U1 is not a real number type"),
    "object": (_save(np.array([[1, "a"]], dtype=object)), ".npy", r"dtype object is not a real number type"),
    "NaN": (_save(np.where(np.eye(8) > 0, np.nan, GOOD)), ".npy", r"8 value\(s\) are NaN or infinite"),
    "inf": (_save(np.where(np.eye(8) > 0, np.inf, GOOD)), ".npy", r"NaN or infinite"),
    "too bright": (_save(np.full((8, 8), 300)), ".npy", r"values span \[300, 300\] .* raw values in \[0, 16\]"),
    "negative": (_save(np.where(np.eye(8) > 0, -1.0, GOOD)), ".npy", r"values span \[-1, 3\] .* \[0, 16\]"),
    "wrong image size": (_png(10, 12), ".png", r"image is 10x12 \(WxH\) but the model takes 8x8; resize it first"),
    "not an image": (lambda p: p.with_suffix(".png").write_bytes(b"not a png"), ".png", r"not a readable image"),
    "damaged npy": (lambda p: p.with_suffix(".npy").write_bytes(b"\x93NUMPY garbage"), ".npy", r"\.npy"),
    "unknown type": (lambda p: p.with_suffix(".txt").write_text("1 2 3"), ".txt", r"unsupported input type '\.txt'"),
    "header claims 10^12 samples": (_npy_header((10**12, 8, 8)), ".npy",
                                    r"1000000000000 samples, more than the 1048576 the runtime takes"),
    "header claims more than the file": (_npy_header((1000, 8, 8)), ".npy",
                                         r"describes \(1000, 8, 8\) float64 \(512000 bytes\) but the file holds 64"),
    "png claims 30000x30000": (_png_header(30000, 30000), ".png", r"image claims more pixels than 16777216"),
    "png claims 5000x4000": (_png_header(5000, 4000), ".png", r"image claims more pixels than 16777216"),
    "png claims 3000x3000": (_png_header(3000, 3000), ".png", r"image is 3000x3000 \(WxH\) but the model takes 8x8"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_a_bad_input_is_refused_with_its_problem(built: Path, tmp_path: Path, case: str) -> None:
    write, suffix, message = BAD_INPUTS[case]
    write(tmp_path / "input")
    with pytest.raises(EdgeInputError, match=message):
        EdgeModel.open(built / "model.onnx").predict_files([tmp_path / f"input{suffix}"])


def test_predict_on_arrays_checks_the_same_way(built: Path) -> None:
    model = EdgeModel.open(built / "model.onnx")
    with pytest.raises(EdgeInputError, match=r"values span \[-1, 16\]"):
        model.predict(np.concatenate([GOOD.ravel()[:62], [-1, 16]]).reshape(8, 8))
    with pytest.raises(EdgeError, match="preprocessed batch has shape"):
        model.logits(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(EdgeError, match="threads must be >= 1"):
        EdgeModel.open(built / "model.onnx", threads=0)


# --- bounded memory: memory-mapped files, chunked ONNX Runtime calls, a cap per call ---------------------------


def test_a_large_batch_is_memory_mapped_and_run_in_chunks(built: Path, tmp_path: Path) -> None:
    raw = np.random.default_rng(3).integers(0, 17, size=(2 * runtime.CHUNK + 7, 8, 8)).astype(np.float64)
    np.save(tmp_path / "big.npy", raw)
    model = EdgeModel.open(built / "model.onnx")
    loaded = runtime.load_inputs([tmp_path / "big.npy"], model.manifest)
    assert isinstance(loaded.batches[0], np.memmap) and loaded.batches[0].shape == (len(raw), 1, 8, 8)
    sizes: list[int] = []
    real_run = model.session.run

    class Session:  # InferenceSession's run is read-only: wrap the session instead
        def run(self, outputs: Any, feed: dict[str, np.ndarray]) -> Any:
            sizes.extend(len(x) for x in feed.values())
            return real_run(outputs, feed)

    model.session = Session()  # type: ignore[assignment]
    predictions = model.predict_files([tmp_path / "big.npy"], top=1)
    assert sizes == [runtime.CHUNK, runtime.CHUNK, 7]
    expected = torch_probabilities(built.parent, raw[:, None].astype(np.float32)).argmax(1)
    assert [p.index for p in predictions] == expected.tolist()
    assert predictions[-1].source == f"{tmp_path / 'big.npy'}[{len(raw) - 1}]"


def test_the_sample_cap_counts_every_file(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "MAX_SAMPLES", 5)
    np.save(tmp_path / "a.npy", np.zeros((3, 8, 8)))
    np.save(tmp_path / "b.npy", np.zeros((3, 8, 8)))
    with pytest.raises(EdgeInputError, match=r"more than 5 samples.*\(reached at .*b\.npy\)"):
        EdgeModel.open(built / "model.onnx").predict_files([tmp_path / "a.npy", tmp_path / "b.npy"])


def test_pillows_own_limit_is_left_as_it_was(built: Path, tmp_path: Path) -> None:
    before = Image.MAX_IMAGE_PIXELS
    _png_header(30000, 30000)(tmp_path / "bomb")
    with pytest.raises(EdgeInputError):
        EdgeModel.open(built / "model.onnx").predict_files([tmp_path / "bomb.png"])
    assert before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("case", ["header claims 10^12 samples", "png claims 30000x30000"])
def test_oversized_inputs_exit_2_from_the_script_and_the_cli(built: Path, tmp_path: Path, case: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    from fedunlearn.simulations.edge_cli import predict_command

    write, suffix, message = BAD_INPUTS[case]
    write(tmp_path / "input")
    argv = [str(built / "model.onnx"), str(tmp_path / f"input{suffix}")]
    assert runtime.main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    app = typer.Typer()
    app.command()(predict_command)
    result = CliRunner().invoke(app, argv)
    assert isinstance(result.exception, DataError) and re.search(message, str(result.exception))


# --- paths a manifest names ---------------------------------------------------------------------------------------


def test_export_file_stays_inside_the_export_folder(export: Path, tmp_path: Path) -> None:
    manifest = read_manifest(export / "model.onnx")
    assert runtime.export_file(manifest, "model.onnx", "artifact") == (export / "model.onnx").resolve()
    assert runtime.export_file(manifest, "sub/../model.pt", "source_checkpoint") == (export / "model.pt").resolve()
    (export / "escape.pt").symlink_to(tmp_path / "model.pt")
    for name in ("/etc/passwd", "../model.pt", "..", ".", "escape.pt", str(export / "model.onnx")):
        with pytest.raises(EdgeModelError, match=r"is not a file inside the export folder"):
            runtime.export_file(manifest, name, "source_checkpoint")
