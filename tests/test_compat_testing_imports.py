"""``import channels.testing`` makes ``channels.routing`` reachable, as in Channels.

Channels' testing package imports ``channels.routing``, so code written for it
may use ``channels.routing.ProtocolTypeRouter`` after importing only
``channels`` and ``channels.testing`` (django-channels-graphql-ws's conftest
does). Run in a fresh interpreter: in this one, routing is long imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import sys

    import channels_runtime.alias.enable  # noqa: F401

    import channels

    assert "channels_runtime.routing" not in sys.modules, "imported too early to tell"
    try:
        channels.routing
    except AttributeError:
        pass
    else:
        raise AssertionError("channels.routing before anything imported it")

    import channels.testing

    router = channels.routing.ProtocolTypeRouter

    import channels_runtime.routing

    assert channels.routing is channels_runtime.routing
    assert router is channels_runtime.routing.ProtocolTypeRouter
    assert channels.testing.WebsocketCommunicator.__module__ == (
        "channels_runtime.testing.websocket"
    )
    print("ok", router.__qualname__)
    """
)


def test_channels_routing_is_an_attribute_after_import_channels_testing() -> None:
    env = {key: value for key, value in os.environ.items() if key != "CHANNELS_RUNTIME_ALIAS"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok ProtocolTypeRouter"
