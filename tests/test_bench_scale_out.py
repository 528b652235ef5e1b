"""``bench/bench_scale_out.py`` and ``bench/bench_redis_concurrency.py`` run end to
end on a tiny load and print their tables, so that neither can rot unnoticed.

The scale-out run needs Node.js (its load generator) and psutil; the
concurrency run needs channels_redis. Both need ``redis-server``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import RedisServer, require_binary

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def test_bench_scale_out_small_run(tmp_path: Path) -> None:
    pytest.importorskip("psutil", reason="psutil is not installed (pip install -e .[bench])")
    pytest.importorskip("channels_redis", reason="channels_redis is not installed")
    require_binary()
    if shutil.which("node") is None or shutil.which("taskset") is None:
        pytest.skip("the scale-out benchmark needs Node.js and taskset")
    variants = "ours-core-x2,ours-pubsub-w2,channels-core-daphne"
    command = [sys.executable, str(BENCH / "bench_scale_out.py"), "--variants", variants]
    command += ["--clients", "20", "--rounds", "1", "--repeats", "3", "--settle", "0.5"]
    command += ["--step", "0.3", "--min-broadcasts", "5", "--refine", "0", "--retries", "0"]
    command += ["--rate-start", "20", "--rate-max", "60", "--log", str(tmp_path / "servers.log")]
    command += ["--json", str(tmp_path / "results.json")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert "**Latency: one `group_send` to 20 clients over two processes" in out
    assert "**Sustained broadcast rate: the highest rate of `group_send` to 20 clients" in out
    for label in (
        "| ours, two `serve`, RedisChannelLayer |",
        "| ours, `serve -w 2`, RedisPubSubChannelLayer |",
        "| Channels, two Daphne, channels_redis RedisChannelLayer |",
    ):
        assert out.count(label) == 2, label  # one row in each table
    # serve -w 2's clients were counted per worker (the bench pins its two workers
    # and fails if there are not two; the kernel may give one worker all of them).
    spread = next(line for line in out.splitlines() if line.startswith("ours-pubsub-w2: "))
    counts = [int(n) for n in spread.removeprefix("ours-pubsub-w2: ").rstrip(".").split(" / ")]
    assert len(counts) <= 2, spread
    assert sum(counts) == 20, spread
    assert "| p50, ours-core-x2 ÷ channels-core-daphne |" in out


def test_bench_redis_concurrency_small_run() -> None:
    pytest.importorskip("channels_redis", reason="channels_redis is not installed")
    with RedisServer() as server:
        command = [sys.executable, str(BENCH / "bench_redis_concurrency.py")]
        command += ["--redis", server.url, "--rounds", "1", "--seconds", "0.5"]
        command += ["--warmup", "0.2", "--consumers", "10", "--no-pin"]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=90, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-4000:]
        out = proc.stdout
        assert "**10 consumers in one process, in pairs, 10 messages in flight" in out
        rows = {line.split(" | ")[0].lstrip("| "): line for line in out.splitlines()}
        for label in (
            "ours RedisChannelLayer, asyncio",
            "ours RedisChannelLayer, trio",
            "ours RedisPubSubChannelLayer, asyncio",
            "channels_redis RedisChannelLayer, asyncio",
            "channels_redis RedisPubSubChannelLayer, asyncio",
        ):
            assert label in rows, label
        # The commands table shows what each layer asked Redis for.
        commands = out.split("**Redis commands per message**", 1)[1]
        assert "| ours RedisChannelLayer, asyncio | evalsha 1.00" in commands
        assert "| ours RedisPubSubChannelLayer, asyncio | publish 1.00" in commands
        assert "| messages/s, ours-asyncio ÷ channels_redis |" in out
        # Every layer and ceiling cleaned up after itself (flush() keeps only the
        # Redis layer's epoch marker, by design).
        reply = server.command("KEYS", "*").decode().split("\r\n")
        left = [line for line in reply if line and line[0] not in "*$"]
        assert [key for key in left if not key.endswith(":epoch")] == []
