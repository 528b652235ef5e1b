"""Make asgiref's sync/async adapters, and the Django async APIs built on them, work on trio.

Why this exists
---------------
Every Django async API (``aget``, ``asave``, sessions, ``aauthenticate``, ...)
runs its sync body through ``asgiref.sync.sync_to_async``, and every sync view
or signal that awaits something goes through ``async_to_sync``. asgiref
(3.9 to 3.13) finds "the loop" with ``asyncio.get_running_loop()`` and waits
with asyncio futures, so on trio ``sync_to_async`` fails at once, and
``async_to_sync`` either blocks the trio loop or runs the coroutine on a
throwaway asyncio loop where trio code cannot run. asgiref has no hook for
another event loop, so the bridge patches four methods in place:

* ``SyncToAsync.__call__``: on trio, pick the worker thread by asgiref's own
  rules (the waiting parent sync frame, then the ``ThreadSensitiveContext``
  executor, then one process-wide thread kept for trio) and wait for it
  without blocking trio.
* ``AsyncToSync.__call__``: from a thread started by the bridge (or by
  ``anyio.to_thread``/``trio.to_thread``), run the coroutine on the *calling*
  trio loop while this thread serves nested thread-sensitive calls, as
  asgiref does on asyncio.
* ``ThreadSensitiveContext.__aexit__``: join the per-context thread without
  ``asyncio.wrap_future``.
* Django's ``Signal.asend`` and ``async_unsafe``: stand-ins installed by
  :mod:`channels_runtime.compat.bridge_hooks`, which also installs this
  bridge on first use in any process that has imported trio.

On asyncio (and uvloop) every patched method hands over to asgiref's or
Django's original code, with one addition: ``async_to_sync`` from an
``anyio.to_thread`` worker runs on the calling loop instead of a new one.

The bridge relies on asgiref internals, listed in :func:`_missing_internals`.
Importing this module checks them and raises :class:`ImportError`, naming the
installed asgiref version, if any is missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import asgiref
import asgiref.sync as asgiref_sync
import sniffio
import trio
from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.sync import AsyncToSync, SyncToAsync, ThreadSensitiveContext

from . import bridge_hooks

__all__ = ["ASGIREF_VERSION", "gather_on_trio", "install", "is_installed"]

ASGIREF_VERSION: str = getattr(asgiref, "__version__", "unknown")

# asgiref's own wording, so code that matches on it behaves the same on trio.
_SAME_THREAD_MESSAGE = (
    "You cannot use AsyncToSync in the same thread as an async event loop - "
    "just await the async function directly."
)
_DEADLOCK_MESSAGE = "Single thread executor already being used, would deadlock"
_EXITED_CONTEXT_MESSAGE = (
    "ThreadSensitiveContext has exited. Tasks created inside a context with an "
    "executor must finish before it exits."
)


# ---------------------------------------------------------------------------
# Checking the asgiref internals the bridge depends on
# ---------------------------------------------------------------------------


def _probe_sync() -> None:
    """A sync callable used only to inspect ``SyncToAsync`` instances."""


async def _probe_async() -> None:
    """A coroutine function used only to inspect ``AsyncToSync`` instances."""


def _missing_internals() -> list[str]:
    """Name every asgiref internal the bridge uses that this asgiref lacks.

    The bridge re-implements two asgiref methods against private names; a
    release that renames one of them must fail loudly here, not misbehave
    later in production.
    """
    missing: list[str] = []
    if not callable(getattr(asgiref_sync, "_restore_context", None)):
        missing.append("asgiref.sync._restore_context")
    for name in (
        "threadlocal",
        "thread_sensitive_context",
        "deadlock_context",
        "context_to_thread_executor",
        "thread_handler",
    ):
        if not hasattr(SyncToAsync, name):
            missing.append(f"SyncToAsync.{name}")
    if not hasattr(AsyncToSync, "executors"):
        missing.append("AsyncToSync.executors")
    if not hasattr(CurrentThreadExecutor, "run_until_future"):
        missing.append("CurrentThreadExecutor.run_until_future")
    init_params = inspect.signature(CurrentThreadExecutor.__init__).parameters
    if "old_executor" not in init_params:
        missing.append("CurrentThreadExecutor(old_executor)")
    handler = list(inspect.signature(SyncToAsync.thread_handler).parameters.values())
    names = [p.name for p in handler[:5]]
    if names != ["self", "loop", "exc_info", "task_context", "func"] or not any(
        p.kind is inspect.Parameter.VAR_POSITIONAL for p in handler
    ):
        missing.append(
            "SyncToAsync.thread_handler(self, loop, exc_info, task_context, func, *args)"
        )
    s2a = SyncToAsync(_probe_sync)
    missing.extend(
        f"SyncToAsync().{name}"
        for name in ("func", "_thread_sensitive", "_executor")
        if not hasattr(s2a, name)
    )
    a2s = AsyncToSync(_probe_async)
    missing.extend(
        f"AsyncToSync().{name}"
        for name in ("awaitable", "force_new_loop")
        if not hasattr(a2s, name)
    )
    return missing


_missing = _missing_internals()
if _missing:
    raise ImportError(
        f"channels_runtime's trio bridge does not support the installed asgiref "
        f"{ASGIREF_VERSION}: it lacks {', '.join(_missing)}. "
        f"Install asgiref>=3.9,<3.14."
    )
del _missing

_restore_context: Callable[[contextvars.Context], None] = asgiref_sync._restore_context

# asgiref's own methods, captured by the hooks before anything patched them: the
# asyncio path runs asgiref's own code.
_original_sync_to_async_call = bridge_hooks.ORIGINAL_SYNC_TO_ASYNC_CALL
_original_async_to_sync_call = bridge_hooks.ORIGINAL_ASYNC_TO_SYNC_CALL
_original_context_aexit = bridge_hooks.ORIGINAL_CONTEXT_AEXIT

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _on_trio() -> bool:
    """True when the caller runs in a trio task (sniffio's answer, as anyio uses)."""
    try:
        return sniffio.current_async_library() == "trio"
    except sniffio.AsyncLibraryNotFoundError:
        return False


@dataclass(eq=False, slots=True)
class _TrioFrame:
    """What a sync thread needs to get back to the trio loop that is waiting for it.

    One frame belongs to one bridged ``sync_to_async`` call (or one
    ``async_to_sync`` from a trio worker thread). ``scopes`` holds the cancel
    scopes of the coroutines that its ``async_to_sync`` calls are running on
    trio, so that cancelling the waiting task can cancel them too.
    """

    token: trio.lowlevel.TrioToken
    pid: int
    scopes: list[trio.CancelScope] = field(default_factory=list)
    cancelled: bool = False


# Per-thread: the frame of the bridged call this thread is running, if any.
_thread_state = threading.local()

_single_thread_lock = threading.Lock()
_single_thread: tuple[int, ThreadPoolExecutor] | None = None


def _trio_single_thread_executor() -> ThreadPoolExecutor:
    """The one thread that runs thread-sensitive calls made from trio.

    Kept apart from asgiref's ``SyncToAsync.single_thread_executor`` so the
    asyncio path stays untouched. Recreated after a fork, whose child has no
    worker threads.
    """
    global _single_thread
    current = _single_thread
    pid = os.getpid()
    if current is not None and current[0] == pid:
        return current[1]
    with _single_thread_lock:
        if _single_thread is None or _single_thread[0] != pid:
            _single_thread = (
                pid,
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="channels-runtime-trio-sync"),
            )
        return _single_thread[1]


def _ignore_outcome(_outcome: object) -> None:
    """``start_thread_soon`` delivery hook: results travel through a Future instead."""


def _start_in_trio_thread(fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
    """Run ``fn`` in one of trio's cached worker threads and return a Future for it.

    This is the thread source behind ``trio.to_thread``; using it directly
    lets the bridge wait for the result the same way for every executor.
    """
    future: concurrent.futures.Future[Any] = concurrent.futures.Future()

    def job() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn()
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)

    trio.lowlevel.start_thread_soon(job, _ignore_outcome)
    return future


async def _wait_for_future(
    future: concurrent.futures.Future[Any],
    token: trio.lowlevel.TrioToken,
    frame: _TrioFrame | None = None,
) -> Any:
    """Wait on trio for a Future completed in another thread, then return its result.

    No helper thread blocks on the Future: its done-callback asks trio (via the
    thread-safe token) to set an event. On cancellation the nested
    ``async_to_sync`` coroutines of ``frame`` are cancelled and the thread is
    still waited for, because the sync code cannot be interrupted and may hold
    a DB connection or the thread-sensitive thread; then the cancellation is
    re-raised. That is ``trio.to_thread.run_sync``'s contract.
    """
    done = trio.Event()

    def wake(_future: concurrent.futures.Future[Any]) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    future.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        if frame is not None:
            frame.cancelled = True
            for scope in list(frame.scopes):
                scope.cancel()
        with trio.CancelScope(shield=True):
            await done.wait()
        raise
    return future.result()


def _close_awaitable(awaitable: object) -> None:
    """Close a coroutine that will never run, so Python does not warn about it."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()


# ---------------------------------------------------------------------------
# SyncToAsync.__call__
# ---------------------------------------------------------------------------


async def _sync_to_async_on_trio(
    self: SyncToAsync[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """asgiref's ``SyncToAsync.__call__`` logic, with trio waiting instead of asyncio's."""
    __traceback_hide__ = True
    executor: Executor | None
    uses_single_thread = False
    if self._thread_sensitive:
        parent_executor = getattr(AsyncToSync.executors, "current", None)
        sensitive_context = SyncToAsync.thread_sensitive_context.get(None)
        if parent_executor:
            # A sync frame further up is waiting in async_to_sync: run there.
            executor = parent_executor
        elif sensitive_context:
            if getattr(sensitive_context, "_exited", False):
                raise RuntimeError(_EXITED_CONTEXT_MESSAGE)
            executor = SyncToAsync.context_to_thread_executor.get(sensitive_context)
            if executor is None:
                executor = ThreadPoolExecutor(max_workers=1)
                SyncToAsync.context_to_thread_executor[sensitive_context] = executor
        elif SyncToAsync.deadlock_context.get(False):
            raise RuntimeError(_DEADLOCK_MESSAGE)
        else:
            executor = _trio_single_thread_executor()
            uses_single_thread = True
    else:
        executor = self._executor

    own_context: contextvars.Context | None = getattr(self, "context", None)
    context = contextvars.copy_context() if own_context is None else own_context
    child = functools.partial(self.func, *args, **kwargs)
    token = trio.lowlevel.current_trio_token()
    frame = _TrioFrame(token, os.getpid())
    exc_info = sys.exc_info()

    def enter_context(bound: Callable[[], Any]) -> Any:
        def run_child() -> Any:
            # Re-home asgiref Local storage to this thread, as asgiref does.
            _restore_context(context)
            return bound()

        return context.run(run_child)

    def in_worker() -> Any:
        # Frames nest when a thread serves a nested call, so restore the outer one.
        previous = getattr(_thread_state, "frame", None)
        _thread_state.frame = frame
        try:
            # Through thread_handler so subclasses that hook it (Channels'
            # DatabaseSyncToAsync closes old connections there) keep working.
            return self.thread_handler(None, exc_info, [], enter_context, child)
        finally:
            _thread_state.frame = previous

    # Set only here, right before the try that always clears it: raising
    # between the two would leave every later call failing with "would deadlock".
    if uses_single_thread:
        SyncToAsync.deadlock_context.set(True)
    try:
        if executor is None:
            async with trio.to_thread.current_default_thread_limiter():
                future = _start_in_trio_thread(in_worker)
                return await _wait_for_future(future, token, frame)
        future = executor.submit(in_worker)
        return await _wait_for_future(future, token, frame)
    finally:
        if own_context is None:
            # Context variables the sync code set become visible to the caller.
            _restore_context(context)
        SyncToAsync.deadlock_context.set(False)


async def _patched_sync_to_async_call(
    self: SyncToAsync[Any, Any], *args: Any, **kwargs: Any
) -> Any:
    """``SyncToAsync.__call__``: the trio path on trio, asgiref's own code otherwise."""
    __traceback_hide__ = True
    if _on_trio():
        return await _sync_to_async_on_trio(self, args, kwargs)
    return await _original_sync_to_async_call(self, *args, **kwargs)


# ---------------------------------------------------------------------------
# AsyncToSync.__call__
# ---------------------------------------------------------------------------


async def _run_on_trio(
    frame: _TrioFrame,
    call_result: concurrent.futures.Future[Any],
    exc_info: Any,
    context: list[contextvars.Context],
    awaitable: Awaitable[Any],
) -> None:
    """Await ``awaitable`` as a trio system task and report to the waiting thread.

    A system task, because the sync thread cannot own a nursery; the thread
    blocks on ``call_result`` until this ends, and ``frame.scopes`` lets the
    bridged call that owns the thread cancel it, so it is never left behind.
    """
    __traceback_hide__ = True
    _restore_context(context[0])
    scope = trio.CancelScope()
    if frame.cancelled:
        scope.cancel()
    frame.scopes.append(scope)

    def settle(result: Any = None, error: BaseException | None = None) -> None:
        # Publish the context before the result: the thread reads it once woken.
        context[0] = contextvars.copy_context()
        if error is None:
            call_result.set_result(result)
        else:
            call_result.set_exception(error)

    finished = False
    result: Any = None
    try:
        with scope:
            if exc_info[1] is not None:
                # Keep the caller's "during handling of" exception visible, as asgiref does.
                try:
                    raise exc_info[1]
                except BaseException:
                    result = await awaitable
            else:
                result = await awaitable
            finished = True
    except trio.Cancelled:
        # Not our scope: the whole run is shutting down. The thread gets a
        # plain CancelledError; trio's Cancelled must stay on the trio side.
        settle(error=concurrent.futures.CancelledError())
        raise
    except BaseException as exc:
        settle(error=exc)
        return
    finally:
        frame.scopes.remove(scope)
    if finished:
        settle(result)
    else:
        settle(error=concurrent.futures.CancelledError())


def _async_to_sync_on_trio(
    self: AsyncToSync[Any, Any],
    frame: _TrioFrame,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run the coroutine on the trio loop of ``frame``; serve nested sync calls meanwhile."""
    __traceback_hide__ = True
    call_result: concurrent.futures.Future[Any] = concurrent.futures.Future()
    old_executor = getattr(AsyncToSync.executors, "current", None)
    current_executor = CurrentThreadExecutor(old_executor)
    # Set before copying the context, so thread-sensitive sync_to_async calls
    # made by the coroutine find this thread and come back here.
    AsyncToSync.executors.current = current_executor
    context = [contextvars.copy_context()]
    exc_info = sys.exc_info()
    try:
        awaitable = self.awaitable(*args, **kwargs)
        runner = functools.partial(_run_on_trio, frame, call_result, exc_info, context, awaitable)

        def spawn() -> None:
            # Runs on the trio thread; an exception here would crash the run.
            try:
                trio.lowlevel.spawn_system_task(runner)
            except BaseException as exc:
                _close_awaitable(awaitable)
                call_result.set_exception(exc)

        try:
            frame.token.run_sync_soon(spawn)
        except trio.RunFinishedError:
            _close_awaitable(awaitable)
            raise
        current_executor.run_until_future(call_result)
    finally:
        _restore_context(context[0])
        AsyncToSync.executors.current = old_executor
    return call_result.result()


def _worker_thread_token() -> object | None:
    """The native token of the loop that started this worker thread, if any.

    Covers ``anyio.to_thread`` on both backends and ``trio.to_thread``. Both
    probes fail fast (a thread-local lookup) in any other thread.
    """
    try:
        return anyio.from_thread.run_sync(anyio.lowlevel.current_token).native_token
    except RuntimeError:
        pass
    try:
        return trio.from_thread.run_sync(trio.lowlevel.current_trio_token)
    except RuntimeError:
        return None


def _asgiref_knows_a_loop() -> bool:
    """True when asgiref's own threadlocal already routes this thread to an asyncio loop."""
    local = SyncToAsync.threadlocal
    return (
        getattr(local, "main_event_loop", None) is not None
        and getattr(local, "main_event_loop_pid", None) == os.getpid()
    )


_UNSET = object()
_ASGIREF_THREAD_FIELDS = ("main_event_loop", "main_event_loop_pid", "task_context")


def _async_to_sync_from_asyncio_worker(
    self: AsyncToSync[Any, Any],
    loop: asyncio.AbstractEventLoop,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Let asgiref's own code run the coroutine on ``loop``, the one that started this thread.

    asgiref only knows the loop for threads it started itself; for an anyio
    worker thread it would start a new loop in yet another thread. Pointing
    its threadlocal at the caller's loop for the duration of the call reuses
    asgiref's asyncio code unchanged.
    """
    local = SyncToAsync.threadlocal
    saved = {name: getattr(local, name, _UNSET) for name in _ASGIREF_THREAD_FIELDS}
    local.main_event_loop = loop
    local.main_event_loop_pid = os.getpid()
    local.task_context = None
    try:
        return _original_async_to_sync_call(self, *args, **kwargs)
    finally:
        for name, value in saved.items():
            if value is _UNSET:
                delattr(local, name)
            else:
                setattr(local, name, value)


def _patched_async_to_sync_call(self: AsyncToSync[Any, Any], *args: Any, **kwargs: Any) -> Any:
    """``AsyncToSync.__call__``: route to the loop that is waiting for this thread.

    Order: refuse on the trio thread itself; a thread serving a bridged trio
    call returns to that trio loop; an anyio/trio worker thread returns to
    the loop that started it; anything else is asgiref's own code (its
    asyncio threadlocal, or a new loop for a thread that has none).
    """
    __traceback_hide__ = True
    if trio.lowlevel.in_trio_task():
        # asgiref's check only sees asyncio loops; unpatched, this would block trio.
        raise RuntimeError(_SAME_THREAD_MESSAGE)
    if not self.force_new_loop:
        frame: _TrioFrame | None = getattr(_thread_state, "frame", None)
        if frame is not None and frame.pid == os.getpid():
            return _async_to_sync_on_trio(self, frame, args, kwargs)
        if not _asgiref_knows_a_loop():
            native = _worker_thread_token()
            if isinstance(native, trio.lowlevel.TrioToken):
                return _async_to_sync_on_trio(self, _TrioFrame(native, os.getpid()), args, kwargs)
            if isinstance(native, asyncio.AbstractEventLoop):
                return _async_to_sync_from_asyncio_worker(self, native, args, kwargs)
    return _original_async_to_sync_call(self, *args, **kwargs)


# ---------------------------------------------------------------------------
# ThreadSensitiveContext.__aexit__
# ---------------------------------------------------------------------------


async def _patched_context_aexit(
    self: ThreadSensitiveContext, exc: object, value: object, tb: object
) -> None:
    """asgiref's bookkeeping, joining the per-context thread without asyncio."""
    if not _on_trio():
        await _original_context_aexit(self, exc, value, tb)
        return
    if not self.token:
        return
    executor = SyncToAsync.context_to_thread_executor.pop(self, None)
    SyncToAsync.thread_sensitive_context.reset(self.token)
    self.token = None
    # ``_executor``/``_old_executor``/``_exited`` exist from asgiref 3.13 on.
    if getattr(self, "_executor", None) is not None:
        AsyncToSync.executors.current = getattr(self, "_old_executor", None)
        self._old_executor = None
        self._exited = True
        return  # the caller owns a supplied executor
    if executor is not None:
        # Join in a fresh thread: the context's worker may itself be waiting for
        # this loop, so blocking the loop (or a limited pool slot) could deadlock.
        # Shielded, so a cancelled request never leaves its thread running.
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope(shield=True):
            await _wait_for_future(_start_in_trio_thread(executor.shutdown), token)


# ---------------------------------------------------------------------------
# Django
# ---------------------------------------------------------------------------


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The first leaf of ``group`` that is not trio's cancellation, depth first.

    Children fail in order and trio records them in that order; siblings
    cancelled because of the first failure come after it.
    """
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first_error(exc)
            if found is not None:
                return found
        elif not isinstance(exc, trio.Cancelled):
            return exc
    return None


async def gather_on_trio(aws: Iterable[Awaitable[Any]], return_exceptions: bool) -> list[Any]:
    """``asyncio.gather`` for trio: a task group, results in argument order.

    Unlike asyncio's, a failure cancels the other awaitables instead of leaving
    them running unowned. The first error is raised itself, not wrapped in an
    exception group, so callers see what they would see from asyncio.gather.
    """
    pending = list(aws)
    results: list[Any] = [None] * len(pending)

    async def run(index: int, awaitable: Awaitable[Any]) -> None:
        if return_exceptions:
            try:
                results[index] = await awaitable
            except Exception as exc:
                results[index] = exc
        else:
            results[index] = await awaitable

    error: BaseException | None = None
    try:
        async with anyio.create_task_group() as group:
            for index, awaitable in enumerate(pending):
                group.start_soon(run, index, awaitable)
    except BaseExceptionGroup as exc_group:
        error = _first_error(exc_group)
        if error is None:
            raise
    if error is not None:
        # Raised outside the except block so the group does not become its context.
        try:
            raise error
        finally:
            error = None
    return results


# ---------------------------------------------------------------------------
# install()
# ---------------------------------------------------------------------------

_install_lock = threading.Lock()
_installed = False


def install() -> None:
    """Patch asgiref and Django so their sync/async adapters work on trio.

    Idempotent and thread-safe; cheap after the first call. The asyncio path
    keeps running asgiref's and Django's own code, so installing while on
    asyncio is harmless. Django 4.2, whose dispatcher does not use asyncio,
    simply gets no dispatcher patch.
    """
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        SyncToAsync.__call__ = _patched_sync_to_async_call  # type: ignore[method-assign]
        AsyncToSync.__call__ = _patched_async_to_sync_call  # type: ignore[method-assign]
        ThreadSensitiveContext.__aexit__ = _patched_context_aexit  # type: ignore[method-assign]
        # Django's dispatcher and async_unsafe: loop-neutral, usually already in place.
        bridge_hooks.install_hooks()
        _installed = True


def is_installed() -> bool:
    """Whether :func:`install` has patched asgiref and Django in this process."""
    return _installed
