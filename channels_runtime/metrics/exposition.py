"""The metrics bind: a small HTTP server on its own thread, with a route table.

``channels-runtime serve --metrics-bind 127.0.0.1:9100`` serves ``/metrics``
(the Prometheus text format) here, never on the public port: the address is
its own setting, it has no default, and nothing the application routes can
reach it.

Why a thread and not the event loop? With ``--workers N`` the process that
answers scrapes is the supervisor (:mod:`channels_runtime.server.run`), which
runs no event loop; with one worker it is the server process itself. A thread
with the standard library's HTTP server works the same in both, on every worker
class, and a scrape never waits behind the application's own work (nor the
application behind a scrape).

The route table
---------------

Other operational endpoints (``/healthz``, ``/readyz``) live on the same bind.
A route is an exact path and a handler::

    def healthz(request: Request) -> Response:
        return Response(200, b'{"status": "ok"}', "application/json")

    server = MetricsServer("127.0.0.1:9100")
    server.add_route("/healthz", healthz)
    server.start()

* a handler is a plain function called in a thread of this server, one
  request at a time per connection; it must be thread-safe and should be quick
  (a scrape times out) — use :func:`anyio.from_thread` or a thread-safe flag to
  reach an event loop's state;
* it gets a :class:`Request` (method, path, query string, headers) for ``GET``
  and ``HEAD``; other methods are answered 405 without calling it. For ``HEAD``
  the body it returns is dropped;
* an exception in a handler is logged and answered with 500;
* routes may be added before or after :meth:`MetricsServer.start`; adding a
  path twice replaces the handler. Paths match exactly (``/readyz`` is not
  ``/readyz/``), and the query string is passed on, not matched.

:meth:`MetricsServer.stop` ends the thread and closes the socket; the server
is also a context manager. The owner (``run.py``) stops it on every way out.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["Handler", "MetricsServer", "Request", "Response", "parse_bind"]

logger = logging.getLogger("channels_runtime.metrics")

#: Seconds a client may take to send its request before the connection is dropped.
REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class Request:
    """What a route handler is told about a request."""

    method: str
    path: str
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """What a route handler answers."""

    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Response]


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPV6]:PORT`` as a (host, port) pair; ValueError otherwise."""
    host, sep, port_text = bind.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        raise ValueError(f"{bind!r}: expected HOST:PORT or [IPV6]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{bind!r}: write an IPv6 address in brackets, e.g. [::1]:9100")
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"{bind!r}: port must be between 0 and 65535")
    return host, port


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client never holds up stop()
    #: handle_request() waits this long for the connection it was told of, should
    #: it have vanished since, so the serving thread never stops listening for stop().
    timeout = 1.0
    owner: MetricsServer

    def __init__(self, address: tuple[str, int], family: socket.AddressFamily) -> None:
        self.address_family = family
        super().__init__(address, _RequestHandler, bind_and_activate=True)


class _RequestHandler(BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = REQUEST_TIMEOUT
    protocol_version = "HTTP/1.1"
    server_version = "channels-runtime"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _not_allowed(self) -> None:
        self._write(Response(405, b"method not allowed\n", headers=(("Allow", "GET, HEAD"),)))

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _answer(self, *, send_body: bool) -> None:
        path, _, query = self.path.partition("?")
        handler = self.server.owner.routes.get(path)
        if handler is None:
            response = Response(404, b"not found\n")
        else:
            request = Request(self.command, path, query, dict(self.headers.items()))
            try:
                response = handler(request)
            except Exception:
                logger.exception("The metrics bind's handler for %s failed", path)
                response = Response(500, b"internal error\n")
        self._write(response, send_body=send_body)

    def _write(self, response: Response, *, send_body: bool = True) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if send_body:
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("metrics bind: " + format, *args)


class MetricsServer:
    """The HTTP server of the metrics bind; see the module docstring."""

    def __init__(self, bind: str, routes: Mapping[str, Handler] | None = None) -> None:
        self.bind = bind
        self.routes: dict[str, Handler] = dict(routes or {})
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None

    def add_route(self, path: str, handler: Handler) -> None:
        """Serve ``handler`` at ``path`` (exact match), replacing any handler there."""
        if not path.startswith("/"):
            raise ValueError(f"route {path!r} must start with '/'")
        self.routes[path] = handler

    def start(self) -> None:
        """Bind and listen, then answer requests on a daemon thread. Raises OSError."""
        if self._server is not None:
            raise RuntimeError("the metrics server is already started")
        host, port = parse_bind(self.bind)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        server = _HTTPServer((host, port), family)
        server.owner = self
        self._server = server
        self._wake = os.pipe()
        self._thread = threading.Thread(
            target=self._serve,
            args=(server, self._wake[0]),
            name="channels-runtime metrics",
            daemon=True,  # stop() ends it; never let a forgotten one hold up the exit
        )
        self._thread.start()

    @staticmethod
    def _serve(server: _HTTPServer, wake: int) -> None:
        """Answer requests until ``wake`` is readable (:meth:`stop`).

        Not ``serve_forever``: it wakes every ``poll_interval`` to look for a
        shutdown request, and each wake takes the GIL from the event loop's
        thread (on a busy server, a pause of up to the switch interval).
        Here the thread sleeps in ``select`` until a client or ``stop`` comes.
        """
        with selectors.DefaultSelector() as selector:
            selector.register(server.socket, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while True:
                for selected, _ in selector.select():
                    if selected.fd == wake:
                        return
                    server.handle_request()  # accepts, then a thread answers it

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) listened on: the real port when the bind asked for 0."""
        if self._server is None:
            raise RuntimeError("the metrics server is not started")
        name = self._server.socket.getsockname()
        return name[0], name[1]

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the bind, for log lines and clients."""
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def stop(self) -> None:
        """Stop answering, close the socket and end the thread (idempotent)."""
        server, thread, wake = self._server, self._thread, self._wake
        if server is None or thread is None or wake is None:
            return
        self._server = self._thread = self._wake = None
        os.write(wake[1], b"x")
        thread.join()
        server.server_close()
        for fd in wake:
            os.close(fd)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
