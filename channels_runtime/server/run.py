"""``channels-runtime serve``: processes, logging and exit statuses.

Why not ``hypercorn.run.run()``? With one or more worker processes it returns
0 even when a worker crashed (for example when lifespan startup failed), so a
process manager would never learn that the service is broken; and its
single-process trio mode dies on SIGTERM without any cleanup. Here:

* one worker (the default) runs in this process: ``serve_until`` on the chosen
  loop, signals handled through anyio, so every worker class shuts down the
  same graceful way and an error becomes exit status 1;
* ``--workers N`` (or ``--reload``) binds the sockets here and runs N child
  processes, each an in-process server as above on the shared sockets. The
  parent watches them: a child that fails stops the rest and its status
  becomes ours; a child that exits cleanly on its own (``max_requests``) is
  replaced. Each child watches a pipe from the parent, so it shuts down when
  the parent asks, and also if the parent dies.

Draining (``drain_seconds``): with one worker, ``serve_until`` drains. With N,
the parent drains: on SIGTERM it reports not ready, tells every worker over
its pipe (so a readiness path on the main bind answers 503 too) and keeps the
sockets open for ``drain_seconds`` before asking the workers to stop. Workers
report their state back over a second pipe, which is what ``/readyz`` on the
metrics bind (answered by the parent) checks; see
:mod:`channels_runtime.server.readiness`.

Exit statuses: 0 after a graceful shutdown, 1 when the server failed (a worker
crashed, lifespan startup failed, a second signal forced the stop), 2 for
configuration and usage errors, including a project that cannot run on the
chosen worker class (reported before anything is started; see
:mod:`channels_runtime.server.preflight`).
"""

from __future__ import annotations

import errno
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import anyio
from hypercorn.config import Config, Sockets

from ..asgi import ASGIApp
from .config import ConfigError, build_config
from .health import HealthChecker, HealthEndpoints, options_from_config
from .preflight import Refused, check_channel_layers, prepare_application
from .project import (
    INMEMORY_BACKEND,
    ProjectError,
    describe_channel_layer,
    ensure_default_channel_layer,
    import_application,
    prepare_django,
    settings_hint_for,
    split_target,
)
from .readiness import (
    DRAIN,
    ParentLink,
    ServerReadiness,
    ServerState,
    StateCheck,
    SupervisorReadiness,
    read_states,
)
from .serve import ServeResult, bind_sockets, close_sockets, serve_until, socket_urls
from .signals import SHUTDOWN_SIGNALS, signal_name

__all__ = ["ServeSpec", "anyio_backend", "configure_logging", "run_serve", "show_runtime_logs"]

logger = logging.getLogger("channels_runtime.server")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: How long the supervisor's readiness loop may take to close its channel layers.
CLOSE_LAYERS_TIMEOUT = 2.0

#: How often ``--reload`` looks at the source files.
RELOAD_POLL_INTERVAL = 1.0

#: How long the supervisor waits for workers it has killed (SIGKILL) to be reaped.
#: A killed process is normally gone at once; this bound only runs out for one stuck
#: in the kernel (uninterruptible I/O on a dead network mount, say) or held by a
#: debugger attached to it, and keeps the supervisor from waiting for it forever.
KILL_WAIT = 5.0

#: How often the supervisor looks again at a worker that has died but cannot be
#: reaped yet (see :meth:`_Supervisor._reap`).
UNREAPED_POLL_INTERVAL = 0.05


def anyio_backend(worker_class: str, *, debug: bool = False) -> tuple[str, dict[str, Any]]:
    """The ``anyio.run`` backend and options for a Hypercorn worker class name.

    ``debug`` (Hypercorn's setting) turns on asyncio's debug mode; trio has none.
    """
    if worker_class == "trio":
        return "trio", {}
    options: dict[str, Any] = {"debug": True} if debug else {}
    if worker_class == "uvloop":
        options["use_uvloop"] = True
    return "asyncio", options


class _HideHypercornBanner(logging.Filter):
    """Drops Hypercorn's per-worker "Running on ..." lines: our own startup line
    already names every address, once, with the rest of the setup."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running on ")


#: The loggers ``serve`` prints itself when the project does not: ours, and Hypercorn's
#: error log (its access log, when turned on, keeps Hypercorn's own handler).
_FALLBACK_LOGGERS = ("channels_runtime", "hypercorn.error")


class _FallbackHandler(logging.StreamHandler):
    """stderr, in Hypercorn's format, for the records no other handler will print.

    A project whose ``LOGGING`` gives the root logger (or any logger on a record's
    way up) a handler has said where log lines go; a record reaching that handler
    *and* this one would be printed twice. So this handler steps aside for each
    record that has another handler ahead of it, and prints everything a project
    without logging configuration would otherwise lose. Deciding per record, not
    once at startup, also covers configuration applied later (Hypercorn's
    ``logconfig``) and handlers a project adds at runtime.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(
            logging.Formatter(
                "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S %z"
            )
        )

    def filter(self, record: logging.LogRecord) -> bool:
        return not _printed_elsewhere(record) and bool(super().filter(record))


def _printed_elsewhere(record: logging.LogRecord) -> bool:
    """Whether a handler other than a fallback (or a ``NullHandler``) gets ``record``.

    Walks the way ``Logger.callHandlers`` does: from the record's logger up to the
    root, stopping at a logger that does not propagate. Handler levels are not
    consulted: a project handler set to WARNING has decided that INFO lines are
    not shown, and printing them here in another format would overrule it.
    """
    current: logging.Logger | None = logging.getLogger(record.name)
    while current is not None:
        for handler in current.handlers:
            if not isinstance(handler, _FallbackHandler | logging.NullHandler):
                return True
        if not current.propagate:
            return False
        current = current.parent
    return False


def configure_logging(level: str) -> None:
    """Print channels_runtime's and Hypercorn's log lines on stderr, once each, at ``level``.

    Each of the :data:`_FALLBACK_LOGGERS` gets a :class:`_FallbackHandler`, which
    prints only what the project's own logging configuration does not: a project
    without ``LOGGING`` sees Hypercorn-style lines, one that configures a root
    handler sees every line once, through its handler. Django's ``LOGGING``
    keeps working for everything else. Called again once the project is loaded,
    because ``LOGGING`` may have replaced the handlers or, with
    ``disable_existing_loggers``, silenced these loggers.
    """
    # "hypercorn.error" too: it exists early only because the banner filter below is
    # attached to it, which must not get it disabled by the project's LOGGING.
    for name in (
        "channels_runtime",
        "channels_runtime.server",
        "channels_runtime.worker",
        "hypercorn.error",
    ):
        logging.getLogger(name).disabled = False
    for name in _FALLBACK_LOGGERS:
        named = logging.getLogger(name)
        named.setLevel(level.upper())
        if not any(isinstance(h, _FallbackHandler) for h in named.handlers):
            named.addHandler(_FallbackHandler())
    error_logger = logging.getLogger("hypercorn.error")
    if not any(isinstance(f, _HideHypercornBanner) for f in error_logger.filters):
        error_logger.addFilter(_HideHypercornBanner())


def show_runtime_logs(level: str) -> None:
    """Print channels_runtime's own log lines at ``level`` on stderr, where nothing else does.

    For ``manage.py runserver``, which leaves Hypercorn's logging to Hypercorn:
    the lines that say what the runtime did for the project (Django's
    ``ASGIHandler`` served by channels_runtime.http, a route not found) are
    shown, once each, as under ``serve``.
    """
    named = logging.getLogger("channels_runtime")
    named.disabled = False
    named.setLevel(level.upper())
    if not any(isinstance(h, _FallbackHandler) for h in named.handlers):
        named.addHandler(_FallbackHandler())


def _server_config(settings: dict[str, Any]) -> Config:
    """The Hypercorn config for ``settings``, with its error log left to :func:`configure_logging`.

    Given ``errorlog = "-"`` (its default), Hypercorn replaces the handlers of the
    ``hypercorn.error`` logger with its own stderr handler and lets records
    propagate to the root as well, so a project with a root handler saw each line
    twice, and one that configured ``hypercorn.error`` lost its handlers. Handing
    Hypercorn the logger itself makes it log there untouched. A file path is
    still Hypercorn's to handle.
    """
    config = build_config(settings)
    if config.errorlog == "-":
        config.errorlog = logging.getLogger("hypercorn.error")
    return config


@dataclass
class ServeSpec:
    """Everything a server process needs, in a form that survives pickling to a child."""

    target: str
    settings: dict[str, Any]
    log_level: str = "info"
    sources: list[str] = field(default_factory=list)
    #: Where workers publish their metrics (channels_runtime.metrics.publish); None: off.
    metrics_dir: str | None = None


@dataclass
class _Project:
    target: str
    app: ASGIApp
    layer: str
    default_layer: bool


def _load_project(spec: ServeSpec, worker_class: str) -> _Project:
    """Import the project (with the ``channels`` alias) and check it can run on ``worker_class``.

    What cannot (see :mod:`channels_runtime.server.preflight`) is a
    :class:`ProjectError`: exit status 2, before anything is bound or started.
    """
    target = split_target(spec.target)
    chosen = prepare_django(target.module, route="channels-runtime serve")
    app = import_application(target, settings_hint=chosen or settings_hint_for(target.module))
    default_layer = ensure_default_channel_layer()
    try:
        check_channel_layers(worker_class)
        app = prepare_application(app, worker_class, where=str(target))
    except Refused as exc:
        raise ProjectError(str(exc)) from None
    return _Project(str(target), app, describe_channel_layer(), default_layer)


def _describe_failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _is_expected_failure(exc: BaseException) -> bool:
    """Errors whose message says it all, so a traceback would only add noise."""
    from hypercorn.utils import LifespanFailureError, LifespanTimeoutError

    return isinstance(exc, LifespanFailureError | LifespanTimeoutError)


def _serve_in_this_process(
    app: ASGIApp,
    config: Config,
    sockets: Sockets,
    *,
    triggers: tuple[Callable[[], Any], ...] = (),
    signals: tuple[signal.Signals, ...] = SHUTDOWN_SIGNALS,
    metrics: Any = None,
    readiness: ServerReadiness | None = None,
    health: HealthEndpoints | None = None,
    drain_triggers: bool = True,
) -> int:
    """Serve on this process's event loop; ``metrics`` is a metrics Publisher or None."""
    backend, options = anyio_backend(config.worker_class, debug=bool(config.debug))
    serve = partial(
        serve_until,
        app,
        config,
        triggers=triggers,
        signals=signals,
        sockets=sockets,
        readiness=readiness,
        health=health,
        drain_triggers=drain_triggers,
    )
    if metrics is not None:
        from ..metrics.publish import serve_publishing

        serve = partial(serve_publishing, metrics, serve)
    try:
        result: ServeResult = anyio.run(serve, backend=backend, backend_options=options)
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except Exception as exc:
        if _is_expected_failure(exc):
            logger.error("Server stopped: %s", _describe_failure(exc))
        else:
            logger.exception("Server stopped by an error: %s", _describe_failure(exc))
        return EXIT_FAILURE
    if result.forced:
        return EXIT_FAILURE
    logger.info("Server stopped")
    return EXIT_OK


def run_serve(spec: ServeSpec) -> int:
    """Run ``channels-runtime serve`` as described by ``spec``; returns the exit status."""
    configure_logging(spec.log_level)
    config = _server_config(spec.settings)
    try:
        project = _load_project(spec, config.worker_class)
    except ProjectError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    configure_logging(spec.log_level)
    workers = max(config.workers, 1)
    supervised = workers > 1 or bool(config.use_reloader)
    try:
        metrics = _metrics_run(config, supervised)
    except ConfigError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    try:
        sockets = bind_sockets(config)
    except OSError as exc:
        logger.error("Cannot listen on %s: %s", ", ".join(config.bind), exc.strerror or exc)
        if metrics is not None:
            metrics.stop()
        return EXIT_FAILURE
    # The health routes are in place before the metrics bind listens: a probe
    # that comes early is told "starting" (503), never "not found".
    readiness = SupervisorReadiness(workers) if supervised else ServerReadiness()
    health = _health_endpoints(config, readiness.check, metrics)
    if metrics is not None:
        try:
            metrics.start()
        except OSError as exc:
            logger.error("Cannot listen on %s: %s", metrics.server.bind, exc.strerror or exc)
            close_sockets(sockets)
            return EXIT_FAILURE
        spec.metrics_dir = metrics.directory
    urls = socket_urls(sockets)
    layer = project.layer
    if project.default_layer:
        layer += " (built-in default: the settings define no CHANNEL_LAYERS)"
    logger.info(
        "channels-runtime serving %s on %s | worker class %s | %d worker%s | channel layer %s",
        project.target,
        ", ".join(urls),
        config.worker_class,
        workers,
        "" if workers == 1 else "s",
        layer,
    )
    if workers > 1 and project.layer.endswith(INMEMORY_BACKEND.rpartition(".")[2]):
        logger.warning(
            "The in-memory channel layer lives inside one process: with %d workers, "
            "group messages do not reach consumers in the other workers. Configure a "
            "shared layer (Redis) in CHANNEL_LAYERS.",
            workers,
        )
    if metrics is not None:
        logger.info("Metrics on %s/metrics", metrics.server.url)
    if config.pid_path:
        Path(config.pid_path).write_text(f"{os.getpid()}\n")
    try:
        if isinstance(readiness, ServerReadiness):
            return _serve_in_this_process(
                project.app,
                config,
                sockets,
                metrics=_publisher(spec, supervised=False),
                readiness=readiness,
                health=health,
            )
        return _Supervisor(spec, config, sockets, workers, metrics, readiness, health).run()
    finally:
        if metrics is not None:
            metrics.stop()
        if config.pid_path:
            Path(config.pid_path).unlink(missing_ok=True)


def _metrics_run(config: Config, supervised: bool) -> Any:
    """The run's :class:`~channels_runtime.metrics.serving.MetricsRun`, or None when off."""
    from ..metrics.serving import MetricsRun, metrics_bind

    bind = metrics_bind(config)
    return None if bind is None else MetricsRun(bind, supervised=supervised)


def _health_endpoints(config: Config, state: StateCheck, metrics: Any) -> HealthEndpoints | None:
    """``/healthz`` and ``/readyz`` added to the metrics bind (None when there is none).

    One process answers them: the server itself, or under ``-w N`` the supervisor,
    whose ``state`` covers every worker (see :mod:`channels_runtime.server.readiness`).
    """
    if metrics is None:
        return None
    options = options_from_config(config)
    endpoints = HealthEndpoints(HealthChecker(state, options.checks(), timeout=options.timeout))
    for path, handler in endpoints.routes().items():
        metrics.server.add_route(path, handler)
    return endpoints


def _publisher(spec: ServeSpec, *, supervised: bool) -> Any:
    """This worker's metrics Publisher (into ``spec.metrics_dir``), or None when off.

    A supervised worker also publishes its process metrics: the supervisor,
    which answers the scrapes, cannot collect them itself.
    """
    if spec.metrics_dir is None:
        return None
    from ..metrics.publish import Publisher

    return Publisher(spec.metrics_dir, include_process=supervised)


# -- worker processes ---------------------------------------------------------


def _worker_process(spec: ServeSpec, sockets: Sockets, stop_pipe: Any, status_pipe: Any) -> None:
    """Entry point of one worker process (started with the "spawn" method)."""
    # Ctrl-C reaches every process of the terminal's group; the parent turns it
    # into an orderly stop through the pipe, so the workers ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(spec.log_level)
    config = _server_config(spec.settings)
    try:
        project = _load_project(spec, config.worker_class)
    except ProjectError as exc:
        logger.error("%s", exc)
        sys.exit(EXIT_USAGE)
    configure_logging(spec.log_level)

    # The parent drains first (it tells this worker, so the main bind's readiness
    # path answers 503 too), then asks it to stop: no second drain on that request.
    readiness = ServerReadiness()
    parent = ParentLink(stop_pipe, status_pipe, readiness)
    status = _serve_in_this_process(
        project.app,
        config,
        sockets,
        triggers=(parent.wait_for_stop,),
        signals=(signal.SIGTERM,),
        readiness=readiness,
        drain_triggers=False,
        metrics=_publisher(spec, supervised=True),
    )
    sys.exit(status)


@dataclass
class _Child:
    process: Any  # multiprocessing.process.BaseProcess
    stop_writer: Any  # multiprocessing.connection.Connection
    #: The worker's reports of its state (readiness.ParentLink); None once at end of file.
    status_reader: Any = None

    @property
    def pid(self) -> int:
        return int(self.process.pid)

    def ask_to_stop(self) -> None:
        if not self.stop_writer.closed:
            self.stop_writer.close()

    def ask_to_drain(self) -> None:
        try:
            if not self.stop_writer.closed:
                self.stop_writer.send_bytes(DRAIN)
        except OSError:  # already gone; its exit is reaped as usual
            pass

    def close_status(self) -> None:
        if self.status_reader is not None:
            self.status_reader.close()
            self.status_reader = None


async def _close_channel_layers() -> None:
    from ..layers import channel_layers

    with anyio.move_on_after(CLOSE_LAYERS_TIMEOUT):
        await channel_layers.close_all()


def _status_of(exitcode: int) -> int:
    """A child's exit code as a shell would report it (128 + N when killed by signal N)."""
    return 128 - exitcode if exitcode < 0 else exitcode


def _watched_files() -> dict[Path, float]:
    """Source files of the loaded modules outside the Python installation."""
    prefixes = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    files: dict[Path, float] = {}
    for module in list(sys.modules.values()):
        filename = getattr(module, "__file__", None)
        if not filename or os.path.realpath(filename).startswith(prefixes):
            continue
        path = Path(filename)
        try:
            files[path] = path.stat().st_mtime
        except OSError:
            continue
    return files


def _changed(files: dict[Path, float]) -> Path | None:
    for path, mtime in files.items():
        try:
            if path.stat().st_mtime != mtime:
                return path
        except OSError:
            return path
    return None


class _Supervisor:
    """Runs and watches the worker processes; see the module docstring."""

    def __init__(
        self,
        spec: ServeSpec,
        config: Config,
        sockets: Sockets,
        workers: int,
        metrics: Any = None,
        readiness: SupervisorReadiness | None = None,
        health: HealthEndpoints | None = None,
    ) -> None:
        self.spec = spec
        #: The run's MetricsRun (or None), told of every worker reaped.
        self.metrics = metrics
        self.config = config
        self.sockets = sockets
        self.workers = workers
        self.context = multiprocessing.get_context("spawn")
        self.children: list[_Child] = []
        self.stop_reason: str | None = None
        self.reload_reason: str | None = None
        #: When the workers were killed (a second signal, or the shutdown allowance
        #: ran out); from then on only their exit is awaited, for up to KILL_WAIT.
        self.killed_at: float | None = None
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_reader, False)
        os.set_blocking(self._wake_writer, False)
        #: What /readyz on the metrics bind reports: this process and every worker.
        self.readiness = readiness or SupervisorReadiness(workers)
        #: The metrics bind's /healthz and /readyz (their routes already added), or None.
        self.health = health
        self.drain_seconds = options_from_config(config).drain_seconds

    # Signal handlers run between bytecodes of the main thread; they only record
    # the request and wake the wait below.

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_reason is not None:
            logger.warning("%s again: stopping the workers now", signal_name(signum))
            self._kill_children()
        self.stop_reason = self.stop_reason or signal_name(signum)
        self._wake()

    def _on_reload_signal(self, signum: int, frame: FrameType | None) -> None:
        self.reload_reason = signal_name(signum)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_writer, b"x")
        except OSError as exc:  # a full pipe already wakes the loop
            if exc.errno != errno.EAGAIN:
                raise

    def _spawn(self) -> None:
        reader, writer = self.context.Pipe(duplex=False)
        status_reader, status_writer = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_process,
            args=(self.spec, self.sockets, reader, status_writer),
            name="channels-runtime worker",
            daemon=False,
        )
        # Started with SIGINT ignored so the child inherits that from its first
        # instruction on, not only once it has imported enough to ignore it itself.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            signal.signal(signal.SIGINT, previous)
        reader.close()  # the child holds the only reading end now
        status_writer.close()  # and the only writing end of this one
        child = _Child(process, writer, status_reader)
        self.children.append(child)
        self.readiness.worker_state(child.pid, ServerState.STARTING)

    def _read_status(self, child: _Child) -> None:
        if child.status_reader is None:
            return
        states, ended = read_states(child.status_reader)
        for state in states:
            self.readiness.worker_state(child.pid, state)
        if ended:
            child.close_status()

    def _forget(self, child: _Child) -> None:
        """A worker is gone: drop its pipes and its place in the readiness report."""
        child.ask_to_stop()
        child.close_status()
        self.readiness.worker_gone(child.pid)

    def _stop_children(self) -> None:
        for child in self.children:
            child.ask_to_stop()

    def _kill_children(self) -> None:
        """SIGKILL the workers still running; :meth:`_run` then waits for them to exit."""
        if self.killed_at is None:
            self.killed_at = time.monotonic()
        for child in self.children:
            child.process.kill()  # a no-op for a child already reaped

    def _reap(self, deadline: float | None) -> list[tuple[_Child, int]]:
        """Wait until a child exits, a signal arrives, or ``deadline``; return exited children."""
        timeout = RELOAD_POLL_INTERVAL if self.config.use_reloader else None
        if deadline is not None:
            remaining = max(deadline - time.monotonic(), 0.0)
            timeout = remaining if timeout is None else min(timeout, remaining)
        sentinels: dict[Any, _Child] = {child.process.sentinel: child for child in self.children}
        statuses = [c.status_reader for c in self.children if c.status_reader is not None]
        ready = multiprocessing.connection.wait([*sentinels, *statuses, self._wake_reader], timeout)
        try:
            while os.read(self._wake_reader, 512):
                pass
        except BlockingIOError:
            pass
        for child in self.children:
            if child.status_reader in ready:
                self._read_status(child)
        exited = []
        for child in list(self.children):
            if child.process.exitcode is not None:
                child.process.join()
                self._forget(child)
                self.children.remove(child)
                exited.append((child, child.process.exitcode))
                if self.metrics is not None:
                    self.metrics.worker_exited(child.process.pid)
        if any(sentinels[r].process.exitcode is None for r in ready if r in sentinels):
            # The sentinel says the worker is gone, yet it cannot be reaped: a tracer
            # (strace, gdb) is told of its death first. The sentinel stays readable,
            # so waiting on it again would return at once; poll slowly instead.
            time.sleep(UNREAPED_POLL_INTERVAL)
        return exited

    def _abandon_children(self) -> None:
        """Forget the workers SIGKILL did not end, so that exiting does not wait for them.

        multiprocessing joins every child it knows of when the interpreter exits,
        which would make the bounded wait in :meth:`_run` endless after all; its
        registry of children has no public way out, hence the guarded lookup.
        Once this process is gone they are reparented and reaped when they die.
        """
        registry = getattr(multiprocessing.process, "_children", None)
        for child in self.children:
            self._forget(child)
            if isinstance(registry, set):
                registry.discard(child.process)
        self.children.clear()

    def _restart_all(self, reason: str) -> None:
        logger.info("Reloading the workers (%s)", reason)
        self._stop_children()
        deadline = time.monotonic() + self._shutdown_allowance()
        while self.children and time.monotonic() < deadline:
            self._reap(deadline)
        for child in self.children:
            child.process.kill()
            child.process.join()
            self._forget(child)
            if self.metrics is not None:
                self.metrics.worker_exited(child.process.pid)
        self.children.clear()
        for _ in range(self.workers):
            self._spawn()

    @contextmanager
    def _health_loop(self) -> Iterator[None]:
        """With a metrics bind, an event loop on a thread for ``/readyz``'s checks.

        This process runs no event loop of its own, and the checks (a Redis PING)
        need one; it is the worker class's, and the layers opened on it are
        closed with it.
        """
        endpoints = self.health
        if endpoints is None:
            yield
            return
        backend, options = anyio_backend(self.config.worker_class)
        with anyio.from_thread.start_blocking_portal(backend, options) as portal:
            endpoints.attach(portal)
            try:
                yield
            finally:
                endpoints.attach(None)
                try:
                    portal.call(_close_channel_layers)
                except Exception as exc:
                    logger.debug("Closing the readiness checks' channel layers: %r", exc)

    def _drains(self, status: int) -> bool:
        """Whether this stop starts with a drain: SIGTERM (not Ctrl-C), nothing failed."""
        return (
            self.drain_seconds > 0
            and self.stop_reason == signal_name(signal.SIGTERM)
            and status == EXIT_OK
            and self.killed_at is None
            and self.readiness.own.state is ServerState.SERVING
        )

    def _start_draining(self) -> float:
        """Report not ready (here and in every worker) and return when the drain ends.

        The sockets stay open and the workers keep accepting and serving; a
        worker that exits meanwhile is not replaced.
        """
        self.readiness.own.advance(ServerState.DRAINING)
        logger.info(
            "Draining for %gs (%s): readiness reports 503, the workers still accept and serve",
            self.drain_seconds,
            self.stop_reason,
        )
        for child in self.children:
            child.ask_to_drain()
        return time.monotonic() + self.drain_seconds

    def _still_draining(self, drain_until: float, status: int) -> bool:
        """The drain goes on until its time is up, a worker fails or a second signal came."""
        return time.monotonic() < drain_until and status == EXIT_OK and self.killed_at is None

    def _shutdown_allowance(self) -> float:
        """How long workers may take to stop: the graceful period, lifespan shutdown, slack."""
        return float(self.config.graceful_timeout) + float(self.config.shutdown_timeout) + 5.0

    def run(self) -> int:
        handlers = {
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_stop_signal),
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_stop_signal),
            signal.SIGHUP: signal.signal(signal.SIGHUP, self._on_reload_signal),
        }
        try:
            with self._health_loop():
                return self._run()
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            close_sockets(self.sockets)
            os.close(self._wake_reader)
            os.close(self._wake_writer)

    def _run(self) -> int:
        """Watch the workers until all are gone; returns the exit status.

        Every wait is :meth:`_reap`, which sleeps until a worker exits, a signal
        arrives or the current deadline passes: first the shutdown allowance,
        then, once the workers are killed, :data:`KILL_WAIT` for their exit.
        Killing moves the deadline forward, so the loop never finds it already
        passed again and spins.
        """
        status = EXIT_OK
        watched = _watched_files() if self.config.use_reloader else {}
        for _ in range(self.workers):
            self._spawn()
        self.readiness.own.advance(ServerState.SERVING)
        shutting_down = False
        deadline: float | None = None
        drain_until: float | None = None
        while self.children:
            if self.killed_at is not None:
                deadline = self.killed_at + KILL_WAIT
            for child, exitcode in self._reap(deadline if deadline is not None else drain_until):
                pid = child.process.pid
                if exitcode == 0 and not shutting_down and drain_until is None:
                    logger.info("Worker %s exited; starting a new one", pid)
                    self._spawn()
                elif exitcode != 0 and self.killed_at is not None:
                    # Our own SIGKILL: its 137 says nothing about the worker, the
                    # forced stop is a failure (1), as in a single-process server.
                    status = status or EXIT_FAILURE
                elif exitcode != 0:
                    if status == EXIT_OK:
                        status = _status_of(exitcode)
                    if not shutting_down:
                        logger.error(
                            "Worker %s exited with status %s; stopping the server",
                            pid,
                            _status_of(exitcode),
                        )
                        self.stop_reason = self.stop_reason or "worker failure"
            if self.stop_reason is not None and drain_until is None and self._drains(status):
                drain_until = self._start_draining()
            if (
                self.stop_reason is not None
                and not shutting_down
                and (drain_until is None or not self._still_draining(drain_until, status))
            ):
                shutting_down = True
                self.readiness.own.advance(ServerState.STOPPING)
                logger.info("Shutting down (%s)", self.stop_reason)
                if deadline is None:  # (not already set by a kill)
                    deadline = time.monotonic() + self._shutdown_allowance()
                close_sockets(self.sockets)  # no new connections queue up for nobody
                self._stop_children()
            elif not shutting_down:
                reason = self.reload_reason
                if reason is None and watched:
                    changed = _changed(watched)
                    reason = f"{changed} changed" if changed else None
                if reason is not None:
                    self.reload_reason = None
                    self._restart_all(reason)
                    watched = _watched_files()
            if deadline is not None and time.monotonic() >= deadline and self.children:
                status = status or EXIT_FAILURE
                if self.killed_at is not None:
                    logger.error(
                        "Worker%s %s not reaped %gs after SIGKILL (stuck in the kernel, or "
                        "held by a debugger); exiting without %s",
                        "s" if len(self.children) > 1 else "",
                        ", ".join(str(child.process.pid) for child in self.children),
                        KILL_WAIT,
                        "them" if len(self.children) > 1 else "it",
                    )
                    self._abandon_children()
                    break
                logger.error("Workers did not stop in time; killing them")
                self._kill_children()
        if status == EXIT_OK:
            logger.info("Server stopped")
        return status
