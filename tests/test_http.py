"""channels_runtime.http: Django's HTTP stack on asyncio, uvloop and trio.

Views, middleware and instruments live in ``tests/http_urls.py``. Most tests talk
to the application through the communicators; the last ones run it under
Hypercorn and talk to it over real sockets with httpx.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import hypercorn_serve
import pytest
from django.core import signals
from django.core.exceptions import ImproperlyConfigured
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.handlers.asgi import ASGIHandler
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.test.utils import override_settings
from http_urls import PROBES, TEST_MIDDLEWARE, Probe

from channels_runtime.http import (
    DjangoHandler,
    HttpApplication,
    check_http_application,
    get_asgi_application,
)
from channels_runtime.routing import ProtocolTypeRouter
from channels_runtime.sync import sync_to_async
from channels_runtime.testing import ApplicationCommunicator, HttpCommunicator

Backend = tuple[str, dict[str, object]]


@pytest.fixture
def urls() -> Iterator[None]:
    with override_settings(ROOT_URLCONF="http_urls", MIDDLEWARE=TEST_MIDDLEWARE):
        yield


@pytest.fixture
def app(urls: None) -> HttpApplication:
    return HttpApplication()


@pytest.fixture
def probe() -> Iterator[tuple[str, Probe]]:
    key = uuid.uuid4().hex
    instruments = PROBES[key] = Probe()
    try:
        yield key, instruments
    finally:
        instruments.gate.set()  # never leave a worker thread waiting on a gate
        del PROBES[key]


@pytest.fixture
def signal_threads(probe: tuple[str, Probe]) -> Iterator[dict[str, Any]]:
    """Record the sender and thread of request_started / request_finished."""
    seen: dict[str, Any] = {}

    def started(sender: object, **kwargs: Any) -> None:
        seen["started"] = threading.get_ident()
        seen["sender"] = sender
        seen["scope"] = kwargs.get("scope")

    def finished(sender: object, **kwargs: Any) -> None:
        seen["finished"] = threading.get_ident()

    signals.request_started.connect(started)
    signals.request_finished.connect(finished)
    try:
        yield seen
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)


def backend_name(anyio_backend: Backend) -> str:
    return anyio_backend[0]


async def wait_until(predicate: Callable[[], bool], within: float = 2.0) -> None:
    """Poll ``predicate``: it reads state that worker threads change, so no anyio.Event."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.005)


def header(response: dict[str, Any], name: bytes) -> bytes | None:
    for key, value in response["headers"]:
        if key.lower() == name.lower():
            return bytes(value)
    return None


async def body_message(comm: ApplicationCommunicator) -> dict[str, Any]:
    message = await comm.receive_output(2)
    assert message["type"] == "http.response.body", message
    return message


async def start_request(comm: HttpCommunicator) -> dict[str, Any]:
    await comm.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await comm.receive_output(2)
    assert start["type"] == "http.response.start", start
    return start


# -- views, middleware, signals ----------------------------------------------------------


@pytest.mark.anyio
async def test_sync_view_signals_and_middleware_share_the_request_thread(
    app: HttpApplication,
    probe: tuple[str, Probe],
    signal_threads: dict[str, Any],
    anyio_backend: Backend,
) -> None:
    key, instruments = probe
    response = await HttpCommunicator(app, "GET", f"/hello/?key={key}").get_response()
    assert response["status"] == 200
    assert response["body"] == b"hello sync"
    assert header(response, b"Set-Cookie") == b"flavour=sync; Path=/"
    view_thread = instruments.threads["view"]
    assert view_thread != threading.get_ident()
    # request_started, the sync middleware, the view and request_finished: one thread,
    # even with an async-only middleware in between (it ran on this very event loop).
    assert signal_threads["started"] == view_thread
    assert signal_threads["finished"] == view_thread
    assert header(response, b"X-Sync-Middleware") == str(view_thread).encode()
    assert header(response, b"X-Async-Middleware") == backend_name(anyio_backend).encode()
    assert signal_threads["sender"] is DjangoHandler
    assert signal_threads["scope"]["path"] == "/hello/"


@pytest.mark.anyio
async def test_async_view_runs_on_the_event_loop(
    app: HttpApplication,
    probe: tuple[str, Probe],
    signal_threads: dict[str, Any],
    anyio_backend: Backend,
) -> None:
    key, instruments = probe
    response = await HttpCommunicator(app, "GET", f"/ahello/?key={key}").get_response()
    assert response["status"] == 200
    assert response["body"] == f"hello {backend_name(anyio_backend)}".encode()
    assert instruments.threads["view"] == threading.get_ident()
    # The sync parts (signal receivers, sync-only middleware) share the request's own
    # thread, as with Django's ASGIHandler; it is not the event loop's.
    request_thread = signal_threads["started"]
    assert request_thread != threading.get_ident()
    assert signal_threads["finished"] == request_thread
    assert header(response, b"X-Sync-Middleware") == str(request_thread).encode()
    assert header(response, b"X-Async-Middleware") == backend_name(anyio_backend).encode()


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/boom/", "/aboom/"])
async def test_view_error_gives_djangos_500(
    app: HttpApplication, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = await HttpCommunicator(app, "GET", path).get_response()
    assert response["status"] == 500
    assert b"Server Error (500)" in response["body"]
    assert any(
        record.getMessage() == f"Internal Server Error: {path}" and record.exc_info
        for record in caplog.records
    )


@pytest.mark.anyio
async def test_not_found_and_bad_query_string(app: HttpApplication) -> None:
    response = await HttpCommunicator(app, "GET", "/nowhere/").get_response()
    assert response["status"] == 404
    comm = HttpCommunicator(app, "GET", "/hello/")
    comm.scope["query_string"] = b"a=\xff"
    assert (await comm.get_response())["status"] == 400


# -- request bodies ------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/echo/", "/aecho/"])
async def test_request_body_limit(app: HttpApplication, path: str) -> None:
    body = os.urandom(1000)
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000):
        response = await HttpCommunicator(app, "POST", path, body=body).get_response()
        assert response["status"] == 200
        assert json.loads(response["body"]) == {
            "length": 1000,
            "sha256": hashlib.sha256(body).hexdigest(),
        }
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=999):
        response = await HttpCommunicator(app, "POST", path, body=body).get_response()
    # RequestDataTooBig, turned into a 400 by Django's exception handling.
    assert response["status"] == 400


@pytest.mark.anyio
async def test_body_in_several_messages_spools_to_disk(app: HttpApplication) -> None:
    parts = [os.urandom(700) for _ in range(3)]
    with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=1000):
        async with ApplicationCommunicator(
            app, HttpCommunicator(app, "POST", "/echo/").scope
        ) as comm:
            for index, part in enumerate(parts):
                await comm.send_input(
                    {"type": "http.request", "body": part, "more_body": index < 2}
                )
            start = await comm.receive_output(2)
            body = await body_message(comm)
    assert start["status"] == 200
    whole = b"".join(parts)
    assert json.loads(body["body"]) == {
        "length": len(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
    }


@pytest.mark.anyio
async def test_client_leaving_during_the_body_ends_the_request_quietly(
    app: HttpApplication, signal_threads: dict[str, Any]
) -> None:
    async with ApplicationCommunicator(app, HttpCommunicator(app, "POST", "/echo/").scope) as comm:
        await comm.send_input({"type": "http.request", "body": b"abc", "more_body": True})
        await comm.send_input({"type": "http.disconnect"})
        await comm.wait(2)
        assert await comm.receive_nothing(0)
    assert "started" not in signal_threads


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("memory_limit", "stored_as"),
    [(10_000, "InMemoryUploadedFile"), (1000, "TemporaryUploadedFile")],
)
async def test_file_upload(app: HttpApplication, memory_limit: int, stored_as: str) -> None:
    content = os.urandom(5000)
    body = encode_multipart(
        BOUNDARY,
        {"field": "value", "file": SimpleUploadedFile("report.bin", content)},
    )
    headers = [
        (b"content-type", MULTIPART_CONTENT.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=memory_limit):
        response = await HttpCommunicator(
            app, "POST", "/upload/", body=body, headers=headers
        ).get_response()
    assert response["status"] == 200, response["body"]
    assert json.loads(response["body"]) == {
        "field": "value",
        "name": "report.bin",
        "size": 5000,
        "class": stored_as,
        "sha256": hashlib.sha256(content).hexdigest(),
    }


# -- script prefix, files ------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/where/", "/awhere/"])
async def test_root_path_sets_the_script_prefix(app: HttpApplication, path: str) -> None:
    comm = HttpCommunicator(app, "GET", f"/prefix{path}")
    comm.scope["root_path"] = "/prefix"
    comm.scope["server"] = ("example.com", 80)
    comm.scope["headers"] = [(b"host", b"testserver")]
    info = json.loads((await comm.get_response())["body"])
    assert info == {
        "path": f"/prefix{path}",
        "path_info": path,
        "script_name": "/prefix",
        "reverse": "/prefix/where/",
        "absolute": f"http://testserver/prefix{path}",
    }
    # The prefix belongs to that request only.
    comm = HttpCommunicator(app, "GET", path, headers=[(b"host", b"testserver")])
    info = json.loads((await comm.get_response())["body"])
    assert (info["path"], info["script_name"], info["reverse"]) == (path, "", "/where/")


@pytest.mark.anyio
async def test_file_response_is_sent_in_blocks(
    app: HttpApplication, probe: tuple[str, Probe], tmp_path: Path
) -> None:
    key, instruments = probe
    content = os.urandom(200_000)
    file_path = tmp_path / "data.bin"
    file_path.write_bytes(content)
    instruments.file_path = str(file_path)
    async with HttpCommunicator(app, "GET", f"/file/?key={key}") as comm:
        start = await start_request(comm)
        chunks: list[bytes] = []
        while True:
            message = await body_message(comm)
            chunks.append(message["body"])
            if not message.get("more_body"):
                break
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"Content-Length"] == b"200000"
    assert headers[b"Content-Disposition"] == b'attachment; filename="data.bin"'
    assert b"".join(chunks) == content
    assert len([chunk for chunk in chunks if chunk]) == 4  # 64 KiB blocks


# -- streaming -----------------------------------------------------------------------------

STREAM_PATHS = [
    pytest.param("/stream/", id="sync-view-sync-iterator"),
    pytest.param("/astream-sync/", id="async-view-sync-iterator"),
    pytest.param("/astream/", id="async-view-async-iterator"),
    pytest.param("/stream-async-from-sync/", id="sync-view-async-iterator"),
]

ENDLESS_PATHS = [
    pytest.param("/endless/", id="sync-view-sync-iterator"),
    pytest.param("/aendless-sync/", id="async-view-sync-iterator"),
    pytest.param("/aendless/", id="async-view-async-iterator"),
    pytest.param("/endless-async-from-sync/", id="sync-view-async-iterator"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("path", STREAM_PATHS)
async def test_streaming_is_chunk_by_chunk(
    app: HttpApplication, probe: tuple[str, Probe], path: str
) -> None:
    key, instruments = probe
    instruments.agate = anyio.Event()
    async with HttpCommunicator(app, "GET", f"{path}?key={key}") as comm:
        start = await start_request(comm)
        assert start["status"] == 200
        first = await body_message(comm)
        assert (first["body"], first["more_body"]) == (b"first;", True)
        # The generator is stuck before its second chunk, yet the first is here.
        assert instruments.produced == 1
        assert await comm.receive_nothing(0.05)
        instruments.gate.set()
        instruments.agate.set()
        rest = [await body_message(comm) for _ in range(3)]
        assert [m["body"] for m in rest] == [b"second;", b"third", b""]
        assert [m.get("more_body", False) for m in rest] == [True, True, False]
        await comm.send_input({"type": "http.disconnect"})
        await comm.wait(2)
    assert instruments.closed.is_set()


@pytest.mark.anyio
@pytest.mark.parametrize("path", ENDLESS_PATHS)
async def test_client_disconnect_closes_the_stream(
    app: HttpApplication, probe: tuple[str, Probe], path: str, signal_threads: dict[str, Any]
) -> None:
    key, instruments = probe
    async with HttpCommunicator(app, "GET", f"{path}?key={key}") as comm:
        await start_request(comm)
        await body_message(comm)
        await body_message(comm)
        await comm.send_input({"type": "http.disconnect"})
        await wait_until(instruments.closed.is_set, within=1)
        await comm.wait(1)
    produced = instruments.produced
    await anyio.sleep(0.05)
    assert instruments.produced == produced
    assert "finished" in signal_threads


@pytest.mark.anyio
@pytest.mark.parametrize("path", ENDLESS_PATHS)
async def test_cancelling_the_application_closes_the_stream_first(
    app: HttpApplication, probe: tuple[str, Probe], path: str
) -> None:
    key, instruments = probe
    async with HttpCommunicator(app, "GET", f"{path}?key={key}") as comm:
        await start_request(comm)
        await body_message(comm)
    # Leaving the block cancelled the application and waited for it: the generator
    # was closed before that, whichever thread or task was running it.
    assert instruments.closed.is_set()


@pytest.mark.anyio
async def test_cancelling_during_a_sync_view_waits_for_its_thread(
    app: HttpApplication, probe: tuple[str, Probe], signal_threads: dict[str, Any]
) -> None:
    key, instruments = probe
    async with HttpCommunicator(app, "GET", f"/slow/?key={key}&seconds=0.2") as comm:
        await comm.send_input({"type": "http.request", "body": b""})
        await wait_until(lambda: instruments.running == 1)
    assert instruments.finished.is_set()
    assert signal_threads["finished"] == signal_threads["started"]


# -- thread capacity -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_http_threads_are_capped_and_leave_consumers_alone(
    urls: None, probe: tuple[str, Probe]
) -> None:
    key, instruments = probe
    app = HttpApplication(max_threads=2)
    assert app.capacity_limiter().total_tokens == 2
    statuses: list[int] = []

    async def request() -> None:
        response = await HttpCommunicator(app, "GET", f"/slow/?key={key}").get_response(3)
        statuses.append(response["status"])

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(request)
        # Both HTTP threads are stuck in views until the gate opens; the third waits.
        await wait_until(lambda: instruments.running == 2)
        # Consumer-style sync work runs on the thread-sensitive thread meanwhile: it
        # would never finish if it needed one of the HTTP threads.
        with anyio.fail_after(1):
            await sync_to_async(threading.get_ident)()
        await anyio.sleep(0.02)
        assert (instruments.running, statuses) == (2, [])
        instruments.gate.set()
    assert statuses == [200] * 3
    assert instruments.most_running == 2


@pytest.mark.anyio
async def test_waiting_for_a_thread_can_be_cancelled(urls: None, probe: tuple[str, Probe]) -> None:
    key, instruments = probe
    app = HttpApplication(max_threads=1)
    async with HttpCommunicator(app, "GET", f"/slow/?key={key}") as busy:
        await busy.send_input({"type": "http.request", "body": b""})
        await wait_until(lambda: instruments.running == 1)
        # Cancelled while it queues for the only thread, which stays busy until the gate
        # opens: leaving the block must not wait for a thread.
        with anyio.fail_after(1):
            async with HttpCommunicator(app, "GET", "/hello/") as waiting:
                await waiting.send_input({"type": "http.request", "body": b""})
                assert await waiting.receive_nothing(0.05)
        assert instruments.running == 1
        instruments.gate.set()
        start = await busy.receive_output(2)
        assert start["status"] == 200


@pytest.mark.anyio
async def test_client_leaving_while_queued_for_a_thread_skips_the_request(
    urls: None, probe: tuple[str, Probe], signal_threads: dict[str, Any]
) -> None:
    key, instruments = probe
    app = HttpApplication(max_threads=1)
    other_key = uuid.uuid4().hex
    other = PROBES[other_key] = Probe()
    try:
        async with HttpCommunicator(app, "GET", f"/slow/?key={key}") as busy:
            await busy.send_input({"type": "http.request", "body": b""})
            await wait_until(lambda: instruments.running == 1)
            signal_threads.clear()
            async with HttpCommunicator(app, "GET", f"/hello/?key={other_key}") as queued:
                await queued.send_input({"type": "http.request", "body": b""})
                await queued.send_input({"type": "http.disconnect"})
                with anyio.fail_after(0.5):
                    await queued.wait(None)  # ends without waiting for the busy thread
                assert await queued.receive_nothing(0)
            instruments.gate.set()
            assert (await busy.receive_output(2))["status"] == 200
    finally:
        del PROBES[other_key]
    assert "view" not in other.threads
    # Django never saw the abandoned request; only the busy one started and finished.
    assert "started" not in signal_threads


def test_thread_setting(urls: None) -> None:
    assert HttpApplication().max_threads == 40
    with override_settings(CHANNELS_RUNTIME_HTTP_THREADS=3):
        assert HttpApplication().max_threads == 3
        assert get_asgi_application(max_threads=5).max_threads == 5
    for bad in (0, "8", True, 2.5):
        with (
            override_settings(CHANNELS_RUNTIME_HTTP_THREADS=bad),
            pytest.raises(ImproperlyConfigured, match="CHANNELS_RUNTIME_HTTP_THREADS"),
        ):
            HttpApplication()


# -- other scopes, Django's ASGIHandler ------------------------------------------------------


@pytest.mark.anyio
async def test_lifespan_is_answered_and_websockets_refused(app: HttpApplication) -> None:
    async with ApplicationCommunicator(app, {"type": "lifespan"}) as comm:
        await comm.send_input({"type": "lifespan.startup"})
        assert await comm.receive_output() == {"type": "lifespan.startup.complete"}
        await comm.send_input({"type": "lifespan.shutdown"})
        assert await comm.receive_output() == {"type": "lifespan.shutdown.complete"}
        await comm.wait()
    comm = ApplicationCommunicator(app, {"type": "websocket", "path": "/"})
    with pytest.raises(ValueError, match="ProtocolTypeRouter"):
        await comm.wait()


class Wrapper:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.inner(scope, receive, send)


@pytest.mark.anyio
async def test_check_http_application(app: HttpApplication, anyio_backend: Backend) -> None:
    check_http_application(app)
    check_http_application(Wrapper(app))
    for django_app in (ASGIHandler(), Wrapper(Wrapper(ASGIHandler()))):
        if backend_name(anyio_backend) == "trio":
            with pytest.raises(
                ImproperlyConfigured,
                match=r"only runs on asyncio; use channels_runtime\.http\.get_asgi_application",
            ):
                check_http_application(django_app)
        else:
            check_http_application(django_app)


@pytest.mark.anyio
async def test_djangos_asgi_handler_in_a_router_is_served_on_every_backend(
    urls: None, anyio_backend: Backend
) -> None:
    # Served by channels_runtime.http (ProtocolTypeRouter substitutes it), trio included.
    router = ProtocolTypeRouter({"http": ASGIHandler()})  # type: ignore[dict-item]
    response = await HttpCommunicator(router, "GET", "/hello/").get_response()
    assert (response["status"], response["body"]) == (200, b"hello sync")


# -- end to end, over sockets, with Hypercorn --------------------------------------------------


async def serve_with_hypercorn(
    app: Any, backend: str, client_code: Callable[[str], Awaitable[None]]
) -> None:
    """Serve ``app`` with the Hypercorn worker for ``backend``; run ``client_code(base_url)``."""

    async def bounded(base_url: str) -> None:
        with anyio.fail_after(10):
            await client_code(base_url)

    await hypercorn_serve.serve_with_hypercorn(app, backend, bounded)


@pytest.mark.anyio
async def test_hypercorn_requests(app: HttpApplication, anyio_backend: Backend) -> None:
    content = os.urandom(3000)
    results: dict[str, Any] = {}

    async def client(base_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url) as http:
            results["sync"] = await http.get("/hello/")
            results["async"] = await http.get("/ahello/")
            results["upload"] = await http.post(
                "/upload/", data={"field": "value"}, files={"file": ("a.bin", content)}
            )
            results["prefix"] = await http.get("/where/")

    await serve_with_hypercorn(app, backend_name(anyio_backend), client)
    assert (results["sync"].status_code, results["sync"].text) == (200, "hello sync")
    assert results["sync"].cookies["flavour"] == "sync"
    assert results["async"].text == f"hello {backend_name(anyio_backend)}"
    assert results["upload"].json()["sha256"] == hashlib.sha256(content).hexdigest()
    assert results["prefix"].json()["reverse"] == "/where/"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/stream/", "/astream/"])
async def test_hypercorn_streams_chunk_by_chunk(
    app: HttpApplication, probe: tuple[str, Probe], path: str, anyio_backend: Backend
) -> None:
    key, instruments = probe
    instruments.agate = anyio.Event()
    received: list[bytes] = []

    async def client(base_url: str) -> None:
        async with (
            httpx.AsyncClient(base_url=base_url) as http,
            http.stream("GET", f"{path}?key={key}") as response,
        ):
            assert response.status_code == 200
            chunks = response.aiter_raw()
            received.append(await anext(chunks))
            # Over the wire while the generator is still waiting to make the next one.
            assert instruments.produced == 1
            instruments.gate.set()
            assert instruments.agate is not None
            instruments.agate.set()
            received.extend([chunk async for chunk in chunks])

    await serve_with_hypercorn(app, backend_name(anyio_backend), client)
    assert received[0] == b"first;"
    assert b"".join(received) == b"first;second;third"


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/endless/", "/aendless/"])
async def test_hypercorn_client_disconnect_stops_the_generator(
    app: HttpApplication, probe: tuple[str, Probe], path: str, anyio_backend: Backend
) -> None:
    key, instruments = probe

    async def client(base_url: str) -> None:
        async with httpx.AsyncClient(base_url=base_url) as http:
            async with http.stream("GET", f"{path}?key={key}") as response:
                async for chunk in response.aiter_raw():
                    if b"tick 3" in chunk:
                        break
            # The connection is closed: the generator's finally runs soon after.
            await wait_until(instruments.closed.is_set, within=1)

    await serve_with_hypercorn(app, backend_name(anyio_backend), client)
    produced = instruments.produced
    await anyio.sleep(0.05)
    assert instruments.produced == produced
