"""djangochannelsrestframework, unmodified, served by ``channels-runtime serve``.

The project (``tests/compat_projects/dcrf``) is a model consumer over a real
SQLite database: ``create`` and ``list`` actions, a model observer
subscription that another connection's ``create`` reaches through the channel
layer, and a detached action. Everything but the detached action works on every
worker class; the detached action is run by the library with
``asyncio.create_task``, so on trio the connection fails and the server's log
names that call and the fix.
"""

from __future__ import annotations

import json
import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("djangochannelsrestframework", reason="needs the compat extra")

from compat_projects.serving import (
    TIMEOUT,
    WORKER_CLASSES,
    asyncio_on_trio_message,
    prepare,
    serve,
)
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dcrf") / "db.sqlite3"
    prepare("dcrf", path)
    return path


def request(client: ClientConnection, **content: Any) -> dict[str, Any]:
    client.send(json.dumps(content))
    reply: dict[str, Any] = json.loads(client.recv(timeout=TIMEOUT))
    return reply


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_model_consumer(worker_class: str, tmp_path: Path, database: Path) -> None:
    server = serve("dcrf", worker_class, tmp_path, database)
    try:
        with ExitStack() as stack:
            watcher = stack.enter_context(connect(server.ws_url + "/ws/notes/"))
            writer = stack.enter_context(connect(server.ws_url + "/ws/notes/"))
            reply = request(watcher, action="subscribe_activity", request_id=1)
            assert (reply["response_status"], reply["data"]) == (201, {"subscribed": True})

            title = f"note on {worker_class}"
            reply = request(writer, action="create", request_id=2, data={"title": title})
            assert reply["response_status"] == 201, reply
            assert reply["data"]["title"] == title
            # The observer saw the creation (a post_save signal in the ORM's thread,
            # a group_send through the layer) and told the subscribed connection.
            event = json.loads(watcher.recv(timeout=TIMEOUT))
            assert event == {"activity": {"action": "create", "title": title}}

            reply = request(writer, action="list", request_id=3)
            assert reply["response_status"] == 200
            assert title in [note["title"] for note in reply["data"]]

            writer.send(json.dumps({"action": "shout", "request_id": 4, "text": "hi"}))
            if worker_class != "trio":
                reply = json.loads(writer.recv(timeout=TIMEOUT))
                assert (reply["response_status"], reply["data"]) == (200, {"text": "HI"})
            else:
                with pytest.raises(ConnectionClosed) as closed:
                    writer.recv(timeout=TIMEOUT)
                assert closed.value.rcvd is not None
                assert closed.value.rcvd.code == 1011
                # The other connection is not affected.
                assert request(watcher, action="list", request_id=5)["response_status"] == 200
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        log = server.log()
        message = asyncio_on_trio_message(
            "asyncio.create_task()",
            "djangochannelsrestframework.decorators.__detached_action.<locals>"
            ".wrapped_detached_method",
            "djangochannelsrestframework.decorators",
            "task = asyncio.create_task(wrapped_action())",
        )
        if worker_class == "trio":
            assert f"AsyncioCallOnTrio: {message}" in log, log
        else:
            assert "Traceback" not in log, log
    finally:
        server.close()
