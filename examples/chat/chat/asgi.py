"""The chat example's ASGI application: Django views over HTTP, the chat over WebSockets.

Run it with ``channels-runtime serve chat.asgi`` (any worker class: asyncio,
uvloop or trio) or ``python manage.py runserver``.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chat.settings")

from channels_runtime.http import get_asgi_application

# Built first: it sets Django up, which must happen before anything imports models.
django_application = get_asgi_application()

from channels_runtime.auth import AuthMiddlewareStack  # noqa: E402
from channels_runtime.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels_runtime.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from rooms.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_application,
        # Origin check outermost: a page on another site must not be able to
        # open a socket with the visitor's session cookie.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
