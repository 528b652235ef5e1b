"""channels-auth-token-middlewares, unmodified, served by ``channels-runtime serve``.

The project (``tests/compat_projects/authtoken``) authenticates a WebSocket by
the DRF token in its query string and an HTTP request by the one in its
``Authorization`` header, against a real SQLite database. The library calls no
asyncio API itself, so it works on every worker class.
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

pytest.importorskip("channels_auth_token_middlewares", reason="needs the compat extra")

from compat_projects.authtoken.seed import ALICE_TOKEN
from compat_projects.serving import TIMEOUT, WORKER_CLASSES, prepare, serve
from websockets.sync.client import connect


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("authtoken") / "db.sqlite3"
    prepare("authtoken", path)
    return path


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_token_middlewares(worker_class: str, tmp_path: Path, database: Path) -> None:
    server = serve("authtoken", worker_class, tmp_path, database)
    try:
        for query, expected in [
            (f"?token={ALICE_TOKEN}", "alice"),
            ("?token=" + "b2" * 20, "anonymous"),
            ("", "anonymous"),
        ]:
            with connect(f"{server.ws_url}/ws/whoami/{query}") as client:
                assert client.recv(timeout=TIMEOUT) == expected
        for headers, expected in [
            ({"Authorization": f"Token {ALICE_TOKEN}"}, "alice"),
            ({"Authorization": "Token " + "b2" * 20}, "anonymous"),
            ({}, "anonymous"),
        ]:
            response = httpx.get(server.url + "/whoami/", headers=headers, timeout=TIMEOUT)
            assert (response.status_code, response.text) == (200, expected)
        server.signal(signal.SIGTERM)
        assert server.wait(15) == 0, server.log()
        assert "Traceback" not in server.log()
    finally:
        server.close()
