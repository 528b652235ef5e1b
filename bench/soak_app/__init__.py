"""The project ``bench/bench_soak.py`` and ``tests/test_soak.py`` serve: churn with a database.

A small Django project of its own (settings, one model, consumers), so that
the soak measures a server whose consumers do what real ones do: echo, chat in
groups, read and write a SQLite file per message (through the async ORM, and
through a sync consumer in the thread-sensitive thread) and stream an HTTP
response. ``GET /diag/`` reports the server's own view of what it holds, which
the soak harness (``tests/soak_harness.py``) compares with its idle values.

``SOAK_DB`` names the SQLite file (required); the harness creates its tables
with ``migrate --run-syncdb`` before starting the server.
"""
