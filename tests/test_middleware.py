"""BaseMiddleware: the inner application gets a private copy of the scope."""

from __future__ import annotations

import inspect
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypercorn.utils import is_asgi

from channels_runtime.asgi import Message, Receive, Scope, Send
from channels_runtime.middleware import BaseMiddleware


class RecordingApp:
    """Records what it was called with and adds a key to the scope it got."""

    def __init__(self) -> None:
        self.calls: list[tuple[Scope, Receive, Send]] = []
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls.append((scope, receive, send))
        self.seen.append(dict(scope))
        scope["added_by_inner"] = True
        scope["user"] = "replaced by inner"


async def _receive() -> Message:
    return {"type": "websocket.connect"}


async def _send(message: Message) -> None:
    pass


def test_call_is_a_coroutine_function_for_hypercorn() -> None:
    middleware = BaseMiddleware(RecordingApp())
    assert inspect.iscoroutinefunction(middleware.__call__)
    # Hypercorn's own test for "this is an ASGI 3 application".
    assert is_asgi(middleware)


@pytest.mark.anyio
async def test_inner_changes_do_not_leak_to_the_caller() -> None:
    inner = RecordingApp()
    scope: dict[str, Any] = {"type": "websocket", "path": "/ws/", "user": "original"}

    await BaseMiddleware(inner)(scope, _receive, _send)

    assert scope == {"type": "websocket", "path": "/ws/", "user": "original"}
    ((inner_scope, _, _),) = inner.calls
    assert inner_scope is not scope
    assert inner_scope["path"] == "/ws/"
    assert inner_scope["added_by_inner"] is True


@pytest.mark.anyio
async def test_receive_and_send_are_passed_through_untouched() -> None:
    inner = RecordingApp()

    await BaseMiddleware(inner)({"type": "http"}, _receive, _send)

    ((_, receive, send),) = inner.calls
    assert receive is _receive
    assert send is _send


@pytest.mark.anyio
async def test_copy_is_shallow() -> None:
    """Like Channels: values are shared, so in-place mutation is visible outside."""

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        scope["headers"].append((b"x-added", b"1"))

    headers: list[tuple[bytes, bytes]] = []
    await BaseMiddleware(inner)({"type": "http", "headers": headers}, _receive, _send)

    assert headers == [(b"x-added", b"1")]


@pytest.mark.anyio
async def test_subclass_adds_to_scope_for_inner_only() -> None:
    class UserMiddleware(BaseMiddleware):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            scope = dict(scope, user="alice")
            await anyio.lowlevel.checkpoint()  # middleware may do async work first
            await super().__call__(scope, receive, send)

    inner = RecordingApp()
    outer_scope: dict[str, Any] = {"type": "websocket"}

    await UserMiddleware(inner)(outer_scope, _receive, _send)

    ((inner_scope, _, _),) = inner.calls
    assert inner_scope["user"] == "replaced by inner"
    assert "user" not in outer_scope


@pytest.mark.anyio
async def test_nested_middleware_each_level_isolated() -> None:
    seen: list[dict[str, Any]] = []

    class Tagging(BaseMiddleware):
        def __init__(self, inner: Any, tag: str) -> None:
            super().__init__(inner)
            self.tag = tag

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            scope[self.tag] = True
            seen.append(dict(scope))
            await super().__call__(scope, receive, send)

    inner = RecordingApp()
    stack = Tagging(Tagging(inner, "inner_tag"), "outer_tag")
    scope: dict[str, Any] = {"type": "websocket"}

    await stack(scope, _receive, _send)

    # The outer middleware's own change is on the scope it was given (as in
    # Channels: the copy happens on the way in to *its* inner application).
    assert scope == {"type": "websocket", "outer_tag": True}
    assert seen == [
        {"type": "websocket", "outer_tag": True},
        {"type": "websocket", "outer_tag": True, "inner_tag": True},
    ]
    ((inner_scope, _, _),) = inner.calls
    assert inner_scope["added_by_inner"] is True


@pytest.mark.anyio
async def test_exceptions_from_inner_propagate() -> None:
    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        raise LookupError("from inner")

    with pytest.raises(LookupError, match="from inner"):
        await BaseMiddleware(failing)({"type": "http"}, _receive, _send)


@pytest.mark.anyio
async def test_inner_runs_to_completion_with_real_messages() -> None:
    """A full receive/send exchange through the middleware over memory streams."""

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        message = await receive()
        await send({"type": "echo", "got": message["type"], "path": scope["path"]})

    to_app_tx, to_app_rx = anyio.create_memory_object_stream[Message](1)
    from_app_tx, from_app_rx = anyio.create_memory_object_stream[Message](1)
    async with to_app_tx, to_app_rx, from_app_tx, from_app_rx:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    BaseMiddleware(echo),
                    {"type": "websocket", "path": "/e/"},
                    to_app_rx.receive,
                    from_app_tx.send,
                )
                await to_app_tx.send({"type": "websocket.connect"})
                reply = await from_app_rx.receive()

    assert reply == {"type": "echo", "got": "websocket.connect", "path": "/e/"}
