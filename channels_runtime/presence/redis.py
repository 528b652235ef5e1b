"""Presence on Redis, shared by both Redis layers (lists and Pub/Sub).

Keys, under ``<layer prefix>:presence`` on the server the group's name hashes
to (the layers' own jump hash, so a group's presence sits with its messages):

* ``…:g:<group>``, a hash ``channel -> "<lease>\\n<since µs>\\n<json>"``: the
  members. Listing is one ``HGETALL`` and counting reads the same hash, so
  both cost O(members of that group), never a scan of keys;
* ``…:leases``, a sorted set ``lease -> deadline`` (server milliseconds). A
  *lease* is one event loop of one process; its deadline is pushed forward by
  every join and by the heartbeat the process's keeper sends;
* ``…:p:<lease>``, a set of ``"<group>\\n<channel>"``: what a lease holds, so
  the members of a dead lease are found without looking at anything else.

A process that stops heartbeating (SIGKILL, a hung loop, a network split)
has its lease pass its deadline; the next heartbeat of any live process takes
the dead lease out of ``…:leases`` and its members out of their groups in
one script (so exactly one process reports them) and gets them back to send
``presence.leave``. Reads skip members whose lease is past its deadline even
before that happens. Each script reads ``TIME`` itself, so no two hosts'
clocks are compared.

A Redis that restarts empty is noticed by the first heartbeat or join that
finds its own lease missing (``ZADD`` answers "added"): the process then
writes back every member it holds, keeping their ``since``.

The scripts name keys they build from ``ARGV`` (a dead lease's index, its
groups), which Redis Cluster would refuse; cluster mode is not supported yet.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.lowlevel

from ..layers.redis.core import RedisUnavailable
from ..layers.redis.hosts import SentinelError, open_connection, shard_index
from ..layers.redis.protocol import CONNECTION_ERRORS, Connection, ReplyError
from .model import Member, decode_body, encode_body

__all__ = ["RedisStore"]

logger = logging.getLogger("channels_runtime.presence")

_TIME = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: group hash, lease index, leases. ARGV: channel, lease, ttl ms,
#: index entry, since in µs ("" for now), json body.
JOIN = (
    _TIME
    + """
local added = redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[2])
local since = ARGV[5]
if since == '' then since = t[1] .. string.sub('00000' .. t[2], -6) end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\\n' .. since .. '\\n' .. ARGV[6])
redis.call('SADD', KEYS[2], ARGV[4])
return {added, since}
"""
)

#: KEYS: group hash, lease index. ARGV: channel, lease, index entry.
#: Returns the stored value if this lease still held the member, else nil
#: (a heartbeat elsewhere reaped it and has reported the leave).
LEAVE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[3])
if v and string.sub(v, 1, #ARGV[2] + 1) == ARGV[2] .. '\\n' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return v
end
return false
"""

#: KEYS: leases. ARGV: lease, ttl ms, key prefix, most dead leases to reap.
HEARTBEAT = (
    _TIME
    + """
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, d in ipairs(dead) do
  redis.call('ZREM', KEYS[1], d)
  local idx = ARGV[3] .. ':p:' .. d
  local mine = d .. '\\n'
  for _, e in ipairs(redis.call('SMEMBERS', idx)) do
    local nl = string.find(e, '\\n', 1, true)
    local g = string.sub(e, 1, nl - 1)
    local c = string.sub(e, nl + 1)
    local key = ARGV[3] .. ':g:' .. g
    local v = redis.call('HGET', key, c)
    if v and string.sub(v, 1, #mine) == mine then
      redis.call('HDEL', key, c)
      out[#out + 1] = g
      out[#out + 1] = c
      out[#out + 1] = v
    end
  end
  redis.call('DEL', idx)
end
return {added, out}
"""
)

#: KEYS: group hash, leases. ARGV: "list" or "count".
MEMBERS = (
    _TIME
    + """
local all = redis.call('HGETALL', KEYS[1])
local alive = {}
local out = {}
local n = 0
for i = 1, #all, 2 do
  local v = all[i + 1]
  local l = string.sub(v, 1, string.find(v, '\\n', 1, true) - 1)
  local ok = alive[l]
  if ok == nil then
    local s = redis.call('ZSCORE', KEYS[2], l)
    ok = (s ~= false) and (tonumber(s) > now)
    alive[l] = ok
  end
  if ok then
    n = n + 1
    if ARGV[1] == 'list' then
      out[#out + 1] = all[i]
      out[#out + 1] = v
    end
  end
end
if ARGV[1] == 'list' then return out end
return n
"""
)

_SHAS = {
    script: hashlib.sha1(script.encode()).hexdigest()
    for script in (JOIN, LEAVE, HEARTBEAT, MEMBERS)
}
_FAILURES: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, SentinelError, TimeoutError)
#: Dead leases one heartbeat reaps at most (the rest go at the next one).
_REAP_LIMIT = 64
#: Members written back per round trip after a Redis restart.
_REANNOUNCE_BATCH = 256


def _parse(channel: str, value: bytes) -> tuple[str, Member]:
    lease, since, body = value.split(b"\n", 2)
    return lease.decode(), decode_body(channel, body, int(since) / 1_000_000)


class _LoopState:
    """One event loop's lease and connections (connections belong to a loop)."""

    def __init__(self, shards: int) -> None:
        self.lease = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self.idle: list[list[Connection]] = [[] for _ in range(shards)]
        #: Per shard: whether this lease has been written there since start-up.
        self.registered = [False] * shards


class RedisStore:
    """Presence kept in the Redis servers of a Redis layer (see the module docstring)."""

    needs_keeper = True

    def __init__(self, layer: Any, lease_seconds: float) -> None:
        self.layer = layer
        self.specs = list(layer.hosts)
        self.ring_size = len(self.specs)
        self.base = f"{layer.prefix}:presence"
        self.lease_ms = int(lease_seconds * 1000)
        self._states: dict[tuple[int, Any], _LoopState] = {}

    def _state(self) -> _LoopState:
        key = (os.getpid(), anyio.lowlevel.current_token().native_token)
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _LoopState(self.ring_size)
        return state

    @property
    def lease(self) -> str:
        """This event loop's lease name (what ``…:leases`` and the members carry)."""
        return self._state().lease

    # -- round trips ---------------------------------------------------------

    async def _call(self, index: int, script: str, keys: Iterable[str], args: Iterable[Any]) -> Any:
        keys = list(keys)
        return (await self._pipeline(index, [(script, keys, list(args))]))[0]

    async def _pipeline(
        self, index: int, calls: list[tuple[str, list[str], list[Any]]]
    ) -> list[Any]:
        """Run scripts on shard ``index`` in one round trip, retrying connection
        failures with backoff for the layer's ``retry_budget``."""
        state = self._state()
        idle = state.idle[index]
        deadline = time.monotonic() + self.layer.retry_budget
        delay = 0.05
        use_sha = True
        while True:
            flat = []
            for script, keys, args in calls:
                head = ("EVALSHA", _SHAS[script]) if use_sha else ("EVAL", script)
                flat.append((*head, len(keys), *keys, *args))
            conn: Connection | None = None
            ok = False
            try:
                conn = (
                    idle.pop()
                    if idle
                    else await open_connection(
                        self.specs[index], 0, None, self.layer.connect_timeout
                    )
                )
                with anyio.fail_after(self.layer.socket_timeout):
                    replies = await conn.pipeline(flat)
                ok = True
            except _FAILURES as exc:
                if time.monotonic() + delay > deadline:
                    raise RedisUnavailable(
                        f"presence: Redis at {self.specs[index].describe()} unavailable: {exc!r}"
                    ) from exc
                await anyio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            finally:
                if conn is not None:
                    if ok:
                        idle.append(conn)
                    else:
                        with anyio.CancelScope(shield=True):
                            await conn.aclose()
            if use_sha and any(
                isinstance(r, ReplyError) and str(r).startswith("NOSCRIPT") for r in replies
            ):
                use_sha = False
                continue
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise reply
            return replies

    # -- the store API -------------------------------------------------------

    def _keys(self, group: str, lease: str) -> tuple[int, str, str, str]:
        index = shard_index(group, self.ring_size)
        return index, f"{self.base}:g:{group}", f"{self.base}:p:{lease}", f"{self.base}:leases"

    def _join_call(
        self, lease: str, group: str, channel: str, body: str, since: float | None
    ) -> tuple[int, tuple[str, list[str], list[Any]]]:
        index, gkey, pkey, lkey = self._keys(group, lease)
        since_arg = "" if since is None else str(round(since * 1_000_000))
        return index, (
            JOIN,
            [gkey, pkey, lkey],
            [channel, lease, self.lease_ms, f"{group}\n{channel}", since_arg, body],
        )

    async def join(
        self, group: str, channel: str, user: str | None, meta: Any, since: float | None
    ) -> tuple[Member, bool]:
        """Store the member; also says whether this loop's lease had vanished
        from that server after being written there (Redis restarted empty)."""
        state = self._state()
        body = encode_body(user, meta)
        index, call = self._join_call(state.lease, group, channel, body, since)
        # Read before the round trip: a heartbeat running meanwhile may write
        # the lease first, and its "added" is then no sign of a lost lease.
        written_before = state.registered[index]
        added, since_ms = await self._call(index, *call)
        lost = bool(added) and written_before
        state.registered[index] = True
        return decode_body(channel, body, int(since_ms) / 1_000_000), lost

    async def rejoin(self, members: list[tuple[str, Member]]) -> None:
        """Write ``(group, member)`` back with their original ``since``."""
        state = self._state()
        by_shard: dict[int, list[tuple[str, list[str], list[Any]]]] = {}
        for group, m in members:
            index, call = self._join_call(
                state.lease, group, m.channel, encode_body(m.user, m.meta), m.since
            )
            by_shard.setdefault(index, []).append(call)
        for index, calls in by_shard.items():
            for start in range(0, len(calls), _REANNOUNCE_BATCH):
                await self._pipeline(index, calls[start : start + _REANNOUNCE_BATCH])
            state.registered[index] = True

    async def leave(self, group: str, channel: str) -> Member | None:
        state = self._state()
        index, gkey, pkey, _ = self._keys(group, state.lease)
        value = await self._call(
            index, LEAVE, [gkey, pkey], [channel, state.lease, f"{group}\n{channel}"]
        )
        return None if value is None else _parse(channel, value)[1]

    async def members(self, group: str) -> list[Member]:
        index, gkey, _, lkey = self._keys(group, "")
        flat = await self._call(index, MEMBERS, [gkey, lkey], ["list"])
        return [_parse(flat[i].decode(), flat[i + 1])[1] for i in range(0, len(flat), 2)]

    async def count(self, group: str) -> int:
        index, gkey, _, lkey = self._keys(group, "")
        return int(await self._call(index, MEMBERS, [gkey, lkey], ["count"]))

    async def heartbeat(self) -> tuple[bool, list[tuple[str, Member]]]:
        """Renew this loop's lease on every server and reap dead leases.

        Returns whether the lease had vanished from a server it was written to
        (so its members must be written back), and the ``(group, member)``
        pairs of dead leases this call removed.
        """
        state = self._state()
        lost = False
        reaped: list[tuple[str, Member]] = []
        for index in range(self.ring_size):
            written_before = state.registered[index]  # see join()
            added, flat = await self._call(
                index,
                HEARTBEAT,
                [f"{self.base}:leases"],
                [state.lease, self.lease_ms, self.base, _REAP_LIMIT],
            )
            if added and written_before:
                lost = True
            for i in range(0, len(flat), 3):
                reaped.append((flat[i].decode(), _parse(flat[i + 1].decode(), flat[i + 2])[1]))
        return lost, reaped

    async def close(self) -> None:
        """Close this loop's idle connections."""
        key = (os.getpid(), anyio.lowlevel.current_token().native_token)
        state = self._states.pop(key, None)
        if state is None:
            return
        with anyio.CancelScope(shield=True):
            for idle in state.idle:
                for conn in idle:
                    await conn.aclose()
                idle.clear()
