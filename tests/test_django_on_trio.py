"""Django's async APIs work on trio through the bridge, and still work on asyncio/uvloop.

Database: tests/conftest.py configures SQLite ``:memory:``, which is private to
each connection, and Django keeps one connection per thread. The async ORM runs
on a worker thread (asgiref's on asyncio, the bridge's on trio) while the tables
are created on the main thread, so an in-memory database would look empty
there. The ``database`` fixture therefore points the ``default`` alias at a
temporary SQLite file for this module: it edits ``NAME`` in the settings dict
that every thread's connection shares, then closes connections so each thread
reconnects to the file. The order matters: Django ignores ``close()`` on an
in-memory connection, so ``NAME`` changes first. Each test closes the worker
thread's connection before and after, so nothing opened here (or earlier in the
session against ``:memory:``) leaks across.
"""

from __future__ import annotations

import random
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from django.contrib import auth
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.sessions.backends.db import SessionStore
from django.core.exceptions import SynchronousOnlyOperation
from django.db import connections
from django.dispatch import Signal
from django.http import HttpRequest
from django.test.utils import override_settings
from sqlite_file import sqlite_file_database

from channels_runtime.compat import asgiref_trio
from channels_runtime.compat.backend import ensure_bridge
from channels_runtime.sync import (
    SyncToAsync,
    ThreadSensitiveContext,
    async_to_sync,
    sync_to_async,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    asgiref_trio.install()
    # A fast hasher: the default PBKDF2 would spend seconds in auth tests.
    with (
        override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]),
        sqlite_file_database(tmp_path_factory.mktemp("django-on-trio") / "db.sqlite3") as path,
    ):
        yield path


@pytest.fixture(autouse=True)
async def _db(database: Path, anyio_backend: object) -> AsyncIterator[None]:
    assert ensure_bridge()
    await sync_to_async(connections.close_all)()
    yield
    await sync_to_async(connections.close_all)()


async def test_async_orm(anyio_backend_name: str) -> None:
    name = f"orm-{anyio_backend_name}"
    before = await User.objects.acount()
    user = await User.objects.acreate(username=name, email="a@example.com")
    assert await User.objects.acount() == before + 1

    fetched = await User.objects.aget(username=name)
    assert fetched.pk == user.pk
    fetched.first_name = "Ada"
    await fetched.asave()
    assert (await User.objects.aget(pk=user.pk)).first_name == "Ada"

    names = [u.username async for u in User.objects.filter(username__startswith="orm-")]
    assert name in names

    deleted, _ = await User.objects.filter(pk=user.pk).adelete()
    assert deleted == 1
    assert await User.objects.acount() == before


async def test_sessions() -> None:
    session = SessionStore()
    await session.aset("cart", [1, 2, 3])
    await session.asave()
    assert session.session_key

    loaded = SessionStore(session_key=session.session_key)
    data = await loaded.aload()
    assert data["cart"] == [1, 2, 3]
    assert await loaded.aget("cart") == [1, 2, 3]
    await loaded.adelete()


async def test_authenticate(anyio_backend_name: str) -> None:
    name = f"auth-{anyio_backend_name}"
    created = await sync_to_async(User.objects.create_user)(name, password="s3cret")
    try:
        good = await auth.aauthenticate(username=name, password="s3cret")
        assert good is not None
        assert good.pk == created.pk
        assert await auth.aauthenticate(username=name, password="wrong") is None
    finally:
        await created.adelete()


async def test_login_get_user_logout(anyio_backend_name: str) -> None:
    name = f"login-{anyio_backend_name}"
    user = await sync_to_async(User.objects.create_user)(name, password="pw")
    try:
        request = HttpRequest()
        request.session = SessionStore()
        # alogin sends user_logged_in; Django's update_last_login receiver saves last_login.
        await auth.alogin(request, user)
        assert await request.session.aget(auth.SESSION_KEY) == str(user.pk)
        assert (await User.objects.aget(pk=user.pk)).last_login is not None

        current = await auth.aget_user(request)
        assert current.pk == user.pk

        await auth.alogout(request)
        assert isinstance(await auth.aget_user(request), AnonymousUser)
    finally:
        await user.adelete()


async def test_signal_asend_with_sync_and_async_receivers() -> None:
    signal = Signal()
    sync_threads: list[int] = []

    def sync_receiver(sender: object, **kwargs: Any) -> str:
        sync_threads.append(threading.get_ident())
        return "sync"

    async def async_receiver(sender: object, **kwargs: Any) -> str:
        await anyio.lowlevel.checkpoint()
        return "async"

    signal.connect(sync_receiver, weak=False)
    signal.connect(async_receiver, weak=False)
    responses = await signal.asend(sender=None)
    assert responses == [(sync_receiver, "sync"), (async_receiver, "async")]
    assert sync_threads
    assert sync_threads[0] != threading.get_ident()


async def test_signal_asend_robust_collects_errors() -> None:
    signal = Signal()
    sync_error = ValueError("sync")
    async_error = KeyError("async")

    def sync_receiver(sender: object, **kwargs: Any) -> None:
        raise sync_error

    async def async_receiver(sender: object, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise async_error

    async def fine(sender: object, **kwargs: Any) -> int:
        return 1

    for receiver in (sync_receiver, async_receiver, fine):
        signal.connect(receiver, weak=False)
    responses = await signal.asend_robust(sender=None)
    assert responses == [(sync_receiver, sync_error), (async_receiver, async_error), (fine, 1)]


async def test_signal_asend_raises_the_first_receiver_error() -> None:
    signal = Signal()
    first = ValueError("first")
    second_finished = anyio.Event()

    async def fails_first(sender: object, **kwargs: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise first

    async def fails_later(sender: object, **kwargs: Any) -> None:
        try:
            await anyio.sleep(0.05)
            raise KeyError("later")
        finally:
            second_finished.set()

    signal.connect(fails_first, weak=False)
    signal.connect(fails_later, weak=False)
    with pytest.raises(ValueError, match="first") as info:
        await signal.asend(sender=None)
    assert info.value is first
    # asyncio.gather leaves the other receiver running; on trio it was cancelled.
    with anyio.fail_after(5):
        await second_finished.wait()


async def test_signal_send_with_async_receiver_from_a_sync_thread(
    anyio_backend_name: str,
) -> None:
    import sniffio

    signal = Signal()

    async def async_receiver(sender: object, **kwargs: Any) -> str:
        await anyio.lowlevel.checkpoint()
        return sniffio.current_async_library()

    signal.connect(async_receiver, weak=False)
    responses = await sync_to_async(signal.send)(sender=None)
    assert responses == [(async_receiver, anyio_backend_name)]


async def test_thread_sensitive_context_with_orm() -> None:
    shared = await sync_to_async(threading.get_ident)()
    async with ThreadSensitiveContext():
        count = await User.objects.acount()
        first = await sync_to_async(threading.get_ident)()
        second = await sync_to_async(threading.get_ident)()
        # This thread is about to end; close its connection rather than leak it.
        await sync_to_async(connections.close_all)()
    assert count >= 0
    assert first == second != shared


async def test_sync_orm_on_the_loop_thread_is_refused() -> None:
    with pytest.raises(SynchronousOnlyOperation):
        User.objects.count()


async def test_many_concurrent_tasks_with_random_cancellation(anyio_backend_name: str) -> None:
    """100 tasks mixing ORM, sessions and nested bridges; ~20% cancelled at random points.

    A cancelled task arms its deadline (0-20 ms) on reaching a randomly chosen
    step, so cancellations land inside every kind of call, including the
    coroutine that ``async_to_sync`` runs inside ``sync_to_async``.
    """
    rng = random.Random(20240517)
    tasks = 100
    steps = 5
    plan = [
        (rng.randrange(steps), rng.uniform(0.0, 0.02)) if rng.random() < 0.2 else None
        for _ in range(tasks)
    ]
    completed = [False] * tasks
    cancelled_at: list[int | None] = [None] * tasks
    prefix = f"load-{anyio_backend_name}-"

    async def count_after_a_nap() -> int:
        await anyio.sleep(0.001)
        return await User.objects.acount()

    def nested() -> int:
        return async_to_sync(count_after_a_nap)()

    async def one(index: int) -> None:
        step = 0
        with anyio.CancelScope() as scope:

            def reached(next_step: int) -> None:
                nonlocal step
                step = next_step
                planned = plan[index]
                if planned is not None and planned[0] == next_step:
                    scope.deadline = anyio.current_time() + planned[1]

            await anyio.sleep(rng.uniform(0.0, 0.2))
            reached(0)
            user = await User.objects.acreate(username=f"{prefix}{index}")
            reached(1)
            session = SessionStore()
            await session.aset("uid", user.pk)
            await session.asave()
            reached(2)
            loaded = SessionStore(session_key=session.session_key)
            assert (await loaded.aload())["uid"] == user.pk
            reached(3)
            assert await sync_to_async(nested)() >= 1
            reached(4)
            await user.adelete()
            await session.adelete()
            completed[index] = True
        if scope.cancelled_caught:
            cancelled_at[index] = step

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for index in range(tasks):
                group.start_soon(one, index)

    for index in range(tasks):
        if plan[index] is None:
            assert completed[index], f"task {index} was not cancelled but did not finish"
        else:
            assert completed[index] or cancelled_at[index] is not None
    assert 10 <= plan.count(None) <= 95
    # Cancellations really happened, and at more than one kind of step.
    assert len({step for step in cancelled_at if step is not None}) >= 2
    # The thread-sensitive path is healthy afterwards: no stuck "would deadlock" flag.
    assert SyncToAsync.deadlock_context.get(False) is False
    await User.objects.filter(username__startswith=prefix).adelete()
    assert await User.objects.filter(username__startswith=prefix).acount() == 0
