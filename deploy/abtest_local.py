"""The local A/B test without Docker (``make abtest``): the compose stack as processes.

embedded redis-server -> ``deploy/bootstrap.sh`` (prepare, train, export, truth, load)
-> the API (``python -m service serve`` on a free port, experiments from
``deploy/experiments.yaml``) -> ``python -m service simulate`` -> the report, printed and
written to ``ARTIFACTS/abtest/``: ``report.json``, a self-contained ``report.html`` (its
path is the last line printed) and the figures as PNGs. Every process is stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.store import EmbeddedRedis, free_port  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--users", type=int, default=2000, help="users to simulate (2000)")
    parser.add_argument("--world-users", type=int, default=4000, help="synthetic world size")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs of CTMVM")
    parser.add_argument(
        "--config", type=Path, help="training config file (default: the data set's family's)"
    )
    parser.add_argument(
        "--data", type=Path, help="a prepared data set instead of a synthetic world (real data)"
    )
    parser.add_argument("--experiments", type=Path, default=ROOT / "deploy" / "experiments.yaml")
    parser.add_argument("--experiment", default="theme-ranking")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sessions", type=int, default=1, help="visits per simulated user (small real test sets)"
    )
    parser.add_argument(
        "--segments",
        default="home:0.7,search:0.3",
        help="segment mix of the simulated sessions (home:0.7,search:0.3; '' for none)",
    )
    parser.add_argument(
        "--plant",
        action="append",
        default=[],
        metavar="SEGMENT:ARM:FACTOR",
        help="an effect planted in one arm of one segment (see simulate --help)",
    )
    parser.add_argument("--force", action="store_true", help="redo bootstrap steps")
    return parser.parse_args()


def wait_ready(url: str, api: subprocess.Popen, timeout: float = 120) -> dict:
    """The API's ``/readyz`` body once it answers 200; RuntimeError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with code {api.returncode}")
        try:
            response = httpx.get(f"{url}/readyz", timeout=2)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {url} did not become ready in {timeout:.0f} s")


def start_api(
    command: Callable[[int], list[str]],
    log: Path,
    *,
    env: dict[str, str],
    cwd: Path = ROOT,
    attempts: int = 3,
    timeout: float = 120,
) -> tuple[subprocess.Popen, str, dict]:
    """Run ``command(port)`` on a free port until its ``/readyz`` answers: ``(process,
    base URL, readiness)``; its output goes to ``log``.

    A port is free when :func:`free_port` picks it but may be taken before uvicorn binds it
    (by a parallel test worker, or any other program): the API then exits with "address
    already in use", and it is started again on another port.
    """
    for attempt in range(1, attempts + 1):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with log.open("ab") as out:
            process = subprocess.Popen(command(port), cwd=cwd, env=env, stdout=out, stderr=out)
        try:
            return process, base, wait_ready(base, process, timeout)
        except RuntimeError:
            if process.poll() is None:
                process.kill()
                process.wait()
            output = log.read_text(errors="replace")
            if attempt < attempts and "address already in use" in output.lower():
                continue
            raise RuntimeError(
                f"the API did not start (output in {log}):\n{output[-2000:]}"
            ) from None
    raise AssertionError("unreachable")


def main() -> int:
    args = parse_args()
    artifacts = args.artifacts.resolve()
    out = artifacts / "abtest"
    out.mkdir(parents=True, exist_ok=True)
    bundle = artifacts / "bundles" / "abtest"
    with EmbeddedRedis(out / "redis", persistence=False) as redis_server:
        env = {
            **os.environ,
            "ARTIFACTS": str(artifacts),
            "TP_USERS": str(args.world_users),
            "TP_EPOCHS": str(args.epochs),
            "TP_FORCE": "1" if args.force else os.environ.get("TP_FORCE", "0"),
            "TAGPROFILE_REDIS_URL": redis_server.url,
            "TAGPROFILE_EXPERIMENTS": str(args.experiments.resolve()),
            "PYTHON": sys.executable,
        }
        if args.config is not None:
            env["TP_CONFIG"] = str(args.config.resolve())
        if args.data is not None:
            env["TP_DATA"] = str(args.data.resolve())
            env.setdefault("TP_TRUTH_SPLITS", "test")
        subprocess.run(["sh", str(ROOT / "deploy" / "bootstrap.sh")], env=env, check=True)
        truth = out / "truth.jsonl"
        available = sum(1 for line in truth.open() if line.strip())
        users = min(args.users, available)
        if users < args.users:
            print(f"note: simulating {users} users, all whose interests are known")

        def serve(port: int) -> list[str]:
            return [sys.executable, "-m", "service", "serve", "--bundle", str(bundle),
                    "--port", str(port)]  # fmt: skip

        api_log = out / "api.log"
        api_log.unlink(missing_ok=True)
        api, base, _ = start_api(serve, api_log, env=env)
        print(f"API on {base} (its log: {api_log})", flush=True)
        try:
            simulate = [
                sys.executable, "-m", "service", "simulate", "--experiment", args.experiment,
                "--users", str(users), "--base-url", base, "--truth", str(truth),
                "--seed", str(args.seed), "--sessions", str(args.sessions),
                "--out", str(out / "report.json"),
            ]  # fmt: skip
            if args.segments:
                simulate += ["--segments", args.segments]
            for plant in args.plant:
                simulate += ["--plant", plant]
            code = subprocess.run(simulate, cwd=ROOT, env=env).returncode
        finally:
            api.terminate()
            api.wait(timeout=30)
    if code == 0:
        print(f"\nA/B report: {out / 'report.html'}")
    return code


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RuntimeError as error:  # the API did not come up: say why, without a traceback
        raise SystemExit(f"error: {error}") from None
