"""Settings of the strawberry-graphql project."""

from tests.compat_projects.common.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.compat_projects.strawberry_ws.asgi.application"
