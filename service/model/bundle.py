"""Loading and verifying a model bundle (DESIGN.md §5), the only thing the service reads
from training.

A bundle is a directory holding ``model.onnx``, ``manifest.json`` and optionally
``themes.json`` and the users' features, as ``users.jsonl`` and/or Parquet shards
``users/part-NNNNN.parquet`` (the same records, one row per user; every shard is listed and
hash-checked like any other file). Everything the service knows about the model (tag
vocabulary, ONNX input spec, version) comes from the manifest, so the loader is strict: a
bundle that does not verify (unknown format, missing or mistyped key, file whose hash does
not match, model that failed its export parity check, ONNX graph that disagrees with the
manifest) is refused with a :class:`BundleError` naming the bundle and the exact problem,
instead of serving wrong scores later.

The manifest schema is a set of frozen pydantic dataclasses; pydantic's errors are turned
into a :class:`BundleError` naming the key path (``inputs[2].dtype``) and expected vs found.

This module must not import torch, onnx or anything from ``training``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    Strict,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapSerializer,
    WrapValidator,
    field_validator,
    model_validator,
)
from pydantic import dataclasses as pydantic_dataclasses
from pydantic_core import ErrorDetails, PydanticCustomError

__all__ = [
    "MANIFEST_KEYS",
    "MANIFEST_NAME",
    "MODEL_NAME",
    "OPTIONAL_FILES",
    "SCORES_OUTPUT",
    "SHARDS_DIR",
    "SUPPORTED_FORMAT_VERSIONS",
    "Bundle",
    "BundleError",
    "FileEntry",
    "InputSpec",
    "Manifest",
    "OutputSpec",
    "Parity",
    "file_sha256",
    "load_bundle",
    "manifest_from_dict",
    "manifest_to_dict",
]

SUPPORTED_FORMAT_VERSIONS: tuple[int, ...] = (1,)
MANIFEST_NAME = "manifest.json"
MODEL_NAME = "model.onnx"
THEMES_NAME = "themes.json"
USERS_NAME = "users.jsonl"
OPTIONAL_FILES: tuple[str, ...] = (THEMES_NAME, USERS_NAME)
SHARDS_DIR = "users"
_SHARD_NAME = re.compile(rf"^{SHARDS_DIR}/part-[0-9]{{5,}}\.parquet$")
"""The only listed names with a folder: the users' Parquet shards."""
SCORES_OUTPUT = "scores"

MANIFEST_KEYS: tuple[str, ...] = (
    "format_version",
    "model_name",
    "model_version",
    "created_at",
    "dataset",
    "tags",
    "max_history",
    "inputs",
    "outputs",
    "privileged",
    "attributes",
    "metrics",
    "parity",
    "files",
)
"""The keys of a format-1 manifest, all required, no others allowed (so a manifest
round-trips exactly and a typo in the exporter cannot go unnoticed)."""

# Manifest dtype (numpy spelling) -> onnxruntime NodeArg.type.
_ORT_TYPES: Mapping[str, str] = MappingProxyType(
    {
        "int64": "tensor(int64)",
        "int32": "tensor(int32)",
        "float32": "tensor(float)",
        "float64": "tensor(double)",
        "float16": "tensor(float16)",
        "bool": "tensor(bool)",
    }
)
_CHUNK = 1 << 20

Dim = int | str
"""A tensor dimension: a fixed size, or a name (``"batch"``) for a dynamic one."""


class BundleError(Exception):
    """A bundle that cannot be served; the message names the bundle path and the problem
    (file, key, expected vs found) so an operator can fix it without reading code."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"model bundle {self.path}: {problem}")


# --------------------------------------------------------------------------- schema

# Not ConfigDict(strict=True): strict pydantic dataclasses refuse the JSON objects they
# are parsed from. Strictness is per leaf type instead (Strict(), StrictInt, ...), so
# e.g. "1" is not an integer and true is not a number.
_CONFIG = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


def _problem(text: str) -> PydanticCustomError:
    """A complete manifest problem (key included), reported as is."""
    return PydanticCustomError("manifest", "{text}", {"text": text})


def _expect(expected: str) -> WrapValidator:
    """Report any failure of the value itself as 'expected <expected>'; problems deeper in
    the value (a list item, an object key) keep their own key path and wording."""

    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as e:
            # union members add their own tag to loc: only a container has inner keys
            if isinstance(value, list | dict) and any(err["loc"] for err in e.errors()):
                raise
            raise PydanticCustomError(
                "expected", "expected {expected}", {"expected": expected}
            ) from None

    return WrapValidator(validate)


def _known_dtype(value: str) -> str:
    if value not in _ORT_TYPES:
        raise ValueError(value)  # reworded by the enclosing _expect
    return value


def _iso8601(value: str) -> str:
    datetime.fromisoformat(value)  # ValueError is reworded by the enclosing _expect
    return value  # kept as written, so the manifest round-trips exactly


def _frozen_mapping(*, deep: bool) -> tuple[AfterValidator, WrapSerializer]:
    """Store a mapping as a read-only view (a deep copy for free-form JSON); dump it back
    as a plain dict."""
    freeze = copy.deepcopy if deep else dict
    return (
        AfterValidator(lambda value: MappingProxyType(freeze(value))),
        WrapSerializer(lambda value, handler: handler(dict(value))),
    )


_Text = Annotated[str, Strict(), Field(min_length=1), _expect("a non-empty string")]
_Count = Annotated[int, Strict(), Field(ge=0), _expect("an integer >= 0")]
_Number = Annotated[StrictInt | StrictFloat, _expect("a number")]  # kept as parsed
_DType = Annotated[
    str, Strict(), AfterValidator(_known_dtype), _expect(f"one of {sorted(_ORT_TYPES)}")
]
# 0 is a legal (empty) dimension: an exporter may keep an empty input
_Dim = Annotated[
    Annotated[int, Strict(), Field(ge=0)] | Annotated[str, Strict(), Field(min_length=1)],
    _expect("an integer >= 0 or a dimension name"),
]
_Shape = Annotated[tuple[_Dim, ...], Field(min_length=1), _expect("a non-empty list of dimensions")]
_Vocabularies = Annotated[
    Mapping[
        str,
        Annotated[
            tuple[Annotated[str, Strict(), _expect("a string")], ...], _expect("a list of strings")
        ],
    ],
    *_frozen_mapping(deep=False),
    _expect("an object"),
]
_FreeJSON = Annotated[Mapping[str, Any], *_frozen_mapping(deep=True), _expect("an object")]


@pydantic_dataclasses.dataclass(frozen=True, config=_CONFIG)
class InputSpec:
    """One ONNX input: which user feature it carries and in which role (ids, weights...)."""

    name: _Text
    dtype: _DType
    shape: _Shape
    feature: _Text
    role: _Text


@pydantic_dataclasses.dataclass(frozen=True, config=_CONFIG)
class OutputSpec:
    """One ONNX output; ``outputs[0]`` is always ``scores`` float32 [batch, n_tags]."""

    name: _Text
    dtype: _DType
    shape: _Shape


@pydantic_dataclasses.dataclass(frozen=True, config=_CONFIG)
class Parity:
    """Export-time check of the ONNX model against the torch model it came from."""

    max_abs_diff: _Number
    tolerance: _Number
    users: _Count

    @property
    def passed(self) -> bool:
        """True iff the measured difference is finite and within tolerance."""
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance


@pydantic_dataclasses.dataclass(frozen=True, config=_CONFIG)
class FileEntry:
    """Expected size and sha256 (lowercase hex) of one bundle file."""

    sha256: Annotated[
        str, Strict(), Field(pattern=r"^[0-9a-f]{64}$"), _expect("64 lowercase hex digits")
    ]
    bytes: _Count


@pydantic_dataclasses.dataclass(frozen=True, config=_CONFIG)
class Manifest:
    """The parsed ``manifest.json`` (format 1). Mappings are read-only views. ``dataset``
    (training data and protocol) and ``metrics`` (the run's test report: mostly numbers,
    also e.g. ``tag_privileged_field``) are free-form JSON: informational, never a reason
    to refuse a model."""

    format_version: Annotated[int, Strict()]  # checked first, by manifest_from_dict
    model_name: _Text
    model_version: _Text
    created_at: Annotated[str, Strict(), AfterValidator(_iso8601), _expect("an ISO-8601 timestamp")]
    dataset: _FreeJSON
    tags: Annotated[tuple[_Text, ...], Field(min_length=1), _expect("a non-empty list of strings")]
    max_history: Annotated[int, Strict(), Field(ge=1), _expect("an integer >= 1")]
    inputs: Annotated[
        tuple[InputSpec, ...], Field(min_length=1), _expect("a non-empty list of input specs")
    ]
    outputs: Annotated[
        tuple[OutputSpec, ...], Field(min_length=1), _expect("a non-empty list of output specs")
    ]
    privileged: _Vocabularies
    attributes: _Vocabularies
    metrics: _FreeJSON
    parity: Parity
    files: Annotated[Mapping[str, FileEntry], *_frozen_mapping(deep=False), _expect("an object")]

    @field_validator("inputs", "outputs")
    @classmethod
    def _names_unique(cls, specs: tuple[Any, ...], info: ValidationInfo) -> tuple[Any, ...]:
        names = [spec.name for spec in specs]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise _problem(f"key '{info.field_name}': duplicate name {name!r}")
        return specs

    @field_validator("files")
    @classmethod
    def _files_plain_and_model_listed(
        cls, files: Mapping[str, FileEntry]
    ) -> Mapping[str, FileEntry]:
        for name in files:
            if _SHARD_NAME.match(name):
                continue
            if name in ("", ".", "..", MANIFEST_NAME) or "/" in name or "\\" in name:
                raise _problem(
                    "key 'files': expected plain file names other than manifest.json "
                    f"(or users/part-NNNNN.parquet), found {_describe(name)}"
                )
        if MODEL_NAME not in files:
            raise _problem(f"missing key 'files[\"{MODEL_NAME}\"]' (the model must be hash-listed)")
        return files

    @model_validator(mode="after")
    def _scores_output(self) -> Manifest:
        scores, n_tags = self.outputs[0], len(self.tags)
        if scores.name != SCORES_OUTPUT:
            raise _problem(
                f"key 'outputs[0].name': expected {SCORES_OUTPUT!r}, found {_describe(scores.name)}"
            )
        if scores.dtype != "float32":
            raise _problem(
                f"key 'outputs[0].dtype': expected 'float32', found {_describe(scores.dtype)}"
            )
        if len(scores.shape) != 2 or scores.shape[-1] != n_tags:
            raise _problem(
                f"key 'outputs[0].shape': expected [batch, {n_tags}] (last dimension = "
                f"number of tags, len(tags) = {n_tags}), found {list(scores.shape)}"
            )
        return self


_MANIFEST = TypeAdapter(Manifest)


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: paths of its files and its manifest. ``themes_path``,
    ``users_path`` and ``user_shards`` (in name order) are set only for files listed (hence
    hash-checked) in the manifest; an unlisted file in the directory is ignored."""

    path: Path
    manifest: Manifest
    model_path: Path
    themes_path: Path | None
    users_path: Path | None
    user_shards: tuple[Path, ...] = ()

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    @property
    def tags(self) -> tuple[str, ...]:
        """Tag vocabulary: ``tags[i]`` is the name of tag id ``i`` (column ``i`` of scores)."""
        return self.manifest.tags

    @property
    def n_tags(self) -> int:
        return len(self.manifest.tags)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self.manifest.inputs)


# --------------------------------------------------------------------------- parsing


def _describe(value: Any) -> str:
    """Short ``repr`` with the JSON type, for error messages."""
    kind = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{kind} {text}"


def _key_path(loc: tuple[int | str, ...]) -> str:
    """``('inputs', 2, 'dtype')`` -> ``inputs[2].dtype``; ``files["model.onnx"]``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() and path != "files":  # file names are always quoted
            path += f".{part}" if path else part
        else:
            path += f'["{part}"]'
    return path


# pydantic's own error types that can reach the message without an _expect around them
_EXPECTED = {"dataclass_type": "an object", "dict_type": "an object", "tuple_type": "a list"}


def _describe_error(err: ErrorDetails, errors: list[ErrorDetails]) -> str:
    key = _key_path(err["loc"])
    if err["type"] == "manifest":
        return err["msg"]
    if err["type"] == "missing":
        return f"missing key '{key}'"
    if err["type"] == "unexpected_keyword_argument":
        parent = err["loc"][:-1]
        extra = sorted(
            str(e["loc"][-1])
            for e in errors
            if e["type"] == err["type"] and e["loc"][:-1] == parent
        )
        return f"unexpected key(s) {extra} in {_key_path(parent) or 'the top level'}"
    expected = err["ctx"]["expected"] if err["type"] == "expected" else None
    expected = expected or _EXPECTED.get(err["type"], err["msg"])
    return f"key '{key}': expected {expected}, found {_describe(err['input'])}"


def _root_causes(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """Drop an error about a value when another is about a part of it (a list too short
    after its bad items were dropped), and report unexpected keys of one object once."""
    kept: list[ErrorDetails] = []
    for err in errors:
        loc, n = err["loc"], len(err["loc"])
        if any(len(other["loc"]) > n and other["loc"][:n] == loc for other in errors):
            continue
        if err["type"] == "unexpected_keyword_argument" and any(
            k["type"] == err["type"] and k["loc"][:-1] == loc[:-1] for k in kept
        ):
            continue
        kept.append(err)
    return kept


def manifest_from_dict(data: Any, source: str | Path = "<manifest>") -> Manifest:
    """Validate a parsed ``manifest.json`` and build a :class:`Manifest`.

    ``source`` (the bundle path) only appears in error messages. Every key is checked
    for presence and type; ``outputs[0]`` must be ``scores`` float32 whose last dimension
    equals the number of tags. Policy checks that need the files (hashes, parity) are
    done by :func:`load_bundle`.
    """
    if not isinstance(data, dict):
        raise BundleError(source, f"{MANIFEST_NAME}: expected an object, found {_describe(data)}")
    # The version decides what the other keys mean, so it is checked first.
    if "format_version" not in data:
        raise BundleError(source, f"{MANIFEST_NAME}: missing key 'format_version'")
    version = data["format_version"]
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_FORMAT_VERSIONS)
        raise BundleError(
            source,
            f"{MANIFEST_NAME}: format_version {version!r} is not supported "
            f"(supported: {supported})",
        )
    try:
        return _MANIFEST.validate_python(data)
    except ValidationError as e:
        errors = _root_causes(e.errors())
        problem = _describe_error(errors[0], e.errors())
        if len(errors) > 1:
            problem += f" (and {len(errors) - 1} more problem(s))"
        raise BundleError(source, f"{MANIFEST_NAME}: {problem}") from None


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON form of ``manifest`` (plain dicts and lists, keys in the exporter's order);
    ``manifest_to_dict(manifest_from_dict(d)) == d`` for every valid ``d``."""
    return _MANIFEST.dump_python(manifest, mode="json")


# --------------------------------------------------------------------------- loading


def file_sha256(path: Path) -> str:
    """sha256 (lowercase hex) of a file, read in 1 MiB chunks: models can be large."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(root: Path) -> Any:
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(root, f"{MANIFEST_NAME} not found (expected {manifest_path})")
    try:
        text = manifest_path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BundleError(root, f"{MANIFEST_NAME} is not valid UTF-8: {e}") from None
    except OSError as e:
        raise BundleError(root, f"{MANIFEST_NAME} cannot be read: {e}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BundleError(
            root,
            f"{MANIFEST_NAME} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}",
        ) from None


def _verify_file(root: Path, name: str, entry: FileEntry) -> Path:
    """Size then sha256 of one listed file (size first: it is free and catches most)."""
    path = root / name
    if not path.is_file():
        raise BundleError(
            root, f"{name} is listed in {MANIFEST_NAME} 'files' but not found at {path}"
        )
    size = path.stat().st_size
    if size != entry.bytes:
        raise BundleError(
            root,
            f"{name} is corrupt or replaced: size expected {entry.bytes} bytes "
            f"(manifest 'files[\"{name}\"].bytes'), found {size} bytes",
        )
    sha = file_sha256(path)
    if sha != entry.sha256:
        raise BundleError(
            root,
            f"{name} is corrupt or replaced: sha256 expected {entry.sha256} "
            f"(manifest 'files[\"{name}\"].sha256'), found {sha}",
        )
    return path


def _dims_compatible(manifest_dim: Dim, model_dim: Any) -> bool:
    """A fixed model dimension must equal the manifest's; a dimension the manifest calls
    dynamic (a name) must be dynamic in the model too, else batching would break."""
    model_fixed = isinstance(model_dim, int) and not isinstance(model_dim, bool)
    if isinstance(manifest_dim, str):
        return not model_fixed
    return not model_fixed or model_dim == manifest_dim


def _check_arg(root: Path, kind: str, spec: InputSpec | OutputSpec, arg: Any) -> None:
    expected_type = _ORT_TYPES[spec.dtype]
    if arg.type != expected_type:
        raise BundleError(
            root,
            f"{kind} {spec.name!r}: manifest dtype {spec.dtype} ({expected_type}), "
            f"{MODEL_NAME} has {arg.type}",
        )
    model_shape = list(arg.shape) if arg.shape is not None else None
    if model_shape is None:
        return  # unknown rank in the graph: nothing to compare
    if len(model_shape) != len(spec.shape) or not all(
        _dims_compatible(m, g) for m, g in zip(spec.shape, model_shape, strict=True)
    ):
        raise BundleError(
            root,
            f"{kind} {spec.name!r}: manifest shape {list(spec.shape)}, "
            f"{MODEL_NAME} has {model_shape}",
        )


def _check_model(root: Path, model_path: Path, manifest: Manifest) -> None:
    """Open the graph with onnxruntime (CPU) and compare its signature with the manifest.
    The session is discarded: the service builds its own with the provider it wants."""
    import onnxruntime as ort  # only needed here; keeps check_model=False import-light

    options = ort.SessionOptions()
    # Only the signature is needed: skip graph optimisation, which dominates load time.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as e:  # onnxruntime raises several pybind exception types
        raise BundleError(
            root, f"{MODEL_NAME} cannot be loaded by onnxruntime: {type(e).__name__}: {e}"
        ) from None

    model_inputs = {arg.name: arg for arg in session.get_inputs()}
    manifest_inputs = {spec.name for spec in manifest.inputs}
    missing = [spec.name for spec in manifest.inputs if spec.name not in model_inputs]
    extra = [name for name in model_inputs if name not in manifest_inputs]
    if missing or extra:
        raise BundleError(
            root,
            f"inputs do not match: manifest inputs {sorted(manifest_inputs)}, "
            f"{MODEL_NAME} inputs {sorted(model_inputs)}"
            + (f"; not in model: {missing}" if missing else "")
            + (f"; not in manifest: {extra}" if extra else ""),
        )
    for spec in manifest.inputs:
        _check_arg(root, "input", spec, model_inputs[spec.name])

    model_outputs = {arg.name: arg for arg in session.get_outputs()}
    for spec in manifest.outputs:
        if spec.name not in model_outputs:
            raise BundleError(
                root,
                f"output {spec.name!r} of the manifest is not an output of {MODEL_NAME} "
                f"(model outputs: {sorted(model_outputs)})",
            )
        _check_arg(root, "output", spec, model_outputs[spec.name])


def load_bundle(path: str | Path, *, check_model: bool = True) -> Bundle:
    """Load and verify the bundle at ``path``; raise :class:`BundleError` if it is unfit.

    Order (cheap checks first): directory, manifest JSON and schema, parity, every file
    listed in ``files`` (present, size, sha256), then with ``check_model`` the ONNX graph
    is opened with onnxruntime on CPU and its inputs/outputs compared to the manifest.
    """
    root = Path(path)
    if not root.exists():
        raise BundleError(root, "directory not found")
    if not root.is_dir():
        raise BundleError(root, "is not a directory")

    manifest = manifest_from_dict(_read_manifest(root), root)

    parity = manifest.parity
    if not parity.passed:
        raise BundleError(
            root,
            f"export parity check failed: parity.max_abs_diff {parity.max_abs_diff} > "
            f"parity.tolerance {parity.tolerance} (over {parity.users} users); "
            "an unverified model must not be served",
        )

    model_path = root / MODEL_NAME
    if not model_path.is_file():
        raise BundleError(root, f"{MODEL_NAME} not found (expected {model_path})")
    verified = {
        name: _verify_file(root, name, entry)
        for name, entry in sorted(manifest.files.items(), key=lambda kv: kv[0] != MODEL_NAME)
    }

    if check_model:
        _check_model(root, model_path, manifest)

    return Bundle(
        path=root,
        manifest=manifest,
        model_path=model_path,
        themes_path=verified.get(THEMES_NAME),
        users_path=verified.get(USERS_NAME),
        user_shards=tuple(
            path for name, path in sorted(verified.items()) if _SHARD_NAME.match(name)
        ),
    )
