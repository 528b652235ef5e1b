"""A client that reads slowly, or not at all, never freezes the other sync consumers.

Every sync handler in a process runs in the one thread-sensitive thread, so
a ``send()`` that waited for a stuck client would stall every sync consumer,
down to new connections' handshakes. Here frames and closes are queued
instead; a queue that grows past its bounds closes that client with 1013.

The unit tests play the server with ASGI callables whose ``send`` is held
(or never returns, which is what a stuck server is to the application). The
last test runs a real ``channels-runtime serve`` with a raw-socket client
that asks for a 10 MiB burst and never reads it.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import socket
import termios
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from e2e_app.harness import Server, base_env, cli_command, read_events, wait_until
from websockets.sync.client import connect

from channels_runtime.generic.websocket import WebsocketConsumer

Message = dict[str, Any]
CLIENT = ["10.0.0.7", 4242]
CLOSE_1013 = {"type": "websocket.close", "code": 1013}


# -- unit tests: fake server connections ----------------------------------------


class _Connection:
    """One fake connection: feeds the app messages, records what it sends.

    ``hold`` (an Event) keeps each ``websocket.send`` waiting until it is set;
    ``stuck`` keeps every send waiting for ever, as a full socket would.
    ``entered`` is set once a send waits.
    """

    def __init__(self) -> None:
        self.to_app, self._from_test = anyio.create_memory_object_stream[Message](100)
        self.sent: list[Message] = []
        self.hold: anyio.Event | None = None
        self.stuck = False
        self.entered = anyio.Event()
        self._changed = anyio.Event()

    async def receive(self) -> Message:
        return await self._from_test.receive()

    async def send(self, message: Message) -> None:
        if self.stuck:
            self.entered.set()
            await anyio.sleep_forever()
        if message["type"] == "websocket.send" and self.hold is not None:
            self.entered.set()
            await self.hold.wait()
        self.sent.append(message)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_sent(self, count: int, seconds: float = 5) -> None:
        with anyio.fail_after(seconds):
            while len(self.sent) < count:
                await self._changed.wait()

    async def connect(self, seconds: float = 5) -> None:
        await self.to_app.send({"type": "websocket.connect"})
        await self.wait_sent(len(self.sent) + 1, seconds)
        assert self.sent[-1]["type"] == "websocket.accept", self.sent

    async def frame(self, text: str) -> None:
        await self.to_app.send({"type": "websocket.receive", "text": text, "bytes": None})

    def frames(self) -> list[Message]:
        return [m for m in self.sent if m["type"] == "websocket.send"]


async def _serve(app: Callable[..., Any], connection: _Connection) -> None:
    scope = {"type": "websocket", "path": "/", "client": CLIENT}
    await app(scope, connection.receive, connection.send)


async def _in_thread(event: threading.Event, what: str, seconds: float = 5) -> None:
    assert await anyio.to_thread.run_sync(event.wait, seconds), what


def _payload(number: int, kind: str) -> dict[str, Any]:
    """``send()`` arguments for frame ``number``: 300 bytes on the wire whatever ``kind``."""
    if kind == "ascii":
        return {"text_data": f"{number:04d}" + "x" * 296}
    if kind == "utf8":  # 152 characters, 300 bytes of UTF-8
        return {"text_data": f"{number:04d}" + "é" * 148}
    return {"bytes_data": number.to_bytes(4, "big") + bytes(296)}


def _number(message: Message) -> int:
    if message.get("bytes") is not None:
        return int.from_bytes(message["bytes"][:4], "big")
    return int(message["text"][:4])


class Burst(WebsocketConsumer):
    """``"<count>"`` sends frames 0..count-1; after frame 0 it waits for ``go``
    (when set), so a test can first see frame 0 held by the server. Records
    what every ``send()`` returned and the code it was disconnected with."""

    channel_layer_alias = None
    kind = "ascii"
    close_after = False
    go: threading.Event | None = None
    returned: threading.Event
    outcomes: list[Any]
    disconnected: list[int]

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert text_data is not None
        outcomes = [self.send(**_payload(0, self.kind))]
        if self.go is not None:
            assert self.go.wait(5), "the test did not let the burst go on"
        for number in range(1, int(text_data)):
            outcomes.append(self.send(**_payload(number, self.kind)))
        if self.close_after:
            outcomes.append(self.close())
        self.outcomes.extend(outcomes)
        self.returned.set()

    def disconnect(self, code: int) -> None:
        self.disconnected.append(code)


def _burst(**attributes: Any) -> type[Burst]:
    attributes.setdefault("returned", threading.Event())
    attributes.setdefault("outcomes", [])
    attributes.setdefault("disconnected", [])
    return type("Burst", (Burst,), attributes)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "channels_runtime.sync_send" and record.levelno == logging.WARNING
    ]


async def _burst_past_a_bound(
    consumer: type[Burst], count: int, caplog: pytest.LogCaptureFixture
) -> _Connection:
    """Run ``count`` frames into ``consumer`` with frame 0 held by the server, then
    let the server go on; returns the connection once the consumer has ended."""
    connection = _Connection()
    consumer.go = threading.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(_serve, consumer.as_asgi(), connection)
            await connection.connect()
            connection.hold = anyio.Event()
            await connection.frame(str(count))
            await connection.entered.wait()  # frame 0 is with the server, which holds it
            consumer.go.set()
            # The handler went through the whole burst while the server still held frame 0.
            await _in_thread(consumer.returned, "send() blocked the handler")
            assert [m["type"] for m in connection.sent] == ["websocket.accept"]
            assert consumer.outcomes == [None] * len(consumer.outcomes)
            assert len(_warnings(caplog)) == 1
            connection.hold.set()
            await connection.wait_sent(3)
            # A later message is handled; what it sends is dropped without a word.
            consumer.returned = threading.Event()
            await connection.frame("5")
            await _in_thread(consumer.returned, "the next message was not handled")
            await connection.to_app.send({"type": "websocket.disconnect", "code": 1000})
    assert consumer.disconnected == [1000]
    return connection


@pytest.mark.anyio
async def test_a_burst_past_max_queued_sends_closes_with_1013(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = _burst(max_queued_sends=8, close_after=True)
    connection = await _burst_past_a_bound(consumer, 20, caplog)
    # Frame 0 was already with the server; 1..7 waited, 8 did not fit: all dropped.
    assert connection.sent[1:] == [
        {"type": "websocket.send", "text": _payload(0, "ascii")["text_data"]},
        CLOSE_1013,
    ]
    (warning,) = _warnings(caplog)
    assert warning.startswith("test_sync_slow_client.Burst: ")
    assert "client 10.0.0.7:4242" in warning
    assert "code 1013" in warning
    assert "max_queued_sends=8 (8 messages waiting)" in warning
    assert "dropping the 8 frames not sent yet" in warning


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["ascii", "utf8", "bytes"])
async def test_a_burst_past_max_queued_send_bytes_closes_with_1013(
    anyio_backend: Any, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = _burst(max_queued_send_bytes=1000, kind=kind)
    connection = await _burst_past_a_bound(consumer, 10, caplog)
    # 300 bytes each on the wire (UTF-8 for text): frames 0..2 make 900, frame 3 does not fit.
    assert [_number(m) for m in connection.frames()] == [0]
    assert connection.sent[-1] == CLOSE_1013
    (warning,) = _warnings(caplog)
    assert "max_queued_send_bytes=1000 with the next frame (900 bytes waiting, 300 more)" in (
        warning
    )
    assert "dropping the 3 frames not sent yet" in warning


@pytest.mark.anyio
async def test_bursts_up_to_the_bounds_lose_nothing_and_keep_order(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    consumer = _burst(max_queued_sends=8, max_queued_send_bytes=8 * 300)
    connection = _Connection()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(_serve, consumer.as_asgi(), connection)
            await connection.connect()
            # Eight 300-byte frames while the server takes none: both bounds exactly.
            connection.hold = anyio.Event()
            await connection.frame("8")
            await _in_thread(consumer.returned, "send() blocked the handler")
            connection.hold.set()
            await connection.wait_sent(9)
            # The queue drained before the next message: a full burst fits again,
            # and the close (never bounded) goes out after it.
            consumer.returned = threading.Event()
            consumer.close_after = True
            connection.hold = anyio.Event()
            await connection.frame("8")
            await _in_thread(consumer.returned, "send() blocked the handler")
            connection.hold.set()
            await connection.wait_sent(18)
            await connection.to_app.send({"type": "websocket.disconnect", "code": 1000})
    assert [_number(m) for m in connection.frames()] == [*range(8), *range(8)]
    assert connection.sent[-1] == {"type": "websocket.close"}
    assert consumer.outcomes == [None] * 17
    assert _warnings(caplog) == []


@pytest.mark.anyio
async def test_a_lone_frame_larger_than_the_byte_bound_is_sent(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    class Big(WebsocketConsumer):
        channel_layer_alias = None
        max_queued_send_bytes = 100

        def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
            self.send(bytes_data=bytes(10_000))

    connection = _Connection()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(_serve, Big.as_asgi(), connection)
            await connection.connect()
            await connection.frame("go")
            await connection.wait_sent(2)
            await connection.to_app.send({"type": "websocket.disconnect", "code": 1000})
    assert connection.sent[1] == {"type": "websocket.send", "bytes": bytes(10_000)}
    assert _warnings(caplog) == []


class Echo(WebsocketConsumer):
    channel_layer_alias = None

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        self.send(text_data=text_data)


@pytest.mark.anyio
async def test_a_stuck_client_never_blocks_the_other_sync_consumers(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Two clients whose server ``send`` never returns: one under the bounds (its
    frames and close wait for ever), one past them. Meanwhile another sync
    consumer echoes promptly and a new one completes its handshake."""
    under = _burst(close_after=True)
    past = _burst(max_queued_sends=4)
    stuck_under, stuck_past, echo = _Connection(), _Connection(), _Connection()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for consumer, connection in ((under, stuck_under), (past, stuck_past), (Echo, echo)):
                group.start_soon(_serve, consumer.as_asgi(), connection)
                await connection.connect()
            stuck_under.stuck = stuck_past.stuck = True
            await stuck_under.frame("50")
            await _in_thread(under.returned, "a send() to the stuck client blocked")
            await stuck_past.frame("50")
            await _in_thread(past.returned, "a send() to the stuck client blocked")
            assert len(_warnings(caplog)) == 1
            for number in range(20):
                with anyio.fail_after(1):
                    await echo.frame(f"echo {number}")
                    await echo.wait_sent(number + 2)
            latecomer = _Connection()
            group.start_soon(_serve, Echo.as_asgi(), latecomer)
            with anyio.fail_after(1):
                await latecomer.connect()
                await latecomer.frame("hello")
                await latecomer.wait_sent(2)
            for stuck in (stuck_under, stuck_past):
                assert [m["type"] for m in stuck.sent] == ["websocket.accept"]
            group.cancel_scope.cancel()
    assert [m["text"] for m in echo.frames()] == [f"echo {n}" for n in range(20)]
    assert latecomer.frames() == [{"type": "websocket.send", "text": "hello"}]


# -- a real server, a real client that stops reading ---------------------------

WORKER_CLASSES = ["asyncio", "uvloop", "trio"]
BURST_FRAMES, BURST_FRAME_SIZE = 160, 64 * 1024  # 10 MiB: past any socket buffer, under the bounds


class StuckClient:
    """A WebSocket client on a bare socket with a tiny receive buffer.

    It sends the handshake and one frame by hand, then reads nothing until
    the test says so; the server's writes to it stall once the kernel's
    buffers are full (a few MiB at most, against a 10 MiB burst).
    """

    def __init__(self, server_url: str, path: str) -> None:
        host, port = server_url.split("://", 1)[1].rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect(): the window advertised in the handshake stays small.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        self.buffer = bytearray()
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        accept = base64.b64encode(
            hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
        )
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"sec-websocket-accept: " + accept.lower() in head.lower(), head

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def unread(self) -> int:
        """Bytes the kernel holds for this socket that nobody has read."""
        count = bytearray(4)
        fcntl.ioctl(self.sock, termios.FIONREAD, count)
        return int.from_bytes(count, "little")

    def send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = bytes([0x80 | opcode, 0x80 | length])
        else:
            header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buffer += chunk

    def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._fill()
        taken = bytes(self.buffer[:count])
        del self.buffer[:count]
        return taken

    def read_frame(self) -> tuple[int, bytes]:
        """The next data or close frame from the server (never masked, never
        fragmented here); pings and pongs, should the server send any, are skipped."""
        while True:
            first, second = self._take(2)
            assert first & 0x80, "a fragmented frame"
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(self._take(2), "big")
            elif length == 127:
                length = int.from_bytes(self._take(8), "big")
            opcode, payload = first & 0x0F, self._take(length)
            if opcode not in (0x9, 0xA):
                return opcode, payload

    def close(self) -> None:
        self.sock.close()


def _timed_echoes(server: Server, rounds: int = 3, echoes: int = 5) -> list[float]:
    """Connect to the sync echo route ``rounds`` times and echo ``echoes`` frames each;
    every handshake and every echo must take under a second."""
    took: list[float] = []
    for round_number in range(rounds):
        started = time.monotonic()
        try:
            client = connect(server.ws_url + "/ws/sync-echo/", open_timeout=5, close_timeout=2)
        except TimeoutError:
            raise AssertionError(
                "a well-behaved client's handshake did not complete within 5 s while "
                "another client was not reading"
            ) from None
        took.append(time.monotonic() - started)
        with client:
            for number in range(echoes):
                started = time.monotonic()
                client.send(f"{round_number}.{number}")
                try:
                    assert client.recv(timeout=5) == f"{round_number}.{number}"
                except TimeoutError:
                    raise AssertionError(
                        "a well-behaved client's echo took over 5 s while another client "
                        "was not reading"
                    ) from None
                took.append(time.monotonic() - started)
    assert max(took) < 1.0, took
    return took


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_client_that_stops_reading_does_not_freeze_the_other_sync_consumers(
    worker_class: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.txt"
    server = Server(
        [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", "127.0.0.1:0", "-k", worker_class],
        log_path=tmp_path / "server.log",
        env=base_env(E2E_EVENTS_FILE=str(events)),
    )
    with ExitStack() as stack:
        stack.callback(server.close)
        server.start()
        request = f"{BURST_FRAMES} {BURST_FRAME_SIZE}".encode()

        # 10 MiB asked of a sync consumer by a client that then reads nothing.
        stuck = StuckClient(server.url, "/ws/sync-burst/")
        stack.callback(stuck.close)
        stuck.send_frame(0x1, request)
        wait_until(lambda: stuck.unread() > 0, message="the burst did not start")
        _timed_echoes(server)

        # The same from a route whose queue holds 256 KiB: that client is given up on.
        dropped = StuckClient(server.url, "/ws/sync-burst-small/")
        stack.callback(dropped.close)
        dropped.send_frame(0x1, request)
        server.wait_for_log(r"WARNING.*SyncBurstSmallQueueConsumer", timeout=10)
        _timed_echoes(server)

        # Nothing was lost for the first client, however long it did not read.
        numbers = []
        while True:
            opcode, payload = stuck.read_frame()
            assert opcode == 0x1, (opcode, payload[:100])
            if payload == b"done":
                break
            assert len(payload) == BURST_FRAME_SIZE
            numbers.append(int(payload[:8]))
        assert numbers == list(range(BURST_FRAMES))
        stuck.send_frame(0x8, (1000).to_bytes(2, "big"))
        assert stuck.read_frame() == (0x8, (1000).to_bytes(2, "big"))

        # The second got what was already on its way, in order, then 1013 and nothing else.
        numbers = []
        while True:
            opcode, payload = dropped.read_frame()
            if opcode == 0x8:
                break
            assert opcode == 0x1, (opcode, payload[:100])
            numbers.append(int(payload[:8]))
        assert int.from_bytes(payload[:2], "big") == 1013
        assert numbers == list(range(len(numbers)))
        assert len(numbers) < BURST_FRAMES
        dropped.send_frame(0x8, (1013).to_bytes(2, "big"))

        # Both consumers then got their websocket.disconnect as usual (with the code
        # the server reports; that is Hypercorn's business, not this test's).
        def disconnected() -> set[str]:
            return {line.rsplit(" ", 1)[0] for line in read_events(events)}

        wait_until(
            lambda: {"disconnect sync-burst", "disconnect sync-burst-small"} <= disconnected(),
            message="a burst consumer did not get its websocket.disconnect",
        )
        log = server.log()
        warnings = [line for line in log.splitlines() if "SyncBurstSmallQueueConsumer" in line]
        assert len(warnings) == 1, log
        assert f"client 127.0.0.1:{dropped.port} " in warnings[0], warnings
        assert "max_queued_send_bytes=262144" in warnings[0], warnings
        assert "Traceback" not in log, log
