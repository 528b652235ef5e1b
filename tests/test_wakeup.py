"""``compat.wakeup``: the one-waiter wake-up the in-memory layer parks receivers on, and Notice."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from channels_runtime.compat.wakeup import Notice, new_wakeup

pytestmark = pytest.mark.anyio


async def test_set_before_wait_returns_at_once(anyio_backend: Any) -> None:
    wakeup = new_wakeup()
    wakeup.set()
    wakeup.set()  # idempotent
    with anyio.fail_after(1):
        await wakeup.wait()


async def test_set_wakes_a_waiting_task(anyio_backend: Any) -> None:
    wakeup = new_wakeup()
    woken: list[str] = []

    async def waiter() -> None:
        await wakeup.wait()
        woken.append("woken")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            assert woken == []
            wakeup.set()
    assert woken == ["woken"]


async def test_cancelled_waiter_is_withdrawn_and_a_later_set_is_harmless(
    anyio_backend: Any,
) -> None:
    wakeup = new_wakeup()
    with anyio.move_on_after(0.05) as scope:
        await wakeup.wait()
    assert scope.cancelled_caught
    wakeup.set()  # nobody waits any more: no error, nothing rescheduled
    await anyio.lowlevel.checkpoint()


async def test_the_wakeup_belongs_to_the_running_loop(anyio_backend: Any) -> None:
    """asyncio and uvloop get a future-based wake-up, trio a task-based one."""
    kind = type(new_wakeup()).__name__
    expected = "_TrioWakeup" if anyio_backend[0] == "trio" else "_AsyncioWakeup"
    assert kind == expected


async def test_a_notice_wakes_every_waiter_and_each_deadline_is_its_own(
    anyio_backend: Any,
) -> None:
    notice = Notice()
    results: dict[str, tuple[bool, float]] = {}
    start = anyio.current_time()

    async def waiter(name: str, seconds: float) -> None:
        woke = await notice.wait_until(anyio.current_time() + seconds)
        results[name] = (woke, anyio.current_time() - start)

    async with anyio.create_task_group() as group:
        group.start_soon(waiter, "short", 0.05)
        group.start_soon(waiter, "long-a", 10)
        group.start_soon(waiter, "long-b", 10)
        await anyio.sleep(0.3)
        assert list(results) == ["short"]  # its deadline passed, the others wait on
        notice.set()
    assert results["short"][0] is False
    # asyncio runs a timer up to its clock resolution early: a little under 0.05 is on time.
    assert 0.045 <= results["short"][1] < 0.3
    assert results["long-a"][0] is results["long-b"][0] is True
    assert results["long-a"][1] < 1  # woken by set(), not by the deadline
    assert notice._waiters is None
    assert await notice.wait_until(anyio.current_time() + 10) is True  # set: at once


async def test_a_cancelled_notice_waiter_leaves_nothing_behind(anyio_backend: Any) -> None:
    notice = Notice()
    with anyio.move_on_after(0.05):
        await notice.wait_until(anyio.current_time() + 10)
    assert notice._waiters == []
    assert not notice.is_set()
    assert await notice.wait_until(anyio.current_time() - 1) is False  # past: returns
