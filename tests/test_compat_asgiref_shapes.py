"""The communicators' asgiref-shaped attributes: ``future``, ``input_queue``, ``output_queue``.

Libraries built on Channels use them in their own test helpers (the pattern of
djangochannelsrestframework's test communicator is reproduced below), so they
must behave as asgiref's ``asyncio.Task`` and ``asyncio.Queue`` do, on every
backend.
"""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from channels_runtime.testing import ApplicationCommunicator, WebsocketCommunicator

pytestmark = pytest.mark.anyio

Message = dict[str, Any]
SHORT = 0.05


async def echo_until_stop(scope: dict[str, Any], receive: Any, send: Any) -> str:
    """Echoes each message's ``n`` back; returns when told to stop."""
    while True:
        message = await receive()
        if message["type"] == "stop":
            return "stopped"
        if message["type"] == "fail":
            raise ValueError("asked to fail")
        await send({"type": "echo", "n": message["n"]})


async def test_future_starts_the_application_and_reports_its_result() -> None:
    comm = ApplicationCommunicator(echo_until_stop, {"type": "test"})
    future = comm.future
    assert comm.future is future
    assert not future.done()
    assert not future.cancelled()
    with pytest.raises(asyncio.InvalidStateError):
        future.result()
    with pytest.raises(asyncio.InvalidStateError):
        future.exception()
    await comm.send_input({"type": "echo", "n": 1})
    assert await comm.receive_output() == {"type": "echo", "n": 1}
    await comm.send_input({"type": "stop"})
    assert await future == "stopped"
    assert future.done()
    assert not future.cancelled()
    assert future.result() == "stopped"
    assert future.exception() is None
    assert future.cancel() is False
    await comm.wait()


async def test_future_reports_the_applications_exception_once() -> None:
    async with ApplicationCommunicator(echo_until_stop, {"type": "test"}) as comm:
        await comm.send_input({"type": "fail"})
        with pytest.raises(ValueError, match="asked to fail"):
            await comm.future
        assert comm.future.done()
        assert not comm.future.cancelled()
        error = comm.future.exception()
        assert isinstance(error, ValueError)
        with pytest.raises(ValueError, match="asked to fail"):
            comm.future.result()
    # Reported through the future: leaving the block does not raise it again.


async def test_cancelling_the_future_cancels_the_application() -> None:
    comm = ApplicationCommunicator(echo_until_stop, {"type": "test"})
    assert comm.future.cancel() is True
    cancelled = anyio.get_cancelled_exc_class()
    with pytest.raises(cancelled):
        await comm.future
    assert comm.future.done()
    assert comm.future.cancelled()
    with pytest.raises(cancelled):
        comm.future.result()
    with pytest.raises(cancelled):
        comm.future.exception()
    await comm.wait()


async def test_future_is_cancelled_after_wait_times_out() -> None:
    # A common assertion in Channels users' suites: wait() gave up on the
    # application, so its future reports a cancellation.
    comm = ApplicationCommunicator(echo_until_stop, {"type": "test"})
    await comm.send_input({"type": "echo", "n": 1})
    await comm.wait(SHORT)
    assert comm.future.done()
    assert comm.future.cancelled()


async def test_queues_are_the_streams_the_application_uses() -> None:
    comm = ApplicationCommunicator(echo_until_stop, {"type": "test"})
    assert comm.input_queue is comm.input_queue
    assert comm.output_queue.empty()
    assert comm.output_queue.maxsize == 0
    assert not comm.output_queue.full()
    with pytest.raises(asyncio.QueueEmpty):
        comm.output_queue.get_nowait()
    # Queued before the application starts; it reads them once started.
    await comm.input_queue.put({"type": "echo", "n": 1})
    comm.input_queue.put_nowait({"type": "echo", "n": 2})
    assert comm.input_queue.qsize() == 2
    await comm.send_input({"type": "echo", "n": 3})
    assert await comm.output_queue.get() == {"type": "echo", "n": 1}
    # The communicator's own methods read the same stream.
    assert await comm.receive_output() == {"type": "echo", "n": 2}
    assert not await comm.receive_nothing(timeout=1)  # returns as soon as one is there
    assert comm.output_queue.qsize() == 1
    assert comm.output_queue.get_nowait() == {"type": "echo", "n": 3}
    assert comm.input_queue.empty()
    await comm.send_input({"type": "stop"})
    await comm.wait()


async def test_output_queue_after_the_application_ended() -> None:
    comm = ApplicationCommunicator(echo_until_stop, {"type": "test"})
    await comm.send_input({"type": "echo", "n": 1})
    await comm.send_input({"type": "stop"})
    assert await comm.future == "stopped"
    # What it sent is still there, then nothing ever comes, as on an empty asyncio.Queue.
    assert await comm.output_queue.get() == {"type": "echo", "n": 1}
    with anyio.move_on_after(SHORT) as scope:
        await comm.output_queue.get()
    assert scope.cancelled_caught
    with pytest.raises(asyncio.QueueEmpty):
        comm.output_queue.get_nowait()
    with pytest.raises(RuntimeError, match="takes no more messages"):
        await comm.output_queue.put({"type": "late"})
    await comm.wait()


class LibraryStyleCommunicator(WebsocketCommunicator):
    """The pattern of djangochannelsrestframework's test communicator.

    Its ``receive_output`` reads ``output_queue`` with a timeout of its own, so
    a timeout leaves the application running, and checks ``future`` for an
    exception before and after. (It uses asgiref's asyncio-only timeout; anyio's
    stands in for it so that this runs on every backend.)
    """

    async def receive_output(self, timeout: float | None = 1) -> Message:  # noqa: ASYNC109
        if self.future.done():
            self.future.result()
        try:
            with anyio.fail_after(timeout):
                return await self.output_queue.get()
        except TimeoutError:
            if self.future.done():
                self.future.result()
            raise


async def ws_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["text"] == "boom":
            raise RuntimeError("boom")
        await send({"type": "websocket.send", "text": message["text"].upper()})


async def test_library_style_communicator_timeout_keeps_the_application() -> None:
    comm = LibraryStyleCommunicator(ws_app, "/ws/")
    connected, _ = await comm.connect()
    assert connected
    with pytest.raises(TimeoutError):
        await comm.receive_from(timeout=SHORT)
    assert not comm.future.done()
    await comm.send_to(text_data="hi")
    assert await comm.receive_from() == "HI"
    await comm.send_to(text_data="boom")
    with pytest.raises(RuntimeError, match="boom"):
        await comm.receive_from(timeout=SHORT)
    assert comm.future.done()
    with pytest.raises(RuntimeError, match="boom"):
        await comm.wait()


async def test_library_style_communicator_disconnects_cleanly() -> None:
    comm = LibraryStyleCommunicator(ws_app, "/ws/")
    assert (await comm.connect())[0]
    await comm.disconnect()
    assert comm.future.done()
    assert comm.future.result() is None
