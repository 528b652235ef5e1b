"""Whether a server wants new traffic: the lifecycle ``/readyz`` reports next to its checks.

A load balancer or Kubernetes needs to hear "stop sending me clients" *before*
the server stops accepting them, or the clients it still routes here in the
meantime are refused. So a shutdown that drains goes through a phase where the
server still accepts and serves everything but says it is not ready:

``starting`` → ``serving`` → ``draining`` → ``stopping``

(``draining`` is skipped when ``drain_seconds`` is 0). Only ``serving`` is
ready. States only move forward: a server that started draining never becomes
ready again, whatever arrives later.

:class:`ServerReadiness` is one server process's state, moved by ``serve_until``;
:class:`SupervisorReadiness` is what the parent of ``serve -w N`` reports: its
own state and every worker's (each worker tells the parent over a pipe, see
:mod:`channels_runtime.server.run`).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from typing import Any

from .signals import wait_until_readable

__all__ = [
    "ParentLink",
    "ServerReadiness",
    "ServerState",
    "StateCheck",
    "SupervisorReadiness",
    "read_states",
]

#: What the parent writes on a worker's command pipe to make it drain. Closing
#: the pipe (or dying) still means "stop", as before draining existed.
DRAIN = b"drain"


class ServerState(enum.IntEnum):
    """Where a server is in its life; the order is the only way it moves."""

    STARTING = 0
    SERVING = 1
    DRAINING = 2
    STOPPING = 3

    @property
    def label(self) -> str:
        return self.name.lower()


#: What ``/readyz`` asks a readiness object: (ready?, one line saying why).
StateCheck = Callable[[], tuple[bool, str]]


class ServerReadiness:
    """One server's state. Listeners hear every change (a worker forwards them to its parent).

    Plain attribute reads and writes: the state may be read from another thread
    (an endpoint served there), and a stale read is at worst one probe late.
    """

    def __init__(self) -> None:
        self.state = ServerState.STARTING
        self.since = time.monotonic()
        self._listeners: list[Callable[[ServerState], object]] = []

    def subscribe(self, listener: Callable[[ServerState], object]) -> None:
        """Call ``listener(state)`` now and on every later change."""
        self._listeners.append(listener)
        listener(self.state)

    def advance(self, state: ServerState) -> bool:
        """Move to ``state`` if it is further along; True if it moved."""
        if state <= self.state:
            return False
        self.state = state
        self.since = time.monotonic()
        for listener in list(self._listeners):
            listener(state)
        return True

    @property
    def ready(self) -> bool:
        return self.state is ServerState.SERVING

    def check(self) -> tuple[bool, str]:
        """(ready?, the state and for how long), for ``/readyz``'s ``server`` check."""
        return self.ready, f"{self.state.label} for {time.monotonic() - self.since:.1f}s"

    def __repr__(self) -> str:
        return f"<ServerReadiness {self.state.label}>"


class SupervisorReadiness:
    """The parent of ``serve -w N``: ready when it is serving and so is every worker.

    "Every worker" means ``workers`` live processes that have each finished
    lifespan startup and are not draining: a worker being replaced (after
    ``max_requests``, or on SIGHUP) makes the server briefly not ready, which a
    probe's failure threshold absorbs; one that is draining on its own (it got
    SIGTERM directly) is going away, so it counts as not ready too.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.own = ServerReadiness()
        self.children: dict[int, ServerState] = {}

    def worker_state(self, pid: int, state: ServerState) -> None:
        """Record what worker ``pid`` reported (never moving it backwards)."""
        if state > self.children.get(pid, ServerState.STARTING) or pid not in self.children:
            self.children[pid] = state

    def worker_gone(self, pid: int) -> None:
        self.children.pop(pid, None)

    def check(self) -> tuple[bool, str]:
        ready, detail = self.own.check()
        if not ready:
            return False, f"supervisor {detail}"
        # A copy made in one step: the main thread updates the dict while an
        # endpoint's thread reads it.
        children = list(self.children.items())
        serving = sum(1 for _, state in children if state is ServerState.SERVING)
        others = sorted(
            f"{pid} {state.label}" for pid, state in children if state is not ServerState.SERVING
        )
        summary = f"{serving} of {self.workers} workers serving"
        if others:
            summary += f" (worker {', worker '.join(others)})"
        return serving >= self.workers and not others, summary

    def __repr__(self) -> str:
        return f"<SupervisorReadiness {self.own.state.label} workers={self.children}>"


# -- between a worker and its parent ------------------------------------------------


class ParentLink:
    """A worker's two pipes to its parent (``multiprocessing`` connections).

    ``commands`` (parent → worker): :data:`DRAIN` makes the worker report
    ``draining`` while it keeps serving; end of file (the parent closed it, or
    died) makes it stop. ``status`` (worker → parent): every state the worker's
    :class:`ServerReadiness` enters, by name.
    """

    def __init__(self, commands: Any, status: Any, readiness: ServerReadiness) -> None:
        self.commands = commands
        self.status = status
        self.readiness = readiness
        readiness.subscribe(self._report)

    def _report(self, state: ServerState) -> None:
        try:
            self.status.send_bytes(state.name.encode())
        except OSError:  # the parent is gone; the command pipe tells the worker so
            pass

    async def wait_for_stop(self) -> None:
        """Return when the parent asks the worker to stop (or dies); drain when told to."""
        while True:
            await wait_until_readable(self.commands.fileno())
            try:
                message = self.commands.recv_bytes()
            except (EOFError, OSError):
                return
            if message == DRAIN:
                self.readiness.advance(ServerState.DRAINING)


def read_states(status: Any) -> tuple[list[ServerState], bool]:
    """Every state a worker reported that is waiting on ``status``, and whether it
    is at end of file (the worker is exiting). Never blocks."""
    states: list[ServerState] = []
    try:
        while status.poll():
            name = status.recv_bytes().decode()
            if name in ServerState.__members__:
                states.append(ServerState[name])
    except (EOFError, OSError):
        return states, True
    return states, False
