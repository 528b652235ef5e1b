"""``manage.py runserver`` for channels_runtime: the ASGI application under Hypercorn.

Django's own ``runserver`` (and staticfiles', which replaces it) serves WSGI, so
a project's WebSocket routes are simply missing from it. This command keeps
everything developers rely on from Django's — the ``addrport`` argument,
``--ipv6``, ``--noreload``, the autoreloader, system checks, the unapplied
migrations warning, the startup banner, ``--nostatic``/``--insecure`` — and
changes only what runs inside: ``settings.ASGI_APPLICATION`` served by
Hypercorn, in-process, with the event loop chosen by ``--worker-class``.

It is found instead of staticfiles' command only if ``channels_runtime`` comes
before ``django.contrib.staticfiles`` in ``INSTALLED_APPS`` (system check
``channels_runtime.E001``).
"""

from __future__ import annotations

import errno
import importlib
import io
import itertools
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import anyio
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError, CommandParser
from django.core.management.commands.runserver import Command as DjangoRunserverCommand
from django.db import connections
from django.utils import autoreload
from django.utils.version import get_docs_version

from ... import alias
from ...asgi import ASGIApp, Receive, Scope, Send
from ...compat.backend import ensure_bridge
from ...routing import get_default_application
from ...server.preflight import Refused, check_channel_layers, prepare_application
from ...server.run import show_runtime_logs
from ...sync import sync_to_async

__all__ = [
    "WORKER_CLASSES",
    "Command",
    "StaticFilesApplication",
    "check_project",
    "serve_on_socket",
]

#: ``--worker-class`` choices, as Hypercorn names them.
WORKER_CLASSES = ("asyncio", "uvloop", "trio")

#: How long open connections get to finish when the server is stopped.
GRACEFUL_TIMEOUT = 2.0


# -- static files ----------------------------------------------------------------


class StaticFilesApplication:
    """Serve ``STATIC_URL`` from the staticfiles finders, pass everything else on.

    Django's ``ASGIStaticFilesHandler`` does the same job but subclasses
    ``ASGIHandler``, whose request handling is written against asyncio
    (``asyncio.create_task``/``asyncio.wait``) and so fails on trio. This
    wrapper keeps Django's file serving itself — ``staticfiles.views.serve``
    with its path checks, content types, ``If-Modified-Since`` handling and
    DEBUG 404 page — and only replaces the ASGI plumbing with anyio, so it
    works on every worker class.
    """

    #: Chunks fetched from a streaming response per trip to the worker thread.
    CHUNKS_PER_TRIP = 16

    def __init__(self, application: ASGIApp) -> None:
        from django.contrib.staticfiles import utils

        utils.check_settings()
        self.application = application
        self.base_url = urlparse(settings.STATIC_URL)

    def should_handle(self, path: str) -> bool:
        """Under ``STATIC_URL``'s path, and ``STATIC_URL`` is not on another host."""
        return path.startswith(self.base_url.path) and not self.base_url.netloc

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.should_handle(scope["path"]):
            await self._serve(scope, receive, send)
        else:
            await self.application(scope, receive, send)

    def _get_response(self, request: Any) -> Any:
        from django.contrib.staticfiles.views import serve
        from django.core.handlers.exception import response_for_exception
        from django.http import Http404, HttpResponseNotFound

        relative = url2pathname(request.path.removeprefix(self.base_url.path))
        try:
            return serve(request, relative, insecure=True)
        except Http404 as exc:
            if getattr(settings, "ROOT_URLCONF", None) is None:
                # A WebSocket-only project may have no URLconf, which Django's
                # 404 pages (debug or not) need.
                return HttpResponseNotFound(str(exc), content_type="text/plain; charset=utf-8")
            return response_for_exception(request, exc)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        from django.core.handlers.asgi import ASGIRequest

        body = io.BytesIO()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body.write(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body.seek(0)
        ensure_bridge()
        request = ASGIRequest(scope, body)
        # Not thread-sensitive, as in Django's handler: no database involved,
        # so file reads need not queue behind the application's ORM calls.
        run = sync_to_async(self._get_response, thread_sensitive=False)
        response = await run(request)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": _response_headers(response),
                }
            )
            if scope.get("method") == "HEAD":
                await send({"type": "http.response.body", "body": b""})
            elif response.streaming:
                chunks = iter(response.streaming_content)
                take = sync_to_async(self._take, thread_sensitive=False)
                # One chunk behind, so the last one goes out as the final
                # message: a client that stops reading at Content-Length then
                # never sees the response as unfinished.
                previous: bytes | None = None
                while batch := await take(chunks):
                    for chunk in batch:
                        if previous is not None:
                            await send(
                                {"type": "http.response.body", "body": previous, "more_body": True}
                            )
                        previous = chunk
                await send({"type": "http.response.body", "body": previous or b""})
            else:
                await send({"type": "http.response.body", "body": response.content})
        finally:
            with anyio.CancelScope(shield=True):
                await sync_to_async(response.close, thread_sensitive=False)()

    @classmethod
    def _take(cls, chunks: Iterator[bytes]) -> list[bytes]:
        return list(itertools.islice(chunks, cls.CHUNKS_PER_TRIP))


def _response_headers(response: Any) -> list[tuple[bytes, bytes]]:
    """A Django response's headers and cookies as ASGI header pairs."""
    headers: list[tuple[bytes, bytes]] = []
    for name, value in response.items():
        headers.append((name.encode("ascii"), value.encode("latin-1")))
    for cookie in response.cookies.values():
        headers.append((b"set-cookie", cookie.output(header="").strip().encode("ascii")))
    return headers


# -- serving -----------------------------------------------------------------------


def _backend_for(worker_class: str) -> tuple[str, dict[str, Any]]:
    """The anyio backend (and options) that runs Hypercorn's ``worker_class``."""
    if worker_class == "uvloop":
        return "asyncio", {"use_uvloop": True}
    if worker_class in ("asyncio", "trio"):
        return worker_class, {}
    raise ValueError(f"worker_class must be one of {WORKER_CLASSES}, got {worker_class!r}")


def check_worker_class(worker_class: str) -> None:
    """Refuse a worker class whose event loop package is not installed, naming the fix."""
    backend, options = _backend_for(worker_class)
    needed = "uvloop" if options.get("use_uvloop") else backend
    try:
        importlib.import_module(needed)
    except ImportError:
        raise ImproperlyConfigured(
            f"Worker class {worker_class!r} needs the {needed!r} package: "
            f"pip install 'channels-runtime[{needed}]'"
        ) from None


def serve_on_socket(
    application: ASGIApp,
    sock: socket.socket,
    *,
    worker_class: str = "asyncio",
    handle_signals: bool = True,
    graceful_timeout: float = GRACEFUL_TIMEOUT,
    accesslog: str | None = "-",
    on_started: Callable[[], None] | None = None,
    shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Serve ``application`` with Hypercorn on the listening socket ``sock`` until stopped.

    Blocks, running its own event loop of ``worker_class``. Passing a socket
    that is already bound and listening lets the caller report the real
    address (port 0 included) and bind errors before any event loop starts.

    The serving itself is :func:`channels_runtime.server.serve.serve_until`,
    the engine of ``channels-runtime serve``, so development and production
    shut down the same way (open WebSockets closed with 1001). With
    ``handle_signals``, SIGINT and SIGTERM start that shutdown; signals can
    only be received in the main thread, so under Django's autoreloader
    (where the server runs in a side thread and the reloader owns Ctrl-C)
    pass False. The server also stops when ``shutdown_trigger`` returns.
    ``on_started`` is called once the application has started (lifespan).
    """
    from hypercorn.config import Config, Sockets

    from ...server.serve import serve_until
    from ...server.signals import SHUTDOWN_SIGNALS

    backend, backend_options = _backend_for(worker_class)
    config = Config.from_mapping(
        worker_class=worker_class,
        graceful_timeout=graceful_timeout,
        accesslog=accesslog,
        errorlog="-",
        access_log_format='%(h)s "%(r)s" %(s)s %(b)s',
    )
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    serve = partial(
        serve_until,
        application,
        config,
        triggers=[shutdown_trigger] if shutdown_trigger is not None else [],
        signals=SHUTDOWN_SIGNALS if handle_signals else (),
        sockets=sockets,
    )

    async def main() -> None:
        async with anyio.create_task_group() as group:
            await group.start(serve)
            if on_started is not None:
                on_started()

    anyio.run(main, backend=backend, backend_options=backend_options)


# -- the command -----------------------------------------------------------------

#: Exit status when the project cannot run on the chosen worker class, as for serve.
EXIT_REFUSED = 2


def check_project(worker_class: str, *, route: str) -> None:
    """The ``channels`` alias in place, and the channel layers able to run on ``worker_class``.

    The alias is normally installed already (``"channels_runtime"`` in
    ``INSTALLED_APPS``, or the ``"channels"``/``"daphne"`` entries it serves);
    this covers the command being reached any other way. A refusal is a
    ``CommandError`` with exit status 2, as ``channels-runtime serve`` exits.
    """
    try:
        alias.install(route=route)
        check_channel_layers(worker_class)
    except (alias.AliasError, Refused) as exc:
        raise CommandError(str(exc), returncode=EXIT_REFUSED) from None


class Command(DjangoRunserverCommand):
    help = (
        "Starts a development server for the ASGI application (settings.ASGI_APPLICATION): "
        "HTTP and WebSockets through Hypercorn, with autoreload."
    )
    server_name = "ASGI/Hypercorn"

    # Set by Django's ``handle()`` from the addrport argument.
    addr: str
    port: str
    use_ipv6: bool
    _raw_ipv6: bool

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--worker-class",
            "-k",
            choices=WORKER_CLASSES,
            default="asyncio",
            help="The event loop to serve on (default: asyncio).",
        )
        if apps.is_installed("django.contrib.staticfiles"):
            parser.add_argument(
                "--nostatic",
                action="store_false",
                dest="use_static_handler",
                help="Tells Django to NOT automatically serve static files at STATIC_URL.",
            )
            parser.add_argument(
                "--insecure",
                action="store_true",
                dest="insecure_serving",
                help="Allows serving static files even if DEBUG is False.",
            )

    def handle(self, *args: Any, **options: Any) -> None:
        if not getattr(settings, "ASGI_APPLICATION", None):
            raise CommandError(
                "You have not set ASGI_APPLICATION, which is needed to run the server. "
                "Set it to the dotted path of your application, e.g. 'mysite.asgi.application'."
            )
        try:
            check_worker_class(options["worker_class"])
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        check_project(options["worker_class"], route="manage.py runserver")
        super().handle(*args, **options)

    def get_application(self, options: dict[str, Any]) -> ASGIApp:
        """``ASGI_APPLICATION``, wrapped to serve static files when staticfiles would.

        Static files are served as by Django's runserver: when
        ``django.contrib.staticfiles`` is installed, ``--nostatic`` was not
        given, and either ``DEBUG`` is on or ``--insecure`` was given.

        Django's own ``ASGIHandler`` as the whole application is served by
        channels_runtime.http instead; what cannot run on ``--worker-class``
        raises :class:`~channels_runtime.server.preflight.Refused`
        (:func:`~channels_runtime.server.preflight.prepare_application`).
        """
        application = prepare_application(
            get_default_application(),
            options.get("worker_class", "asyncio"),
            where=f"ASGI_APPLICATION {settings.ASGI_APPLICATION!r}",
        )
        use_static = options.get(
            "use_static_handler", apps.is_installed("django.contrib.staticfiles")
        )
        if use_static and (settings.DEBUG or options.get("insecure_serving", False)):
            return StaticFilesApplication(application)
        return application

    def inner_run(self, *args: Any, **options: Any) -> None:
        # An import error raised while the autoreloader loaded the project is
        # re-raised here, in the process that serves, as Django does.
        autoreload.raise_last_exception()
        shutdown_message = options.get("shutdown_message", "")

        if not options["skip_checks"]:
            self.stdout.write("Performing system checks...\n\n")
            self.check(display_num_errors=True)
        self.check_migrations()
        # Connections opened by the checks belong to this thread; the server's
        # threads open their own.
        for conn in connections.all(initialized_only=True):
            conn.close()

        show_runtime_logs("info")
        try:
            application = self.get_application(options)
        except Refused as exc:
            # Under the autoreloader this is a side thread (see _bind).
            self.stderr.write(f"Error: {exc}")
            self.stderr.flush()
            os._exit(EXIT_REFUSED)
        sock = self._bind()
        self._print_banner(sock.getsockname()[1], options["worker_class"])
        try:
            serve_on_socket(
                application,
                sock,
                worker_class=options["worker_class"],
                # The autoreloader runs us in a side thread and handles
                # Ctrl-C itself; signals can only be received in the main thread.
                handle_signals=not options["use_reloader"],
            )
        except KeyboardInterrupt:
            pass
        if shutdown_message:
            self.stdout.write(shutdown_message)

    def _bind(self) -> socket.socket:
        """The listening socket, or a one-line error and exit, as Django's runserver does."""
        family = socket.AF_INET6 if self.use_ipv6 else socket.AF_INET
        addr = "0.0.0.0" if self.addr == "0" else self.addr
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr, int(self.port)))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            errors = {
                errno.EACCES: "You don't have permission to access that port.",
                errno.EADDRINUSE: "That port is already in use.",
                errno.EADDRNOTAVAIL: "That IP address can't be assigned to.",
            }
            self.stderr.write(f"Error: {errors.get(exc.errno or 0, exc)}")
            # Under the autoreloader this is a side thread, where sys.exit()
            # would only end the thread.
            os._exit(1)
        sock.set_inheritable(False)
        return sock

    def _print_banner(self, port: int, worker_class: str) -> None:
        quit_command = "CTRL-BREAK" if sys.platform == "win32" else "CONTROL-C"
        if self._raw_ipv6:
            addr = f"[{self.addr}]"
        elif self.addr == "0":
            addr = "0.0.0.0"
        else:
            addr = self.addr
        now = datetime.now().strftime("%B %d, %Y - %X")
        self.stdout.write(
            f"{now}\n"
            f"Django version {self.get_version()}, using settings {settings.SETTINGS_MODULE!r}\n"
            f"Starting {self.server_name} development server ({worker_class}) "
            f"at {self.protocol}://{addr}:{port}/\n"
            f"Quit the server with {quit_command}."
        )
        if os.environ.get("DJANGO_RUNSERVER_HIDE_WARNING") != "true":
            self.stdout.write(
                self.style.WARNING(
                    "WARNING: This is a development server. Do not use it in a production "
                    "setting. Use `channels-runtime serve` (Hypercorn) instead.\n"
                    "For more information on production servers see: "
                    f"https://docs.djangoproject.com/en/{get_docs_version()}/howto/deployment/"
                )
            )
        # Often a pipe (an IDE, a test, `| tee`): do not let the URL sit in a buffer.
        self.stdout.flush()
