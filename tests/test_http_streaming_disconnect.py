"""A client that leaves while AsyncHttpConsumer.handle() streams cancels handle().

First the consumer alone, through the testing communicators, on every anyio
backend; then real ``channels-runtime serve`` processes on every worker class,
with raw sockets as clients that leave mid-stream (a FIN, or a reset). The
server-side consumers are in ``tests/e2e_app/asgi.py`` (``sse/``,
``sse-unwatched/``, ``poll/<name>/``); their ``disconnect()`` records what
happened, with wall-clock times, in the events file the test reads.

Each scenario's checks live in one helper, and a consumer with Channels 4.2's
``http_request()`` (the behaviour before the fix) is run through the same
helper to show that it fails there.
"""

from __future__ import annotations

import re
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from e2e_app.harness import Server, base_env, cli_command, read_events, wait_until
from websockets.sync.client import connect

from channels_runtime.compat.hypercorn_fixes import DISABLE_VARIABLE
from channels_runtime.exceptions import StopConsumer
from channels_runtime.generic import http as http_module
from channels_runtime.generic.http import AsyncHttpConsumer
from channels_runtime.layers import get_channel_layer
from channels_runtime.testing import ApplicationCommunicator, HttpCommunicator

WORKER_CLASSES = ["asyncio", "uvloop", "trio"]
ASYNCIO_DEAD_SOCKET_WARNING = "socket.send() raised exception."


def http_scope(method: str = "GET", path: str = "/events/") -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
    }


# -- the consumer alone ------------------------------------------------------------


class Ticker(AsyncHttpConsumer):
    """Streams a chunk every ``interval`` seconds, ``chunks`` times, recording what happened."""

    channel_layer_alias = None
    chunks = 200
    interval = 0.01
    log: list[tuple[str, float, int]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent = 0

    async def handle(self, body: bytes) -> None:
        await self.send_headers(headers=[(b"content-type", b"text/event-stream")])
        try:
            for number in range(self.chunks):
                await self.send_body(f"data: {number}\n\n".encode(), more_body=True)
                self.sent += 1
                await anyio.sleep(self.interval)
        except anyio.get_cancelled_exc_class():
            self.log.append(("cancelled", anyio.current_time(), self.sent))
            raise
        await self.send_body(b"data: end\n\n")
        self.log.append(("finished", anyio.current_time(), self.sent))

    async def disconnect(self) -> None:
        self.log.append(("disconnect", anyio.current_time(), self.sent))


class ChannelsTicker(Ticker):
    """The same stream with Channels 4.2's http_request(): nobody listens to the client."""

    async def http_request(self, message: dict[str, Any]) -> None:
        self.body.append(message.get("body", b""))
        if not message.get("more_body", False):
            try:
                await self.handle(b"".join(self.body))
            finally:
                await self.disconnect()
            raise StopConsumer()


@dataclass
class Departure:
    """What a consumer did after its client left part way through a stream."""

    left_at: float
    received: int
    log: list[tuple[str, float, int]]
    ended_within: float


async def leave_mid_stream(consumer: type[Ticker], after_chunks: int = 3) -> Departure:
    """Read ``after_chunks`` chunks of the stream, then send ``http.disconnect``."""

    class Recorded(consumer):  # type: ignore[valid-type,misc]
        log = []

    comm = ApplicationCommunicator(Recorded.as_asgi(), http_scope())
    await comm.send_input({"type": "http.request", "body": b""})
    assert (await comm.receive_output())["type"] == "http.response.start"
    for _ in range(after_chunks):
        assert (await comm.receive_output())["more_body"] is True
    left_at = anyio.current_time()
    await comm.send_input({"type": "http.disconnect"})
    # wait() cancels the consumer only after its timeout: returning sooner means it ended.
    await comm.wait(timeout=3)
    ended_within = anyio.current_time() - left_at
    return Departure(left_at, after_chunks, Recorded.log, ended_within)


def assert_noticed(departure: Departure) -> None:
    """handle() was cancelled at once, disconnect() ran once and the consumer ended."""
    events = [event for event, _, _ in departure.log]
    assert events == ["cancelled", "disconnect"], departure.log
    _, cancelled_at, sent = departure.log[0]
    assert cancelled_at - departure.left_at < 1.0, departure
    assert departure.ended_within < 1.0, departure
    # The chunk on its way when the client left, and one more if the loop was held up.
    assert sent <= departure.received + 2, departure


@pytest.mark.anyio
async def test_leaving_mid_stream_cancels_handle() -> None:
    assert_noticed(await leave_mid_stream(Ticker))


@pytest.mark.anyio
async def test_the_checks_fail_with_channels_semantics() -> None:
    """Without the watching, handle() streams to its end: the same checks must fail."""

    class Short(ChannelsTicker):
        chunks = 30  # 0.3 s, so this test stays short

    departure = await leave_mid_stream(Short)
    assert [event for event, _, _ in departure.log] == ["finished", "disconnect"]
    assert departure.log[0][2] == 30
    with pytest.raises(AssertionError):
        assert_noticed(departure)


@pytest.mark.anyio
async def test_leaving_before_the_first_chunk_is_noticed_at_the_first_chunk() -> None:
    """A disconnect already queued when streaming starts stops handle() straight away."""
    log: list[str] = []

    class Late(AsyncHttpConsumer):
        channel_layer_alias = None

        async def handle(self, body: bytes) -> None:
            await anyio.sleep(0.05)  # the client leaves meanwhile; nothing is watched yet
            log.append("streaming")
            await self.send_headers()
            try:
                await self.send_body(b"first", more_body=True)
                await anyio.sleep(5)
            except anyio.get_cancelled_exc_class():
                log.append("cancelled")
                raise

        async def disconnect(self) -> None:
            log.append("disconnect")

    comm = ApplicationCommunicator(Late.as_asgi(), http_scope())
    await comm.send_input({"type": "http.request", "body": b""})
    await comm.send_input({"type": "http.disconnect"})
    started = anyio.current_time()
    await comm.wait(timeout=2)
    assert anyio.current_time() - started < 1.0
    assert log == ["streaming", "cancelled", "disconnect"]


@pytest.mark.anyio
async def test_disconnect_after_the_complete_response_does_not_cancel_handle() -> None:
    """The server's http.disconnect after the last chunk is not a client leaving."""
    log: list[str] = []

    class Finisher(AsyncHttpConsumer):
        channel_layer_alias = None

        async def handle(self, body: bytes) -> None:
            await self.send_headers()
            await self.send_body(b"part 1, ", more_body=True)
            await self.send_body(b"part 2")
            await anyio.sleep(0.1)  # work after the response, as Channels allows
            log.append("handle finished")

        async def disconnect(self) -> None:
            log.append("disconnect")

    response = await HttpCommunicator(Finisher.as_asgi(), "GET", "/").get_response()
    assert response["body"] == b"part 1, part 2"
    assert log == ["handle finished", "disconnect"]


@pytest.mark.anyio
async def test_a_one_piece_response_starts_no_watcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path: a response sent in one go never starts the watcher task."""
    started: list[str] = []
    real_start = http_module.start_background_task

    def counting_start(*args: Any, **kwargs: Any) -> Any:
        started.append(kwargs.get("name", "?"))
        return real_start(*args, **kwargs)

    monkeypatch.setattr(http_module, "start_background_task", counting_start)

    class OnePiece(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            await self.send_response(200, b"ok")

    class Streaming(Ticker):
        chunks = 3
        log = []

    assert (await HttpCommunicator(OnePiece.as_asgi(), "GET", "/").get_response())["body"] == b"ok"
    assert started == []
    response = await HttpCommunicator(Streaming.as_asgi(), "GET", "/").get_response()
    assert response["body"] == b"data: 0\n\ndata: 1\n\ndata: 2\n\ndata: end\n\n"
    assert len(started) == 1  # one watcher per streamed response, not one per chunk
    assert started[0].endswith("Streaming client watcher")


@pytest.mark.anyio
async def test_long_poll_on_its_own_inbox_is_cancelled_and_cleans_up() -> None:
    """The long-poll pattern with a channel layer: leaving cancels the wait on the inbox."""
    layer = get_channel_layer()
    log: list[str] = []

    class LongPoll(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            self.inbox = await self.channel_layer.new_channel()
            await self.channel_layer.group_add("poll-news", self.inbox)
            await self.send_headers()
            await self.send_body(b"", more_body=True)
            try:
                event = await self.channel_layer.receive(self.inbox)
            except anyio.get_cancelled_exc_class():
                log.append("cancelled")
                raise
            await self.send_body(event["text"].encode())

        async def disconnect(self) -> None:
            await self.channel_layer.group_discard("poll-news", self.inbox)
            log.append("discarded")

    # A poll that gets its answer...
    answered = ApplicationCommunicator(LongPoll.as_asgi(), http_scope())
    await answered.send_input({"type": "http.request", "body": b""})
    assert (await answered.receive_output())["type"] == "http.response.start"
    assert (await answered.receive_output())["more_body"] is True
    await layer.group_send("poll-news", {"type": "news", "text": "hello"})
    assert (await answered.receive_output())["body"] == b"hello"
    await answered.wait()
    assert log == ["discarded"]

    # ...and one whose client gives up first.
    abandoned = ApplicationCommunicator(LongPoll.as_asgi(), http_scope())
    await abandoned.send_input({"type": "http.request", "body": b""})
    assert (await abandoned.receive_output())["type"] == "http.response.start"
    assert (await abandoned.receive_output())["more_body"] is True
    await abandoned.send_input({"type": "http.disconnect"})
    left_at = anyio.current_time()
    await abandoned.wait(timeout=3)  # it would cancel the consumer only after 3 s
    assert anyio.current_time() - left_at < 1.0
    assert log == ["discarded", "cancelled", "discarded"]
    await layer.group_send("poll-news", {"type": "news", "text": "nobody listens"})
    assert await abandoned.receive_nothing()


@pytest.mark.anyio
async def test_layer_messages_are_still_dispatched_to_their_handlers() -> None:
    """A layer message (here between two request chunks) reaches its handler and can send."""
    layer = get_channel_layer()
    names: list[str] = []
    named = anyio.Event()

    class Chat(AsyncHttpConsumer):
        async def http_request(self, message: dict[str, Any]) -> None:
            names.append(self.channel_name)
            named.set()
            await super().http_request(message)

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send_headers()
            await self.send_body(event["text"].encode(), more_body=True)

        async def handle(self, body: bytes) -> None:
            await self.send_body(b" and " + body, more_body=True)
            await anyio.sleep(0.01)
            await self.send_body(b"")

    comm = ApplicationCommunicator(Chat.as_asgi(), http_scope("POST"))
    await comm.send_input({"type": "http.request", "body": b"the ", "more_body": True})
    with anyio.fail_after(1):
        await named.wait()
    await layer.send(names[0], {"type": "chat.message", "text": "from the layer"})
    assert (await comm.receive_output())["type"] == "http.response.start"
    assert (await comm.receive_output())["body"] == b"from the layer"
    await comm.send_input({"type": "http.request", "body": b"body"})
    assert (await comm.receive_output())["body"] == b" and the body"
    assert (await comm.receive_output())["more_body"] is False
    await comm.wait()


@pytest.mark.anyio
async def test_handle_errors_while_streaming_are_raised_unwrapped() -> None:
    log: list[str] = []

    class Broken(AsyncHttpConsumer):
        channel_layer_alias = None

        async def handle(self, body: bytes) -> None:
            await self.send_headers()
            await self.send_body(b"so far so good", more_body=True)
            await anyio.sleep(0.01)
            raise LookupError("no such row")

        async def disconnect(self) -> None:
            log.append("disconnect")

    comm = ApplicationCommunicator(Broken.as_asgi(), http_scope())
    await comm.send_input({"type": "http.request", "body": b""})
    with pytest.raises(LookupError, match="no such row"):
        await comm.wait()
    assert log == ["disconnect"]


@pytest.mark.anyio
async def test_a_failing_receive_stops_handle_and_is_raised() -> None:
    """If the client can no longer be read, handle() stops and the error is the consumer's."""
    log: list[str] = []
    calls = 0

    async def receive() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": b""}
        await anyio.sleep(0.02)
        raise ConnectionResetError("the middleware lost the client")

    async def send(message: dict[str, Any]) -> None:
        pass

    class Stream(AsyncHttpConsumer):
        channel_layer_alias = None

        async def handle(self, body: bytes) -> None:
            await self.send_headers()
            await self.send_body(b"", more_body=True)
            try:
                await anyio.sleep(5)
            except anyio.get_cancelled_exc_class():
                log.append("cancelled")
                raise

        async def disconnect(self) -> None:
            log.append("disconnect")

    with anyio.fail_after(2), pytest.raises(ConnectionResetError, match="lost the client"):
        await Stream.as_asgi()(http_scope(), receive, send)
    assert log == ["cancelled", "disconnect"]


# -- real servers, real sockets ------------------------------------------------------


@dataclass
class Served:
    server: Server
    events: Path
    worker_class: str

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)


def start_server(tmp_path: Path, worker_class: str, **env: str) -> Served:
    events = tmp_path / "events.txt"
    server = Server(
        [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", "127.0.0.1:0", "-k", worker_class],
        log_path=tmp_path / "server.log",
        env=base_env(E2E_EVENTS_FILE=str(events), **env),
    )
    try:
        server.start()
    except BaseException:
        server.close()
        raise
    return Served(server, events, worker_class)


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One server per worker class for the whole module (each test uses its own tags)."""
    worker_class = str(request.param)
    running = start_server(tmp_path_factory.mktemp(f"serve-{worker_class}"), worker_class)
    try:
        yield running
    finally:
        running.server.close()


class LogSince:
    """The part of a server's log written after this point."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.offset = len(server.log())

    def text(self) -> str:
        return self.server.log()[self.offset :]

    def assert_clean(self) -> None:
        text = self.text()
        assert ASYNCIO_DEAD_SOCKET_WARNING not in text, text
        assert "Traceback" not in text, text
        assert "Error in ASGI" not in text, text


def open_stream(served: Served, path: str, events: int) -> socket.socket:
    """GET ``path`` on a raw socket and read until ``events`` server-sent events arrived."""
    sock = socket.create_connection(served.address, timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = b""
    while f"data: {events - 1}\n\n".encode() not in received:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the stream early: {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received
    return sock


def leave(sock: socket.socket, how: str) -> float:
    """Go away, with a FIN (``close``) or a reset (``reset``); return when, wall-clock."""
    if how == "reset":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    left_at = time.time()
    sock.close()
    return left_at


_SSE_LINE = re.compile(r"(?P<kind>\S+) (?P<tag>\S+) sent=(\d+) cancelled=(\S+) at=(\S+)")


@dataclass
class Outcome:
    """One line recorded by the ``sse/`` consumers' disconnect()."""

    sent: int
    cancelled_at: float | None
    disconnected_at: float
    lines: int


def sse_outcome(served: Served, kind: str, tag: str, timeout: float = 10.0) -> Outcome:
    def lines() -> list[re.Match[str]]:
        found = (_SSE_LINE.fullmatch(line) for line in read_events(served.events))
        return [m for m in found if m and m["kind"] == kind and m["tag"] == tag]

    wait_until(lambda: bool(lines()), timeout, f"disconnect() of {kind} {tag} never ran")
    time.sleep(0.2)  # a second disconnect() would be recorded right after the first
    found = lines()
    first = found[0]
    cancelled = None if first[4] == "-" else float(first[4])
    return Outcome(int(first[3]), cancelled, float(first[5]), len(found))


def assert_left_promptly(outcome: Outcome, left_at: float, received: int, interval: float) -> None:
    """handle() was cancelled and disconnect() ran, once, within 1 s of the client leaving."""
    assert outcome.cancelled_at is not None, f"handle() was not cancelled: {outcome}"
    assert outcome.cancelled_at - left_at < 1.0, outcome
    assert outcome.disconnected_at - left_at < 1.0, outcome
    assert outcome.lines == 1, outcome
    # Fewer chunks after the client left than one second of streaming would make.
    assert (outcome.sent - received) * interval < 1.0, outcome


def still_serving(served: Served, tag: str) -> None:
    """The next requests work: a plain one, and a whole stream that is not cancelled."""
    assert httpx.get(served.server.url + "/health/", timeout=5).status_code == 200
    response = httpx.get(served.server.url + f"/sse/?tag={tag}&chunks=3&interval=0.01", timeout=5)
    assert response.status_code == 200
    assert response.text == "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: end\n\n"
    after = sse_outcome(served, "sse", tag)
    assert (after.sent, after.cancelled_at, after.lines) == (3, None, 1)


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_leaving_an_event_stream_cancels_handle(served: Served, how: str) -> None:
    log = LogSince(served.server)
    tag = f"leave-{how}"
    interval = 0.05
    sock = open_stream(served, f"/sse/?tag={tag}&interval={interval}", events=3)
    left_at = leave(sock, how)
    outcome = sse_outcome(served, "sse", tag)
    assert_left_promptly(outcome, left_at, received=3, interval=interval)
    still_serving(served, f"{tag}-next")
    log.assert_clean()


def test_the_checks_fail_without_the_watching(served: Served) -> None:
    """Channels 4.2's http_request() streams on after the client left: the checks catch it."""
    tag = "unwatched"
    interval = 0.05
    sock = open_stream(served, f"/sse-unwatched/?tag={tag}&chunks=30&interval={interval}", 3)
    left_at = leave(sock, "close")
    outcome = sse_outcome(served, "sse-unwatched", tag)
    assert (outcome.sent, outcome.cancelled_at) == (30, None)
    assert outcome.disconnected_at - left_at > 1.0
    with pytest.raises(AssertionError):
        assert_left_promptly(outcome, left_at, received=3, interval=interval)
    still_serving(served, f"{tag}-next")


def test_a_client_leaving_before_the_body_is_complete_still_gets_disconnect(
    served: Served,
) -> None:
    log = LogSince(served.server)
    sock = socket.create_connection(served.address, timeout=10)
    sock.sendall(
        b"POST /sse/?tag=early HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n"
        + b"x" * 10
    )
    time.sleep(0.2)
    left_at = leave(sock, "close")
    outcome = sse_outcome(served, "sse", "early")
    assert (outcome.sent, outcome.cancelled_at, outcome.lines) == (0, None, 1)
    assert outcome.disconnected_at - left_at < 1.0
    still_serving(served, "early-next")
    log.assert_clean()


def _read_headers(sock: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, received
        received += chunk
    return received


def test_a_long_poll_with_a_channel_layer_is_cancelled_and_the_next_one_answered(
    served: Served,
) -> None:
    log = LogSince(served.server)
    name = f"lp{served.worker_class}"

    def discarded() -> list[str]:
        return [line for line in read_events(served.events) if line.startswith(f"poll {name} ")]

    abandoned = socket.create_connection(served.address, timeout=10)
    abandoned.sendall(f"GET /poll/{name}/ HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    assert _read_headers(abandoned).startswith(b"HTTP/1.1 200")
    left_at = leave(abandoned, "close")
    wait_until(lambda: bool(discarded()), 10, "the abandoned poll's disconnect() never ran")
    first = discarded()[0]
    assert " cancelled=yes " in first, first
    assert float(first.rsplit("at=", 1)[1]) - left_at < 1.0, first

    # The next poll is answered by a group message, sent from a WebSocket consumer.
    waiting = socket.create_connection(served.address, timeout=10)
    with waiting:
        waiting.sendall(f"GET /poll/{name}/ HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        received = _read_headers(waiting)
        with connect(served.server.ws_url + f"/ws/room/{name}/", open_timeout=10) as room:
            assert room.recv(timeout=5) == "joined"
            room.send("news for the poll")
            assert room.recv(timeout=5) == "news for the poll"
        while not received.endswith(b"0\r\n\r\n"):
            chunk = waiting.recv(65536)
            assert chunk, received
            received += chunk
    assert b"news for the poll" in received
    wait_until(lambda: len(discarded()) == 2, 10, "the answered poll's disconnect() never ran")
    assert " cancelled=no " in discarded()[1]
    log.assert_clean()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_no_dead_socket_warnings_even_on_plain_hypercorn(worker_class: str, tmp_path: Path) -> None:
    """With channels-runtime's Hypercorn fixes off, the cancellation alone keeps the log clean.

    The unwatched stream shows what the report was about: on asyncio, one
    ``socket.send() raised exception.`` per chunk written after the client left.
    """
    plain = start_server(tmp_path, worker_class, **{DISABLE_VARIABLE: "0"})
    try:
        log = LogSince(plain.server)
        interval = 0.02
        sock = open_stream(plain, f"/sse/?tag=plain&interval={interval}", events=3)
        left_at = leave(sock, "close")
        assert_left_promptly(sse_outcome(plain, "sse", "plain"), left_at, 3, interval)
        log.assert_clean()

        path = f"/sse-unwatched/?tag=plain&chunks=60&interval={interval}"
        leave(open_stream(plain, path, events=3), "close")
        unwatched = sse_outcome(plain, "sse-unwatched", "plain")
        assert (unwatched.sent, unwatched.cancelled_at) == (60, None)
        warnings = log.text().count(ASYNCIO_DEAD_SOCKET_WARNING)
        if worker_class == "asyncio":
            assert warnings > 20, log.text()
        else:
            assert warnings == 0, log.text()
    finally:
        plain.server.close()
