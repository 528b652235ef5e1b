"""How a sync consumer's handler thread sends messages to the client.

Channels makes ``SyncConsumer.send`` an ``async_to_sync(send)``: every frame
goes from the handler's thread to the event loop and the thread waits for
the answer, two cross-thread wake-ups through asgiref's executor machinery
on top of the two every message already costs to reach the thread. Worse,
sync handlers share one thread (the thread-sensitive one), so while one
client's socket buffer is full, that wait holds up every sync consumer in
the process, down to new connections' handshakes, until the client reads
or leaves.

:class:`ThreadSender` therefore never lets the thread wait on a client:

* ``websocket.send`` frames and ``websocket.close`` are queued and handed to
  the loop with one thread-safe call; ``send`` returns at once. A sender task
  (owned by the consumer's task group) passes them to the server in order.
* The consumer does not handle its next message until every message the
  handler queued has been taken by the server (:meth:`ThreadSender.flush`),
  so per connection there is the same back-pressure as before. That wait is
  on the loop, where it costs the other consumers nothing.
* The queue is bounded, as a memory safety net, by frame count
  (``max_queued``) and by payload size (``max_bytes``: ``bytes`` length, or
  the UTF-8 length of ``text``). A frame that would take the queue past
  either bound means the client takes frames more slowly than the
  application makes them, and nothing the thread could wait for would make
  that better without stalling everyone else. So the connection is given
  up: the frames still queued are dropped, a ``websocket.close`` with code
  1013 ("try again later") takes their place, one warning is logged, and
  every later send from the handler is dropped silently; the consumer then
  gets its ``websocket.disconnect`` as usual. Nothing blocks and nothing is
  raised into the handler, which could not do anything useful about it.
  A frame sent when nothing is waiting is always queued, however big: its
  memory is already the handler's, and no client has been slow yet.
* Only other message types (``websocket.accept``, HTTP responses, whatever a
  middleware may act on) block as in Channels, after the queued messages
  have gone out, so order is kept. ``max_queued=0`` makes every send block,
  Channels' behaviour exactly, with no bound and no 1013.
* A failing server ``send`` is raised by the handler's next ``send`` or, if
  there is none, by the dispatch of the message that queued it, as the
  handler's own exception would be; later frames are dropped.

The handler thread runs Python without pause while it builds frames, and
the loop thread only gets the interpreter lock between its own switch
intervals, so a burst made in one handler call is mostly still queued when
the call returns, even for a client that reads everything at once. The
bounds are therefore set high enough for the largest burst one call
legitimately makes (see ``SyncConsumer``); a client that stops reading
entirely while the queue is under them is the server's to time out, and the
thread never waits for that either.

The sender runs inside its own ``ThreadSensitiveContext``: should a
middleware do thread-sensitive work (``database_sync_to_async``) for a frame,
that work cannot wait for the handler's thread while the handler waits for
it.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from . import metrics
from .asgi import Message, Send, describe_client
from .compat.loop_calls import loop_caller
from .compat.wakeup import Wakeup, new_wakeup
from .metrics import outbound as outbound_metrics
from .sync import ThreadSensitiveContext, async_to_sync

__all__ = ["CLOSE_CODE_TRY_AGAIN_LATER", "ThreadSender"]

logger = logging.getLogger(__name__)

#: "Try Again Later" (RFC 6455 §7.4.1, IANA registry): the close code for a client too slow.
CLOSE_CODE_TRY_AGAIN_LATER = 1013


def payload_size(message: Message) -> int:
    """Bytes a ``websocket.send`` message puts on the wire, before framing.

    ``bytes`` is looked at first, as Hypercorn does. ``text`` counts its
    UTF-8 length (``len`` alone for ASCII, which ``isascii`` tells in
    constant time). A payload of the wrong type counts nothing: the server's
    send reports that mistake, as it would without a queue.
    """
    data = message.get("bytes")
    if data is not None:
        try:
            return len(data)
        except TypeError:
            return 0
    text = message.get("text")
    if isinstance(text, str):
        return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
    return 0


class ThreadSender:
    """A sync consumer's ``base_send``: callable from its handler thread.

    Make it on the event loop, run :meth:`run` in a task of the consumer's
    task group, and await :meth:`flush` after each handler. ``owner`` and
    ``client`` (the scope's ``"client"``) only name the connection in the
    warning logged when a bound is hit.
    """

    __slots__ = (
        "_blocking_send",
        "_call_soon",
        "_client",
        "_drain_waiters",
        "_dropping",
        "_error",
        "_idle",
        "_mutex",
        "_owner",
        "_pending",
        "_queue",
        "_queued_bytes",
        "_send",
        "_wake",
        "max_bytes",
        "max_queued",
    )

    def __init__(
        self,
        send: Send,
        max_queued: int,
        max_bytes: int,
        *,
        owner: str = "a sync consumer",
        client: Any = None,
    ) -> None:
        if max_queued < 0:
            raise ValueError(f"max_queued must be 0 or more, got {max_queued!r}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be 0 or more, got {max_bytes!r}")
        self._send = send
        self.max_queued = max_queued
        self.max_bytes = max_bytes
        self._owner = owner
        self._client = client
        self._call_soon = loop_caller()
        self._blocking_send = async_to_sync(self._send_in_order)
        # (message, payload size) pairs, so the sender can give the bytes back.
        self._queue: deque[tuple[Message, int]] = deque()
        self._mutex = threading.Lock()  # guards _queue, _pending, _queued_bytes and _idle
        self._pending = 0  # messages queued or being sent
        self._queued_bytes = 0  # their payload bytes
        self._idle = True  # the sender task is asleep and must be woken for new messages
        self._dropping = False  # a bound was hit: the connection is closing, sends are dropped
        self._wake: Wakeup = new_wakeup()
        self._drain_waiters: list[Wakeup] = []
        self._error: BaseException | None = None

    @property
    def pending(self) -> int:
        """Messages queued or being handed to the server right now."""
        return self._pending

    @property
    def pending_bytes(self) -> int:
        """Payload bytes of the frames counted by :attr:`pending`."""
        return self._queued_bytes

    @property
    def failed(self) -> bool:
        """Whether a server ``send`` has raised (the error :meth:`flush` raises)."""
        return self._error is not None

    @property
    def overflowed(self) -> bool:
        """Whether a bound was hit, so the connection is being closed with 1013."""
        return self._dropping

    # -- the handler's thread -----------------------------------------------

    def __call__(self, message: Message) -> None:
        """Send ``message``: queue it if it is a frame or a close, else wait for the server."""
        if self._dropping:
            return  # the connection is being closed for being too slow
        error = self._error
        if error is not None:
            raise error
        if self.max_queued:
            kind = message.get("type")
            if kind == "websocket.send":
                # Inline for the common frame, a short ASCII text; the rest, and
                # the rules, in payload_size().
                text = message.get("text")
                if text.__class__ is str and text.isascii() and message.get("bytes") is None:
                    size = len(text)
                else:
                    size = payload_size(message)
                with self._mutex:
                    pending, queued_bytes = self._pending, self._queued_bytes
                    fits = not pending or (
                        pending < self.max_queued and queued_bytes + size <= self.max_bytes
                    )
                    if fits:
                        self._pending = pending + 1
                        self._queued_bytes = queued_bytes + size
                        self._queue.append((message, size))
                        wake = self._idle
                        self._idle = False
                if not fits:
                    self._give_up(pending, queued_bytes, size)
                elif wake:
                    self._call_soon(self._wake_sender)
                return
            if kind == "websocket.close":
                # Not bounded: it is the last message the client needs, and what
                # the bounds would end with anyway.
                with self._mutex:
                    self._pending += 1
                    self._queue.append((message, 0))
                    wake = self._idle
                    self._idle = False
                if wake:
                    self._call_soon(self._wake_sender)
                return
        self._blocking_send(message)

    def _give_up(self, pending: int, queued_bytes: int, size: int) -> None:
        """A frame of ``size`` bytes did not fit: close with 1013 instead, and say why.

        ``pending`` and ``queued_bytes`` are what the queue held when the frame
        was refused. Frames the sender took since then go out (they came
        first); the rest are dropped.
        """
        close: Message = {"type": "websocket.close", "code": CLOSE_CODE_TRY_AGAIN_LATER}
        with self._mutex:
            dropped = len(self._queue)
            for _, dropped_size in self._queue:
                self._queued_bytes -= dropped_size
            self._queue.clear()
            self._pending -= dropped
            self._dropping = True
            self._pending += 1
            self._queue.append((close, 0))
            wake = self._idle
            self._idle = False
        if wake:
            self._call_soon(self._wake_sender)
        if metrics.enabled:  # counted on the loop, which owns the metrics
            self._call_soon(outbound_metrics.sync_send_queue_full)
        if pending >= self.max_queued:
            bound = f"reached max_queued_sends={self.max_queued} ({pending} messages waiting)"
        else:
            bound = (
                f"would pass max_queued_send_bytes={self.max_bytes} with the next frame "
                f"({queued_bytes} bytes waiting, {size} more)"
            )
        logger.warning(
            "%s: closing the WebSocket of client %s with code %d (try again later): it reads "
            "more slowly than the consumer sends, and the send queue %s; dropping the %d "
            "frames not sent yet and every later send",
            self._owner,
            describe_client(self._client),
            CLOSE_CODE_TRY_AGAIN_LATER,
            bound,
            dropped + 1,
        )

    # -- the event loop ------------------------------------------------------

    def _wake_sender(self) -> None:
        self._wake.set()

    async def _send_in_order(self, message: Message) -> None:
        """The blocking path: wait for the queued messages, then send this one."""
        await self.flush()
        await self._send(message)

    async def run(self) -> None:
        """The sender task: pass queued messages to the server until cancelled."""
        async with ThreadSensitiveContext():
            while True:
                await self._wake.wait()
                self._wake = new_wakeup()
                while True:
                    with self._mutex:
                        if not self._queue:
                            self._idle = True
                            break
                        message, size = self._queue.popleft()
                    try:
                        if self._error is None:
                            await self._send(message)
                    except Exception as exc:
                        self._error = exc
                    finally:
                        with self._mutex:
                            self._pending -= 1
                            self._queued_bytes -= size
                            drained = not self._pending
                        if drained and self._drain_waiters:
                            waiters, self._drain_waiters = self._drain_waiters, []
                            for waiter in waiters:
                                waiter.set()

    async def flush(self, *, raise_error: bool = True) -> None:
        """Wait until every queued message has been taken by the server.

        Raises the exception a server ``send`` raised, if any, unless
        ``raise_error`` is false.
        """
        if self._pending:
            waiter = new_wakeup()
            self._drain_waiters.append(waiter)
            await waiter.wait()
        if raise_error and self._error is not None:
            raise self._error
