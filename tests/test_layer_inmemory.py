"""InMemoryChannelLayer: the layer API, expiry, capacity, groups, copying,
cancellation, flush/close and life across event loops, on every backend.

A few tests look at the layer's private tables (``_channels``, ``_groups``) to
check that memory is actually given back; everything else goes through the
public API only.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from typing import Any

import anyio
import pytest

from channels_runtime.exceptions import ChannelFull
from channels_runtime.layers import InMemoryChannelLayer, get_channel_layer
from channels_runtime.layers import inmemory as inmemory_module
from channels_runtime.layers.inmemory import copy_message

pytestmark = pytest.mark.anyio

EXPIRY = 0.05
AFTER_EXPIRY = 0.08


async def nothing_arrives(layer: InMemoryChannelLayer, channel: str, wait: float = 0.03) -> None:
    with anyio.move_on_after(wait):
        message = await layer.receive(channel)
        pytest.fail(f"unexpected message on {channel}: {message!r}")


def is_asyncio(anyio_backend: Any) -> bool:
    return bool(anyio_backend[0] == "asyncio")


# -- construction ----------------------------------------------------------------


def test_defaults_and_extensions() -> None:
    layer = InMemoryChannelLayer()
    assert (layer.expiry, layer.group_expiry, layer.capacity) == (60, 86400, 100)
    assert layer.extensions == ["groups", "flush"]
    assert isinstance(get_channel_layer(), InMemoryChannelLayer)


def test_unknown_kwargs_are_named() -> None:
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\): hosts, symmetric"):
        InMemoryChannelLayer(symmetric_encryption_keys=None, hosts=[])
    with pytest.raises(TypeError, match="hosts, symmetric_encryption_keys"):
        InMemoryChannelLayer(symmetric_encryption_keys=None, hosts=[])


@pytest.mark.parametrize(
    "kwargs",
    [{"expiry": 0}, {"expiry": -1}, {"group_expiry": 0}, {"capacity": 0}, {"capacity": 1.5}],
)
def test_bad_numbers_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        InMemoryChannelLayer(**kwargs)


# -- send / receive ---------------------------------------------------------------


async def test_send_receive_fifo() -> None:
    layer = InMemoryChannelLayer()
    for i in range(5):
        await layer.send("test.fifo", {"type": "m", "i": i})
    assert [(await layer.receive("test.fifo"))["i"] for _ in range(5)] == list(range(5))
    await nothing_arrives(layer, "test.fifo")


async def test_waiting_receiver_gets_message() -> None:
    layer = InMemoryChannelLayer()
    got: list[dict[str, Any]] = []
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:

            async def receiver() -> None:
                got.append(await layer.receive("test.wait"))

            tg.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            await layer.send("test.wait", {"type": "hello"})
    assert got == [{"type": "hello"}]


async def test_receive_on_full_specific_name() -> None:
    layer = InMemoryChannelLayer()
    name = await layer.new_channel()
    await layer.send(name, {"type": "x"})
    assert await layer.receive(name) == {"type": "x"}


@pytest.mark.parametrize(
    "bad", ["", "spaces not allowed", "a" * 100, "two!bangs!", "!leading", 42, b"bytes", ["x"]]
)
async def test_bad_channel_names_are_named(bad: Any) -> None:
    layer = InMemoryChannelLayer()
    pattern = re.escape(repr(bad))
    with pytest.raises(TypeError, match=pattern):
        await layer.send(bad, {"type": "x"})
    with pytest.raises(TypeError, match=pattern):
        await layer.receive(bad)
    with pytest.raises(TypeError, match=pattern):
        await layer.group_add("group", bad)
    with pytest.raises(TypeError, match=pattern):
        await layer.group_discard("group", bad)


@pytest.mark.parametrize("bad", ["has!bang", "a" * 100, "sp ace", 7])
async def test_bad_group_names_are_named(bad: Any) -> None:
    layer = InMemoryChannelLayer()
    pattern = re.escape(repr(bad))
    with pytest.raises(TypeError, match=pattern):
        await layer.group_add(bad, "chan")
    with pytest.raises(TypeError, match=pattern):
        await layer.group_discard(bad, "chan")
    with pytest.raises(TypeError, match=pattern):
        await layer.group_send(bad, {"type": "x"})


@pytest.mark.parametrize("bad", [None, "text", ["type", "x"], (("type", "x"),)])
async def test_message_must_be_a_dict(bad: Any) -> None:
    layer = InMemoryChannelLayer()
    with pytest.raises(TypeError, match="message must be a dict"):
        await layer.send("chan", bad)
    with pytest.raises(TypeError, match="message must be a dict"):
        await layer.group_send("group", bad)


async def test_new_channel_names() -> None:
    layer = InMemoryChannelLayer()
    names = {await layer.new_channel() for _ in range(500)}
    assert len(names) == 500
    assert all(re.fullmatch(r"specific\.inmemory![A-Za-z]{12}", n) for n in names)
    assert re.fullmatch(r"chat\.inmemory![A-Za-z]{12}", await layer.new_channel("chat"))
    with pytest.raises(TypeError, match="bad prefix"):
        await layer.new_channel("bad prefix")


# -- capacity ------------------------------------------------------------------------


async def test_channel_full_and_recovers() -> None:
    layer = InMemoryChannelLayer(capacity=2)
    await layer.send("test.cap", {"n": 1})
    await layer.send("test.cap", {"n": 2})
    with pytest.raises(ChannelFull, match=r"test\.cap"):
        await layer.send("test.cap", {"n": 3})
    assert await layer.receive("test.cap") == {"n": 1}
    await layer.send("test.cap", {"n": 4})
    assert [await layer.receive("test.cap") for _ in range(2)] == [{"n": 2}, {"n": 4}]


async def test_channel_capacity_glob_is_honoured() -> None:
    # Channels' layer crashes on exactly this configuration (4.2.2 on the first send).
    layer = InMemoryChannelLayer(channel_capacity={"small.*": 1})
    await layer.send("small.one", {"n": 1})
    with pytest.raises(ChannelFull):
        await layer.send("small.one", {"n": 2})
    for n in range(100):  # other channels keep the default capacity of 100
        await layer.send("big.one", {"n": n})
    with pytest.raises(ChannelFull):
        await layer.send("big.one", {"n": 100})


async def test_channel_capacity_regex_and_first_match_wins() -> None:
    layer = InMemoryChannelLayer(
        capacity=5,
        channel_capacity={re.compile(r"^http\.response"): 1, "http.*": 3},
    )
    assert layer.get_capacity("http.response.abc") == 1
    assert layer.get_capacity("http.request") == 3
    assert layer.get_capacity("websocket.send") == 5
    for n in range(3):
        await layer.send("http.request", {"n": n})
    with pytest.raises(ChannelFull):
        await layer.send("http.request", {"n": 3})
    await layer.send("http.response.x", {"n": 0})
    with pytest.raises(ChannelFull):
        await layer.send("http.response.x", {"n": 1})


class CountingLayer(InMemoryChannelLayer):
    """Records get_capacity calls, to show capacity is computed once per channel."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.capacity_lookups: list[str] = []

    def get_capacity(self, channel: str) -> int:
        self.capacity_lookups.append(channel)
        return super().get_capacity(channel)


async def test_capacity_computed_once_and_fixed() -> None:
    layer = CountingLayer(capacity=2)
    await layer.send("fixed", {"n": 1})
    # Reconfiguring later does not change a channel that already exists...
    layer.capacity = 1
    await layer.send("fixed", {"n": 2})
    await layer.receive("fixed")
    await layer.receive("fixed")
    assert layer.capacity_lookups == ["fixed"]
    # ...but applies to channels made afterwards.
    await layer.send("fresh", {"n": 1})
    with pytest.raises(ChannelFull):
        await layer.send("fresh", {"n": 2})


# -- copy semantics --------------------------------------------------------------


async def test_sender_changes_after_send_are_not_seen() -> None:
    layer = InMemoryChannelLayer()
    message: dict[str, Any] = {"type": "x", "items": [1, {"deep": [2]}]}
    await layer.send("copy.queued", message)
    message["items"][1]["deep"].append(3)
    message["type"] = "changed"
    assert await layer.receive("copy.queued") == {"type": "x", "items": [1, {"deep": [2]}]}


async def test_handed_over_message_is_a_copy() -> None:
    layer = InMemoryChannelLayer()
    message: dict[str, Any] = {"type": "x", "items": [1]}
    got: list[dict[str, Any]] = []
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:

            async def receiver() -> None:
                got.append(await layer.receive("copy.direct"))
                got[0]["items"].append("receiver")

            tg.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            await layer.send("copy.direct", message)
            message["items"].append("sender")
    assert message == {"type": "x", "items": [1, "sender"]}
    assert got == [{"type": "x", "items": [1, "receiver"]}]


async def test_group_members_get_independent_copies() -> None:
    layer = InMemoryChannelLayer()
    for name in ("a", "b"):
        await layer.group_add("room", f"member.{name}")
    original: dict[str, Any] = {"type": "x", "nested": {"list": [1]}, "tup": ([1],)}
    await layer.group_send("room", original)
    first = await layer.receive("member.a")
    first["nested"]["list"].append(99)
    first["tup"][0].append(99)
    second = await layer.receive("member.b")
    assert second == {"type": "x", "nested": {"list": [1]}, "tup": ([1],)}
    assert original == second


class Box:
    def __init__(self, items: list[int]) -> None:
        self.items = items


def test_copy_message_types() -> None:
    box = Box([1])
    message: dict[str, Any] = {
        "s": "text",
        "b": b"bytes",
        "n": None,
        "f": 1.5,
        "t": (1, [2]),
        "od": OrderedDict(a=[1]),
        "box": box,
    }
    copied = copy_message(message)
    assert copied == {**message, "box": copied["box"]}
    assert type(copied["t"]) is tuple
    assert copied["t"][1] is not message["t"][1]
    assert type(copied["od"]) is OrderedDict
    assert copied["od"]["a"] is not message["od"]["a"]
    assert copied["box"] is not box
    assert copied["box"].items == [1]
    assert copied["box"].items is not box.items
    assert copied["s"] is message["s"]  # immutable leaves are shared, not copied

    sub = OrderedDict(type="x", items=[1])
    sub_copy = copy_message(sub)
    assert type(sub_copy) is OrderedDict
    assert sub_copy["items"] is not sub["items"]


def test_copy_message_cycles_and_depth() -> None:
    cyclic: dict[str, Any] = {"type": "x", "inner": {}}
    cyclic["inner"]["back"] = cyclic
    copied = copy_message(cyclic)
    assert copied is not cyclic
    assert copied["inner"]["back"] is copied

    deep: Any = []
    for _ in range(150):  # deeper than the fast copy goes: deepcopy takes over
        deep = [deep]
    copied_deep = copy_message({"deep": deep})
    assert copied_deep["deep"] is not deep
    assert copied_deep == {"deep": deep}


# -- expiry ---------------------------------------------------------------------------


async def test_expired_messages_are_never_delivered() -> None:
    layer = InMemoryChannelLayer(expiry=EXPIRY)
    await layer.send("exp.chan", {"n": "old"})
    await anyio.sleep(0.03)
    await layer.send("exp.chan", {"n": "newer"})
    await anyio.sleep(0.03)  # "old" is now past its expiry, "newer" is not
    assert await layer.receive("exp.chan") == {"n": "newer"}
    await layer.send("exp.chan", {"n": "stale"})
    await anyio.sleep(AFTER_EXPIRY)
    await nothing_arrives(layer, "exp.chan")
    await layer.send("exp.chan", {"n": "fresh"})
    assert await layer.receive("exp.chan") == {"n": "fresh"}


async def test_expired_messages_free_their_capacity() -> None:
    layer = InMemoryChannelLayer(expiry=EXPIRY, capacity=1)
    await layer.send("exp.cap", {"n": 1})
    await anyio.sleep(AFTER_EXPIRY)
    await layer.send("exp.cap", {"n": 2})  # the lazy sweep ran first: not full
    assert await layer.receive("exp.cap") == {"n": 2}


async def test_abandoned_channels_are_released_after_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The layer's clock is stepped by hand: 5000 sends may take longer than any
    # short expiry on a loaded machine, which made a real-time version flaky.
    now = [time.monotonic()]
    monkeypatch.setattr(inmemory_module, "_monotonic", lambda: now[0])
    layer = InMemoryChannelLayer(expiry=0.2)
    names = [f"abandoned.{i}" for i in range(5000)]  # above the dict-shrink threshold
    for name in names:
        await layer.send(name, {"type": "x"})
    await layer.group_add("room", names[0])
    assert len(layer._channels) == 5000
    now[0] += 0.25
    # send() leaves other channels alone, as Channels' does: their expired messages
    # are still listed, as in Channels' channels dict ...
    await layer.send("someone.else", {"type": "x"})
    assert len(layer.channels) == 5001
    # ... until a receive (or a group operation) sweeps them.
    assert await layer.receive("someone.else") == {"type": "x"}
    assert set(layer._channels) == {"someone.else"}
    # A channel whose message expired has left its groups (as in Channels).
    assert layer._groups == {}
    assert layer._member_of == {}


async def test_group_membership_expires_and_renews() -> None:
    layer = InMemoryChannelLayer(group_expiry=0.1)
    await layer.group_add("g", "stays")
    await layer.group_add("g", "leaves")
    await anyio.sleep(0.06)
    await layer.group_add("g", "stays")  # renewed: 0.1 s from now
    await anyio.sleep(0.06)
    await layer.group_send("g", {"type": "x"})
    assert await layer.receive("stays") == {"type": "x"}
    await nothing_arrives(layer, "leaves")
    assert set(layer._groups["g"]) == {"stays"}


async def test_expired_memberships_of_idle_groups_are_swept() -> None:
    layer = InMemoryChannelLayer(group_expiry=EXPIRY)
    for i in range(1000):
        await layer.group_add(f"idle.{i}", "chan")
    await anyio.sleep(AFTER_EXPIRY)
    for i in range(30):  # crossing the amortisation threshold triggers a full sweep
        await layer.group_add(f"live.{i}", "chan")
    assert all(group.startswith("live.") for group in layer._groups)
    assert layer._member_of["chan"] == {f"live.{i}" for i in range(30)}


# -- groups -----------------------------------------------------------------------------


async def test_group_send_reaches_waiting_and_queued_members() -> None:
    layer = InMemoryChannelLayer()
    got: dict[str, dict[str, Any]] = {}
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            for i in range(3):
                await layer.group_add("room", f"waiting.{i}")

                async def receiver(name: str) -> None:
                    got[name] = await layer.receive(name)

                tg.start_soon(receiver, f"waiting.{i}")
            await layer.group_add("room", "queued")
            await anyio.wait_all_tasks_blocked()
            await layer.group_send("room", {"type": "hi"})
    assert got == {f"waiting.{i}": {"type": "hi"} for i in range(3)}
    assert await layer.receive("queued") == {"type": "hi"}


async def test_group_send_skips_full_member() -> None:
    layer = InMemoryChannelLayer(capacity=1)
    await layer.group_add("room", "full")
    await layer.group_add("room", "roomy")
    await layer.send("full", {"n": "already"})
    await layer.group_send("room", {"n": "group"})  # does not raise
    assert await layer.receive("roomy") == {"n": "group"}
    assert await layer.receive("full") == {"n": "already"}
    await nothing_arrives(layer, "full")


async def test_group_add_discard() -> None:
    layer = InMemoryChannelLayer()
    await layer.group_add("room", "a")
    await layer.group_add("room", "a")  # idempotent
    await layer.group_add("room", "b")
    await layer.group_discard("room", "a")
    await layer.group_discard("room", "a")  # not a member any more: fine
    await layer.group_discard("nowhere", "a")  # no such group: fine
    await layer.group_send("room", {"type": "x"})
    assert await layer.receive("b") == {"type": "x"}
    await nothing_arrives(layer, "a")
    await layer.group_discard("room", "b")
    assert layer._groups == {}
    assert layer._member_of == {}
    await layer.group_send("room", {"type": "to nobody"})
    await layer.group_send("never.existed", {"type": "to nobody"})


async def test_large_group_drain_does_not_scan_everything() -> None:
    """Channels rescans every channel on each receive: draining 10,000 members
    takes it ~40 s. Per-operation cost here does not grow with the channel count."""
    layer = InMemoryChannelLayer()
    names = [f"member.{i}" for i in range(10_000)]
    for name in names:
        await layer.group_add("big", name)
    with anyio.fail_after(3):
        await layer.group_send("big", {"type": "x"})
        for name in names:
            assert await layer.receive(name) == {"type": "x"}


# -- several receivers, cancellation ---------------------------------------------------


async def test_waiting_receivers_served_in_fifo_order() -> None:
    layer = InMemoryChannelLayer()
    got: list[tuple[int, int]] = []
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            for r in range(4):

                async def receiver(r: int) -> None:
                    got.append((r, (await layer.receive("shared"))["n"]))

                tg.start_soon(receiver, r)
                await anyio.wait_all_tasks_blocked()  # receiver r waits before r + 1
            for n in range(4):
                await layer.send("shared", {"n": n})
    assert sorted(got) == [(0, 0), (1, 1), (2, 2), (3, 3)]


async def test_cancelled_waiting_receive_loses_nothing() -> None:
    layer = InMemoryChannelLayer()
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.receive, "cancel.me")
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()
        await layer.send("cancel.me", {"type": "kept"})
        assert await layer.receive("cancel.me") == {"type": "kept"}


async def test_cancellation_race_delivers_each_message_once() -> None:
    """Receivers cancelled right as a message reaches them: every message still
    ends up delivered exactly once, whichever side of the race wins."""
    layer = InMemoryChannelLayer()
    delivered: list[int] = []
    with anyio.fail_after(2):
        for n in range(100):
            async with anyio.create_task_group() as tg:
                scopes = []
                for _ in range(n % 3 + 1):
                    scope = anyio.CancelScope()
                    scopes.append(scope)

                    async def receiver(scope: anyio.CancelScope) -> None:
                        with scope:
                            delivered.append((await layer.receive("race"))["n"])

                    tg.start_soon(receiver, scope)
                await anyio.wait_all_tasks_blocked()
                await layer.send("race", {"n": n})
                for scope in scopes:  # no checkpoint between send and cancel
                    scope.cancel()
        while True:
            with anyio.move_on_after(0.01):
                delivered.append((await layer.receive("race"))["n"])
                continue
            break
    assert sorted(delivered) == list(range(100))


async def test_handed_message_returns_to_next_waiter(anyio_backend: Any) -> None:
    """asyncio only: a raw Task.cancel() lands on a receiver *after* send chose
    it (trio and anyio's own scopes deliver the message instead, tested above)."""
    if not is_asyncio(anyio_backend):
        pytest.skip("needs asyncio's Task.cancel to interrupt a woken waiter")
    layer = InMemoryChannelLayer()
    first = asyncio.ensure_future(layer.receive("handed"))
    await anyio.wait_all_tasks_blocked()
    second = asyncio.ensure_future(layer.receive("handed"))
    await anyio.wait_all_tasks_blocked()
    await layer.send("handed", {"n": 1})  # chosen: first
    first.cancel()
    with anyio.fail_after(1):
        assert await second == {"n": 1}
        with pytest.raises(asyncio.CancelledError):
            await first


async def test_handed_message_returns_to_front_of_queue(anyio_backend: Any) -> None:
    if not is_asyncio(anyio_backend):
        pytest.skip("needs asyncio's Task.cancel to interrupt a woken waiter")
    layer = InMemoryChannelLayer()
    waiter = asyncio.ensure_future(layer.receive("front"))
    await anyio.wait_all_tasks_blocked()
    await layer.send("front", {"n": 1})  # handed to waiter
    await layer.send("front", {"n": 2})  # queued behind it
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert [await layer.receive("front") for _ in range(2)] == [{"n": 1}, {"n": 2}]


async def test_handed_message_outlives_swept_channel(anyio_backend: Any) -> None:
    """The channel is swept away while its message is with a receiver; the
    receiver is then cancelled and the message finds a fresh channel."""
    if not is_asyncio(anyio_backend):
        pytest.skip("needs asyncio's Task.cancel to interrupt a woken waiter")
    layer = InMemoryChannelLayer(expiry=0.2)
    await layer.send("swept", {"n": 0})  # makes the channel: swept at t0 + 0.2
    await layer.receive("swept")
    waiter = asyncio.ensure_future(layer.receive("swept"))
    await anyio.wait_all_tasks_blocked()
    time.sleep(0.1)  # noqa: ASYNC251 - blocking on purpose: the waiter must not run yet
    await layer.send("swept", {"n": 1})  # handed over, expires at t0 + 0.3
    time.sleep(0.12)  # noqa: ASYNC251
    # Any receive or group operation sweeps (send does not): "swept" looks idle.
    await layer.group_send("nobody", {"type": "x"})
    assert "swept" not in layer._channels
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert await layer.receive("swept") == {"n": 1}


async def test_handed_message_past_expiry_is_dropped(anyio_backend: Any) -> None:
    if not is_asyncio(anyio_backend):
        pytest.skip("needs asyncio's Task.cancel to interrupt a woken waiter")
    layer = InMemoryChannelLayer(expiry=EXPIRY)
    waiter = asyncio.ensure_future(layer.receive("late"))
    await anyio.wait_all_tasks_blocked()
    await layer.send("late", {"n": 1})
    time.sleep(AFTER_EXPIRY)  # noqa: ASYNC251 - blocking on purpose: the waiter must not run
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await nothing_arrives(layer, "late")


# -- flush / close ------------------------------------------------------------------------


async def test_flush_drops_messages_and_groups() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("f.chan", {"type": "x"})
    await layer.group_add("room", "f.member")
    await layer.flush()
    await nothing_arrives(layer, "f.chan")
    await layer.group_send("room", {"type": "x"})
    await nothing_arrives(layer, "f.member")
    assert layer._groups == {}
    assert layer._member_of == {}


@pytest.mark.parametrize("method", ["flush", "close"])
async def test_waiting_receivers_keep_waiting_across_flush_and_close(method: str) -> None:
    layer = InMemoryChannelLayer()
    got: list[dict[str, Any]] = []
    with anyio.fail_after(1):
        async with anyio.create_task_group() as tg:

            async def receiver() -> None:
                got.append(await layer.receive("keeps.waiting"))

            tg.start_soon(receiver)
            await anyio.wait_all_tasks_blocked()
            await getattr(layer, method)()
            await anyio.wait_all_tasks_blocked()
            assert got == []
            await layer.send("keeps.waiting", {"type": "after"})
    assert got == [{"type": "after"}]


async def test_close_releases_everything_and_is_repeatable() -> None:
    layer = InMemoryChannelLayer()
    await layer.send("c.chan", {"type": "x"})
    await layer.group_add("room", "c.chan")
    await layer.close()
    await layer.close()
    assert layer._channels == {}
    assert layer._groups == {}
    assert len(layer._timeline) == 0
    await layer.send("c.chan", {"type": "y"})  # still usable
    assert await layer.receive("c.chan") == {"type": "y"}


# -- several event loops ------------------------------------------------------------------


BACKENDS: list[tuple[str, dict[str, Any]]] = [
    ("asyncio", {}),
    ("trio", {}),
    ("asyncio", {"use_uvloop": True}),
]


def test_layer_outlives_event_loops() -> None:
    """One layer used by successive anyio.run calls on different backends:
    nothing loop-bound is kept between operations."""
    layer = InMemoryChannelLayer()

    async def one_run(i: int) -> None:
        if i:
            assert await layer.receive("loops") == {"from": i - 1}  # sent by the last run
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.receive, "abandoned")  # left waiting: cancelled below

            async def echo() -> None:
                await layer.send("loops.reply", await layer.receive("loops.ask"))

            tg.start_soon(echo)
            await anyio.wait_all_tasks_blocked()
            await layer.send("loops.ask", {"run": i})
            with anyio.fail_after(1):
                assert await layer.receive("loops.reply") == {"run": i}
            tg.cancel_scope.cancel()
        await layer.send("loops", {"from": i})

    for i, (backend, options) in enumerate(BACKENDS * 2):
        anyio.run(one_run, i, backend=backend, backend_options=options)
    assert not layer._channels["abandoned"].waiters


def test_pending_receive_cancelled_by_loop_end() -> None:
    layer = InMemoryChannelLayer()

    async def leave_waiting() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(layer.receive, "left")
            await anyio.wait_all_tasks_blocked()
            tg.cancel_scope.cancel()

    async def then_use() -> dict[str, Any]:
        await layer.send("left", {"type": "x"})
        with anyio.fail_after(1):
            return await layer.receive("left")

    for backend, options in BACKENDS:
        anyio.run(leave_waiting, backend=backend, backend_options=options)
        assert anyio.run(then_use, backend=backend, backend_options=options) == {"type": "x"}
