"""Running commands on a Redis Cluster: the master that serves a key's slot,
whatever happens to the cluster meanwhile.

A :class:`ClusterRouter` belongs to one event loop (its connections do); a
layer keeps one per loop, as it keeps its standalone pools. It holds the slot
map (:class:`~.topology.Topology`) and a :class:`~..connections.Pool` per node
(the layers' own pool: the same cap, generations and hooks), and
runs commands in the caller's own task: no task runs in the background, and a
cancelled caller leaves nothing behind.

What it takes care of, so that callers see either the reply or, once the
retry budget is spent, :class:`ClusterUnavailable`:

* ``MOVED``: the slot map is corrected for that slot, the command is re-sent
  to the new master at once, and the whole map is refreshed by the next call;
* ``ASK``: the command alone is re-sent to the target, after ``ASKING``;
* ``TRYAGAIN``, ``CLUSTERDOWN``, ``LOADING``, ``MASTERDOWN``, ``READONLY`` and
  broken or refused connections (a master killed, a failover under way): the
  command is retried, the map refreshed, with a short backoff, for up to
  ``retry_budget`` seconds from the first failure. A command whose connection
  broke after it was written may have run: when it is given as a callable, it
  is rebuilt with ``maybe_applied=True`` (a script can then deduplicate);
* ``NOSCRIPT`` for an ``EVALSHA`` whose source is in ``script_sources``: re-sent
  as ``EVAL`` on the same connection (a promoted replica has no script cache);
* the map is refreshed every ``refresh_interval`` seconds by whichever call
  notices it is due, and by one caller at a time (the others wait for it).

Commands are only ever sent to masters. Several commands for keys spread over
the cluster (:meth:`ClusterRouter.execute_many`) go as one pipeline per node,
all nodes at once: one round trip per node, which is what ``group_send`` needs.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import anyio

from ..connections import Pool
from ..hosts import HostSpec, SentinelError, ServerTime
from ..protocol import CONNECTION_ERRORS, Connection, ReplyError, encode_command
from .redirects import REFRESH_CODES, RETRY_CODES, Redirect, parse_redirect
from .settings import ClusterSpec
from .slots import SLOT_COUNT, key_slot
from .topology import NodeAddress, Topology, TopologyError, fetch_topology

__all__ = ["ClusterRouter", "ClusterUnavailable", "Command", "Target"]

#: A key (its slot is computed) or a slot number.
Target = str | bytes | int
#: A command's arguments, or a function building them: it gets
#: ``maybe_applied``, true when an earlier attempt may have run.
Command = tuple[Any, ...] | Callable[[bool], tuple[Any, ...]]
_T = TypeVar("_T", str, bytes, int, str | bytes, str | bytes | int)

_FAILURES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, SentinelError)
_FETCH_FAILURES: tuple[type[BaseException], ...] = (*_FAILURES, ReplyError, TopologyError)
_monotonic = time.monotonic


class ClusterUnavailable(ConnectionError):
    """The cluster could not run the command within the retry budget (no
    master reachable for its slot, the cluster down, or redirects looping).
    A command written before its connection broke may or may not have run."""


class _Failed:
    """A command's outcome when its connection failed."""

    __slots__ = ("exc", "written")

    def __init__(self, exc: BaseException, written: bool) -> None:
        self.exc = exc
        self.written = written


class _Job:
    __slots__ = ("ask", "command", "index", "maybe_applied", "slot")

    def __init__(self, index: int, slot: int, command: Command) -> None:
        self.index = index
        self.slot = slot
        self.command = command
        self.maybe_applied = False
        self.ask: NodeAddress | None = None

    def args(self) -> tuple[Any, ...]:
        command = self.command
        return command if isinstance(command, tuple) else command(self.maybe_applied)


def slot_of(target: Target) -> int:
    """The slot of a key, or ``target`` itself when it is a slot number."""
    if isinstance(target, bool):
        raise TypeError("a target is a key (str or bytes) or a slot number, not a bool")
    if isinstance(target, int):
        if not 0 <= target < SLOT_COUNT:
            raise ValueError(f"slot {target} is out of range 0-{SLOT_COUNT - 1}")
        return target
    return key_slot(target)


class ClusterRouter:
    """Routes commands to the masters of a Redis Cluster, for one event loop.

    ``max_connections`` caps ordinary commands per node (a seed's own
    ``max_connections`` option wins); ``connect_timeout`` bounds opening a
    connection, ``socket_timeout`` each round trip; ``retry_budget`` is how
    long a command is retried after its first failure; ``refresh_interval``
    how old the slot map may get. ``script_sources`` maps a script's SHA1 (as
    sent in ``EVALSHA``) to its source, for ``NOSCRIPT`` recovery.
    ``pool_factory(index, spec)`` makes the pool of a newly seen node (the
    layer's, to set ``on_open`` or count outages as its own); by default a
    plain :class:`~..connections.Pool` owned by the router.
    """

    #: Pause before the second retry, doubling up to ``backoff_max``.
    backoff_min = 0.02
    backoff_max = 0.5
    #: Redirects followed for one command before giving up (a loop means the
    #: nodes disagree for longer than a migration step takes).
    max_redirects = 16
    #: Forced refreshes (after a failure or ``MOVED``) are at least this far apart.
    refresh_gap = 0.05

    def __init__(
        self,
        spec: ClusterSpec,
        *,
        max_connections: int = 64,
        connect_timeout: float = 2.0,
        socket_timeout: float = 10.0,
        retry_budget: float = 2.0,
        refresh_interval: float = 10.0,
        script_sources: Mapping[bytes, bytes] | None = None,
        pool_factory: Callable[[int, HostSpec], Pool] | None = None,
    ) -> None:
        self.spec = spec
        self.max_connections = spec.max_connections or max_connections
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self.retry_budget = retry_budget
        self.refresh_interval = refresh_interval
        self.script_sources = dict(script_sources or {})
        self.topology: Topology | None = None
        #: How many times the map was fetched, and MOVED/ASK redirects followed.
        self.refreshes = 0
        self.redirects = 0
        #: Pipelines written per node by :meth:`execute_many` (one per round trip).
        self.round_trips: dict[NodeAddress, int] = {}
        #: Why the last refresh failed (``None`` once one has worked).
        self.refresh_problem: str | None = None
        self._pools: dict[NodeAddress, Pool] = {}
        self._pool_factory = pool_factory or self._default_pool
        self._refresh_due = 0.0
        self._refreshed_at = -1.0
        self._refreshing: anyio.Event | None = None
        self._suspects: set[NodeAddress] = set()
        self._prefer: NodeAddress | None = None
        self._use_shards = True

    def __repr__(self) -> str:
        return f"<ClusterRouter {self.spec.describe()} {self.topology!r}>"

    # -- nodes and the slot map ---------------------------------------------------

    def _default_pool(self, index: int, spec: HostSpec) -> Pool:
        return Pool(self, index, spec, self.max_connections, ServerTime(), self.connect_timeout)

    def pool(self, address: NodeAddress) -> Pool:
        """The connection pool of the node at ``address`` (made on first use;
        its ``spec`` is the seeds' settings with that address)."""
        pool = self._pools.get(address)
        if pool is None:
            spec = self.spec.node_spec(address.host, address.port)
            pool = self._pools[address] = self._pool_factory(len(self._pools), spec)
        return pool

    @property
    def pools(self) -> dict[NodeAddress, Pool]:
        """Every node's pool made so far, by address."""
        return dict(self._pools)

    def _candidates(self) -> list[NodeAddress]:
        """Nodes to ask for the map: known masters, then replicas, then seeds,
        in random order within each, and nodes that just failed last."""
        topology = self.topology
        known = topology.nodes if topology is not None else []
        serving = set(topology.masters) if topology is not None else set()
        masters = [a for a in known if a in serving]
        others = [a for a in known if a not in serving]
        random.shuffle(masters)
        random.shuffle(others)
        seeds = [NodeAddress(s.host or "localhost", s.port) for s in self.spec.seeds]
        # After MOVED, the node named knows its new slots before the others do.
        first = [self._prefer] if self._prefer is not None else []
        ordered = list(dict.fromkeys([*first, *masters, *others, *seeds]))
        return [a for a in ordered if a not in self._suspects] + [
            a for a in ordered if a in self._suspects
        ]

    async def _fetch_from(self, address: NodeAddress) -> Topology:
        pool = self.pool(address)
        conn = await pool.lease()
        try:
            # Bounded like connecting: a node that does not answer at once is
            # skipped for the next one, rather than holding every caller up.
            with anyio.fail_after(self.connect_timeout):
                topology, self._use_shards = await fetch_topology(
                    conn, address.host, tls=self.spec.tls, use_shards=self._use_shards
                )
        except _FAILURES:
            await pool.discard(conn)
            raise
        except BaseException:
            await pool.discard(conn, fault=False)
            raise
        await pool.release(conn)
        return topology

    async def refresh(self) -> Topology:
        """Fetch the slot map now from the first node that answers, and return
        it. Callers arriving while a refresh runs wait for that one instead.
        Raises :class:`ClusterUnavailable` if no node could be asked."""
        running = self._refreshing
        if running is not None:
            asked = _monotonic()
            await running.wait()
            if self.topology is not None and self._refreshed_at >= asked:
                return self.topology
            # That refresh failed: so would ours, now (the caller retries later).
            raise ClusterUnavailable(self.refresh_problem or "the slot map could not be fetched")
        done = self._refreshing = anyio.Event()
        problems: list[str] = []
        try:
            for address in self._candidates():
                try:
                    topology = await self._fetch_from(address)
                except _FETCH_FAILURES as exc:
                    self._suspects.add(address)
                    problems.append(f"{address}: {type(exc).__name__}: {exc}")
                    continue
                if topology.uncovered() == SLOT_COUNT:
                    # A node that has not joined (yet) knows of no slot at all.
                    problems.append(f"{address}: serves no slot and knows of none")
                    continue
                self._install(topology)
                return topology
        finally:
            self._refreshing = None
            done.set()
        self.refresh_problem = (
            f"no node of {self.spec.describe()} could describe the cluster: " + "; ".join(problems)
        )
        raise ClusterUnavailable(self.refresh_problem)

    def _install(self, topology: Topology) -> None:
        self.topology = topology
        self.refresh_problem = None
        self.refreshes += 1
        now = _monotonic()
        self._refreshed_at = now
        self._refresh_due = now + self.refresh_interval
        self._suspects.intersection_update(topology.masters)
        self._prefer = None

    def _stale(self) -> None:
        """Have the next call refresh the map (not sooner than ``refresh_gap``
        after the last refresh, so a burst of failures is one refresh)."""
        self._refresh_due = min(self._refresh_due, self._refreshed_at + self.refresh_gap)

    async def _current(self) -> Topology | None:
        """The slot map, refreshed first if it is due; ``None`` if there is none
        and no node could be asked (the caller retries)."""
        if self.topology is None or _monotonic() >= self._refresh_due:
            try:
                await self.refresh()
            except ClusterUnavailable:
                # Keep using the old map: the commands' own failures decide.
                self._refresh_due = _monotonic() + self.refresh_gap
        return self.topology

    async def master_for(self, target: Target) -> NodeAddress:
        """The master serving ``target``'s slot now (refreshing the map if it is
        due). Raises :class:`ClusterUnavailable` if no master serves it."""
        slot = slot_of(target)
        topology = await self._current()
        address = topology.master_for_slot(slot) if topology is not None else None
        if address is None:
            raise ClusterUnavailable(f"no master of {self.spec.describe()} serves slot {slot}")
        return address

    async def group_by_node(
        self, targets: Iterable[_T]
    ) -> dict[NodeAddress | None, dict[int, list[_T]]]:
        """``targets`` by the master that serves them now, then by slot (the
        ``None`` node holds slots no master serves right now)."""
        topology = await self._current()
        plan: dict[NodeAddress | None, dict[int, list[_T]]] = {}
        for target in targets:
            slot = slot_of(target)
            node = topology.master_for_slot(slot) if topology is not None else None
            plan.setdefault(node, {}).setdefault(slot, []).append(target)
        return plan

    def note_redirect(self, error: ReplyError, replied_by: NodeAddress) -> Redirect | None:
        """For commands a caller runs on its own connection (a ``BLPOP``, an
        ``SSUBSCRIBE``): record what ``error`` says about the slot map and
        return the redirect it is, if it is one. After ``MOVED`` the slot points
        at the new master and the map is refreshed by the next call; ``ASK``
        changes nothing (send ``ASKING`` first on the target yourself)."""
        redirect = parse_redirect(error, replied_by)
        if redirect is not None:
            self.redirects += 1
            if not redirect.ask:
                if self.topology is not None:
                    self.topology.assign(redirect.slot, redirect.address)
                self._prefer = redirect.address
                self._stale()
        elif error.code in REFRESH_CODES:
            self._stale()
        return redirect

    def note_failure(self, address: NodeAddress) -> None:
        """A caller's own connection to ``address`` broke: refresh the map soon
        and ask that node last."""
        self._suspects.add(address)
        self._stale()

    # -- running commands ---------------------------------------------------------

    async def execute(self, target: Target, *args: Any) -> Any:
        """Run one command on the master serving ``target`` and return its
        reply; an error reply (other than those handled above) is raised as
        :class:`~..protocol.ReplyError`. ``args`` are the command's arguments,
        or a single callable building them (see :data:`Command`)."""
        command: Command = args[0] if len(args) == 1 and callable(args[0]) else args
        reply = (await self.execute_many([(target, command)]))[0]
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def pipeline(self, target: Target, commands: Sequence[Command]) -> list[Any]:
        """Run ``commands`` for one slot in one round trip; their replies in
        order, error replies included as :class:`~..protocol.ReplyError`
        values. The commands must not depend on one another: one redirected
        or retried is re-sent alone, after the others have run."""
        slot = slot_of(target)
        return await self.execute_many([(slot, command) for command in commands])

    async def execute_many(self, batch: Sequence[tuple[Target, Command]]) -> list[Any]:
        """Run each command on the master serving its target: one pipeline per
        node, all nodes at once. Replies are returned in the order of
        ``batch``, error replies as :class:`~..protocol.ReplyError` values.

        The commands must be independent of one another (each is retried or
        redirected on its own). Raises :class:`ClusterUnavailable` when some
        command could not be run within ``retry_budget``; the others may
        have run.
        """
        jobs = [_Job(i, slot_of(target), command) for i, (target, command) in enumerate(batch)]
        results: list[Any] = [None] * len(jobs)
        pending = jobs
        first_failure: float | None = None
        failures = 0
        hops = 0
        delay = self.backoff_min
        last: object = None
        while pending:
            topology = await self._current()
            groups: dict[NodeAddress, list[_Job]] = {}
            retry: list[_Job] = []
            wait = False
            for job in pending:
                address = job.ask or (
                    topology.master_for_slot(job.slot) if topology is not None else None
                )
                if address is None:
                    retry.append(job)
                    wait = True
                    last = self.refresh_problem or f"no master known for slot {job.slot}"
                    self._stale()
                else:
                    groups.setdefault(address, []).append(job)
            for address, job, outcome in await self._run_groups(groups):
                if isinstance(outcome, _Failed):
                    job.maybe_applied = job.maybe_applied or outcome.written
                    job.ask = None
                    retry.append(job)
                    wait = True
                    last = f"{address}: {type(outcome.exc).__name__}: {outcome.exc}"
                    self.note_failure(address)
                elif isinstance(outcome, ReplyError):
                    redirect = self.note_redirect(outcome, address)
                    if redirect is not None:
                        job.ask = redirect.address if redirect.ask else None
                        hops += 1
                        retry.append(job)
                        last = outcome
                    elif outcome.code in RETRY_CODES:
                        job.ask = None
                        retry.append(job)
                        wait = True
                        last = f"{address}: {outcome}"
                    else:
                        results[job.index] = outcome
                else:
                    results[job.index] = outcome
            if not retry:
                break
            pending = retry
            if hops > self.max_redirects * len(jobs):
                raise ClusterUnavailable(
                    f"{self.spec.describe()}: redirected more than {self.max_redirects} times "
                    f"per command (last: {last})"
                )
            if not wait:
                continue  # redirects only: follow them at once
            now = _monotonic()
            if first_failure is None:
                first_failure = now
            failures += 1
            remaining = first_failure + self.retry_budget - now
            if remaining <= 0:
                raise ClusterUnavailable(
                    f"{self.spec.describe()} could not run {len(pending)} command(s) within "
                    f"{self.retry_budget:g}s ({failures} attempt(s)); last: {last}"
                )
            if failures > 1:  # the first retry is immediate: usually a stale connection
                await anyio.sleep(min(delay, remaining) * random.uniform(0.8, 1.0))
                delay = min(delay * 2, self.backoff_max)
        return results

    async def _run_groups(
        self, groups: dict[NodeAddress, list[_Job]]
    ) -> list[tuple[NodeAddress, _Job, Any]]:
        outcomes: list[tuple[NodeAddress, _Job, Any]] = []

        async def run(address: NodeAddress, jobs: list[_Job]) -> None:
            replies = await self._run_on_node(address, jobs)
            outcomes.extend((address, job, reply) for job, reply in zip(jobs, replies, strict=True))

        if len(groups) == 1:
            ((address, jobs),) = groups.items()
            await run(address, jobs)
        elif groups:
            async with anyio.create_task_group() as tg:
                for address, jobs in groups.items():
                    tg.start_soon(run, address, jobs)
        return outcomes

    async def _run_on_node(self, address: NodeAddress, jobs: list[_Job]) -> list[Any]:
        """Send ``jobs`` to one node in one write; their outcomes in order."""
        pool = self.pool(address)
        try:
            conn = await pool.lease()
        except _FAILURES as exc:
            return [_Failed(exc, False)] * len(jobs)
        sent = [job.args() for job in jobs]
        replies: list[Any] = []
        written = False
        try:
            with anyio.fail_after(self.socket_timeout):
                wire = []
                for job, args in zip(jobs, sent, strict=True):
                    if job.ask is not None:
                        wire.append(encode_command("ASKING"))
                    wire.append(encode_command(*args))
                written = True
                self.round_trips[address] = self.round_trips.get(address, 0) + 1
                await conn.send(b"".join(wire))
                for job in jobs:
                    if job.ask is not None:
                        asking = await conn.read_reply()
                        if isinstance(asking, ReplyError):
                            await conn.read_reply()
                            replies.append(asking)
                            continue
                    replies.append(await conn.read_reply())
                await self._reload_scripts(conn, jobs, sent, replies)
        except _FAILURES as exc:
            await pool.discard(conn)
            failed = _Failed(exc, written)
            return replies + [failed] * (len(jobs) - len(replies))
        except BaseException:
            # Cancelled mid-pipeline: what the connection holds now is unknown.
            await pool.discard(conn, fault=False)
            raise
        await pool.release(conn)
        return replies

    async def _reload_scripts(
        self, conn: Connection, jobs: list[_Job], sent: list[tuple[Any, ...]], replies: list[Any]
    ) -> None:
        """Re-send as ``EVAL`` each ``EVALSHA`` the node answered ``NOSCRIPT``."""
        again: list[int] = []
        wire = []
        for i, (job, args, reply) in enumerate(zip(jobs, sent, replies, strict=True)):
            if not (isinstance(reply, ReplyError) and reply.code == "NOSCRIPT"):
                continue
            name = args[0].upper() if isinstance(args[0], (str, bytes)) else args[0]
            sha = args[1].encode() if isinstance(args[1], str) else args[1]
            source = self.script_sources.get(sha)
            if name not in ("EVALSHA", b"EVALSHA") or source is None:
                continue
            if job.ask is not None:
                wire.append(encode_command("ASKING"))
            wire.append(encode_command("EVAL", source, *args[2:]))
            again.append(i)
        if not again:
            return
        await conn.send(b"".join(wire))
        for i in again:
            if jobs[i].ask is not None:
                await conn.read_reply()
            replies[i] = await conn.read_reply()

    # -- for callers with their own connections -----------------------------------

    async def lease(
        self, target: Target, *, blocking: bool = False
    ) -> tuple[NodeAddress, Pool, Connection]:
        """A connection to the master serving ``target`` now, with its address and pool:
        give it back with ``pool.release(conn, blocking=...)`` or
        ``pool.discard(conn, blocking=...)``, and report what went wrong with
        :meth:`note_redirect` / :meth:`note_failure`. ``blocking`` leases
        outside the per-node cap (for ``BLPOP`` or a subscription)."""
        address = await self.master_for(target)
        pool = self.pool(address)
        conn = await (pool.lease_blocking() if blocking else pool.lease())
        return address, pool, conn

    # -- closing ----------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every idle connection (busy ones close when given back)."""
        for pool in list(self._pools.values()):
            await pool.close()

    def abandon(self) -> None:
        """This router's event loop has ended: shut its sockets down."""
        for pool in self._pools.values():
            pool.abandon()
