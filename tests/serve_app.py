"""A small project for the ``serve`` tests of client input errors and logging.

Routes:

* HTTP ``health/``: answers ``ok <pid>`` (what ``Server.start()`` waits for);
* HTTP ``boom/``: raises, so Hypercorn logs "Error in ASGI Framework" on the
  ``hypercorn.error`` logger (tests/test_serve_logging.py counts that line);
* ``ws/json/async/`` and ``ws/json/sync/``: JSON echo consumers, the async and
  the sync variant, with the default handling of undecodable and binary frames
  (tests/test_input_errors.py).

The settings are the e2e project's unless ``DJANGO_SETTINGS_MODULE`` names
others (the logging tests add a ``LOGGING`` setting that way).
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.e2e_app.settings")

import django

django.setup()

from django.urls import path  # noqa: E402

from channels_runtime.generic.http import AsyncHttpConsumer  # noqa: E402
from channels_runtime.generic.websocket import (  # noqa: E402
    AsyncJsonWebsocketConsumer,
    JsonWebsocketConsumer,
)
from channels_runtime.routing import ProtocolTypeRouter, URLRouter  # noqa: E402


class HealthConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        await self.send_response(
            200, f"ok {os.getpid()}".encode(), headers=[(b"content-type", b"text/plain")]
        )


class BoomConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        raise RuntimeError("serve_app: boom on purpose")


class AsyncJsonEcho(AsyncJsonWebsocketConsumer):
    async def receive_json(self, content, **kwargs):
        await self.send_json(content)


class SyncJsonEcho(JsonWebsocketConsumer):
    def receive_json(self, content, **kwargs):
        self.send_json(content)


application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("health/", HealthConsumer.as_asgi()),
                path("boom/", BoomConsumer.as_asgi()),
            ]
        ),
        "websocket": URLRouter(
            [
                path("ws/json/async/", AsyncJsonEcho.as_asgi()),
                path("ws/json/sync/", SyncJsonEcho.as_asgi()),
            ]
        ),
    }
)
