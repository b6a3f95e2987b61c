"""Request and response bodies of the HTTP API (they also make the OpenAPI docs)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.keys import USER_ID_PATTERN

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
ThemeId = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class TagScore(BaseModel):
    tag: str
    tag_id: int
    score: float


class UserTags(BaseModel):
    user_id: str
    model_version: str
    tags: list[TagScore]
    cached: bool
    source: str = Field(description="'model', or 'popular' for a user without features")


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    k: int = Field(10, ge=1, le=100, description="how many themes to return")
    candidates: list[ThemeId] | None = Field(
        None, min_length=1, description="theme ids to re-rank; omitted: the whole catalogue"
    )
    experiment: str | None = Field(None, description="A/B experiment to assign the user in")


class ThemeTagOut(BaseModel):
    tag: str
    tag_id: int
    weight: float = Field(description="the theme's weight of this tag")
    contribution: float = Field(description="weight x the user's score of this tag")


class RankedThemeOut(BaseModel):
    theme_id: str
    title: str
    score: float
    tags: list[ThemeTagOut] = Field(description="the theme's tags, best match first")


class RankResponse(BaseModel):
    request_id: str
    user_id: str
    arm: str | None
    model_version: str
    source: str
    themes: list[RankedThemeOut]


class FeaturesStored(BaseModel):
    user_id: str
    model_version: str
    stored: bool


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: str | None = Field(None, description="bundle directory; omitted: the configured one")


class ReloadResponse(BaseModel):
    model_version: str
    previous_version: str
    provider: str


class Readiness(BaseModel):
    status: str = Field(description="'ready', or 'degraded' while Redis is unreachable")
    model_version: str | None
    model_name: str | None
    provider: str | None
    redis: str
    themes: int
    details: dict[str, Any] = {}
