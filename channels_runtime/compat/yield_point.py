"""Letting the tasks a handler woke run before a consumer takes its next message.

A consumer yields to the event loop once per handled message, as Channels'
dispatch loop does (see :mod:`channels_runtime.dispatch`). The yield happens on
every message, mostly just before a ``receive()`` that would wait anyway, so it
must cost as little as a yield can. ``anyio.lowlevel.checkpoint()`` asks
sniffio which loop is running and goes through two more calls each time;
measured end to end (``bench/bench_e2e.py`` echo) it added about 6 µs of server
CPU per round trip on asyncio, so each loop's own yield is used instead, chosen
once per consumer by :func:`message_yield`:

* asyncio (and uvloop): a bare ``yield`` from a generator-based coroutine,
  which a ``Task`` treats as "run me again on the next loop iteration" (what
  ``asyncio.sleep(0)`` does inside). The loop runs ready callbacks in order, so
  every task woken before it runs first. A cancellation is delivered there, as
  at any await.
* trio: two ``cancel_shielded_checkpoint()`` calls. Trio runs each batch of
  ready tasks in a random order (on purpose, to expose code that relies on
  ordering), so after one yield a woken task may still be behind this one;
  after two it has run. They are not cancel points: the ``receive()`` that
  follows is.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any

__all__ = ["message_yield"]


@types.coroutine
def _asyncio_yield() -> Generator[None, None, None]:
    yield


def message_yield() -> Callable[[], Awaitable[Any]]:
    """The cheapest yield that lets already-woken tasks run, for the running loop."""
    global _trio_checkpoint
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        if _trio_checkpoint is None:
            from trio.lowlevel import cancel_shielded_checkpoint

            _trio_checkpoint = cancel_shielded_checkpoint
        return _trio_yield
    return _asyncio_yield


#: ``trio.lowlevel.cancel_shielded_checkpoint``, imported on first use under trio.
_trio_checkpoint: Callable[[], Awaitable[None]] | None = None


async def _trio_yield() -> None:
    checkpoint = _trio_checkpoint
    assert checkpoint is not None  # set by message_yield() before this is handed out
    await checkpoint()
    await checkpoint()
