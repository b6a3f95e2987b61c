"""Admin endpoints (``Authorization: Bearer $TAGPROFILE_ADMIN_TOKEN``): store a user's
features, hot-reload the model bundle."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException

from service.api.deps import ProfilesDep, StateDep, require_admin
from service.api.schemas import FeaturesStored, ReloadRequest, ReloadResponse, UserIdPath
from service.model import FeatureError
from service.state import ReloadError
from service.store import StoreUnavailable

router = APIRouter(dependencies=[Depends(require_admin)])


@router.put("/users/{user_id}/features", summary="Store a user's features (admin)")
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
        raise HTTPException(422, str(error)) from None
    try:
        await store.put_features(user_id, record)
        await store.drop_profile(model.version, user_id)
    except StoreUnavailable as error:
        raise HTTPException(503, f"feature store unavailable, nothing stored: {error}") from None
    return FeaturesStored(user_id=user_id, model_version=model.version, stored=True)


@router.post("/admin/reload", summary="Load a bundle and swap it in (admin)")
async def reload(state: StateDep, request: ReloadRequest | None = None) -> ReloadResponse:
    # a bundle that fails to load answers 422, and the old model keeps serving
    path = (request.bundle if request else None) or state.settings.bundle
    try:
        current, previous = await state.reload(path)
    except ReloadError as error:
        raise HTTPException(422, f"bundle: {error}") from None
    return ReloadResponse(
        model_version=current.model.version,
        previous_version=previous.model.version,
        provider=current.model.runtime.provider,
    )
