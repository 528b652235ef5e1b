"""``serve -w N``: workers that will not stop are killed once, and waited for without spinning.

tests/supervisor_app.py blocks each worker's event loop in lifespan shutdown,
so nothing inside the worker can end it: the parent's shutdown allowance
(graceful_timeout + shutdown_timeout + 5 s) has to run out, and the parent
must then kill the workers, say so once, and sleep until they are reaped.
The parent's CPU time is read from /proc while it waits.

A killed worker is normally reaped within milliseconds, too fast to tell a
busy wait from a sleep. So two tests make one stay unreaped for a while the
way a debugger does: the test attaches to it with ``ptrace`` (as ``strace -p``
or ``gdb -p`` would), which makes the kernel report the worker's death to the
test first; until the test collects it, the supervisor sees a dead worker it
cannot reap yet.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
from pathlib import Path

import pytest
from e2e_app.harness import Server, base_env, children_of, cli_command, read_events, wait_until

from channels_runtime.server.run import KILL_WAIT

WORKER_CLASSES = ["asyncio", "uvloop", "trio"]

#: The allowance is graceful_timeout + shutdown_timeout + 5 s of slack.
CONFIG = "graceful_timeout = 0.0\nshutdown_timeout = 0.5\n"
ALLOWANCE = 0.0 + 0.5 + 5.0

KILL_LINE = "Workers did not stop in time; killing them"


def _cpu_seconds(pid: int) -> float | None:
    """CPU time ``pid`` has used so far, or None once it is gone.

    ``schedstat`` counts nanoseconds; where it is missing, ``stat``'s clock ticks.
    """
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_used_since(pid: int, before: float | None) -> float:
    now = _cpu_seconds(pid)
    assert before is not None
    assert now is not None, "the process is gone"
    return now - before


class Tracer:
    """Holds a process's exit the way a debugger does, through ``ptrace(PTRACE_SEIZE)``.

    Seizing does not stop the process. Once it dies, it stays a zombie its parent
    cannot reap until :meth:`release` collects the exit here. Must be used from
    one thread: ptrace binds the tracee to the thread that attached.
    """

    PTRACE_SEIZE = 0x4206
    WALL = 0x40000000  # __WALL: wait for a tracee whatever its kind

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.released = False
        libc = ctypes.CDLL(None, use_errno=True)
        libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        libc.ptrace.restype = ctypes.c_long
        if libc.ptrace(self.PTRACE_SEIZE, pid, None, None) != 0:
            code = ctypes.get_errno()
            pytest.skip(f"ptrace(PTRACE_SEIZE) not permitted here: {errno.errorcode.get(code)}")

    def is_dead(self) -> bool:
        """The tracee has died and waits, as a zombie, to be collected."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] == "Z"

    def release(self) -> None:
        """Collect the exit, so the real parent (the supervisor) can reap the worker."""
        while not self.released:
            # A stop reported before the death comes first; the exit follows it.
            _, status = os.waitpid(self.pid, self.WALL)
            self.released = os.WIFEXITED(status) or os.WIFSIGNALED(status)


def _start(tmp_path: Path, worker_class: str) -> tuple[Server, Path]:
    config = tmp_path / "hypercorn.toml"
    config.write_text(CONFIG)
    events = tmp_path / "events.txt"
    server = Server(
        [
            *cli_command(),
            "serve",
            "tests.supervisor_app",
            "-b",
            "127.0.0.1:0",
            "-k",
            worker_class,
            "-w",
            "2",
            "-c",
            str(config),
        ],
        log_path=tmp_path / "server.log",
        env=base_env(E2E_EVENTS_FILE=str(events)),
    )
    return server, events


def _workers(server: Server) -> list[int]:
    return [pid for pid in children_of(server.pid) if b"spawn_main" in _cmdline(pid)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _both_stuck(events: Path) -> bool:
    return sum(line.startswith("stuck ") for line in read_events(events)) == 2


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_stuck_workers_are_killed_once_without_spinning(worker_class: str, tmp_path: Path) -> None:
    server, events = _start(tmp_path, worker_class)
    try:
        server.start()
        wait_until(lambda: len(_workers(server)) == 2, 15, "two worker processes")
        workers = _workers(server)
        cpu_before = _cpu_seconds(server.pid)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        wait_until(lambda: _both_stuck(events), 10, "both workers in lifespan shutdown")
        # Most of the allowance: the supervisor must be asleep, not polling.
        time.sleep(max(started + ALLOWANCE - 1.0 - time.monotonic(), 0.0))
        cpu = _cpu_used_since(server.pid, cpu_before)
        waited = time.monotonic() - started
        assert server.popen.poll() is None, server.log()
        status = server.wait(ALLOWANCE + KILL_WAIT + 10)
        elapsed = time.monotonic() - started
        log = server.log()
        assert status == 1, log
        assert log.count(KILL_LINE) == 1, f"{log.count(KILL_LINE)} kill lines:\n{log[:3000]}"
        assert "not reaped" not in log, log
        # The allowance was given in full, and the killed workers were reaped promptly.
        assert ALLOWANCE - 0.5 <= elapsed <= ALLOWANCE + 3, (elapsed, log)
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        assert cpu < 0.1, f"parent used {cpu:.3f}s of CPU in {waited:.1f}s of waiting"
    finally:
        server.close()


def test_killed_workers_are_waited_for_without_spinning(tmp_path: Path) -> None:
    hold = 2.0  # well within KILL_WAIT
    server, events = _start(tmp_path, "asyncio")
    tracer: Tracer | None = None
    try:
        server.start()
        wait_until(lambda: len(_workers(server)) == 2, 15, "two worker processes")
        server.signal(signal.SIGTERM)
        wait_until(lambda: _both_stuck(events), 10, "both workers in lifespan shutdown")
        tracer = Tracer(_workers(server)[0])
        server.wait_for_log(KILL_LINE, ALLOWANCE + 5)
        wait_until(tracer.is_dead, 5, "the traced worker killed")
        # The supervisor now waits for a worker that is dead but cannot be reaped yet.
        cpu_before = _cpu_seconds(server.pid)
        time.sleep(hold)
        cpu = _cpu_used_since(server.pid, cpu_before)
        assert server.popen.poll() is None, server.log()
        tracer.release()
        status = server.wait(5)
        log = server.log()
        assert cpu < 0.1 * hold, f"parent used {cpu:.3f}s of CPU in {hold}s of waiting"
        assert status == 1, log
        assert log.count(KILL_LINE) == 1, f"{log.count(KILL_LINE)} kill lines:\n{log[:3000]}"
        assert "not reaped" not in log, log
    finally:
        server.close()
        if tracer is not None:
            tracer.release()


def test_workers_never_reaped_are_given_up_after_kill_wait(tmp_path: Path) -> None:
    """The wait after SIGKILL is bounded: the supervisor exits even if a worker is never reaped."""
    server, events = _start(tmp_path, "asyncio")
    tracer: Tracer | None = None
    try:
        server.start()
        wait_until(lambda: len(_workers(server)) == 2, 15, "two worker processes")
        server.signal(signal.SIGTERM)
        wait_until(lambda: _both_stuck(events), 10, "both workers in lifespan shutdown")
        held = _workers(server)[0]
        tracer = Tracer(held)
        server.wait_for_log(KILL_LINE, ALLOWANCE + 5)
        killed = time.monotonic()
        status = server.wait(KILL_WAIT + 5)  # the test never lets the worker be reaped
        waited = time.monotonic() - killed
        log = server.log()
        assert status == 1, log
        assert KILL_WAIT - 0.5 <= waited <= KILL_WAIT + 3, (waited, log)
        assert log.count(KILL_LINE) == 1, log
        assert log.count(f"Worker {held} not reaped {KILL_WAIT:g}s after SIGKILL") == 1, log
        assert tracer.is_dead()
    finally:
        server.close()
        if tracer is not None:
            tracer.release()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_second_signal_kills_stuck_workers_at_once(signum: int, tmp_path: Path) -> None:
    server, events = _start(tmp_path, "asyncio")
    try:
        server.start()
        wait_until(lambda: len(_workers(server)) == 2, 15, "two worker processes")
        workers = _workers(server)
        server.signal(signal.SIGTERM)
        wait_until(lambda: _both_stuck(events), 10, "both workers in lifespan shutdown")
        started = time.monotonic()
        server.signal(signum)
        status = server.wait(KILL_WAIT + 5)
        elapsed = time.monotonic() - started
        log = server.log()
        # A forced stop is a failure (1), not the status of the SIGKILL the parent sent.
        assert status == 1, log
        assert elapsed < 2, (elapsed, log)
        assert log.count(f"{signal.Signals(signum).name} again: stopping the workers now") == 1
        assert KILL_LINE not in log, log
        assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    finally:
        server.close()
