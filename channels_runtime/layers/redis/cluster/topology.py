"""What a cluster looks like: its masters, their replicas, and which master
serves each slot.

The map is learnt from any node with ``CLUSTER SHARDS`` (Redis 7 and Valkey),
or ``CLUSTER SLOTS`` on older servers, which answers ``ERR unknown
subcommand`` to the former. Only masters ever get a slot: replicas are listed
(a caller may want them for reads or to know the failover candidates) but the
router never sends a command to one.

An endpoint the node does not know how clients reach (an empty host) is the
host the answering node was reached at; with TLS, the ``tls-port`` of
``CLUSTER SHARDS`` is used (``CLUSTER SLOTS`` already answers with the TLS port
on a TLS connection when the cluster runs TLS).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..protocol import Connection, ReplyError
from .slots import SLOT_COUNT

__all__ = [
    "NodeAddress",
    "Shard",
    "Topology",
    "TopologyError",
    "fetch_topology",
    "parse_cluster_shards",
    "parse_cluster_slots",
]


class NodeAddress(NamedTuple):
    """Where a node listens for clients."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


class TopologyError(Exception):
    """A node's answer about the cluster could not be understood."""


@dataclass(frozen=True)
class Shard:
    """One master, its replicas, and the slot ranges (inclusive) it serves."""

    master: NodeAddress
    replicas: tuple[NodeAddress, ...] = ()
    ranges: tuple[tuple[int, int], ...] = field(default=())


_NONE = -1


class Topology:
    """The slot map: which master serves each slot (``None``: nobody does, as
    while a failed master's slots wait for a replica to take over)."""

    __slots__ = ("_masters", "_owner", "_serving", "shards")

    def __init__(self, shards: Iterable[Shard]) -> None:
        self.shards: tuple[Shard, ...] = tuple(shards)
        self._masters: list[NodeAddress] = []
        self._serving: list[NodeAddress] | None = None
        self._owner = array("h", [_NONE]) * SLOT_COUNT
        for shard in self.shards:
            for start, end in shard.ranges:
                if not 0 <= start <= end < SLOT_COUNT:
                    raise TopologyError(f"slot range {start}-{end} of {shard.master} is invalid")
                index = self._index(shard.master)
                self._owner[start : end + 1] = array("h", [index]) * (end + 1 - start)

    def _index(self, address: NodeAddress) -> int:
        try:
            return self._masters.index(address)
        except ValueError:
            self._masters.append(address)
            return len(self._masters) - 1

    def master_for_slot(self, slot: int) -> NodeAddress | None:
        index = self._owner[slot]
        return None if index == _NONE else self._masters[index]

    def assign(self, slot: int, address: NodeAddress) -> None:
        """Record that ``address`` serves ``slot`` now (what ``MOVED`` says),
        until the next full refresh replaces the whole map."""
        self._owner[slot] = self._index(address)
        self._serving = None

    @property
    def masters(self) -> list[NodeAddress]:
        """The masters that serve at least one slot, each once."""
        if self._serving is None:
            used = sorted(set(self._owner) - {_NONE})
            self._serving = [self._masters[i] for i in used]
        return list(self._serving)

    @property
    def nodes(self) -> list[NodeAddress]:
        """Every node known: masters first, then replicas."""
        found = dict.fromkeys(self.masters)
        for shard in self.shards:
            found.setdefault(shard.master)
        for shard in self.shards:
            found.update(dict.fromkeys(shard.replicas))
        return list(found)

    def replicas_of(self, master: NodeAddress) -> tuple[NodeAddress, ...]:
        return tuple(r for shard in self.shards if shard.master == master for r in shard.replicas)

    def uncovered(self) -> int:
        """How many slots no master serves."""
        return sum(1 for i in self._owner if i == _NONE)

    def __repr__(self) -> str:
        return f"Topology(masters={[str(m) for m in self.masters]}, uncovered={self.uncovered()})"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _host(value: Any, contacted: str) -> str | None:
    host = _text(value) if value is not None else ""
    if host == "?":
        return None  # the node's endpoint is unknown: it cannot be reached
    return host or contacted


def parse_cluster_slots(reply: Any, contacted: str) -> Topology:
    """A :class:`Topology` from a ``CLUSTER SLOTS`` reply: ``[start, end,
    master, replica...]`` entries, each node ``[host, port, id, ...]``."""
    if not isinstance(reply, list):
        raise TopologyError(f"CLUSTER SLOTS answered {reply!r}")
    by_master: dict[NodeAddress, tuple[list[tuple[int, int]], dict[NodeAddress, None]]] = {}
    try:
        for entry in reply:
            start, end, master, *replicas = entry
            host = _host(master[0], contacted)
            if host is None:
                continue
            address = NodeAddress(host, int(master[1]))
            ranges, known = by_master.setdefault(address, ([], {}))
            ranges.append((int(start), int(end)))
            for replica in replicas:
                replica_host = _host(replica[0], contacted)
                if replica_host is not None:
                    known[NodeAddress(replica_host, int(replica[1]))] = None
    except (TypeError, ValueError, IndexError) as exc:
        raise TopologyError(f"CLUSTER SLOTS answered {reply!r}") from exc
    return Topology(
        Shard(master, tuple(known), tuple(ranges)) for master, (ranges, known) in by_master.items()
    )


def _fields(flat: Sequence[Any]) -> dict[str, Any]:
    return {_text(k): v for k, v in zip(flat[::2], flat[1::2], strict=True)}


def parse_cluster_shards(reply: Any, contacted: str, tls: bool) -> Topology:
    """A :class:`Topology` from a ``CLUSTER SHARDS`` reply: per shard, its slot
    ranges and its nodes with their role and health. A shard's master is its
    node with role ``master`` (preferring one whose health is ``online``);
    replicas that are ``failed`` are left out."""
    if not isinstance(reply, list):
        raise TopologyError(f"CLUSTER SHARDS answered {reply!r}")
    shards = []
    try:
        for raw in reply:
            entry = _fields(raw)
            flat = [int(n) for n in entry.get("slots") or []]
            ranges = tuple(zip(flat[::2], flat[1::2], strict=True))
            master: tuple[bool, NodeAddress] | None = None
            replicas = []
            for node_raw in entry.get("nodes") or []:
                node = _fields(node_raw)
                host = _host(node.get("endpoint") or node.get("ip"), contacted)
                port = int(node.get("tls-port", 0) if tls else 0) or int(node.get("port", 0))
                if host is None or not port:
                    continue
                address = NodeAddress(host, port)
                health = _text(node.get("health", "online"))
                online = health == "online"
                if _text(node.get("role")) == "master":
                    if master is None or (online and not master[0]):
                        master = (online, address)
                elif health != "failed":
                    # ("loading" included: Redis 7.0 says so of any replica
                    # whose offset is 0, as in a cluster never written to.)
                    replicas.append(address)
            if master is not None:
                shards.append(Shard(master[1], tuple(replicas), ranges))
    except (TypeError, ValueError, AttributeError) as exc:
        raise TopologyError(f"CLUSTER SHARDS answered {reply!r}") from exc
    return Topology(shards)


async def fetch_topology(
    conn: Connection, contacted: str, *, tls: bool, use_shards: bool = True
) -> tuple[Topology, bool]:
    """Ask the node on ``conn`` for the cluster's map. Returns the map and
    whether ``CLUSTER SHARDS`` worked (when it did not, pass ``use_shards=False``
    next time to skip a round trip). Error replies other than "unknown
    subcommand" are raised as :class:`~..protocol.ReplyError`."""
    if use_shards:
        reply = await conn.request("CLUSTER", "SHARDS")
        if not isinstance(reply, ReplyError):
            return parse_cluster_shards(reply, contacted, tls), True
        if "unknown" not in str(reply).lower():
            raise reply
    reply = await conn.request("CLUSTER", "SLOTS")
    if isinstance(reply, ReplyError):
        raise reply
    return parse_cluster_slots(reply, contacted), False


def node_slots(described: bytes | str) -> list[tuple[int, int]]:
    """The slot ranges a node serves, from its own line (flagged ``myself``)
    of its ``CLUSTER NODES`` reply; empty for a replica or a master without
    slots. Migration markers (``[slot->-id]``) are not ranges and are skipped."""
    text = described.decode() if isinstance(described, bytes) else described
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8 or "myself" not in fields[2].split(","):
            continue
        if "master" not in fields[2].split(","):
            return []
        ranges = []
        for part in fields[8:]:
            if part.startswith("["):
                continue
            start, _, end = part.partition("-")
            ranges.append((int(start), int(end or start)))
        return sorted(ranges)
    return []
