"""Django's HTTP stack served on asyncio, uvloop and trio.

:func:`get_asgi_application` replaces ``django.core.asgi.get_asgi_application``.
Django's own ``ASGIHandler`` drives requests with ``asyncio.create_task`` and
``asyncio.wait``, so it cannot run on trio at all (see
``docs/django-http.md``); this module serves the same Django request/response
cycle with anyio only.

Design: two ways to run a request, chosen per request
------------------------------------------------------
Most Django views are plain functions, and Django's built-in middleware can
run synchronously. For those requests the fastest *and* simplest faithful
model is WSGI's: the whole cycle runs in **one worker thread** —
``request_started``, the sync middleware chain, the view, iterating a
streaming body, and ``response.close()`` (which sends ``request_finished``).
One thread hop per request instead of Django's three or more, and the
signals run on the view's thread, so Django's ``close_old_connections``
receivers close the very connections the view used (connections are
per-thread). Async middleware or an async view reached from that thread is
run by Django through ``async_to_sync``, which brings it back to the event
loop (on trio through :mod:`channels_runtime.compat.asgiref_trio`) while the
thread waits and serves the coroutine's thread-sensitive calls.

That model keeps a thread busy for the whole life of the request, which is
wrong for async views: an async view that waits minutes on a channel layer
(long polling, server-sent events) or on another service would pin a thread
doing nothing, and 40 such clients would stop all HTTP. So a request whose
URL resolves to an async view is served **on the event loop** with Django's
async machinery instead (``get_response_async`` over an async middleware
chain, driven by anyio task groups and cancel scopes instead of
``asyncio.wait``). As in Django's ``ASGIHandler``, a
per-request ``ThreadSensitiveContext`` gives its sync parts (sync middleware,
signal receivers, ``sync_to_async`` ORM calls) one thread of their own; here
that thread is lent from a warm pool rather than started and joined per
request, which was most of Django's per-request cost (asgiref >= 3.13; older
asgiref starts one per request, as Django does). That path is slower per
request than the thread path (Django's ``MiddlewareMixin`` hops to a thread
for each middleware in async mode), which is why it is used only where it
buys something.

The route is looked up once on the loop to decide; when the URLconf has no
async view at all (remembered per URLconf), no lookup is made. A guess can
only be wrong when middleware swaps ``request.urlconf``, and then Django
adapts the view either way: the request is still correct, just served by the
other path.

Thread capacity
---------------
Threads of the thread path come from a pool of their own, gated by an
``anyio.CapacityLimiter`` of ``settings.CHANNELS_RUNTIME_HTTP_THREADS``
tokens (default 40). Waiting for a token happens on the event loop, where it
can be cancelled. Neither the pool nor the limiter is shared with consumers:
a consumer's sync work runs on the thread-sensitive thread, so a flood of
slow HTTP requests can never queue in front of it, and consumers cannot
starve HTTP either.

Disconnects and cancellation
----------------------------
A sync view cannot be interrupted, and a server silently drops body messages
sent after the client left, so the thread would never notice. A task on the
loop therefore listens for ``http.disconnect`` for every request; the thread
checks the flag it sets before sending each chunk and stops, and
``response.close()`` then closes the generator (its ``finally`` runs). On the
loop path, a disconnect cancels the view or the async stream, as Django does.
Cancelling the application (server shutdown) stops a stream the same way and
waits for the worker thread to finish, as ``trio.to_thread`` does: no thread
is left running Django code after the request's task has ended.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import sys
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import IO, Any, Final, cast

import anyio
import anyio.from_thread
import anyio.lowlevel
import django
from anyio.lowlevel import EventLoopToken, RunVar
from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core import signals
from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.base import BaseHandler
from django.http import (
    FileResponse,
    HttpResponse,
    HttpResponseBadRequest,
)
from django.http.response import HttpResponseBase
from django.urls import URLPattern, URLResolver, get_resolver, set_script_prefix

from . import metrics
from .asgi import Message, Receive, Scope, Send
from .compat.backend import ensure_bridge, running_on_trio
from .compat.django_versions import get_script_prefix, send_signal
from .sync import SyncToAsync, ThreadSensitiveContext, async_to_sync, sync_to_async

__all__ = [
    "DEFAULT_HTTP_THREADS",
    "DjangoHandler",
    "HttpApplication",
    "check_http_application",
    "get_asgi_application",
    "substitute_django_handler",
]

logger = logging.getLogger("django.request")
#: Where the substitution of Django's ASGIHandler is announced.
runtime_logger = logging.getLogger("channels_runtime.http")

#: Default for ``settings.CHANNELS_RUNTIME_HTTP_THREADS``: Django requests served at once
#: in worker threads (the same number as anyio's and trio's default thread limit).
DEFAULT_HTTP_THREADS: Final = 40

#: Bytes read per ``FileResponse`` chunk; the server does the low-level splitting, so a
#: large block means fewer thread round trips (Django's ``ASGIHandler`` uses the same).
FILE_BLOCK_SIZE: Final = 2**16

_START: Final = "http.response.start"
_BODY: Final = "http.response.body"
_FINAL_BODY: Final[Message] = {"type": _BODY, "body": b"", "more_body": False}


def get_asgi_application(*, max_threads: int | None = None) -> HttpApplication:
    """Set Django up and return an ASGI application serving it on asyncio or trio.

    The drop-in for ``django.core.asgi.get_asgi_application()``: call it in
    ``asgi.py`` before importing anything that touches models. ``max_threads``
    overrides ``settings.CHANNELS_RUNTIME_HTTP_THREADS``.
    """
    django.setup(set_prefix=False)
    return HttpApplication(max_threads=max_threads)


def check_http_application(application: object) -> None:
    """Refuse Django's ``ASGIHandler`` (bare or under middleware) when running on trio.

    On trio it would fail on its first ``asyncio`` call with an error that does
    not say why; this says what to use instead. Middleware is looked through
    by following ``.inner``, as Channels' middleware stores the wrapped app.
    Costs one ``sniffio`` lookup on asyncio, so it can run for every request.
    """
    if not running_on_trio():
        return
    current: object = application
    for _ in range(32):  # bounded: a chain of wrappers that loops must not hang us
        if isinstance(current, ASGIHandler):
            raise ImproperlyConfigured(
                "Django's ASGIHandler only runs on asyncio; use "
                "channels_runtime.http.get_asgi_application() instead of "
                "django.core.asgi.get_asgi_application() for the 'http' application "
                "(it serves the same Django views and middleware on asyncio and trio)."
            )
        current = getattr(current, "inner", None)
        if current is None:
            return


def substitute_django_handler(application: object) -> HttpApplication | None:
    """The application that serves Django's own ``ASGIHandler`` instead, or ``None``.

    A project whose ``asgi.py`` maps ``django.core.asgi.get_asgi_application()``
    (the Channels tutorial's) would answer every request with a 500 on trio,
    where Django's handler cannot run. :class:`HttpApplication` serves the same
    views, middleware and settings on every worker class, so it takes the
    handler's place on all of them: one code path whichever loop runs, faster,
    and streaming sync iterators (see ``docs/django-http.md``). The replacement
    is announced with one log line.

    Only an instance of exactly ``ASGIHandler`` is replaced: a subclass (such as
    staticfiles' ``ASGIStaticFilesHandler``) may change how requests are
    handled, so it is left alone; :func:`check_http_application` refuses it on
    trio. Called by ``ProtocolTypeRouter`` for its ``"http"`` application and by
    ``serve``/``runserver`` for a bare handler as the whole application.
    """
    if type(application) is not ASGIHandler:
        return None
    runtime_logger.info(
        "Django's ASGIHandler (django.core.asgi.get_asgi_application()) is served by "
        "channels_runtime.http: the same views and middleware, on asyncio, uvloop and trio"
    )
    return HttpApplication()


def _configured_threads(max_threads: int | None) -> int:
    value: object = max_threads
    where = "max_threads"
    if value is None:
        value = getattr(settings, "CHANNELS_RUNTIME_HTTP_THREADS", DEFAULT_HTTP_THREADS)
        where = "settings.CHANNELS_RUNTIME_HTTP_THREADS"
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"{where} must be a positive integer, got {value!r}")
    return value


class DjangoHandler(BaseHandler):
    """Django's request handler with one middleware chain, sync or async.

    It is also the ``sender`` of ``request_started`` and ``request_finished``
    for requests served by :class:`HttpApplication`.
    """

    request_class = ASGIRequest

    def __init__(self, *, is_async: bool) -> None:
        super().__init__()
        self.load_middleware(is_async=is_async)

    def resolve_request(self, request: Any) -> Any:
        match = super().resolve_request(request)
        if metrics.enabled:  # the view route, for the request's metrics
            metrics.http.note_route(match)
        return match


# -- pieces shared by both paths ---------------------------------------------------------


async def _read_body(receive: Receive) -> IO[bytes] | None:
    """Collect the request body; ``None`` if the client left before sending all of it.

    A body that arrives in one message and fits in ``FILE_UPLOAD_MAX_MEMORY_SIZE``
    (every ``GET`` and most forms) is wrapped as it is, without a copy; anything
    else goes to a ``SpooledTemporaryFile`` that moves to disk past that size,
    as with Django's ``ASGIHandler``.
    """
    limit = settings.FILE_UPLOAD_MAX_MEMORY_SIZE
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    chunk: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(chunk) <= limit:
        return io.BytesIO(chunk)
    # Handed to the caller, who closes it: no "with" here.
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=limit, mode="w+b")  # noqa: SIM115
    try:
        spool.write(chunk)
        while message.get("more_body", False):
            message = await receive()
            if message["type"] == "http.disconnect":
                spool.close()
                return None
            spool.write(message.get("body", b""))
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _make_request(scope: Scope, body: IO[bytes]) -> ASGIRequest | HttpResponse:
    """Build the request, or the error response Django gives when it cannot be built."""
    try:
        return ASGIRequest(scope, body)
    except UnicodeDecodeError:
        logger.warning(
            "Bad Request (UnicodeDecodeError)",
            exc_info=sys.exc_info(),
            extra={"status_code": 400},
        )
        return HttpResponseBadRequest()
    except RequestDataTooBig:
        return HttpResponse("413 Payload too large", status=413)


def _prepare(response: HttpResponseBase) -> None:
    response._handler_class = DjangoHandler  # type: ignore[attr-defined]
    if isinstance(response, FileResponse):
        response.block_size = FILE_BLOCK_SIZE


def _start_message(response: HttpResponseBase) -> Message:
    """``http.response.start`` for ``response``: header case kept, cookies appended."""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in response.items():
        headers.append(
            (
                name.encode("ascii") if isinstance(name, str) else bytes(name),
                value.encode("latin-1") if isinstance(value, str) else bytes(value),
            )
        )
    for morsel in response.cookies.values():
        headers.append((b"Set-Cookie", morsel.output(header="").encode("ascii").strip()))
    if metrics.enabled:
        metrics.http.note_status(response.status_code)
    return {"type": _START, "status": response.status_code, "headers": headers}


class _Exchange:
    """What the code producing a response shares with the request's task on the loop.

    ``stop`` is read by worker threads between chunks; ``stopped`` is the same
    news for loop code (an anyio event may only be set on the loop, so both
    exist). ``disconnected`` says the client itself went away.
    """

    __slots__ = ("_stopped", "disconnected", "send", "stop", "token")

    def __init__(self, send: Send, token: EventLoopToken) -> None:
        self.send = send
        self.token = token
        self.stop = threading.Event()
        self._stopped: anyio.Event | None = None
        self.disconnected = False

    @property
    def stopped(self) -> anyio.Event:
        # Made on first use: most requests never stream async content from a thread.
        if self._stopped is None:
            self._stopped = anyio.Event()
            if self.stop.is_set():
                self._stopped.set()
        return self._stopped

    def halt(self) -> None:
        """On the loop: tell every producer of this response to stop."""
        self.stop.set()
        if self._stopped is not None:
            self._stopped.set()

    def send_from_thread(self, message: Message) -> None:
        anyio.from_thread.run(self._send, message, token=self.token)

    async def _send(self, message: Message) -> None:
        await self.send(message)


async def _watch_for_disconnect(
    receive: Receive, exchange: _Exchange, cancel_scope: anyio.CancelScope | None = None
) -> None:
    """Wait for ``http.disconnect``; then, or when cancelled, halt the exchange.

    Halting on cancellation too matters: when the application is cancelled
    (server shutdown) a worker thread still streaming must stop as well.
    """
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                exchange.disconnected = True
                if cancel_scope is not None:
                    cancel_scope.cancel()
                return
    finally:
        exchange.halt()


def _stream_in_thread(response: HttpResponseBase, start: Message, exchange: _Exchange) -> None:
    """Send a sync streaming body chunk by chunk; runs in a worker thread.

    Stops as soon as the exchange is halted; the caller's ``response.close()``
    then closes the generator. A server that raises ``OSError`` on a send to a
    departed client (rather than dropping it, as Hypercorn does) counts as a
    disconnect.
    """
    try:
        exchange.send_from_thread(start)
        for part in cast(Iterable[bytes], response.streaming_content):  # type: ignore[attr-defined]
            if exchange.stop.is_set():
                return
            if part:
                exchange.send_from_thread({"type": _BODY, "body": part, "more_body": True})
        if not exchange.stop.is_set():
            exchange.send_from_thread(_FINAL_BODY)
    except OSError:
        exchange.stop.set()


async def _send_async_stream(response: HttpResponseBase, start: Message, send: Send) -> None:
    """Send an async streaming body chunk by chunk, on the loop.

    Closes the view's own async iterator at the end however it ends: Django
    closes sync iterators in ``response.close()`` but leaves async ones to the
    garbage collector, so a generator interrupted between chunks would
    otherwise run its ``finally`` at some unknown later time.
    """
    try:
        await send(start)
        content = cast(AsyncIterator[bytes], response.streaming_content)  # type: ignore[attr-defined]
        async with aclosing(content):  # type: ignore[type-var]
            async for part in content:
                if part:
                    await send({"type": _BODY, "body": part, "more_body": True})
        await send(_FINAL_BODY)
    finally:
        aclose = getattr(getattr(response, "_iterator", None), "aclose", None)
        if aclose is not None:
            with anyio.CancelScope(shield=True):
                await aclose()


async def _send_async_stream_until_halted(
    response: HttpResponseBase, start: Message, exchange: _Exchange
) -> None:
    """:func:`_send_async_stream` for a worker thread, cancelled when the exchange halts."""
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def cancel_when_halted() -> None:
            await exchange.stopped.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(cancel_when_halted)
        try:
            await _send_async_stream(response, start, exchange.send)
        except Exception as exc:
            failure = exc
        finally:
            tg.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer the lifespan protocol, so a server serving this app alone logs no error."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _has_async_views(patterns: Iterable[object], depth: int = 0) -> bool:
    """Whether any view reachable from ``patterns`` is async (``True`` when unsure)."""
    if depth > 32:
        return True
    for entry in patterns:
        if isinstance(entry, URLPattern):
            if iscoroutinefunction(entry.callback):
                return True
        elif isinstance(entry, URLResolver):
            try:
                nested = entry.url_patterns
            except Exception:
                return True
            if _has_async_views(nested, depth + 1):
                return True
        else:
            return True
    return False


class _WarmThreads:
    """Single-thread executors kept running between async-view requests.

    Each async-view request gets one for its ``ThreadSensitiveContext``, so
    all its sync parts share a thread as in Django, without Django's cost of
    starting a thread for every request and another one to join it at the end
    (about 1 ms per request on a small machine). Up to ``keep`` idle ones are
    kept; more are made when needed and shut down when given back.
    """

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._idle: list[ThreadPoolExecutor] = []
        self._pid = os.getpid()

    def lease(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pid != os.getpid():  # a forked child has none of our threads
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop()
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="channels-runtime-http-async")

    def give_back(self, executor: ThreadPoolExecutor) -> None:
        with self._lock:
            if self._pid == os.getpid() and len(self._idle) < self._keep:
                self._idle.append(executor)
                return
        executor.shutdown(wait=False)


#: asgiref 3.13 lets a ThreadSensitiveContext use an executor it is given; before that,
#: every context starts a thread of its own.
_CONTEXT_TAKES_EXECUTOR: Final = (
    "executor" in inspect.signature(ThreadSensitiveContext.__init__).parameters
)


# -- the application -----------------------------------------------------------------------


class HttpApplication:
    """The ASGI application returned by :func:`get_asgi_application`.

    Serves ``http`` scopes with Django, answers ``lifespan`` (startup and
    shutdown complete at once), and refuses other scope types with
    ``ValueError``, as Django does — put it under ``ProtocolTypeRouter`` to
    serve WebSockets alongside.
    """

    def __init__(self, *, max_threads: int | None = None) -> None:
        #: Requests served at once in worker threads (see the module docstring).
        self.max_threads: int = _configured_threads(max_threads)
        self._sync_handler = DjangoHandler(is_async=False)
        self._async_handler: DjangoHandler | None = None
        self._limiter: RunVar[anyio.CapacityLimiter] = RunVar(
            f"channels_runtime.http.limiter.{id(self)}"
        )
        self._runner: tuple[int, ThreadPoolExecutor, SyncToAsync[Any, Any]] | None = None
        self._warm_threads = _WarmThreads(keep=self.max_threads)
        # Per URLconf resolver: may any of its views be async?
        self._async_views: weakref.WeakKeyDictionary[URLResolver, bool] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} max_threads={self.max_threads}>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # ``async def`` matters: Hypercorn recognises an ASGI 3 app by a
        # coroutine-function ``__call__``.
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
                return
            raise ValueError(
                f"Django can only handle ASGI/HTTP connections, not {scope['type']}; "
                "serve other protocols next to it with channels_runtime.routing."
                "ProtocolTypeRouter."
            )
        ensure_bridge()
        if metrics.enabled:  # counted and timed, by status class and view route
            await metrics.http.serve(lambda: self._serve(scope, receive, send))
        else:
            await self._serve(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client left before the request was complete
        try:
            if self._routes_to_async_view(scope):
                await self._serve_on_loop(scope, receive, send, body)
            else:
                await self._serve_in_thread(scope, receive, send, body)
        finally:
            body.close()

    def capacity_limiter(self) -> anyio.CapacityLimiter:
        """This event loop's limiter for requests served in worker threads."""
        try:
            return self._limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(self.max_threads)
            self._limiter.set(limiter)
            return limiter

    # ----- choosing the path ----------------------------------------------------------

    def _routes_to_async_view(self, scope: Scope) -> bool:
        """Guess, on the loop, whether Django will dispatch this request to an async view."""
        resolver = get_resolver()
        verdict = self._async_views.get(resolver)
        if verdict is None:
            if "urlconf_module" not in resolver.__dict__:
                # Not imported yet: let the worker thread import it, not the loop.
                return False
            try:
                verdict = _has_async_views(resolver.url_patterns)
            except Exception:
                return False  # a broken URLconf: Django reports it from the thread
            self._async_views[resolver] = verdict
        if not verdict:
            return False
        path: str = scope["path"]
        prefix = get_script_prefix(scope)
        try:
            match = resolver.resolve(path.removeprefix(prefix) if prefix else path)
        except Exception:
            return False  # 404s and errors are Django's to report
        return iscoroutinefunction(match.func)

    # ----- path 1: the whole request in one worker thread -------------------------------

    def _thread_runner(self) -> SyncToAsync[Any, Any]:
        # Through asgiref's SyncToAsync (not anyio.to_thread) so that async_to_sync in
        # the thread (async middleware, async views, signals with async receivers) gets
        # back to this loop on asyncio as well as trio. Made again after a fork.
        runner = self._runner
        pid = os.getpid()
        if runner is None or runner[0] != pid:
            executor = ThreadPoolExecutor(
                max_workers=self.max_threads, thread_name_prefix="channels-runtime-http"
            )
            runner = (
                pid,
                executor,
                SyncToAsync(self._respond_in_thread, thread_sensitive=False, executor=executor),
            )
            self._runner = runner
        return runner[2]

    async def _serve_in_thread(
        self, scope: Scope, receive: Receive, send: Send, body: IO[bytes]
    ) -> None:
        exchange = _Exchange(send, anyio.lowlevel.current_token())
        runner = self._thread_runner()
        limiter = self.capacity_limiter()
        whole: tuple[Message, bytes] | None = None
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            # Listening starts before queueing for a thread: a client that gives up
            # while every thread is busy takes its request out of the queue, so
            # under overload no thread is spent on a response nobody will read.
            queued = anyio.CancelScope()
            tg.start_soon(_watch_for_disconnect, receive, exchange, queued)
            try:
                with queued:
                    await limiter.acquire()
                if not queued.cancelled_caught:
                    try:
                        # Shielded: the thread cannot be interrupted, so we wait for
                        # it; a cancellation halts the exchange (the watcher's
                        # finally), which ends a stream, and is re-raised when the
                        # task group exits.
                        with anyio.CancelScope(shield=True):
                            whole = await runner(scope, body, exchange)
                    finally:
                        limiter.release()
            except Exception as exc:
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if whole is not None and not exchange.disconnected:
            start, content = whole
            await send(start)
            await send({"type": _BODY, "body": content, "more_body": False})

    def _respond_in_thread(
        self, scope: Scope, body: IO[bytes], exchange: _Exchange
    ) -> tuple[Message, bytes] | None:
        """Run one request's whole Django cycle in this worker thread.

        A streaming response is sent from here, chunk by chunk. A complete one
        is returned to be sent from the loop: by then ``response.close()`` has
        run, so the thread (and its limiter token) is free while the bytes are
        written. ``request_finished`` therefore fires just before the body goes
        out rather than just after, which saves two thread round trips.
        """
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=DjangoHandler, scope=scope)
        response: HttpResponseBase | None = None
        try:
            request = _make_request(scope, body)
            if isinstance(request, HttpResponse):
                response = request
            else:
                response = self._sync_handler.get_response(request)
            _prepare(response)
            start = _start_message(response)
            if not response.streaming:
                return start, cast(HttpResponse, response).content
            if getattr(response, "is_async", False):
                async_to_sync(_send_async_stream_until_halted)(response, start, exchange)
            else:
                _stream_in_thread(response, start, exchange)
            return None
        finally:
            if response is not None:
                response.close()
            else:
                signals.request_finished.send(sender=DjangoHandler)

    # ----- path 2: async views, on the loop -------------------------------------------

    def _async_chain(self) -> DjangoHandler:
        # Built on the first request for an async view: a project without any never
        # instantiates its middleware twice.
        if self._async_handler is None:
            self._async_handler = DjangoHandler(is_async=True)
        return self._async_handler

    async def _serve_on_loop(
        self, scope: Scope, receive: Receive, send: Send, body: IO[bytes]
    ) -> None:
        handler = self._async_chain()
        executor = self._warm_threads.lease() if _CONTEXT_TAKES_EXECUTOR else None
        try:
            await self._serve_in_context(handler, executor, scope, receive, send, body)
        finally:
            if executor is not None:
                self._warm_threads.give_back(executor)

    async def _serve_in_context(
        self,
        handler: DjangoHandler,
        executor: ThreadPoolExecutor | None,
        scope: Scope,
        receive: Receive,
        send: Send,
        body: IO[bytes],
    ) -> None:
        exchange = _Exchange(send, anyio.lowlevel.current_token())
        failure: Exception | None = None
        context = (
            ThreadSensitiveContext()
            if executor is None
            else ThreadSensitiveContext(executor=executor)  # type: ignore[call-arg,unused-ignore]
        )
        async with context:
            set_script_prefix(get_script_prefix(scope))
            await send_signal(signals.request_started, sender=DjangoHandler, scope=scope)
            response: HttpResponseBase | None = None
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_watch_for_disconnect, receive, exchange, tg.cancel_scope)
                    try:
                        request = _make_request(scope, body)
                        if isinstance(request, HttpResponse):
                            response = request
                        else:
                            response = await handler.get_response_async(request)
                        _prepare(response)
                        await self._send_from_loop(response, exchange)
                    except Exception as exc:
                        failure = exc
                    finally:
                        tg.cancel_scope.cancel()
            finally:
                # A disconnect cancelled the view (as in Django) or the stream; either
                # way the request is over, and Django must hear of it.
                with anyio.CancelScope(shield=True):
                    if response is None:
                        await send_signal(signals.request_finished, sender=DjangoHandler)
                    else:
                        await sync_to_async(response.close)()
        if failure is not None:
            raise failure

    async def _send_from_loop(self, response: HttpResponseBase, exchange: _Exchange) -> None:
        start = _start_message(response)
        if not response.streaming:
            await exchange.send(start)
            content = cast(HttpResponse, response).content
            await exchange.send({"type": _BODY, "body": content, "more_body": False})
        elif getattr(response, "is_async", False):
            await _send_async_stream(response, start, exchange.send)
        else:
            # A sync iterator (FileResponse, a generator): iterate it in the request's
            # thread rather than buffering it all first as Django does on ASGI.
            with anyio.CancelScope(shield=True):
                await sync_to_async(_stream_in_thread)(response, start, exchange)
