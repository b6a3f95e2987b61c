"""``python -m service`` (or ``tagprofile``): serve the API, load a bundle's data into
Redis, precompute profiles, replay simulated users against an A/B experiment.

Settings come from ``TAGPROFILE_*`` environment variables (see ``service.settings``;
``--help`` of each command lists them); the flags here override them. Without
``--redis-url``/``TAGPROFILE_REDIS_URL`` every command uses the embedded Redis on
``TAGPROFILE_REDIS_DATA_DIR`` (shared with a running ``serve``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis
from pydantic import ValidationError
from redis.exceptions import RedisClusterException

from service.ab import parse_plant, parse_segments
from service.envvars import describe_error, settings_help, unknown_variables
from service.jobs import EngineUnavailable, LoadError, load_into_redis, precompute
from service.model import Bundle, BundleError, load_bundle, load_model
from service.settings import Settings
from service.store import Keys, SyncClient, redis_url, sync_client

ENGINES = ("local", "ray")
RAY_ONLY = {
    "address": "--address",
    "actors": "--actors",
    "num_gpus": "--num-gpus",
    "features": "--features",
    "restart": "--restart",
}
"""precompute flags that only the ray engine takes: attribute -> flag."""


def _parsed(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse ``type`` from a parser raising ValueError: its message, not "invalid"."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


FLAGS = {
    "bundle": "--bundle",
    "redis_url": "--redis-url",
    "host": "--host",
    "port": "--port",
    "experiments": "--experiments",
    "workers": "--workers",
}
"""Settings a flag overrides: settings field -> flag."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help="model bundle directory")
    parser.add_argument("--redis-url", help="Redis to use (default: embedded redis-server)")


def _settings_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that reads the settings: its --help ends with every TAGPROFILE_ variable."""
    parser = sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve user-tag profiles and theme rankings from a model bundle.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = _settings_command(sub, "serve", "run the HTTP API (uvicorn)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 8000)")
    serve.add_argument("--experiments", type=Path, help="A/B experiment file (YAML or JSON)")
    serve.add_argument("--workers", type=int, help="worker processes sharing the port (default 1)")
    load = _settings_command(
        sub, "load", "load the users' features (users.jsonl or Parquet shards) and themes.json"
    )
    load.add_argument("--batch", type=int, default=1000, help="users per pipelined batch")
    load.add_argument(
        "--features",
        type=Path,
        help="a users.jsonl file or a folder of part-*.parquet shards (default: the bundle's "
        "shards, else its users.jsonl)",
    )
    pre = _settings_command(sub, "precompute", "score every user, cache all profiles")
    pre.add_argument("--batch", type=int, default=512, help="users per model call")
    pre.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: this process scores every user of the feature store (Redis); ray: Ray "
        "Data reads Parquet feature shards and an actor pool scores them (the scale extra)",
    )
    ray = pre.add_argument_group("--engine ray")
    ray.add_argument("--address", help="Ray cluster to join (default: start a local Ray)")
    ray.add_argument("--actors", type=int, help="scoring actors, each loads the model once (2)")
    ray.add_argument("--num-gpus", type=float, help="GPUs per actor; > 0 scores on CUDA (0)")
    ray.add_argument(
        "--features", type=Path, help="folder of part-*.parquet shards (default: the bundle's)"
    )
    ray.add_argument(
        "--restart", action="store_true", help="forget which shards earlier runs finished"
    )
    sim = sub.add_parser("simulate", help="replay users against an A/B experiment, print report")
    sim.add_argument("--experiment", required=True, help="experiment name")
    sim.add_argument("--users", type=int, default=2000, help="distinct users to replay (2000)")
    sim.add_argument("--base-url", default="http://127.0.0.1:8000", help="the running API")
    sim.add_argument(
        "--truth",
        type=Path,
        default=Path("artifacts/abtest/truth.jsonl"),
        help="users' true interests (python -m training truth)",
    )
    sim.add_argument("--k", type=int, default=10, help="themes per ranking (10)")
    sim.add_argument("--seed", type=int, default=0, help="seed of user choice and clicks")
    sim.add_argument("--sessions", type=int, default=1, help="visits per user (1)")
    sim.add_argument(
        "--segments",
        type=_parsed(parse_segments),
        help="segments sessions request under, NAME[:WEIGHT],... (the experiment must "
        "declare them), e.g. home:0.7,search:0.3",
    )
    sim.add_argument(
        "--plant",
        type=_parsed(parse_plant),
        action="append",
        default=[],
        metavar="SEGMENT:ARM:FACTOR",
        help="multiply the click probability of ARM in SEGMENT by FACTOR (repeatable); "
        "e.g. an A/A test with search:b:1.5 must show a lift in 'search' only",
    )
    sim.add_argument(
        "--out",
        type=Path,
        help="also write the report here as JSON, with report.html (self-contained) and "
        "PNG figures next to it",
    )
    return parser


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags."""
    return {name: getattr(args, name) for name in FLAGS if getattr(args, name, None) is not None}


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(**overrides_of(args))


def curl_examples(bundle: Bundle, host: str, port: int) -> str:
    """Working examples for the bundle being served (one of its real users)."""
    user = "alice"
    if bundle.users_path is not None:
        with bundle.users_path.open("rb") as lines:
            user = orjson.loads(next(lines, b'{"user_id": "alice"}'))["user_id"]
    base = f"http://{host}:{port}"
    lines = [
        f"curl '{base}/users/{user}/tags?k=5'",
        f"curl -X POST {base}/themes/rank -H 'content-type: application/json' "
        f"""-d '{{"user_id": "{user}", "k": 3}}'""",
        f"curl {base}/readyz",
        f"open {base}/docs  # OpenAPI",
    ]
    return "\n".join(f"  {line}" for line in lines)


def serve(settings: Settings, overrides: dict[str, Any]) -> int:
    from service.app import create_app
    from service.http import run
    from service.workers import serve_workers

    bundle = load_bundle(settings.bundle)  # fail here, with the reason, not inside uvicorn
    if settings.experiments is not None:
        from service.ab import load_experiments

        load_experiments(settings.experiments)  # ExperimentConfigError names file and key
    workers = f" with {settings.workers} workers" if settings.workers > 1 else ""
    print(f"serving {settings.bundle} on http://{settings.host}:{settings.port}{workers}; try:")
    print(curl_examples(bundle, settings.host, settings.port), flush=True)
    if settings.workers > 1:
        serve_workers(settings, bundle.model_version, overrides)
    else:
        run(create_app(settings), settings)
    return 0


@contextmanager
def job_redis(settings: Settings) -> Iterator[tuple[str, SyncClient]]:
    """(URL, client) of the Redis an offline job uses: the configured one or the embedded
    server (kept running for the block), standalone or cluster; the client closes after."""
    with redis_url(settings.redis_url, settings.redis_data_dir) as url:
        client = sync_client(url, cluster=settings.redis_cluster)
        try:
            yield url, client
        finally:
            client.close()


def load(settings: Settings, batch: int, features: Path | None = None) -> int:
    bundle = load_bundle(settings.bundle)
    with job_redis(settings) as (_, client):
        report = load_into_redis(
            bundle, client, Keys(settings.key_prefix), batch=batch, features=features
        )
    themes = "and themes.json " if report.themes else ""
    source = f" from {report.source}" if report.source else ""
    print(
        f"loaded {report.users} users {themes}of {bundle.model_version}{source} "
        f"in {report.seconds:.1f} s"
    )
    return 0


def run_precompute(settings: Settings, args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return run_precompute_on_ray(settings, args)
    given = [flag for name, flag in RAY_ONLY.items() if getattr(args, name, None)]
    if given:
        raise ValueError(f"{', '.join(given)}: only with --engine ray")
    batch = args.batch
    model = load_model(settings.bundle, device=settings.device, max_k=settings.max_k)
    with job_redis(settings) as (_, client):
        report = precompute(
            model,
            client,
            Keys(settings.key_prefix),
            ttl_s=settings.profile_ttl_s,
            jitter=settings.profile_ttl_jitter,
            batch=batch,
        )
    print(
        f"precomputed {report.users} profiles of {model.version} in {report.seconds:.2f} s "
        f"({report.rate:,.0f} users/s; model {report.model_seconds:.2f} s; "
        f"{report.skipped} skipped)"
    )
    return 0


def run_precompute_on_ray(settings: Settings, args: argparse.Namespace) -> int:
    from service.jobs import precompute_on_ray

    bundle = load_bundle(settings.bundle)
    with job_redis(settings) as (url, client):
        report = precompute_on_ray(
            bundle,
            url,
            client,
            Keys(settings.key_prefix),
            cluster=settings.redis_cluster,
            ttl_s=settings.profile_ttl_s,
            jitter=settings.profile_ttl_jitter,
            max_k=settings.max_k,
            device=settings.device,
            intra_op_threads=settings.intra_op_threads,
            features=args.features,
            address=args.address,
            actors=2 if args.actors is None else args.actors,
            num_gpus=args.num_gpus or 0.0,
            batch=args.batch,
            restart=args.restart,
        )
    print(
        f"precomputed {report.users} profiles of {bundle.model_version} on Ray "
        f"({report.actors} actors) in {report.seconds:.2f} s ({report.rate:,.0f} users/s; "
        f"model {report.model_seconds:.2f} actor-s; {report.skipped} skipped; shards: "
        f"{report.shards} scored, {report.shards_done_before} done before; first batch after "
        f"{report.first_batch_s:.1f} s, then {report.steady_rate:,.0f} users/s)"
    )
    return 0


def run_simulation(args: argparse.Namespace) -> int:
    import asyncio

    from service.ab import format_report, pick_users, read_truth, simulate, write_report

    users = pick_users(read_truth(args.truth), args.users, args.seed)
    report = asyncio.run(
        simulate(
            args.base_url,
            args.experiment,
            users,
            k=args.k,
            seed=args.seed,
            sessions=args.sessions,
            segments=args.segments,
            plants=tuple(args.plant),
        )
    )
    print(format_report(report))
    if args.out is not None:
        page = write_report(report, args.out)
        print(f"wrote {args.out}, its figures and the page; open it in a browser:")
        print(f"report: {page.resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "simulate":
        from service.ab import SimulationError

        try:
            return run_simulation(args)
        except (SimulationError, FileNotFoundError, httpx.HTTPError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    for warning in unknown_variables(os.environ):
        print(warning, file=sys.stderr)
    try:
        settings = settings_from(args)
        commands: dict[str, Any] = {
            "serve": lambda: serve(settings, overrides_of(args)),
            "load": lambda: load(settings, args.batch, args.features),
            "precompute": lambda: run_precompute(settings, args),
        }
        return commands[args.command]()
    except ValidationError as error:
        flags = {field: FLAGS[field] for field in overrides_of(args)}
        for line in describe_error(error, flags).splitlines():
            print(f"error: {line}", file=sys.stderr)
    except (
        BundleError,
        LoadError,
        ValueError,
        FileNotFoundError,
        redis.RedisError,
        RedisClusterException,  # not a RedisError: no node answered, or not a cluster
        EngineUnavailable,
    ) as error:
        print(f"error: {error}", file=sys.stderr)
    return 2
