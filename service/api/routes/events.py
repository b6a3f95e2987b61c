"""``POST /events``: a click or impression of a served ranking, counted once per event id
(202 only once it is stored)."""

from fastapi import APIRouter

from service.ab import ACCEPTED, DUPLICATE_EVENT
from service.api.deps import ABDep
from service.api.errors import ApiError, error_responses
from service.api.schemas import EventIn, EventOut
from service.store import StoreUnavailable

router = APIRouter()

STATUS = {ACCEPTED: "accepted", DUPLICATE_EVENT: "duplicate"}
"""The event log's outcome -> the response's status (else ``already_counted``)."""


@router.post(
    "/events",
    status_code=202,
    summary="Record a click or impression of a ranking",
    responses=error_responses(400, 404, 409, 410, 413, 422, 503),
)
async def post_event(event: EventIn, ab: ABDep) -> EventOut:
    try:
        exposure = await ab.call(lambda: ab.log.exposure(event.request_id))
        if exposure is None:
            raise ApiError(404, "request_id", f"unknown or expired request {event.request_id!r}")
        if event.theme_id not in exposure.theme_ids:
            raise ApiError(
                422,
                "theme_id",
                f"{event.theme_id!r} was not shown in request {event.request_id!r}",
            )
        position = exposure.theme_ids.index(event.theme_id)
        outcome = await ab.call(
            lambda: ab.log.record_event(
                event.event_id, event.request_id, event.type, exposure, position
            )
        )
    except StoreUnavailable as error:
        raise ApiError(503, "redis", f"event not stored, retry later: {error}") from None
    status = STATUS.get(outcome, "already_counted")
    return EventOut(event_id=event.event_id, status=status, arm=exposure.arm)
