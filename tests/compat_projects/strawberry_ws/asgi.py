"""ASGI entry point, as strawberry's Channels guide writes it, less Django's views.

The guide also routes ``re_path(r"^", django_asgi_app)`` under ``"http"``; a
Django handler nested in a ``URLRouter`` is refused on trio (see
docs/compatibility.md), and this project needs no Django view.
"""

import os

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.asgi import get_asgi_application
from django.urls import re_path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.compat_projects.strawberry_ws.settings")
get_asgi_application()  # sets Django up

from strawberry.channels import GraphQLHTTPConsumer, GraphQLWSConsumer  # noqa: E402

from .schema import schema  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter([re_path(r"^graphql", GraphQLHTTPConsumer.as_asgi(schema=schema))]),
        "websocket": URLRouter([re_path(r"^graphql", GraphQLWSConsumer.as_asgi(schema=schema))]),
    }
)
