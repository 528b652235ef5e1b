"""Feeding a consumer from its message sources, one message at a time.

A consumer listens to two sources at once: its client (the ASGI ``receive``)
and its channel on the channel layer. Each source gets a *pump* task that
receives from it and then dispatches the message while holding a fair
:class:`Turn`. The turn makes handlers run one at a time, in the order their
messages arrived, and a source is not read again until its previous message
has been handled — the same back-pressure Channels gives, without a task per
message or a hop through a queue on the hot path.

The first source (the client) is pumped by the calling task itself, and the
channel by one companion task (:mod:`channels_runtime.compat.companion`, which
on asyncio spares the 2 to 3 KB an anyio task group adds per connection; more
sources get an anyio task group): an idle connection costs one task fewer than
a task per source would. When a handler raises
(``StopConsumer`` included) both pumps stop and the original exception
is re-raised here, with its own traceback, rather than wrapped in an
``ExceptionGroup``.

After each handled message the consumer yields to the event loop before it
takes the next one, as Channels' dispatch loop does (it awaits
``asyncio.wait`` between messages): a task that a handler wakes (by setting an
event, sending on a stream, releasing a lock) runs before the next message is
handled, even when messages are already queued. Code written for Channels
relies on this; without it a burst of queued messages would be handled back to
back, ahead of the tasks the first of them woke. The yield is each loop's
cheapest (:mod:`channels_runtime.compat.yield_point`: one bare yield on
asyncio, two on trio, whose scheduler orders ready tasks at random).

The yield is skipped when it cannot change the order: when the source can
tell that its next ``receive()`` will wait (a ``receive`` that is a bound
method of an object with ``message_waiting()``, as the server's
:class:`~channels_runtime.compat.hypercorn_fixes.app_inbox.AppInbox` is) and
no other pump waits for the turn. That ``receive()`` suspends the consumer
until a new message arrives, and the woken tasks run before that on either
loop. In an echo the next message is almost never there yet, and the yield
was one more resumption of the connection's whole chain of awaits per
message (about 6 % of the instructions the server spends on a round trip
on asyncio, more on trio: ``bench/e2e/instructions.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from time import perf_counter
from typing import Any

import anyio

from . import metrics
from .asgi import Message, Receive
from .compat.companion import run_with_companion
from .compat.yield_point import message_yield
from .metrics.consumers import wait_turn

Dispatch = Callable[[Message], Awaitable[None]]
#: Told of each handled message: the message, ``perf_counter()`` when its
#: handling started, and what it raised (None if nothing). For the metrics.
Observe = Callable[[Message, float, BaseException | None], None]


class ChannelSource:
    """A consumer's channel as a message source that can tell whether a message waits.

    Made for layers that answer ``message_waiting(channel)`` without a round
    trip (the in-memory layer): :attr:`receive` is what the consumer reads
    (its ``channel_receive``), and the dispatch loop finds
    :meth:`message_waiting` through it, so a group message handled with
    nothing else queued costs no extra yield (see the module docstring).
    ``receive`` returns the layer's coroutine rather than awaiting it, so it
    adds no frame to the consumer's chain of awaits.
    """

    __slots__ = ("channel", "layer")

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        self.channel = channel

    def receive(self) -> Awaitable[Message]:
        return self.layer.receive(self.channel)

    def message_waiting(self) -> bool:
        return bool(self.layer.message_waiting(self.channel))


def _waiting_probe(receive: Receive) -> Callable[[], bool] | None:
    """``receive``'s owner's ``message_waiting``, if it has one (see the module docstring)."""
    return getattr(getattr(receive, "__self__", None), "message_waiting", None)


class Turn:
    """A fair mutual exclusion for the pumps of one consumer.

    Unlike ``anyio.Lock`` it adds no checkpoint when free: the message is
    handled at once, and the handler's own awaits are where the loop gets
    control back. When taken, waiters queue in arrival order and the turn is
    handed directly to the first of them on release.
    """

    __slots__ = ("_busy", "_waiters")

    def __init__(self) -> None:
        self._busy = False
        # Made on first contention: an empty deque costs ~600 bytes per connection.
        self._waiters: deque[anyio.Event] | None = None

    async def acquire(self) -> None:
        if not self._busy:
            self._busy = True
            return
        await self.wait()

    async def wait(self) -> None:
        """Queue for the turn, which is taken (the slow path of :meth:`acquire`)."""
        handed_over = anyio.Event()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = deque()
        waiters.append(handed_over)
        try:
            await handed_over.wait()
        except BaseException:
            if handed_over.is_set():
                self.release()  # it was ours already: pass it on
            else:
                waiters.remove(handed_over)
            raise

    def release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # stays busy: ownership moves to the waiter
        else:
            self._busy = False


class _Pumps(Turn):
    """What one consumer's pumps share: the turn, the handler, the first failure.

    A class, not a closure inside :func:`dispatch_serially`: the pumps live as
    long as the connection, and a closure keeps a function and a cell for each
    variable it shares (about 350 bytes per connection, against about 150 for
    this object and the bound method handed to the companion).
    """

    __slots__ = ("dispatch", "failure", "observe", "yield_to_woken")

    def __init__(
        self,
        dispatch: Dispatch,
        observe: Observe | None,
        yield_to_woken: Callable[[], Awaitable[Any]],
    ) -> None:
        super().__init__()
        self.dispatch = dispatch
        self.observe = observe
        self.yield_to_woken = yield_to_woken
        self.failure: Exception | None = None

    async def pump(self, receive: Receive, cancel_scope: anyio.CancelScope) -> None:
        """Receive from ``receive`` and handle each message in turn; on an
        exception, keep the first and cancel ``cancel_scope`` (every pump)."""
        dispatch, observe, yield_to_woken = self.dispatch, self.observe, self.yield_to_woken
        waiting = _waiting_probe(receive)
        try:
            while True:
                message = await receive()
                # Turn.acquire() inlined: no coroutine when the turn is free.
                if self._busy:
                    await (wait_turn(self) if metrics.enabled else self.wait())
                else:
                    self._busy = True
                try:
                    if observe is None:
                        await dispatch(message)
                    else:
                        started = perf_counter()
                        try:
                            await dispatch(message)
                        except BaseException as exc:
                            observe(message, started, exc)
                            raise
                        observe(message, started, None)
                    # Yield with the turn still held, so the tasks the handler woke
                    # run before another pump's message, not only this pump's next.
                    if waiting is None or self._waiters or waiting():
                        await yield_to_woken()
                finally:
                    self.release()
        except Exception as exc:
            if self.failure is None:
                self.failure = exc
            cancel_scope.cancel()


async def dispatch_serially(
    sources: Sequence[Receive], dispatch: Dispatch, observe: Observe | None = None
) -> None:
    """Receive from every source concurrently and hand each message to ``dispatch``.

    Returns only by raising: whatever ``dispatch`` or a source raises ends the
    loop and is re-raised unchanged, after every pump has stopped.

    ``observe`` (:func:`channels_runtime.metrics.consumers.observe` when
    metrics are on) is called after each message. It is called from here, not
    from a wrapper around ``dispatch``: a coroutine more per message cost more
    than the counting itself.
    """
    yield_to_woken = message_yield()  # see the module docstring
    if len(sources) == 1:
        # One source needs no task and no lock: receive and handle in turn.
        receive = sources[0]
        waiting = _waiting_probe(receive)
        if observe is None:
            while True:
                await dispatch(await receive())
                if waiting is None or waiting():
                    await yield_to_woken()
        while True:
            message = await receive()
            started = perf_counter()
            try:
                await dispatch(message)
            except BaseException as exc:
                observe(message, started, exc)
                raise
            observe(message, started, None)
            if waiting is None or waiting():
                await yield_to_woken()

    pumps = _Pumps(dispatch, observe, yield_to_woken)
    if len(sources) == 2:  # the rule: the client and the consumer's channel
        await run_with_companion(pumps.pump, sources[0], sources[1])
    else:
        async with anyio.create_task_group() as tg:
            for source in sources[1:]:
                tg.start_soon(pumps.pump, source, tg.cancel_scope)
            await pumps.pump(sources[0], tg.cancel_scope)
    failure, pumps.failure = pumps.failure, None
    if failure is not None:
        try:
            raise failure
        finally:
            failure = None  # break the frame -> exception reference cycle
    # Only reachable if every source returned, which ASGI sources never do.
    raise RuntimeError("a consumer's message sources stopped without a message")
