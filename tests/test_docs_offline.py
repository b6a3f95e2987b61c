"""``/docs`` and ``/redoc`` work without network: their JavaScript and CSS come from the
fastapi-offline package through the API itself, never from a CDN."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service_helpers import live_server, make_settings

ASSET = re.compile(r"""(?:src|href)\s*[=:]\s*["']([^"']+)["']|url:\s*'([^']+)'""")


def assets(page: str) -> list[str]:
    return [a or b for a, b in ASSET.findall(page)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_doc_pages_load_every_asset_from_the_api(service_bundle, page) -> None:
    # no lifespan needed: these pages read nothing from Redis or the model
    client = TestClient(create_app(make_settings(service_bundle, "redis://127.0.0.1:1/0")))
    response = client.get(page)
    assert response.status_code == 200
    urls = assets(response.text)
    assert urls, response.text
    remote = [u for u in urls if re.match(r"(https?:)?//", u)]
    assert not remote, f"{page} loads {remote} from the network"
    fetched = {url: client.get(url) for url in urls}
    for url, asset in fetched.items():
        assert asset.status_code == 200, url
    scripts = [r for u, r in fetched.items() if u.endswith(".js")]
    assert scripts and all(len(r.content) > 100_000 for r in scripts)
    assert "/openapi.json" in urls or "/openapi.json" in response.text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_swagger_ui_renders_the_operations_with_no_network(service_bundle, redis_server):
    settings = make_settings(service_bundle, redis_server.url)
    with live_server(settings) as base:
        dom = subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                # every host but the API's is unreachable, as on a machine offline
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--virtual-time-budget=15000", "--dump-dom", f"{base}/docs",
            ],
            capture_output=True, text=True, timeout=90, check=True,
        ).stdout  # fmt: skip
    assert 'class="swagger-ui' in dom
    operations = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/themes/rank", "/users/{user_id}/tags", "/events"} <= operations, operations
