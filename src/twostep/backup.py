"""`twostep backup FILE`: a consistent copy of the SQLite database while the server runs.

SQLite's online backup (``sqlite3.Connection.backup``) copies the pages under one read transaction: with the
database in WAL mode the workers go on writing, and the copy is the database as of one moment. The copy is
written under a temporary name beside FILE, turned into a self-contained file (rollback journal, not WAL),
checked (``PRAGMA integrity_check``), flushed to disk and renamed into place: FILE is never half-written.
The secret-encryption key is never part of it (docs/operations.md says why and how to keep it).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path


class BackupRefused(Exception):
    """Nothing was written: FILE exists (without ``force``), or there is no SQLite database to copy."""


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    pages: int


def backup_sqlite(database: Path, target: Path, *, force: bool = False) -> BackupResult:
    """Copy ``database`` to ``target`` (mode 0600).

    Raises:
        BackupRefused: ``target`` exists and ``force`` is off; ``database`` does not exist; ``target`` is
            the database itself.
        OSError, sqlite3.Error: the copy failed (nothing is left at ``target``).
    """
    if not database.is_file():
        raise BackupRefused(f"there is no database at {database}")
    if target.exists() or target.is_symlink():
        if not force:
            raise BackupRefused(f"{target} exists; give --force to overwrite it")
        if target.resolve() == database.resolve():
            raise BackupRefused(f"{target} is the database itself")
        if target.is_dir():
            raise BackupRefused(f"{target} is a directory")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        source = sqlite3.connect(database, timeout=30)
        try:
            copy = sqlite3.connect(tmp)
            try:
                source.backup(copy)
                copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
                check = copy.execute("PRAGMA integrity_check").fetchone()
                pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
            finally:
                copy.close()
        finally:
            source.close()
        if check is None or check[0] != "ok":
            raise sqlite3.DatabaseError(f"the copy failed its integrity check: {check}")
        with open(tmp, "rb+") as out:
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # the rename itself, durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return BackupResult(target, target.stat().st_size, pages)
