"""The GPU deployment and the serving image: the compose GPU variant, a serving image
without torch that checks its libraries at build time, and `docker run` examples that
work. No Docker engine and no GPU are needed; `docker-compose config` runs where the tool
is installed (apt-get install docker-compose)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.abtest_local import start_api
from deploy.check_image import check
from tests.service_helpers import users
from tests.test_deploy import DEPLOY, DOCKERFILE, ROOT, compose_tool, environment

GPU_OVERRIDE = DEPLOY / "docker-compose.gpu.yml"


def docker_run_examples() -> list[list[str]]:
    """Every `docker run` example in the Dockerfile's header, as argv lists."""
    lines = [line.removeprefix("#").strip() for line in DOCKERFILE.read_text().splitlines()
             if line.startswith("#")]  # fmt: skip
    examples, current = [], ""
    for line in lines:
        if line.startswith("docker run") or current:
            current += " " + line.removesuffix("\\").strip()
            if not line.endswith("\\"):
                examples.append(shlex.split(current))
                current = ""
    return examples


def split_run(argv: list[str]) -> tuple[dict[str, str], dict[str, str], str, list[str]]:
    """(env, volumes container->host, image, command) of a `docker run` argv."""
    env, volumes, i = {}, {}, 2
    while argv[i].startswith("-"):
        flag = argv[i]
        if flag in ("-e", "-v", "-p", "--gpus"):
            value = argv[i + 1]
            if flag == "-e":
                key, _, val = value.partition("=")
                env[key] = val
            elif flag == "-v":
                host, container = value.split(":")[:2]
                volumes[container] = host
            i += 2
        else:
            i += 1
    return env, volumes, argv[i], argv[i + 1 :]


# --------------------------------------------------------------------------- compose
def test_gpu_override_reserves_a_gpu_for_the_api_on_the_gpu_image() -> None:
    override = yaml.safe_load(GPU_OVERRIDE.read_text())["services"]
    api = override["api"]
    (device,) = api["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert api["build"]["args"]["VARIANT"] == "gpu"
    assert re.fullmatch(r"nvidia/cuda:13\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+",
                        api["build"]["args"]["BASE_IMAGE"])  # fmt: skip
    assert environment(api)["TAGPROFILE_DEVICE"] == "cuda"  # no silent CPU fallback
    assert override["simulator"]["image"] == api["image"] and ":gpu" in api["image"]


def test_compose_config_validates_for_every_variant() -> None:
    tool = compose_tool()
    if tool is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    merged: dict[str, Any] = {}
    for files in (["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]):
        args = [part for name in files for part in ("-f", name)]
        result = subprocess.run([*tool, *args, "config"], cwd=DEPLOY, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        merged[files[-1]] = yaml.safe_load(result.stdout)["services"]
    cpu, gpu = merged["docker-compose.yml"], merged["docker-compose.gpu.yml"]
    assert "deploy" not in cpu["api"]
    assert gpu["api"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert gpu["api"]["build"]["target"] == "serve"  # kept from the base file
    assert gpu["api"]["build"]["args"]["VARIANT"] == "gpu"
    assert gpu["bootstrap"]["image"] == cpu["bootstrap"]["image"]  # trains on the CPU
    assert gpu["api"]["environment"]["TAGPROFILE_REDIS_URL"] == "redis://redis:6379/0"


# --------------------------------------------------------------------------- the images
def stage(name: str) -> str:
    """The instructions of one Dockerfile stage (no comments), continuation lines joined."""
    lines = [line for line in DOCKERFILE.read_text().splitlines() if not line.startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    (body,) = [s for s in stages if re.match(rf"\S+ AS {name}\s", s)]
    return body


def test_the_serving_image_installs_no_torch_and_checks_itself() -> None:
    builder = stage("serve-builder")
    assert "['optional-dependencies'][sys.argv[1]]" in builder  # cpu or gpu extra only
    assert "train" not in builder and "torch" not in builder
    assert "COPY training" not in builder
    serve = stage("serve")
    check_run = r'RUN python deploy/check_image.py --variant "\$\{VARIANT\}" --no-torch'
    assert re.search(check_run, serve)
    assert "COPY --from=serve-builder /opt/venv" in serve
    assert "download.pytorch.org/whl/cpu" in stage("train-builder")


def test_image_check_passes_for_this_cpu_environment() -> None:
    problems, facts = check("cpu", no_torch=False)
    assert problems == [] and facts[0].startswith("onnxruntime ")
    run = subprocess.run([sys.executable, "deploy/check_image.py", "--variant", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0 and "image check (cpu) passed" in run.stdout


def test_image_check_names_what_a_gpu_image_would_lack() -> None:
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    problems, _ = check("gpu", no_torch=True)
    text = "\n".join(problems)
    assert "no CUDAExecutionProvider" in text and "faiss has no GPU support" in text
    if __import__("importlib").util.find_spec("torch") is not None:
        assert "torch is installed" in text  # the dev environment has it; an image must not


# --------------------------------------------------------------------------- docker run
def test_docker_run_examples_mount_the_bundle_they_serve() -> None:
    examples = docker_run_examples()
    assert len(examples) == 2, examples
    for argv in examples:
        env, volumes, _, command = split_run(argv)
        assert env["TAGPROFILE_BUNDLE"] in volumes, "the served bundle must be mounted"
        assert volumes[env["TAGPROFILE_BUNDLE"]].endswith("artifacts/bundles/synthetic-ctmvm")
        assert command[:2] == ["sh", "-c"] and "service load" in command[2]
    gpu = [argv for argv in examples if "--gpus" in argv]
    assert len(gpu) == 1 and split_run(gpu[0])[0]["TAGPROFILE_DEVICE"] == "cuda"


def test_the_cpu_docker_run_example_serves_the_mounted_bundle(service_bundle, tmp_path) -> None:
    """The example's command, run here as the image would: cwd /app -> a fresh directory,
    the mounted bundle -> a copy of the test bundle."""
    (argv,) = [a for a in docker_run_examples() if "--gpus" not in a]
    env, _, _, command = split_run(argv)
    bundle = tmp_path / "bundle"
    shutil.copytree(service_bundle, bundle)
    app = tmp_path / "app"
    app.mkdir()
    environ = {**os.environ, **env, "TAGPROFILE_BUNDLE": str(bundle), "OMP_NUM_THREADS": "1",
               "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # fmt: skip
    for key in ("TAGPROFILE_REDIS_URL", "TAGPROFILE_REDIS_DATA_DIR", "TAGPROFILE_KEY_PREFIX"):
        environ.pop(key, None)
    script = command[2]
    assert "--host 0.0.0.0 --port 8000" in script

    def run(port: int) -> list[str]:
        return ["sh", "-c", script.replace("--host 0.0.0.0 --port 8000",
                                           f"--host 127.0.0.1 --port {port}")]  # fmt: skip

    process, base, ready = start_api(run, tmp_path / "api.log", env=environ, cwd=app)
    try:
        assert ready["status"] == "ready"
        user = users(bundle)[0]["user_id"]
        answer = httpx.get(f"{base}/users/{user}/tags", params={"k": 3}).json()
        assert answer["source"] == "model", answer  # load put the user's features in Redis
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert (app / "artifacts" / "redis").is_dir()  # the image's writable /app/artifacts
