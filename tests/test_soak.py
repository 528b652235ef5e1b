"""A short soak per worker class: churn with misbehaving clients, then back to idle.

The harness is ``tests/soak_harness.py`` (shared with ``bench/bench_soak.py``,
which runs the same soak for minutes). Here each worker class gets one real
``channels-runtime serve`` process and 10 s of churn; every check the soak
makes is then its own test, so a failure names the metric and the worker
class, and a known defect can be marked on exactly that pair.

Nothing is timed tightly: the server's timeouts are short (a misbehaving
client is dealt with in about 3 s) but every wait of the harness is bounded
generously (15 s per client step, 60 s for the metrics to come back), for a
loaded 2-CPU CI machine. A pass costs about 35 s per worker class.

Two more tests keep the soak honest: with the Hypercorn fixes turned off it
must fail (so it can see a leak at all), and the one defect it ran into that
the fixes do not cover yet, a keep-alive connection the client closed held
until ``keep_alive_timeout``, is an expected failure (strict, so a fix shows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from soak_harness import (
    CHECK_KEYS,
    WORKER_CLASSES,
    SoakResult,
    SoakSettings,
    closed_keep_alive_linger,
    run_soak,
)

pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="the soak reads /proc/PID of the server"
    ),
    # The first test of each worker class runs the whole soak in its fixture.
    pytest.mark.timeout(300),
]

SETTINGS = SoakSettings(duration=10.0, sample_interval=2.0, settle_timeout=60.0)

#: (worker class, check key) -> reason, for a leak the soak found that is not fixed
#: yet: that test is expected to fail (strictly, so the fix is noticed).
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module", params=WORKER_CLASSES)
def soak(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> SoakResult:
    worker_class = str(request.param)
    return run_soak(worker_class, tmp_path_factory.mktemp(f"soak-{worker_class}"), SETTINGS)


@pytest.mark.parametrize("check", CHECK_KEYS)
def test_back_to_idle_after_churn(
    soak: SoakResult, check: str, request: pytest.FixtureRequest
) -> None:
    reason = KNOWN_DEFECTS.get((soak.worker_class, check))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
    assert soak.check(check).ok, soak.failures()


def test_the_soak_notices_what_the_hypercorn_fixes_prevent(tmp_path: Path) -> None:
    """Without the fixes, the soak fails: it is sensitive to the leaks they fix.

    Plain Hypercorn 0.18 never tells a consumer blocked in ``send()`` that its
    client reset (``hypercorn_fixes/app_inbox.py``), so with the clients that
    reset mid-stream alone, echo consumers pile up and stay. (The clients that
    stop reading or vanish would show it too, but plain Hypercorn keeps each
    for as long as the client likes, which only makes this test slower.)
    """
    settings = SoakSettings(
        duration=6.0,
        sample_interval=2.0,
        settle_timeout=5.0,
        idle_timeout=8.0,
        hypercorn_fixes=False,
        behaviours=("echo", "resets mid-stream (SO_LINGER 0)"),
    )
    result = run_soak("asyncio", tmp_path, settings)
    assert not result.check("consumers_running").ok, result.failures()
    assert not result.check("every_disconnect").ok, result.failures()


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_keep_alive_connections_the_client_closed_are_released(
    worker_class: str, tmp_path: Path
) -> None:
    """A client that closes its keep-alive connection frees the server's descriptor.

    The soak samples over connections it asks the server to close (see
    ``soak_harness.DIAG_HEADERS``) because otherwise each sample would hold a
    descriptor for ``keep_alive_timeout``: Hypercorn alone reads the client's EOF
    but closes only when the idle timer it started after the response runs out
    (fixed in ``hypercorn_fixes/tcp.py``). So
    a client that opens and closes connections at R per second pins
    R x ``keep_alive_timeout`` descriptors. With ``keep_alive_timeout = 60`` an
    8 s wait tells a server that closes on EOF from one that waits.
    """
    result = closed_keep_alive_linger(worker_class, tmp_path)
    assert result.released_after is not None, result
