"""Scaling out over Redis, end to end: two server processes, one group.

Each process is a real ``channels-runtime serve`` — one on asyncio, one on trio —
sharing a ``redis-server`` started for the test. WebSocket clients connect to
each; a message sent to the group from either process reaches the clients of
both, and a client that disconnects from one process stops receiving.
"""

from __future__ import annotations

import signal
from contextlib import ExitStack
from pathlib import Path

from e2e_app.harness import Server, base_env, cli_command
from websockets.sync.client import connect

TIMEOUT = 10


def _server(tmp_path: Path, name: str, worker_class: str, env: dict[str, str]) -> Server:
    return Server(
        [*cli_command(), "serve", "tests.e2e_app.asgi", "-b", "127.0.0.1:0", "-k", worker_class],
        log_path=tmp_path / f"{name}.log",
        env=env,
    )


def test_group_broadcast_reaches_clients_on_two_processes(tmp_path: Path) -> None:
    from redis_server import RedisServer

    with ExitStack() as stack:
        redis = stack.enter_context(RedisServer())
        env = base_env(E2E_REDIS_URL=redis.url, E2E_EVENTS_FILE=str(tmp_path / "events.txt"))
        servers = {
            name: _server(tmp_path, name, worker_class, env)
            for name, worker_class in (("asyncio", "asyncio"), ("trio", "trio"))
        }
        for server in servers.values():
            stack.callback(server.close)
            server.start()
            assert "RedisChannelLayer" in server.log()
        clients = {}
        for name, server in servers.items():
            for n in range(2):
                ws = stack.enter_context(
                    connect(server.ws_url + "/ws/room/shared/", open_timeout=TIMEOUT)
                )
                assert ws.recv(timeout=TIMEOUT) == "joined"
                clients[f"{name}-{n}"] = ws

        # A broadcast from a client of the asyncio process reaches all four clients...
        clients["asyncio-0"].send("from asyncio")
        for label, ws in clients.items():
            assert ws.recv(timeout=TIMEOUT) == "from asyncio", label
        # ...and one from the trio process too.
        clients["trio-1"].send("from trio")
        for label, ws in clients.items():
            assert ws.recv(timeout=TIMEOUT) == "from trio", label

        # A client that leaves one process is discarded from the shared group.
        clients.pop("trio-0").close()
        clients["asyncio-1"].send("after leave")
        for label, ws in clients.items():
            assert ws.recv(timeout=TIMEOUT) == "after leave", label

        for server in servers.values():
            server.signal(signal.SIGTERM)
        for name, server in servers.items():
            assert server.wait(15) == 0, f"{name}:\n{server.log()}"
