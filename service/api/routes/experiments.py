"""``GET /experiments``, ``GET /experiments/{name}/report`` (JSON) and
``GET /experiments/{name}`` (the same report as a self-contained HTML page)."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse

from service.ab import build_report, render_html
from service.api.deps import ABDep
from service.api.errors import ApiError, error_responses
from service.state import ABTesting
from service.store import StoreUnavailable

router = APIRouter()


async def experiment_report(ab: ABTesting, name: str) -> dict[str, Any]:
    """The report of experiment ``name`` from its counters in Redis (built off the loop)."""
    experiment = ab.experiments.get(name)
    if experiment is None:
        configured = sorted(ab.experiments)
        raise ApiError(404, "name", f"unknown experiment {name!r} (configured: {configured})")
    arms = [arm.name for arm in experiment.arms]
    run = experiment.run_id
    try:
        counts, unknown = await ab.call(lambda: ab.log.counts(name, run, arms))
        others = await ab.call(lambda: other_runs(ab, name, run))
    except StoreUnavailable as error:
        raise ApiError(503, "redis", f"report unavailable: {error}") from None
    report = await run_in_threadpool(build_report, experiment, counts)
    report["run"] = {"id": run, **experiment.run}
    report["unknown_arms"] = {
        arm: {
            "users": len(c.impressions),
            "impressions": sum(c.impressions.values()),
            "clicks": sum(c.clicks.values()),
        }
        for arm, c in unknown.items()
    }
    report["other_runs"] = others
    return report


async def other_runs(ab: ABTesting, name: str, current: str) -> dict[str, Any]:
    """The experiment's earlier runs (other salt or arms) with their totals per arm:
    not part of this report, but not hidden either."""
    runs = await ab.log.runs(name)
    return {
        run: {**config, "arms_served": await ab.log.run_totals(name, run)}
        for run, config in sorted(runs.items(), key=lambda item: item[1].get("first_seen", 0))
        if run != current
    }


@router.get("/experiments", summary="Configured experiments")
async def experiments(ab: ABDep) -> dict[str, Any]:
    return {
        name: {
            "run": e.run_id,
            "control": e.control,
            "arms": {a.name: {"weight": a.weight, "ranker": a.ranker} for a in e.arms},
            "segments": list(e.segments),
        }
        for name, e in ab.experiments.items()
    }


@router.get(
    "/experiments/{name}/report",
    summary="A/B report (JSON)",
    responses=error_responses(404, 503),
)
async def report_json(name: str, ab: ABDep) -> dict[str, Any]:
    return await experiment_report(ab, name)


@router.get(
    "/experiments/{name}",
    response_class=HTMLResponse,
    summary="A/B report (HTML)",
    responses=error_responses(404, 503),
)
async def report_page(name: str, ab: ABDep, request: Request) -> HTMLResponse:
    report = await experiment_report(ab, name)
    live = str(request.url_for("report_json", name=name))  # absolute: works in a saved copy
    return HTMLResponse(await run_in_threadpool(render_html, report, None, live))
