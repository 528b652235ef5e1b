"""What ``import daphne`` gives while the alias is on (:mod:`channels_runtime.alias`).

Channels' documentation puts ``"daphne"`` first in ``INSTALLED_APPS`` so that
``manage.py runserver`` is Daphne's ASGI server. With the alias on, that entry
is this app, whose ``runserver`` is channels_runtime's (Hypercorn, on asyncio,
uvloop or trio) and ``migrate`` and the other commands work as before.
Daphne's server modules (``daphne.server``, ``daphne.cli``, ...) are not stood
in for: importing them says so.
"""

from channels_runtime.alias import submodule_attribute

__all__: list[str] = []


def __getattr__(name: str) -> object:
    return submodule_attribute("daphne", name)
