"""``POST /themes/rank``: themes for a user, by the user's profile or, inside an A/B
experiment, by the ranker of the user's arm (the exposure is logged for ``/events``)."""

import uuid
from collections.abc import Mapping

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from service.ab import Experiment, Exposure
from service.api.deps import ABDep, ProfilesDep, SettingsDep
from service.api.errors import ApiError, error_responses
from service.api.schemas import RankedThemeOut, RankRequest, RankResponse
from service.metrics import ServiceMetrics
from service.model import LoadedModel, Profiles
from service.ranking import RankedTheme, ThemeCatalogue, popular_ranking
from service.state import ABTesting
from service.store import StoreUnavailable

router = APIRouter()

INLINE_RANK_THEMES = 5000
"""Catalogues up to this size are ranked on the event loop (microseconds); larger ones in
a worker thread."""


def checked_catalogue(
    model: LoadedModel, request: RankRequest, max_candidates: int
) -> ThemeCatalogue:
    """The model's catalogue, once ``request.candidates`` are known to be in it."""
    catalogue = model.catalogue
    if catalogue is None:
        raise ApiError(404, "themes", "this model bundle has no theme catalogue (themes.json)")
    if request.candidates is not None:
        if len(request.candidates) > max_candidates:
            raise ApiError(422, "candidates", f"at most {max_candidates} theme ids")
        unknown = catalogue.unknown(request.candidates)
        if unknown:
            raise ApiError(422, "candidates", f"unknown theme ids {unknown}")
    return catalogue


async def profile_ranking(
    profiles: Profiles, request: RankRequest
) -> tuple[list[RankedTheme], str]:
    """Themes by the user's tag scores x the themes' tag weights, and the scores' source."""
    model = profiles.model
    catalogue = model.catalogue
    assert catalogue is not None
    scored, source = await profiles.scores(request.user_id)
    scores = model.cold_start_scores if scored is None else scored[0]
    profiles.metrics.profile_source.labels(source).inc()
    if len(catalogue) <= INLINE_RANK_THEMES:
        return catalogue.rank(scores, request.k, request.candidates), source
    ranked = await run_in_threadpool(catalogue.rank, scores, request.k, request.candidates)
    return ranked, source


async def log_exposure(
    ab: ABTesting,
    metrics: ServiceMetrics,
    request_id: str,
    exposure: Exposure,
    experiment: Experiment,
) -> bool:
    """Whether the exposure was stored; a ranking is served even when it was not (its
    events will then be refused)."""
    try:
        await ab.call(lambda: ab.log.log_exposure(request_id, exposure, experiment.run))
        logged = True
    except StoreUnavailable:
        logged = False
    metrics.exposures.labels(exposure.experiment, exposure.arm, str(logged).lower()).inc()
    return logged


def experiment_named(experiments: Mapping[str, Experiment], name: str) -> Experiment:
    experiment = experiments.get(name)
    if experiment is None:
        raise ApiError(
            422, "experiment", f"unknown experiment {name!r} (configured: {sorted(experiments)})"
        )
    return experiment


def checked_segment(experiment: Experiment | None, segment: str | None) -> str | None:
    """The request's segment, once the experiment is known to declare it."""
    if segment is None:
        return None
    if experiment is None:
        raise ApiError(422, "segment", "only meaningful with an experiment")
    if segment not in experiment.segments:
        raise ApiError(
            422,
            "segment",
            f"{segment!r} is not a segment of experiment {experiment.name!r} "
            f"(declared: {list(experiment.segments)})",
        )
    return segment


@router.post(
    "/themes/rank",
    summary="Rank themes for a user",
    responses=error_responses(400, 404, 413, 422, 503),
)
async def rank_themes(
    request: RankRequest, profiles: ProfilesDep, ab: ABDep, settings: SettingsDep
) -> RankResponse:
    catalogue = checked_catalogue(profiles.model, request, settings.max_candidates)
    request_id = uuid.uuid4().hex
    if request.experiment is None:
        checked_segment(None, request.segment)
        ranked, source = await profile_ranking(profiles, request)
        return RankResponse(
            request_id=request_id,
            user_id=request.user_id,
            arm=None,
            model_version=profiles.model.version,
            source=source,
            themes=[RankedThemeOut.of(theme) for theme in ranked],
        )
    experiment = experiment_named(ab.experiments, request.experiment)
    segment = checked_segment(experiment, request.segment)
    arm, bucket = experiment.assign(request.user_id)
    if arm.ranker == "popular":
        by = experiment.popular_by
        ranked = popular_ranking(catalogue, request.k, request.candidates, by)
        source = "statistics"
    else:
        own = ab.arm_serving.get((experiment.name, arm.name))
        profiles = profiles if own is None else profiles.using(own)
        ranked, source = await profile_ranking(profiles, request)
    shown = tuple(theme.theme_id for theme in ranked)
    exposure = Exposure(
        experiment.name, arm.name, request.user_id, shown, run=experiment.run_id, segment=segment
    )
    logged = await log_exposure(ab, profiles.metrics, request_id, exposure, experiment)
    return RankResponse(
        request_id=request_id,
        user_id=request.user_id,
        arm=arm.name,
        bucket=bucket,
        model_version=profiles.model.version,
        source=source,
        exposure_logged=logged,
        themes=[RankedThemeOut.of(theme) for theme in ranked],
    )
