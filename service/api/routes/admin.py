"""Admin endpoints (``Authorization: Bearer $TAGPROFILE_ADMIN_TOKEN``): store a user's
features, hot-reload the model bundle.

Both authenticate before the body is read (:class:`~service.api.deps.AdminRoute`). A
reload loads only directories under the bundle root (``TAGPROFILE_BUNDLE_ROOT``): any
other path gets the same 403 whether it exists or not, so the endpoint cannot be used to
probe the file system.
"""

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends

from service.api.deps import AdminRoute, ProfilesDep, StateDep, require_admin
from service.api.errors import ApiError, error_responses
from service.api.schemas import FeaturesStored, ReloadRequest, ReloadResponse, UserIdPath
from service.model import FeatureError
from service.settings import Settings
from service.state import ReloadConflict, ReloadError
from service.store import StoreUnavailable

router = APIRouter(
    route_class=AdminRoute,
    dependencies=[Depends(require_admin)],
    responses=error_responses(400, 401, 403, 413, 422),
)


@router.put(
    "/users/{user_id}/features",
    summary="Store a user's features (admin)",
    responses=error_responses(404, 503),
)
async def put_features(
    user_id: UserIdPath,
    features: Annotated[
        dict[str, Any],
        Body(
            description="per input of the model a list: hist_tags, hist_tags_w, ...",
            examples=[{"hist_tags": [3, 17], "hist_tags_w": [0.5, 0.5]}],
        ),
    ],
    profiles: ProfilesDep,
) -> FeaturesStored:
    # validated against the model serving now; the cached profile is dropped
    model, store = profiles.model, profiles.store
    try:
        record = model.spec.validate(features, where="body")
    except FeatureError as error:
        raise ApiError(422, error.field, error.problem) from None
    try:
        await store.put_features(user_id, record)
        await store.drop_profile(model.version, user_id)
    except StoreUnavailable as error:
        raise ApiError(
            503, "redis", f"feature store unavailable, nothing stored: {error}"
        ) from None
    return FeaturesStored(user_id=user_id, model_version=model.version, stored=True)


def bundle_under_root(requested: str | None, settings: Settings) -> Path:
    """The bundle directory to load: the configured one, or ``requested`` (relative to the
    root, or absolute) when it lies under the bundle root."""
    if requested is None:
        return settings.bundle
    root = settings.reload_root
    try:
        path = (root / requested).resolve()
    except (OSError, ValueError):  # NUL bytes, unencodable names, symlink loops
        path = None
    if path is None or path == root or not path.is_relative_to(root):
        raise ApiError(403, "bundle", "must be a directory under TAGPROFILE_BUNDLE_ROOT")
    if not path.is_dir():
        raise ApiError(404, "bundle", f"no bundle directory {requested!r} under the bundle root")
    return path


@router.post(
    "/admin/reload",
    summary="Load a bundle and swap it in (admin)",
    responses=error_responses(404, 409),
)
async def reload(state: StateDep, request: ReloadRequest | None = None) -> ReloadResponse:
    # a bundle that fails to load answers 422 (409: another model under a serving
    # version), and the old model keeps serving
    path = bundle_under_root(request.bundle if request else None, state.settings)
    try:
        current, previous = await state.reload(path)
    except ReloadConflict as error:
        raise ApiError(409, "bundle", str(error)) from None
    except ReloadError as error:
        raise ApiError(422, "bundle", str(error)) from None
    return ReloadResponse(
        model_version=current.model.version,
        previous_version=previous.model.version,
        provider=current.model.runtime.provider,
    )
