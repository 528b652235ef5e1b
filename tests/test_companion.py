"""run_with_companion: two tasks for one call, neither outliving it (all backends)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from channels_runtime.compat.companion import run_with_companion

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


async def test_cancelling_the_scope_ends_both_and_waits_for_the_companion(
    anyio_backend: Any,
) -> None:
    events: list[str] = []

    async def pump(role: str, scope: anyio.CancelScope) -> None:
        try:
            if role == "companion":
                await anyio.sleep(0.01)
                events.append("companion cancels")
                scope.cancel()
            await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.01)  # cleanup that takes a turn of the loop
            events.append(f"{role} ended")

    with anyio.fail_after(5):
        await run_with_companion(pump, "main", "companion")
    assert events[0] == "companion cancels"
    assert sorted(events[1:]) == ["companion ended", "main ended"]


async def test_main_returning_cancels_the_companion(anyio_backend: Any) -> None:
    ended = anyio.Event()

    async def pump(role: str, scope: anyio.CancelScope) -> None:
        if role == "main":
            await anyio.sleep(0.01)
            return
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    with anyio.fail_after(5):
        await run_with_companion(pump, "main", "companion")
    assert ended.is_set()  # before the call returned


async def test_a_failing_companion_stops_main_and_its_exception_comes_out(
    anyio_backend: Any,
) -> None:
    main_cancelled = False

    async def pump(role: str, scope: anyio.CancelScope) -> None:
        nonlocal main_cancelled
        if role == "companion":
            await anyio.sleep(0.01)
            raise Boom("from the companion")
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            main_cancelled = True
            raise

    with (
        anyio.fail_after(5),
        pytest.RaisesGroup(Boom, allow_unwrapped=True, flatten_subgroups=True),
    ):
        await run_with_companion(pump, "main", "companion")
    assert main_cancelled


async def test_cancelling_the_caller_stops_both(anyio_backend: Any) -> None:
    ended: list[str] = []

    async def pump(role: str, scope: anyio.CancelScope) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            ended.append(role)

    with anyio.move_on_after(0.05) as outer:
        await run_with_companion(pump, "main", "companion")
    assert outer.cancelled_caught
    assert sorted(ended) == ["companion", "main"]
