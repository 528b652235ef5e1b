"""Settings of the channels-auth-token-middlewares project."""

from tests.compat_projects.common.settings import *  # noqa: F403
from tests.compat_projects.common.settings import INSTALLED_APPS

INSTALLED_APPS = [
    *INSTALLED_APPS,
    "rest_framework",
    "rest_framework.authtoken",
    "channels_auth_token_middlewares",
]
ASGI_APPLICATION = "tests.compat_projects.authtoken.asgi.application"
COMPAT_SEED = "tests.compat_projects.authtoken.seed.alice_with_a_token"
