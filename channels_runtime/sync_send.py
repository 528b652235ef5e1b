"""How a sync consumer's handler thread sends messages to the client.

Channels makes ``SyncConsumer.send`` an ``async_to_sync(send)``: every frame
goes from the handler's thread to the event loop and the thread waits for
the answer, two cross-thread wake-ups through asgiref's executor machinery
on top of the two every message already costs to reach the thread. Worse,
sync handlers share one thread (the thread-sensitive one), so a slow client
whose socket buffer is full holds up every sync consumer in the process
until it drains.

:class:`ThreadSender` keeps ``send``'s guarantees that matter and drops that
wait for the common frame:

* ``websocket.send`` frames are queued and handed to the loop with one
  thread-safe call; ``send`` returns at once. A sender task (owned by the
  consumer's task group) passes them to the server in order.
* The consumer does not handle its next message until every frame the
  handler queued has been taken by the server (:meth:`ThreadSender.flush`),
  so per connection there is the same back-pressure as before, without
  blocking the shared thread.
* At most ``max_queued`` frames wait at once. Past that, and for every other
  message type (``websocket.accept``/``close``, HTTP responses, whatever a
  middleware may act on), ``send`` blocks as in Channels, after the queued
  frames have gone out, so order is kept. ``max_queued=0`` makes every send
  block.
* A failing server ``send`` is raised by the handler's next ``send`` or, if
  there is none, by the dispatch of the message that queued it, as the
  handler's own exception would be; later frames are dropped.

The sender runs inside its own ``ThreadSensitiveContext``: should a
middleware do thread-sensitive work (``database_sync_to_async``) for a frame,
that work cannot wait for the handler's thread while the handler waits for
it.
"""

from __future__ import annotations

import threading
from collections import deque

from .asgi import Message, Send
from .compat.loop_calls import loop_caller
from .compat.wakeup import Wakeup, new_wakeup
from .sync import ThreadSensitiveContext, async_to_sync

__all__ = ["ThreadSender"]


class ThreadSender:
    """A sync consumer's ``base_send``: callable from its handler thread.

    Make it on the event loop, run :meth:`run` in a task of the consumer's
    task group, and await :meth:`flush` after each handler.
    """

    __slots__ = (
        "_blocking_send",
        "_call_soon",
        "_drain_waiters",
        "_error",
        "_idle",
        "_mutex",
        "_pending",
        "_queue",
        "_send",
        "_wake",
        "max_queued",
    )

    def __init__(self, send: Send, max_queued: int = 64) -> None:
        if max_queued < 0:
            raise ValueError(f"max_queued must be 0 or more, got {max_queued!r}")
        self._send = send
        self.max_queued = max_queued
        self._call_soon = loop_caller()
        self._blocking_send = async_to_sync(self._send_in_order)
        self._queue: deque[Message] = deque()
        self._mutex = threading.Lock()  # guards _queue, _pending and _idle together
        self._pending = 0  # frames queued or being sent
        self._idle = True  # the sender task is asleep and must be woken for new frames
        self._wake: Wakeup = new_wakeup()
        self._drain_waiters: list[Wakeup] = []
        self._error: BaseException | None = None

    @property
    def pending(self) -> int:
        """Frames queued or being handed to the server right now."""
        return self._pending

    @property
    def failed(self) -> bool:
        """Whether a server ``send`` has raised (the error :meth:`flush` raises)."""
        return self._error is not None

    # -- the handler's thread -----------------------------------------------

    def __call__(self, message: Message) -> None:
        """Send ``message``; queue it and return if it is a frame and there is room."""
        error = self._error
        if error is not None:
            raise error
        if self.max_queued and message.get("type") == "websocket.send":
            with self._mutex:
                queued = self._pending < self.max_queued
                if queued:
                    self._pending += 1
                    self._queue.append(message)
                    wake = self._idle
                    self._idle = False
            if queued:
                if wake:
                    self._call_soon(self._wake_sender)
                return
        self._blocking_send(message)

    # -- the event loop ------------------------------------------------------

    def _wake_sender(self) -> None:
        self._wake.set()

    async def _send_in_order(self, message: Message) -> None:
        """The blocking path: wait for the queued frames, then send this message."""
        await self.flush()
        await self._send(message)

    async def run(self) -> None:
        """The sender task: pass queued frames to the server until cancelled."""
        async with ThreadSensitiveContext():
            while True:
                await self._wake.wait()
                self._wake = new_wakeup()
                while True:
                    with self._mutex:
                        if not self._queue:
                            self._idle = True
                            break
                        message = self._queue.popleft()
                    try:
                        if self._error is None:
                            await self._send(message)
                    except Exception as exc:
                        self._error = exc
                    finally:
                        with self._mutex:
                            self._pending -= 1
                            drained = not self._pending
                        if drained and self._drain_waiters:
                            waiters, self._drain_waiters = self._drain_waiters, []
                            for waiter in waiters:
                                waiter.set()

    async def flush(self, *, raise_error: bool = True) -> None:
        """Wait until every queued frame has been taken by the server.

        Raises the exception a server ``send`` raised, if any, unless
        ``raise_error`` is false.
        """
        if self._pending:
            waiter = new_wakeup()
            self._drain_waiters.append(waiter)
            await waiter.wait()
        if raise_error and self._error is not None:
            raise self._error
