"""ASGI entry point, as the library's README writes it."""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.compat_projects.graphql_ws.settings")
django_asgi_app = get_asgi_application()

import channels_graphql_ws  # noqa: E402

from .schema import schema  # noqa: E402


class GraphqlConsumer(channels_graphql_ws.GraphqlWsConsumer):
    schema = schema
    # Each subscription is confirmed, so a client knows when it is in place.
    confirm_subscriptions = True


application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("graphql/", GraphqlConsumer.as_asgi())]),
    }
)
