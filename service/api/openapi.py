"""The OpenAPI document: FastAPI's, plus every bound that comes from settings, the
experiment file or the model serving now, so that the document describes what the server
accepts and answers (schema fuzzers such as schemathesis hold it to that).

Written in: the largest ``k`` and candidate list (settings), the configured experiment
names and the segments each declares, the theme ids of a catalogue of up to
:data:`LISTED_THEMES` themes, the feature record of ``PUT /users/{id}/features`` (the
serving model's inputs, id ranges and lengths), and every error answer as
``application/json`` (FastAPI files an extra response of an HTML route under
``text/html``). The document is rebuilt when a reload changes the model.

What JSON Schema cannot say is checked by the handlers (422 naming the field): one
weight per id, weights not all 0 with a finite sum, and candidates of a catalogue too
large to list.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI

from service.model import FeatureSpec

ERROR_REF = "#/components/schemas/ErrorResponse"
LISTED_THEMES = 1000
"""Catalogues up to this size have their theme ids listed as the candidates' enum."""
JSON = "application/json"


def document_k_bound(schema: dict[str, Any], max_k: int) -> None:
    """``max_k`` as the maximum of ``k`` (the handler checks it: a setting cannot be written
    into the signature)."""
    for parameter in schema["paths"]["/users/{user_id}/tags"]["get"]["parameters"]:
        if parameter["name"] == "k":
            parameter["schema"]["maximum"] = max_k


def _rank_request(schema: dict[str, Any]) -> dict[str, Any]:
    return schema["components"]["schemas"]["RankRequest"]["properties"]


def document_rank_request(
    schema: dict[str, Any],
    max_candidates: int,
    experiments: Iterable[str],
    theme_ids: Sequence[str] | None,
) -> None:
    """The candidate-list bound and ids, and the configured experiment names."""
    properties = _rank_request(schema)
    for option in properties["candidates"].get("anyOf", [properties["candidates"]]):
        if option.get("type") == "array":
            option["maxItems"] = max_candidates
            if theme_ids is not None and len(theme_ids) <= LISTED_THEMES:
                option["items"] = {**option.get("items", {}), "enum": list(theme_ids)}
    names = sorted(experiments)
    experiment = properties["experiment"]
    if not names:  # no experiment configured: only null is valid
        experiment.pop("anyOf", None)
        experiment["type"] = "null"
        return
    for option in experiment.get("anyOf", [experiment]):
        if option.get("type") == "string":
            option["enum"] = names


def document_segments(schema: dict[str, Any], experiments: Mapping[str, Any]) -> None:
    """A ranking's ``segment``: null without segments anywhere; else one that the request's
    experiment declares (the handler's 422 otherwise), stated per experiment."""
    segment = _rank_request(schema)["segment"]
    declared = {name: list(e.segments) for name, e in sorted(experiments.items()) if e.segments}
    if not declared:  # no experiment declares one: only null is valid
        segment.pop("anyOf", None)
        segment["type"] = "null"
        return
    union = sorted({s for segments in declared.values() for s in segments})
    for option in segment.get("anyOf", [segment]):
        if option.get("type") == "string":
            option["enum"] = union
    request = schema["components"]["schemas"]["RankRequest"]
    request["anyOf"] = [
        {"properties": {"segment": {"type": "null"}}},
        *(
            {
                "properties": {"experiment": {"const": name}, "segment": {"enum": segments}},
                "required": ["experiment"],
            }
            for name, segments in declared.items()
        ),
    ]


def document_experiment_names(schema: dict[str, Any], experiments: Iterable[str]) -> None:
    """The configured experiments as the values of ``/experiments/{name}``."""
    names = sorted(experiments)
    for path in ("/experiments/{name}", "/experiments/{name}/report"):
        for parameter in schema["paths"][path]["get"]["parameters"]:
            if parameter["name"] == "name" and names:
                parameter["schema"]["enum"] = names


def feature_record_schema(spec: FeatureSpec) -> dict[str, Any]:
    """JSON Schema of a feature record the model ``spec`` accepts (all keys optional).

    Not expressible, so checked by the handler (422 naming the field): one weight per id,
    weights not all 0 and with a finite sum."""
    properties: dict[str, Any] = {}
    for bag in spec.bags:
        properties[bag.name] = {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": max(bag.vocabulary - 1, 0)},
            "maxItems": bag.max_len if bag.vocabulary else 0,
            "uniqueItems": True,
            "description": f"ids (0..{bag.vocabulary - 1}) of the user's history",
        }
        properties[bag.weights_name] = {
            "anyOf": [
                {
                    "type": "array",
                    "items": {"type": "number", "minimum": 0},
                    "maxItems": bag.max_len,
                },
                {"type": "null"},
            ],
            "description": f"one weight per id of {bag.name}; omitted or null: uniform; "
            "normalised to sum to 1",
        }
    sizes = spec.attribute_sizes
    properties["attributes"] = {
        "type": "array",
        "prefixItems": [{"type": "integer", "minimum": 0, "maximum": s - 1} for s in sizes],
        "items": False,
        "minItems": len(sizes) if spec.has_attributes else 0,
        "maxItems": len(sizes),
        "description": "one value id + 1 per attribute (0 = unknown)",
    }
    return {"type": "object", "properties": properties, "additionalProperties": False}


def document_features(schema: dict[str, Any], spec: FeatureSpec) -> None:
    operation = schema["paths"]["/users/{user_id}/features"]["put"]
    body = operation["requestBody"]["content"][JSON]
    examples = body.get("schema", {}).get("examples")
    body["schema"] = {**feature_record_schema(spec), "title": "Features"}
    if examples:
        body["schema"]["examples"] = examples


def errors_as_json(schema: dict[str, Any]) -> None:
    """Every error response documented as ``application/json`` in the error model
    (FastAPI's own 422 model, which the server never answers, is replaced)."""
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path in schema["paths"].values():
        for operation in path.values():
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                framework = content.get(JSON, {}).get("schema", {}).get("$ref", "")
                if framework.endswith("/HTTPValidationError"):
                    content[JSON]["schema"] = {"$ref": ERROR_REF}
                    response["description"] = "a field is invalid; `errors[].field` names it"
                if not status.startswith(("4", "5")) or JSON in content:
                    continue
                for media_type, body in list(content.items()):
                    if body.get("schema", {}).get("$ref") == ERROR_REF:
                        del content[media_type]
                        content[JSON] = body


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The document for the app's settings, experiments and serving model (cached per
    model version)."""
    state = app.state.tagprofile
    model = state.serving.model if state.serving is not None else None
    key = model.version if model is not None else None
    cached = getattr(app.state, "openapi_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    app.openapi_schema = None
    schema = copy.deepcopy(FastAPI.openapi(app))
    settings = state.settings
    document_k_bound(schema, settings.max_k)
    experiments = state.ab.experiments if state.ab is not None else {}
    catalogue = model.catalogue if model is not None else None
    theme_ids = catalogue.ids if catalogue is not None else None
    document_rank_request(schema, settings.max_candidates, experiments, theme_ids)
    document_segments(schema, experiments)
    document_experiment_names(schema, experiments)
    if model is not None:
        document_features(schema, model.spec)
    errors_as_json(schema)
    app.state.openapi_cache = (key, schema)
    app.openapi_schema = schema
    return schema
