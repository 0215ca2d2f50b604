"""The local default database: a private PostgreSQL cluster with TimescaleDB, no Docker needed.

``agts local start`` makes TimescaleDB available to the system PostgreSQL (building Debian's source
package if it is missing, see ``scripts/install-timescaledb.sh``), initializes a cluster in its own
directory, and starts it on ``127.0.0.1:55432`` with ``timescaledb`` preloaded and telemetry off.
The superuser ``agts`` gets a generated password kept in ``<local dir>/password`` (mode 0600); the
default configuration reads it from there. Every step is idempotent.

``$AGTS_LOCAL_PORT`` picks another port (the default configuration then needs the same port).
The directory is ``$AGTS_LOCAL_DIR``, else ``/var/lib/agts/local`` for root, else
``~/.local/share/agts/local``. PostgreSQL refuses to run as root, so when started by root the
cluster runs as the ``postgres`` system user (``$AGTS_LOCAL_OS_USER`` to choose another).
``$AGTS_LOCAL_LICENSE=apache`` switches a Community build to the Apache edition.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agts.config import LOCAL_DATABASE, LOCAL_PORT, LOCAL_USER
from agts.errors import ConnectError, StorageError

__all__ = ["LocalStatus", "local_dir", "local_password", "local_port", "start", "status", "stop"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalStatus:
    """What ``agts local status`` reports."""

    directory: str
    initialized: bool
    running: bool
    port: int
    bindir: str | None
    timescaledb_installed: bool

    def describe(self) -> str:
        state = "running" if self.running else "stopped" if self.initialized else "not initialized"
        tsdb = "installed" if self.timescaledb_installed else "not installed"
        return (
            f"local cluster: {state} on 127.0.0.1:{self.port} (directory {self.directory}); "
            f"TimescaleDB {tsdb}"
        )


def local_dir() -> Path:
    """The directory of the local cluster (see the module docstring)."""
    if os.environ.get("AGTS_LOCAL_DIR"):
        return Path(os.environ["AGTS_LOCAL_DIR"]).expanduser().resolve()
    if os.geteuid() == 0:
        return Path("/var/lib/agts/local")
    return Path.home() / ".local" / "share" / "agts" / "local"


def local_port() -> int:
    """The port of the local cluster: ``$AGTS_LOCAL_PORT``, else 55432."""
    value = os.environ.get("AGTS_LOCAL_PORT")
    if not value:
        return LOCAL_PORT
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise StorageError(f"AGTS_LOCAL_PORT must be a port number, got {value!r}")
    return int(value)


def local_password() -> str | None:
    """The generated password of the local cluster's ``agts`` user, or None if there is none."""
    path = local_dir() / "password"
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _bindir() -> Path | None:
    if os.environ.get("AGTS_PG_BINDIR"):
        return Path(os.environ["AGTS_PG_BINDIR"])
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _timescaledb_installed(bindir: Path) -> bool:
    try:
        sharedir = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return False
    major = sharedir.stdout.split()[-1].split(".")[0] if sharedir.stdout else ""
    controls = [
        Path(f"/usr/share/postgresql/{major}/extension/timescaledb.control"),
        bindir.parent / "share" / "extension" / "timescaledb.control",
    ]
    return any(p.is_file() for p in controls)


def _install_script() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_scripts" / "install-timescaledb.sh",
                      here.parent / "scripts" / "install-timescaledb.sh"):
        if candidate.is_file():
            return candidate
    raise StorageError("install-timescaledb.sh is missing from this agts installation")


def _os_user() -> str | None:
    if os.geteuid() != 0:
        return None
    return os.environ.get("AGTS_LOCAL_OS_USER", "postgres")


def _run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    user = _os_user()
    log.debug("running %s%s", " ".join(args), f" as {user}" if user else "")
    return subprocess.run(
        args, capture_output=True, text=True, check=check, user=user,
        group=pwd.getpwnam(user).pw_gid if user else None, extra_groups=[] if user else None,
        cwd="/",
    )


def _chown(path: Path) -> None:
    user = _os_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def status() -> LocalStatus:
    """Report whether the local cluster exists and runs."""
    directory = local_dir()
    bindir = _bindir()
    data = directory / "data"
    initialized = (data / "PG_VERSION").is_file()
    running = False
    if initialized and bindir is not None:
        running = _run([str(bindir / "pg_ctl"), "-D", str(data), "status"], check=False).returncode == 0
    return LocalStatus(
        directory=str(directory), initialized=initialized, running=running, port=local_port(),
        bindir=str(bindir) if bindir else None,
        timescaledb_installed=bool(bindir and _timescaledb_installed(bindir)),
    )


def start(*, install: bool = True) -> LocalStatus:
    """Install TimescaleDB if needed, initialize the cluster if needed, start it if stopped.

    Parameters
    ----------
    install
        Build and install TimescaleDB from Debian's source package when it is missing
        (needs root or sudo). With False, a missing TimescaleDB is an error.

    Raises
    ------
    StorageError
        PostgreSQL or TimescaleDB is missing and cannot be installed, or the server failed to start
        (the message quotes the end of its log).
    """
    bindir = _bindir()
    if bindir is None:
        raise StorageError(
            "no PostgreSQL server binaries found (looked in /usr/lib/postgresql/*/bin and PATH); "
            "install the 'postgresql' package or set AGTS_PG_BINDIR"
        )
    if not _timescaledb_installed(bindir):
        if not install:
            raise StorageError("TimescaleDB is not installed for the PostgreSQL in " + str(bindir))
        script = _install_script()
        log.info("TimescaleDB is missing: running %s", script)
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True)
        if result.returncode != 0:
            raise StorageError(
                f"installing TimescaleDB failed (exit {result.returncode}):\n"
                + (result.stderr or result.stdout)[-2000:]
            )
    directory = local_dir()
    data = directory / "data"
    run_dir = directory / "run"
    if not (data / "PG_VERSION").is_file():
        _initdb(bindir, directory, data, run_dir)
    current = status()
    if current.running:
        log.info("local cluster already running on port %s", local_port())
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        _chown(run_dir)
        logfile = directory / "server.log"
        if not logfile.exists():
            logfile.touch()
            _chown(logfile)
        result = _run(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60", "start"],
            check=False,
        )
        if result.returncode != 0:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise StorageError(f"starting the local cluster failed:\n{result.stderr}\n{tail}")
        log.info("local cluster started on 127.0.0.1:%s", local_port())
    _ensure_database()
    return status()


def stop() -> LocalStatus:
    """Stop the local cluster (fast shutdown); does nothing if it is not running."""
    current = status()
    if current.running and current.bindir:
        data = Path(current.directory) / "data"
        result = _run([current.bindir + "/pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop"],
                      check=False)
        if result.returncode != 0:
            raise StorageError(f"stopping the local cluster failed: {result.stderr.strip()}")
    return status()


def _initdb(bindir: Path, directory: Path, data: Path, run_dir: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    password_file = directory / "password"
    if not password_file.exists():
        password_file.touch(mode=0o600)
        password_file.write_text(secrets.token_urlsafe(24) + "\n")
    data.mkdir(mode=0o700, exist_ok=True)
    _chown(data)
    run_dir.mkdir(exist_ok=True)
    _chown(run_dir)
    pwfile = run_dir / ".initdb-pw"
    pwfile.write_text(password_file.read_text())
    _chown(pwfile)
    try:
        result = _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", LOCAL_USER, f"--pwfile={pwfile}",
             "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8",
             "--locale=C.UTF-8", "--no-instructions"],
            check=False,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise StorageError(f"initdb failed: {result.stderr.strip()[-2000:]}")
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(local_port()),
        "unix_socket_directories": f"'{run_dir}'",
        "shared_preload_libraries": "'timescaledb'",
        "timescaledb.telemetry_level": "off",
        "max_connections": "200",
        "shared_buffers": "512MB",
        "max_wal_size": "4GB",
        "max_locks_per_transaction": "512",
        "log_min_messages": "warning",
    }
    license_ = os.environ.get("AGTS_LOCAL_LICENSE")
    if license_:
        settings["timescaledb.license"] = f"'{license_}'"
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# agts local cluster\n")
        for key, value in settings.items():
            conf.write(f"{key} = {value}\n")
    log.info("initialized local cluster in %s", data)


def _ensure_database() -> None:
    import psycopg

    from agts.config import DatabaseConfig
    from agts.db._conninfo import conninfo

    cfg = DatabaseConfig(database="postgres", port=local_port(), password=local_password())
    try:
        with psycopg.connect(conninfo(cfg), autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (LOCAL_DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{LOCAL_DATABASE}"')
                log.info("created database %s", LOCAL_DATABASE)
    except psycopg.Error as exc:
        raise ConnectError(f"cannot reach the local cluster on 127.0.0.1:{local_port()}: {exc}") from exc
