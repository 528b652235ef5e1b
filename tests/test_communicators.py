"""The testing communicators, against small raw ASGI applications, on every backend."""

from __future__ import annotations

import contextvars
import threading
import traceback
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from channels_runtime.db import connections_kept_open
from channels_runtime.testing import (
    ApplicationCommunicator,
    HttpCommunicator,
    WebsocketCommunicator,
    stop_background_communicators,
)

pytestmark = pytest.mark.anyio

Scope = dict[str, Any]
Message = dict[str, Any]

# Short timeouts keep the file fast; nothing below depends on real wall-clock slack.
SHORT = 0.05


@pytest.fixture(autouse=True)
async def _no_application_left_running() -> AsyncIterator[None]:
    """Every test here must end with no detached application still running."""
    yield
    leaked = await stop_background_communicators()
    assert not leaked, f"test left applications running: {leaked}"


# ----- applications ----------------------------------------------------------------------


class Recorder:
    """A WebSocket app whose behaviour each test configures, and which records what it saw."""

    def __init__(
        self,
        *,
        accept: bool = True,
        close_code: int | None = None,
        subprotocol: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self.accept = accept
        self.close_code = close_code
        self.subprotocol = subprotocol
        self.headers = headers
        self.received: list[Message] = []
        self.scope: Scope | None = None
        self.finally_ran = False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.scope = scope
        try:
            message = await receive()
            assert message["type"] == "websocket.connect"
            if not self.accept:
                close: Message = {"type": "websocket.close"}
                if self.close_code is not None:
                    close["code"] = self.close_code
                await send(close)
                return
            accept: Message = {"type": "websocket.accept", "subprotocol": self.subprotocol}
            if self.headers is not None:
                accept["headers"] = self.headers
            await send(accept)
            while True:
                message = await receive()
                self.received.append(message)
                if message["type"] == "websocket.disconnect":
                    return
                # Echo, answering in the frame type it came in.
                if message.get("text") is not None:
                    await send({"type": "websocket.send", "text": message["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"]})
        finally:
            self.finally_ran = True


def sender(*messages: Message) -> Any:
    """An app that answers its first message with ``messages``, then waits for one more."""

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        for message in messages:
            await send(message)
        await receive()

    return app


def _explode() -> None:
    raise ValueError("the application broke")


async def crashing_app(scope: Scope, receive: Any, send: Any) -> None:
    await receive()
    _explode()


class Hanging:
    """An app that never ends on its own; records that its cleanup ran."""

    def __init__(self) -> None:
        self.finally_ran = False

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            self.finally_ran = True


def assert_raised_in_app(exc: BaseException) -> None:
    names = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
    assert "crashing_app" in names
    assert names[-1] == "_explode", names


# ----- scopes ----------------------------------------------------------------------------


async def test_websocket_scope_is_built_like_channels() -> None:
    app = Recorder()
    comm = WebsocketCommunicator(
        app,
        "/ws/caf%C3%A9/room/?x=1&y=2",
        headers=[(b"origin", b"http://testserver")],
        subprotocols=["chat", "superchat"],
    )
    await comm.connect()
    await comm.disconnect()
    assert app.scope == {
        "type": "websocket",
        "path": "/ws/café/room/",
        "raw_path": b"/ws/caf%C3%A9/room/",
        "query_string": b"x=1&y=2",
        "headers": [(b"origin", b"http://testserver")],
        "subprotocols": ["chat", "superchat"],
    }
    assert "spec_version" not in app.scope


async def test_websocket_spec_version_only_when_given() -> None:
    comm = WebsocketCommunicator(Recorder(), "/ws/", spec_version="2.3")
    assert comm.scope["spec_version"] == "2.3"


async def test_websocket_path_must_be_str() -> None:
    with pytest.raises(TypeError, match="Expected str"):
        WebsocketCommunicator(Recorder(), b"/ws/")  # type: ignore[arg-type]


# ----- connecting ------------------------------------------------------------------------


async def test_accept_with_subprotocol_and_headers() -> None:
    app = Recorder(subprotocol="chat", headers=[(b"x-token", b"abc")])
    comm = WebsocketCommunicator(app, "/ws/", subprotocols=["chat"])
    assert comm.response_headers is None
    assert await comm.connect() == (True, "chat")
    assert comm.response_headers == [(b"x-token", b"abc")]
    await comm.disconnect()


async def test_accept_without_subprotocol() -> None:
    comm = WebsocketCommunicator(Recorder(), "/ws/")
    assert await comm.connect() == (True, None)
    assert comm.response_headers == []
    await comm.disconnect()


async def test_deny_returns_close_code() -> None:
    app = Recorder(accept=False, close_code=4003)
    comm = WebsocketCommunicator(app, "/ws/")
    assert await comm.connect() == (False, 4003)
    await comm.wait()
    assert app.finally_ran


async def test_deny_without_code_means_1000() -> None:
    comm = WebsocketCommunicator(Recorder(accept=False), "/ws/")
    assert await comm.connect() == (False, 1000)
    await comm.wait()


async def test_connect_names_an_unexpected_message() -> None:
    comm = WebsocketCommunicator(sender({"type": "websocket.send", "text": "hi"}), "/ws/")
    with pytest.raises(AssertionError) as excinfo:
        await comm.connect()
    assert str(excinfo.value) == (
        "Expected a websocket.accept or websocket.close message, "
        "got {'type': 'websocket.send', 'text': 'hi'}"
    )
    await comm.disconnect()


# ----- frames ----------------------------------------------------------------------------


async def test_text_and_binary_roundtrip_in_hypercorn_shape() -> None:
    app = Recorder()
    comm = WebsocketCommunicator(app, "/ws/")
    await comm.connect()
    await comm.send_to(text_data="hello")
    assert await comm.receive_from() == "hello"
    await comm.send_to(bytes_data=b"\x00\x01")
    assert await comm.receive_from() == b"\x00\x01"
    # Empty frames are frames too.
    await comm.send_to(text_data="")
    assert await comm.receive_from() == ""
    await comm.send_to(bytes_data=b"")
    assert await comm.receive_from() == b""
    await comm.disconnect(code=4321)
    assert app.received == [
        {"type": "websocket.receive", "text": "hello", "bytes": None},
        {"type": "websocket.receive", "bytes": b"\x00\x01", "text": None},
        {"type": "websocket.receive", "text": "", "bytes": None},
        {"type": "websocket.receive", "bytes": b"", "text": None},
        {"type": "websocket.disconnect", "code": 4321},
    ]
    assert app.finally_ran


async def test_json_roundtrip() -> None:
    comm = WebsocketCommunicator(Recorder(), "/ws/")
    await comm.connect()
    await comm.send_json_to({"a": [1, 2, None], "b": "ü"})
    assert await comm.receive_json_from() == {"a": [1, 2, None], "b": "ü"}
    await comm.disconnect()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of text_data or bytes_data"),
        ({"text_data": "a", "bytes_data": b"b"}, "exactly one of text_data or bytes_data"),
        ({"text_data": b"a"}, "text_data argument must be a str"),
        ({"bytes_data": "a"}, "bytes_data argument must be bytes"),
    ],
)
async def test_send_to_checks_its_arguments(kwargs: dict[str, Any], match: str) -> None:
    comm = WebsocketCommunicator(Recorder(), "/ws/")
    with pytest.raises(AssertionError, match=match):
        await comm.send_to(**kwargs)


async def test_receive_from_names_a_close_message() -> None:
    comm = WebsocketCommunicator(
        sender({"type": "websocket.accept"}, {"type": "websocket.close", "code": 4001}), "/ws/"
    )
    await comm.connect()
    with pytest.raises(AssertionError) as excinfo:
        await comm.receive_from()
    # Channels' wording, with the whole message in a note.
    assert str(excinfo.value) == "Expected type 'websocket.send', but was 'websocket.close'"
    assert excinfo.value.__notes__ == ["The message was {'type': 'websocket.close', 'code': 4001}"]
    await comm.disconnect()


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        ({"type": "websocket.send"}, "exactly one of 'text' or 'bytes'"),
        ({"type": "websocket.send", "text": "a", "bytes": b"b"}, "exactly one of 'text' or"),
        ({"type": "websocket.send", "text": b"a"}, "Text frame payload is not str"),
        ({"type": "websocket.send", "bytes": "a"}, "Binary frame payload is not bytes"),
    ],
)
async def test_receive_from_checks_the_frame(frame: Message, match: str) -> None:
    comm = WebsocketCommunicator(sender({"type": "websocket.accept"}, frame), "/ws/")
    await comm.connect()
    with pytest.raises(AssertionError, match=match):
        await comm.receive_from()
    await comm.disconnect()


async def test_receive_from_accepts_spec_shape_with_none_key() -> None:
    comm = WebsocketCommunicator(
        sender(
            {"type": "websocket.accept"}, {"type": "websocket.send", "bytes": None, "text": "t"}
        ),
        "/ws/",
    )
    await comm.connect()
    assert await comm.receive_from() == "t"
    await comm.disconnect()


async def test_receive_json_from_rejects_binary_and_bad_json() -> None:
    comm = WebsocketCommunicator(Recorder(), "/ws/")
    await comm.connect()
    await comm.send_to(bytes_data=b'{"a": 1}')
    with pytest.raises(AssertionError) as excinfo:
        await comm.receive_json_from()
    assert str(excinfo.value) == "JSON data is not a text frame, it is <class 'bytes'>"
    assert excinfo.value.__notes__ == ["The frame was b'{\"a\": 1}'"]
    await comm.send_to(text_data="{not json")
    with pytest.raises(AssertionError, match=r"Expected a text frame with JSON, got '\{not json'"):
        await comm.receive_json_from()
    await comm.disconnect()


async def test_long_messages_are_shortened_in_assertions() -> None:
    comm = WebsocketCommunicator(
        sender({"type": "websocket.accept"}, {"type": "websocket.close", "reason": "x" * 5000}),
        "/ws/",
    )
    await comm.connect()
    with pytest.raises(AssertionError) as excinfo:
        await comm.receive_from()
    (note,) = excinfo.value.__notes__
    assert "'type': 'websocket.close'" in note
    assert len(note) < 400
    await comm.disconnect()


# ----- timeouts and silence --------------------------------------------------------------


async def test_receive_output_timeout_cancels_the_application() -> None:
    app = Hanging()
    comm = WebsocketCommunicator(app, "/ws/")
    with pytest.raises(TimeoutError, match=r"within 0\.05 seconds"):
        await comm.receive_from(timeout=SHORT)
    assert app.finally_ran
    # As with asgiref's communicator, the application is gone: sending to it raises
    # the cancellation exception, and so does disconnect(); wait() returns.
    with pytest.raises(anyio.get_cancelled_exc_class()):
        await comm.disconnect()
    await comm.wait()


async def test_receive_output_after_exit_fails_at_once() -> None:
    async def quiet(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "only"})

    comm = ApplicationCommunicator(quiet, {"type": "http"})
    assert await comm.receive_output() == {"type": "only"}
    start = anyio.current_time()
    with pytest.raises(TimeoutError, match="exited without sending"):
        await comm.receive_output(timeout=5)
    assert anyio.current_time() - start < 1


async def test_receive_nothing() -> None:
    app = Recorder()
    comm = WebsocketCommunicator(app, "/ws/")
    await comm.connect()
    assert await comm.receive_nothing(timeout=SHORT) is True
    await comm.send_to(text_data="ping")
    assert await comm.receive_nothing(timeout=SHORT) is False
    # The message is still there for the next receive.
    assert await comm.receive_from() == "ping"
    await comm.disconnect()


async def test_wait_cancels_a_hung_application() -> None:
    app = Hanging()
    comm = ApplicationCommunicator(app, {"type": "websocket"})
    start = anyio.current_time()
    await comm.wait(timeout=SHORT)
    assert anyio.current_time() - start >= SHORT * 0.9
    assert app.finally_ran


async def test_disconnect_cancels_an_application_that_ignores_it() -> None:
    app = Hanging()
    comm = WebsocketCommunicator(app, "/ws/")
    await comm.disconnect(timeout=SHORT)
    assert app.finally_ran


# ----- application errors ----------------------------------------------------------------


async def test_exception_surfaces_from_receive_output_with_its_traceback() -> None:
    comm = ApplicationCommunicator(crashing_app, {"type": "http"})
    await comm.send_input({"type": "http.request"})
    with pytest.raises(ValueError, match="the application broke") as excinfo:
        await comm.receive_output()
    assert_raised_in_app(excinfo.value)
    depth = len(traceback.extract_tb(excinfo.value.__traceback__))
    # And again from every later call, without the traceback growing.
    with pytest.raises(ValueError, match="the application broke") as excinfo:
        await comm.wait()
    assert_raised_in_app(excinfo.value)
    assert len(traceback.extract_tb(excinfo.value.__traceback__)) <= depth
    with pytest.raises(ValueError, match="the application broke"):
        await comm.send_input({"type": "http.disconnect"})


async def test_exception_surfaces_from_connect() -> None:
    comm = WebsocketCommunicator(crashing_app, "/ws/")
    with pytest.raises(ValueError, match="the application broke") as excinfo:
        await comm.connect()
    assert_raised_in_app(excinfo.value)


async def test_exception_surfaces_from_receive_nothing() -> None:
    comm = ApplicationCommunicator(crashing_app, {"type": "http"})
    await comm.send_input({"type": "http.request"})
    with pytest.raises(ValueError, match="the application broke"):
        await comm.receive_nothing(timeout=SHORT)


async def test_exception_raised_while_being_cancelled_surfaces_from_wait() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise RuntimeError("cleanup failed")

    comm = ApplicationCommunicator(app, {"type": "http"})
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await comm.wait(timeout=SHORT)


async def test_stop_cancels_and_later_reports() -> None:
    app = Hanging()
    comm = ApplicationCommunicator(app, {"type": "http"})
    comm.stop()  # not started: nothing to do
    await comm.send_input({"type": "http.request"})
    comm.stop()
    await comm.wait()
    assert app.finally_ran

    failing = ApplicationCommunicator(crashing_app, {"type": "http"})
    await failing.send_input({"type": "http.request"})
    await anyio.sleep(SHORT)
    with pytest.raises(ValueError, match="the application broke"):
        failing.stop()
    failing.stop(exceptions=False)


# ----- the structured form ---------------------------------------------------------------


async def test_async_with_runs_and_cleans_up() -> None:
    app = Recorder()
    async with WebsocketCommunicator(app, "/ws/") as comm:
        assert await comm.connect() == (True, None)
        await comm.send_json_to([1])
        assert await comm.receive_json_from() == [1]
    # Leaving the block cancelled the (still connected) application and waited for it.
    assert app.finally_ran


async def test_async_with_starts_the_application_lazily() -> None:
    app = Recorder()
    async with WebsocketCommunicator(app, "/ws/") as comm:
        comm.scope["user"] = "alice"
        await comm.connect()
        await comm.disconnect()
    assert app.scope is not None
    assert app.scope["user"] == "alice"


async def test_async_with_reraises_an_unreported_application_error() -> None:
    async def body() -> None:
        async with ApplicationCommunicator(crashing_app, {"type": "http"}) as comm:
            await comm.send_input({"type": "http.request"})
            await anyio.sleep(SHORT)

    with pytest.raises(ValueError, match="the application broke") as excinfo:
        await body()
    # The application's own exception, not an exception group, with its traceback.
    assert type(excinfo.value) is ValueError
    assert_raised_in_app(excinfo.value)


async def test_async_with_does_not_reraise_a_reported_error() -> None:
    async with ApplicationCommunicator(crashing_app, {"type": "http"}) as comm:
        await comm.send_input({"type": "http.request"})
        with pytest.raises(ValueError, match="the application broke"):
            await comm.receive_output()


async def test_async_with_keeps_the_body_exception_unwrapped() -> None:
    app = Hanging()

    class BodyError(Exception):
        pass

    async def body() -> None:
        async with ApplicationCommunicator(app, {"type": "http"}) as comm:
            await comm.send_input({"type": "http.request"})
            raise BodyError

    with pytest.raises(BodyError):
        await body()
    assert app.finally_ran


async def test_async_with_notes_an_application_error_behind_a_body_error() -> None:
    async def body() -> None:
        async with ApplicationCommunicator(crashing_app, {"type": "http"}) as comm:
            await comm.send_input({"type": "http.request"})
            await anyio.sleep(SHORT)
            raise KeyError("body")

    with pytest.raises(KeyError) as excinfo:
        await body()
    assert any("the application broke" in note for note in excinfo.value.__notes__)


async def test_async_with_honours_outer_cancellation() -> None:
    app = Hanging()
    with anyio.move_on_after(SHORT) as outer:
        async with ApplicationCommunicator(app, {"type": "http"}) as comm:
            await comm.send_input({"type": "http.request"})
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert app.finally_ran


async def test_async_with_refuses_a_started_communicator() -> None:
    comm = WebsocketCommunicator(Recorder(), "/ws/")
    await comm.connect()
    with pytest.raises(RuntimeError, match="already in use"):
        async with comm:
            pass
    await comm.disconnect()


async def test_communicator_is_unusable_after_its_block() -> None:
    async with ApplicationCommunicator(Hanging(), {"type": "http"}) as comm:
        pass
    with pytest.raises(RuntimeError, match="already ended"):
        await comm.send_input({"type": "http.request"})


# ----- ownership of detached applications ------------------------------------------------


async def test_disconnect_leaves_no_task_behind() -> None:
    app = Recorder()
    comm = WebsocketCommunicator(app, "/ws/")
    await comm.connect()
    await comm.disconnect()
    assert app.finally_ran
    assert await stop_background_communicators() == []


async def test_forgotten_communicator_is_stopped_by_the_reaper() -> None:
    app = Recorder()
    comm = WebsocketCommunicator(app, "/ws/")
    await comm.connect()
    # ... and the test "forgets" to disconnect.
    assert await stop_background_communicators() == [comm]
    assert app.finally_ran


def test_detached_application_is_cancelled_when_the_event_loop_ends(
    anyio_backend: tuple[str, dict[str, Any]],
) -> None:
    """Even unreaped, a detached application ends cleanly with its event loop run.

    (On trio, an exception escaping the system task would abort the run instead.)
    """
    backend, options = anyio_backend
    app = Recorder()

    async def forgetful_test() -> None:
        comm = WebsocketCommunicator(app, "/ws/")
        assert await comm.connect() == (True, None)

    errors: list[BaseException] = []

    def run() -> None:
        try:
            anyio.run(forgetful_test, backend=backend, backend_options=options)
        except BaseException as exc:
            errors.append(exc)

    # In a thread of its own, so it cannot disturb the test runner's event loop.
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors == []
    assert app.finally_ran


# ----- what the application runs in ------------------------------------------------------


async def test_database_connections_stay_open_while_the_application_runs() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "kept", "value": connections_kept_open()})
        await receive()

    assert not connections_kept_open()
    comm = ApplicationCommunicator(app, {"type": "custom"})
    await comm.send_input({"type": "go"})
    assert (await comm.receive_output())["value"] is True
    await comm.send_input({"type": "stop"})
    await comm.wait()
    assert not connections_kept_open()


_test_var: contextvars.ContextVar[str] = contextvars.ContextVar("_test_var")


@pytest.mark.parametrize("structured", [False, True], ids=["detached", "async-with"])
async def test_application_starts_with_an_empty_context(structured: bool) -> None:
    _test_var.set("from the test")

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "value", "value": _test_var.get("unset")})

    comm = ApplicationCommunicator(app, {"type": "http"})
    if structured:
        async with comm:
            await comm.send_input({"type": "go"})
            assert (await comm.receive_output())["value"] == "unset"
    else:
        await comm.send_input({"type": "go"})
        assert (await comm.receive_output())["value"] == "unset"
        await comm.wait()


@pytest.mark.parametrize("structured", [False, True], ids=["detached", "async-with"])
async def test_application_can_use_anyio_task_groups(structured: bool) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        async def tick() -> None:
            for n in range(3):
                await send({"type": "tick", "n": n})
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await receive()
            tg.cancel_scope.cancel()

    comm = ApplicationCommunicator(app, {"type": "custom"})

    async def exercise() -> None:
        assert [(await comm.receive_output())["n"] for _ in range(3)] == [0, 1, 2]
        await comm.send_input({"type": "stop"})
        await comm.wait()

    if structured:
        async with comm:
            await exercise()
    else:
        await exercise()


# ----- HTTP ------------------------------------------------------------------------------


async def http_app(scope: Scope, receive: Any, send: Any) -> None:
    request = await receive()
    body = (
        f"{scope['method']} {scope['path']} {scope['query_string'].decode()} ".encode()
        + request["body"]
    )
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-app", b"yes")]})
    await send({"type": "http.response.body", "body": body})


async def test_http_response() -> None:
    comm = HttpCommunicator(http_app, "post", "/form/%7Eme/?q=1", body=b"data")
    assert comm.scope["raw_path"] == b"/form/%7Eme/"
    response = await comm.get_response()
    assert response == {
        "status": 201,
        "headers": [(b"x-app", b"yes")],
        "body": b"POST /form/~me/ q=1 data",
    }


async def test_http_chunked_body_is_assembled() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200})
        for part in (b"one ", b"two ", b""):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"three", "more_body": False})

    async with HttpCommunicator(app, "GET", "/") as comm:
        response = await comm.get_response()
    assert response == {"status": 200, "headers": [], "body": b"one two three"}


async def test_http_body_must_be_bytes() -> None:
    with pytest.raises(TypeError, match="must be bytes"):
        HttpCommunicator(http_app, "POST", "/", body="text")  # type: ignore[arg-type]


async def test_http_expects_the_response_start_first() -> None:
    comm = HttpCommunicator(sender({"type": "http.response.body", "body": b"x"}), "GET", "/")
    with pytest.raises(AssertionError) as excinfo:
        await comm.get_response()
    assert str(excinfo.value) == (
        "Expected an http.response.start message, got {'type': 'http.response.body', 'body': b'x'}"
    )
    await comm.wait(timeout=SHORT)


async def test_http_expects_body_messages_after_the_start() -> None:
    comm = HttpCommunicator(
        sender({"type": "http.response.start", "status": 200}, {"type": "http.response.start"}),
        "GET",
        "/",
    )
    with pytest.raises(AssertionError, match=r"Expected an http\.response\.body message after"):
        await comm.get_response()
    await comm.wait(timeout=SHORT)


async def test_http_exception_surfaces() -> None:
    comm = HttpCommunicator(crashing_app, "GET", "/")
    with pytest.raises(ValueError, match="the application broke") as excinfo:
        await comm.get_response()
    assert_raised_in_app(excinfo.value)
