"""Settings of the django-channels-graphql-ws project."""

from tests.compat_projects.common.settings import *  # noqa: F403

ASGI_APPLICATION = "tests.compat_projects.graphql_ws.asgi.application"
