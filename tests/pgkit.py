"""A real, throwaway PostgreSQL for the tests and the benchmarks: Debian's server binaries,
a new cluster in a temporary folder, listening on loopback only (no Unix socket), password
(SCRAM) authentication, run as an unprivileged user when the tests run as root.

``Cluster.start()`` runs initdb and the server; ``database()`` makes a fresh database and
returns its URL (one per test keeps tests independent); ``stop()`` / ``start()`` stop and
restart the same cluster (the failure tests); ``psql()`` runs SQL through the real ``psql``
client, as an operator or an attacker with database access would. Where the server or the
driver is missing, :func:`skip_reason` says why, and the fixtures skip with it.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

ADMIN = "veilpix_admin"


def server_bin() -> Path | None:
    """The folder of Debian's newest PostgreSQL server binaries, or of those on PATH."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


def skip_reason() -> str | None:
    if server_bin() is None:
        return "PostgreSQL's server is not installed (Debian: apt-get install postgresql)"
    if shutil.which("psql") is None and not (server_bin() / "psql").exists():  # type: ignore[operator]
        return "psql is not installed (Debian: postgresql-client)"
    try:
        import psycopg  # noqa: F401 - only the PostgreSQL tests need the driver
    except ImportError:
        return "psycopg is not installed (pip install 'veilpix[postgres]')"
    if os.geteuid() == 0 and _user() is None:
        return "running as root and there is no unprivileged user (postgres or nobody) to run the server as"
    return None


def _user() -> str | None:
    """As root: the unprivileged user the server runs as (initdb refuses root)."""
    import pwd

    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One temporary PostgreSQL cluster on 127.0.0.1."""

    def __init__(self, *, fsync: bool = True, settings: dict[str, str] | None = None) -> None:
        bindir = server_bin()
        assert bindir is not None, skip_reason()
        self.bin = bindir
        self.user = _user() if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="veilpix-pg-"))
        self.data = self.dir / "data"
        self.logfile = self.dir / "server.log"
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.running = False
        self._count = 0

    # -- running the server --------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs = {"user": self.user, "group": self.user if self.user != "nobody" else "nogroup"}
        return subprocess.run(
            list(args),
            check=check,
            capture_output=True,
            text=True,
            cwd=self.dir,
            env={**os.environ, "LC_ALL": "C", "TZ": "UTC"},
            **kwargs,  # type: ignore[arg-type]
        )

    def init(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            shutil.chown(self.dir, self.user)
            shutil.chown(pwfile, self.user)
        os.chmod(self.dir, 0o700)
        os.chmod(pwfile, 0o600)
        self._run(
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            ADMIN,
            "--pwfile",
            str(pwfile),
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-instructions",
            "-N",  # no fsync of the new cluster's files: it is thrown away
        )
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "fsync": "on" if self.fsync else "off",
            "shared_buffers": "64MB",
            "max_connections": "200",
            "log_min_messages": "warning",
            "logging_collector": "off",
            **self.settings,
        }
        with (self.data / "postgresql.conf").open("a") as f:
            for key, value in conf.items():
                f.write(f"{key} = {value}\n")

    def start(self) -> Cluster:
        if not self.data.exists():
            self.init()
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-w", "start"
        )
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``immediate``: as if it crashed)."""
        if self.running:
            self._run(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                mode,
                "-w",
                "stop",
                check=False,
            )
            self.running = False

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- using it ------------------------------------------------------------------------------

    def url(self, db: str = "postgres", user: str = ADMIN, password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{user}:{quote(secret, safe='')}@127.0.0.1:{self.port}/{db}"

    def database(self, name: str | None = None) -> str:
        """A new, empty database; its URL (as the cluster's superuser)."""
        self._count += 1
        name = name or f"t{os.getpid()}_{self._count}_{secrets.token_hex(3)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def sql(self, statement: str, db: str = "postgres") -> list[tuple[object, ...]]:
        """Run ``statement`` through the driver as the superuser; its rows."""
        import psycopg

        with psycopg.connect(self.url(db), autocommit=True) as conn:
            cur = conn.execute(statement)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def psql(self, url: str, statement: str) -> subprocess.CompletedProcess[str]:
        """Run ``statement`` through the real psql client against ``url``, as someone with
        database access would; raises when psql fails."""
        psql = shutil.which("psql") or str(self.bin / "psql")
        return subprocess.run(
            [psql, "-X", "-v", "ON_ERROR_STOP=1", "-q", "-c", statement, url],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self._run(
                str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), check=False
            )
            if r.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not come up")


# -- fixtures (tests/conftest.py imports them) --------------------------------------------------


def _running() -> Iterator[Cluster]:
    """A started cluster, destroyed afterwards; a skip with the reason when there is none."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg() -> Iterator[Cluster]:
    """The test worker's cluster."""
    yield from _running()


@pytest.fixture
def fleet_url(pg: Cluster) -> str:
    """A new, empty database on the shared cluster."""
    return pg.database()


@pytest.fixture
def fleet_key(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "fleet.key"


@pytest.fixture
def own_pg() -> Iterator[Cluster]:
    """A cluster of the test's own, to stop and start."""
    yield from _running()
