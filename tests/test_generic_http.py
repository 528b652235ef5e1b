"""AsyncHttpConsumer: body assembly, response helpers, lifecycle."""

from __future__ import annotations

import json
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from channels_runtime.generic.http import AsyncHttpConsumer, encode_headers
from channels_runtime.testing import ApplicationCommunicator, HttpCommunicator

pytestmark = pytest.mark.anyio


def http_scope(method: str = "POST", path: str = "/") -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
    }


class Lifecycle(AsyncHttpConsumer):
    """Records what happened, so tests can check the order of calls."""

    events: list[Any]

    async def handle(self, body: bytes) -> None:
        type(self).events.append(("handle", body))
        await self.send_response(
            200,
            json.dumps({"length": len(body), "chunks": len(self.body)}).encode(),
            headers={"Content-Type": "application/json"},
        )

    async def disconnect(self) -> None:
        type(self).events.append("disconnect")


@pytest.fixture
def lifecycle() -> type[Lifecycle]:
    class Fresh(Lifecycle):
        events = []

    return Fresh


async def test_simple_request(lifecycle: type[Lifecycle]) -> None:
    comm = HttpCommunicator(lifecycle.as_asgi(), "POST", "/upload/", body=b"hello")
    response = await comm.get_response()
    assert response["status"] == 200
    assert response["headers"] == [(b"Content-Type", b"application/json")]
    assert json.loads(response["body"]) == {"length": 5, "chunks": 1}
    assert lifecycle.events == [("handle", b"hello"), "disconnect"]


async def test_chunked_body_is_assembled_before_handle(lifecycle: type[Lifecycle]) -> None:
    comm = ApplicationCommunicator(lifecycle.as_asgi(), http_scope())
    chunks = [bytes([n % 256]) * 100 for n in range(500)]
    for chunk in chunks[:-1]:
        await comm.send_input({"type": "http.request", "body": chunk, "more_body": True})
    # A chunk without a body key, as servers may send, adds nothing.
    await comm.send_input({"type": "http.request", "more_body": True})
    assert lifecycle.events == []
    await comm.send_input({"type": "http.request", "body": chunks[-1], "more_body": False})
    start = await comm.receive_output()
    assert start["type"] == "http.response.start"
    assert start["status"] == 200
    body = await comm.receive_output()
    assert body == {
        "type": "http.response.body",
        "body": b'{"length": 50000, "chunks": 500}',
        "more_body": False,
    }
    await comm.wait()
    assert lifecycle.events == [("handle", b"".join(chunks)), "disconnect"]


async def test_disconnect_mid_request(lifecycle: type[Lifecycle]) -> None:
    comm = ApplicationCommunicator(lifecycle.as_asgi(), http_scope())
    await comm.send_input({"type": "http.request", "body": b"part", "more_body": True})
    await comm.send_input({"type": "http.disconnect"})
    await comm.wait()  # the consumer ended by itself
    assert lifecycle.events == ["disconnect"]
    assert await comm.receive_nothing()


async def test_disconnect_runs_when_handle_raises(lifecycle: type[Lifecycle]) -> None:
    class Failing(lifecycle):  # type: ignore[valid-type,misc]
        async def handle(self, body: bytes) -> None:
            raise LookupError("no such thing")

    comm = ApplicationCommunicator(Failing.as_asgi(), http_scope())
    await comm.send_input({"type": "http.request", "body": b""})
    with pytest.raises(LookupError, match="no such thing"):
        await comm.wait()
    assert lifecycle.events == ["disconnect"]


async def test_default_handle_says_what_to_do() -> None:
    class Forgetful(AsyncHttpConsumer):
        pass

    comm = HttpCommunicator(Forgetful.as_asgi(), "GET", "/")
    with pytest.raises(NotImplementedError, match=r"Forgetful must define 'async def handle"):
        await comm.get_response()


class Headers(AsyncHttpConsumer):
    """Sends the headers named by the request body (a key into VARIANTS)."""

    VARIANTS: dict[str, Any] = {
        "none": None,
        "dict-str": {"Content-Type": "text/plain", "X-Name": "café"},
        "dict-bytes": {b"content-type": b"text/plain"},
        "list-bytes": [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")],
        "list-str": [("Set-Cookie", "a=1"), ("X-Mixed", b"raw")],
        "tuple-of-lists": ([b"x-a", "1"], ["x-b", b"2"]),
    }

    async def handle(self, body: bytes) -> None:
        await self.send_headers(status=201, headers=self.VARIANTS[body.decode()])
        await self.send_body(b"ok")


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        ("none", []),
        ("dict-str", [(b"Content-Type", b"text/plain"), (b"X-Name", "café".encode("latin-1"))]),
        ("dict-bytes", [(b"content-type", b"text/plain")]),
        ("list-bytes", [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]),
        ("list-str", [(b"Set-Cookie", b"a=1"), (b"X-Mixed", b"raw")]),
        ("tuple-of-lists", [(b"x-a", b"1"), (b"x-b", b"2")]),
    ],
)
async def test_send_headers_variants(variant: str, expected: list[tuple[bytes, bytes]]) -> None:
    comm = ApplicationCommunicator(Headers.as_asgi(), http_scope())
    await comm.send_input({"type": "http.request", "body": variant.encode()})
    start = await comm.receive_output()
    assert start == {"type": "http.response.start", "status": 201, "headers": expected}
    assert all(type(n) is bytes and type(v) is bytes for n, v in start["headers"])
    assert await comm.receive_output() == {
        "type": "http.response.body",
        "body": b"ok",
        "more_body": False,
    }
    await comm.wait()


def test_encode_headers_errors() -> None:
    with pytest.raises(ValueError, match=r"header value '✓' cannot be encoded as latin-1"):
        encode_headers({"x-check": "✓"})
    with pytest.raises(ValueError, match=r"header name 'x-é' cannot be encoded as ascii"):
        encode_headers([("x-é", "v")])
    with pytest.raises(TypeError, match=r"must be str or bytes, got 5"):
        encode_headers([("x-n", 5)])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"\(name, value\) pair"):
        encode_headers([(b"a", b"b", b"c")])  # type: ignore[list-item]


async def test_streaming_body_and_body_type_check() -> None:
    class Streaming(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            await self.send_headers(headers=[(b"content-type", b"text/event-stream")])
            for n in range(3):
                await self.send_body(f"data: {n}\n\n".encode(), more_body=True)
                await anyio.lowlevel.checkpoint()
            await self.send_body(bytearray(b"data: end\n\n"))
            with pytest.raises(TypeError, match=r"needs bytes, got str \(encode the str first\)"):
                await self.send_body("text")  # type: ignore[arg-type]

    comm = HttpCommunicator(Streaming.as_asgi(), "GET", "/events/")
    response = await comm.get_response()
    assert response["status"] == 200
    assert response["body"] == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: end\n\n"


async def test_send_response_passes_headers_through() -> None:
    class Teapot(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            await self.send_response(418, b"short and stout", headers=[("x-pot", "tea")])

    comm = HttpCommunicator(Teapot.as_asgi(), "GET", "/")
    response = await comm.get_response()
    assert response["status"] == 418
    assert response["headers"] == [(b"x-pot", b"tea")]
    assert response["body"] == b"short and stout"


async def test_handle_can_wait_on_its_own_layer_channel() -> None:
    """The documented long-poll pattern: handle() reads a channel it created itself."""
    from channels_runtime.layers import get_channel_layer

    class LongPoll(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            inbox = await self.channel_layer.new_channel()
            await self.channel_layer.group_add("updates", inbox)
            try:
                await self.send(  # tell the test we are subscribed
                    {"type": "http.response.start", "status": 200, "headers": []}
                )
                event = await self.channel_layer.receive(inbox)
            finally:
                await self.channel_layer.group_discard("updates", inbox)
            await self.send_body(event["text"].encode())

    comm = ApplicationCommunicator(LongPoll.as_asgi(), http_scope("GET", "/poll/"))
    await comm.send_input({"type": "http.request", "body": b""})
    assert (await comm.receive_output())["type"] == "http.response.start"
    await get_channel_layer().group_send("updates", {"type": "update", "text": "news!"})
    assert (await comm.receive_output())["body"] == b"news!"
    await comm.wait()
