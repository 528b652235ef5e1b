"""ASGI entry point: the token from the query string for WebSockets, from the header for HTTP.

(``health/``, which the test harness polls, is served by the same consumer: a
Django handler nested in a ``URLRouter`` would be refused on trio, see
docs/compatibility.md.)
"""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.compat_projects.authtoken.settings")
get_asgi_application()  # sets Django up before the consumers import models

from channels_auth_token_middlewares.middleware import (  # noqa: E402
    DRFAuthTokenMiddleware,
    QueryStringDRFAuthTokenMiddleware,
)

from .consumers import WhoAmIPage, WhoAmISocket  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": DRFAuthTokenMiddleware(
            URLRouter(
                [
                    path("whoami/", WhoAmIPage.as_asgi()),
                    path("health/", WhoAmIPage.as_asgi()),
                ]
            )
        ),
        "websocket": QueryStringDRFAuthTokenMiddleware(
            URLRouter([path("ws/whoami/", WhoAmISocket.as_asgi())])
        ),
    }
)
