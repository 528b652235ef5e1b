from myproject.asgi import application  # noqa: F401
