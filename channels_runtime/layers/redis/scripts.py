"""The Lua scripts the layer runs inside Redis.

Each script does one operation's checks and writes atomically in a single round
trip. Storage layout (``P`` is the layer's ``prefix``):

* ``P:ch:<channel>`` — list of queued messages of a normal channel;
* ``P:pr:<token>`` — list of queued messages for every process-specific channel
  (``<anything>.<token>!<local>``) of one layer instance, demultiplexed there;
* ``P:gr:<group>`` — sorted set of member channels, scored by when (server
  milliseconds) they were last added.

A list element is ``<deadline>:<nonce>:<body>``: the deadline is in the server's
milliseconds, the nonce (random hex) makes every element unique so that a send
retried after a lost reply can tell whether the first attempt landed, and for a
process list the body is ``<channel>[,<channel>...]|<payload>``.

``GROUP_SEND`` reaches keys it computes itself (group members), which
standalone Redis allows and Redis Cluster does not: it is used only on a
single server. With a cluster every key carries a hash tag (``P:ch:{<channel>}``,
``P:pr:{<token>}``, ``P:gr:{<group>}``), every other script is given all the
keys it touches, and ``PUSH_MANY`` is run once per slot with that slot's keys,
so no script spans slots. Without a cluster the keys have no tag, as before.
"""

from __future__ import annotations

import hashlib

__all__ = ["GROUP_ADD", "GROUP_MEMBERS", "GROUP_SEND", "PUSH_MANY", "PUT_BACK", "SEND", "Script"]


class Script:
    """A Lua script and its SHA1, so that it can be run with ``EVALSHA`` and
    re-sent with ``EVAL`` after the server's script cache was lost (restart)."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source.strip().encode()
        self.sha = hashlib.sha1(self.source).hexdigest().encode()


# Shared Lua: the server clock in milliseconds, and pushing onto a capped list
# after dropping the expired messages at its head (they do not count towards
# capacity). ``dedupe`` makes a retried push a no-op if the element is there.
_PRELUDE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function push(key, element, capacity, ttl, dedupe)
  if dedupe and redis.call('LPOS', key, element) then
    return true
  end
  while true do
    local head = redis.call('LINDEX', key, 0)
    if not head then break end
    local deadline = tonumber(string.match(head, '^(%d+):'))
    if deadline ~= nil and deadline > now then break end
    redis.call('LPOP', key)
  end
  if redis.call('LLEN', key) >= capacity then
    return false
  end
  redis.call('RPUSH', key, element)
  redis.call('PEXPIRE', key, ttl)
  return true
end
"""

#: KEYS[1] list; ARGV: capacity, ttl ms, element, dedupe flag. 1 = queued, 0 = full.
SEND = Script(
    _PRELUDE
    + """
if push(KEYS[1], ARGV[3], tonumber(ARGV[1]), ARGV[2], ARGV[4] == '1') then
  return 1
end
return 0
"""
)

#: KEYS[1] list; ARGV: element, ttl ms. Puts a message taken by a receive that
#: was then cancelled back at the head, where it came from.
PUT_BACK = Script(
    """
if not redis.call('LPOS', KEYS[1], ARGV[1]) then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""
)

#: KEYS[1] group; ARGV: channel, group ttl ms.
GROUP_ADD = Script(
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

#: KEYS[1] group; ARGV: group ttl ms. Drops expired members, returns the rest.
GROUP_MEMBERS = Script(
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
)

#: The whole of group_send when everything lives on one server and all channels
#: have the default capacity. KEYS[1] group; ARGV: channel-key prefix,
#: process-key prefix, element header, payload, capacity, ttl ms, group ttl ms,
#: dedupe flag. Members on the same process list share one element. Returns how
#: many members (process lists counting once) were full, and how many there were.
GROUP_SEND = Script(
    _PRELUDE
    + """
local capacity, ttl, dedupe = tonumber(ARGV[5]), ARGV[6], ARGV[8] == '1'
local header, payload = ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[7]))
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local full = 0
local procs, order = {}, {}
for i = 1, #members do
  local name = members[i]
  local bang = string.find(name, '!', 1, true)
  if bang then
    local key = ARGV[2] .. string.match(string.sub(name, 1, bang - 1), '([^.]*)$')
    local names = procs[key]
    if names == nil then
      names = {}
      procs[key] = names
      order[#order + 1] = key
    end
    names[#names + 1] = name
  elseif not push(ARGV[1] .. name, header .. payload, capacity, ttl, dedupe) then
    full = full + 1
  end
end
for i = 1, #order do
  local key = order[i]
  if not push(key, header .. table.concat(procs[key], ',') .. '|' .. payload, capacity, ttl,
              dedupe) then
    full = full + 1
  end
end
return {full, #members}
"""
)

#: One server's share of a group_send planned by the client. KEYS: lists;
#: ARGV: header, payload, ttl ms, dedupe flag, then per key its capacity and its
#: body prefix ("" for a channel list, "a!x,b!y|" for a process list).
PUSH_MANY = Script(
    _PRELUDE
    + """
local header, payload, ttl, dedupe = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local full = 0
for i = 1, #KEYS do
  if not push(KEYS[i], header .. ARGV[4 + 2 * i] .. payload, tonumber(ARGV[3 + 2 * i]), ttl,
              dedupe) then
    full = full + 1
  end
end
return full
"""
)

BY_SHA = {s.sha: s for s in (SEND, PUT_BACK, GROUP_ADD, GROUP_MEMBERS, GROUP_SEND, PUSH_MANY)}
