"""A/B experiment configuration: which experiments run, their arms, weights and rankers.

The file (``TAGPROFILE_EXPERIMENTS``) is YAML (``.yaml``/``.yml``) or JSON (``.json``)::

    experiments:
      - name: theme-ranking          # [A-Za-z0-9_.-]{1,64}
        salt: "2026-11"              # change it to reshuffle users for a new run
        control: popular             # must name one of the arms
        arms:
          - {name: popular, weight: 50, ranker: popular}
          - {name: profile, weight: 50, ranker: profile, bundle: null}
        popular_by: ctr              # theme stats key the popular ranker sorts by
        segments: [home, search]     # optional: request scenarios the report breaks down

It is validated strictly (unknown keys are errors), because a typo in an experiment silently
sends traffic to the wrong ranker and spoils the experiment's data. Every problem is raised
as an :class:`ExperimentConfigError` naming the file and the key path
(``experiments[0].arms[1].ranker``). A relative ``bundle`` is resolved against the config
file's directory, so the file means the same whatever the service's working directory.

Users are assigned with :mod:`service.ab.assignment`; changing an experiment's arms or weights
reassigns users (see there).

This module must not import torch, FastAPI or anything from ``training``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from service.ab import assignment
from service.ab.runs import run_config, run_id

__all__ = ["Arm", "Experiment", "ExperimentConfigError", "load_experiments"]

_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"
"""Experiment and arm names end up in metric labels, logs and response headers."""

_LOCATED = "experiment_config"
"""Error type of our own checks; its context carries the key path below the failing model."""


class ExperimentConfigError(ValueError):
    """The experiment configuration is missing, unreadable or invalid; names file and key."""


def _located(loc: tuple[int | str, ...], message: str) -> PydanticCustomError:
    """A validation error pointing ``loc`` below the validated value (e.g. ``(1, "name")``)."""
    return PydanticCustomError(_LOCATED, "{message}", {"message": message, "loc": loc})


class Arm(BaseModel):
    """One arm: its share of traffic (``weight``, relative) and how it ranks themes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    weight: float = Field(ge=0, allow_inf_nan=False)
    ranker: Literal["popular", "profile"]
    bundle: Path | None = None
    """Own model bundle of a ``profile`` arm; ``None``: the service's bundle."""

    @field_validator("bundle")
    @classmethod
    def _resolve_bundle(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """Relative paths are relative to the config file (passed as ``base_dir`` context)."""
        base_dir = (info.context or {}).get("base_dir")
        if value is not None and base_dir is not None and not value.is_absolute():
            return Path(base_dir) / value
        return value


class Experiment(BaseModel):
    """One experiment: arms with weights, the control arm, and the assignment salt."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_PATTERN)
    salt: str = Field(min_length=1)
    control: str
    arms: tuple[Arm, ...]
    popular_by: str = Field("ctr", min_length=1)
    segments: tuple[Annotated[str, Field(pattern=_NAME_PATTERN)], ...] = ()
    """Scenarios or user segments a ranking request may name (``segment``); the report
    breaks every arm down by them. Declared, so that clients cannot grow the log's keys."""

    _ranges: list[tuple[str, int, int]] = PrivateAttr(default_factory=list)
    _run: dict[str, Any] = PrivateAttr(default_factory=dict)
    _run_id: str = PrivateAttr("")

    @field_validator("arms")
    @classmethod
    def _check_arms(cls, arms: tuple[Arm, ...]) -> tuple[Arm, ...]:
        """At least two arms (else nothing is compared), unique names (results are reported
        per arm name) and some traffic somewhere."""
        if len(arms) < 2:
            raise _located((), f"an experiment needs at least 2 arms, got {len(arms)}")
        seen: set[str] = set()
        for i, arm in enumerate(arms):
            if arm.name in seen:
                raise _located((i, "name"), f"duplicate arm name {arm.name!r}")
            seen.add(arm.name)
        if all(arm.weight == 0 for arm in arms):
            raise _located((), "all arm weights are 0")
        return arms

    @field_validator("segments")
    @classmethod
    def _unique_segments(cls, segments: tuple[str, ...]) -> tuple[str, ...]:
        for i, segment in enumerate(segments):
            if segment in segments[:i]:
                raise _located((i,), f"duplicate segment {segment!r}")
        return segments

    @model_validator(mode="after")
    def _check_control(self) -> Experiment:
        """The control must be an arm: lifts are reported against it."""
        names = [arm.name for arm in self.arms]
        if self.control not in names:
            raise _located(
                ("control",), f"{self.control!r} is not one of the arms ({', '.join(names)})"
            )
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Bucket ranges and the run id are computed once: every request needs them."""
        self._ranges = assignment.arm_ranges([(arm.name, arm.weight) for arm in self.arms])
        self._run = run_config(self.salt, [(a.name, a.weight, a.ranker) for a in self.arms])
        self._run_id = run_id(self._run)

    @property
    def run_id(self) -> str:
        """The id of this configuration (salt and arms), under which its counts are kept
        (see :mod:`service.ab.runs`)."""
        return self._run_id

    @property
    def run(self) -> dict[str, Any]:
        """The configuration the run id is the hash of."""
        return dict(self._run)

    @property
    def ranges(self) -> list[tuple[str, int, int]]:
        """``(arm, lo, hi)`` bucket ranges from :func:`service.ab.assignment.arm_ranges`."""
        return list(self._ranges)

    def arm(self, name: str) -> Arm:
        """The arm called ``name``; ``KeyError`` if there is none."""
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"experiment {self.name!r} has no arm {name!r}")

    def assign(self, user_id: str) -> tuple[Arm, int]:
        """The user's arm and bucket; deterministic (see :mod:`service.ab.assignment`)."""
        name, bucket = assignment.assign(self.salt, self.name, user_id, self._ranges)
        return self.arm(name), bucket


class _ConfigFile(BaseModel):
    """The whole file: just the list of experiments, with unique names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiments: list[Experiment]

    @field_validator("experiments")
    @classmethod
    def _unique_names(cls, experiments: list[Experiment]) -> list[Experiment]:
        seen: set[str] = set()
        for i, experiment in enumerate(experiments):
            if experiment.name in seen:
                raise _located((i, "name"), f"duplicate experiment name {experiment.name!r}")
            seen.add(experiment.name)
        return experiments


def _key_path(loc: tuple[int | str, ...]) -> str:
    """``("experiments", 0, "arms", 1)`` -> ``experiments[0].arms[1]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _format_errors(path: str, exc: ValidationError) -> str:
    """One line per problem: ``file: key.path: message``."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        message = error["msg"]
        if error["type"] == _LOCATED:
            ctx = error.get("ctx") or {}
            loc += tuple(ctx.get("loc", ()))
            message = ctx.get("message", message)
        key = _key_path(loc)
        lines.append(f"{path}: {key}: {message}" if key else f"{path}: {message}")
    return "\n".join(lines)


def _parse(path: Path) -> Any:
    """The file's content, parsed by its extension."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentConfigError(f"{path}: experiment configuration not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ExperimentConfigError(f"{path}: cannot read: {exc}") from exc
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            problem = getattr(exc, "problem", None) or exc
            raise ExperimentConfigError(f"{path}: not valid YAML{where}: {problem}") from exc
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ExperimentConfigError(
                f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
            ) from exc
    raise ExperimentConfigError(
        f"{path}: unknown extension {path.suffix!r}, expected .yaml, .yml or .json"
    )


def load_experiments(path: str | Path) -> dict[str, Experiment]:
    """Experiments of the configuration file by name; :class:`ExperimentConfigError` if the
    file is missing, unparsable or invalid (the message names the file and the key path)."""
    path = Path(path)
    data = _parse(path)
    if not isinstance(data, dict):
        raise ExperimentConfigError(
            f"{path}: expected a mapping with key 'experiments', got {type(data).__name__}"
        )
    base_dir = path.resolve().parent
    try:
        config = _ConfigFile.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ExperimentConfigError(_format_errors(str(path), exc)) from None
    return {experiment.name: experiment for experiment in config.experiments}
