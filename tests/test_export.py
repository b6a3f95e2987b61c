"""Export: the ONNX bundle is the inference path only, faithful, and loadable by the service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from service.model.bundle import BundleError, load_bundle
from training.cli import main
from training.config import family_config_path, load_config
from training.export.onnx_bundle import ExportError, export_bundle, load_run, user_inputs

from .model_fixtures import QUICK, quick_config_file


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    args = ["--users", "300", "--items", "120", "--tags", "40"]
    assert main(["prepare", "--dataset", "synthetic", *args, "--out", str(root / "data")]) == 0
    return root


def train(root: Path, model: str) -> Path:
    run = root / f"run-{model}"
    if not run.exists():
        argv = ["train", "--data", str(root / "data"), "--model", model, "--out", str(run)]
        argv += ["--config", str(quick_config_file(root))]
        assert main([*argv, "--epochs", "1", "--device", "cpu"]) == 0
    return run


@pytest.fixture(scope="module")
def ctmvm_bundle(synthetic) -> tuple[Path, Path]:
    run = train(synthetic, "ctmvm")
    bundle = synthetic / "bundle-ctmvm"
    assert main(["export", "--run", str(run), "--out", str(bundle)]) == 0
    return run, bundle


def scores(bundle: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["scores"], feeds)[0]


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_dynamic_batch_parity_with_torch(ctmvm_bundle, batch):
    run, bundle = ctmvm_bundle
    _, data, model, store = load_run(run, None)
    users = torch.arange(batch) % data.n_users
    user = user_inputs(store, users)
    got = scores(bundle, {k: v.numpy() for k, v in user.items()})
    with torch.no_grad():
        expected = model.score_all(user).numpy()
    assert got.shape == (batch, data.n_tags) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-4


def test_shorter_histories_than_the_example_are_accepted(ctmvm_bundle):
    run, bundle = ctmvm_bundle
    _, _, model, store = load_run(run, None)
    full = user_inputs(store, torch.arange(3))
    user = {k: (v[:, :2] if k != "attributes" else v) for k, v in full.items()}
    with torch.no_grad():
        expected = model.score_all(user).numpy()
    assert np.abs(scores(bundle, {k: v.numpy() for k, v in user.items()}) - expected).max() < 1e-4


def test_graph_takes_user_features_only_and_no_supplementary_network(ctmvm_bundle):
    run, bundle = ctmvm_bundle
    graph = onnx.load(str(bundle / "model.onnx")).graph
    names = [i.name for i in graph.input]
    assert names[:2] == ["hist_tags", "hist_tags_w"]
    assert all(n.startswith("hist_") or n == "attributes" for n in names)
    assert not any("item" in n or "privileged" in n for n in names)
    assert [o.name for o in graph.output] == ["scores"]
    _, _, model, _ = load_run(run, None)
    constants = [numpy_helper.to_array(t) for t in graph.initializer]
    constants += [
        numpy_helper.to_array(a.t) for node in graph.node for a in node.attribute if a.type == 4
    ]
    supplementary = [p.detach().numpy() for p in model.supplementary.parameters()]
    for weight in supplementary:
        for c in constants:
            if c.size == weight.size and c.size > 1:
                assert not np.allclose(c.reshape(weight.shape), weight)
                assert not np.allclose(c.reshape(weight.T.shape), weight.T)


def test_manifest_round_trips_through_the_service_loader(ctmvm_bundle):
    run, bundle = ctmvm_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    loaded = load_bundle(bundle)
    assert loaded.model_version == manifest["model_version"]
    assert list(loaded.tags) == manifest["tags"]
    assert [i["name"] for i in manifest["inputs"]] == list(loaded.input_names)
    assert manifest["parity"]["max_abs_diff"] <= manifest["parity"]["tolerance"]
    assert set(manifest["files"]) == {"model.onnx", "themes.json", "users.jsonl"}
    themes = json.loads((bundle / "themes.json").read_text())
    assert themes["themes"] and all(1 <= len(t["tags"]) <= 3 for t in themes["themes"])
    _, data, _, _ = load_run(run, None)
    records = [json.loads(line) for line in (bundle / "users.jsonl").read_text().splitlines()]
    assert [r["user_id"] for r in records] == data.user_ids


def test_corrupt_model_is_refused_by_the_loader(ctmvm_bundle, tmp_path):
    _, bundle = ctmvm_bundle
    copy = tmp_path / "bundle"
    copy.mkdir()
    for f in bundle.iterdir():
        copy.joinpath(f.name).write_bytes(f.read_bytes())
    data = bytearray((copy / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)


def test_mostpop_bundle_scores_are_its_popularity(synthetic):
    """Exported by the CLI in its own process (torch's exporter logs once per process), which
    says where it wrote and nothing about torchvision, an exporter option we never use."""
    run = train(synthetic, "mostpop")
    bundle = synthetic / "bundle-mostpop"
    done = subprocess.run(
        [sys.executable, "-m", "training", "export", "--run", str(run), "--out", str(bundle)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {bundle}" in done.stdout and "torchvision" not in done.stderr, done.stderr
    _, _, model, store = load_run(run, None)
    got = scores(bundle, {k: v.numpy() for k, v in user_inputs(store, torch.arange(5)).items()})
    np.testing.assert_allclose(got, np.tile(model.popularity.numpy(), (5, 1)), atol=1e-7)


def test_failed_parity_leaves_no_bundle(synthetic):
    run = train(synthetic, "youtube")
    out = synthetic / "never"
    with pytest.raises(ExportError, match="differ"):
        export_bundle(run, out, tolerance=1e-12, parity_users=64)
    assert not out.exists()


@pytest.mark.realdata
def test_real_movielens_2k_parity(hetrec_movielens_2k, tmp_path):
    data = tmp_path / "data"
    argv = ["prepare", "--dataset", "hetrec-movielens", "--path", str(hetrec_movielens_2k)]
    assert main([*argv, "--out", str(data)]) == 0
    run = tmp_path / "run"
    config = load_config(family_config_path("hetrec"))  # shipped, made quick: parity only
    config["defaults"].update(augment_cuts=[], epochs=1, **QUICK)
    (tmp_path / "quick.json").write_text(json.dumps(config), encoding="utf-8")
    argv = ["train", "--data", str(data), "--model", "ctmvm", "--out", str(run), "--epochs", "1"]
    assert main([*argv, "--device", "cpu", "--config", str(tmp_path / "quick.json")]) == 0
    manifest = export_bundle(run, tmp_path / "bundle", parity_users=256)
    assert manifest["parity"]["max_abs_diff"] <= 1e-4
    assert len(manifest["tags"]) == 1586
