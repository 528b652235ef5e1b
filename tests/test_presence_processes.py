"""Presence across real server processes: the example chat, two ``channels-runtime
serve`` processes (asyncio and trio) sharing a Redis started for the test.

The member list is the union of both processes' connections, join/leave
events reach clients on both, a SIGKILLed process's members leave within the
lease (``CHAT_PRESENCE_LEASE``) with ``presence.leave`` delivered, and a Redis
restarted without persistence gets the live members back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer
from test_runserver import ServerProcess, running
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Origin

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chat"
LEASE = 2.0
HEARTBEAT = LEASE / 3
TIMEOUT = 10


def _env(tmp_path: Path, redis: RedisServer) -> dict[str, str]:
    return {
        **os.environ,
        "CHAT_DATABASE": str(tmp_path / "chat.sqlite3"),
        "CHAT_REDIS_URL": redis.url,
        "CHAT_PRESENCE_LEASE": str(LEASE),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }


def recv_until(ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The next message ``wanted`` accepts, skipping others (chat traffic, own joins)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        data = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if wanted(data):
            return data


def is_event(kind: str, name_or_id: str) -> Callable[[dict[str, Any]], bool]:
    def check(data: dict[str, Any]) -> bool:
        member = data.get("member") or {}
        return data["type"] == f"presence.{kind}" and name_or_id in (member["id"], member["name"])

    return check


@pytest.fixture
def servers(
    tmp_path: Path,
) -> Iterator[tuple[RedisServer, dict[str, ServerProcess], dict[str, str]]]:
    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        env = _env(tmp_path, redis)
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=EXAMPLE,
            env=env,
            capture_output=True,
            text=True,
        )
        assert migrate.returncode == 0, f"migrate failed:\n{migrate.stdout}\n{migrate.stderr}"
        procs: dict[str, ServerProcess] = {}
        bases: dict[str, str] = {}
        for worker_class in ("asyncio", "trio"):
            args = ["channels-runtime", "serve", "chat.asgi", "--bind", "127.0.0.1:0"]
            proc = stack.enter_context(
                running([*args, "--worker-class", worker_class], cwd=EXAMPLE, env=env)
            )
            bases[worker_class] = proc.wait_for(r"(http://127\.0\.0\.1:\d+)").group(1)
            procs[worker_class] = proc
        yield redis, procs, bases


def open_ws(stack: ExitStack, base: str) -> tuple[ClientConnection, dict[str, Any]]:
    ws = stack.enter_context(
        connect(
            base.replace("http://", "ws://") + "/ws/chat/lobby/?presence=1",
            origin=Origin(base),
            open_timeout=TIMEOUT,
        )
    )
    welcome = recv_until(ws, lambda d: d["type"] == "welcome")
    return ws, welcome


def test_members_events_crash_and_redis_restart(servers: Any) -> None:
    redis, procs, bases = servers
    with ExitStack() as stack:
        a1, welcome_a1 = open_ws(stack, bases["asyncio"])
        [me_a1] = welcome_a1["members"]
        b1, welcome_b1 = open_ws(stack, bases["trio"])
        # The list is the union of both processes' connections...
        assert welcome_b1["members"][0]["id"] == me_a1["id"]
        assert len(welcome_b1["members"]) == 2
        me_b1 = welcome_b1["members"][1]
        # ...and a join on one process reaches clients of the other.
        assert recv_until(a1, is_event("join", me_b1["id"]))["member"] == me_b1
        # A tab closing on the asyncio process is seen on the trio one.
        with connect(
            bases["asyncio"].replace("http://", "ws://") + "/ws/chat/lobby/?presence=1",
            origin=Origin(bases["asyncio"]),
            open_timeout=TIMEOUT,
        ) as a2:
            [me_a2] = [
                m
                for m in recv_until(a2, lambda d: d["type"] == "welcome")["members"]
                if m["id"] not in (me_a1["id"], me_b1["id"])
            ]
            recv_until(b1, is_event("join", me_a2["id"]))
        recv_until(b1, is_event("leave", me_a2["id"]))

        # SIGKILL the trio process: no disconnect handler runs there, so only
        # its lease lapsing can remove b1. The asyncio process reaps it.
        procs["trio"].signal(signal.SIGKILL)
        killed = time.monotonic()
        leave = recv_until(a1, is_event("leave", me_b1["id"]))
        took = time.monotonic() - killed
        assert took < LEASE + HEARTBEAT + 1.5, took
        a_check, welcome = open_ws(stack, bases["asyncio"])
        assert me_b1["id"] not in [m["id"] for m in welcome["members"]]
        assert leave["member"]["name"] == "anonymous"

        # Redis restarted empty: the asyncio process writes its members back.
        redis.restart()
        deadline = time.monotonic() + TIMEOUT
        while True:
            with ExitStack() as probe_stack:
                try:
                    _, welcome = open_ws(probe_stack, bases["asyncio"])
                except Exception:
                    welcome = {"members": []}
            ids = {m["id"] for m in welcome["members"]}
            if me_a1["id"] in ids:
                break
            assert time.monotonic() < deadline, f"members not back after the restart: {ids}"
            time.sleep(0.3)
        restored = next(m for m in welcome["members"] if m["id"] == me_a1["id"])
        assert restored["since"] == me_a1["since"]  # the same member, not a new one
        assert "re-announcing" in procs["asyncio"].output
        a_check.close()
