"""django-channels-graphql-ws, unmodified, served by ``channels-runtime serve``.

The library pins Django<5, so this runs where the ``compat-graphql-ws`` extra
is installed next to Django 4.2 (see pyproject.toml). The project
(``tests/compat_projects/graphql_ws``) has a graphene subscription that a
mutation's broadcast feeds through the channel layer, spoken over
``graphql-transport-ws``. It works on asyncio and uvloop. On trio the
connection is accepted, but the library handles each client message in a task
of its own, made with ``asyncio.create_task``: the connection closes with 1011
and the server's log names that call and the fix.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("channels_graphql_ws", reason="needs the compat-graphql-ws extra")

from compat_projects.serving import (
    TIMEOUT,
    WORKER_CLASSES,
    asyncio_on_trio_message,
    serve,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

SUBSCRIBE = 'subscription { onMessage(room: "lobby") { text } }'
SEND = 'mutation { send(room: "lobby", text: "hi") { ok } }'


def message(client: ClientConnection) -> dict[str, Any]:
    received: dict[str, Any] = json.loads(client.recv(timeout=TIMEOUT))
    return received


def subscribe(client: ClientConnection, op_id: str, query: str) -> None:
    client.send(json.dumps({"type": "subscribe", "id": op_id, "payload": {"query": query}}))


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_subscription_fed_by_a_mutation(worker_class: str, tmp_path: Path) -> None:
    server = serve("graphql_ws", worker_class, tmp_path, tmp_path / "db.sqlite3")
    try:
        with (
            connect(server.ws_url + "/graphql/", subprotocols=["graphql-transport-ws"]) as alice,
            connect(server.ws_url + "/graphql/", subprotocols=["graphql-transport-ws"]) as bob,
        ):
            for client in (alice, bob):
                assert client.subprotocol == "graphql-transport-ws"
                client.send(json.dumps({"type": "connection_init"}))
            if worker_class == "trio":
                with pytest.raises(ConnectionClosed) as closed:
                    message(alice)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1011
            else:
                for client in (alice, bob):
                    assert message(client) == {"type": "connection_ack"}
                subscribe(alice, "sub", SUBSCRIBE)
                # The confirmation: the subscription is in its group.
                assert message(alice) == {"type": "next", "id": "sub", "payload": {"data": None}}
                subscribe(bob, "mut", SEND)
                assert message(bob) == {
                    "type": "next",
                    "id": "mut",
                    "payload": {"data": {"send": {"ok": True}}},
                }
                assert message(bob) == {"type": "complete", "id": "mut"}
                assert message(alice) == {
                    "type": "next",
                    "id": "sub",
                    "payload": {"data": {"onMessage": {"text": "hi"}}},
                }
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        log = server.log()
        if worker_class == "trio":
            expected = asyncio_on_trio_message(
                "asyncio.create_task()",
                "channels_graphql_ws.graphql_ws_consumer.GraphqlWsConsumer._spawn_background_task",
                "channels_graphql_ws.graphql_ws_consumer",
                "background_task = asyncio.create_task(awaitable)",
            )
            assert f"AsyncioCallOnTrio: {expected}" in log, log
        else:
            assert "Traceback" not in log, log
    finally:
        server.close()
