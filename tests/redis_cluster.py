"""A real Redis Cluster for tests: ``redis-server --cluster-enabled yes``
processes on free ports, joined with ``redis-cli --cluster create``.

:class:`RedisCluster` starts the nodes (3 masters and 3 replicas by default),
waits until every node reports ``cluster_state:ok`` and agrees on who owns
every slot, and offers the faults the tests need: a manual failover
(``CLUSTER FAILOVER`` on a replica), a crash (SIGKILL) followed by the
cluster's own failover (fast, with a short ``cluster-node-timeout``), a
restart of the crashed node, and moving slots between masters either with
``redis-cli --cluster reshard`` or step by step with ``CLUSTER SETSLOT`` and
``MIGRATE`` (to stop half-way and see ``ASK`` redirects). Optionally the
nodes speak TLS only and require a password or an ACL user.

:meth:`RedisCluster.close` kills every process it started, so a failing test
leaves nothing behind; use the cluster as a context manager (or in a fixture
with ``try``/``finally``).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis_server import (
    ErrorReply,
    RedisServer,
    _encode,
    _read_resp,
    free_port,
    require_binary,
    wait_until,
)

__all__ = ["ClusterTLS", "RedisCluster", "cluster_port", "keys_in_slot"]


def cluster_port() -> int:
    """A free port for a cluster node: its cluster bus listens 10000 above it,
    so it must be at most 55535 and that port must be free as well."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass(frozen=True)
class ClusterTLS:
    """Certificates for a TLS-only cluster (``ca`` signs ``cert``; see
    ``tests/test_layer_redis.py`` for how they are made)."""

    ca: Path
    cert: Path
    key: Path


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, on free ports.

    ``username``/``password`` make every node require them (an ACL user when
    ``username`` is given, else ``requirepass``), including between nodes for
    replication (``masteruser``/``masterauth``). With ``tls``, nodes listen on
    TLS only, and the cluster bus and replication use TLS too.
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = 1000,
        tls: ClusterTLS | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        require_binary("redis-server")
        self.cli = require_binary("redis-cli")
        self.masters = masters
        self.replicas = replicas
        self.tls = tls
        self.username = username
        self.password = password
        self.nodes: list[RedisServer] = []
        for _ in range(masters * (1 + replicas)):
            server = RedisServer(port=cluster_port(), tls=tls is not None)
            args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(server.dir / "nodes.conf"),
                "--cluster-node-timeout", str(node_timeout_ms),
                # A replica takes over as soon as it may, whatever its lag.
                "--cluster-replica-validity-factor", "0",
                "--repl-diskless-sync-delay", "0",
                "--appendonly", "no",
            ]  # fmt: skip
            if tls is not None:
                args += [
                    "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
                    "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
                    "--tls-cluster", "yes", "--tls-replication", "yes",
                ]  # fmt: skip
            if username is not None:
                assert password is not None
                args += ["--user", username, "on", f">{password}", "~*", "&*", "+@all"]
                args += ["--user", "default", "off"]
                args += ["--masteruser", username, "--masterauth", password]
            elif password is not None:
                args += ["--requirepass", password, "--masterauth", password]
            server.extra_args = args
            self.nodes.append(server)

    # -- talking to nodes ------------------------------------------------------------

    def call(self, port: int, *args: object, timeout: float = 5.0) -> Any:
        """One command to the node on ``port`` (over TLS and authenticated as the
        nodes require); the parsed reply, an :class:`ErrorReply` for an error."""
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
            sock: socket.socket = raw
            if self.tls is not None:
                context = ssl.create_default_context(cafile=str(self.tls.ca))
                sock = context.wrap_socket(raw, server_hostname="localhost")
            with sock.makefile("rb") as reader:
                if self.password is not None:
                    auth = (self.username, self.password) if self.username else (self.password,)
                    sock.sendall(_encode("AUTH", *auth))
                    reply = _read_resp(reader)
                    if isinstance(reply, ErrorReply):
                        raise reply
                sock.sendall(_encode(*args))
                return _read_resp(reader)

    def call_many(self, port: int, commands: Sequence[Sequence[object]]) -> list[Any]:
        """Several commands in one write (no AUTH, no TLS: a plain cluster)."""
        assert self.tls is None
        assert self.password is None
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"".join(_encode(*command) for command in commands))
            with sock.makefile("rb") as reader:
                return [_read_resp(reader) for _ in commands]

    def info(self, port: int, section: str) -> dict[str, str]:
        text = self.call(port, "INFO", section)
        lines = text.splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line and line[0] != "#")

    def _cli(self, *args: str, timeout: float = 60.0) -> str:
        command = [self.cli]
        if self.tls is not None:
            command += ["--tls", "--cacert", str(self.tls.ca)]
        if self.username is not None:
            command += ["--user", self.username]
        if self.password is not None:
            command += ["--pass", self.password]
        result = subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def running(self) -> list[RedisServer]:
        return [node for node in self.nodes if node.process is not None]

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def cluster_ok(self, port: int) -> bool:
        return "cluster_state:ok" in str(self.call(port, "CLUSTER", "INFO"))

    def node_id(self, port: int) -> str:
        return str(self.call(port, "CLUSTER", "MYID"))

    def role(self, port: int) -> str:
        return str(self.call(port, "ROLE")[0])

    def slot_owners(self, port: int) -> dict[int, int]:
        """Slot → master port, as the node on ``port`` sees it (CLUSTER SLOTS)."""
        owners: dict[int, int] = {}
        for start, end, master, *_ in self.call(port, "CLUSTER", "SLOTS"):
            for slot in range(int(start), int(end) + 1):
                owners[slot] = int(master[1])
        return owners

    def master_of_slot(self, slot: int) -> int:
        return self.slot_owners(self.running()[0].port)[slot]

    def master_ports(self) -> list[int]:
        """Ports of the running masters that own slots."""
        return sorted(set(self.slot_owners(self.running()[0].port).values()))

    def replica_of(self, master_port: int) -> int:
        """The port of a running replica linked to the master on ``master_port``."""
        for node in self.running():
            replication = self.info(node.port, "replication")
            if replication.get("role") == "slave" and int(replication["master_port"]) == (
                master_port
            ):
                return node.port
        raise AssertionError(f"no replica of {master_port}")

    def keyslot(self, key: str | bytes) -> int:
        return int(self.call(self.running()[0].port, "CLUSTER", "KEYSLOT", key))

    # -- life cycle --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> RedisCluster:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{port}" for port in self.ports]
            self._cli(
                "--cluster", "create", *addresses,
                "--cluster-replicas", str(self.replicas), "--cluster-yes",
            )  # fmt: skip
            self.wait_healthy(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def wait_healthy(self, timeout: float = 30.0, *, acknowledged: bool = True) -> None:
        """Wait until every running node says ``cluster_state:ok``, all agree on
        the owner of every slot, every slot is owned by a running master, and
        each replica is linked to a master. With ``acknowledged`` (which needs
        a pause in the writes), also that each replica has caught up, as it
        and as its master see it (replicas acknowledge once a second)."""

        def healthy() -> bool:
            views = []
            for node in self.running():
                if not self.cluster_ok(node.port):
                    return False
                views.append(self.slot_owners(node.port))
            if any(view != views[0] for view in views) or len(views[0]) != 16384:
                return False
            live = {node.port for node in self.running()}
            owners = set(views[0].values())
            if not owners <= live:
                return False
            for port in live:
                replication = self.info(port, "replication")
                if port in owners:
                    if replication["role"] != "master":
                        return False
                else:
                    # Every other node must be a replica, linked to a slot owner.
                    if replication["role"] != "slave":
                        return False
                    if replication.get("master_link_status") != "up":
                        return False
                    if int(replication["master_port"]) not in owners:
                        return False
                    if not acknowledged:
                        continue  # under writes, offsets are never seen equal
                    master = self.info(int(replication["master_port"]), "replication")
                    if replication["slave_repl_offset"] != master["master_repl_offset"]:
                        return False
                    # And the master's side: the replica is online and has
                    # acknowledged everything. Until its first acknowledgement
                    # (replicas send one a second) a master that has just fed
                    # it a full copy may hold back the writes that follow, and
                    # a failover then loses them.
                    links = [v for k, v in master.items() if k[:5] == "slave" and k[5:].isdigit()]
                    mine = [v for v in links if f"port={port}," in v]
                    if len(mine) != 1 or "state=online" not in mine[0]:
                        return False
                    if f"offset={master['master_repl_offset']}," not in mine[0]:
                        return False
            return True

        wait_until(healthy, timeout, "the cluster to be healthy on every node")

    def fail_over(self, master_port: int, timeout: float = 30.0) -> int:
        """Manual failover: a replica of ``master_port`` takes over (``CLUSTER
        FAILOVER``, which waits for it to have every write). Returns its port."""
        replica = self.replica_of(master_port)
        deadline = time.monotonic() + timeout
        while True:
            # A manual failover gives up after 5 s (a replica too slow to catch
            # up, on a busy machine): ask again until the time is up.
            reply = self.call(replica, "CLUSTER", "FAILOVER")
            assert reply == "OK", reply
            try:
                wait_until(lambda: self.role(replica) == "master", 6, f"{replica} to be promoted")
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        self.wait_healthy(timeout, acknowledged=False)  # (callers may be writing)
        return replica

    def crash(self, master_port: int) -> int:
        """SIGKILL the master on ``master_port``; return the port of the replica
        that will take over (see :meth:`wait_promoted`)."""
        replica = self.replica_of(master_port)
        self.node(master_port).kill()
        return replica

    def wait_promoted(self, replica_port: int, timeout: float = 30.0) -> float:
        """Wait until the replica on ``replica_port`` is a master and every
        running node says the cluster is ok; return when it was seen promoted
        (``time.monotonic()``)."""

        def promoted() -> bool:
            return self.role(replica_port) == "master"

        wait_until(promoted, timeout, f"the replica on {replica_port} to be promoted")
        seen = time.monotonic()

        def ok_everywhere() -> bool:
            return all(self.cluster_ok(node.port) for node in self.running())

        wait_until(ok_everywhere, timeout, "cluster_state:ok on every running node")
        return seen

    def revive(self, port: int, timeout: float = 30.0) -> None:
        """Restart a killed node on its port, with its cluster configuration: it
        rejoins as a replica of whoever took its slots, and resyncs (empty)."""
        self.node(port).start()
        self.wait_healthy(timeout)

    def kill_all(self) -> None:
        """SIGKILL every node (their cluster configuration files stay)."""
        for node in self.nodes:
            node.kill()

    def start_all(self, timeout: float = 30.0) -> None:
        """Start every node again on its port: the cluster forms again from
        the nodes' configuration files, with the same roles, and no data."""
        for node in self.nodes:
            node.start()
        self.wait_healthy(timeout)

    def heal(self, timeout: float = 30.0) -> None:
        """Restart every node that is not running (a test that killed one
        failed before reviving it), and wait until the cluster is healthy."""
        for node in self.nodes:
            if node.process is None:
                node.start()
        self.wait_healthy(timeout)

    def reshard(self, source_port: int, target_port: int, slots: int) -> None:
        """Move ``slots`` slots from one master to another with ``redis-cli
        --cluster reshard`` (keys included), then wait until all nodes agree."""
        self._cli(
            "--cluster", "reshard", f"127.0.0.1:{source_port}",
            "--cluster-from", self.node_id(source_port),
            "--cluster-to", self.node_id(target_port),
            "--cluster-slots", str(slots), "--cluster-yes",
        )  # fmt: skip
        self.wait_healthy(acknowledged=False)  # (callers may be writing)

    def begin_migration(self, slot: int, target_port: int) -> int:
        """Start moving ``slot`` to the master on ``target_port`` by hand and stop
        half-way: the source is ``MIGRATING``, the target ``IMPORTING``, no key
        moved yet. Returns the source's port."""
        source = self.master_of_slot(slot)
        source_id, target_id = self.node_id(source), self.node_id(target_port)
        self._ok(target_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        self._ok(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        return source

    def migrate_keys(
        self, slot: int, source_port: int, target_port: int, keys: Sequence[str] | None = None
    ) -> int:
        """``MIGRATE`` ``keys`` (default: every key of ``slot``) from source to
        target; how many."""
        if keys is None:
            keys = self.call(source_port, "CLUSTER", "GETKEYSINSLOT", slot, 100_000)
        if keys:
            auth: list[object] = []
            if self.password is not None:
                auth = (
                    ["AUTH2", self.username, self.password]
                    if self.username
                    else ["AUTH", self.password]
                )
            reply = self.call(
                source_port, "MIGRATE", "127.0.0.1", target_port, "", 0, 5000, *auth,
                "KEYS", *keys,
            )  # fmt: skip
            assert reply == "OK", reply
        return len(keys)

    def finish_migration(self, slot: int, source_port: int, target_port: int) -> None:
        """Move the remaining keys and hand ``slot`` to the target on every master."""
        self.migrate_keys(slot, source_port, target_port)
        target_id = self.node_id(target_port)
        for port in [target_port, source_port, *self.master_ports()]:
            self._ok(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        wait_until(
            lambda: all(self.slot_owners(n.port)[slot] == target_port for n in self.running()),
            30,
            f"every node to see slot {slot} on {target_port}",
        )

    def _ok(self, port: int, *args: object) -> None:
        reply = self.call(port, *args)
        if reply != "OK":
            raise AssertionError(f"{args} on {port}: {reply!r}")

    def pids(self) -> list[int]:
        return [node.process.pid for node in self.running() if node.process is not None]

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def keys_in_slot(slot: int, count: int, keyslot: Any, prefix: str = "k") -> Sequence[str]:
    """``count`` distinct keys whose slot is ``slot`` (by the ``keyslot``
    function given), made with a hash tag that lands there."""
    n = 0
    while keyslot(f"{n}") != slot:
        n += 1
    return [f"{prefix}{i}{{{n}}}" for i in range(count)]


def tls_acl_cluster(directory: Path) -> RedisCluster:
    """A 3-master, replica-less cluster that speaks TLS only (certificates made in
    ``directory``) and requires the ACL user ``alice`` / ``wonder land``. Not started:
    enter it (``with tls_acl_cluster(...) as cluster:``)."""
    from test_layer_redis import _make_certificates

    require_binary("openssl")
    ca, cert, key = _make_certificates(directory)
    return RedisCluster(
        masters=3,
        replicas=0,
        tls=ClusterTLS(ca=ca, cert=cert, key=key),
        username="alice",
        password="wonder land",
    )
