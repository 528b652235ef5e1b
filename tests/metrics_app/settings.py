"""Settings of the metrics test project.

``METRICS_REDIS_PREFIX`` switches the channel layer to Redis (127.0.0.1:6379,
that key prefix), so that with ``--workers 2`` a group spans both workers.
"""

import os

SECRET_KEY = "channels-runtime-metrics"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels_runtime",
]
DATABASES: dict[str, dict[str, str]] = {}
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
USE_TZ = True
ROOT_URLCONF = "tests.metrics_app.urls"
ASGI_APPLICATION = "tests.metrics_app.asgi.application"
LOGGING = {"version": 1, "disable_existing_loggers": False}

if os.environ.get("METRICS_REDIS_PREFIX"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_runtime.layers.redis.RedisChannelLayer",
            "CONFIG": {
                "hosts": ["redis://127.0.0.1:6379/0"],
                "prefix": os.environ["METRICS_REDIS_PREFIX"],
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_runtime.layers.InMemoryChannelLayer"}}
