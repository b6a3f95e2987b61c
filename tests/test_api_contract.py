"""The API contract: one documented error model for every error answer, a body limit
enforced before parsing, admin routes that authenticate before reading a body, the
OpenAPI document describing what the server answers, and reloads that cannot put another
model under a serving version or load from outside the bundle root."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from service.api.errors import ErrorResponse
from service.model.bundle import MANIFEST_NAME, file_sha256
from service.state import VersionConflict
from tests.service_helpers import (
    ADMIN,
    client_for,
    copy_with_version,
    make_settings,
    served,
    users,
)


@pytest.fixture
def settings(service_bundle, redis_server):
    return make_settings(service_bundle, redis_server.url)


def documented(openapi: dict, path: str, method: str, status: int) -> dict | None:
    """The documented JSON schema of an answer, None where the status is undocumented."""
    response = openapi["paths"][path][method]["responses"].get(str(status))
    if response is None:
        return None
    return response["content"]["application/json"]["schema"]


BAD_REQUESTS = [
    # (method, url, template, body, headers, status, field)
    ("get", "/users/u0/tags?k=0", "/users/{user_id}/tags", None, {}, 422, "query.k"),
    ("get", "/users/u%20x/tags", "/users/{user_id}/tags", None, {}, 422, "path.user_id"),
    ("post", "/themes/rank", "/themes/rank", b"\xff\x80\x81", {}, 400, "body"),
    ("post", "/themes/rank", "/themes/rank", b'{"user_id": "u0",}', {}, 422, "body"),
    ("post", "/themes/rank", "/themes/rank", b'{"user_id": "u0", "k": 0}', {}, 422, "k"),
    ("put", "/users/u0/features", "/users/{user_id}/features", b"{}", {}, 401, "authorization"),
    (
        "post",
        "/events",
        "/events",
        b'{"event_id": "e", "request_id": "r1", "type": "click", "theme_id": "t"}',
        {},
        404,
        "request_id",
    ),
    ("delete", "/themes/rank", None, None, {}, 405, "method"),
    ("get", "/no/such/endpoint", None, None, {}, 404, "path"),
]


@pytest.mark.parametrize(
    ("method", "url", "template", "body", "headers", "status", "field"), BAD_REQUESTS
)
def test_every_error_answer_is_the_documented_error_model(
    settings, method, url, template, body, headers, status, field
):
    with client_for(settings, load_users=False) as client:
        openapi = client.get("/openapi.json").json()
        headers = {"content-type": "application/json", **headers}
        response = client.request(method.upper(), url, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = ErrorResponse.model_validate(response.json())
    assert error.errors and error.errors[0].field == field, error
    assert error.detail.startswith(f"{field}: ")
    if template is not None:  # the operation documents this answer, in this model
        schema = documented(openapi, template, method, status)
        assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (template, status)
    if status == 405:
        assert response.headers["allow"] == "POST"


def test_the_openapi_document_has_one_error_model_and_every_status(settings):
    with client_for(settings, load_users=False) as client:
        openapi = client.get("/openapi.json").json()
    schemas = openapi["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ErrorResponse" in schemas
    expected = {
        ("/users/{user_id}/tags", "get"): {404, 422, 503},
        ("/themes/rank", "post"): {400, 404, 413, 422, 503},
        ("/events", "post"): {400, 404, 409, 410, 413, 422, 503},
        ("/users/{user_id}/features", "put"): {400, 401, 403, 404, 413, 422, 503},
        ("/admin/reload", "post"): {400, 401, 403, 404, 409, 413, 422},
        ("/experiments/{name}", "get"): {404, 503},
        ("/experiments/{name}/report", "get"): {404, 503},
    }
    for (path, method), statuses in expected.items():
        responses = openapi["paths"][path][method]["responses"]
        errors = {int(code) for code in responses if code.startswith(("4", "5"))}
        assert statuses <= errors, (path, method, sorted(errors))
        for code in errors:
            schema = responses[str(code)]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, code)
    features = openapi["paths"]["/users/{user_id}/features"]["put"]["requestBody"]
    record = features["content"]["application/json"]["schema"]
    assert record["additionalProperties"] is False and "hist_tags" in record["properties"]
    assert openapi["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_overflowing_weights_are_422_not_500(settings):
    # math.fsum([1e308, 1e308]) raises OverflowError
    features = {"hist_tags": [1, 2], "hist_tags_w": [1e308, 1e308]}
    with client_for(settings, load_users=False) as client:
        response = client.put("/users/u0/features", json=features, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "body.hist_tags_w"


# ------------------------------------------------------------------ body limit, raw HTTP
def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def exchange(base: str, head: bytes, body: bytes = b"", wait_s: float = 2.0) -> bytes | None:
    """Send a request head (and ``body``), return what the server answers within
    ``wait_s`` seconds (None: nothing, the server is waiting for more)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(head + body)
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            return None
        deadline = time.monotonic() + wait_s
        while b"\r\n\r\n" in answer and time.monotonic() < deadline:
            try:
                more = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not more:
                break
            answer += more
        return answer


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_a_body_over_the_limit_is_413_before_it_is_read(service_bundle, redis_server):
    settings = make_settings(service_bundle, redis_server.url, max_body_bytes=65536)
    size = 50 * 1024 * 1024
    with served(settings, load_users=False) as base:
        before = rss_bytes()
        head = (
            b"PUT /users/u1/features HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"authorization: Bearer test-admin-token\r\ncontent-length: %d\r\n\r\n" % size
        )
        answer = exchange(base, head)
        if answer is None:  # the server waits for the body: send it all (what the fix prevents)
            chunk = b"[" + b"1," * (size // 2 - 1) + b"1]"
            answer = exchange(base, head, b'{"hist_tags": ' + chunk[: size - 16] + b"}", 30)
        assert answer is not None
        status, body = status_and_body(answer)
        assert status == 413 and body["errors"][0]["field"] == "body", body
        assert rss_bytes() - before < 20 * 1024 * 1024
        # a chunked body (no length announced) is counted as it arrives
        chunked = (
            b"POST /themes/rank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        piece = b"x" * 40000
        data = b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for _ in range(3))
        status, body = status_and_body(exchange(base, chunked, data))
        assert status == 413 and body["errors"][0]["field"] == "body"


def test_admin_routes_refuse_before_reading_the_body(settings):
    # 10 of the 1,000 announced bytes: the answer must not wait for the rest
    with served(settings, load_users=False) as base:
        for head in (
            b"PUT /users/u1/features HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n",
            b"POST /admin/reload HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n",
        ):
            answer = exchange(base, head + b"content-length: 1000\r\n\r\n", b'{"hist_tag')
            assert answer is not None, "the server read the body before authenticating"
            status, body = status_and_body(answer)
            assert status == 401 and body["errors"][0]["field"] == "authorization"


# ------------------------------------------------------------------ reload
def test_reload_refuses_paths_outside_the_bundle_root_alike(settings, tmp_path):
    root = tmp_path / "bundles"
    root.mkdir()
    inside = copy_with_version(settings.bundle, root / "next", "ctmvm-next")
    with client_for(settings.model_copy(update={"bundle_root": root})) as client:
        answers = [
            client.post("/admin/reload", json={"bundle": path}, headers=ADMIN)
            for path in ("/etc", "/no/such/dir", "../../../etc", str(settings.bundle))
        ]
        assert {a.status_code for a in answers} == {403}
        assert len({a.text for a in answers}) == 1  # existing or not: the same answer
        missing = client.post("/admin/reload", json={"bundle": "nope"}, headers=ADMIN)
        assert missing.status_code == 404
        loaded = client.post("/admin/reload", json={"bundle": "next"}, headers=ADMIN)
        assert loaded.status_code == 200 and loaded.json()["model_version"] == "ctmvm-next"
    assert inside.is_dir()


def perturbed_copy(bundle: Path, target: Path) -> Path:
    """The bundle with one weight of its ONNX graph changed: another model, same version."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    shutil.copytree(bundle, target)
    model = onnx.load(target / "model.onnx")
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and array.size > 1:
            init.CopyFrom(numpy_helper.from_array(array * 1.5 + 0.1, init.name))
            break
    onnx.save(model, target / "model.onnx")
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    entry = manifest["files"]["model.onnx"]
    entry["sha256"] = file_sha256(target / "model.onnx")
    entry["bytes"] = (target / "model.onnx").stat().st_size
    (target / MANIFEST_NAME).write_text(json.dumps(manifest))
    return target


def test_reload_refuses_another_model_under_the_serving_version(settings, tmp_path):
    perturbed_copy(settings.bundle, tmp_path / "other")
    user = users(settings.bundle)[0]["user_id"]
    with client_for(settings.model_copy(update={"bundle_root": tmp_path})) as client:
        client.get(f"/users/{user}/tags")
        cached = client.get(f"/users/{user}/tags").json()
        assert cached["cached"] is True
        other = str(tmp_path / "other")
        refused = client.post("/admin/reload", json={"bundle": other}, headers=ADMIN)
        assert refused.status_code == 409, refused.text
        assert refused.json()["errors"][0]["field"] == "bundle"
        assert client.get(f"/users/{user}/tags").json() == cached  # the old model serves


def test_features_written_for_another_vocabulary_are_not_scored(settings, tmp_path):
    # same ids, same ranges, another meaning: a privileged value renamed
    other = copy_with_version(settings.bundle, tmp_path / "renamed", "ctmvm-renamed")
    manifest = json.loads((other / MANIFEST_NAME).read_text())
    field = next(iter(manifest["privileged"]))
    manifest["privileged"][field][1] = "renamed-value"
    (other / MANIFEST_NAME).write_text(json.dumps(manifest))
    user = users(settings.bundle)[0]["user_id"]
    with client_for(settings.model_copy(update={"bundle_root": tmp_path})) as client:
        assert client.get(f"/users/{user}/tags").json()["source"] == "model"
        swapped = client.post("/admin/reload", json={"bundle": str(other)}, headers=ADMIN)
        assert swapped.status_code == 200, swapped.text
        assert client.get(f"/users/{user}/tags").json()["source"] == "popular"
        rewritten = client.put(f"/users/{user}/features", json={"hist_tags": [1]}, headers=ADMIN)
        assert rewritten.status_code == 200
        assert client.get(f"/users/{user}/tags").json()["source"] == "model"


def test_an_arm_bundle_with_another_model_under_the_same_version_stops_start_up(settings, tmp_path):
    other = perturbed_copy(settings.bundle, tmp_path / "arm-bundle")
    experiments = tmp_path / "e.yaml"
    experiments.write_text(
        "experiments:\n  - name: themes\n    salt: s\n    control: popular\n    arms:\n"
        "      - {name: popular, weight: 1, ranker: popular}\n"
        f"      - {{name: profile, weight: 1, ranker: profile, bundle: {other}}}\n"
    )
    conflicting = settings.model_copy(update={"experiments": experiments})
    with pytest.raises(VersionConflict, match="model_version"), client_for(conflicting):
        pass
