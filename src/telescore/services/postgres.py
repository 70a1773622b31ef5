"""A throwaway PostgreSQL cluster: initdb under a state folder, postgres on a port, its databases.

The production stores of MLflow and Prefect (docker-compose.yml, k8s/) are PostgreSQL; this
starts one from Debian's server binaries (`make tools`) so that they can run on it here.
initdb and postgres refuse to run as root: as root they run as the unprivileged `postgres`
user, which then owns the cluster's folder and must be able to reach it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from telescore.services.processes import HealthCheck, ServiceProcess, ServiceStartError

INSTALL_HINT = "run `make tools` (it installs Debian's `postgresql` server binaries)"
SERVER_BINARIES = ("initdb", "postgres", "pg_isready", "createdb")
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
UNPRIVILEGED_USER = "postgres"
"""The user initdb and postgres run as when telescore runs as root (Debian's package adds it)."""
DATABASES = ("mlflow", "prefect")


class PostgresNotInstalledError(ServiceStartError):
    """The PostgreSQL server binaries (or, as root, the user to run them as) are missing."""


def postgres_bin_dir(debian_root: Path = DEBIAN_BINARIES, search_path: str | None = None) -> Path:
    """Return the folder holding initdb, postgres, pg_isready and createdb (newest version).

    Debian's `/usr/lib/postgresql/<version>/bin` first (not on PATH), then PATH (`search_path`).
    """
    debian = sorted(
        (folder for folder in debian_root.glob("*/bin") if folder.parent.name.isdigit()),
        key=lambda folder: int(folder.parent.name),
        reverse=True,
    )
    on_path = shutil.which("initdb", path=search_path)
    for folder in [*debian, *([Path(on_path).parent] if on_path else [])]:
        if all((folder / name).is_file() for name in SERVER_BINARIES):
            return folder
    raise PostgresNotInstalledError(
        f"PostgreSQL server binaries ({', '.join(SERVER_BINARIES)}) not found under "
        f"{debian_root}/*/bin or on PATH: {INSTALL_HINT}"
    )


def accepts_connections(bin_dir: Path, host: str, port: int) -> HealthCheck:
    """Return a health check that passes once the server accepts connections (pg_isready)."""

    def check() -> bool:
        ready = subprocess.run(
            [str(bin_dir / "pg_isready"), "--quiet", "-h", host, "-p", str(port), "-t", "2"],
            check=False,
        )
        return ready.returncode == 0

    return check


@dataclass
class PostgresServer:
    """A PostgreSQL cluster of its own under a state folder, and the databases it serves."""

    root: Path
    """The cluster's folder: `data/` (initdb's), `run/` (its Unix socket)."""
    host: str
    port: int
    role: str
    """The superuser role that initdb creates; every connection authenticates as it."""
    password: str
    databases: tuple[str, ...]
    bin_dir: Path
    process: ServiceProcess

    @property
    def data_dir(self) -> Path:
        """The data directory (the one initdb creates)."""
        return self.root / "data"

    def uri(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """Return the SQLAlchemy URI of `database` (driver `postgresql+asyncpg` for Prefect).

        The driver is named: SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3, and
        MLflow's driver here is psycopg2 (psycopg2-binary, as in the images).
        """
        return f"{driver}://{self.role}:{self.password}@{self.host}:{self.port}/{database}"

    def start(self) -> PostgresServer:
        """Initialise the cluster if new, start postgres, wait for it, create the databases."""
        self.initialise()
        self.process.start()
        try:
            self.create_databases()
        except BaseException:
            self.process.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop postgres (SIGTERM to its process group: backends and then the postmaster end)."""
        self.process.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[PostgresServer]:
        """Run the cluster for the duration of a `with` block."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def initialise(self) -> None:
        """Run initdb (password-authenticated, scram-sha-256) unless the cluster exists."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        password_file = self.root / "password"
        password_file.touch(mode=0o600)
        password_file.write_text(self.password + "\n")
        _hand_over(self.root)
        try:
            completed = subprocess.run(
                as_unprivileged_user(
                    [
                        str(self.bin_dir / "initdb"),
                        "--pgdata",
                        str(self.data_dir),
                        "--username",
                        self.role,
                        "--pwfile",
                        str(password_file),
                        # Every connection authenticates, the local socket's too.
                        "--auth=scram-sha-256",
                        "--encoding=UTF8",
                        "--no-locale",
                        # A throwaway cluster: nothing to flush to disk for.
                        "--no-sync",
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            password_file.unlink(missing_ok=True)
        if completed.returncode != 0:
            raise ServiceStartError(
                f"initdb failed ({completed.returncode}):\n{completed.stdout}{completed.stderr}"
            )

    def create_databases(self) -> None:
        """Create each of `databases` that does not exist yet."""
        for database in self.databases:
            completed = subprocess.run(
                [
                    str(self.bin_dir / "createdb"),
                    "-h",
                    self.host,
                    "-p",
                    str(self.port),
                    "-U",
                    self.role,
                    "--no-password",
                    database,
                ],
                env={**os.environ, "PGPASSWORD": self.password},
                capture_output=True,
                text=True,
                check=False,
            )
            if completed.returncode != 0 and "already exists" not in completed.stderr:
                raise ServiceStartError(f"createdb {database} failed: {completed.stderr}")


def postgres_server(
    state_dir: Path,
    port: int,
    password: str,
    host: str = "127.0.0.1",
    role: str = "telescore",
    databases: Sequence[str] = DATABASES,
) -> PostgresServer:
    """PostgreSQL on `host:port` with its cluster under `state_dir/postgres`, for throwaway use.

    Durability is traded for speed (fsync off): the cluster lives as long as a test session.
    Raises PostgresNotInstalledError, saying to run `make tools`, when the binaries are missing.
    """
    bin_dir = postgres_bin_dir()
    root = (state_dir / "postgres").resolve()
    (root / "run").mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        _check_reachable(root, _unprivileged_user())
    command = [
        str(bin_dir / "postgres"),
        "-D",
        str(root / "data"),
        "-p",
        str(port),
        # The socket in the cluster's folder: the system's /var/run/postgresql may not exist.
        "-k",
        str(root / "run"),
        "-c",
        f"listen_addresses={host}",
        "-c",
        "fsync=off",
        "-c",
        "synchronous_commit=off",
        "-c",
        "full_page_writes=off",
    ]
    return PostgresServer(
        root=root,
        host=host,
        port=port,
        role=role,
        password=password,
        databases=tuple(databases),
        bin_dir=bin_dir,
        process=ServiceProcess(
            name="postgres",
            command=as_unprivileged_user(command),
            health=accepts_connections(bin_dir, host, port),
            log_path=state_dir / "logs" / "postgres.log",
            startup_timeout=60.0,
        ),
    )


def as_unprivileged_user(command: list[str]) -> list[str]:
    """Return `command` as is, or run as the `postgres` user when this process is root.

    setpriv execs the command (no process in between), so that stopping the service's process
    group signals postgres itself.
    """
    if os.geteuid() != 0:
        return command
    user = _unprivileged_user()
    return [
        "setpriv",
        f"--reuid={user.pw_uid}",
        f"--regid={user.pw_gid}",
        "--init-groups",
        "--",
        *command,
    ]


def _unprivileged_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise PostgresNotInstalledError(
            f"running as root, and there is no `{UNPRIVILEGED_USER}` user to run initdb and "
            f"postgres as (they refuse root): {INSTALL_HINT}"
        ) from None


def _hand_over(root: Path) -> None:
    """As root, give the cluster's folder to the unprivileged user that runs postgres."""
    if os.geteuid() != 0:
        return
    user = _unprivileged_user()
    for path in [root, *root.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)


def _check_reachable(root: Path, user: pwd.struct_passwd) -> None:
    """Raise if `user` cannot traverse every folder above `root` (a 0700 folder of root's)."""
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    for folder in root.parents:
        info = folder.stat()
        if info.st_uid == user.pw_uid:
            allowed = info.st_mode & stat.S_IXUSR
        elif info.st_gid in groups:
            allowed = info.st_mode & stat.S_IXGRP
        else:
            allowed = info.st_mode & stat.S_IXOTH
        if not allowed:
            raise ServiceStartError(
                f"postgres runs as `{user.pw_name}` (it refuses root) and cannot reach {root}: "
                f"{folder} is not searchable by it; put the state folder where it can "
                "(e.g. a folder under /tmp with mode 0711)"
            )
