"""``GET /experiments``, ``GET /experiments/{name}/report`` (JSON) and
``GET /experiments/{name}`` (the same report as a self-contained HTML page)."""

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from service.ab import build_report, render_html
from service.api.deps import ABDep
from service.state import ABTesting
from service.store import StoreUnavailable

router = APIRouter()


async def experiment_report(ab: ABTesting, name: str) -> dict[str, Any]:
    """The report of experiment ``name`` from its counters in Redis (built off the loop)."""
    experiment = ab.experiments.get(name)
    if experiment is None:
        configured = sorted(ab.experiments)
        raise HTTPException(
            404, f"experiment: unknown experiment {name!r} (configured: {configured})"
        )
    arms = [arm.name for arm in experiment.arms]
    try:
        counts = await ab.call(lambda: ab.log.counts(name, arms))
    except StoreUnavailable as error:
        raise HTTPException(503, f"report unavailable: {error}") from None
    return await run_in_threadpool(build_report, experiment, counts)


@router.get("/experiments", summary="Configured experiments")
async def experiments(ab: ABDep) -> dict[str, Any]:
    return {
        name: {
            "control": e.control,
            "arms": {a.name: {"weight": a.weight, "ranker": a.ranker} for a in e.arms},
            "segments": list(e.segments),
        }
        for name, e in ab.experiments.items()
    }


@router.get("/experiments/{name}/report", summary="A/B report (JSON)")
async def report_json(name: str, ab: ABDep) -> dict[str, Any]:
    return await experiment_report(ab, name)


@router.get("/experiments/{name}", response_class=HTMLResponse, summary="A/B report (HTML)")
async def report_page(name: str, ab: ABDep, request: Request) -> HTMLResponse:
    report = await experiment_report(ab, name)
    live = str(request.url_for("report_json", name=name))  # absolute: works in a saved copy
    return HTMLResponse(await run_in_threadpool(render_html, report, None, live))
