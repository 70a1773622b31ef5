"""A local service process: start it, wait until its health check answers, stop it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

HealthCheck = Callable[[], bool]
APP_ONLY_VARIABLES: Final = frozenset({"TELESCORE_API_SECRET_KEY"})
"""Inherited by the web app's process alone: the session key signs its cookies and CSRF
tokens, and a process that could run a registered model's code (MLServer, a flow run) must not
hold it."""


class ServiceStartError(RuntimeError):
    """A service exited or did not become healthy in time."""


def console_script(name: str) -> str:
    """Return the console script `name` (mlflow, prefect, mlserver...) of this environment."""
    return str(Path(sys.executable).with_name(name))


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_ok(
    url: str, timeout: float = 2.0, headers: Mapping[str, str] | None = None
) -> HealthCheck:
    """Return a health check that passes when GET `url` (with `headers`) answers 2xx."""
    request = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - local URL

    def check() -> bool:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return 200 <= response.status < 300
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    return check


def tcp_open(host: str, port: int) -> HealthCheck:
    """Return a health check that passes when a TCP connection to host:port succeeds."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    return check


def wait_until(check: HealthCheck, timeout: float, *, what: str, interval: float = 0.1) -> None:
    """Poll `check` until it passes; raise TimeoutError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(interval)


@dataclass
class ServiceProcess:
    """One local service: its command, where it logs and how to tell that it is healthy."""

    name: str
    command: Sequence[str]
    health: HealthCheck
    log_path: Path
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    startup_timeout: float = 120.0
    app_secrets: bool = False
    """Whether it inherits `APP_ONLY_VARIABLES` from this process's environment (the web app)."""
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def environment(self) -> dict[str, str]:
        """Return the environment it starts with: this process's, then its own `env`."""
        inherited = {
            name: value
            for name, value in os.environ.items()
            if self.app_secrets or name not in APP_ONLY_VARIABLES
        }
        return inherited | dict(self.env)

    def start(self) -> ServiceProcess:
        """Start the process in its own session and block until healthy."""
        return self.launch().wait_healthy()

    def launch(self) -> ServiceProcess:
        """Start the process in its own session without waiting (start several, then wait)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - commands are built by telescore
                list(self.command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def wait_healthy(self) -> ServiceProcess:
        """Block until the health check passes; raise if the process dies or times out."""
        if self.process is None:
            raise ServiceStartError(f"{self.name} was never launched")
        deadline = time.monotonic() + self.startup_timeout
        while not self.health():
            if self.process.poll() is not None:
                raise ServiceStartError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                waited = f"{self.startup_timeout:.0f} s"
                raise ServiceStartError(
                    f"{self.name} not healthy after {waited}:\n{self.log_tail()}"
                )
            time.sleep(0.1)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the whole process group: SIGTERM first, SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        terminate_group(self.process.pid, timeout)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines the service wrote, for error messages."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    @contextlib.contextmanager
    def running(self) -> Iterator[ServiceProcess]:
        """Run the service for the duration of a `with` block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()


def terminate_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it after `timeout` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """Tell whether a process with this pid still runs (zombies count as gone)."""
    try:
        with Path(f"/proc/{pid}/stat").open() as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
