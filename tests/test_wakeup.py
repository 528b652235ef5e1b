"""``compat.wakeup``: the one-waiter wake-up the in-memory layer parks receivers on."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from channels_runtime.compat.wakeup import new_wakeup

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
