"""The ``TAGPROFILE_*`` environment as people type it: the list for ``--help``, errors that
name the variable (or flag) that was set rather than the settings field, and a warning for
a variable that sets nothing, such as a misspelling.

pydantic-settings silently ignores an unknown ``TAGPROFILE_MAXK``: the service would start
with the default and the operator would never learn why the change had no effect.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from service.settings import Settings

PREFIX = "TAGPROFILE_"

OTHER_VARIABLES = {
    "TAGPROFILE_IMAGE": "the serving image docker compose runs (deploy/docker-compose.yml)",
    "TAGPROFILE_TRAIN_IMAGE": "the training image docker compose runs the bootstrap in",
}
"""``TAGPROFILE_*`` variables of the deployment, read by other tools, not settings."""


def env_name(field: str) -> str:
    """``max_k`` -> ``TAGPROFILE_MAX_K``."""
    return f"{PREFIX}{field.upper()}"


def _default(field: str) -> str:
    info = Settings.model_fields[field]
    default = info.default
    if default is None or default is PydanticUndefined:
        return "unset"
    return str(default)


def settings_help(fields: Iterable[str] | None = None) -> str:
    """One line per setting: variable, default, meaning (for an argparse epilog)."""
    names = list(fields or Settings.model_fields)
    width = max(len(env_name(n)) for n in names)
    lines = ["settings (environment variables; a flag overrides its variable):"]
    for name in names:
        description = Settings.model_fields[name].description or ""
        lines.append(f"  {env_name(name):<{width}}  {description} [{_default(name)}]")
    return "\n".join(lines)


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A warning for each ``TAGPROFILE_*`` variable that is no setting, with the closest
    setting when the name looks like a misspelling of one."""
    fields = sorted(name.upper() for name in Settings.model_fields)
    warnings = []
    for variable in sorted(environ):
        name = variable.upper()  # pydantic-settings reads names case-insensitively
        if not name.startswith(PREFIX) or name in OTHER_VARIABLES:
            continue
        suffix = name.removeprefix(PREFIX)
        if suffix in fields:
            continue
        close = difflib.get_close_matches(suffix, fields, n=1, cutoff=0.75)
        hint = f"; did you mean {PREFIX}{close[0]}?" if close else ""
        warnings.append(f"warning: {variable} is not a tagprofile setting, ignored{hint}")
    return warnings


def describe_error(error: ValidationError, flags: Mapping[str, str] | None = None) -> str:
    """One line per invalid setting, naming what the user set: the flag when the value
    came from one (``flags``: field -> flag), else the environment variable."""
    flags = flags or {}
    lines = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        if not field:  # a check of several settings together: its message names them
            lines.append(f"invalid settings: {problem['msg'].removeprefix('Value error, ')}")
            continue
        where = flags.get(field) or env_name(field)
        value: Any = problem.get("input")
        shown = "" if isinstance(value, dict) else f"={value!r}"
        lines.append(f"invalid setting {where}{shown}: {problem['msg']}")
    return "\n".join(lines)
