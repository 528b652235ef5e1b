"""Settings for the chat example.

Every value has a default that works on a fresh clone, so nothing needs
configuring to try it. A few can be changed through the environment:

``DJANGO_DEBUG``          ``1`` (default) or ``0``
``DJANGO_SECRET_KEY``     the signing key; the default is public, so never deploy it
``DJANGO_ALLOWED_HOSTS``  comma-separated host names (default: local addresses only)
``CHAT_DATABASE``         path of the SQLite file (default: ``db.sqlite3`` next to manage.py)
``CHAT_REDIS_URL``        a Redis URL: use the Redis channel layer, for several processes
``CHAT_PRESENCE_LEASE``   seconds before a dead process's members leave the list (default 15)
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


# This key is published with the example, so it protects nothing. Set
# DJANGO_SECRET_KEY to a long random value anywhere others can reach the server.
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "chat-example-not-secret-3d1f0c9e8b7a4f2e9c6d5b4a3f2e1d0c"
)
DEBUG = _env_flag("DJANGO_DEBUG", True)
ALLOWED_HOSTS = _env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    # First, so that its runserver (ASGI through Hypercorn) wins over
    # staticfiles' WSGI one; a system check enforces this.
    "channels_runtime",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rooms",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chat.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The one application for HTTP and WebSockets, used by `manage.py runserver`
# and by the live-server test case. `channels-runtime serve chat.asgi` finds it
# by its module path instead.
ASGI_APPLICATION = "chat.asgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("CHAT_DATABASE") or BASE_DIR / "db.sqlite3",
        # Consumers write from a worker thread while page views read from
        # others; wait for a lock rather than fail with "database is locked".
        "OPTIONS": {"timeout": 20},
        # A file, not Django's in-memory default: a live server runs in another
        # process and must see the test data.
        "TEST": {"NAME": BASE_DIR / "test_db.sqlite3"},
    }
}

# One process, so the in-memory layer is enough. Several server processes
# (workers > 1) need a shared layer such as Redis.
CHANNEL_LAYERS = {
    "default": {"BACKEND": "channels_runtime.layers.InMemoryChannelLayer"},
}
if os.environ.get("CHAT_REDIS_URL"):
    CHANNEL_LAYERS["default"] = {
        "BACKEND": "channels_runtime.layers.redis.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["CHAT_REDIS_URL"]]},
    }

# Who is in a room (docs/presence.md): how long the members of a server
# process that died without saying goodbye stay listed.
CHANNELS_PRESENCE = {"lease_seconds": float(os.environ.get("CHAT_PRESENCE_LEASE") or 15)}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "index"
LOGOUT_REDIRECT_URL = "index"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

#: How many earlier messages a client receives when it joins a room.
CHAT_HISTORY_LENGTH = 50
#: Longest accepted message, in characters.
CHAT_MAX_MESSAGE_LENGTH = 2000

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "rooms": {"handlers": ["console"], "level": "INFO"},
    },
}
