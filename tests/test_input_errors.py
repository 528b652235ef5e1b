"""What a client gets wrong costs one warning line and a close code, never a traceback.

The JSON consumers (async and sync) are driven with frames no client should
send: documents nested deeper than the decoder can recurse, binary frames,
text a custom decoder refuses. Each must close the connection with the code
RFC 6455 has for it (1007 invalid payload, 1003 unsupported data), log
exactly one WARNING without ``exc_info``, and then end the consumer with the
``ValueError`` Channels raises there (``InvalidJsonFrame``,
``UnexpectedBinaryFrame``), while errors raised by the application's own
``receive_json`` keep propagating as themselves. The last test does the same
over real sockets against ``channels-runtime serve``, where ``ProtocolTypeRouter``
keeps that ``ValueError`` out of the server's log.
"""

from __future__ import annotations

import json
import logging
import re
import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from e2e_app.harness import Server, base_env, cli_command
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from channels_runtime.exceptions import ClientInputRefused, InvalidJsonFrame, UnexpectedBinaryFrame
from channels_runtime.generic.websocket import (
    CLOSE_CODE_INVALID_PAYLOAD,
    CLOSE_CODE_UNSUPPORTED_DATA,
    AsyncJsonWebsocketConsumer,
    JsonWebsocketConsumer,
)
from channels_runtime.testing import WebsocketCommunicator

LOGGER = "channels_runtime.generic.websocket"
WORKER_CLASSES = ["asyncio", "uvloop", "trio"]

#: Far deeper than any recursion limit: json.loads raises RecursionError on these.
DEEP_ARRAYS = "[" * 100_000
DEEP_OBJECTS = '{"a":' * 100_000


class AsyncEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json(content)


class SyncEcho(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json(content)


def _nested_lists(text: str, start: int = 0) -> tuple[list[Any], int]:
    """A tiny recursive-descent parser for ``[[...]]``: recursion as a real decoder does it."""
    if text[start : start + 1] != "[":
        raise ValueError(f"expected '[' at {start}")
    items: list[Any] = []
    index = start + 1
    while text[index : index + 1] == "[":
        item, index = _nested_lists(text, index)
        items.append(item)
    if text[index : index + 1] != "]":
        raise ValueError(f"expected ']' at {index}")
    return items, index + 1


def _decode_nested_lists(text_data: str) -> Any:
    return _nested_lists(text_data)[0]


def _decode_hex_utf8(text_data: str) -> Any:
    """Frames carrying hex-encoded UTF-8 JSON: bad UTF-8 raises UnicodeDecodeError."""
    return json.loads(bytes.fromhex(text_data).decode("utf-8"))


class AsyncRecursiveDecoder(AsyncEcho):
    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return _decode_nested_lists(text_data)


class SyncRecursiveDecoder(SyncEcho):
    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return _decode_nested_lists(text_data)


class AsyncHexDecoder(AsyncEcho):
    @classmethod
    def decode_json(cls, text_data: str) -> Any:  # type: ignore[override]
        return _decode_hex_utf8(text_data)


class SyncHexDecoder(SyncEcho):
    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return _decode_hex_utf8(text_data)


#: What the consumer raises after closing with each code: a ValueError, as in Channels.
REFUSALS: dict[int, type[ClientInputRefused]] = {
    CLOSE_CODE_INVALID_PAYLOAD: InvalidJsonFrame,
    CLOSE_CODE_UNSUPPORTED_DATA: UnexpectedBinaryFrame,
}


def _one_clean_warning(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    """The single record the consumer logged: a WARNING, one line, no traceback."""
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1, [r.getMessage() for r in records]
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert record.exc_text is None
    assert "\n" not in record.getMessage()
    return record


async def _expect_close(
    consumer: type, frame: dict[str, Any], code: int, caplog: pytest.LogCaptureFixture
) -> logging.LogRecord:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/ws/json/")
    connected, _ = await comm.connect()
    assert connected
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await comm.send_input({"type": "websocket.receive", **frame})
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": code}
        # Then the consumer ends with Channels' ValueError, which logs nothing more.
        with pytest.raises(REFUSALS[code]):
            await comm.wait()
    record = _one_clean_warning(caplog)
    assert consumer.__qualname__ in record.getMessage()
    assert "'/ws/json/'" in record.getMessage()
    assert str(code) in record.getMessage()
    return record


# -- decoding errors: 1007 ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("consumer", [AsyncEcho, SyncEcho], ids=["async", "sync"])
@pytest.mark.parametrize("payload", [DEEP_ARRAYS, DEEP_OBJECTS], ids=["arrays", "objects"])
async def test_json_nested_too_deeply_closes_with_1007(
    consumer: type, payload: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = await _expect_close(consumer, {"text": payload}, CLOSE_CODE_INVALID_PAYLOAD, caplog)
    assert "nested too deeply" in record.getMessage()


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("consumer", "payload", "detail"),
    [
        (AsyncRecursiveDecoder, "[" * 50_000 + "]" * 50_000, "nested too deeply"),
        (SyncRecursiveDecoder, "[" * 50_000 + "]" * 50_000, "nested too deeply"),
        (AsyncRecursiveDecoder, "[[]", "expected ']'"),
        (SyncRecursiveDecoder, "[[]", "expected ']'"),
        (AsyncHexDecoder, "7b22a9227d", "can't decode byte"),  # {"\xa9"}: not UTF-8
        (SyncHexDecoder, "7b22a9227d", "can't decode byte"),
        (AsyncHexDecoder, "zz", "non-hexadecimal"),
        (SyncHexDecoder, "zz", "non-hexadecimal"),
    ],
    ids=[
        "async-recursion",
        "sync-recursion",
        "async-valueerror",
        "sync-valueerror",
        "async-unicodedecodeerror",
        "sync-unicodedecodeerror",
        "async-fromhex",
        "sync-fromhex",
    ],
)
async def test_custom_decoder_errors_close_with_1007(
    consumer: type, payload: str, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    record = await _expect_close(consumer, {"text": payload}, CLOSE_CODE_INVALID_PAYLOAD, caplog)
    assert detail in record.getMessage()


@pytest.mark.anyio
@pytest.mark.parametrize("consumer", [AsyncRecursiveDecoder, SyncRecursiveDecoder])
async def test_custom_decoders_still_decode(consumer: type) -> None:
    async with WebsocketCommunicator(consumer.as_asgi(), "/") as comm:
        await comm.connect()
        await comm.send_to(text_data="[[[]][]]")
        assert await comm.receive_json_from() == [[[]], []]


@pytest.mark.anyio
async def test_too_deep_json_reaches_receive_invalid_json_as_a_valueerror() -> None:
    """The hook keeps its Channels signature: a ValueError, the RecursionError as cause."""
    seen: list[BaseException] = []

    class Collecting(AsyncEcho):
        async def receive_invalid_json(self, text_data: str, error: ValueError) -> None:
            seen.append(error)
            await self.send_json({"error": "invalid JSON"})

    async with WebsocketCommunicator(Collecting.as_asgi(), "/") as comm:
        await comm.connect()
        await comm.send_to(text_data=DEEP_ARRAYS)
        assert await comm.receive_json_from() == {"error": "invalid JSON"}
        await comm.send_json_to({"still": "open"})
        assert await comm.receive_json_from() == {"still": "open"}
    assert len(seen) == 1
    assert type(seen[0]) is ValueError
    assert isinstance(seen[0].__cause__, RecursionError)


# -- binary frames: 1003 --------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("consumer", [AsyncEcho, SyncEcho], ids=["async", "sync"])
@pytest.mark.parametrize(
    "frame",
    [{"bytes": b'{"a": 1}'}, {"text": None, "bytes": b"\x00\xff"}],
    ids=["bytes-only", "hypercorn-style"],
)
async def test_binary_frame_closes_with_1003(
    consumer: type, frame: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    record = await _expect_close(consumer, frame, CLOSE_CODE_UNSUPPORTED_DATA, caplog)
    assert f"binary WebSocket frame ({len(frame['bytes'])} bytes)" in record.getMessage()


class AsyncAcceptsBinary(AsyncEcho):
    """What the docs show: JSON sent in binary frames, treated as a text frame."""

    async def receive_binary(self, bytes_data: bytes, **kwargs: Any) -> None:
        await self.receive(text_data=bytes_data.decode("utf-8", "replace"), **kwargs)


class SyncAcceptsBinary(SyncEcho):
    def receive_binary(self, bytes_data: bytes, **kwargs: Any) -> None:
        self.receive(text_data=bytes_data.decode("utf-8", "replace"), **kwargs)


@pytest.mark.anyio
@pytest.mark.parametrize("consumer", [AsyncAcceptsBinary, SyncAcceptsBinary])
async def test_receive_binary_is_the_hook_for_accepting_binary_frames(
    consumer: type, caplog: pytest.LogCaptureFixture
) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/")
    await comm.connect()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await comm.send_to(bytes_data=b'{"via": "binary"}')
        assert await comm.receive_json_from() == {"via": "binary"}
        await comm.send_to(bytes_data=b"\xff not json")
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1007}
        with pytest.raises(InvalidJsonFrame):
            await comm.wait()
    assert "not valid JSON" in _one_clean_warning(caplog).getMessage()


@pytest.mark.anyio
async def test_a_receive_binary_override_replaces_the_default_entirely(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An override that raises its own error: no close code, no warning from the default."""

    class Strict(AsyncEcho):
        async def receive_binary(self, bytes_data: bytes, **kwargs: Any) -> None:
            raise ValueError(f"binary frames are not welcome here ({len(bytes_data)} bytes)")

    comm = WebsocketCommunicator(Strict.as_asgi(), "/")
    await comm.connect()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await comm.send_to(bytes_data=b"{}")
        with pytest.raises(ValueError, match=r"not welcome here \(2 bytes\)") as info:
            await comm.wait()
    assert type(info.value) is ValueError
    assert [r for r in caplog.records if r.name == LOGGER] == []


# -- one warning per connection, however many bad frames --------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("consumer", [AsyncEcho, SyncEcho], ids=["async", "sync"])
async def test_frames_queued_behind_a_bad_one_add_no_warnings(
    consumer: type, caplog: pytest.LogCaptureFixture
) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/")
    await comm.connect()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for frame in [{"bytes": b"x"}, {"text": "nope"}, {"text": DEEP_ARRAYS}, {"text": "{}"}]:
            await comm.send_input({"type": "websocket.receive", **frame})
        assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 1003}
        # The consumer ends on the first bad frame: the rest are never handled.
        with pytest.raises(UnexpectedBinaryFrame):
            await comm.wait()
    assert "binary" in _one_clean_warning(caplog).getMessage()


@pytest.mark.anyio
async def test_decoder_messages_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    class Quoting(AsyncEcho):
        @classmethod
        async def decode_json(cls, text_data: str) -> Any:
            raise ValueError(f"cannot parse {text_data}")

    payload = "x\n[2026-01-01 00:00:00 +0000] [1] [ERROR] forged" + "y" * 1000
    record = await _expect_close(Quoting, {"text": payload}, 1007, caplog)
    message = record.getMessage()
    assert "\n" not in message
    assert "\\n[2026-01-01" in message
    assert len(message) < 600


# -- the application's own errors are not the client's ---------------------------------


class AsyncRecursesInHandler(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.receive_json(content)  # a bug: unbounded recursion


class SyncRecursesInHandler(JsonWebsocketConsumer):
    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.receive_json(content)  # a bug: unbounded recursion


@pytest.mark.anyio
@pytest.mark.parametrize("consumer", [AsyncRecursesInHandler, SyncRecursesInHandler])
async def test_recursion_error_in_receive_json_propagates(
    consumer: type, caplog: pytest.LogCaptureFixture
) -> None:
    comm = WebsocketCommunicator(consumer.as_asgi(), "/")
    await comm.connect()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await comm.send_json_to({"a": 1})
        with pytest.raises(RecursionError):
            await comm.wait(timeout=10)
    assert [r for r in caplog.records if r.name == LOGGER] == []


@pytest.mark.anyio
@pytest.mark.parametrize("error", [ValueError, UnicodeDecodeError, RecursionError])
async def test_errors_in_receive_json_are_not_mistaken_for_bad_input(
    error: type[Exception], caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(AsyncJsonWebsocketConsumer):
        async def receive_json(self, content: Any, **kwargs: Any) -> None:
            if error is UnicodeDecodeError:
                b"\xff".decode("utf-8")
            raise error("the handler's own failure")

    comm = WebsocketCommunicator(Failing.as_asgi(), "/")
    await comm.connect()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        await comm.send_json_to({"a": 1})
        with pytest.raises(error):
            await comm.wait()
    assert [r for r in caplog.records if r.name == LOGGER] == []


# -- over real sockets, against channels-runtime serve ---------------------------------


def _close_code(client: ClientConnection) -> int | None:
    try:
        while True:
            client.recv(timeout=10)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_serve_answers_bad_frames_with_close_codes_and_one_line_each(
    worker_class: str, tmp_path: Path
) -> None:
    server = Server(
        [*cli_command(), "serve", "tests.serve_app", "-b", "127.0.0.1:0", "-k", worker_class],
        log_path=tmp_path / "server.log",
        env=base_env(),
    )
    frames: list[tuple[str | bytes, int]] = [
        (DEEP_ARRAYS, 1007),
        (DEEP_OBJECTS, 1007),
        (b"\x00\x01 binary", 1003),
        ("{not json", 1007),
    ]
    try:
        server.start()
        with ExitStack() as stack:
            for route in ("/ws/json/async/", "/ws/json/sync/"):
                for payload, code in frames:
                    client = stack.enter_context(
                        connect(server.ws_url + route, open_timeout=10, close_timeout=5)
                    )
                    client.send(json.dumps({"still": "fine"}))
                    assert json.loads(client.recv(timeout=5)) == {"still": "fine"}
                    client.send(payload)
                    # A burst queued behind the bad frame: still one line for this connection.
                    for _ in range(3):
                        try:
                            client.send(payload)
                        except ConnectionClosed:
                            break
                    assert _close_code(client) == code, (route, payload[:20], server.log())
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        log = server.log()
        assert "Traceback" not in log, log
        assert "[ERROR]" not in log, log
        warnings = [line for line in log.splitlines() if "[WARNING]" in line]
        assert len(warnings) == 2 * len(frames), log
        for route in ("/ws/json/async/", "/ws/json/sync/"):
            on_route = [line for line in warnings if f"'{route}'" in line]
            assert len([w for w in on_route if re.search(r"not valid JSON.*1007$", w)]) == 3, log
            assert len([w for w in on_route if re.search(r"binary.*1003$", w)]) == 1, log
    finally:
        server.close()
