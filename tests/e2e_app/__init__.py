"""A tiny Django project served by real Hypercorn processes in the end-to-end tests.

Environment variables steer it (each test process sets its own):

* ``E2E_EVENTS_FILE``: consumers append one line per event they want the test
  to see (disconnects with their close code, worker tasks), because the test
  cannot look inside the server process;
* ``E2E_FAIL_STARTUP=1``: lifespan startup fails, to check exit statuses;
* ``E2E_NO_CHANNEL_LAYERS=1``: the settings define no ``CHANNEL_LAYERS``, to
  check the built-in in-memory default of ``channels-runtime serve``;
* ``E2E_REDIS_URL``: use the Redis channel layer (cross-process worker test);
* ``E2E_RECORDING_LAYER=1``: an in-memory layer that records ``layer closed``
  when lifespan shutdown closes it.
"""
