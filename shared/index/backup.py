"""Backing up the PHI index to one file, and restoring it into an empty database.

A backup is an archive of ``pg_dump``'s custom format: one consistent snapshot of the whole
database (pg_dump reads it in one transaction while the services keep writing), compressed,
readable only by ``pg_restore``. The index links pseudonyms back to patients and holds the
site's secret, so the archive is PHI: it is written under a temporary name with mode 0600,
flushed to disk, read back in full, and only then given its name.

A restore goes only into a database without tables: restoring over a live index would
replace pseudonyms that may already be shared. It runs in one transaction (all or
nothing), without the owners and grants of the source (the target's owner owns what it
restores; ``infra/db/roles.sql`` grants the API's role again), then applies the migrations
this installation has and the backup has not.

The tools must be of the server's major version: the embedded server's come with the
pgserver package, an external server's are looked for in ``/usr/lib/postgresql/<major>/bin``
and on ``PATH``. Messages name tables, files and versions, never a value of the index;
errors of the tools are shown with any quoted text removed, as a server error may quote a
value it refused.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote

import asyncpg

from shared.index.migrations import migrate, migrations_dir

# The first bytes of every archive of pg_dump's custom format.
ARCHIVE_MAGIC = b"PGDMP"
# Tables without which an archive is not of the PHI index.
INDEX_TABLES = ("schema_migrations", "site")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")
_TOOL_TIMEOUT = 3600.0


class BackupError(Exception):
    """A backup or restore that was refused or failed; the message holds no PHI."""


@dataclass(frozen=True)
class IndexSummary:
    """What an index holds, in numbers: safe to print."""

    migration: str | None
    site_id: str | None
    patients: int
    instances: int


@dataclass(frozen=True)
class Restored:
    summary: IndexSummary
    applied: list[str]


# ---- the tools -----------------------------------------------------------------------


def _candidates(name: str) -> list[Path]:
    """Every ``name`` this machine has: the embedded server's, the system's per version,
    then the one on PATH."""
    found: list[Path] = []
    embedded = importlib.util.find_spec("pgserver")  # located, not imported: no server code runs
    if embedded is not None and embedded.origin:
        found.append(Path(embedded.origin).parent / "pginstall" / "bin" / name)
    found.extend(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}")))
    on_path = shutil.which(name)
    if on_path:
        found.append(Path(on_path))
    return [path for path in dict.fromkeys(found) if path.is_file()]


def tool_major(path: Path) -> int | None:
    """The PostgreSQL major version a tool belongs to, from its ``--version``."""
    try:
        done = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                              timeout=30, check=False)
    except OSError:
        return None
    matched = _VERSION.search(done.stdout)
    return int(matched.group(1)) if matched else None


def find_tool(name: str, major: int) -> Path:
    """The ``name`` (pg_dump, pg_restore) of PostgreSQL ``major``; the error names every
    version found, so that the operator knows what to install."""
    seen: list[str] = []
    for path in _candidates(name):
        version = tool_major(path)
        if version == major:
            return path
        seen.append(f"{version if version is not None else 'unknown'} at {path}")
    found = "; found: " + ", ".join(seen) if seen else "; none found"
    raise BackupError(
        f"no {name} of PostgreSQL {major} (the server's version){found}. Install the client "
        f"tools of PostgreSQL {major} (Debian: postgresql-client-{major})")


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that gives the password to the
    tool: a password on a command line is visible to every user of the machine."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url, dict(os.environ)
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    env = dict(os.environ)
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and password:
            env["PGPASSWORD"] = unquote(password)
        netloc = f"{user}@{hostport}"
    return f"{scheme}://{netloc}{slash}{tail}", env


def _error_line(stderr: str) -> str:
    """The first error a tool printed, quoted text removed."""
    lines = [line for line in stderr.splitlines() if "error" in line.lower()]
    line = (lines or stderr.strip().splitlines() or ["no message"])[0]
    return _QUOTED.sub('"..."', line.strip())[:300]


def _run_tool(arguments: list[str], env: dict[str, str], what: str,
              output: int | IO[bytes] = subprocess.DEVNULL) -> None:
    """Run a tool, its standard output to ``output``; fail with its first error."""
    done = subprocess.run(arguments, env=env, timeout=_TOOL_TIMEOUT, check=False,
                          stdout=output, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise BackupError(f"{what}: {_error_line(done.stderr.decode(errors='replace'))}")


def _read_tool(arguments: list[str], what: str) -> str:
    """What a tool prints; fail with its first error."""
    done = subprocess.run(arguments, timeout=_TOOL_TIMEOUT, check=False,
                          capture_output=True)
    if done.returncode != 0:
        raise BackupError(f"{what}: {_error_line(done.stderr.decode(errors='replace'))}")
    return done.stdout.decode(errors="replace")


# ---- the database --------------------------------------------------------------------


async def server_major(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SHOW server_version_num")) // 10000


async def _exists(connection: asyncpg.Connection, table: str) -> bool:
    return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table))


async def _count(connection: asyncpg.Connection, table: str) -> int:
    if not await _exists(connection, table):
        return 0
    return int(await connection.fetchval(f"SELECT count(*) FROM {table}"))


async def summarize(connection: asyncpg.Connection) -> IndexSummary:
    """The index's last migration, SITEID and counts; refuses a database without an index."""
    if not await _exists(connection, "schema_migrations"):
        raise BackupError("the database holds no PHI index (no schema_migrations table)")
    migration = await connection.fetchval("SELECT max(name) FROM schema_migrations")
    site_id = (await connection.fetchval("SELECT site_id FROM site")
               if await _exists(connection, "site") else None)
    return IndexSummary(_version_name(migration), site_id,
                        await _count(connection, "patient"), await _count(connection, "instance"))


def _version_name(migration: str | None) -> str | None:
    return migration.removesuffix(".sql") if migration else None


async def user_tables(connection: asyncpg.Connection) -> int:
    """Tables, views and sequences outside PostgreSQL's own schemas."""
    return int(await connection.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')"
        " AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg_toast%'"))


async def require_empty(connection: asyncpg.Connection) -> None:
    """Refuse a target that has tables: a restore never replaces an index."""
    if await _exists(connection, "schema_migrations"):
        site = await connection.fetchval("SELECT site_id FROM site") if await _exists(
            connection, "site") else None
        held = f" of SITEID {site}" if site else ""
        raise BackupError(
            f"the target database already holds a PHI index{held}; nothing was restored. "
            "Restore into a new, empty database (createdb, then DATABASE_URL), or into a new "
            "--data-dir")
    tables = await user_tables(connection)
    if tables:
        raise BackupError(
            f"the target database is not empty ({tables} tables or sequences); nothing was "
            "restored. Restore into a new, empty database")


# ---- backing up ------------------------------------------------------------------------


def write_backup(pg_dump: Path, url: str, target: Path, force: bool = False) -> int:
    """Dump the database at ``url`` into ``target`` atomically; returns its size in bytes.
    An existing ``target`` is replaced only with ``force``."""
    if target.exists() and not force:
        raise BackupError(f"{target} exists; give --force to replace it")
    directory = target.parent
    if not directory.is_dir():
        raise BackupError(f"no such folder: {directory}")
    conninfo, env = _libpq(url)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial",
                                    dir=directory)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as output:
            _run_tool([str(pg_dump), "--format=custom", "--dbname", conninfo], env,
                      "pg_dump failed", output)
            output.flush()
            os.fsync(output.fileno())
        verify_archive(pg_dump.with_name("pg_restore"), temporary)
        _put_in_place(temporary, target, force)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return target.stat().st_size


def _put_in_place(temporary: Path, target: Path, force: bool) -> None:
    """Give the finished file its name: a link refuses a file that appeared meanwhile."""
    if force:
        os.replace(temporary, target)
    else:
        try:
            os.link(temporary, target)
        except FileExistsError:
            raise BackupError(f"{target} exists; give --force to replace it") from None
        temporary.unlink()
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


# ---- restoring ---------------------------------------------------------------------------


def check_archive_header(path: Path) -> None:
    try:
        with path.open("rb") as archive:
            head = archive.read(len(ARCHIVE_MAGIC))
    except FileNotFoundError:
        raise BackupError(f"no such file: {path}") from None
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    if head != ARCHIVE_MAGIC:
        raise BackupError(f"{path} is not a backup made by anon backup (pg_dump custom format)")


def verify_archive(pg_restore: Path, path: Path) -> None:
    """Read the whole archive (its table of contents and every data block) and require the
    index's tables in it."""
    what = f"{path.name} is not a readable backup"
    _read_tool([str(pg_restore), "--file", os.devnull, str(path)], what)
    contents = _read_tool([str(pg_restore), "--list", str(path)], what)
    missing = [t for t in INDEX_TABLES if not re.search(rf" TABLE public {t} ", contents)]
    if missing:
        raise BackupError(f"{path.name} is not a backup of the PHI index (no table "
                          f"{', '.join(missing)})")


def archive_migrations(pg_restore: Path, path: Path) -> list[str]:
    """The migrations the backed-up index had applied, read from the archive."""
    script = _read_tool([str(pg_restore), "--data-only", "--table", "schema_migrations",
                         "--file", "-", str(path)], f"cannot read {path.name}")
    names: list[str] = []
    copying = False
    for line in script.splitlines():
        if line.startswith("COPY ") and "schema_migrations" in line:
            copying = True
        elif copying and line == "\\.":
            break
        elif copying:
            names.append(line.split("\t", 1)[0])
    return names


def require_known_migrations(applied: list[str], directory: Path | None = None) -> None:
    """Refuse a backup of a newer installation: its schema has migrations this one lacks."""
    known = {p.name for p in (directory or migrations_dir()).glob("*.sql")}
    newer = sorted(set(applied) - known)
    if newer:
        raise BackupError(
            f"the backup is of a newer schema than this installation knows (migration "
            f"{', '.join(newer)}); upgrade anon, then restore")


def load_archive(pg_restore: Path, url: str, path: Path) -> None:
    conninfo, env = _libpq(url)
    _run_tool([str(pg_restore), "--no-owner", "--no-privileges", "--single-transaction",
               "--exit-on-error", "--dbname", conninfo, str(path)], env,
              "the restore failed, nothing was restored")


async def upgrade(connection: asyncpg.Connection) -> Restored:
    """Apply the migrations the restored index lacks; what it holds afterwards."""
    applied = await migrate(connection)
    return Restored(await summarize(connection), [_version_name(n) or n for n in applied])
