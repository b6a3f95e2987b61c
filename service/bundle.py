"""Loading and verifying a model bundle (DESIGN.md §5), the only thing the service reads
from training.

A bundle is a directory holding ``model.onnx``, ``manifest.json`` and optionally
``themes.json`` and ``users.jsonl``. Everything the service knows about the model (tag
vocabulary, ONNX input spec, version) comes from the manifest, so the loader is strict: a
bundle that does not verify (unknown format, missing or mistyped key, file whose hash does
not match, model that failed its export parity check, ONNX graph that disagrees with the
manifest) is refused with a :class:`BundleError` naming the bundle and the exact problem,
instead of serving wrong scores later.

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
from typing import Any

__all__ = [
    "MANIFEST_KEYS",
    "MANIFEST_NAME",
    "MODEL_NAME",
    "OPTIONAL_FILES",
    "SCORES_OUTPUT",
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

_INPUT_KEYS = ("name", "dtype", "shape", "feature", "role")
_OUTPUT_KEYS = ("name", "dtype", "shape")
_PARITY_KEYS = ("max_abs_diff", "tolerance", "users")
_FILE_KEYS = ("sha256", "bytes")

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
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
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


@dataclass(frozen=True)
class InputSpec:
    """One ONNX input: which user feature it carries and in which role (ids, weights...)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]
    feature: str
    role: str


@dataclass(frozen=True)
class OutputSpec:
    """One ONNX output; ``outputs[0]`` is always ``scores`` float32 [batch, n_tags]."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]


@dataclass(frozen=True)
class Parity:
    """Export-time check of the ONNX model against the torch model it came from."""

    max_abs_diff: float
    tolerance: float
    users: int

    @property
    def passed(self) -> bool:
        """True iff the measured difference is finite and within tolerance."""
        return math.isfinite(self.max_abs_diff) and self.max_abs_diff <= self.tolerance


@dataclass(frozen=True)
class FileEntry:
    """Expected size and sha256 (lowercase hex) of one bundle file."""

    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` (format 1). Mappings are read-only views. ``dataset``
    (training data and protocol) and ``metrics`` (the run's test report: mostly numbers,
    also e.g. ``tag_privileged_field``) are free-form JSON: informational, never a reason
    to refuse a model."""

    format_version: int
    model_name: str
    model_version: str
    created_at: str
    dataset: Mapping[str, Any]
    tags: tuple[str, ...]
    max_history: int
    inputs: tuple[InputSpec, ...]
    outputs: tuple[OutputSpec, ...]
    privileged: Mapping[str, tuple[str, ...]]
    attributes: Mapping[str, tuple[str, ...]]
    metrics: Mapping[str, Any]
    parity: Parity
    files: Mapping[str, FileEntry]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: paths of its files and its manifest. ``themes_path`` and
    ``users_path`` are set only when the file is listed (hence hash-checked) in the
    manifest; an unlisted file in the directory is ignored."""

    path: Path
    manifest: Manifest
    model_path: Path
    themes_path: Path | None
    users_path: Path | None

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


class _Parser:
    """Typed access to the manifest's JSON, raising BundleError with the key path."""

    def __init__(self, source: str | Path) -> None:
        self.source = source

    def fail(self, key: str, expected: str, found: Any) -> BundleError:
        return BundleError(
            self.source,
            f"{MANIFEST_NAME}: key '{key}': expected {expected}, found {_describe(found)}",
        )

    def obj(self, value: Any, key: str, keys: tuple[str, ...] | None = None) -> dict[str, Any]:
        """A JSON object; with ``keys``, exactly those keys (missing or extra is an error)."""
        if not isinstance(value, dict):
            raise self.fail(key, "an object", value)
        if keys is not None:
            missing = [k for k in keys if k not in value]
            if missing:
                where = f"{key}." if key != "<top level>" else ""
                raise BundleError(
                    self.source,
                    f"{MANIFEST_NAME}: missing key '{where}{missing[0]}'"
                    + (f" (also missing: {missing[1:]})" if len(missing) > 1 else ""),
                )
            extra = sorted(str(k) for k in value if k not in keys)
            if extra:
                raise BundleError(
                    self.source,
                    f"{MANIFEST_NAME}: unexpected key(s) {extra} in {key} "
                    f"(expected exactly {list(keys)})",
                )
        return value

    def str_(self, value: Any, key: str, *, nonempty: bool = True) -> str:
        if not isinstance(value, str) or (nonempty and not value):
            raise self.fail(key, "a non-empty string" if nonempty else "a string", value)
        return value

    def int_(self, value: Any, key: str, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(key, f"an integer >= {minimum}", value)
        return value

    def number(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, "a number", value)
        return value  # kept as parsed (int or float) so the manifest round-trips exactly

    def str_list(self, value: Any, key: str, *, nonempty: bool) -> tuple[str, ...]:
        if not isinstance(value, list) or (nonempty and not value):
            raise self.fail(key, "a non-empty list of strings" if nonempty else "a list", value)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{key}[{i}]", "a string", item)
        return tuple(value)

    def dtype(self, value: Any, key: str) -> str:
        if value not in _ORT_TYPES:
            raise self.fail(key, f"one of {sorted(_ORT_TYPES)}", value)
        return value

    def shape(self, value: Any, key: str) -> tuple[Dim, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(key, "a non-empty list of dimensions", value)
        for i, dim in enumerate(value):
            # 0 is a legal (empty) dimension: an exporter may keep an empty input
            ok_int = isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0
            if not (ok_int or (isinstance(dim, str) and dim)):
                raise self.fail(f"{key}[{i}]", "an integer >= 0 or a dimension name", dim)
        return tuple(value)

    def vocabularies(self, value: Any, key: str) -> Mapping[str, tuple[str, ...]]:
        return MappingProxyType(
            {
                field: self.str_list(words, f"{key}.{field}", nonempty=False)
                for field, words in self.obj(value, key).items()
            }
        )


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


def manifest_from_dict(data: Any, source: str | Path = "<manifest>") -> Manifest:
    """Validate a parsed ``manifest.json`` and build a :class:`Manifest`.

    ``source`` (the bundle path) only appears in error messages. Every key is checked
    for presence and type; ``outputs[0]`` must be ``scores`` float32 whose last dimension
    equals the number of tags. Policy checks that need the files (hashes, parity) are
    done by :func:`load_bundle`.
    """
    p = _Parser(source)
    top = p.obj(data, "<top level>")
    # The version decides what the other keys mean, so it is checked first.
    if "format_version" not in top:
        raise BundleError(source, f"{MANIFEST_NAME}: missing key 'format_version'")
    version = top["format_version"]
    if isinstance(version, bool) or version not in SUPPORTED_FORMAT_VERSIONS:
        supported = ", ".join(str(v) for v in SUPPORTED_FORMAT_VERSIONS)
        raise BundleError(
            source,
            f"{MANIFEST_NAME}: format_version {version!r} is not supported "
            f"(supported: {supported})",
        )
    p.obj(top, "<top level>", MANIFEST_KEYS)

    created_at = p.str_(top["created_at"], "created_at")
    try:
        datetime.fromisoformat(created_at)
    except ValueError:
        raise p.fail("created_at", "an ISO-8601 timestamp", created_at) from None

    tags = p.str_list(top["tags"], "tags", nonempty=True)

    inputs_raw = top["inputs"]
    if not isinstance(inputs_raw, list) or not inputs_raw:
        raise p.fail("inputs", "a non-empty list of input specs", inputs_raw)
    inputs: list[InputSpec] = []
    for i, raw in enumerate(inputs_raw):
        key = f"inputs[{i}]"
        spec = p.obj(raw, key, _INPUT_KEYS)
        inputs.append(
            InputSpec(
                name=p.str_(spec["name"], f"{key}.name"),
                dtype=p.dtype(spec["dtype"], f"{key}.dtype"),
                shape=p.shape(spec["shape"], f"{key}.shape"),
                feature=p.str_(spec["feature"], f"{key}.feature"),
                role=p.str_(spec["role"], f"{key}.role"),
            )
        )
    _no_duplicates(source, "inputs", [s.name for s in inputs])

    outputs_raw = top["outputs"]
    if not isinstance(outputs_raw, list) or not outputs_raw:
        raise p.fail("outputs", "a non-empty list of output specs", outputs_raw)
    outputs: list[OutputSpec] = []
    for i, raw in enumerate(outputs_raw):
        key = f"outputs[{i}]"
        spec = p.obj(raw, key, _OUTPUT_KEYS)
        outputs.append(
            OutputSpec(
                name=p.str_(spec["name"], f"{key}.name"),
                dtype=p.dtype(spec["dtype"], f"{key}.dtype"),
                shape=p.shape(spec["shape"], f"{key}.shape"),
            )
        )
    _no_duplicates(source, "outputs", [s.name for s in outputs])
    scores = outputs[0]
    if scores.name != SCORES_OUTPUT:
        raise p.fail("outputs[0].name", repr(SCORES_OUTPUT), scores.name)
    if scores.dtype != "float32":
        raise p.fail("outputs[0].dtype", "'float32'", scores.dtype)
    if len(scores.shape) != 2 or scores.shape[-1] != len(tags):
        raise BundleError(
            source,
            f"{MANIFEST_NAME}: key 'outputs[0].shape': expected [batch, {len(tags)}] "
            f"(last dimension = number of tags, len(tags) = {len(tags)}), "
            f"found {list(scores.shape)}",
        )

    parity_raw = p.obj(top["parity"], "parity", _PARITY_KEYS)
    parity = Parity(
        max_abs_diff=p.number(parity_raw["max_abs_diff"], "parity.max_abs_diff"),
        tolerance=p.number(parity_raw["tolerance"], "parity.tolerance"),
        users=p.int_(parity_raw["users"], "parity.users"),
    )

    files: dict[str, FileEntry] = {}
    for name, raw in p.obj(top["files"], "files").items():
        key = f'files["{name}"]'
        if name in ("", ".", "..", MANIFEST_NAME) or "/" in name or "\\" in name:
            raise p.fail("files", "plain file names other than manifest.json", name)
        entry = p.obj(raw, key, _FILE_KEYS)
        sha = entry["sha256"]
        if not isinstance(sha, str) or not _SHA256_RE.fullmatch(sha):
            raise p.fail(f"{key}.sha256", "64 lowercase hex digits", sha)
        files[name] = FileEntry(sha256=sha, bytes=p.int_(entry["bytes"], f"{key}.bytes"))
    if MODEL_NAME not in files:
        raise BundleError(
            source,
            f"{MANIFEST_NAME}: missing key 'files[\"{MODEL_NAME}\"]' "
            "(the model must be hash-listed)",
        )

    return Manifest(
        format_version=version,
        model_name=p.str_(top["model_name"], "model_name"),
        model_version=p.str_(top["model_version"], "model_version"),
        created_at=created_at,
        dataset=MappingProxyType(copy.deepcopy(p.obj(top["dataset"], "dataset"))),
        tags=tags,
        max_history=p.int_(top["max_history"], "max_history", minimum=1),
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        privileged=p.vocabularies(top["privileged"], "privileged"),
        attributes=p.vocabularies(top["attributes"], "attributes"),
        metrics=MappingProxyType(copy.deepcopy(p.obj(top["metrics"], "metrics"))),
        parity=parity,
        files=MappingProxyType(files),
    )


def _no_duplicates(source: str | Path, key: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise BundleError(source, f"{MANIFEST_NAME}: key '{key}': duplicate name {name!r}")
        seen.add(name)


def manifest_to_dict(manifest: Manifest) -> dict[str, Any]:
    """The JSON form of ``manifest`` (plain dicts and lists, keys in the exporter's order);
    ``manifest_to_dict(manifest_from_dict(d)) == d`` for every valid ``d``."""
    return {
        "format_version": manifest.format_version,
        "model_name": manifest.model_name,
        "model_version": manifest.model_version,
        "created_at": manifest.created_at,
        "dataset": copy.deepcopy(dict(manifest.dataset)),
        "tags": list(manifest.tags),
        "max_history": manifest.max_history,
        "inputs": [
            {
                "name": s.name,
                "dtype": s.dtype,
                "shape": list(s.shape),
                "feature": s.feature,
                "role": s.role,
            }
            for s in manifest.inputs
        ],
        "outputs": [
            {"name": s.name, "dtype": s.dtype, "shape": list(s.shape)} for s in manifest.outputs
        ],
        "privileged": {k: list(v) for k, v in manifest.privileged.items()},
        "attributes": {k: list(v) for k, v in manifest.attributes.items()},
        "metrics": copy.deepcopy(dict(manifest.metrics)),
        "parity": {
            "max_abs_diff": manifest.parity.max_abs_diff,
            "tolerance": manifest.parity.tolerance,
            "users": manifest.parity.users,
        },
        "files": {
            name: {"sha256": e.sha256, "bytes": e.bytes} for name, e in manifest.files.items()
        },
    }


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
    )
