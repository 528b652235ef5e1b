"""The soak: churn a real server with well-behaved and misbehaving clients, then check
that everything it holds comes back to its idle value.

Shared by ``tests/test_soak.py`` (seconds of churn per worker class) and
``bench/bench_soak.py`` (minutes). It lives here, not under ``bench/``, because
it is built on the suite's own tools: ``e2e_app.harness`` starts and always
kills the server process (bounded waits, the log in every failure) and
``raw_websocket`` is the client that can misbehave. The bench script puts this
directory on ``sys.path``, as the suite's conftest does, and adds only its
command line and its longer defaults.

One soak, for one worker class (:func:`run_soak`):

1. start ``channels-runtime serve bench.soak_app.asgi`` on a free port, with a
   ``hypercorn.toml`` whose timeouts are short (:data:`HYPERCORN_TOML`), so a
   misbehaving client is dealt with in seconds, and a fresh SQLite file;
2. warm up: one session of every client behaviour, so first-use allocations,
   imports and thread pools are in the baseline rather than counted as growth;
3. take the baseline once the server is idle;
4. churn: every behaviour in its own client threads, in a loop, for the
   duration, sampling the server every few seconds;
5. stop the clients, then sample until every metric is back within its limit
   (:class:`Limit`) or the settle timeout passes; the last sample is "after";
6. check that a client is still served, then SIGTERM and expect exit status 0.

The server is measured from outside (``/proc/PID``: RSS, descriptors, threads,
descriptors on the SQLite file) and from inside (``GET /diag/``, see
``bench/soak_app/diag.py``: consumers running and alive, event-loop tasks, open
database connections, the in-memory layer's channels, groups and
memberships, and how every connection ended). When a metric does not come
back, the server's task stacks and sockets go to ``stacks-after.txt`` in the
work directory, so the report can say what is stuck, not only that something is.

Apart from the soak, :func:`closed_keep_alive_linger` measures the one
Hypercorn behaviour the soak ran into that the fixes do not cover yet: a
keep-alive connection the client closed is held until ``keep_alive_timeout``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from e2e_app.harness import REPO, Server, base_env, cli_command
from raw_websocket import RawWebSocket
from websockets.sync.client import connect

from channels_runtime.compat.hypercorn_fixes import DISABLE_VARIABLE

__all__ = [
    "BEHAVIOURS",
    "CHECK_KEYS",
    "WORKER_CLASSES",
    "LingerResult",
    "SoakResult",
    "SoakSettings",
    "closed_keep_alive_linger",
    "linger_report",
    "markdown_report",
    "run_soak",
]

WORKER_CLASSES = ("asyncio", "uvloop", "trio")
APPLICATION = "bench.soak_app.asgi"

#: The server's timeouts. Short, so that every misbehaviour is resolved within a
#: few seconds and a soak of seconds still sees each one end.
WRITE_TIMEOUT = 2.0
PING_INTERVAL = 1.0
PING_TIMEOUT = 2.0
GRACEFUL_TIMEOUT = 2.0
HYPERCORN_TOML = f"""\
write_timeout = {WRITE_TIMEOUT}
websocket_ping_interval = {PING_INTERVAL}
websocket_ping_timeout = {PING_TIMEOUT}
graceful_timeout = {GRACEFUL_TIMEOUT}
websocket_permessage_deflate = false
keep_alive_timeout = {{keep_alive_timeout}}
"""
#: Every request of the harness's own (samples, stacks) asks the server to close
#: the connection after the answer. Hypercorn 0.18 keeps a keep-alive connection
#: that the client closed until ``keep_alive_timeout`` runs out (see
#: :func:`closed_keep_alive_linger`), so sampling every second over fresh
#: keep-alive connections would hold a few descriptors and tasks of the
#: harness's own making, and the server would never look idle.
DIAG_HEADERS = {"connection": "close"}
#: Where a soak whose metrics did not come back saves the server's task stacks.
STACKS_FILE = "stacks-after.txt"
#: The in-memory layer's ``expiry`` in ``bench/soak_app/settings.py``: how long a
#: finished consumer's channel stays in the layer's table before it is forgotten.
LAYER_EXPIRY = 5.0

#: How long a vanished client keeps its socket open without reading: well past
#: the ping interval plus the ping timeout, by which the server must drop it.
VANISH_HOLD = PING_INTERVAL + PING_TIMEOUT + 3.0
#: How long a client that stopped reading waits before looking whether the server
#: cut it: twice the write timeout, and a second more for a loaded machine.
STALL_HOLD = 2 * WRITE_TIMEOUT + 1.0


@dataclass
class SoakSettings:
    """How long and how hard to soak, and how much RSS may stay above the baseline."""

    duration: float = 180.0
    #: Seconds between samples while the clients run.
    sample_interval: float = 5.0
    #: After the clients stop, how long the metrics get to come back.
    settle_timeout: float = 60.0
    #: After the warm-up, how long the server gets to be idle for the baseline.
    idle_timeout: float = 30.0
    #: Client threads per behaviour: the behaviour's own count times this.
    scale: int = 1
    #: RSS after the soak may exceed the baseline by the larger of these two: the
    #: allocator keeps some freed pages, a leak grows with the churn.
    rss_slack_mib: float = 20.0
    rss_slack_ratio: float = 0.10
    #: Every socket operation of a client waits at most this long.
    client_timeout: float = 15.0
    #: False serves with channels-runtime's Hypercorn fixes turned off, to show
    #: that the soak notices the leaks they fix.
    hypercorn_fixes: bool = True
    #: The names of the behaviours to run (see :data:`BEHAVIOURS`); None for all.
    behaviours: tuple[str, ...] | None = None
    #: Hypercorn's ``keep_alive_timeout`` (its default, 5 s, unless a check needs
    #: another; see :func:`closed_keep_alive_linger`).
    keep_alive_timeout: float = 5.0


# -- clients ---------------------------------------------------------------------


class Outcome(str):
    """What a session saw of the server: counted per behaviour, not an error.

    ``detail`` (the client's port, a delay) is kept for the unusual ones, to
    find their connection among the server's sockets.
    """

    detail: str | None

    def __new__(cls, text: str, detail: str | None = None) -> Outcome:
        outcome = super().__new__(cls, text)
        outcome.detail = detail
        return outcome


def _drain_until_closed(sock: socket.socket, timeout: float) -> bool:
    """Read until the server closes (EOF or reset): True; False if it is still open."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionError:
            return True
    return False


def _stall(client: RawWebSocket) -> None:
    """Send frames the echo consumer sends back, never reading, until the server stops
    reading too: its writes to us are blocked, its consumer waits in ``send()``, the
    application's queue is full and Hypercorn no longer reads (see
    ``channels_runtime/compat/hypercorn_fixes/app_inbox.py``)."""
    client.sock.settimeout(1.0)
    try:
        for _ in range(1000):  # at most 64 MiB
            client.send_bytes(b"x" * 65536)
    except (TimeoutError, ConnectionError):  # blocked, or already cut off as too slow
        return
    raise AssertionError("the server never stopped reading")


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a crashed client or a dropped NAT entry."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


class Clients:
    """One session of each client behaviour; the threads of :func:`run_soak` loop them.

    A session returns an :class:`Outcome` (what it saw the server do); anything
    it raises is an unexpected client error, counted and reported.
    """

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.ws_url = "ws" + url[4:]
        self.timeout = timeout

    def _raw(self, path: str, receive_buffer: int | None = None) -> RawWebSocket:
        client = RawWebSocket(self.url, path, receive_buffer=receive_buffer, timeout=self.timeout)
        try:
            client.handshake()
        except BaseException:
            client.close()
            raise
        return client

    def _http(self, target: str, receive_buffer: int | None = None) -> socket.socket:
        host, port = self.url.split("://", 1)[1].rsplit(":", 1)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.settimeout(self.timeout)
        try:
            sock.connect((host, int(port)))
            sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        except BaseException:
            sock.close()
            raise
        return sock

    # Well-behaved: a client library that reads, answers pings and closes politely.

    def echo(self, thread: int, session: int) -> Outcome:
        with connect(self.ws_url + "/ws/echo/", open_timeout=self.timeout) as ws:
            for number in range(20):
                text = f"echo {thread} {session} {number}"
                ws.send(text)
                if ws.recv(timeout=self.timeout) != text:
                    raise AssertionError("echo answered something else")
            ws.send(b"\x00" * 1024)
            if ws.recv(timeout=self.timeout) != b"\x00" * 1024:
                raise AssertionError("binary echo answered something else")
        return Outcome("20 + 1 frames echoed")

    def room(self, thread: int, session: int) -> Outcome:
        # Threads share two rooms, so messages fan out to several members.
        path = f"/ws/room/{thread % 2}/"
        with connect(self.ws_url + path, open_timeout=self.timeout) as ws:
            if ws.recv(timeout=self.timeout) != "joined":
                raise AssertionError("no 'joined' from the room")
            mine = {f"chat {thread} {session} {number}" for number in range(5)}
            for text in sorted(mine):
                ws.send(text)
            seen: set[str] = set()
            while not mine <= seen:
                seen.add(str(ws.recv(timeout=self.timeout)))
        return Outcome("own 5 messages came back through the group")

    def notes(self, thread: int, session: int) -> Outcome:
        # Alternately the async consumer (async ORM + database_sync_to_async) and
        # the sync one (ORM in the thread-sensitive thread).
        kind = "notes" if session % 2 == 0 else "sync-notes"
        with connect(f"{self.ws_url}/ws/{kind}/t{thread}/", open_timeout=self.timeout) as ws:
            last = -1
            for number in range(10):
                ws.send(f"note {session} {number}")
                counted = json.loads(ws.recv(timeout=self.timeout))["count"]
                if counted <= last:
                    raise AssertionError(f"row count went from {last} to {counted}")
                last = counted
        return Outcome(f"10 rows written and counted ({kind})")

    def stream_to_end(self, thread: int, session: int) -> Outcome:
        target = f"{self.url}/stream/?events=20&size=64&interval=0.005"
        with httpx.stream("GET", target, timeout=self.timeout) as response:
            body = b"".join(response.iter_bytes())
        if not body.endswith(b"event: end\ndata: done\n\n"):
            raise AssertionError("the stream did not end with its end event")
        return Outcome("stream read to the end")

    # Misbehaving: raw sockets that do what no client library would.

    def stop_reading(self, thread: int, session: int) -> Outcome:
        """Stop reading while the server sends: it must cut us after ``write_timeout``."""
        client = self._raw("/ws/echo/", receive_buffer=4096)
        try:
            _stall(client)
            time.sleep(STALL_HOLD)
            cut = _drain_until_closed(client.sock, self.timeout)
        finally:
            client.close()
        return Outcome("cut by the server" if cut else "still open after write_timeout")

    def reset(self, thread: int, session: int) -> Outcome:
        """Reset the connection mid-stream, three ways in turn."""
        kind = session % 3
        if kind == 0:
            # The consumer is blocked in send() and the application's queue is full.
            client = self._raw("/ws/echo/", receive_buffer=4096)
            _stall(client)
            _reset(client.sock)
            return Outcome("reset while the server was blocked writing to it")
        if kind == 1:
            client = self._raw(f"/ws/room/{thread % 2}/")
            client.send_text(f"leaving {thread} {session}")
            _reset(client.sock)
            return Outcome("reset right after sending to a room")
        client = self._raw("/ws/echo/")
        for number in range(50):
            client.send_text(f"{number:04d}" * 256)
        _reset(client.sock)
        return Outcome("reset with 50 echoes unread")

    def half_close(self, thread: int, session: int) -> Outcome:
        """Send, then shutdown(SHUT_WR): the server should close its side too."""
        path = "/ws/echo/" if session % 2 == 0 else f"/ws/room/{thread % 2}/"
        client = self._raw(path)
        try:
            port = client.sock.getsockname()[1]
            client.send_text("half-closing")
            client.sock.shutdown(socket.SHUT_WR)
            started = time.monotonic()
            closed = _drain_until_closed(client.sock, self.timeout)
            waited = time.monotonic() - started
        finally:
            client.close()
        detail = f"{path} from port {port}, {waited:.1f} s"
        if not closed:
            return Outcome("server kept the half-closed connection open", detail)
        if waited >= PING_INTERVAL:
            # Not the answer to the EOF: something else closed it, later.
            return Outcome("server closed late", detail)
        return Outcome("server closed at once")

    def vanish(self, thread: int, session: int) -> Outcome:
        """Go silent (never read, never answer a ping, never close) for VANISH_HOLD."""
        path = "/ws/echo/" if session % 2 == 0 else f"/ws/room/{thread % 2}/"
        client = self._raw(path)
        try:
            time.sleep(VANISH_HOLD)
            # Whatever the server sent is still in our buffer; its EOF follows it.
            dropped = _drain_until_closed(client.sock, 2.0)
        finally:
            client.close()
        return Outcome("dropped by the server (ping timeout)" if dropped else "still open")

    def stream_leave_early(self, thread: int, session: int) -> Outcome:
        """Read a few server-sent events, then close (FIN) or reset mid-stream."""
        sock = self._http("/stream/?events=100000&size=64&interval=0.005")
        try:
            data = b""
            while b"\r\n\r\n" not in data or data.split(b"\r\n\r\n", 1)[1].count(b"\n\n") < 3:
                chunk = sock.recv(65536)
                if not chunk:
                    raise AssertionError("the stream ended before three events")
                data += chunk
        except BaseException:
            sock.close()
            raise
        if session % 2:
            _reset(sock)
            return Outcome("reset after three events")
        sock.close()
        return Outcome("closed after three events")

    def stream_stop_reading(self, thread: int, session: int) -> Outcome:
        """Ask for a fast stream of large events and never read it."""
        sock = self._http("/stream/?events=4000&size=16384&interval=0", receive_buffer=4096)
        try:
            time.sleep(STALL_HOLD)
            cut = _drain_until_closed(sock, self.timeout)
        finally:
            sock.close()
        return Outcome("cut by the server" if cut else "still open after write_timeout")


@dataclass(frozen=True)
class Behaviour:
    name: str
    well_behaved: bool
    threads: int
    session: Callable[[Clients, int, int], Outcome]


BEHAVIOURS = [
    Behaviour("echo", True, 2, Clients.echo),
    Behaviour("group chat", True, 3, Clients.room),
    Behaviour("database notes", True, 2, Clients.notes),
    Behaviour("HTTP stream, read to the end", True, 1, Clients.stream_to_end),
    Behaviour("stops reading while the server sends", False, 1, Clients.stop_reading),
    Behaviour("resets mid-stream (SO_LINGER 0)", False, 2, Clients.reset),
    Behaviour("half-closes (SHUT_WR)", False, 1, Clients.half_close),
    Behaviour("vanishes (never reads, never pongs)", False, 2, Clients.vanish),
    Behaviour("HTTP stream, leaves early", False, 1, Clients.stream_leave_early),
    Behaviour("HTTP stream, stops reading", False, 1, Clients.stream_stop_reading),
]


@dataclass
class ClientStats:
    """Sessions, outcomes and unexpected errors per behaviour (thread-safe)."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_errors: list[str] = field(default_factory=list)
    #: The first outcomes that came with a detail (see :class:`Outcome`).
    details: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, behaviour: Behaviour, clients: Clients, thread: int, session: int) -> None:
        try:
            outcome = behaviour.session(clients, thread, session)
        except Exception as exc:
            with self._lock:
                self.errors[behaviour.name] += 1
                if len(self.first_errors) < 10:
                    last = traceback.format_exception_only(exc)[-1].strip()
                    self.first_errors.append(f"{behaviour.name}: {last}")
            return
        with self._lock:
            self.outcomes[(behaviour.name, str(outcome))] += 1
            if getattr(outcome, "detail", None) and len(self.details) < 20:
                self.details.append(f"{behaviour.name}: {outcome}: {outcome.detail}")

    def sessions(self, name: str) -> int:
        return sum(n for (b, _), n in self.outcomes.items() if b == name) + self.errors[name]


def _run_clients(
    clients: Clients,
    stats: ClientStats,
    chosen: list[Behaviour],
    scale: int,
    stop: threading.Event | None,
) -> list[threading.Thread]:
    """Start the client threads: one session each (``stop`` None), or loop until ``stop``."""

    def loop(behaviour: Behaviour, thread: int) -> None:
        session = 0
        while True:
            stats.run(behaviour, clients, thread, session)
            session += 1
            if stop is None or stop.is_set():
                return

    threads = []
    for behaviour in chosen:
        for index in range(behaviour.threads * (scale if stop is not None else 1)):
            thread = threading.Thread(
                target=loop, args=(behaviour, index), name=f"soak {behaviour.name} {index}"
            )
            thread.daemon = True
            thread.start()
            threads.append(thread)
    return threads


def _join(threads: list[threading.Thread], timeout: float) -> list[str]:
    """Wait for the client threads; the names of those still running at ``timeout``."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]


# -- measuring ---------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """What "back to idle" means for one metric, given its baseline."""

    #: ``"baseline"``: at most the baseline; ``"zero"``: nothing at all (consumers,
    #: connections: the idle server has none, whatever the warm-up left);
    #: ``"rss"``: the baseline plus the RSS slack.
    kind: str

    def allowed(self, baseline: float, settings: SoakSettings) -> float:
        if self.kind == "zero":
            return 0
        if self.kind == "rss":
            return baseline + max(settings.rss_slack_mib, baseline * settings.rss_slack_ratio)
        return baseline

    def describe(self, baseline: float, settings: SoakSettings) -> str:
        if self.kind == "zero":
            return "0"
        if self.kind == "rss":
            return f"≤ {self.allowed(baseline, settings):.1f}"
        return f"≤ {baseline:g}"


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    limit: Limit


METRICS = [
    Metric("rss_mib", "RSS, MiB (/proc)", Limit("rss")),
    Metric("fds", "open descriptors (/proc)", Limit("baseline")),
    Metric("threads", "threads (/proc)", Limit("baseline")),
    Metric("db_fds", "descriptors on the SQLite file (/proc)", Limit("zero")),
    Metric("tasks", "event-loop tasks (diag)", Limit("baseline")),
    Metric("consumers_running", "consumers running (diag)", Limit("zero")),
    Metric("consumer_objects_alive", "consumer objects alive after gc (diag)", Limit("zero")),
    Metric("db_connections_open", "database connections open (diag)", Limit("zero")),
    Metric("layer_channels", "layer channels (diag)", Limit("zero")),
    Metric("layer_groups", "layer groups (diag)", Limit("zero")),
    Metric("layer_memberships", "layer group memberships (diag)", Limit("zero")),
]


#: Every check :func:`run_soak` makes, by key, in the order of its report.
CHECK_KEYS = [
    *(metric.key for metric in METRICS),
    "every_disconnect",
    "client_errors",
    "diag_errors",
    "served_after",
    "sigterm_exit",
    "log_tracebacks",
]


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


def sample(server: Server, db_path: Path) -> dict[str, Any]:
    """One sample: the outside view from /proc, then the inside view from /diag/."""
    pid = server.pid
    status = _proc_status(pid)
    fd_dir = Path(f"/proc/{pid}/fd")
    fds = db_fds = 0
    for entry in fd_dir.iterdir():
        fds += 1
        try:
            if os.readlink(entry).startswith(str(db_path)):
                db_fds += 1
        except OSError:  # closed between listing and reading
            pass
    values: dict[str, Any] = {
        "time": time.monotonic(),
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
        "fds": fds,
        "threads": int(status["Threads"]),
        "db_fds": db_fds,
    }
    try:
        diag = httpx.get(server.url + "/diag/", headers=DIAG_HEADERS, timeout=10.0).json()
    except (httpx.HTTPError, ValueError) as exc:
        values["diag_error"] = repr(exc)
        return values
    layer = diag["layer"] or {}
    values.update(
        tasks=diag["tasks"],
        consumers_running=diag["consumers_running"],
        consumer_objects_alive=diag["consumer_objects_alive"],
        db_connections_open=diag["db_connections_open"],
        layer_channels=layer.get("channels"),
        layer_groups=layer.get("groups"),
        layer_memberships=layer.get("memberships"),
        counts=diag["counts"],
        tasks_by_name=diag["tasks_by_name"],
        running_by_route=diag["running_by_route"],
    )
    return values


@dataclass
class Check:
    """One pass/fail line of the report."""

    #: Short and stable, for test ids and known-defect tables (:data:`CHECK_KEYS`).
    key: str
    name: str
    after: str
    allowed: str
    ok: bool
    baseline: str = "—"
    peak: str = "—"


@dataclass
class SoakResult:
    worker_class: str
    settings: SoakSettings
    checks: list[Check]
    stats: ClientStats
    #: The baseline first, then every sample from the churn on; the last is "after".
    samples: list[dict[str, Any]]
    #: Seconds from the clients' end until every metric was within its limit (None: never).
    settled_after: float | None
    churn_seconds: float
    log_path: Path

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def behaviours(self) -> list[Behaviour]:
        names = self.settings.behaviours
        return [b for b in BEHAVIOURS if names is None or b.name in names]

    @property
    def after(self) -> dict[str, Any]:
        return self.samples[-1]

    def check(self, key: str) -> Check:
        return next(check for check in self.checks if check.key == key)

    def failures(self) -> str:
        """Everything a failing test needs to say: the failed checks, the client
        errors, the last sample (with the counts from inside) and the server log's end."""
        lines = [f"soak on {self.worker_class}, failed checks:"]
        lines += [
            f"  {c.name}: baseline {c.baseline}, peak {c.peak}, after {c.after} "
            f"(allowed {c.allowed})"
            for c in self.checks
            if not c.ok
        ]
        lines += ["client errors:", *(f"  {e}" for e in self.stats.first_errors)]
        lines += ["unusual outcomes:", *(f"  {d}" for d in self.stats.details)]
        lines.append(f"last sample: {json.dumps(self.after, default=str)}")
        stacks = self.log_path.with_name(STACKS_FILE)
        if stacks.exists():
            lines.append(f"the server's task stacks after the soak: {stacks}")
        log = self.log_path.read_text(errors="replace").splitlines()
        lines += [f"server log ({self.log_path}), last lines:", *log[-40:]]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _within(now: dict[str, Any], baseline: dict[str, Any], settings: SoakSettings) -> bool:
    for metric in METRICS:
        value = now.get(metric.key)
        if value is None or value > metric.limit.allowed(baseline[metric.key], settings):
            return False
    return True


def _every_connection_ended(counts: dict[str, int]) -> tuple[bool, str]:
    """Per route: consumers started, finished, and disconnect() calls, which must agree."""
    routes = sorted({name.split(" ", 1)[1] for name in counts if name.startswith("started ")})
    parts, ok = [], True
    for route in routes:
        started = counts.get(f"started {route}", 0)
        finished = counts.get(f"finished {route}", 0)
        disconnected = counts.get(f"disconnect {route}", 0)
        ok = ok and started == finished == disconnected
        parts.append(f"{route} {started}/{finished}/{disconnected}")
    return ok, ", ".join(parts)


def _migrate(db_path: Path, log_path: Path) -> None:
    env = base_env(SOAK_DB=str(db_path), DJANGO_SETTINGS_MODULE="bench.soak_app.settings")
    command = [sys.executable, "-m", "django", "migrate", "--run-syncdb", "--verbosity", "0"]
    done = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    log_path.write_text(done.stdout + done.stderr)
    if done.returncode:
        raise AssertionError(f"migrate failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _start_server(worker_class: str, workdir: Path, settings: SoakSettings) -> Server:
    """A fresh SQLite file with its table, the short-timeout config, and the server."""
    workdir.mkdir(parents=True, exist_ok=True)
    db_path = workdir / "soak.sqlite3"
    _migrate(db_path, workdir / "migrate.log")
    toml = workdir / "hypercorn.toml"
    toml.write_text(HYPERCORN_TOML.format(keep_alive_timeout=settings.keep_alive_timeout))
    env = {"SOAK_DB": str(db_path)}
    if not settings.hypercorn_fixes:
        env[DISABLE_VARIABLE] = "0"
    command = [*cli_command(), "serve", APPLICATION, "-b", "127.0.0.1:0", "-k", worker_class]
    return Server([*command, "-c", str(toml)], log_path=workdir / "server.log", env=base_env(**env))


class _Soak:
    """The steps of :func:`run_soak`, sharing the server, the clients and the samples."""

    def __init__(self, server: Server, db_path: Path, settings: SoakSettings) -> None:
        self.server = server
        self.db_path = db_path
        self.settings = settings
        self.clients = Clients(server.url, settings.client_timeout)
        names = settings.behaviours
        self.behaviours = [b for b in BEHAVIOURS if names is None or b.name in names]
        if names is not None and len(self.behaviours) != len(names):
            raise ValueError(f"unknown behaviours in {names}")
        self.stats = ClientStats()
        self.samples: list[dict[str, Any]] = []
        self.stuck: list[str] = []
        self.churn_seconds = 0.0
        self.settled_after: float | None = None

    def sample(self) -> dict[str, Any]:
        return sample(self.server, self.db_path)

    def warm_up(self) -> dict[str, Any]:
        """One session of every behaviour, then the baseline once the server is idle.

        Idle means no consumer running and the finished ones' channels expired
        from the layer (:data:`LAYER_EXPIRY`); every wait is bounded. Should the
        warm-up itself leak, the checks with the limit "zero" still see it.
        """
        warm = ClientStats()
        threads = _run_clients(self.clients, warm, self.behaviours, 1, None)
        stuck = _join(threads, 4 * self.settings.client_timeout)
        if stuck or warm.errors:
            raise AssertionError(f"warm-up failed: stuck {stuck}, errors {warm.first_errors}")
        deadline = time.monotonic() + self.settings.idle_timeout
        while self.sample().get("consumers_running") != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(LAYER_EXPIRY + 1.0)
        while self.sample().get("layer_channels") != 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        # The lowest of three samples: a connection the server is still closing
        # (the previous diag request's, say) is not part of its idle state.
        readings = []
        for _ in range(3):
            time.sleep(0.5)
            readings.append(self.sample())
            if "diag_error" in readings[-1]:
                raise AssertionError(f"no baseline: {readings[-1]['diag_error']}")
        baseline = readings[-1]
        for metric in METRICS:
            baseline[metric.key] = min(reading[metric.key] for reading in readings)
        return baseline

    def churn(self, progress: Callable[[str], None]) -> None:
        """Every behaviour in its threads for the duration, sampling as it goes."""
        stop = threading.Event()
        threads = _run_clients(self.clients, self.stats, self.behaviours, self.settings.scale, stop)
        started = time.monotonic()
        while (left := started + self.settings.duration - time.monotonic()) > 0:
            time.sleep(min(self.settings.sample_interval, left))
            self.samples.append(self.sample())
            progress(_progress_line(self.samples[-1], started))
        stop.set()
        self.churn_seconds = time.monotonic() - started
        # A session in progress finishes: the longest is a vanished client's hold.
        self.stuck = _join(threads, VANISH_HOLD + 4 * self.settings.client_timeout)

    def settle(self, baseline: dict[str, Any]) -> dict[str, Any]:
        """Sample until every metric is within its limit, or the settle timeout passes."""
        ended = time.monotonic()
        now = self.sample()
        while not _within(now, baseline, self.settings):
            if time.monotonic() - ended > self.settings.settle_timeout:
                break
            time.sleep(1.0)
            now = self.sample()
        else:
            self.settled_after = time.monotonic() - ended
        self.samples.append(now)
        return now

    def metric_checks(self, baseline: dict[str, Any], after: dict[str, Any]) -> list[Check]:
        measured = [s for s in self.samples if "diag_error" not in s]
        checks = []
        for metric in METRICS:
            values = [s[metric.key] for s in measured if s.get(metric.key) is not None]
            base = baseline[metric.key]
            value = after.get(metric.key)
            ok = value is not None and value <= metric.limit.allowed(base, self.settings)
            allowed = metric.limit.describe(base, self.settings)
            peak = _fmt(max(values) if values else None)
            checks.append(
                Check(metric.key, metric.label, _fmt(value), allowed, ok, _fmt(base), peak)
            )
        return checks

    def save_stacks(self, path: Path) -> None:
        """Write where every task of the server waits (``/diag/?stacks=1``) and the
        server's TCP sockets (``ss``: state and peer port) to ``path``."""
        try:
            url = self.server.url + "/diag/?stacks=1"
            text = httpx.get(url, headers=DIAG_HEADERS, timeout=10.0).text
        except httpx.HTTPError as exc:
            text = f"could not read the stacks: {exc!r}"
        try:
            listing = subprocess.run(
                ["ss", "-tanp"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
            mine = [line for line in listing.splitlines() if f"pid={self.server.pid}," in line]
            text += "\n--- sockets (ss -tanp)\n" + "\n".join(mine) + "\n"
        except (OSError, subprocess.TimeoutExpired):
            pass
        path.write_text(text)

    def server_checks(self, after: dict[str, Any]) -> list[Check]:
        """Every consumer was told, no client failed, the server still serves and stops."""
        ended, detail = _every_connection_ended(after.get("counts", {}))
        errors = sum(self.stats.errors.values())
        diag_failures = sum(1 for s in self.samples if "diag_error" in s)
        try:
            self.clients.echo(0, 0)
            served = True
        except Exception:
            served = False
        self.server.signal(signal.SIGTERM)
        try:
            status: int | None = self.server.popen.wait(timeout=GRACEFUL_TIMEOUT + 20.0)
        except subprocess.TimeoutExpired:
            status = None
        tracebacks = self.server.log().count("Traceback")
        stuck = f" ({len(self.stuck)} client threads stuck)" if self.stuck else ""
        return [
            Check(
                "every_disconnect",
                "disconnect() ran for every consumer (started/finished/disconnect)",
                detail,
                "all equal",
                ended,
            ),
            Check(
                "client_errors",
                "client sessions that failed",
                f"{errors}{stuck}",
                "0",
                errors == 0 and not self.stuck,
            ),
            Check(
                "diag_errors",
                "diag requests that failed",
                str(diag_failures),
                "0",
                diag_failures == 0,
            ),
            Check("served_after", "a new client is served", str(served), "True", served),
            Check("sigterm_exit", "SIGTERM: exit status", _fmt(status), "0", status == 0),
            Check(
                "log_tracebacks",
                "tracebacks in the server log",
                str(tracebacks),
                "0",
                tracebacks == 0,
            ),
        ]


def run_soak(
    worker_class: str,
    workdir: Path,
    settings: SoakSettings,
    progress: Callable[[str], None] = lambda text: None,
) -> SoakResult:
    """Soak one server on ``worker_class``; everything it writes goes to ``workdir``."""
    server = _start_server(worker_class, workdir, settings)
    try:
        server.start(timeout=30.0, health_path="/diag/")
        soak = _Soak(server, workdir / "soak.sqlite3", settings)
        progress(f"{worker_class}: warming up (one session of every behaviour)")
        baseline = soak.warm_up()
        progress(f"{worker_class}: churning for {settings.duration:g} s")
        soak.churn(lambda line: progress(f"{worker_class}: {line}"))
        progress(f"{worker_class}: clients stopped, waiting for the server to settle")
        after = soak.settle(baseline)
        checks = soak.metric_checks(baseline, after)
        if not all(check.ok for check in checks):
            # While the server still holds whatever did not come back.
            soak.save_stacks(workdir / STACKS_FILE)
        checks += soak.server_checks(after)
    finally:
        server.close()
    return SoakResult(
        worker_class=worker_class,
        settings=settings,
        checks=checks,
        stats=soak.stats,
        samples=[baseline, *soak.samples],
        settled_after=soak.settled_after,
        churn_seconds=soak.churn_seconds,
        log_path=server.log_path,
    )


def _progress_line(now: dict[str, Any], started: float) -> str:
    shown = " ".join(
        f"{key}={_fmt(now.get(key))}"
        for key in ("rss_mib", "fds", "threads", "tasks", "consumers_running", "layer_channels")
    )
    return f"t={now['time'] - started:.0f}s {shown}"


# -- closed keep-alive connections ------------------------------------------------


@dataclass
class LingerResult:
    """Server descriptors before and after clients closed their keep-alive connections."""

    worker_class: str
    connections: int
    keep_alive_timeout: float
    baseline_fds: int
    held_fds: int
    #: Seconds until the descriptors were back to the baseline; None: not within the wait.
    released_after: float | None
    wait: float


def closed_keep_alive_linger(
    worker_class: str,
    workdir: Path,
    connections: int = 50,
    keep_alive_timeout: float = 60.0,
    wait: float = 8.0,
) -> LingerResult:
    """Make ``connections`` HTTP/1.1 requests, each on a keep-alive connection the client
    closes after the response, and see how long the server holds their descriptors.

    Hypercorn 0.18 reads the client's EOF but keeps the connection (its socket in
    CLOSE-WAIT, its two or three tasks) until ``keep_alive_timeout`` runs out:
    the idle timer it started after the response is what closes it. A server
    that closes on EOF releases them in milliseconds, so ``wait`` (far below the
    ``keep_alive_timeout`` used here) tells the two apart without a tight timing.
    """
    settings = SoakSettings(keep_alive_timeout=keep_alive_timeout)
    server = _start_server(worker_class, workdir, settings)
    try:
        # Server.start's own health check holds its connection too, for the whole
        # keep_alive_timeout: it is part of the baseline, as it is of every reading.
        server.start(timeout=30.0, health_path="/diag/")
        fd_dir = Path(f"/proc/{server.pid}/fd")
        baseline = len(list(fd_dir.iterdir()))
        for _ in range(connections):
            response = httpx.get(server.url + "/stream/?events=1&interval=0", timeout=10.0)
            response.raise_for_status()  # httpx.get closes the connection when done
        closed = time.monotonic()
        held = len(list(fd_dir.iterdir()))
        released_after = None
        while time.monotonic() - closed < wait:
            if len(list(fd_dir.iterdir())) <= baseline:
                released_after = time.monotonic() - closed
                break
            time.sleep(0.1)
    finally:
        server.close()
    return LingerResult(
        worker_class, connections, keep_alive_timeout, baseline, held, released_after, wait
    )


def linger_report(results: list[LingerResult]) -> str:
    lines = [
        "| worker class | keep-alive connections closed by the client | keep_alive_timeout, s "
        "| server descriptors before | right after the last close | back to before within |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        back = (
            f"{r.released_after:.1f} s"
            if r.released_after is not None
            else f"not within {r.wait:g} s"
        )
        lines.append(
            f"| {r.worker_class} | {r.connections} | {r.keep_alive_timeout:g} "
            f"| {r.baseline_fds} | {r.held_fds} | {back} |"
        )
    return "\n".join(lines)


# -- reporting ----------------------------------------------------------------------


def _rss_trend(result: SoakResult) -> str:
    """RSS a quarter into the churn and at its end: a leak keeps growing, warm-up does not."""
    churn = [s for s in result.samples[1:-1] if "rss_mib" in s]
    if len(churn) < 4:
        return "—"
    return f"{churn[len(churn) // 4]['rss_mib']:.1f} → {churn[-1]['rss_mib']:.1f}"


def _server_view(counts: dict[str, int]) -> str:
    """How connections ended, as the consumers saw it: close codes and stream endings."""
    parts = [
        f"{name.removeprefix('close ')}: {n:,}"
        for name, n in sorted(counts.items())
        if name.startswith("close ")
    ]
    parts += [f"{name}: {n:,}" for name, n in sorted(counts.items()) if name.startswith("stream ")]
    return "; ".join(parts) or "—"


def markdown_report(results: list[SoakResult]) -> str:
    """The checks per worker class, a summary, and what the clients and consumers saw."""
    lines = [
        "| worker class | metric | baseline | peak | after | allowed after | result |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        for check in result.checks:
            lines.append(
                f"| {result.worker_class} | {check.name} | {check.baseline} | {check.peak} "
                f"| {check.after} | {check.allowed} | {'pass' if check.ok else '**FAIL**'} |"
            )
    lines += [
        "",
        "| worker class | churn, s | client sessions | RSS, MiB, ¼ into the churn → its end "
        "| back within limits, s after the clients stopped | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        sessions = sum(result.stats.sessions(b.name) for b in result.behaviours)
        settled = "never" if result.settled_after is None else f"{result.settled_after:.1f}"
        lines.append(
            f"| {result.worker_class} | {result.churn_seconds:.0f} | {sessions:,} "
            f"| {_rss_trend(result)} | {settled} | {'pass' if result.ok else '**FAIL**'} |"
        )
    lines += [
        "",
        "| worker class | client behaviour | kind | threads | sessions | outcomes "
        "| unexpected errors |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        for behaviour in result.behaviours:
            outcomes = "; ".join(
                f"{outcome}: {n:,}"
                for (name, outcome), n in sorted(result.stats.outcomes.items())
                if name == behaviour.name
            )
            lines.append(
                f"| {result.worker_class} | {behaviour.name} "
                f"| {'well-behaved' if behaviour.well_behaved else 'misbehaving'} "
                f"| {behaviour.threads * result.settings.scale} "
                f"| {result.stats.sessions(behaviour.name):,} | {outcomes or '—'} "
                f"| {result.stats.errors[behaviour.name]} |"
            )
    lines += [
        "",
        "| worker class | how connections ended, seen by the consumers (route code: count) |",
        "| --- | --- |",
    ]
    for result in results:
        lines.append(f"| {result.worker_class} | {_server_view(result.after.get('counts', {}))} |")
    return "\n".join(lines)
