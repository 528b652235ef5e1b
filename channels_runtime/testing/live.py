"""A real server for tests: the project's ASGI application under Hypercorn, in a subprocess.

Communicators test a consumer from the inside; a live server tests the whole
stack as a browser or a client library sees it — real sockets, the real
handshake, middleware, static files, the database. This module provides it in
two shapes, both built on :class:`LiveServer`:

* :class:`ChannelsLiveServerTestCase`, a Django ``TransactionTestCase`` with
  the names of Channels' (``live_server_url``, ``live_server_ws_url``,
  ``host``, ``serve_static``), plus ``worker_class`` to pick the event loop;
* the ``channels_live_server`` pytest fixture (``channels_runtime.testing.pytest_plugin``).

Why a subprocess, and how it is fed:

* A server and a test in one process share an event loop or fight over one;
  a separate process is also exactly what production looks like.
* The process is *spawned*, not forked: forking a process that already runs
  threads (asgiref's, the database's) can copy held locks into the child.
  So the child rebuilds the configuration instead of inheriting memory: the
  parent sends it ``sys.path`` and every setting that differs from Django's
  defaults (pickled), with each database's current connection settings —
  including the test database name the test runner switched to — and the
  child calls ``settings.configure()`` with them. Settings overridden on the
  test class or by ``override_settings`` at start time come along too.
* The test database must therefore be reachable from another process: a
  SQLite *file* (set ``DATABASES[...]["TEST"]["NAME"]``) or a server database
  such as PostgreSQL. An in-memory SQLite database is refused with that hint.
  Data must be committed to be seen, hence ``TransactionTestCase``.
* The parent binds the listening socket (on a free port) and passes it down,
  so the port is known at once and can never be taken by someone else in
  between. The child reports readiness on a private pipe and stops
  gracefully when its stdin closes — which also happens if the test process
  dies, so no server outlives its test run.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, ClassVar, Self

from django.core.exceptions import ImproperlyConfigured
from django.test import TransactionTestCase
from django.test.utils import modify_settings
from django.utils.functional import classproperty

from ..db import keep_connections_open

__all__ = ["ChannelsLiveServerTestCase", "LiveServer", "settings_snapshot"]

#: Worker classes a live server can run on (Hypercorn's names).
WORKER_CLASSES = ("asyncio", "uvloop", "trio")

_READY = b"ready\n"
_MISSING = object()


def _is_in_memory_sqlite(connection: Any) -> bool:
    return connection.vendor == "sqlite" and bool(connection.is_in_memory_db())


def _database_settings() -> dict[str, dict[str, Any]]:
    """Each database alias's settings as its connection currently uses them.

    Read from the connections rather than ``settings.DATABASES`` because the
    test runner (and test fixtures) point the connections at the test
    database; that is the one the server must use. In-memory SQLite cannot be
    shared with another process, so it is refused with the fix.
    """
    from django.db import connections

    databases: dict[str, dict[str, Any]] = {}
    for alias in connections:
        connection = connections[alias]
        if _is_in_memory_sqlite(connection):
            raise ImproperlyConfigured(
                f"The live server runs in another process and cannot see the in-memory "
                f"SQLite database {alias!r}. Give its test database a file name, e.g. "
                f"DATABASES[{alias!r}]['TEST'] = {{'NAME': BASE_DIR / 'test_db.sqlite3'}}, "
                "or use a database server such as PostgreSQL."
            )
        databases[alias] = copy.deepcopy(connection.settings_dict)
    return databases


def settings_snapshot() -> dict[str, Any]:
    """The settings a server process needs to behave like this one.

    Every upper-case setting whose value differs from Django's default (the
    defaults the child gets anyway), with ``DATABASES`` taken from the live
    connections. Each value must pickle; one that does not is reported by
    name rather than as a bare pickling error.
    """
    from django.conf import global_settings, settings

    snapshot: dict[str, Any] = {}
    for name in dir(settings):
        if not name.isupper() or name == "SETTINGS_MODULE":
            continue
        value = getattr(settings, name)
        default = getattr(global_settings, name, _MISSING)
        try:
            unchanged = default is not _MISSING and bool(value == default)
        except Exception:
            unchanged = False
        if not unchanged:
            snapshot[name] = value
    snapshot["DATABASES"] = _database_settings()
    for name, value in snapshot.items():
        try:
            pickle.dumps(value)
        except Exception as exc:
            raise ImproperlyConfigured(
                f"Setting {name} cannot be sent to the live server process: it does not "
                f"pickle ({type(exc).__name__}: {exc})."
            ) from exc
    return snapshot


def _listening_socket(host: str) -> socket.socket:
    """A socket listening on a free port of ``host`` (its first address)."""
    family, kind, proto, _name, address = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(address)
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


class LiveServer:
    """One Hypercorn subprocess serving the project's ASGI application.

    ``application`` is a dotted path (default: ``settings.ASGI_APPLICATION``),
    because the child imports it afresh. ``serve_static`` wraps it to serve
    ``STATIC_URL`` from the staticfiles finders when staticfiles is
    installed, as Channels' live server does. Use it as a context manager, or
    call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *,
        host: str = "localhost",
        worker_class: str = "asyncio",
        application: str | None = None,
        serve_static: bool = True,
        static_wrapper: Callable[[Any], Any] | None = None,
        startup_timeout: float = 30.0,
        shutdown_timeout: float = 10.0,
    ) -> None:
        if worker_class not in WORKER_CLASSES:
            raise ValueError(f"worker_class must be one of {WORKER_CLASSES}, got {worker_class!r}")
        self.host = host
        self.worker_class = worker_class
        self.application = application
        self.serve_static = serve_static
        self.static_wrapper = static_wrapper
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None

    def __repr__(self) -> str:
        state = f"{self.url}" if self.port is not None else "not started"
        return f"<LiveServer {self.worker_class} {state}>"

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self._netloc()}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port`` of the running server."""
        return f"ws://{self._netloc()}"

    def _netloc(self) -> str:
        if self.port is None:
            raise RuntimeError("The live server is not running; call start() first.")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and return once it is about to accept connections.

        Raises ``RuntimeError`` if the process exits or is not ready within
        ``startup_timeout`` seconds; its own error output (settings, import
        errors) is on stderr above.
        """
        if self._process is not None:
            raise RuntimeError("This live server is already running.")
        payload = pickle.dumps(
            {
                "settings": settings_snapshot(),
                "application": self.application,
                "serve_static": self.serve_static,
                # Pickled by reference: the child imports the same class or function.
                "static_wrapper": self.static_wrapper,
                "worker_class": self.worker_class,
            }
        )
        sock = _listening_socket(self.host)
        ready_read, ready_write = os.pipe()
        try:
            bootstrap = pickle.dumps(
                {
                    "sys_path": list(sys.path),
                    "socket_fd": sock.fileno(),
                    "ready_fd": ready_write,
                    "payload": payload,
                }
            )
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from channels_runtime.testing.live import _child; _child()",
                ],
                stdin=subprocess.PIPE,
                pass_fds=(sock.fileno(), ready_write),
            )
            os.close(ready_write)
            ready_write = -1
            self._socket = sock
            self.port = sock.getsockname()[1]
            assert self._process.stdin is not None
            self._process.stdin.write(len(bootstrap).to_bytes(8, "big") + bootstrap)
            # Kept open: closing it is how the child is told to stop.
            self._process.stdin.flush()
            self._wait_ready(ready_read)
        except BaseException:
            self.stop()
            sock.close()
            raise
        finally:
            if ready_write != -1:
                os.close(ready_write)
            os.close(ready_read)

    def _wait_ready(self, ready_fd: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        received = b""
        while not received.endswith(_READY):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(
                    f"The live server ({self.worker_class}) was not ready within "
                    f"{self.startup_timeout} s."
                )
            readable, _, _ = select.select([ready_fd], [], [], min(remaining, 0.5))
            if readable:
                chunk = os.read(ready_fd, 64)
                if not chunk:  # the child closed the pipe without saying ready: it died
                    break
                received += chunk
        if not received.endswith(_READY):
            code = self._process.wait(timeout=self.shutdown_timeout)
            raise RuntimeError(
                f"The live server process exited with code {code} before it was ready; "
                "its error output is above."
            )

    def stop(self) -> None:
        """Stop the server gracefully (kill it if it takes too long) and free the port."""
        process, self._process = self._process, None
        try:
            if process is not None:
                _stop_process(process, self.shutdown_timeout)
        finally:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
            self.port = None


def _stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Close stdin (the polite stop), then SIGTERM, then SIGKILL, each bounded."""
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    try:
        process.wait(timeout=timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class ChannelsLiveServerTestCase(TransactionTestCase):
    """``TransactionTestCase`` with the ASGI application served on a real port.

    The server starts once per test class (in ``setUpClass``) and stops in
    ``tearDownClass``. Tests reach it at :attr:`live_server_url` (HTTP) and
    :attr:`live_server_ws_url` (WebSockets). Rows written by the test are
    committed, so the server sees them, and the database is emptied between
    tests as usual for ``TransactionTestCase``.

    Class attributes:

    ``host``
        Interface to listen on and to put in the URLs (added to
        ``ALLOWED_HOSTS`` for the class).
    ``worker_class``
        ``"asyncio"``, ``"uvloop"`` or ``"trio"``.
    ``application``
        Dotted path of the ASGI application; ``None`` for ``settings.ASGI_APPLICATION``.
    ``serve_static``
        Serve ``STATIC_URL`` when ``django.contrib.staticfiles`` is installed.
    ``static_wrapper``
        What wraps the application to serve static files (an importable class or
        function taking the application); ``None`` for the built-in anyio one.
    """

    host: ClassVar[str] = "localhost"
    worker_class: ClassVar[str] = "asyncio"
    application: ClassVar[str | None] = None
    serve_static: ClassVar[bool] = True
    static_wrapper: ClassVar[Callable[[Any], Any] | None] = None
    startup_timeout: ClassVar[float] = 30.0

    _live_server: ClassVar[LiveServer | None] = None
    _live_server_stack: ClassVar[contextlib.ExitStack]

    @classproperty
    def live_server_url(cls) -> str:
        return cls._running_server().url

    @classproperty
    def live_server_ws_url(cls) -> str:
        return cls._running_server().ws_url

    @classmethod
    def _running_server(cls) -> LiveServer:
        if cls._live_server is None:
            raise RuntimeError(f"{cls.__qualname__}'s live server is not running.")
        return cls._live_server

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        stack = contextlib.ExitStack()
        try:
            # The test process must not close the connection a test is using
            # (see channels_runtime.db); the server process manages its own.
            stack.enter_context(keep_connections_open())
            stack.enter_context(_allowed_host(cls.host))
            server = LiveServer(
                host=cls.host,
                worker_class=cls.worker_class,
                application=cls.application,
                serve_static=cls.serve_static,
                static_wrapper=cls.static_wrapper,
                startup_timeout=cls.startup_timeout,
            )
            server.start()
            stack.callback(server.stop)
        except BaseException:
            stack.close()
            super().tearDownClass()
            raise
        cls._live_server = server
        cls._live_server_stack = stack

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls._live_server_stack.close()
        finally:
            cls._live_server = None
            super().tearDownClass()


@contextlib.contextmanager
def _allowed_host(host: str) -> Iterator[None]:
    with modify_settings(ALLOWED_HOSTS={"append": host}):
        yield


# -- the server process ------------------------------------------------------------


def _read_exactly(fd: int, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise EOFError("The test process closed the live server's stdin during startup.")
        data += chunk
    return data


def _child() -> None:
    """Entry point of the server process (see the module docstring)."""
    stdin_fd = sys.stdin.fileno()
    size = int.from_bytes(_read_exactly(stdin_fd, 8), "big")
    bootstrap = pickle.loads(_read_exactly(stdin_fd, size))
    # Set first: unpickling the settings may import the project's modules.
    sys.path[:] = bootstrap["sys_path"]
    payload = pickle.loads(bootstrap["payload"])

    import django
    from django.conf import settings

    settings.configure(**payload["settings"])
    django.setup()

    from django.apps import apps
    from django.utils.module_loading import import_string

    from ..management.commands.runserver import StaticFilesApplication, serve_on_socket
    from ..routing import get_default_application
    from ..server.signals import wait_until_readable

    dotted = payload["application"]
    application = import_string(dotted) if dotted else get_default_application()
    if payload["serve_static"] and apps.is_installed("django.contrib.staticfiles"):
        application = (payload["static_wrapper"] or StaticFilesApplication)(application)

    ready_fd = bootstrap["ready_fd"]

    def report_ready() -> None:
        os.write(ready_fd, _READY)
        os.close(ready_fd)

    async def until_stdin_closes() -> None:
        # The parent writes nothing more: readable means closed (or the parent died).
        await wait_until_readable(stdin_fd)

    serve_on_socket(
        application,
        socket.socket(fileno=bootstrap["socket_fd"]),
        worker_class=payload["worker_class"],
        handle_signals=True,
        graceful_timeout=1.0,
        accesslog=None,
        on_started=report_ready,
        shutdown_trigger=until_stdin_closes,
    )
