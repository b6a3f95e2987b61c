"""The service's small parts on their own: top-k, the cached profile format, feature
validation and batching, the micro-batcher, settings."""

from __future__ import annotations

import asyncio
import dataclasses
import threading

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from service.model.batching import MicroBatcher
from service.model.bundle import load_bundle
from service.model.features import FeatureError, FeatureSpec
from service.model.profiles import ProfileCodec, ProfileFormatError, top_k
from service.settings import Settings


def test_top_k_orders_by_score_then_tag_id():
    scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.2], [1.0, 1.0, 1.0, 0.0, 2.0]], dtype=np.float32)
    ids, values = top_k(scores, 3)
    assert ids.tolist() == [[1, 3, 2], [4, 0, 1]]
    assert np.allclose(values, [[0.9, 0.9, 0.5], [2.0, 1.0, 1.0]])
    all_ids, _ = top_k(scores, 99)  # k beyond the vocabulary: every tag, sorted
    assert all_ids.tolist() == [[1, 3, 2, 4, 0], [4, 0, 1, 2, 3]]


def test_cached_profile_slices_to_any_k_without_reencoding():
    codec = ProfileCodec(['a "quoted" tag', "b,c", "ünï"], "v1")
    blob = codec.encode(np.array([2, 1, 0]), np.array([0.75, 0.5, 0.125], dtype=np.float32))
    for k, expected in [(1, [2]), (2, [2, 1]), (3, [2, 1, 0]), (10, [2, 1, 0])]:
        body = orjson.loads(codec.response("u:1", blob, k, cached=True, source="model"))
        assert [t["tag_id"] for t in body["tags"]] == expected
        assert body["user_id"] == "u:1" and body["model_version"] == "v1"
        assert body["cached"] is True and body["source"] == "model"
    body = orjson.loads(codec.response("u", blob, 3, cached=False, source="popular"))
    assert body["tags"][0] == {"tag": "ünï", "tag_id": 2, "score": 0.75}
    assert body["tags"][2]["tag"] == 'a "quoted" tag' and body["cached"] is False
    with pytest.raises(ProfileFormatError):
        codec.response("u", b"something else", 3, cached=True, source="model")


@pytest.fixture(scope="module")
def spec(service_bundle) -> FeatureSpec:
    return FeatureSpec.from_manifest(load_bundle(service_bundle).manifest)


def test_feature_spec_follows_the_manifest(spec, service_bundle):
    manifest = orjson.loads((service_bundle / "manifest.json").read_bytes())
    assert spec.names == tuple(i["name"] for i in manifest["inputs"])
    tags = next(b for b in spec.bags if b.name == "hist_tags")
    assert tags.vocabulary == len(manifest["tags"]) and tags.max_len == manifest["max_history"]


def test_validate_fills_defaults_and_normalises_weights(spec):
    record = spec.validate({"hist_tags": [3, 1], "hist_tags_w": [3, 1]})
    assert record["hist_tags"] == [3, 1] and record["hist_tags_w"] == [0.75, 0.25]
    assert spec.validate({"hist_tags": [4, 5]})["hist_tags_w"] == [0.5, 0.5]
    assert all(record[b.name] == [] for b in spec.bags if b.name != "hist_tags")
    assert record["attributes"] == [0] * len(spec.attribute_sizes)


@pytest.mark.parametrize(
    ("features", "field"),
    [
        ([1, 2], "features"),
        ({"hist_tags": 3}, "features.hist_tags"),
        ({"hist_tags": [True]}, "features.hist_tags[0]"),
        ({"hist_tags": [0, -1]}, "features.hist_tags[1]"),
        ({"hist_tags": [1], "hist_tags_w": [float("nan")]}, "features.hist_tags_w[0]"),
        ({"hist_tags": [1], "hist_tags_w": [0]}, "features.hist_tags_w"),
        ({"attributes": [0, 99]}, "features.attributes[1]"),
        ({"attributes": [0, 0, 0]}, "features.attributes"),
    ],
)
def test_validate_names_the_bad_field(spec, features, field):
    with pytest.raises(FeatureError) as error:
        spec.validate(features)
    assert error.value.field == field


def test_a_model_without_attributes_accepts_an_empty_attributes_list(service_bundle):
    manifest = load_bundle(service_bundle).manifest
    inputs = tuple(i for i in manifest.inputs if i.name != "attributes")
    spec = FeatureSpec.from_manifest(dataclasses.replace(manifest, inputs=inputs, attributes={}))
    assert "attributes" not in spec.validate({"hist_tags": [1], "attributes": []})
    assert "attributes" not in spec.encode([spec.validate({"attributes": []})])
    with pytest.raises(FeatureError, match="unknown feature"):
        spec.validate({"attributes": [1]})


def test_encode_pads_each_bag_to_the_longest_in_the_batch(spec):
    records = [spec.validate({"hist_tags": [1, 2, 3]}), spec.empty()]
    feeds = spec.encode(records)
    assert feeds["hist_tags"].tolist() == [[1, 2, 3], [0, 0, 0]]
    assert feeds["hist_tags_w"][0].tolist() == pytest.approx([1 / 3] * 3)
    assert feeds["hist_tags_w"][1].tolist() == [0, 0, 0]
    other = next(b for b in spec.bags if b.name != "hist_tags")
    assert feeds[other.name].shape == (2, 1)  # never a zero-width input
    assert feeds["attributes"].shape == (2, len(spec.attribute_sizes))
    assert spec.fits(records[0]) and not spec.fits({**records[0], "hist_tags": [10_000]})
    assert not spec.fits({"hist_tags": [1]})


class CountingModel:
    """Rows = the items themselves; records how each call was batched and on which thread."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[list[int]] = []
        self.threads: set[str] = set()
        self.fail = fail

    def __call__(self, items):
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        if self.fail:
            raise RuntimeError("model exploded")
        return np.asarray(items, dtype=np.float32)[:, None] * 2


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_submits_share_bounded_model_runs_off_the_event_loop():
    model = CountingModel()
    observed = []

    async def main():
        batcher = MicroBatcher(
            model, max_batch=8, max_wait_s=0.05, observe=lambda n, s: observed.append(n)
        )
        rows = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
        await batcher.close()
        return rows

    rows = run(main())
    assert [float(r[0]) for r in rows] == [2.0 * i for i in range(20)]  # each gets its own row
    assert [len(c) for c in model.calls] == [8, 8, 4]
    assert sorted(i for c in model.calls for i in c) == list(range(20))
    assert observed == [8, 8, 4]
    assert threading.main_thread().name not in model.threads


def test_a_lone_request_waits_at_most_the_window():
    model = CountingModel()

    async def main():
        batcher = MicroBatcher(model, max_batch=64, max_wait_s=0.01)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.submit(1)
        elapsed = loop.time() - start
        await batcher.close()
        return elapsed

    assert run(main()) < 0.5 and model.calls == [[1]]


def test_disabled_batching_runs_every_request_alone():
    model = CountingModel()

    async def main():
        batcher = MicroBatcher(model, max_batch=1)
        await asyncio.gather(*(batcher.submit(i) for i in range(5)))
        await batcher.close()

    run(main())
    assert sorted(len(c) for c in model.calls) == [1] * 5


def test_a_failed_run_fails_its_waiters_and_the_next_batch_still_runs():
    failing = CountingModel(fail=True)

    async def main():
        batcher = MicroBatcher(failing, max_batch=4, max_wait_s=0.01)
        results = await asyncio.gather(
            *(batcher.submit(i) for i in range(3)), return_exceptions=True
        )
        failing.fail = False
        after = await batcher.submit(7)
        await batcher.close()
        return results, after

    results, after = run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert float(after[0]) == 14.0


def test_close_answers_what_was_already_queued():
    model = CountingModel()

    async def main():
        batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.05)
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)  # let them enqueue
        await batcher.close()
        late = await batcher.submit(9)  # after close: runs on its own, still answered
        return [float(r[0]) for r in await asyncio.gather(*pending)], float(late[0])

    rows, late = run(main())
    assert rows == [0.0, 2.0, 4.0, 6.0, 8.0] and late == 18.0


def test_settings_come_from_the_environment_and_are_validated(monkeypatch):
    monkeypatch.setenv("TAGPROFILE_MAX_K", "20")
    monkeypatch.setenv("TAGPROFILE_DEVICE", "cpu")
    monkeypatch.setenv("TAGPROFILE_ADMIN_TOKEN", "s3cret")
    settings = Settings()
    assert settings.max_k == 20 and settings.device == "cpu"
    assert "s3cret" not in repr(settings)  # secrets never reach logs
    monkeypatch.setenv("TAGPROFILE_DEVICE", "tpu")
    with pytest.raises(ValidationError, match="device"):
        Settings()
    with pytest.raises(ValidationError, match="max_batch"):
        Settings(device="cpu", max_batch=0)
