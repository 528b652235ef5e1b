"""``bench/bench_redis_cluster.py`` runs end to end at a tiny size: it starts
its own redis-server and 6-node cluster, prints both tables with figures for
our layers on both, shows channels_redis's list layer failing on the cluster
with redis-py's ``MovedError``, and stops every Redis process it started."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import require_binary

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "bench_redis_cluster.py"
NUMBER = r"[\d,.]+"


def redis_pids() -> set[int]:
    proc = subprocess.run(["pgrep", "-x", "redis-server"], capture_output=True, text=True)
    return {int(pid) for pid in proc.stdout.split()}


def test_bench_redis_cluster_small_run() -> None:
    require_binary("redis-server")
    require_binary("redis-cli")
    pytest.importorskip(
        "channels_redis", reason="channels_redis is not installed (pip install -e .[bench])"
    )
    command = [sys.executable, str(SCRIPT), "--quick", "--consumers", "20", "--seconds", "0.5"]
    command += ["--members", "60", "--processes", "6", "--repeats", "5"]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        out, err = proc.communicate(timeout=55)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-4000:]
    ours = ("ours RedisChannelLayer, asyncio", "ours RedisPubSubChannelLayer, asyncio")
    for label in ours:
        # Throughput on both, and p50/p99 of the fan-out on both.
        assert re.search(rf"^\| {label} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$", out, re.M), out
        fan = rf"^\| {label} \| {NUMBER} \| {NUMBER} \| {NUMBER} \| {NUMBER} \|$"
        assert re.search(fan, out, re.M), out
    # channels_redis's list layer on the cluster: its fan-out (members' keys on
    # many slots) always fails, with MOVED or a script's "non local key"; its
    # throughput run (one key per process) only when that key is elsewhere.
    failed = r"fails in 1 of 1 rounds: `(MovedError: \d+ 127\.0\.0\.1:\d+|ResponseError: Script)"
    fan = rf"^\| channels_redis RedisChannelLayer \| {NUMBER} \| {NUMBER} \| {failed}"
    assert re.search(fan, out, re.M), out
    rate = rf"^\| channels_redis RedisChannelLayer \| {NUMBER} \| ({NUMBER} \| {NUMBER}|{failed})"
    assert re.search(rate, out, re.M), out
    # Every node the run started is gone (whatever other tests run meanwhile).
    started = {int(pid) for pid in re.findall(r"pid (\d+)", err)}
    assert not started & redis_pids()
