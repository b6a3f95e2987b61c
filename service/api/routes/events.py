"""``POST /events``: a click or impression of a served ranking, counted once per event id
(202 only once it is stored, and where Redis can confirm it, once it is on disk)."""

from fastapi import APIRouter

from service.ab import ACCEPTED, CONFLICT, DUPLICATE_EVENT, NOT_COUNTED, Exposure
from service.api.deps import ABDep
from service.api.errors import ApiError, error_responses
from service.api.schemas import EventIn, EventOut
from service.state import ABTesting
from service.store import StoreUnavailable

router = APIRouter()

STATUS = {ACCEPTED: "accepted", DUPLICATE_EVENT: "duplicate"}
"""The event log's outcome -> the response's status (else ``already_counted``)."""


def check_exposure(ab: ABTesting, event: EventIn, exposure: Exposure | None) -> int:
    """The position of the event's theme in the ranking it refers to."""
    if exposure is None:
        raise ApiError(404, "request_id", f"unknown or expired request {event.request_id!r}")
    if exposure.experiment not in ab.experiments:
        raise ApiError(
            410,
            "request_id",
            f"the experiment of this request, {exposure.experiment!r}, is no longer configured",
        )
    if not exposure.run:
        raise ApiError(410, "request_id", "this request was logged before experiment runs")
    if event.theme_id not in exposure.theme_ids:
        raise ApiError(
            422, "theme_id", f"{event.theme_id!r} was not shown in request {event.request_id!r}"
        )
    return exposure.theme_ids.index(event.theme_id)


@router.post(
    "/events",
    status_code=202,
    summary="Record a click or impression of a ranking",
    responses=error_responses(400, 404, 409, 410, 413, 422, 503),
)
async def post_event(event: EventIn, ab: ABDep) -> EventOut:
    refusal = await ab.refusal()
    if refusal is not None:
        raise ApiError(503, "redis", f"event not stored: {refusal}")
    try:
        exposure = await ab.call(lambda: ab.log.exposure(event.request_id))
        position = check_exposure(ab, event, exposure)
        assert exposure is not None
        fsync_ms = ab.fsync_timeout_ms
        recorded = await ab.call(
            lambda: ab.log.record_event(
                event.event_id,
                event.request_id,
                event.type,
                exposure,
                position,
                fsync_timeout_ms=fsync_ms,
            )
        )
    except StoreUnavailable as error:
        raise ApiError(503, "redis", f"event not stored, retry later: {error}") from None
    refusal = await ab.refusal()  # Redis may have come back as another server meanwhile
    if refusal is not None:
        raise ApiError(503, "redis", f"event may not be kept: {refusal}; retry later")
    if recorded.outcome == NOT_COUNTED:  # its exposure log failed half-way, or expired
        raise ApiError(404, "request_id", f"unknown or expired request {event.request_id!r}")
    if recorded.outcome == CONFLICT:
        raise ApiError(
            409,
            "event_id",
            f"{event.event_id!r} was already used for another event (request, type or theme "
            "differ): nothing was counted; give each event its own id",
        )
    if recorded.on_disk is False:
        raise ApiError(
            503,
            "redis",
            f"event stored but not confirmed on disk within {fsync_ms} ms: retry with the "
            "same event_id (it answers 'duplicate' once confirmed)",
        )
    status = STATUS.get(recorded.outcome, "already_counted")
    return EventOut(event_id=event.event_id, status=status, arm=exposure.arm)
