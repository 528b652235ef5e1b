"""Projects that use libraries built on Django Channels (see README.md)."""
