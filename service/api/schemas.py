"""Request and response bodies of the HTTP API (they also make the OpenAPI docs)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from service.ranking import RankedTheme
from service.store import SAFE_ID_PATTERN, USER_ID_PATTERN

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
UserIdPath = Annotated[
    str, Path(pattern=USER_ID_PATTERN, description="1-128 of A-Z a-z 0-9 _ . : @ -")
]
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
    source: Literal["model", "popular", "memory", "fallback"] = Field(
        description="'model': the user's profile; 'popular': cold-start tags of a user "
        "without features; 'memory': Redis is unreachable, the user's own profile from "
        "this process's memory; 'fallback': Redis is unreachable and this process has "
        "nothing for the user, cold-start tags (the user may be known)"
    )


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: UserId
    k: int = Field(10, ge=1, le=100, description="how many themes to return")
    candidates: list[ThemeId] | None = Field(
        None, min_length=1, description="theme ids to re-rank; omitted: the whole catalogue"
    )
    experiment: str | None = Field(None, description="A/B experiment to assign the user in")
    segment: str | None = Field(
        None,
        description="the request's scenario or user segment (e.g. 'home'), one the "
        "experiment declares; the A/B report breaks results down by it",
    )


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

    @classmethod
    def of(cls, theme: RankedTheme) -> RankedThemeOut:
        return cls(
            theme_id=theme.theme_id,
            title=theme.title,
            score=theme.score,
            tags=[
                ThemeTagOut(
                    tag=t.tag, tag_id=t.tag_id, weight=t.weight, contribution=t.contribution
                )
                for t in theme.tags
            ],
        )


class RankResponse(BaseModel):
    request_id: str = Field(description="quote it in /events")
    user_id: str
    arm: str | None = Field(description="the experiment arm; null without an experiment")
    bucket: int | None = Field(None, description="the user's bucket in [0, 10000)")
    model_version: str
    source: Literal["model", "popular", "memory", "fallback", "statistics"] = Field(
        description="where the user's scores came from ('model', 'popular', 'memory', "
        "'fallback': as in GET /users/{user_id}/tags), or 'statistics' (popular ranker)"
    )
    exposure_logged: bool | None = Field(
        None, description="false when the exposure could not be stored (Redis down)"
    )
    themes: list[RankedThemeOut]


EventId = Annotated[str, StringConstraints(pattern=SAFE_ID_PATTERN)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: EventId = Field(description="client-chosen id; re-posting it is a no-op")
    request_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    type: Literal["click", "impression"]
    theme_id: ThemeId


class EventOut(BaseModel):
    event_id: str
    status: Literal["accepted", "duplicate", "already_counted"]
    arm: str


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
    persistence: dict[str, Any] | None = Field(
        None,
        description="what Redis does with writes: redis_version, appendonly, appendfsync, "
        "waitaof, events_durable (an acknowledged event survives a Redis crash), "
        "events_fsync_confirmed (each event waits for WAITAOF); null while unknown",
    )
    events_refused: str | None = Field(
        None, description="why POST /events answers 503 now (TAGPROFILE_REQUIRE_DURABLE_EVENTS)"
    )
    details: dict[str, Any] = {}
