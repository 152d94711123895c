"""Opening the store a command works on, refusing what would create or damage one.

``--db`` (else ``$ALIAK_DB``, else ``./aliak.db``) is a SQLite file, or a
``postgresql://`` / ``postgres://`` DSN for a fleet's PostgreSQL store (its master key
from ``$ALIAK_MASTER_KEY``, its schema from ``$ALIAK_POSTGRES_SCHEMA``, else ``public``).
With ``$ALIAK_NONCES`` set to a ``redis://`` URL, the commands that verify claim their
nonces in Redis instead (a :class:`~aliak.storage.composite.CompositeStore`).

Only commands that create something may create a store, and never in a directory that
does not exist; a command that only reads, or changes an existing key, finds the store
absent and says so, leaving nothing behind. A database whose master key file is gone
is refused too: opening it would write a new key file, under which none of the sealed
secrets open. On PostgreSQL, only creating commands run the schema migrations; the
others refuse a schema without aliak's tables, saying how to make it.

No message ever holds a password: DSNs and URLs are shown through :func:`redact_url`,
and whatever a server or driver answered is scrubbed of the password before it is
printed.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

from aliak.cli._console import CommandFailed
from aliak.errors import AliakError, InvalidParameter
from aliak.sealing import ENV_MASTER_KEY, MasterKeyring
from aliak.storage.composite import CompositeStore
from aliak.storage.protocols import NonceStore, Store
from aliak.storage.sqlite import KEY_FILE_SUFFIX, SQLiteStore

__all__ = [
    "DEFAULT_DB",
    "ENV_DB",
    "ENV_NONCES",
    "ENV_POSTGRES_SCHEMA",
    "is_postgres_location",
    "open_admin_store",
    "open_store",
    "redact_url",
    "store_path",
]

ENV_DB = "ALIAK_DB"
ENV_NONCES = "ALIAK_NONCES"
ENV_POSTGRES_SCHEMA = "ALIAK_POSTGRES_SCHEMA"
DEFAULT_DB = "aliak.db"
DEFAULT_POSTGRES_SCHEMA = "public"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
# Every SQLite 3 database file starts with this header (an empty file is a new database).
_SQLITE_HEADER = b"SQLite format 3\x00"
# Query parameters (libpq's, redis-py's) that carry a password.
_PASSWORD_PARAMETER = re.compile(r"(?i)([?&;]\s*(?:password|passwd|pass|sslpassword)\s*=)([^&#;]*)")
_REDACTED = "***"


def store_path(option: str | None) -> str:
    """``--db``, else ``$ALIAK_DB``, else ``./aliak.db``."""
    return option or os.environ.get(ENV_DB) or DEFAULT_DB


def is_postgres_location(location: str) -> bool:
    """Whether ``--db`` names a PostgreSQL store (a ``postgresql://`` or ``postgres://``
    DSN) rather than a SQLite file."""
    return location.lower().startswith(_POSTGRES_SCHEMES)


# -- never the password -----------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` fit for a message: the password (and a ``password=`` query parameter)
    replaced by ``***``; the scheme, user, host, port and database kept.

    ``postgresql://u:secret@h/db`` shows as ``postgresql://u:***@h/db``. A malformed URL
    is redacted too: everything before the last ``@`` counts as credentials (a password
    may hold an unescaped ``@``, ``/`` or ``#``). Text that is not a URL (a SQLite path)
    is returned as it is.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    credentials, at, location = rest.rpartition("@")
    if at:
        user, colon, _password = credentials.partition(":")
        if any(mark in user for mark in "/?#"):  # not a plain user name: hide it all
            shown = f"{_REDACTED}@"
        elif colon:
            shown = f"{user}:{_REDACTED}@"
        else:
            shown = f"{user}@"
    else:
        shown = ""
    location = _PASSWORD_PARAMETER.sub(lambda match: match.group(1) + _REDACTED, location)
    return f"{scheme}://{shown}{location}"


# Where a password is hidden, and where it is not. A DSN or URL is shown through
# redact_url, which replaces its password *field* (and password= parameters): structure,
# not search, so a user name, host, database or schema that happens to spell the password
# ("aliak", "postgres") is shown as it is, and aliak's own words ("run `aliak keys
# create`") are never touched. The only free text searched is what a server or a driver
# answered: that is where a password can be echoed (a hostile server quoting the login,
# a parser quoting a malformed DSN). There every form of every password is replaced,
# however short or common -- a mangled server message is the price of never printing a
# password; a user name alone is never taken for one.


def _passwords_in(url: str) -> list[str]:
    """Every form the password of ``url`` may take in a server's or a driver's answer:
    the URL's password field, its password parameters and, for PostgreSQL, ``$PGPASSWORD``
    (libpq sends it when the DSN has none), each as written and percent-decoded."""
    found: list[str] = []
    _scheme, separator, rest = url.partition("://")
    if separator:
        credentials, at, _location = rest.rpartition("@")
        if at:
            user, colon, password = credentials.partition(":")
            if any(mark in user for mark in "/?#"):  # not a plain user: redact_url hides it all
                found.append(credentials)
            elif colon:
                found.append(password)
    found.extend(match.group(2) for match in _PASSWORD_PARAMETER.finditer(url))
    if is_postgres_location(url):
        found.append(os.environ.get("PGPASSWORD", ""))
    forms = {form for value in found for form in (value, unquote(value)) if form}
    return sorted(forms, key=len, reverse=True)  # the longest first: no half-replaced forms


def _scrub(answer: str, url: str) -> str:
    """A server's or a driver's ``answer`` without any form of ``url``'s password."""
    for password in _passwords_in(url):
        answer = answer.replace(password, _REDACTED)
    return answer


def _refusal(error: AliakError, url: str, what: str) -> CommandFailed:
    """A store that cannot be opened: what, where (redacted) and why (scrubbed)."""
    # An invalid parameter is named by its message; a server's failure by its detail.
    plain = isinstance(error, InvalidParameter) or not error.detail
    why = str(error) if plain else f"{error.code}: {error.detail}"
    return CommandFailed(f"{what} {redact_url(url)}: {_scrub(why, url)}")


# -- SQLite -----------------------------------------------------------------------------


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


def _open_sqlite(location: str, *, may_create: bool, reads_secrets: bool) -> SQLiteStore:
    path = Path(location)
    exists = _check_location(path, may_create=may_create)
    if exists and _holds_data(path) and reads_secrets:
        _check_master_key(path)
    master_key = None if reads_secrets else MasterKeyring.generate()
    return SQLiteStore(path, master_key=master_key, check_keyring=reads_secrets)


# -- PostgreSQL -------------------------------------------------------------------------


def _postgres_schema() -> str:
    return os.environ.get(ENV_POSTGRES_SCHEMA) or DEFAULT_POSTGRES_SCHEMA


def _open_postgres(dsn: str, *, may_create: bool) -> Store:
    shown = redact_url(dsn)
    if not os.environ.get(ENV_MASTER_KEY):
        raise CommandFailed(
            f"the PostgreSQL store {shown} needs its master key: set {ENV_MASTER_KEY} to the "
            "fleet's keyring (every server sharing the database uses the same one; "
            "`aliak master-key generate --out FILE` makes a new one for a new store)"
        )
    try:
        from aliak.storage.postgres import PostgresStore  # noqa: PLC0415 - optional backend
    except ImportError:
        raise CommandFailed(
            f"the store {shown} is a PostgreSQL DSN, but psycopg is not installed: "
            "pip install 'aliak[postgres]'"
        ) from None
    schema = _postgres_schema()
    try:
        return PostgresStore(dsn, schema=schema, migrate=may_create)
    except InvalidParameter as error:
        if error.parameter == "schema" and "run migrations" in (error.detail or ""):
            raise CommandFailed(  # aliak's own words: the password is only in the DSN
                f"missing schema: no current aliak tables in schema {schema!r} of {shown} "
                f"({ENV_POSTGRES_SCHEMA} names another); run `aliak keys create` (or any "
                "command that creates) once to make or upgrade them"
            ) from None
        if error.parameter == "schema" and (error.detail or "").startswith("1-63 characters"):
            raise CommandFailed(
                f"{ENV_POSTGRES_SCHEMA}={schema!r} is not a schema name aliak uses: {error.detail}"
            ) from None
        raise _refusal(error, dsn, "cannot open the PostgreSQL store") from None
    except AliakError as error:  # ServiceUnavailable: unreachable, refused the login, ...
        raise _refusal(error, dsn, "cannot open the PostgreSQL store") from None


# -- Redis nonces -----------------------------------------------------------------------


def _open_nonces(url: str) -> NonceStore:
    shown = redact_url(url)
    if not url.lower().startswith(_REDIS_SCHEMES):
        raise CommandFailed(
            f"{ENV_NONCES} must be a Redis URL (redis://[[user]:password@]host[:port][/db], "
            f"rediss://..., unix://...), not {shown}"
        )
    try:
        from aliak.storage.redis import RedisNonceStore  # noqa: PLC0415 - optional backend
    except ImportError:
        raise CommandFailed(
            f"{ENV_NONCES} names Redis, but the redis package is not installed: "
            "pip install 'aliak[redis]'"
        ) from None
    try:
        return RedisNonceStore(url)
    except AliakError as error:
        raise _refusal(error, url, "cannot use the Redis nonce store") from None


# -- opening ----------------------------------------------------------------------------


def _open_base(location: str, *, may_create: bool, reads_secrets: bool) -> Store:
    if is_postgres_location(location):
        # A PostgreSQL store has no throwaway keyring: its master key is the fleet's.
        return _open_postgres(location, may_create=may_create)
    return _open_sqlite(location, may_create=may_create, reads_secrets=reads_secrets)


@contextlib.contextmanager
def open_store(
    location: str,
    *,
    may_create: bool = False,
    reads_secrets: bool = True,
    nonces: str | None = None,
    claims_nonces: bool = True,
) -> Iterator[Store]:
    """The store at ``location`` (a SQLite path or a PostgreSQL DSN), closed on exit.

    ``reads_secrets=False`` (a store searched for key owners only) opens a SQLite store
    under a throwaway keyring, so its key file is neither needed nor touched (nor checked
    against the store: nothing is sealed or opened).

    ``nonces``: a Redis URL for the replay guard, else ``$ALIAK_NONCES``; when there is
    one, the store is a :class:`~aliak.storage.composite.CompositeStore` claiming nonces
    there. ``claims_nonces=False`` (administration, which claims none) ignores both, so
    that a Redis outage never stops, say, disabling a leaked key.
    """
    nonce_url = (nonces or os.environ.get(ENV_NONCES) or None) if claims_nonces else None
    # Redis first: a refused URL must not leave a new store behind.
    nonce_store = None if nonce_url is None else _open_nonces(nonce_url)
    try:
        base = _open_base(location, may_create=may_create, reads_secrets=reads_secrets)
    except BaseException:
        close = getattr(nonce_store, "close", None)
        if callable(close):
            close()
        raise
    store: Store = base if nonce_store is None else CompositeStore(base, nonces=nonce_store)
    try:
        yield store
    finally:
        store.close()


def open_admin_store(
    location: str, *, may_create: bool = False, reads_secrets: bool = True
) -> contextlib.AbstractContextManager[Store]:
    """:func:`open_store` for the commands that administer or only read (``keys``,
    ``acl``, ``roles``, ``master-key``, ``sts``, ``audit``): they claim no nonce."""
    return open_store(
        location, may_create=may_create, reads_secrets=reads_secrets, claims_nonces=False
    )
