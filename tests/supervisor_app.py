"""A project whose workers cannot stop: for the supervisor's kill path (tests/test_supervisor.py).

HTTP ``health/`` answers ``ok <pid>``. Lifespan startup succeeds; lifespan
shutdown records ``stuck <pid>`` in ``E2E_EVENTS_FILE`` and then blocks the
worker's event loop in a plain ``time.sleep``. Nothing inside the worker can
interrupt that (no timeout, no cancellation, not Hypercorn's
``shutdown_timeout``), which is exactly the worker the parent must kill: a
hung C call, a deadlocked lock, a handler that never yields.
"""

import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.e2e_app.settings")

import django

django.setup()

from django.urls import path  # noqa: E402

from channels_runtime.generic.http import AsyncHttpConsumer  # noqa: E402
from channels_runtime.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

#: Long enough to outlast any test, short enough that a leaked worker goes away by itself.
STUCK_SECONDS = 120.0


class HealthConsumer(AsyncHttpConsumer):
    async def handle(self, body):
        await self.send_response(
            200, f"ok {os.getpid()}".encode(), headers=[(b"content-type", b"text/plain")]
        )


def _record(line):
    events = os.environ.get("E2E_EVENTS_FILE")
    if events:
        with open(events, "a") as file:
            file.write(line + "\n")


async def stuck_lifespan(scope, receive, send):
    message = await receive()
    assert message["type"] == "lifespan.startup"
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    assert message["type"] == "lifespan.shutdown"
    _record(f"stuck {os.getpid()}")
    time.sleep(STUCK_SECONDS)  # noqa: ASYNC251 (blocks the loop on purpose: it cannot stop)
    await send({"type": "lifespan.shutdown.complete"})


application = ProtocolTypeRouter(
    {
        "http": URLRouter([path("health/", HealthConsumer.as_asgi())]),
        "lifespan": stuck_lifespan,
    }
)
