"""asgiref's sync/async adapters behave the same on asyncio, uvloop and trio.

The trio bridge (channels_runtime.compat.asgiref_trio) is installed for the
whole module; on asyncio it must leave asgiref's own behaviour in place, so
every test runs on all three backends.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import time

import anyio
import anyio.lowlevel
import pytest
import sniffio
from asgiref.current_thread_executor import CurrentThreadExecutor

from channels_runtime.compat import asgiref_trio
from channels_runtime.compat.backend import (
    bridge_installed,
    current_backend,
    ensure_bridge,
    running_on_trio,
)
from channels_runtime.sync import (
    AsyncToSync,
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)

request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var")


class Boom(Exception):
    """A distinctive error, so tests can check identity, not just type."""


@pytest.fixture(autouse=True, scope="module")
def _bridge() -> None:
    asgiref_trio.install()


def test_install_is_idempotent_and_thread_safe() -> None:
    threads = [threading.Thread(target=asgiref_trio.install) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    asgiref_trio.install()
    assert asgiref_trio.is_installed()
    assert SyncToAsync.__call__ is asgiref_trio._patched_sync_to_async_call
    assert AsyncToSync.__call__ is asgiref_trio._patched_async_to_sync_call
    assert bridge_installed()


def test_current_backend_outside_a_loop_raises() -> None:
    with pytest.raises(RuntimeError, match="asyncio or trio"):
        current_backend()
    assert running_on_trio() is False


@pytest.mark.anyio
async def test_backend_helpers(anyio_backend_name: str) -> None:
    assert current_backend() == anyio_backend_name
    assert running_on_trio() is (anyio_backend_name == "trio")
    assert ensure_bridge() is True
    assert ensure_bridge() is True


@pytest.mark.anyio
async def test_thread_sensitive_calls_share_one_thread() -> None:
    def where() -> int:
        time.sleep(0.002)
        return threading.get_ident()

    idents: list[int] = []

    async def call() -> None:
        idents.append(await sync_to_async(where)())

    async with anyio.create_task_group() as group:
        for _ in range(20):
            group.start_soon(call)
    assert len(idents) == 20
    assert len(set(idents)) == 1
    assert idents[0] != threading.get_ident()


@pytest.mark.anyio
async def test_non_sensitive_calls_run_on_several_threads() -> None:
    # Each call waits for all five, so they can only finish if five threads run at once.
    barrier = threading.Barrier(5, timeout=10)

    def meet() -> int:
        barrier.wait()
        return threading.get_ident()

    idents: list[int] = []

    async def call() -> None:
        idents.append(await sync_to_async(meet, thread_sensitive=False)())

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(call)
    assert len(set(idents)) == 5


@pytest.mark.anyio
async def test_nested_calls_come_back_to_the_waiting_thread(anyio_backend_name: str) -> None:
    loop_token = anyio.lowlevel.current_token()
    sync_threads: list[int] = []
    async_frames: list[tuple[str, object]] = []

    def innermost() -> str:
        sync_threads.append(threading.get_ident())
        return "done"

    async def inner() -> str:
        async_frames.append((sniffio.current_async_library(), anyio.lowlevel.current_token()))
        await anyio.lowlevel.checkpoint()
        return await sync_to_async(innermost)()

    def middle() -> str:
        sync_threads.append(threading.get_ident())
        return async_to_sync(inner)()

    async def outer_async() -> str:
        async_frames.append((sniffio.current_async_library(), anyio.lowlevel.current_token()))
        return await sync_to_async(middle)()

    def outer() -> str:
        sync_threads.append(threading.get_ident())
        return async_to_sync(outer_async)()

    with anyio.fail_after(10):
        assert await sync_to_async(outer)() == "done"
    assert len(sync_threads) == 3
    assert len(set(sync_threads)) == 1
    assert async_frames == [(anyio_backend_name, loop_token)] * 2


@pytest.mark.anyio
async def test_contextvars_flow_both_ways() -> None:
    request_var.set("caller")

    def sync_side() -> str:
        seen = request_var.get()
        request_var.set("set-in-sync")
        return seen

    assert await sync_to_async(sync_side)() == "caller"
    assert request_var.get() == "set-in-sync"

    async def async_side() -> None:
        assert request_var.get() == "set-in-sync-2"
        request_var.set("set-in-async")

    def bridge() -> str:
        request_var.set("set-in-sync-2")
        async_to_sync(async_side)()
        return request_var.get()

    assert await sync_to_async(bridge)() == "set-in-async"
    assert request_var.get() == "set-in-async"


@pytest.mark.anyio
@pytest.mark.parametrize("thread_sensitive", [True, False])
async def test_exceptions_propagate_unchanged(thread_sensitive: bool) -> None:
    error = Boom("sync")

    def fail() -> None:
        raise error

    with pytest.raises(Boom) as info:
        await sync_to_async(fail, thread_sensitive=thread_sensitive)()
    assert info.value is error

    async def fail_async() -> None:
        await anyio.lowlevel.checkpoint()
        raise error

    def through_async() -> None:
        async_to_sync(fail_async)()

    with pytest.raises(Boom) as info:
        await sync_to_async(through_async, thread_sensitive=thread_sensitive)()
    assert info.value is error

    # The thread-sensitive "would deadlock" flag was not left set by the failures.
    assert SyncToAsync.deadlock_context.get(False) is False
    assert isinstance(await sync_to_async(threading.get_ident)(), int)


@pytest.mark.anyio
async def test_cancellation_waits_for_the_thread_on_trio(anyio_backend_name: str) -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.5)
        finished.set()

    with anyio.move_on_after(0.1) as scope:
        await sync_to_async(slow)()
    assert scope.cancelled_caught
    if anyio_backend_name == "trio":
        # trio.to_thread semantics: the cancellation is delivered once the thread is done.
        assert finished.is_set()
    else:
        # asgiref on asyncio returns at once and leaves the thread running.
        assert not finished.is_set()
        await anyio.to_thread.run_sync(finished.wait, 5)
    assert SyncToAsync.deadlock_context.get(False) is False


@pytest.mark.anyio
async def test_cancellation_reaches_nested_async_to_sync(anyio_backend_name: str) -> None:
    cancelled_exc = anyio.get_cancelled_exc_class()
    seen: list[BaseException] = []
    finished = threading.Event()

    async def forever() -> None:
        await anyio.sleep(30)

    def waits_on_async() -> str:
        try:
            async_to_sync(forever)()
        except BaseException as exc:
            seen.append(exc)
        finally:
            finished.set()
        return "returned"

    with anyio.fail_after(10):
        with anyio.move_on_after(0.1) as scope:
            await sync_to_async(waits_on_async)()
            await anyio.sleep(10)
        # On asyncio the call may return before the thread is done (asgiref's behaviour).
        await anyio.to_thread.run_sync(finished.wait, 5)
    assert scope.cancelled_caught
    assert len(seen) == 1
    assert isinstance(seen[0], concurrent.futures.CancelledError | cancelled_exc)
    if anyio_backend_name == "trio":
        # On asyncio, asgiref 3.13 returned early and copied the thread's unfinished
        # context (its CurrentThreadExecutor) into this task, so a later
        # thread-sensitive call here fails there; see docs/django-on-trio.md.
        assert await sync_to_async(threading.get_ident)()


@pytest.mark.anyio
async def test_async_to_sync_on_the_loop_thread_is_refused() -> None:
    async def never_run() -> None:  # pragma: no cover - must not be called
        raise AssertionError

    with pytest.raises(RuntimeError, match="cannot use AsyncToSync in the same thread"):
        async_to_sync(never_run)()


@pytest.mark.anyio
async def test_async_to_sync_from_anyio_worker_uses_the_calling_loop(
    anyio_backend_name: str,
) -> None:
    loop_token = anyio.lowlevel.current_token()

    async def probe() -> tuple[str, object, int]:
        sensitive_thread = await sync_to_async(threading.get_ident)()
        return sniffio.current_async_library(), anyio.lowlevel.current_token(), sensitive_thread

    def in_worker() -> tuple[int, tuple[str, object, int]]:
        return threading.get_ident(), async_to_sync(probe)()

    with anyio.fail_after(10):
        worker, (library, token, sensitive_thread) = await anyio.to_thread.run_sync(in_worker)
    assert library == anyio_backend_name
    assert token == loop_token
    # Thread-sensitive code called from the coroutine comes back to the waiting worker.
    assert sensitive_thread == worker


@pytest.mark.anyio
async def test_thread_handler_overrides_are_honoured() -> None:
    # Channels' DatabaseSyncToAsync closes old DB connections in thread_handler.
    calls: list[int] = []

    class Hooked(SyncToAsync[[], int]):
        def thread_handler(self, loop, *args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(threading.get_ident())
            return super().thread_handler(loop, *args, **kwargs)

    assert await Hooked(threading.get_ident)() == calls[0]


@pytest.mark.anyio
async def test_thread_sensitive_context_gets_its_own_thread() -> None:
    shared = await sync_to_async(threading.get_ident)()
    async with ThreadSensitiveContext():
        first = await sync_to_async(threading.get_ident)()
        second = await sync_to_async(threading.get_ident)()
    assert first == second
    assert first != shared
    assert await sync_to_async(threading.get_ident)() == shared


@pytest.mark.anyio
async def test_thread_sensitive_context_with_a_supplied_executor() -> None:
    try:
        context = ThreadSensitiveContext(executor=concurrent.futures.ThreadPoolExecutor(1))  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        pytest.skip("ThreadSensitiveContext(executor=) needs asgiref 3.13")
    executor = context._executor
    assert executor is not None
    try:
        async with context:
            inside = await sync_to_async(threading.get_ident)()
        # The caller owns the executor: still usable after the block.
        assert executor.submit(threading.get_ident).result() == inside
    finally:
        executor.shutdown()


@pytest.mark.anyio
async def test_async_to_sync_restores_the_parent_executor() -> None:
    def nested_twice() -> bool:
        before = getattr(AsyncToSync.executors, "current", None)

        async def noop() -> None:
            await anyio.lowlevel.checkpoint()

        async_to_sync(noop)()
        async_to_sync(noop)()
        return getattr(AsyncToSync.executors, "current", None) is before

    assert await sync_to_async(nested_twice)()
    assert not isinstance(getattr(AsyncToSync.executors, "current", None), CurrentThreadExecutor)
