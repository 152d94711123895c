"""Opening the store a command works on, refusing what would create or damage one.

Only commands that create something may create a store, and never in a directory that
does not exist; a command that only reads, or changes an existing key, finds the store
absent and says so, leaving nothing behind. A database whose master key file is gone
is refused too: opening it would write a new key file, under which none of the sealed
secrets open.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from aliak.cli._console import CommandFailed
from aliak.sealing import ENV_MASTER_KEY, MasterKeyring
from aliak.storage.sqlite import KEY_FILE_SUFFIX, SQLiteStore

__all__ = ["DEFAULT_DB", "ENV_DB", "open_store", "store_path"]

ENV_DB = "ALIAK_DB"
DEFAULT_DB = "aliak.db"
# Every SQLite 3 database file starts with this header (an empty file is a new database).
_SQLITE_HEADER = b"SQLite format 3\x00"


def store_path(option: str | None) -> str:
    """``--db``, else ``$ALIAK_DB``, else ``./aliak.db``."""
    return option or os.environ.get(ENV_DB) or DEFAULT_DB


def _check_location(path: Path, *, may_create: bool) -> bool:
    """Whether the database exists; refuses a missing directory, and a missing database
    unless the command may create one."""
    directory = path.absolute().parent
    if not directory.is_dir():
        raise CommandFailed(
            f"cannot open the store {path}: the directory {directory} does not exist"
        )
    if path.is_dir():
        raise CommandFailed(f"cannot open the store {path}: it is a directory")
    exists = path.exists()
    if not exists and not may_create:
        raise CommandFailed(
            f"no aliak store at {path} (give --db PATH or set {ENV_DB}; "
            "`aliak keys create` makes a new one)"
        )
    return exists


def _holds_data(path: Path) -> bool:
    """Whether an existing database file has content (empty, SQLite makes it anew)."""
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as error:
        raise CommandFailed(f"cannot read the store {path}: {error.strerror}") from None
    if header and header != _SQLITE_HEADER:
        raise CommandFailed(f"{path} is not an aliak store (not an SQLite database)")
    return bool(header)


def _check_master_key(path: Path) -> None:
    key_file = Path(f"{path}{KEY_FILE_SUFFIX}")
    if not key_file.exists() and not os.environ.get(ENV_MASTER_KEY):
        raise CommandFailed(
            f"the master key of {path} is missing: no {key_file} and {ENV_MASTER_KEY} is not "
            "set; without it no secret in the store can be opened"
        )


@contextlib.contextmanager
def open_store(
    location: str, *, may_create: bool = False, reads_secrets: bool = True
) -> Iterator[SQLiteStore]:
    """The SQLite store at ``location``, closed on exit.

    ``reads_secrets=False`` (a store searched for key owners only) opens it under a
    throwaway keyring, so its key file is neither needed nor touched (nor checked
    against the store: nothing is sealed or opened).
    """
    path = Path(location)
    exists = _check_location(path, may_create=may_create)
    if exists and _holds_data(path) and reads_secrets:
        _check_master_key(path)
    master_key = None if reads_secrets else MasterKeyring.generate()
    store = SQLiteStore(path, master_key=master_key, check_keyring=reads_secrets)
    try:
        yield store
    finally:
        store.close()
