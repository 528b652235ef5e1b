"""What the server holds, counted from inside it, and ``GET /diag/`` that reports it.

The soak harness reads RSS, descriptors and threads from ``/proc``, but those
cannot say *what* a leak is. This module keeps the inside view: consumers that
are running (entered ``__call__`` and not yet returned), consumer objects
still alive after a garbage collection (a finished consumer that something
still references), how each connection ended, the tasks of the event loop,
open database connections, and the in-memory layer's channels and groups.

It names asyncio, trio and the in-memory layer's private attributes on
purpose: it is diagnostics for this one project, not library code, and the
layer offers no public census.
"""

from __future__ import annotations

import gc
import io
import json
import threading
import weakref
from collections import Counter
from typing import Any

from django.db.backends.signals import connection_created

from channels_runtime.compat.backend import current_backend
from channels_runtime.generic.http import AsyncHttpConsumer
from channels_runtime.layers import get_channel_layer

_lock = threading.Lock()
#: Event name -> count. Sync consumers count from the thread-sensitive thread,
#: async ones from the event loop, hence the lock.
_counts: Counter[str] = Counter()
#: Every consumer instance ever started that has not been garbage collected.
_instances: weakref.WeakSet[Any] = weakref.WeakSet()
#: Every database wrapper that ever connected (connections are per thread).
_db_wrappers: weakref.WeakSet[Any] = weakref.WeakSet()

#: A group and channel nobody uses: discarding it is a layer operation with no
#: effect except the one wanted here (see :func:`layer_census`).
PROBE_GROUP = "soak.diag.probe"
PROBE_CHANNEL = "soak.diag.probe!none"


def count(event: str, n: int = 1) -> None:
    with _lock:
        _counts[event] += n


def _track_db(sender: Any, connection: Any, **kwargs: Any) -> None:
    count("db opened")
    with _lock:
        _db_wrappers.add(connection)


connection_created.connect(_track_db, dispatch_uid="soak_app.diag.track_db")


class Tracked:
    """Mixin for the soak's consumers: counts starts and ends, keeps a weak reference.

    ``route`` names the consumer in the counts. It goes first in the bases, so
    its ``__call__`` wraps the whole life of the consumer, whatever kind.
    """

    route = "?"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        count(f"started {self.route}")
        with _lock:
            _instances.add(self)
        try:
            await super().__call__(scope, receive, send)  # type: ignore[misc]
        finally:
            count(f"finished {self.route}")

    def record_disconnect(self, code: int | None = None) -> None:
        count(f"disconnect {self.route}")
        if code is not None:
            count(f"close {self.route} {code}")


def task_names() -> Counter[str]:
    """Tasks of the running event loop by what they run, this request's own included.

    On asyncio a task is named by the coroutine it runs and the function it
    is waiting in now, which is what tells a leaked connection's tasks apart.
    """
    names: Counter[str] = Counter()
    if current_backend() == "trio":
        import trio

        stack = [trio.lowlevel.current_root_task()]
        while stack:
            task = stack.pop()
            names[task.name] += 1
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
        return names
    import asyncio

    for task in asyncio.all_tasks():
        coro: Any = task.get_coro()
        name = getattr(coro, "__qualname__", type(coro).__name__)
        innermost = name
        while coro is not None:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None:
                innermost = frame.f_code.co_qualname
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        names[name if innermost == name else f"{name} @ {innermost}"] += 1
    return names


async def layer_census() -> dict[str, int] | None:
    """Channels, groups and memberships the in-memory layer holds (None for other layers).

    The layer forgets a channel lazily: at its next operation after the
    channel's ``expiry``. Any traffic would trigger that; an idle server has
    none, so the probe ``group_discard`` is that operation.
    """
    layer = get_channel_layer()
    if layer is None or not hasattr(layer, "_channels"):
        return None
    await layer.group_discard(PROBE_GROUP, PROBE_CHANNEL)
    groups = layer._groups
    return {
        "channels": len(layer._channels),
        "watched_channels": sum(1 for ch in layer._channels.values() if ch.waiters),
        "groups": len(groups),
        "memberships": sum(len(members) for members in groups.values()),
    }


async def snapshot() -> dict[str, Any]:
    gc.collect()
    tasks = task_names()
    with _lock:
        counts = dict(_counts)
        alive = len(_instances)
        db_open = sum(1 for wrapper in _db_wrappers if wrapper.connection is not None)
    routes = {name.split(" ", 1)[1] for name in counts if name.startswith("started ")}
    running = {
        route: counts.get(f"started {route}", 0) - counts.get(f"finished {route}", 0)
        for route in sorted(routes)
    }
    return {
        "backend": current_backend(),
        "tasks": sum(tasks.values()),
        "tasks_by_name": dict(tasks.most_common()),
        "threads": threading.active_count(),
        "consumers_running": sum(running.values()),
        "running_by_route": running,
        "consumer_objects_alive": alive,
        "db_connections_open": db_open,
        "layer": await layer_census(),
        "counts": counts,
    }


def _await_chain(coro: Any) -> list[Any]:
    """The frames of ``coro`` and of everything it awaits, outermost first.

    Follows ``cr_await``, and through the ``coroutine_wrapper`` that an
    ``__await__`` returning ``coro.__await__()`` leaves (Hypercorn's TCP
    servers are awaited that way), which ``print_stack`` and trio's
    ``iter_await_frames`` stop at.
    """
    frames = []
    for _ in range(200):
        if coro is None:
            break
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            frames.append(frame)
        awaited = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if awaited is None and type(coro).__name__ == "coroutine_wrapper":
            inner = [ref for ref in gc.get_referents(coro) if hasattr(ref, "cr_frame")]
            awaited = inner[0] if inner else None
        coro = awaited
    return frames


def task_stacks() -> str:
    """Where every task of the loop is waiting, as text: what a leaked task is stuck on."""
    if current_backend() == "trio":
        import trio

        tasks: list[tuple[str, Any]] = []
        stack = [trio.lowlevel.current_root_task()]
        while stack:
            task = stack.pop()
            tasks.append((task.name, task.coro))
            for nursery in task.child_nurseries:
                stack.extend(nursery.child_tasks)
    else:
        import asyncio

        tasks = [(task.get_name(), task.get_coro()) for task in asyncio.all_tasks()]
    out = io.StringIO()
    for name, coro in tasks:
        out.write(f"--- {name}\n")
        for frame in _await_chain(coro):
            code = frame.f_code
            out.write(f"  {code.co_filename}:{frame.f_lineno} in {code.co_qualname}\n")
    out.write("--- connections (Hypercorn TCPServer objects)\n")
    for line in connection_states():
        out.write(f"  {line}\n")
    return out.getvalue()


def connection_states() -> list[str]:
    """One line per Hypercorn connection object still in memory: its peer and the
    state of its HTTP/1.1 protocol and stream, to tell what a leaked one waits for."""
    classes: list[type] = []
    for module in ("hypercorn.asyncio.tcp_server", "hypercorn.trio.tcp_server"):
        try:
            classes.append(__import__(module, fromlist=["TCPServer"]).TCPServer)
        except ImportError:
            pass
    lines = []
    for server in [obj for obj in gc.get_objects() if isinstance(obj, tuple(classes))]:
        protocol = getattr(getattr(server, "protocol", None), "protocol", None)
        connection = getattr(protocol, "connection", None)
        h11 = getattr(connection, "connection", connection)  # H11WSConnection wraps one
        stream = getattr(protocol, "stream", None)
        can_read = getattr(protocol, "can_read", None)
        idle = getattr(getattr(server, "idle_task", None), "_handle", None)
        lines.append(
            f"client {getattr(protocol, 'client', None)}: {type(protocol).__name__}, "
            f"h11 ours {getattr(h11, 'our_state', None)} theirs {getattr(h11, 'their_state', None)}"
            f", {type(connection).__name__}, stream {type(stream).__name__} "
            f"(closed {getattr(stream, 'closed', None)}, state {getattr(stream, 'state', None)}), "
            f"can_read set {can_read.is_set() if can_read is not None else None}, "
            f"requests {getattr(protocol, 'keep_alive_requests', None)}, "
            f"idle task {'running' if idle is not None else 'none'}"
        )
    return lines


class DiagConsumer(AsyncHttpConsumer):
    """``GET /diag/``: :func:`snapshot` as JSON; ``GET /diag/?stacks=1``: :func:`task_stacks`.

    No channel of its own (``channel_layer_alias = None``) and not tracked, so
    asking does not change the answer.
    """

    channel_layer_alias = None

    async def handle(self, body: bytes) -> None:
        if b"stacks=1" in self.scope["query_string"]:
            text = task_stacks().encode()
            await self.send_response(200, text, headers={"content-type": "text/plain"})
            return
        data = json.dumps(await snapshot()).encode()
        await self.send_response(200, data, headers={"content-type": "application/json"})
