"""The ceilings: plain ASGI applications, no framework at all.

Serve with ``hypercorn -w 0 -k CLASS raw_app:application`` from this folder.

Paths:

* ``/echo``: accept, then send every text frame straight back.
* ``/bcast``: accept and join the broadcast set; gets every broadcast.
* ``/trigger``: each text frame it receives is sent to every ``/bcast``
  connection, one ``await send()`` after another, from this connection's task
  (the simplest possible fan-out).

Anything else is refused. Lifespan is answered so Hypercorn logs no error.

The module imports nothing from Django. It only carries the few settings that
``channels-runtime serve`` insists on (it sets Django up before serving), so the
same app also measures what that server adds on top of Hypercorn.
"""

from __future__ import annotations

import os
from typing import Any

SECRET_KEY = "bench"
INSTALLED_APPS: list[str] = []
CHANNEL_LAYERS: dict[str, Any] = {}  # no layer: the raw app needs none
os.environ.setdefault("DJANGO_SETTINGS_MODULE", __name__)

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


ROUTES = {"/echo": echo, "/bcast": member, "/trigger": trigger}


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
