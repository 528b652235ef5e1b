"""Management commands: ``runserver`` (ASGI through Hypercorn) and ``runworker``."""
