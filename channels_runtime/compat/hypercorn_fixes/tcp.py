"""Hypercorn's TCP servers with bounded writes, bounded closes and contained errors.

Checked against Hypercorn 0.17.3 and 0.18.0, one connection can hold up far
more than itself:

* **A client that stops reading.** Hypercorn waits for room in the socket
  buffer for as long as it takes (asyncio ``drain()``; trio ``send_all()``
  inside a *shielded* cancel scope). The application's ``send()`` never
  returns, its memory stays, and at shutdown nothing can interrupt that
  write: the trio worker ignores the cancellation, the asyncio worker
  cancels the write but then writes the close frame the same way and, when
  closing the socket, waits for the kernel to flush it. The process stays
  up for as long as that client keeps its socket open.
* **Writes after the connection was lost.** On asyncio they go to a dead
  transport, which logs ``socket.send() raised exception.`` for each one.
* **An error while handling one connection** (such as the h11
  ``LocalProtocolError`` of pgjones/hypercorn#225) escapes the connection's
  task; on the trio worker it ends the whole server.

:func:`install` patches both ``TCPServer`` classes in place:

* a write that cannot complete within ``write_timeout`` seconds (a
  channels-runtime setting, see :mod:`.options`) closes the connection as a
  slow client: one warning line, the connection is aborted (the client
  cannot read a close frame anyway), and its WebSocket application receives
  ``websocket.disconnect`` with code :data:`SLOW_CLIENT_CODE`;
* closing a socket waits at most as long for buffered bytes to be flushed;
* once :func:`set_shutdown_deadline` has been called, no write and no close
  waits past that deadline, and :func:`abort_all` cuts every connection
  that is still open (``channels-runtime serve`` calls it when
  ``graceful_timeout`` runs out; plain Hypercorn has no hook for it);
* an exception from one connection is logged in one line and ends only
  that connection;
* a keep-alive connection the client has closed is released at once.
  Hypercorn reads the client's EOF but then waits for the idle timer it
  started after the last response (``keep_alive_timeout``), holding the
  socket in CLOSE-WAIT and its tasks: a client opening and closing
  connections at R per second pinned R x ``keep_alive_timeout``
  descriptors (found by the soak test, ``tests/test_soak.py``).

The fast path of a write that the kernel takes at once costs one buffer-size
check on asyncio and one deadline on trio's existing cancel scope.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from hypercorn.events import Closed, RawData

from channels_runtime import metrics
from channels_runtime.asgi import describe_client

from .options import WRITE_TIMEOUT, option
from .ws_stream import WebSocketStream

__all__ = [
    "SLOW_CLIENT_CODE",
    "abort_all",
    "buffered_bytes",
    "install",
    "open_connections",
    "set_shutdown_deadline",
    "wait_all_closed",
]

logger = logging.getLogger("channels_runtime.server")

#: RFC 6455 "try again later": what a WebSocket application is told when the
#: server closed its connection because the client stopped reading.
SLOW_CLIENT_CODE = 1013

# Every connection being served, whatever server it belongs to. Servers are told
# apart by their Config object: serve_until hands Hypercorn a copy of its own.
_open: weakref.WeakSet[Any] = weakref.WeakSet()
_all_closed: list[tuple[Any, Callable[[], None]]] = []  # (config, wake-up) for wait_all_closed
_DEADLINE = "_channels_runtime_shutdown_deadline"


def set_shutdown_deadline(config: Any, deadline: float | None) -> None:
    """No write or close of ``config``'s connections waits past ``deadline`` from now on.

    ``deadline`` is a ``time.monotonic()`` value; ``None`` lifts it.
    """
    setattr(config, _DEADLINE, deadline)


def _deadline(config: Any) -> float | None:
    return getattr(config, _DEADLINE, None)


def open_connections(config: Any = None) -> int:
    """How many TCP connections are open (those served with ``config``, if given)."""
    if config is None:
        return len(_open)
    return sum(1 for server in list(_open) if server.config is config)


def buffered_bytes() -> int:
    """Bytes the open connections have handed to the server but not to the kernel yet.

    asyncio: the transports' write buffers; trio: the writes in progress (trio
    keeps no buffer: a write waits until the kernel has taken it all). For the
    metrics (:mod:`channels_runtime.metrics.outbound`); call on the loop's thread.
    """
    total = 0
    for server in list(_open):
        writer = getattr(server, "writer", None)
        if writer is not None:
            total += writer.transport.get_write_buffer_size()
        elif server.send_lock.locked():  # the size of the write holding the lock
            total += getattr(server, "_channels_runtime_writing", 0)
    return total


def _write_limit(config: Any) -> float:
    """Seconds a write (or a close's flush) may wait from now; ``inf`` for no limit."""
    timeout = option(config, WRITE_TIMEOUT)
    limit = float(timeout) if timeout else math.inf
    deadline = _deadline(config)
    if deadline is not None:
        limit = min(limit, max(deadline - time.monotonic(), 0.0))
    return limit


def _peer(server: Any) -> str:
    known = getattr(server, "_channels_runtime_peer", None)
    if known is not None:
        return str(known)
    try:
        if hasattr(server, "writer"):
            name = server.writer.get_extra_info("peername")
        else:
            stream = getattr(server.stream, "transport_stream", server.stream)
            name = stream.socket.getpeername()
    except (OSError, AttributeError):
        return describe_client(None)
    return describe_client(name)


def _mark_websockets(server: Any, code: int, reason: str) -> None:
    """Tell the WebSocket streams of ``server``'s connection why it is being closed."""
    protocol = getattr(getattr(server, "protocol", None), "protocol", None)
    streams: list[Any] = []
    if protocol is not None:
        stream = getattr(protocol, "stream", None)
        if stream is not None:
            streams.append(stream)
        streams.extend(getattr(protocol, "streams", {}).values())
    for stream in streams:
        if isinstance(stream, WebSocketStream):
            stream.note_close(code, reason)


def _report_slow_client(server: Any, limit: float) -> None:
    deadline = _deadline(server.config)
    if deadline is not None and time.monotonic() >= deadline - 0.01:
        logger.info("Closing the connection to %s at the shutdown deadline", _peer(server))
        _mark_websockets(server, 1001, "server shutdown")
        return
    logger.warning(
        "Closing the connection to %s: it has not read for %gs (write_timeout)",
        _peer(server),
        limit,
    )
    if metrics.enabled:
        metrics.outbound.slow_client("write_timeout")
    _mark_websockets(server, SLOW_CLIENT_CODE, "client too slow")


def _idle(server: Any) -> bool:
    """Whether ``server``'s connection has no request in progress."""
    protocol = getattr(getattr(server, "protocol", None), "protocol", None)
    if protocol is None:
        return True
    if getattr(protocol, "stream", None) is not None:
        return False
    return not getattr(protocol, "streams", None)


def _release_on_eof(
    read_data: Callable[[Any], Coroutine[Any, Any, None]],
) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """``TCPServer._read_data`` that, once the client has closed, stops the idle timer.

    With no request in progress nothing is left to answer, so the connection's
    task group can end (and the socket close) now rather than at
    ``keep_alive_timeout``.
    """

    async def read_until_closed(self: Any) -> None:
        await read_data(self)
        if _idle(self):
            await self.idle_task.stop()

    read_until_closed.__wrapped__ = read_data  # type: ignore[attr-defined]
    return read_until_closed


def _closed_one(config: Any) -> None:
    if not _all_closed:
        return
    for waiting_config, wake in list(_all_closed):
        if waiting_config is config and not open_connections(config):
            wake()


# -- asyncio ------------------------------------------------------------------


def _abort_asyncio(server: Any) -> None:
    server.writer.transport.abort()


def _slow_asyncio_client(server: Any, limit: float) -> None:
    transport = server.writer.transport
    if not transport.is_closing() or transport.get_write_buffer_size():
        _report_slow_client(server, limit)
        transport.abort()


def _after(limit: float, callback: Callable[..., None], *args: Any) -> asyncio.TimerHandle | None:
    """Call ``callback(*args)`` once ``limit`` seconds have passed (never, for ``inf``)."""
    if not math.isfinite(limit):
        return None
    return asyncio.get_running_loop().call_later(max(limit, 0.0), callback, *args)


def _patch_asyncio(server_class: Any) -> None:
    if getattr(server_class, "_channels_runtime_fixed", False):
        return
    original_send = server_class.protocol_send
    original_close = server_class._close
    original_run = server_class.run

    async def protocol_send(self: Any, event: Any) -> None:
        if not isinstance(event, RawData):
            await original_send(self, event)
            return
        async with self.send_lock:
            writer = self.writer
            transport = writer.transport
            try:
                if transport.is_closing():
                    # Lost or closing: writing would only make asyncio log a warning.
                    raise ConnectionResetError("the connection is closed")
                writer.write(event.data)
                if transport.get_write_buffer_size():
                    limit = _write_limit(self.config)
                    timer = _after(limit, _slow_asyncio_client, self, limit)
                    try:
                        await writer.drain()
                    finally:
                        if timer is not None:
                            timer.cancel()
                else:
                    await writer.drain()
            except (ConnectionError, RuntimeError):
                await self.protocol.handle(Closed())

    async def close(self: Any) -> None:
        transport = self.writer.transport
        if not transport.get_write_buffer_size():
            await original_close(self)
            return
        timer = _after(_write_limit(self.config), transport.abort)
        try:
            await original_close(self)
        finally:
            if timer is not None:
                timer.cancel()

    server_class.protocol_send = protocol_send
    server_class._close = close
    server_class._read_data = _release_on_eof(server_class._read_data)
    # The connection task belongs to asyncio's start_server(), which awaits
    # nobody's result: on Python 3.11 its done-callback calls task.exception()
    # on a cancelled task and logs the CancelledError with a traceback
    # ("Exception in callback StreamReaderProtocol...") for every connection
    # cancelled at shutdown (3.12 checks first). The connection is closed by
    # then; ending the task quietly loses nothing.
    server_class.run = _contained(original_run, _abort_asyncio, quiet=asyncio.CancelledError)
    server_class._channels_runtime_fixed = True


# -- trio ---------------------------------------------------------------------


def _abort_trio(server: Any) -> None:
    stream = getattr(server.stream, "transport_stream", server.stream)
    stream.socket.close()


def _patch_trio(server_class: Any) -> None:
    if getattr(server_class, "_channels_runtime_fixed", False):
        return
    import trio

    original_send = server_class.protocol_send
    original_close = server_class._close
    original_run = server_class.run

    async def protocol_send(self: Any, event: Any) -> None:
        if not isinstance(event, RawData):
            await original_send(self, event)
            return
        async with self.send_lock:
            limit = _write_limit(self.config)
            try:
                # Shielded, as in Hypercorn, so a cancellation cannot cut a frame in
                # half; but with a deadline, so a client that does not read cannot
                # hold the write (and the shutdown) forever.
                with trio.CancelScope(shield=True, deadline=trio.current_time() + limit) as scope:
                    if metrics.enabled:  # held bytes, for the metrics (buffered_bytes)
                        self._channels_runtime_writing = len(event.data)
                    await self.stream.send_all(event.data)
                if scope.cancelled_caught:
                    _report_slow_client(self, limit)
                    _abort_trio(self)
                    raise trio.ClosedResourceError
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                await self.protocol.handle(Closed())

    async def close(self: Any) -> None:
        # Hypercorn sends the EOF without the send lock; when another task is still
        # writing (the reader answering 400 to stray bytes while the application's
        # response ends), trio raises BusyResourceError and that answer is lost.
        # Wait for the write in flight (bounded by write_timeout) unless it is ours.
        lock = self.send_lock
        if lock.statistics().owner is trio.lowlevel.current_task():
            await original_close(self)
            return
        async with lock:
            await original_close(self)

    server_class.protocol_send = protocol_send
    server_class._close = close
    server_class._read_data = _release_on_eof(server_class._read_data)
    server_class.run = _contained(original_run, _abort_trio)
    server_class._channels_runtime_fixed = True


# -- both ---------------------------------------------------------------------


def _contained(
    run: Callable[[Any], Coroutine[Any, Any, None]],
    abort: Callable[[Any], None],
    quiet: type[BaseException] | tuple[()] = (),
) -> Callable[[Any], Coroutine[Any, Any, None]]:
    """``TCPServer.run`` registered for :func:`abort_all`, with its errors kept to itself.

    ``quiet``: an exception that ends the connection's task silently instead of
    propagating. One wrapper, not two: each frame around ``run`` is resumed
    with every read from the client.
    """

    async def contained_run(self: Any) -> None:
        self._channels_runtime_abort = abort
        # Looked up now: once the socket is closed (trio) the address is gone.
        self._channels_runtime_peer = _peer(self)
        _open.add(self)
        try:
            try:  # nested: one function cannot have both except* and except
                await run(self)
            except* Exception as group:
                errors = group.exceptions
                logger.warning(
                    "Connection from %s ended by an error in the server: %s",
                    _peer(self),
                    "; ".join(f"{type(error).__name__}: {error}" for error in errors),
                )
                try:
                    abort(self)
                except OSError:
                    pass
            finally:
                _open.discard(self)
                _closed_one(self.config)
        except quiet:
            return

    contained_run.__wrapped__ = run  # type: ignore[attr-defined]
    return contained_run


def abort_all(config: Any) -> int:
    """Cut every open connection served with ``config`` at once; return how many.

    Their applications receive their disconnect (WebSocket code 1001) as the
    reads and writes fail. Call from the event loop's thread.
    """
    servers = [server for server in list(_open) if server.config is config]
    for server in servers:
        _mark_websockets(server, 1001, "server shutdown")
        try:
            server._channels_runtime_abort(server)
        except (OSError, AttributeError):
            pass
    return len(servers)


async def wait_all_closed(config: Any) -> None:
    """Return once no connection served with ``config`` is open (at once if none is)."""
    if not open_connections(config):
        return
    from channels_runtime.compat.wakeup import new_wakeup

    wakeup = new_wakeup()
    entry = (config, wakeup.set)
    _all_closed.append(entry)
    try:
        await wakeup.wait()
    finally:
        try:
            _all_closed.remove(entry)
        except ValueError:
            pass


def install() -> None:
    """Patch Hypercorn's asyncio and (if trio is installed) trio TCP servers (idempotent)."""
    from hypercorn.asyncio.tcp_server import TCPServer as AsyncioTCPServer

    _patch_asyncio(AsyncioTCPServer)
    try:
        from hypercorn.trio.tcp_server import TCPServer as TrioTCPServer
    except ImportError:  # trio is an optional extra
        return
    _patch_trio(TrioTCPServer)
