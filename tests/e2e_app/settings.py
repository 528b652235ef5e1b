"""Settings of the end-to-end test project (see the package docstring for the switches)."""

import os

SECRET_KEY = "channels-runtime-e2e"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels_runtime"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ROOT_URLCONF = None
ASGI_APPLICATION = "tests.e2e_app.asgi.application"

if os.environ.get("E2E_REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_runtime.layers.redis.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ["E2E_REDIS_URL"]]},
        }
    }
elif os.environ.get("E2E_RECORDING_LAYER"):
    CHANNEL_LAYERS = {"default": {"BACKEND": "tests.e2e_app.layers.RecordingInMemoryChannelLayer"}}
elif not os.environ.get("E2E_NO_CHANNEL_LAYERS"):
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_runtime.layers.InMemoryChannelLayer"}}
