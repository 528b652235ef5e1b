"""The one place in channels_runtime that names asyncio or trio.

The rest of the package speaks anyio, so it runs unchanged on either event
loop. Some code cannot stay neutral: asgiref and parts of Django hard-code
asyncio, and teaching them about trio means naming both libraries. Keeping
that code here keeps the assumption visible and easy to audit: a ``grep`` for
``import asyncio`` or ``import trio`` outside this package should find
nothing.

* :mod:`channels_runtime.compat.backend`: which loop is running, and
  :func:`~channels_runtime.compat.backend.ensure_bridge`, which the runtime
  calls on every consumer start.
* :mod:`channels_runtime.compat.bridge_hooks`: installed on import of
  channels_runtime; installs the bridge below on the first call that needs it.
* :mod:`channels_runtime.compat.asgiref_trio`: the bridge that makes
  ``sync_to_async``/``async_to_sync`` and Django's async APIs work on trio.
  It imports trio, so import it only when trio is installed.
"""
