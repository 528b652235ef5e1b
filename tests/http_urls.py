"""URLconf, views and middleware for tests/test_http.py.

Views find the test's instruments through ``PROBES[request.GET["key"]]``: gates
the test opens to let a stream go on, events that say a generator was closed,
and a record of which thread ran what.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import anyio
import sniffio
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.files.uploadedfile import UploadedFile
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.urls import path, reverse


@dataclass
class Probe:
    """One test's view of what its views did."""

    gate: threading.Event = field(default_factory=threading.Event)
    agate: anyio.Event | None = None  # made by the test, on its event loop
    closed: threading.Event = field(default_factory=threading.Event)
    produced: int = 0
    threads: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    running: int = 0
    most_running: int = 0
    finished: threading.Event = field(default_factory=threading.Event)
    file_path: str = ""


PROBES: dict[str, Probe] = {}


def probe_for(request: HttpRequest) -> Probe:
    return PROBES[request.GET["key"]]


# -- plain views -----------------------------------------------------------------------


def hello(request: HttpRequest) -> HttpResponse:
    if "key" in request.GET:
        probe_for(request).threads["view"] = threading.get_ident()
    response = HttpResponse(b"hello sync", content_type="text/plain")
    response.set_cookie("flavour", "sync")
    response["X-Thread"] = str(threading.get_ident())
    return response


async def ahello(request: HttpRequest) -> HttpResponse:
    if "key" in request.GET:
        probe_for(request).threads["view"] = threading.get_ident()
    response = HttpResponse(f"hello {sniffio.current_async_library()}", content_type="text/plain")
    response["X-Thread"] = str(threading.get_ident())
    return response


def _describe_body(request: HttpRequest) -> JsonResponse:
    body = request.body
    return JsonResponse({"length": len(body), "sha256": hashlib.sha256(body).hexdigest()})


def echo(request: HttpRequest) -> HttpResponse:
    return _describe_body(request)


async def aecho(request: HttpRequest) -> HttpResponse:
    return _describe_body(request)


def upload(request: HttpRequest) -> HttpResponse:
    uploaded = request.FILES["file"]
    assert isinstance(uploaded, UploadedFile)
    content = uploaded.read()
    return JsonResponse(
        {
            "field": request.POST["field"],
            "name": uploaded.name,
            "size": uploaded.size,
            "class": type(uploaded).__name__,
            "sha256": hashlib.sha256(content).hexdigest(),
        }
    )


def _where(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "path": request.path,
            "path_info": request.path_info,
            "script_name": request.META["SCRIPT_NAME"],
            "reverse": reverse("where"),
            "absolute": request.build_absolute_uri(),
        }
    )


def where(request: HttpRequest) -> HttpResponse:
    return _where(request)


async def awhere(request: HttpRequest) -> HttpResponse:
    return _where(request)


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the sync view failed")


async def aboom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the async view failed")


def slow(request: HttpRequest) -> HttpResponse:
    """Sleeps (or waits for the gate), counting how many run at once."""
    probe = probe_for(request)
    with probe.lock:
        probe.running += 1
        probe.most_running = max(probe.most_running, probe.running)
    try:
        if "seconds" in request.GET:
            time.sleep(float(request.GET["seconds"]))
        elif not probe.gate.wait(5):
            raise TimeoutError("the test never opened the gate")
    finally:
        with probe.lock:
            probe.running -= 1
        probe.finished.set()
    return HttpResponse(b"slept")


def serve_file(request: HttpRequest) -> HttpResponseBase:
    return FileResponse(open(probe_for(request).file_path, "rb"), as_attachment=True)


# -- streaming -------------------------------------------------------------------------


def _gated_chunks(probe: Probe) -> Iterator[bytes]:
    """Three chunks; the second only once the test opens the gate."""
    try:
        probe.produced = 1
        yield b"first;"
        if not probe.gate.wait(5):
            raise TimeoutError("the test never opened the gate")
        probe.produced = 2
        yield b"second;"
        probe.produced = 3
        yield b"third"
    finally:
        probe.closed.set()


async def _agated_chunks(probe: Probe) -> AsyncIterator[bytes]:
    try:
        probe.produced = 1
        yield b"first;"
        assert probe.agate is not None
        with anyio.fail_after(5):
            await probe.agate.wait()
        probe.produced = 2
        yield b"second;"
        probe.produced = 3
        yield b"third"
    finally:
        probe.closed.set()


def _endless(probe: Probe) -> Iterator[bytes]:
    try:
        while True:
            probe.produced += 1
            yield b"tick %d\n" % probe.produced
            time.sleep(0.01)
    finally:
        probe.closed.set()


async def _aendless(probe: Probe) -> AsyncIterator[bytes]:
    try:
        while True:
            probe.produced += 1
            yield b"tick %d\n" % probe.produced
            await anyio.sleep(0.01)
    finally:
        probe.closed.set()


def stream(request: HttpRequest) -> HttpResponseBase:
    probe = probe_for(request)
    probe.threads["view"] = threading.get_ident()
    return StreamingHttpResponse(_gated_chunks(probe), content_type="text/plain")


async def astream(request: HttpRequest) -> HttpResponseBase:
    return StreamingHttpResponse(_agated_chunks(probe_for(request)), content_type="text/plain")


def stream_async_from_sync(request: HttpRequest) -> HttpResponseBase:
    """A sync view returning an async iterator."""
    return StreamingHttpResponse(_agated_chunks(probe_for(request)), content_type="text/plain")


async def astream_sync(request: HttpRequest) -> HttpResponseBase:
    """An async view returning a sync iterator."""
    return StreamingHttpResponse(_gated_chunks(probe_for(request)), content_type="text/plain")


def endless(request: HttpRequest) -> HttpResponseBase:
    return StreamingHttpResponse(_endless(probe_for(request)), content_type="text/plain")


async def aendless(request: HttpRequest) -> HttpResponseBase:
    return StreamingHttpResponse(_aendless(probe_for(request)), content_type="text/plain")


def endless_async_from_sync(request: HttpRequest) -> HttpResponseBase:
    return StreamingHttpResponse(_aendless(probe_for(request)), content_type="text/plain")


async def aendless_sync(request: HttpRequest) -> HttpResponseBase:
    return StreamingHttpResponse(_endless(probe_for(request)), content_type="text/plain")


# -- middleware ------------------------------------------------------------------------


class SyncOnlyMiddleware:
    """Sync only: in the async chain Django runs it through sync_to_async."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response["X-Sync-Middleware"] = str(threading.get_ident())
        return response


class AsyncOnlyMiddleware:
    """Async only: in the sync chain Django runs it through async_to_sync."""

    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Awaitable[HttpResponse]]) -> None:
        self.get_response = get_response
        if not iscoroutinefunction(get_response):
            raise TypeError("AsyncOnlyMiddleware was given a sync get_response")
        markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        response["X-Async-Middleware"] = sniffio.current_async_library()
        return response


TEST_MIDDLEWARE = [
    "http_urls.SyncOnlyMiddleware",
    "http_urls.AsyncOnlyMiddleware",
]


urlpatterns = [
    path("hello/", hello, name="hello"),
    path("ahello/", ahello),
    path("echo/", echo),
    path("aecho/", aecho),
    path("upload/", upload),
    path("where/", where, name="where"),
    path("awhere/", awhere),
    path("boom/", boom),
    path("aboom/", aboom),
    path("slow/", slow),
    path("file/", serve_file),
    path("stream/", stream),
    path("astream/", astream),
    path("stream-async-from-sync/", stream_async_from_sync),
    path("astream-sync/", astream_sync),
    path("endless/", endless),
    path("aendless/", aendless),
    path("endless-async-from-sync/", endless_async_from_sync),
    path("aendless-sync/", aendless_sync),
]
