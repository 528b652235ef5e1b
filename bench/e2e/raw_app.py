"""The ceilings: plain ASGI applications, no framework at all.

Serve with ``hypercorn -w 0 -k CLASS raw_app:application`` from this folder.

Paths:

* ``/echo``: accept, then send every text frame straight back.
* ``/bcast``: accept and join the broadcast set; gets every broadcast.
* ``/trigger``: each text frame it receives is sent to every ``/bcast``
  connection, one ``await send()`` after another, from this connection's task
  (the simplest possible fan-out: the ceiling).
* ``/bcast-tasks`` and ``/trigger-tasks``: the same fan-out shaped like a
  consumer, still without a framework. Each member runs an anyio task group
  with a task watching its client for the disconnect, and waits on an
  ``anyio.Event`` of its own; the trigger stores the frame in every member's
  mailbox and sets its event, and each member's task sends it. This is about
  the floor for any design that handles a group message in the receiving
  connection's own task.

Anything else is refused. Lifespan is answered so Hypercorn logs no error.

The module imports nothing from Django. It only carries the few settings that
``channels-runtime serve`` insists on (it sets Django up before serving), so the
same app also measures what that server adds on top of Hypercorn.
"""

from __future__ import annotations

import os
from typing import Any

import anyio

SECRET_KEY = "bench"
INSTALLED_APPS: list[str] = []
CHANNEL_LAYERS: dict[str, Any] = {}  # no layer: the raw app needs none
os.environ.setdefault("DJANGO_SETTINGS_MODULE", __name__)
if os.environ.get("BENCH_GC_STATS"):
    import gcstats  # noqa: F401  (diagnostics only)
if os.environ.get("BENCH_TRACEMALLOC"):
    import memtrace  # noqa: F401  (diagnostics only)

Message = dict[str, Any]

# The ``send`` callable of every open /bcast connection.
members: set[Any] = set()


async def lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def echo(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text")})
        elif kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        else:
            return


async def member(receive: Any, send: Any) -> None:
    try:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.connect":
                members.add(send)
                await send({"type": "websocket.accept"})
            elif kind == "websocket.disconnect":
                return
    finally:
        members.discard(send)


async def trigger(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            out = {"type": "websocket.send", "text": message.get("text")}
            for member_send in list(members):
                await member_send(out)
        elif kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        else:
            return


class Mailbox:
    """One /bcast-tasks member: the frames for it, and an event to wake it."""

    __slots__ = ("event", "frames")

    def __init__(self) -> None:
        self.frames: list[Message] = []
        self.event = anyio.Event()

    def put(self, frame: Message) -> None:
        self.frames.append(frame)
        self.event.set()


# The mailbox of every open /bcast-tasks connection.
mailboxes: set[Mailbox] = set()


async def member_task(receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    mailbox = Mailbox()
    mailboxes.add(mailbox)
    try:
        await send({"type": "websocket.accept"})
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "websocket.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            while True:
                await mailbox.event.wait()
                mailbox.event = anyio.Event()
                frames, mailbox.frames = mailbox.frames, []
                for frame in frames:
                    await send(frame)
    finally:
        mailboxes.discard(mailbox)


async def trigger_tasks(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            out = {"type": "websocket.send", "text": message.get("text")}
            for mailbox in list(mailboxes):
                mailbox.put(out)
        elif kind == "websocket.connect":
            await send({"type": "websocket.accept"})
        else:
            return


ROUTES = {
    "/echo": echo,
    "/bcast": member,
    "/trigger": trigger,
    "/bcast-tasks": member_task,
    "/trigger-tasks": trigger_tasks,
}


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        raise ValueError(f"unsupported scope type {scope['type']!r}")
    handler = ROUTES.get(scope["path"])
    if handler is None:
        await receive()  # websocket.connect
        await send({"type": "websocket.close"})
        return
    await handler(receive, send)
