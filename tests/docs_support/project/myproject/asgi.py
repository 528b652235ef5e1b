"""The stand-in project's application: what the snippets' tests talk to."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myproject.settings")

from channels_runtime.http import get_asgi_application

django_asgi_app = get_asgi_application()

from chat import consumers  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from channels_runtime.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels_runtime.security.websocket import AllowedHostsOriginValidator  # noqa: E402

django_application = django_asgi_app
websocket_application = URLRouter(
    [
        path("ws/chat/", AllowedHostsOriginValidator(consumers.EchoConsumer.as_asgi())),
        path("ws/chat/<str:room_name>/", consumers.EchoConsumer.as_asgi()),
    ]
)

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("events/", consumers.EventsConsumer.as_asgi()),
                path("upload/", consumers.UploadConsumer.as_asgi()),
                re_path(r"", django_asgi_app),
            ]
        ),
        "websocket": websocket_application,
        "channel": ChannelNameRouter({"thumbnails": consumers.ThumbnailConsumer.as_asgi()}),
    }
)
