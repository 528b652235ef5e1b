"""``import channels_runtime.alias.enable``: the alias, for servers channels_runtime does not start.

``channels-runtime serve`` installs the alias before it imports the project;
plain ``hypercorn`` (or any other ASGI server) imports ``asgi.py`` straight
away, and the Channels tutorial's ``asgi.py`` imports ``channels.routing`` on
its first lines. Make this its first import::

    import channels_runtime.alias.enable  # noqa: F401  (channels is channels_runtime)

It takes over from an installed Django Channels, as ``serve`` does; the
switch (``CHANNELS_RUNTIME_ALIAS=0``) still turns it off.
"""

from channels_runtime.alias import install

install(
    route="import channels_runtime.alias.enable",
    too_late_hint="Make 'import channels_runtime.alias.enable' the first import of asgi.py.",
)
