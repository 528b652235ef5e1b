"""strawberry-graphql's Channels integration, unmodified, served by ``channels-runtime serve``.

The project (``tests/compat_projects/strawberry_ws``) serves a schema with
``GraphQLHTTPConsumer`` and ``GraphQLWSConsumer``. Queries over HTTP work on
every worker class. Subscriptions over ``graphql-transport-ws`` work on asyncio
and uvloop; on trio, strawberry's WebSocket consumer starts its protocol
handler with ``asyncio.create_task`` when the client connects, so the
handshake fails and the server's log names that call and the fix.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx
import pytest

pytest.importorskip("strawberry.channels", reason="needs the compat extra")

from compat_projects.serving import (
    TIMEOUT,
    WORKER_CLASSES,
    asyncio_on_trio_message,
    serve,
)
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

HEALTH = "/graphql?query=%7Bhello%7D"


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_query_and_subscription(worker_class: str, tmp_path: Path) -> None:
    server = serve("strawberry_ws", worker_class, tmp_path, tmp_path / "unused.sqlite3", HEALTH)
    try:
        response = httpx.post(
            server.url + "/graphql",
            json={"query": 'query { hello(name: "you") }'},
            timeout=TIMEOUT,
        )
        assert response.status_code == 200
        assert response.json() == {"data": {"hello": "Hello you"}}

        url = server.ws_url + "/graphql"
        if worker_class == "trio":
            with pytest.raises(InvalidStatus) as refused:
                connect(url, subprotocols=["graphql-transport-ws"], open_timeout=TIMEOUT)
            assert refused.value.response.status_code == 500
        else:
            with connect(url, subprotocols=["graphql-transport-ws"]) as client:
                assert client.subprotocol == "graphql-transport-ws"
                client.send(json.dumps({"type": "connection_init"}))
                assert json.loads(client.recv(timeout=TIMEOUT)) == {"type": "connection_ack"}
                query = "subscription { count(upto: 3) }"
                client.send(
                    json.dumps({"type": "subscribe", "id": "1", "payload": {"query": query}})
                )
                for number in range(3):
                    assert json.loads(client.recv(timeout=TIMEOUT)) == {
                        "type": "next",
                        "id": "1",
                        "payload": {"data": {"count": number}},
                    }
                assert json.loads(client.recv(timeout=TIMEOUT)) == {"type": "complete", "id": "1"}
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        log = server.log()
        if worker_class == "trio":
            message = asyncio_on_trio_message(
                "asyncio.create_task()",
                "strawberry.channels.handlers.ws_handler.GraphQLWSConsumer.connect",
                "strawberry.channels.handlers.ws_handler",
                "self.run_task = asyncio.create_task(self.run(self))",
            )
            assert f"AsyncioCallOnTrio: {message}" in log, log
        else:
            assert "Traceback" not in log, log
    finally:
        server.close()
