"""Settings of the djangochannelsrestframework project."""

from tests.compat_projects.common.settings import *  # noqa: F403
from tests.compat_projects.common.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "rest_framework", "tests.compat_projects.dcrf"]
ASGI_APPLICATION = "tests.compat_projects.dcrf.asgi.application"
