"""The service's model-bundle loader against real bundles: a tiny ONNX graph built with the
``onnx`` helper API, written with a real manifest and hashes, then loaded with onnxruntime.
Each way a bundle can be unfit must be refused with a BundleError that says what is wrong."""

from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from service.model.bundle import (  # noqa: E402
    Bundle,
    BundleError,
    InputSpec,
    file_sha256,
    load_bundle,
    manifest_from_dict,
    manifest_to_dict,
)

L = 4
TAGS = ["action", "comedy", "dark", "funny", "space"]
T = len(TAGS)
THEMES = {"themes": [{"theme_id": "t1", "title": "Space", "tags": {"space": 1.0}}]}
USERS = [{"user_id": "u1", "hist_tags": [0, 4], "hist_tags_w": [1.0, 0.5]}]


def make_model(
    inputs: tuple[tuple[str, int], ...] = (
        ("hist_tags", TensorProto.INT64),
        ("hist_tags_w", TensorProto.FLOAT),
    ),
    n_tags: int = T,
    length: int = L,
) -> bytes:
    """scores = (hist_tags_w * float(hist_tags)) @ W: every input is used, graph is valid."""
    (ids_name, ids_type), (w_name, w_type) = inputs
    weights = np.arange(length * n_tags, dtype=np.float32).reshape(length, n_tags) / 10
    graph = helper.make_graph(
        [
            helper.make_node("Cast", [ids_name], ["ids_f"], to=TensorProto.FLOAT),
            helper.make_node("Cast", [w_name], ["w_f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["w_f", "ids_f"], ["x"]),
            helper.make_node("MatMul", ["x", "W"], ["scores"]),
        ],
        "tiny_scorer",
        [
            helper.make_tensor_value_info(ids_name, ids_type, ["batch", length]),
            helper.make_tensor_value_info(w_name, w_type, ["batch", length]),
        ],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", n_tags])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, weights.shape, weights.ravel())],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="test"
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def file_entry(path: Path) -> dict[str, Any]:
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def make_manifest(root: Path) -> dict[str, Any]:
    """A format-1 manifest for the files in ``root``, shaped exactly as the exporter writes."""
    files = {
        name: file_entry(root / name)
        for name in ("model.onnx", "themes.json", "users.jsonl")
        if (root / name).exists()
    }
    return {
        "format_version": 1,
        "model_name": "ctmvm",
        "model_version": "ctmvm-20261122T094500Z-1a2b3c4d",
        "created_at": "2026-11-22T09:45:00+00:00",
        "dataset": {"dataset": "synthetic", "family": "synthetic", "protocol": {"seed": 0}},
        "tags": list(TAGS),
        "max_history": L,
        "inputs": [
            {
                "name": "hist_tags",
                "dtype": "int64",
                "shape": ["batch", L],
                "feature": "tags",
                "role": "ids",
            },
            {
                "name": "hist_tags_w",
                "dtype": "float32",
                "shape": ["batch", L],
                "feature": "tags",
                "role": "weights",
            },
        ],
        "outputs": [{"name": "scores", "dtype": "float32", "shape": ["batch", T]}],
        "privileged": {"genre": ["others", "Action", "Comedy"]},
        "attributes": {"age": ["18-24", "25-34"]},
        "metrics": {"ndcg@10": 0.25, "test_users": 120, "tag_privileged_field": "genre"},
        "parity": {"max_abs_diff": 2e-07, "tolerance": 0.0001, "users": 256},
        "files": files,
    }


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")


def read_manifest(root: Path) -> dict[str, Any]:
    return json.loads((root / "manifest.json").read_text(encoding="utf-8"))


def edit_manifest(root: Path, **changes: Any) -> dict[str, Any]:
    manifest = read_manifest(root)
    manifest.update(changes)
    write_manifest(root, manifest)
    return manifest


def replace_model(root: Path, data: bytes) -> None:
    """Write a new model.onnx and record its hash, so only the graph check can object."""
    (root / "model.onnx").write_bytes(data)
    manifest = read_manifest(root)
    manifest["files"]["model.onnx"] = file_entry(root / "model.onnx")
    write_manifest(root, manifest)


def load_error(root: Path, **kwargs: Any) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(root, **kwargs)
    message = str(info.value)
    assert str(root) in message, message  # every error names the bundle
    return message


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A good bundle: model, themes, users, and a manifest listing all three."""
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "model.onnx").write_bytes(make_model())
    (root / "themes.json").write_text(json.dumps(THEMES), encoding="utf-8")
    (root / "users.jsonl").write_text(
        "".join(json.dumps(u) + "\n" for u in USERS), encoding="utf-8"
    )
    write_manifest(root, make_manifest(root))
    return root


# --------------------------------------------------------------------------- good bundles


def test_valid_bundle_loads(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    assert isinstance(bundle, Bundle)
    assert bundle.path == bundle_dir
    assert bundle.model_path == bundle_dir / "model.onnx"
    assert bundle.themes_path == bundle_dir / "themes.json"
    assert bundle.users_path == bundle_dir / "users.jsonl"
    assert bundle.model_version == "ctmvm-20261122T094500Z-1a2b3c4d"
    assert bundle.tags == tuple(TAGS)
    assert bundle.n_tags == T
    assert bundle.input_names == ("hist_tags", "hist_tags_w")
    m = bundle.manifest
    assert m.format_version == 1
    assert m.model_name == "ctmvm"
    assert m.max_history == L
    assert m.inputs[0] == InputSpec("hist_tags", "int64", ("batch", L), "tags", "ids")
    assert m.outputs[0].name == "scores"
    assert m.outputs[0].shape == ("batch", T)
    assert m.privileged["genre"] == ("others", "Action", "Comedy")
    assert m.attributes["age"] == ("18-24", "25-34")
    assert m.metrics["ndcg@10"] == 0.25
    assert m.parity.passed
    assert m.files["model.onnx"].sha256 == file_sha256(bundle_dir / "model.onnx")
    assert m.dataset["family"] == "synthetic"


def test_loaded_model_runs_with_manifest_inputs(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    feeds = {
        "hist_tags": np.array([[1, 2, 0, 0]], dtype=np.int64),
        "hist_tags_w": np.array([[1.0, 0.5, 0.0, 0.0]], dtype=np.float32),
    }
    (scores,) = session.run(["scores"], {name: feeds[name] for name in bundle.input_names})
    assert scores.shape == (1, bundle.n_tags)
    assert scores.dtype == np.float32


def test_manifest_round_trips_exactly(bundle_dir: Path) -> None:
    original = read_manifest(bundle_dir)
    manifest = load_bundle(bundle_dir).manifest
    dumped = manifest_to_dict(manifest)
    assert dumped == original
    assert list(dumped) == list(original)  # same key order as the exporter
    assert json.loads(json.dumps(dumped)) == original
    assert manifest_from_dict(dumped) == manifest


def test_manifest_is_frozen(bundle_dir: Path) -> None:
    manifest = load_bundle(bundle_dir).manifest
    with pytest.raises(AttributeError):
        manifest.model_version = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.metrics["ndcg@10"] = 1.0  # type: ignore[index]


def test_optional_files_absent(bundle_dir: Path) -> None:
    for name in ("themes.json", "users.jsonl"):
        (bundle_dir / name).unlink()
    write_manifest(bundle_dir, make_manifest(bundle_dir))
    bundle = load_bundle(bundle_dir)
    assert bundle.themes_path is None
    assert bundle.users_path is None


def test_unlisted_optional_file_is_ignored(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    del manifest["files"]["themes.json"]
    write_manifest(bundle_dir, manifest)
    (bundle_dir / "themes.json").write_text("not even json", encoding="utf-8")
    bundle = load_bundle(bundle_dir)
    assert bundle.themes_path is None  # unverified, so not offered to the service
    assert bundle.users_path == bundle_dir / "users.jsonl"


def test_check_model_false_skips_onnxruntime(bundle_dir: Path) -> None:
    replace_model(bundle_dir, b"not an onnx model")
    assert load_bundle(bundle_dir, check_model=False).n_tags == T


def test_loader_does_not_import_training_torch_or_onnx() -> None:
    code = (
        "import sys, service.model.bundle\n"
        "bad = [m for m in ('torch', 'onnx', 'training') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# --------------------------------------------------------------------------- bad bundles


def test_missing_directory(tmp_path: Path) -> None:
    message = load_error(tmp_path / "nope")
    assert "directory not found" in message


def test_path_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("x", encoding="utf-8")
    assert "not a directory" in load_error(path)


def test_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").unlink()
    assert "manifest.json not found" in load_error(bundle_dir)


def test_invalid_json_names_the_line(bundle_dir: Path) -> None:
    text = json.dumps(read_manifest(bundle_dir), indent=2).splitlines()
    text[3] = text[3].rstrip(",")  # a missing comma on line 4
    (bundle_dir / "manifest.json").write_text("\n".join(text), encoding="utf-8")
    message = load_error(bundle_dir)
    assert "not valid JSON" in message
    assert "line 5" in message  # json reports where the next token was expected


def test_manifest_not_an_object(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").write_text("[1, 2]", encoding="utf-8")
    assert "expected an object, found array" in load_error(bundle_dir)


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_unsupported_format_version(bundle_dir: Path, version: Any) -> None:
    edit_manifest(bundle_dir, format_version=version)
    message = load_error(bundle_dir)
    assert f"format_version {version!r} is not supported" in message
    assert "supported: 1" in message


@pytest.mark.parametrize(
    "key", ["format_version", "model_version", "tags", "inputs", "parity", "files", "metrics"]
)
def test_missing_key(bundle_dir: Path, key: str) -> None:
    manifest = read_manifest(bundle_dir)
    del manifest[key]
    write_manifest(bundle_dir, manifest)
    assert f"missing key '{key}'" in load_error(bundle_dir)


def test_missing_nested_key(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    del manifest["inputs"][1]["role"]
    write_manifest(bundle_dir, manifest)
    assert "missing key 'inputs[1].role'" in load_error(bundle_dir)


def test_model_not_hash_listed(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    del manifest["files"]["model.onnx"]
    write_manifest(bundle_dir, manifest)
    assert "missing key 'files[\"model.onnx\"]'" in load_error(bundle_dir)


def test_unexpected_key(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, modle_name="typo")
    message = load_error(bundle_dir)
    assert "unexpected key(s) ['modle_name']" in message


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("max_history",), "100", "key 'max_history': expected an integer >= 1, found string"),
        (("max_history",), True, "key 'max_history': expected an integer >= 1, found boolean"),
        (("model_name",), 3, "key 'model_name': expected a non-empty string, found integer"),
        (("created_at",), "yesterday", "key 'created_at': expected an ISO-8601 timestamp"),
        (("dataset",), [], "key 'dataset': expected an object, found array"),
        (("inputs", 0, "dtype"), "int8", "key 'inputs[0].dtype': expected one of"),
        (("inputs", 1, "shape"), ["batch", -1], "key 'inputs[1].shape[1]'"),
        (("inputs", 1, "shape"), [], "key 'inputs[1].shape': expected a non-empty list"),
        (("parity", "tolerance"), "small", "key 'parity.tolerance': expected a number"),
        (("metrics",), [0.25], "key 'metrics': expected an object, found array"),
        (("privileged", "genre"), "Action", "key 'privileged.genre': expected a list"),
        (
            ("files", "model.onnx", "sha256"),
            "abc",
            "key 'files[\"model.onnx\"].sha256': expected 64 lowercase hex digits",
        ),
    ],
)
def test_mistyped_key(bundle_dir: Path, path: tuple[Any, ...], value: Any, words: str) -> None:
    manifest = read_manifest(bundle_dir)
    target = manifest
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    write_manifest(bundle_dir, manifest)
    assert words in load_error(bundle_dir)


@pytest.mark.parametrize(
    ("tags", "words"),
    [
        ([], "key 'tags': expected a non-empty list of strings, found array []"),
        ("action", "key 'tags': expected a non-empty list of strings, found string"),
        (["action", 7, "dark", "funny", "space"], "key 'tags[1]': expected a non-empty string"),
    ],
)
def test_bad_tags(bundle_dir: Path, tags: Any, words: str) -> None:
    edit_manifest(bundle_dir, tags=tags)
    assert words in load_error(bundle_dir)


def test_tags_and_scores_width_disagree(bundle_dir: Path) -> None:
    edit_manifest(bundle_dir, tags=[*TAGS, "extra"])
    message = load_error(bundle_dir)
    assert "outputs[0].shape" in message
    assert f"len(tags) = {T + 1}" in message
    assert f"found ['batch', {T}]" in message


def test_first_output_not_scores(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["outputs"][0]["name"] = "logits"
    write_manifest(bundle_dir, manifest)
    assert "key 'outputs[0].name': expected 'scores', found string 'logits'" in load_error(
        bundle_dir
    )


def test_missing_model(bundle_dir: Path) -> None:
    (bundle_dir / "model.onnx").unlink()
    assert "model.onnx not found" in load_error(bundle_dir)


def test_flipped_byte_in_model(bundle_dir: Path) -> None:
    data = bytearray((bundle_dir / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle_dir / "model.onnx").write_bytes(bytes(data))
    message = load_error(bundle_dir)
    assert "model.onnx is corrupt or replaced" in message
    assert "sha256 expected" in message
    assert read_manifest(bundle_dir)["files"]["model.onnx"]["sha256"] in message


def test_listed_themes_missing(bundle_dir: Path) -> None:
    (bundle_dir / "themes.json").unlink()
    message = load_error(bundle_dir)
    assert "themes.json is listed in manifest.json 'files' but not found" in message


def test_themes_modified(bundle_dir: Path) -> None:
    (bundle_dir / "themes.json").write_text(json.dumps({"themes": []}), encoding="utf-8")
    assert "themes.json is corrupt or replaced" in load_error(bundle_dir)


def test_users_modified_same_size(bundle_dir: Path) -> None:
    path = bundle_dir / "users.jsonl"
    path.write_text(path.read_text(encoding="utf-8").replace("u1", "u2"), encoding="utf-8")
    message = load_error(bundle_dir)
    assert "users.jsonl is corrupt or replaced: sha256 expected" in message


def test_file_name_outside_bundle_rejected(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["files"]["../secret"] = copy.deepcopy(manifest["files"]["themes.json"])
    write_manifest(bundle_dir, manifest)
    assert "plain file names" in load_error(bundle_dir)


@pytest.mark.parametrize("diff", [0.01, float("nan")])
def test_parity_above_tolerance(bundle_dir: Path, diff: float) -> None:
    edit_manifest(bundle_dir, parity={"max_abs_diff": diff, "tolerance": 0.0001, "users": 256})
    message = load_error(bundle_dir)
    assert "parity check failed" in message
    assert "must not be served" in message


def test_model_that_is_not_onnx(bundle_dir: Path) -> None:
    replace_model(bundle_dir, b"\x00\x01 definitely not a protobuf graph")
    assert "model.onnx cannot be loaded by onnxruntime" in load_error(bundle_dir)


def test_manifest_input_name_not_in_model(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["inputs"][1]["name"] = "hist_tag_weights"
    write_manifest(bundle_dir, manifest)
    message = load_error(bundle_dir)
    assert "inputs do not match" in message
    assert "not in model: ['hist_tag_weights']" in message
    assert "not in manifest: ['hist_tags_w']" in message


def test_model_input_missing_from_manifest(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    del manifest["inputs"][1]
    write_manifest(bundle_dir, manifest)
    assert "not in manifest: ['hist_tags_w']" in load_error(bundle_dir)


def test_manifest_input_dtype_differs_from_model(bundle_dir: Path) -> None:
    replace_model(
        bundle_dir,
        make_model(inputs=(("hist_tags", TensorProto.INT32), ("hist_tags_w", TensorProto.FLOAT))),
    )
    message = load_error(bundle_dir)
    assert "input 'hist_tags': manifest dtype int64 (tensor(int64))" in message
    assert "model.onnx has tensor(int32)" in message


def test_manifest_input_shape_differs_from_model(bundle_dir: Path) -> None:
    replace_model(bundle_dir, make_model(length=L + 1))
    message = load_error(bundle_dir)
    assert f"input 'hist_tags': manifest shape ['batch', {L}]" in message
    assert f"model.onnx has ['batch', {L + 1}]" in message


def test_model_scores_width_differs_from_manifest(bundle_dir: Path) -> None:
    replace_model(bundle_dir, make_model(n_tags=T + 2))
    message = load_error(bundle_dir)
    assert "output 'scores'" in message
    assert f"model.onnx has ['batch', {T + 2}]" in message
