"""Experiment configuration (service.ab.experiments): loading, validation errors, assignment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.ab import assignment
from service.ab.experiments import Arm, Experiment, ExperimentConfigError, load_experiments

YAML_CONFIG = """\
experiments:
  - name: theme-ranking
    salt: "2026-11"
    control: popular
    arms:
      - {name: popular, weight: 50, ranker: popular}
      - {name: profile, weight: 50, ranker: profile, bundle: null}
    popular_by: ctr
  - name: bundle-test.v2
    salt: "s"
    control: old
    arms:
      - {name: old, weight: 1, ranker: profile}
      - {name: new, weight: 3, ranker: profile, bundle: bundles/new}
      - {name: abs, weight: 0, ranker: profile, bundle: /srv/bundles/abs}
"""


def valid() -> dict[str, Any]:
    """A fresh valid config as data, for tests that break one thing in it."""
    return yaml.safe_load(YAML_CONFIG)


def write(tmp_path: Path, data: Any, name: str = "experiments.yaml") -> Path:
    path = tmp_path / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    elif name.endswith(".json"):
        path.write_text(json.dumps(data), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_yaml_config_loads(tmp_path: Path) -> None:
    experiments = load_experiments(write(tmp_path, YAML_CONFIG))
    assert list(experiments) == ["theme-ranking", "bundle-test.v2"]
    exp = experiments["theme-ranking"]
    assert exp.salt == "2026-11" and exp.control == "popular" and exp.popular_by == "ctr"
    assert [(a.name, a.weight, a.ranker, a.bundle) for a in exp.arms] == [
        ("popular", 50.0, "popular", None),
        ("profile", 50.0, "profile", None),
    ]
    assert exp.ranges == [("popular", 0, 5000), ("profile", 5000, 10000)]
    assert experiments["bundle-test.v2"].ranges == [
        ("old", 0, 2500),
        ("new", 2500, 10000),
        ("abs", 10000, 10000),
    ]


@pytest.mark.parametrize("name", ["experiments.json", "experiments.yml"])
def test_json_and_yml_configs_load(tmp_path: Path, name: str) -> None:
    data = valid()
    del data["experiments"][0]["popular_by"]
    experiments = load_experiments(str(write(tmp_path, data, name)))
    assert set(experiments) == {"theme-ranking", "bundle-test.v2"}
    assert experiments["theme-ranking"].popular_by == "ctr"  # the default


def test_relative_bundle_resolved_against_config_dir(tmp_path: Path, monkeypatch) -> None:
    config_dir = tmp_path / "deploy"
    config_dir.mkdir()
    path = write(config_dir, YAML_CONFIG)
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    exp = load_experiments(Path("deploy") / path.name)["bundle-test.v2"]
    assert exp.arm("new").bundle == config_dir.resolve() / "bundles" / "new"
    assert exp.arm("abs").bundle == Path("/srv/bundles/abs")
    assert exp.arm("old").bundle is None


def test_empty_experiment_list_is_allowed(tmp_path: Path) -> None:
    assert load_experiments(write(tmp_path, "experiments: []\n")) == {}


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    target: Any = data
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def _mutations() -> list[Any]:
    """(changes to the valid config, expected key path, expected message fragment)."""
    exp0 = ("experiments", 0)
    dup_arm = {"name": "popular", "weight": 1, "ranker": "popular"}
    return [
        pytest.param(
            [((*exp0, "arms", 1, "ranker"), "profiles")],
            "experiments[0].arms[1].ranker",
            "Input should be 'popular' or 'profile'",
            id="unknown-ranker",
        ),
        pytest.param(
            [((*exp0, "control"), "treatment")],
            "experiments[0].control",
            "'treatment' is not one of the arms (popular, profile)",
            id="control-not-an-arm",
        ),
        pytest.param(
            [((*exp0, "arms"), [{"name": "popular", "weight": 1, "ranker": "popular"}])],
            "experiments[0].arms",
            "at least 2 arms, got 1",
            id="one-arm",
        ),
        pytest.param(
            [((*exp0, "arms", 1), dup_arm)],
            "experiments[0].arms[1].name",
            "duplicate arm name 'popular'",
            id="duplicate-arm",
        ),
        pytest.param(
            [(("experiments", 1, "name"), "theme-ranking")],
            "experiments[1].name",
            "duplicate experiment name 'theme-ranking'",
            id="duplicate-experiment",
        ),
        pytest.param(
            [((*exp0, "name"), "theme ranking!")],
            "experiments[0].name",
            "should match pattern",
            id="bad-name",
        ),
        pytest.param(
            [((*exp0, "name"), "x" * 65)],
            "experiments[0].name",
            "should match pattern",
            id="name-too-long",
        ),
        pytest.param(
            [((*exp0, "arms", 0, "name"), "pop ular")],
            "experiments[0].arms[0].name",
            "should match pattern",
            id="bad-arm-name",
        ),
        pytest.param(
            [((*exp0, "arms", 1, "colour"), "blue")],
            "experiments[0].arms[1].colour",
            "Extra inputs are not permitted",
            id="extra-arm-key",
        ),
        pytest.param(
            [((*exp0, "owner"), "me")],
            "experiments[0].owner",
            "Extra inputs are not permitted",
            id="extra-experiment-key",
        ),
        pytest.param(
            [((*exp0, "arms", 0, "weight"), -1)],
            "experiments[0].arms[0].weight",
            "greater than or equal to 0",
            id="negative-weight",
        ),
        pytest.param(
            [((*exp0, "arms", 0, "weight"), 0), ((*exp0, "arms", 1, "weight"), 0)],
            "experiments[0].arms",
            "all arm weights are 0",
            id="all-weights-zero",
        ),
        pytest.param(
            [((*exp0, "salt"), 2026)],
            "experiments[0].salt",
            "valid string",
            id="unquoted-salt",
        ),
        pytest.param(
            [((*exp0, "arms", 1, "bundle"), 42)],
            "experiments[0].arms[1].bundle",
            "not a valid path",
            id="bundle-not-a-path",
        ),
    ]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize(("changes", "key", "message"), _mutations())
def test_validation_errors_name_file_and_key(
    tmp_path: Path, suffix: str, changes: list[tuple[tuple[Any, ...], Any]], key: str, message: str
) -> None:
    data = valid()
    for where, value in changes:
        _set(data, where, value)
    path = write(tmp_path, data, "experiments" + suffix)
    with pytest.raises(ExperimentConfigError) as info:
        load_experiments(path)
    text = str(info.value)
    assert f"{path}: {key}: " in text
    assert message in text
    assert isinstance(info.value, ValueError)


def test_missing_experiments_key(tmp_path: Path) -> None:
    path = write(tmp_path, "experiment: []\n")
    with pytest.raises(ExperimentConfigError) as info:
        load_experiments(path)
    assert f"{path}: experiments: Field required" in str(info.value)
    assert f"{path}: experiment: Extra inputs are not permitted" in str(info.value)


def test_not_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "experiments: [a, b\n  - : :\n")
    with pytest.raises(ExperimentConfigError, match=r"experiments\.yaml: not valid YAML \(line"):
        load_experiments(path)


def test_not_json(tmp_path: Path) -> None:
    path = write(tmp_path, '{"experiments": [', "experiments.json")
    with pytest.raises(ExperimentConfigError, match=r"experiments\.json: not valid JSON \(line 1"):
        load_experiments(path)


@pytest.mark.parametrize("content", ["", "- a\n- b\n", "just a string\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ExperimentConfigError, match="expected a mapping with key 'experiments'"):
        load_experiments(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "experiments.yaml"
    with pytest.raises(ExperimentConfigError, match="not found") as info:
        load_experiments(path)
    assert str(path) in str(info.value)


def test_unknown_extension(tmp_path: Path) -> None:
    path = write(tmp_path, YAML_CONFIG, "experiments.toml")
    with pytest.raises(ExperimentConfigError, match=r"experiments\.toml: unknown extension"):
        load_experiments(path)


def test_assign_is_deterministic_and_matches_assignment_module(tmp_path: Path) -> None:
    exp = load_experiments(write(tmp_path, YAML_CONFIG))["bundle-test.v2"]
    seen = set()
    for i in range(2000):
        user = f"user-{i}"
        arm, bucket = exp.assign(user)
        assert isinstance(arm, Arm)
        assert (arm.name, bucket) == assignment.assign(exp.salt, exp.name, user, exp.ranges)
        assert exp.assign(user) == (arm, bucket)
        seen.add(arm.name)
    assert seen == {"old", "new"}  # "abs" has weight 0


def test_assign_of_a_reloaded_config_is_identical(tmp_path: Path) -> None:
    path = write(tmp_path, YAML_CONFIG)
    first = load_experiments(path)["theme-ranking"]
    second = load_experiments(path)["theme-ranking"]
    users = [f"u{i}" for i in range(200)]
    assert [first.assign(u) for u in users] == [second.assign(u) for u in users]
    # pinned: the same key as service.ab.assignment's pinned ("2026-11", "theme-ranking", "u1")
    assert first.assign("u1") == (first.arm("popular"), 1191)


def test_arm_lookup() -> None:
    exp = Experiment.model_validate(valid()["experiments"][0])
    assert exp.arm("profile").ranker == "profile"
    with pytest.raises(KeyError, match="nope"):
        exp.arm("nope")


def test_experiment_is_immutable() -> None:
    """Frozen: a running service must not see its experiment change under it."""
    exp = Experiment.model_validate(valid()["experiments"][0])
    with pytest.raises(ValueError, match="frozen"):
        exp.salt = "other"  # type: ignore[misc]
    ranges = exp.ranges
    ranges.clear()
    assert exp.ranges == [("popular", 0, 5000), ("profile", 5000, 10000)]
