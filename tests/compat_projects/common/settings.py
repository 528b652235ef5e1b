"""Settings every compat project starts from, as a Channels project would write them.

``"channels_runtime"`` comes first in ``INSTALLED_APPS`` (the one line an
unmodified Channels project adds); ``"channels"`` is listed as Channels'
documentation tells, and the layer is named by its Channels path.
"""

import os

SECRET_KEY = "compat-projects"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "channels_runtime",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "channels",
    "tests.compat_projects.common",
]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tests.compat_projects.common.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # A file the test creates with prepare_compat before serving.
        "NAME": os.environ.get("COMPAT_DATABASE", ":memory:"),
    }
}
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
#: Dotted path of a function that adds the project's test data (run by prepare_compat).
COMPAT_SEED: str | None = None
