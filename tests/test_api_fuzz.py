"""schemathesis against the real server: every answer to schema-generated requests
(valid and invalid) must match the OpenAPI document, with no server error. Kept short
here; benchmarks/bench_chaos.py runs it over thousands of cases. The experiment declares
segments, so the document's rule that a segment belongs to the request's experiment is
held to the server's 422 too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT
from tests.service_helpers import EXPERIMENTS, make_settings, served, write_experiments

WITH_SEGMENTS = EXPERIMENTS.replace(
    "popular_by: ctr", "popular_by: ctr\n    segments: [home, search]"
)

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


def test_schemathesis_finds_no_failure(service_bundle, redis_server, tmp_path):
    settings = make_settings(
        service_bundle,
        redis_server.url,
        experiments=write_experiments(tmp_path / "e.yaml", WITH_SEGMENTS),
        bundle_root=tmp_path,  # reloads of generated paths: refused, never loaded
    )
    with served(settings) as base:
        run = subprocess.run(
            [str(SCHEMATHESIS), "run", f"{base}/openapi.json", "--checks", "all",
             "--max-examples", "5", "--seed", "13", "--no-color",
             "-H", "Authorization: Bearer test-admin-token"],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert " passed" in summary and "failure" not in summary.lower(), summary
