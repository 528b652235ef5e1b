"""Which event loop is running, and making sure the trio bridge is in place.

The runtime calls :func:`ensure_bridge` every time a consumer starts. It must
therefore cost next to nothing once the bridge is installed (one module-level
flag check) and nothing on asyncio-only deployments, where trio may not even
be installed: the bridge module imports trio, so it is imported only when trio
is actually running.
"""

from __future__ import annotations

import asyncio
import sys
from types import ModuleType

sniffio: ModuleType | None
try:
    import sniffio
except ImportError:  # anyio no longer needs sniffio; trio always brings it.
    sniffio = None

__all__ = ["bridge_installed", "current_backend", "ensure_bridge", "running_on_trio"]

_bridge_installed = False


def current_backend() -> str:
    """Return ``"asyncio"`` or ``"trio"`` for the event loop running this code.

    uvloop is an asyncio event loop, so it reports ``"asyncio"``. Raises
    :class:`RuntimeError` outside async code (a worker thread, plain sync code)
    or under an event loop library channels_runtime does not support.
    """
    if sniffio is None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "current_backend() must be called from async code running on asyncio or trio"
            ) from None
        return "asyncio"
    try:
        library: str = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError(
            "current_backend() must be called from async code running on asyncio or trio"
        ) from None
    if library not in ("asyncio", "trio"):
        raise RuntimeError(f"channels_runtime supports asyncio and trio, not {library!r}")
    return library


def running_on_trio() -> bool:
    """True in a trio task; False on asyncio and outside async code."""
    if sniffio is None or "trio" not in sys.modules:
        return False
    try:
        return bool(sniffio.current_async_library() == "trio")
    except sniffio.AsyncLibraryNotFoundError:
        return False


def ensure_bridge() -> bool:
    """Install the asgiref/Django trio bridge if this code runs on trio.

    Cheap enough to call on every consumer start: after the first install it is
    a flag check, and on asyncio it returns without importing trio. Outside
    async code it installs nothing (there is no loop to decide by); call
    :func:`channels_runtime.compat.asgiref_trio.install` directly to install
    ahead of time. Returns whether the bridge is installed.
    """
    global _bridge_installed
    if _bridge_installed:
        return True
    if running_on_trio():
        from channels_runtime.compat import asgiref_trio

        asgiref_trio.install()
        _bridge_installed = True
        return True
    return bridge_installed()


def bridge_installed() -> bool:
    """Whether the trio bridge is installed in this process (by any route)."""
    global _bridge_installed
    if not _bridge_installed and "channels_runtime.compat.asgiref_trio" in sys.modules:
        from channels_runtime.compat import asgiref_trio

        _bridge_installed = asgiref_trio.is_installed()
    return _bridge_installed
