"""``GET /users/{user_id}/tags``: a user's top-k tags (the hot path: a cache hit is one
Redis GET whose bytes are passed through).

Handlers here and in the other route modules carry no docstrings: FastAPI would publish
them as OpenAPI descriptions.
"""

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from service.api.deps import ProfilesDep
from service.api.errors import error_responses
from service.api.schemas import UserIdPath, UserTags

router = APIRouter()

PATH = "/users/{user_id}/tags"
JSON = "application/json"


def check_k(k: int, max_k: int) -> None:
    """Refuse ``k`` above the ``max_k`` setting with the error pydantic gives for a fixed
    bound: a setting cannot be written into the handler's signature."""
    if k > max_k:
        message = f"Input should be less than or equal to {max_k}"
        error = {"type": "less_than_equal", "loc": ("query", "k"), "msg": message, "input": k}
        raise RequestValidationError([{**error, "ctx": {"le": max_k}}])


@router.get(
    PATH,
    response_class=Response,
    responses={
        200: {"model": UserTags, "description": "the user's top-k tags"},
        **error_responses(404, 422, 503),
    },
    summary="The user's top-k tags",
)
async def user_tags(
    user_id: UserIdPath,
    profiles: ProfilesDep,
    k: Annotated[int, Query(ge=1, description="how many tags")] = 5,
) -> Response:
    check_k(k, profiles.model.max_k)  # the max_k setting: what a cached profile holds
    return Response(await profiles.response(user_id, k), media_type=JSON)
