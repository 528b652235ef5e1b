"""Drive one ASGI application instance from a test, on asyncio or trio.

:class:`ApplicationCommunicator` has the interface of Channels' (itself asgiref's):
the test feeds the application messages with :meth:`~ApplicationCommunicator.send_input`
and reads what it sends back with :meth:`~ApplicationCommunicator.receive_output`.
Underneath, everything is anyio, so the same test runs on every backend.

The application has to run concurrently with the test, and Channels' API has no
block that could hold a task group: ``await comm.connect()`` starts the
application and some later ``await comm.disconnect()`` ends it. So there are two
ways to own the application's task:

* ``async with Communicator(...) as comm:`` — the structured form. The application
  runs in a task group that belongs to the ``async with`` block; leaving the block
  cancels the application if it is still running and waits for it.
* without ``async with`` — the Channels-compatible form. The application runs in a
  detached task (see :mod:`channels_runtime.compat.tasks`) owned by the
  communicator: :meth:`~ApplicationCommunicator.wait` (and so ``disconnect()``)
  cancels it if it outstays its timeout, and waits for it to end. Communicators
  whose application is still running are tracked per event loop, so a test harness
  can stop the ones a test forgot with :func:`stop_background_communicators`.

Either way the application runs in an empty :class:`contextvars.Context`, as under a
real server (and as asgiref's communicator does), so context variables set by the
test do not leak into it.

Once the communicator has cancelled the application (a ``receive_output`` timeout,
``wait()`` running out of time, ``stop()``), the application is gone, and later
``send_input``, ``receive_output`` and ``receive_nothing`` calls raise the
cancellation exception, as asgiref's do by re-raising the cancelled task's result;
``wait()`` returns normally.

asgiref's communicator also exposes its asyncio objects, and libraries' own test
helpers use them: ``future`` (the application's task) and ``input_queue`` /
``output_queue`` (what the application receives from and sends to). Here they are
:class:`ApplicationFuture` and :class:`MessageQueue`: the same methods, working on
both backends, over the same streams the communicator's own methods use, so a
helper may mix the two freely.
"""

# The ``timeout`` parameters are Channels' public API, kept for compatibility.
# ruff: noqa: ASYNC109

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import RunVar
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from asgiref.compatibility import guarantee_single_callable

from channels_runtime.compat.tasks import BackgroundTask, start_background_task
from channels_runtime.db import keep_connections_open

from ..compat.asgiref_shapes import InvalidStateError, QueueEmpty
from ..compat.backend import ensure_bridge, running_on_trio

__all__ = [
    "ApplicationCommunicator",
    "ApplicationFuture",
    "MessageQueue",
    "stop_background_communicators",
]

Message = dict[str, Any]
Scope = dict[str, Any]

#: Communicators whose application runs detached and has not finished yet, per event
#: loop (a RunVar lives and dies with its event loop, so nothing outlives the loop).
_detached: RunVar[set[ApplicationCommunicator]] = RunVar("channels_runtime.testing.detached")


def describe_message(message: object, limit: int = 300) -> str:
    """``repr`` of a message for an assertion, shortened so a large payload stays readable."""
    text = repr(message)
    if len(text) > limit:
        text = f"{text[: limit - 5]} ...{text[-1]}"
    return text


def _detached_communicators() -> set[ApplicationCommunicator]:
    try:
        return _detached.get()
    except LookupError:
        live: set[ApplicationCommunicator] = set()
        _detached.set(live)
        return live


async def stop_background_communicators() -> list[ApplicationCommunicator]:
    """Cancel every detached application still running in this event loop, and wait for them.

    A test written in the Channels style that never calls ``disconnect()`` or ``wait()``
    leaves its application running. With anyio's pytest plugin the event loop can
    outlive the test (whenever a fixture of wider scope holds it open), and the
    application would then keep running into the next test. Call this from the
    teardown of an async fixture to make every test end with no application running;
    it returns the communicators it had to stop, so the fixture can also complain
    about them.
    """
    registry = _detached_communicators()
    live = list(registry)
    for communicator in live:
        communicator._cancel()
    for communicator in live:
        await communicator._join()
        registry.discard(communicator)
    return live


class MessageQueue:
    """One direction of the conversation, shaped like the ``asyncio.Queue`` asgiref has there.

    ``communicator.input_queue`` holds what the application will receive,
    ``communicator.output_queue`` what it has sent and the test has not read yet.
    Both ends are open to the test, as on asgiref's queues: ``put`` on the input
    queue is ``send_input`` without its checks, ``get`` on the output queue is
    ``receive_output`` without its timeout. Unbounded, like asgiref's.

    One difference, on the output queue only: once the application has ended, it
    takes no more messages (``put`` raises :exc:`RuntimeError`); what it had sent
    can still be read, and ``get`` then waits forever, as on an empty
    ``asyncio.Queue``.
    """

    __slots__ = ("_name", "_receive", "_send")

    def __init__(
        self,
        send: MemoryObjectSendStream[Message],
        receive: MemoryObjectReceiveStream[Message],
        name: str,
    ) -> None:
        self._send = send
        self._receive = receive
        self._name = name

    def __repr__(self) -> str:
        return f"<MessageQueue {self._name} qsize={self.qsize()}>"

    @property
    def maxsize(self) -> int:
        """0, as for an unbounded ``asyncio.Queue``."""
        return 0

    def qsize(self) -> int:
        """How many messages are waiting to be taken."""
        return self._receive.statistics().current_buffer_used

    def empty(self) -> bool:
        return self.qsize() == 0

    def full(self) -> bool:
        """Always False: the queue is unbounded."""
        return False

    async def get(self) -> Message:
        """Take the oldest message, waiting for one to arrive."""
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            # The application has ended and everything it sent was read: nothing
            # will ever arrive, which on asgiref's queue is a get() that never returns.
            await anyio.sleep_forever()
            raise AssertionError("unreachable") from None

    def get_nowait(self) -> Message:
        """Take the oldest message; raise ``asyncio.QueueEmpty`` if there is none."""
        try:
            return self._receive.receive_nowait()
        except (anyio.WouldBlock, anyio.EndOfStream):
            raise QueueEmpty from None

    async def put(self, message: Message) -> None:
        """Add ``message`` at the end (never waits: the queue is unbounded)."""
        self.put_nowait(message)

    def put_nowait(self, message: Message) -> None:
        """Add ``message`` at the end."""
        try:
            self._send.send_nowait(message)
        except anyio.ClosedResourceError:
            raise RuntimeError(
                f"{self!r}: the application has ended; its output takes no more messages"
            ) from None


class ApplicationFuture:
    """The application's run, shaped like the ``asyncio.Task`` asgiref keeps in ``future``.

    ``done()``, ``cancelled()``, ``result()``, ``exception()`` and ``cancel()`` mean
    what they mean on a task, and awaiting it waits for the application and returns
    (or raises) its result. ``result()`` and ``exception()`` raise
    ``asyncio.InvalidStateError`` while it runs and the cancellation exception once
    it was cancelled, as a task's do. Reading the exception through either counts
    as reporting it: leaving the communicator's ``async with`` block will not raise
    it a second time.
    """

    __slots__ = ("_communicator",)

    def __init__(self, communicator: ApplicationCommunicator) -> None:
        self._communicator = communicator

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled() else "finished" if self.done() else "pending"
        return f"<ApplicationFuture {state} of {self._communicator!r}>"

    def done(self) -> bool:
        """Whether the application has ended, however it ended."""
        return self._communicator._is_finished()

    def cancelled(self) -> bool:
        """Whether the application ended by being cancelled."""
        return self._communicator._cancelled_by() is not None

    def cancel(self, msg: object = None) -> bool:
        """Cancel the application; False if it has already ended.

        As on a task, the cancellation takes effect at the application's next
        checkpoint; await the future (or ``wait()``) to let it unwind.
        """
        if self.done():
            return False
        self._communicator._cancel()
        return True

    def result(self) -> Any:
        """The application's return value; raises what it raised, or the cancellation."""
        communicator = self._communicator
        if not self.done():
            raise InvalidStateError("Result is not set.")
        communicator._raise_if_failed()
        ending = communicator._cancelled_by()
        if ending is not None:
            communicator._raise_cancellation(ending)
        return communicator._result

    def exception(self) -> BaseException | None:
        """What the application raised (None if it returned); raises if it was cancelled."""
        communicator = self._communicator
        if not self.done():
            raise InvalidStateError("Exception is not set.")
        ending = communicator._cancelled_by()
        if ending is not None:
            communicator._raise_cancellation(ending)
        if communicator._exception is not None:
            communicator._exception_reported = True
        return communicator._exception

    def __await__(self) -> Any:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        await self._communicator._join()
        return self.result()


class ApplicationCommunicator:
    """Runs one ASGI application instance and exchanges messages with it.

    The application starts on first use (the first ``send_input``,
    ``receive_output``, ``receive_nothing`` or ``wait``), so the test can still
    adjust :attr:`scope` after construction, as in Channels.

    If the application raises, the exception is kept and re-raised, with the
    application's own traceback, by the next ``send_input``/``receive_output``/
    ``receive_nothing``/``wait`` (and by leaving an ``async with`` block if it was
    never raised before). If the communicator cancelled it, the next
    ``send_input``/``receive_output``/``receive_nothing`` raises the backend's
    cancellation exception instead (see the module docstring).
    """

    def __init__(self, application: Callable[..., Any], scope: Scope) -> None:
        self.application = guarantee_single_callable(application)
        self.scope = scope
        # Unbounded, like the asyncio.Queues of asgiref's communicator: neither side
        # of a test conversation should block on the other's backlog.
        self._input_send: MemoryObjectSendStream[Message]
        self._input_receive: MemoryObjectReceiveStream[Message]
        self._input_send, self._input_receive = anyio.create_memory_object_stream[Message](math.inf)
        self._output_send: MemoryObjectSendStream[Message]
        self._output_receive: MemoryObjectReceiveStream[Message]
        self._output_send, self._output_receive = anyio.create_memory_object_stream[Message](
            math.inf
        )
        self._task_group: TaskGroup | None = None
        self._background: BackgroundTask | None = None
        self._registry: set[ApplicationCommunicator] | None = None
        self._started = False
        self._closed = False
        # Created when the application starts: anyio primitives need a running loop.
        self._cancel_scope: anyio.CancelScope | None = None
        self._finished: anyio.Event | None = None
        self._exception: BaseException | None = None
        self._traceback: TracebackType | None = None
        self._exception_reported = False
        #: What the application returned (ASGI applications return None, but
        #: ``future.result()`` gives whatever it was, as asgiref's does).
        self._result: Any = None
        self._future: ApplicationFuture | None = None
        self._input_queue: MessageQueue | None = None
        self._output_queue: MessageQueue | None = None
        #: What ended the application when our own cancel scope stopped it (see
        #: _raise_if_cancelled); None while it runs or if it ended any other way.
        self._cancellation: BaseException | None = None
        self._cancellation_traceback: TracebackType | None = None
        #: Set by the application's next receive() or by its end: see _settle().
        self._idle: anyio.Event | None = None

    def __repr__(self) -> str:
        kind = self.scope.get("type", "?")
        path = self.scope.get("path")
        where = f" {path}" if path is not None else ""
        app = getattr(self.application, "__qualname__", None) or repr(self.application)
        return f"<{type(self).__name__} {kind}{where} application={app}>"

    # ----- the structured form -------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Give the application a task group owned by this ``async with`` block."""
        if self._started or self._closed or self._task_group is not None:
            raise RuntimeError(
                f"{self!r} is already in use; enter 'async with' before its first call"
            )
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        """Cancel the application if it is still running, wait for it, surface its error."""
        task_group = self._task_group
        if task_group is None:
            raise RuntimeError(f"{self!r} was not entered with 'async with'")
        self._task_group = None
        self._closed = True
        self._cancel()
        # The application task never raises (its errors are kept for the test), so the
        # only thing the task group may have to propagate is a cancellation of the
        # enclosing scope. Hand it only that: any other exception from the block must
        # reach the test as it is, not wrapped in an exception group.
        if exc is not None and isinstance(exc, anyio.get_cancelled_exc_class()):
            await task_group.__aexit__(exc_type, exc, tb)
            return False
        await task_group.__aexit__(None, None, None)
        app_exc = self._exception
        if app_exc is not None and not self._exception_reported:
            if exc is None:
                self._raise_if_failed()
            elif exc is not app_exc:
                exc.add_note(f"The application under test had also raised: {app_exc!r}")
        return False

    # ----- running the application ---------------------------------------------------

    def _ensure_started(self) -> None:
        """Start the application instance, once, in whichever owner applies."""
        if self._started:
            return
        if self._closed:
            raise RuntimeError(f"{self!r}: its 'async with' block has already ended")
        # Applications under test may call Django's async APIs: on trio they need the bridge.
        ensure_bridge()
        self._started = True
        self._cancel_scope = anyio.CancelScope()
        self._finished = anyio.Event()
        name = f"channels_runtime.testing: {self!r}"
        # A fresh, empty context: spawning copies the *current* context, so creating
        # the task while this one is current gives the application nothing of the
        # test's context variables.
        empty = contextvars.Context()
        task_group = self._task_group
        if task_group is not None:
            empty.run(lambda: task_group.start_soon(self._run_application, name=name))
        else:
            self._registry = _detached_communicators()
            self._registry.add(self)
            self._background = start_background_task(
                self._run_application, name=name, context=empty
            )

    async def _run_application(self) -> None:
        assert self._cancel_scope is not None
        assert self._finished is not None
        ending: BaseException | None = None
        try:
            # Like Channels' communicator, keep the test database's connections open
            # while the application runs: closing them would end the test transaction.
            with keep_connections_open(), self._cancel_scope:
                try:
                    self._result = await self.application(self.scope, self._receive, self._send)
                except BaseException as exc:
                    ending = exc
                    raise
            if self._cancel_scope.cancelled_caught and ending is not None:
                # Our cancellation ended it: later calls report that, as asgiref's do.
                self._cancellation = ending
                self._cancellation_traceback = ending.__traceback__
        except BaseException as exc:
            if isinstance(exc, anyio.get_cancelled_exc_class()):
                # Not our scope's cancellation (that one the scope absorbed): an
                # enclosing scope is shutting things down, and must see it.
                raise
            self._exception = exc
            self._traceback = exc.__traceback__
        finally:
            # Closing the output stream lets a pending receive_output() notice the end
            # at once (after draining what was sent), instead of sitting out its timeout.
            self._output_send.close()
            if self._registry is not None:
                self._registry.discard(self)
            self._finished.set()
            if self._idle is not None:
                self._idle.set()

    async def _receive(self) -> Message:
        """The application's ``receive``: the next message the test sent.

        Also how :meth:`_settle` learns that the application has run out of work:
        it calls for a message and none is waiting.
        """
        idle = self._idle
        if idle is not None and not self._input_receive.statistics().current_buffer_used:
            self._idle = None
            idle.set()
        return await self._input_receive.receive()

    async def _send(self, message: Message) -> None:
        await self._output_send.send(message)

    async def _settle(self, timeout: float | None = 1) -> None:
        """Let the application run until it finishes or asks for a message that isn't there.

        Then raise its exception if it failed. The application is left running,
        as asgiref leaves it; this only makes sure that an error raised after its
        last message reaches the test. Returns after ``timeout`` seconds at the
        latest, whatever the application is doing.
        """
        self._ensure_started()
        if not self._is_finished():
            idle = self._idle = anyio.Event()
            with anyio.move_on_after(timeout):
                await idle.wait()
            self._idle = None
        self._raise_if_failed()

    def _is_finished(self) -> bool:
        assert self._finished is not None
        # The background handle also counts: a detached task cancelled by event loop
        # shutdown before its first step never runs _run_application at all.
        return self._finished.is_set() or (self._background is not None and self._background.done)

    async def _join(self) -> None:
        assert self._finished is not None
        if self._background is not None:
            await self._background.wait()
        else:
            await self._finished.wait()

    def _cancel(self) -> None:
        if self._started and not self._is_finished():
            assert self._cancel_scope is not None
            self._cancel_scope.cancel()

    async def _cancel_and_join(self) -> None:
        self._cancel()
        await self._join()

    def _raise_if_failed(self) -> None:
        exc = self._exception
        if exc is not None:
            self._exception_reported = True
            # Restore the traceback as captured, so re-raising repeatedly does not pile
            # up frames; the application's own frames stay at the bottom of it.
            raise exc.with_traceback(self._traceback)

    def _cancelled_by(self) -> BaseException | None:
        """The cancellation that ended the application, if one did.

        Ours (recorded by _run_application), or, for a detached application, one
        from outside: event loop shutdown, which the background task records.
        """
        if self._cancellation is not None:
            return self._cancellation
        background = self._background
        if background is not None and background.done:
            ending = background.exception
            if isinstance(ending, anyio.get_cancelled_exc_class()):
                return ending
        return None

    def _raise_cancellation(self, ending: BaseException) -> None:
        """Raise the cancellation exception that reports ``ending``.

        asgiref's communicator raises ``CancelledError`` here (the result of the
        cancelled task), and tests written for Channels expect it. On asyncio a
        fresh one is raised: anyio scopes recognise their own cancellations by
        message, and this one must not be mistaken for one. trio's ``Cancelled``
        cannot be constructed, so there the one that ended the application is
        raised again.
        """
        if running_on_trio():
            # With the traceback as captured, so that raising it again and again
            # does not pile up frames (as in _raise_if_failed).
            captured = (
                self._cancellation_traceback
                if ending is self._cancellation
                else ending.__traceback__
            )
            raise ending.with_traceback(captured)
        raise anyio.get_cancelled_exc_class()(
            f"{self!r}: the application was cancelled by this communicator "
            "and takes no more messages"
        )

    def _raise_if_cancelled(self) -> None:
        """Raise the cancellation exception if the communicator cancelled the application."""
        self._raise_if_failed()
        ending = self._cancellation
        if ending is not None:
            self._raise_cancellation(ending)

    # ----- the Channels / asgiref interface ------------------------------------------

    @property
    def future(self) -> ApplicationFuture:
        """The application's run, as asgiref's ``future`` (starting it, as there).

        See :class:`ApplicationFuture`.
        """
        self._ensure_started()
        future = self._future
        if future is None:
            future = self._future = ApplicationFuture(self)
        return future

    @property
    def input_queue(self) -> MessageQueue:
        """The messages the application has yet to receive (asgiref's ``input_queue``)."""
        queue = self._input_queue
        if queue is None:
            queue = self._input_queue = MessageQueue(self._input_send, self._input_receive, "input")
        return queue

    @property
    def output_queue(self) -> MessageQueue:
        """What the application sent and the test has not read (asgiref's ``output_queue``)."""
        queue = self._output_queue
        if queue is None:
            queue = self._output_queue = MessageQueue(
                self._output_send, self._output_receive, "output"
            )
        return queue

    async def send_input(self, message: Message) -> None:
        """Send one message to the application (starting it if needed).

        Raises the application's exception instead, if it has already failed, or the
        cancellation exception if this communicator cancelled it.
        """
        self._ensure_started()
        self._raise_if_cancelled()
        await self._input_send.send(message)

    async def receive_output(self, timeout: float | None = 1) -> Message:
        """Return the next message the application sends, waiting up to ``timeout`` seconds.

        Raises the application's exception if it has failed. Raises :exc:`TimeoutError`
        if nothing arrives in time — after cancelling the application, as asgiref does,
        since a test that gave up on it should not leave it running — or at once if the
        application has exited without sending anything more. Once the application has
        been cancelled, raises the cancellation exception, as asgiref does.
        """
        self._ensure_started()
        self._raise_if_cancelled()
        timed_out = True
        with anyio.move_on_after(timeout):
            try:
                return await self._output_receive.receive()
            except anyio.EndOfStream:
                timed_out = False
        if timed_out:
            await self._cancel_and_join()
        self._raise_if_failed()
        if timed_out:
            raise TimeoutError(
                f"{self!r}: no message from the application within {timeout} seconds"
                " (the application has been cancelled)"
            )
        raise TimeoutError(f"{self!r}: the application exited without sending a message")

    async def receive_nothing(self, timeout: float = 0.1, interval: float = 0.01) -> bool:
        """Return whether the application stays silent for ``timeout`` seconds.

        Polls every ``interval`` seconds and leaves any message in place for a later
        ``receive_output``. Raises the application's exception if it fails meanwhile,
        and the cancellation exception if this communicator had cancelled it.
        """
        self._ensure_started()
        self._raise_if_cancelled()
        deadline = anyio.current_time() + timeout
        while True:
            if self._output_receive.statistics().current_buffer_used:
                return False
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                break
            await anyio.sleep(min(interval, remaining))
        self._raise_if_failed()
        return True

    async def wait(self, timeout: float | None = 1) -> None:
        """Wait for the application to finish; cancel it if it is still running after ``timeout``.

        Returns normally in both cases, as asgiref's does; raises the application's
        exception if it failed (including while being cancelled).
        """
        self._ensure_started()
        with anyio.move_on_after(timeout):
            await self._join()
        await self._cancel_and_join()
        self._raise_if_failed()

    def stop(self, exceptions: bool = True) -> None:
        """Cancel the application without waiting for it (asgiref's synchronous ``stop``).

        If it has already finished and ``exceptions`` is true, raise what it raised
        instead (the cancellation exception if this communicator had cancelled it, as
        asgiref does). Prefer ``await wait(0)``, which also waits for it to unwind.
        """
        if not self._started:
            return
        if not self._is_finished():
            self._cancel()
        elif exceptions:
            self._raise_if_cancelled()
