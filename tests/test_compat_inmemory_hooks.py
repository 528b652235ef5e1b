"""The in-memory layer's ``_clean_expired`` and ``_remove_from_groups``, as Channels has them.

Test suites written for Channels wrap these two private methods on the class
(django-channels-graphql-ws's conftest puts a lock around them and around the
public API). They must exist, mean what they mean in Channels, and be called
where Channels calls them: ``_clean_expired`` at the start of every ``receive``
and ``group_send``, ``_remove_from_groups`` once for each message that expires.
"""

from __future__ import annotations

import inspect
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest

from channels_runtime.layers import InMemoryChannelLayer

pytestmark = pytest.mark.anyio

EXPIRY = 0.05
AFTER_EXPIRY = 0.08


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts calls of the two hooks, by wrapping them on the class as a test suite would."""
    counter: Counter[str] = Counter()
    clean = InMemoryChannelLayer._clean_expired
    remove = InMemoryChannelLayer._remove_from_groups

    def counted_clean(self: InMemoryChannelLayer) -> None:
        counter["_clean_expired"] += 1
        clean(self)

    def counted_remove(self: InMemoryChannelLayer, channel: str) -> None:
        counter[f"_remove_from_groups {channel}"] += 1
        remove(self, channel)

    monkeypatch.setattr(InMemoryChannelLayer, "_clean_expired", counted_clean)
    monkeypatch.setattr(InMemoryChannelLayer, "_remove_from_groups", counted_remove)
    return counter


async def test_clean_expired_runs_where_channels_runs_it(calls: Counter[str]) -> None:
    layer = InMemoryChannelLayer()
    name = await layer.new_channel()
    await layer.group_add("g", name)
    await layer.send(name, {"type": "a"})
    await layer.group_discard("g", name)
    await layer.group_add("g", name)
    assert calls["_clean_expired"] == 0
    await layer.receive(name)
    assert calls["_clean_expired"] == 1
    await layer.group_send("g", {"type": "b"})
    assert calls["_clean_expired"] == 2
    await layer.receive(name)
    assert calls["_clean_expired"] == 3
    await layer.flush()
    await layer.close()
    assert calls["_clean_expired"] == 3
    assert not any(key.startswith("_remove_from_groups") for key in calls)


async def test_each_expired_message_removes_its_channel_from_groups(calls: Counter[str]) -> None:
    layer = InMemoryChannelLayer(expiry=EXPIRY)
    stale = await layer.new_channel()
    fresh = await layer.new_channel()
    for channel in (stale, fresh):
        await layer.group_add("room", channel)
        await layer.group_add("other", channel)
    await layer.send(stale, {"type": "old", "n": 1})
    await layer.send(stale, {"type": "old", "n": 2})
    await anyio.sleep(AFTER_EXPIRY)
    await layer.send(fresh, {"type": "new"})
    # The expiry pass of the next receive finds the stale channel's two messages.
    assert await layer.receive(fresh) == {"type": "new"}
    assert calls[f"_remove_from_groups {stale}"] == 2
    assert calls[f"_remove_from_groups {fresh}"] == 0
    assert stale not in layer.channels
    assert set(layer.groups["room"]) == {fresh}
    assert set(layer.groups["other"]) == {fresh}
    # Nobody was receiving on it, so a group message no longer reaches it.
    await layer.group_send("room", {"type": "hello"})
    assert await layer.receive(fresh) == {"type": "hello"}
    with anyio.move_on_after(0.02) as scope:
        await layer.receive(stale)
    assert scope.cancelled_caught


async def test_receive_that_meets_expired_messages_removes_from_groups(
    calls: Counter[str],
) -> None:
    layer = InMemoryChannelLayer(expiry=EXPIRY)
    name = await layer.new_channel()
    await layer.group_add("room", name)
    await layer.send(name, {"type": "old"})
    await anyio.sleep(AFTER_EXPIRY)
    with anyio.move_on_after(0.02):
        await layer.receive(name)
    assert calls[f"_remove_from_groups {name}"] == 1
    assert "room" not in layer.groups


async def test_full_send_dropping_expired_messages_removes_from_groups(
    calls: Counter[str],
) -> None:
    layer = InMemoryChannelLayer(expiry=EXPIRY, capacity=1)
    name = await layer.new_channel()
    await layer.group_add("room", name)
    await layer.send(name, {"type": "old"})
    await anyio.sleep(AFTER_EXPIRY)
    await layer.send(name, {"type": "new"})  # full, but of an expired message
    assert calls[f"_remove_from_groups {name}"] == 1
    assert "room" not in layer.groups
    assert await layer.receive(name) == {"type": "new"}


async def test_clean_expired_called_directly_drops_expired_messages() -> None:
    layer = InMemoryChannelLayer(expiry=EXPIRY)
    name = await layer.new_channel()
    await layer.group_add("room", name)
    await layer.send(name, {"type": "old"})
    assert name in layer.channels
    await anyio.sleep(AFTER_EXPIRY)
    layer._clean_expired()
    assert name not in layer.channels
    assert "room" not in layer.groups


def test_remove_from_groups_called_directly_leaves_every_group() -> None:
    async def main() -> None:
        layer = InMemoryChannelLayer()
        for group in ("a", "b"):
            await layer.group_add(group, "x")
            await layer.group_add(group, "y")
        layer._remove_from_groups("x")
        assert {group: set(layer.groups[group]) for group in layer.groups} == {
            "a": {"y"},
            "b": {"y"},
        }
        layer._remove_from_groups("y")
        assert len(layer.groups) == 0

    anyio.run(main)


@pytest.fixture
def guarded_layer_class() -> type[InMemoryChannelLayer]:
    """A subclass with the lock django-channels-graphql-ws's conftest puts on the layer."""
    guard = threading.RLock()

    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(func):

            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with guard:
                    return await func(*args, **kwargs)

            return async_wrapper

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with guard:
                return func(*args, **kwargs)

        return wrapper

    class Guarded(InMemoryChannelLayer):
        pass

    for name in (
        "_clean_expired",
        "_remove_from_groups",
        "close",
        "flush",
        "group_add",
        "group_discard",
        "group_send",
        "new_channel",
        "send",
    ):
        setattr(Guarded, name, wrap(getattr(InMemoryChannelLayer, name)))
    return Guarded


async def test_layer_works_with_every_method_wrapped(
    guarded_layer_class: type[InMemoryChannelLayer],
) -> None:
    layer = guarded_layer_class(expiry=EXPIRY)
    a = await layer.new_channel()
    b = await layer.new_channel()
    await layer.group_add("room", a)
    await layer.group_add("room", b)
    async with anyio.create_task_group() as tg:
        received: list[dict[str, Any]] = []

        async def take(channel: str) -> None:
            received.append(await layer.receive(channel))

        tg.start_soon(take, a)
        tg.start_soon(take, b)
        await anyio.sleep(0.01)
        await layer.group_send("room", {"type": "hi"})
    assert received == [{"type": "hi"}, {"type": "hi"}]
    await layer.send(a, {"type": "old"})
    await anyio.sleep(AFTER_EXPIRY)
    await layer.group_send("room", {"type": "after"})  # its expiry pass drops "old"
    assert set(layer.groups["room"]) == {b}
    await layer.group_discard("room", b)
    await layer.flush()
    await layer.close()
    assert len(layer.groups) == 0
