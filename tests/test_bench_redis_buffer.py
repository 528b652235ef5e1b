"""``bench/bench_redis_buffer.py`` runs end to end on a tiny load, against a
private ``redis-server``, prints its table, and leaves no keys behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "bench_redis_buffer.py"


def test_bench_redis_buffer_small_run() -> None:
    pytest.importorskip(
        "channels_redis", reason="channels_redis is not installed (pip install -e .[bench])"
    )
    with RedisServer() as server:
        # No tracemalloc runs: each subprocess costs seconds (start-up, waiting out expiry).
        command = [sys.executable, str(SCRIPT), "--redis", server.url, "--messages", "2000"]
        command += ["--traced-messages", "0", "--scenarios", "spread", "--expiry", "1"]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out = proc.stdout
        assert "| scenario | figure | at | ours | channels_redis | ours/theirs |" in out
        assert "RSS growth, MiB" in out
        assert "Growth: buffered messages after each tenth of 2,000 messages" in out
        # After expiry ours holds nothing; channels_redis still holds every
        # message sent to an abandoned channel (2,000 less the 200 live ones).
        assert "| 1,000 abandoned channels | buffered messages | after expiry | 0 | 1,800 |" in out
        assert server.command("DBSIZE").strip() == b":0"
