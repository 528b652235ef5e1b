"""Starting real server and worker processes for the end-to-end tests, and cleaning up.

Every wait is bounded, every process is killed in ``close()`` whatever happened,
and a failure message includes the process's log so a broken start is
diagnosable from the test report alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]

_URL = re.compile(r"(?:serving \S+ on|Running on) (http://127\.0\.0\.1:\d+)")


def cli_command() -> list[str]:
    """The installed ``channels-runtime`` script (next to this Python), else ``-m``."""
    script = Path(sys.executable).with_name("channels-runtime")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "channels_runtime.cli"]


def hypercorn_command() -> list[str]:
    script = Path(sys.executable).with_name("hypercorn")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "hypercorn"]


def base_env(**extra: str) -> dict[str, str]:
    """The test's environment with the repository importable and no inherited settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "DJANGO_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Process:
    """One child process whose combined output goes to a log file."""

    def __init__(
        self,
        args: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str],
        cwd: Path = REPO,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self._log_file = log_path.open("wb")
        self.popen = subprocess.Popen(
            self.args,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            pass_fds=tuple(pass_fds),
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        self._log_file.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Wait until the log matches ``pattern``; fail (with the log) if it exits first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log())
            if match:
                return match
            if self.popen.poll() is not None:
                raise AssertionError(
                    f"process exited ({self.popen.returncode}) before logging {pattern!r}:\n"
                    + self.log()
                )
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"process still running after {timeout}s:\n{self.log()}") from None

    def close(self) -> None:
        """Kill the process (and any worker children it left) if it is still running."""
        for pid in children_of(self.popen.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
        self._log_file.close()


class Server(Process):
    """A server process; :meth:`start` waits until it answers HTTP."""

    url: str

    def start(self, timeout: float = 20.0, health_path: str = "/health/") -> Server:
        match = self.wait_for_log(_URL.pattern, timeout)
        self.url = match.group(1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                response = httpx.get(self.url + health_path, timeout=5.0)
                if response.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.popen.poll() is not None:
                raise AssertionError(f"server exited ({self.popen.returncode}):\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"server not answering within {timeout}s:\n{self.log()}")
            time.sleep(0.05)

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:]


def children_of(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (from /proc; empty where /proc is missing)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name (field 2) may contain spaces; the parent PID follows it.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(0.05)


def read_events(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
