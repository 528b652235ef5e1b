"""Settings of the soak project.

``DEBUG`` stays off: with it on, Django keeps every SQL query in memory, which
would be a leak of the soak's own making. The in-memory layer's ``expiry`` is
short (5 s) because that layer forgets a channel nobody receives on only once
its expiry has passed; with the default 60 s every soak would wait a minute
for the channel count to come back. It is still far above any wait a
well-behaved room member's message sees.
"""

import os

SECRET_KEY = "channels-runtime-soak"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels_runtime", "bench.soak_app"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["SOAK_DB"],
        # Writers queue on SQLite's file lock instead of failing at once, should
        # the thread-sensitive thread ever not be the only writer.
        "OPTIONS": {"timeout": 30},
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
ROOT_URLCONF = None
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_runtime.layers.InMemoryChannelLayer",
        "CONFIG": {"expiry": 5},
    }
}
