"""The embedded default: every port in one SQLite file, safe across threads and processes.

Durability and concurrency come from SQLite itself: WAL journal mode (readers never wait
for the writer), ``synchronous=NORMAL`` (a committed write survives an application
crash; a power cut may lose the last few commits but never corrupts the file), one
connection per thread (opened afresh after ``fork``), and ``BEGIN IMMEDIATE`` around every
multi-statement operation, so a check and the write it guards hold the write lock
together and a crash half-way leaves nothing half-written. The replay guard is a single
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` statement: atomic without any transaction.

Housekeeping stays out of requests: a daemon thread per process (see ``_Housekeeper``)
prunes expired nonces in small batches and checkpoints the write-ahead log, which the
request connections do only as a backstop (``wal_autocheckpoint`` at four times the
log's size limit, for when the housekeeper falls behind). Durability is
SQLite's own either way: a checkpoint only copies committed pages into the database.

Every state change writes its audit event inside its own transaction, so the trail and
the state never disagree. The audit table is append-only twice over: this code never
updates or deletes a row, and triggers make the engine refuse it from anyone else.

Private files: the database, its ``-wal`` and ``-shm`` files and the key file are mode
0600 whatever the umask. This code creates the (empty) database file itself with
``O_CREAT | O_EXCL`` and mode 0600 before SQLite opens it; SQLite creates the ``-wal``,
``-shm`` (and a transient ``-journal``) with the database file's permission bits and
sets them with ``fchmod`` before writing anything, so none is ever readable by others,
even for an instant, and no process-wide umask is touched. An existing database or side
file that group or others may access is tightened to 0600 at open, with a warning in the
``aliak`` log (refused only when it cannot be: not ours to ``chmod``).

Store failures (the lock held beyond ``busy_timeout``, disk I/O) raise
:class:`~aliak.errors.InternalError` chained from the ``sqlite3`` error: the verifier
fails closed. A database this code cannot use (no such directory, not an SQLite file,
written by a newer aliak) is refused at construction with
:class:`~aliak.errors.InvalidParameter`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import math
import os
import sqlite3
import stat
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Concatenate, Final, Literal, ParamSpec, TypeVar

from aliak.acl import NetworkPolicy
from aliak.errors import (
    AccessKeyAlreadyExists,
    AccessKeyNotFound,
    AliakError,
    InternalError,
    InvalidParameter,
)
from aliak.model import (
    Account,
    AuditEvent,
    KeyRecord,
    KeyStatus,
    LastUsed,
    Owner,
    RamUser,
    SourceIpUse,
    UsageRecord,
    utc_from_timestamp,
)
from aliak.roles import RoleRecord
from aliak.sealing import (
    CHECK_SAMPLE_SIZE,
    ENV_MASTER_KEY,
    KeyFile,
    MasterKeyring,
    check_agrees_with_key_file,
    check_setting_range,
    keyring_checks_to_record,
    locate_master_keyring,
    recorded_checks,
)
from aliak.storage import lifecycle
from aliak.storage.async_adapter import AsyncStoreAdapter
from aliak.storage.invalidation import MAX_IDS_PER_CHANGE, LocalInvalidation, subjects
from aliak.storage.protocols import InvalidationChannel, PolicyTarget
from aliak.storage.rows import (
    LatestUse,
    SourceIpSpans,
    coalesce_usage,
    event_from_row,
    record_from_row,
    row_from_event,
    row_from_record,
    seconds,
)

__all__ = ["DEFAULT_WAL_SIZE_LIMIT", "SCHEMA_VERSION", "SQLiteStore"]

_log = logging.getLogger("aliak")

MEMORY: Final = ":memory:"
KEY_FILE_SUFFIX: Final = ".key"
# Upserts (ON CONFLICT ... DO UPDATE) arrived in SQLite 3.24.
_MINIMUM_SQLITE: Final = (3, 24, 0)

# A nonce claim's era: its expiry in whole _ERA_SECONDS, floored (clamped far from the
# int64 range). Floor of a correctly rounded division is monotonic, so a claim that is
# live at ``now`` is never in an era before now's, and an era before now's holds only
# claims expired by ``now``. _era() is the same function in Python; the two are tested
# against each other.
_ERA_SECONDS: Final = 900  # part of the file format: migration 4 wrote eras of 900 s
_ERA_LIMIT: Final = 10**15
_ERA_OF_EXPIRES_AT: Final = (
    "CASE WHEN expires_at / 900.0 >= 1e15 THEN 1000000000000000 "
    "WHEN expires_at / 900.0 > -1e15 THEN CAST(expires_at / 900.0 AS INTEGER) "
    "- (expires_at / 900.0 < CAST(expires_at / 900.0 AS INTEGER)) "
    "ELSE -1000000000000000 END"
)

# Each step moves the schema up one version and runs in its own transaction. Append new
# steps; never edit a released one (databases in the field already ran it).
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """CREATE TABLE aliak_schema (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            version INTEGER NOT NULL
        )""",
        # user_name is NULL for the account's own (root) key. Times are UNIX seconds.
        """CREATE TABLE aliak_keys (
            access_key_id TEXT PRIMARY KEY,
            account_id TEXT NOT NULL,
            user_name TEXT,
            status TEXT NOT NULL CHECK (status IN ('Active', 'Inactive')),
            created_at INTEGER NOT NULL,
            algorithm TEXT NOT NULL CHECK (algorithm IN ('HMAC', 'RSA')),
            sealed_secret BLOB,
            public_key TEXT,
            recycled_at INTEGER,
            leak_restricted INTEGER NOT NULL DEFAULT 0 CHECK (leak_restricted IN (0, 1)),
            last_used_at INTEGER,
            last_used_service TEXT
        )""",
        """CREATE INDEX aliak_keys_by_owner
            ON aliak_keys (account_id, user_name, created_at, access_key_id)""",
        # expires_at is REAL: truncating it would forget a claim before its expiry.
        """CREATE TABLE aliak_nonces (
            access_key_id TEXT NOT NULL,
            nonce TEXT NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (access_key_id, nonce)
        ) WITHOUT ROWID""",
        "CREATE INDEX aliak_nonces_by_expiry ON aliak_nonces (expires_at)",
        """CREATE TABLE aliak_network_policies (
            level TEXT NOT NULL CHECK (level IN ('account', 'key')),
            target_id TEXT NOT NULL,
            policy TEXT NOT NULL,
            PRIMARY KEY (level, target_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE aliak_key_source_ips (
            access_key_id TEXT NOT NULL
                REFERENCES aliak_keys (access_key_id) ON DELETE CASCADE,
            source_ip TEXT NOT NULL,
            first_seen INTEGER NOT NULL,
            last_seen INTEGER NOT NULL,
            PRIMARY KEY (access_key_id, source_ip)
        ) WITHOUT ROWID""",
    ),
    # 2: the key lifecycle (recycle bin lookups), store-wide settings, the audit trail.
    (
        """CREATE INDEX aliak_keys_in_recycle_bin
            ON aliak_keys (account_id, user_name, recycled_at, access_key_id)
            WHERE recycled_at IS NOT NULL""",
        """CREATE INDEX aliak_keys_by_recycled_at
            ON aliak_keys (recycled_at) WHERE recycled_at IS NOT NULL""",
        """CREATE TABLE aliak_settings (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL
        ) WITHOUT ROWID""",
        # seq keeps append order among events of the same second; AUTOINCREMENT never
        # hands out a number twice, even if a row were ever removed behind our back.
        """CREATE TABLE aliak_audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            at INTEGER NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            access_key_id TEXT,
            account_id TEXT,
            user_name TEXT,
            detail TEXT NOT NULL
        )""",
        "CREATE INDEX aliak_audit_by_time ON aliak_audit (at)",
        "CREATE INDEX aliak_audit_by_key ON aliak_audit (access_key_id, at)",
        "CREATE INDEX aliak_audit_by_owner ON aliak_audit (account_id, user_name, at)",
        # Append-only, enforced by the engine too: this code never updates or deletes an
        # event, and neither can anything else that writes through SQL.
        """CREATE TRIGGER aliak_audit_no_update BEFORE UPDATE ON aliak_audit
            BEGIN SELECT RAISE(ABORT, 'the aliak audit trail is append-only'); END""",
        """CREATE TRIGGER aliak_audit_no_delete BEFORE DELETE ON aliak_audit
            BEGIN SELECT RAISE(ABORT, 'the aliak audit trail is append-only'); END""",
    ),
    # 3: the change log other processes' verifiers look at before each request. A row
    # per changed key (access_key_id NULL: anything), written in the changing
    # transaction; only the latest _CHANGES_KEPT rows are kept.
    (
        """CREATE TABLE aliak_changes (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            access_key_id TEXT
        )""",
    ),
    # 4: nonce claims keyed by their era first (see _ERA_SECONDS), so a claim writes one
    # B-tree (no separate expiry index) and expired claims leave as whole eras, a range
    # delete at the tree's left edge. aliak_nonce_eras lists every era that holds a
    # claim: a claim's trigger files its era in the claiming statement, and an era leaves
    # the list only in the statement that finds it empty, so a lookup that probes the
    # listed eras can never miss a claim.
    (
        """CREATE TABLE aliak_nonces_by_era (
            era INTEGER NOT NULL,
            access_key_id TEXT NOT NULL,
            nonce TEXT NOT NULL,
            expires_at REAL NOT NULL,
            PRIMARY KEY (era, access_key_id, nonce)
        ) WITHOUT ROWID""",
        "CREATE TABLE aliak_nonce_eras (era INTEGER PRIMARY KEY)",
        "INSERT INTO aliak_nonces_by_era (era, access_key_id, nonce, expires_at) "  # noqa: S608
        f"SELECT {_ERA_OF_EXPIRES_AT}, access_key_id, nonce, expires_at FROM aliak_nonces",
        "INSERT INTO aliak_nonce_eras (era) SELECT DISTINCT era FROM aliak_nonces_by_era",
        "DROP TABLE aliak_nonces",
        "ALTER TABLE aliak_nonces_by_era RENAME TO aliak_nonces",
        """CREATE TRIGGER aliak_nonces_file_era AFTER INSERT ON aliak_nonces
            BEGIN INSERT OR IGNORE INTO aliak_nonce_eras (era) VALUES (NEW.era); END""",
    ),
    # 5: RAM roles and their trust (aliak.roles), one JSON document per role, keyed by
    # account and the name in lower case (RAM role names are unique regardless of case).
    (
        """CREATE TABLE aliak_roles (
            account_id TEXT NOT NULL,
            name_key TEXT NOT NULL,
            document TEXT NOT NULL,
            PRIMARY KEY (account_id, name_key)
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)

_KEY_COLUMNS: Final = (
    "access_key_id, account_id, user_name, status, created_at, algorithm, sealed_secret, "
    "public_key, recycled_at, leak_restricted, last_used_at, last_used_service"
)
# The f-strings below only splice in the constant column list; values are always bound.
_SELECT_KEY: Final = f"SELECT {_KEY_COLUMNS} FROM aliak_keys WHERE access_key_id = ?"  # noqa: S608
# The key's row, or else a decoy row of the same shape (flagged 0), so that an unknown id
# comes back as a row to parse like a known one: the lookup costs the same either way.
_SELECT_KEY_OR_DECOY: Final = (
    f"SELECT {_KEY_COLUMNS}, 1 FROM aliak_keys WHERE access_key_id = ? "  # noqa: S608
    "UNION ALL SELECT 'LTAI000000000000000000000', '1234567890123456', 'decoy', 'Active', "
    f"1700000000, 'HMAC', x'01{'00' * 62}', NULL, NULL, 0, 1700000000, 'ecs', 0 LIMIT 1"
)
_SELECT_OWNER_KEYS: Final = (
    f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
    "WHERE account_id = ? AND user_name IS ? AND recycled_at IS NULL "
    "ORDER BY created_at, access_key_id"
)
_SELECT_OWNER_RECYCLE_BIN: Final = (
    f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
    "WHERE account_id = ? AND user_name IS ? AND recycled_at IS NOT NULL "
    "ORDER BY recycled_at, access_key_id"
)
_SELECT_KEYS_PAGE: Final = (
    f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
    "WHERE access_key_id > ? ORDER BY access_key_id LIMIT ?"
)
_OWNER_KEYS_IN_RECYCLE_BIN: Final = (
    "SELECT recycled_at IS NOT NULL FROM aliak_keys WHERE account_id = ? AND user_name IS ?"
)
_INSERT_KEY: Final = (
    f"INSERT INTO aliak_keys ({_KEY_COLUMNS}) "  # noqa: S608
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Replay guard (spec §5): add-if-absent in one statement, so atomic without a
# transaction (an INSERT takes the write lock before it reads). The NOT EXISTS probes the
# live eras (usually two or three: a verifier's claims expire within max_skew of the
# signed date); the upsert takes over an expired claim of the same era.
_CLAIM_NONCE: Final = (
    "INSERT INTO aliak_nonces (era, access_key_id, nonce, expires_at) "
    "SELECT :era, :key, :nonce, :expires_at WHERE NOT EXISTS ("
    "SELECT 1 FROM aliak_nonces WHERE era IN "
    "(SELECT era FROM aliak_nonce_eras WHERE era >= :live) "
    "AND access_key_id = :key AND nonce = :nonce AND expires_at > :now) "
    "ON CONFLICT (era, access_key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE aliak_nonces.expires_at <= :now"
)
# An explicit prune (prune_nonces, prune_every): exactly what expired by ``now``, which
# scans the era ``now`` falls in; then the eras it emptied leave the list.
_PRUNE_NONCES: Final = (
    "DELETE FROM aliak_nonces WHERE era IN "
    "(SELECT era FROM aliak_nonce_eras WHERE era <= :live) AND expires_at <= :now"
)
_FORGET_EMPTY_ERAS: Final = (
    "DELETE FROM aliak_nonce_eras WHERE era <= :live "
    "AND NOT EXISTS (SELECT 1 FROM aliak_nonces WHERE aliak_nonces.era = aliak_nonce_eras.era)"
)
# The housekeeper's prune: whole eras that ended by the claims' clock, the oldest first,
# a bounded batch per statement (a range at the tree's left edge: O(expired)), so the
# write lock is never held for more than one batch while requests wait for it.
_OLDEST_ENDED_ERA: Final = "SELECT min(era) FROM aliak_nonce_eras WHERE era < ?"
_PRUNE_ERA_BATCH: Final = (
    "DELETE FROM aliak_nonces WHERE era = ?1 AND (access_key_id, nonce) IN "
    "(SELECT access_key_id, nonce FROM aliak_nonces WHERE era = ?1 LIMIT ?2)"
)
_FORGET_ERA_IF_EMPTY: Final = (
    "DELETE FROM aliak_nonce_eras WHERE era = ?1 "
    "AND NOT EXISTS (SELECT 1 FROM aliak_nonces WHERE era = ?1)"
)
_PRUNE_BATCH: Final = 128
# The pause between two prune batches, in seconds: longer than the first few sleeps of
# SQLite's busy handler, so a request that found the lock taken gets it at its next try.
_PRUNE_PAUSE: Final = 0.005
# How often the housekeeper prunes and checkpoints, in seconds. A checkpoint every tick
# keeps each one small; the prune needs no more than a second's freshness.
_CHECKPOINT_INTERVAL: Final = 0.1
_PRUNE_INTERVAL: Final = 1.0
# The busy timeout of the housekeeper's WAL reset, in milliseconds: a RESTART checkpoint
# holds the write lock while it waits for readers, so it gives up soon and tries again
# on a later tick rather than stall the requests queued behind it.
_RESET_BUSY_TIMEOUT_MS: Final = 50
DEFAULT_WAL_SIZE_LIMIT: Final = 64 * 2**20
_WAL_FRAME_HEADER: Final = 24
# The request connections' checkpoint backstop, in multiples of wal_size_limit.
_BACKSTOP_LIMITS: Final = 4
# Latest use wins; an exact tie in time goes to the greater service name, so the result
# does not depend on the order in which batches arrive.
_MERGE_LAST_USED: Final = (
    "UPDATE aliak_keys SET last_used_at = ?1, last_used_service = ?2 "
    "WHERE access_key_id = ?3 AND (last_used_at IS NULL "
    "OR last_used_at < ?1 OR (last_used_at = ?1 AND last_used_service < ?2))"
)
_MERGE_SOURCE_IP: Final = (
    "INSERT INTO aliak_key_source_ips (access_key_id, source_ip, first_seen, last_seen) "
    "SELECT ?1, ?2, ?3, ?4 WHERE EXISTS "
    "(SELECT 1 FROM aliak_keys WHERE access_key_id = ?1) "
    "ON CONFLICT (access_key_id, source_ip) DO UPDATE SET "
    "first_seen = min(first_seen, excluded.first_seen), "
    "last_seen = max(last_seen, excluded.last_seen)"
)
# The bound on a key's history (lifecycle.source_ips_to_forget, said in SQL): all but the
# most recently seen ?2 addresses go. A key's history is at most the bound plus one batch.
_TRIM_SOURCE_IPS: Final = (
    "DELETE FROM aliak_key_source_ips WHERE access_key_id = ?1 AND source_ip IN "
    "(SELECT source_ip FROM aliak_key_source_ips WHERE access_key_id = ?1 "
    "ORDER BY last_seen DESC, source_ip LIMIT -1 OFFSET ?2)"
)
_SECRETS_PAGE: Final = 500
_KEYS_PAGE: Final = 500
_INSERT_CHANGE: Final = "INSERT INTO aliak_changes (access_key_id) VALUES (?)"
_PRUNE_CHANGES: Final = "DELETE FROM aliak_changes WHERE seq <= last_insert_rowid() - ?"
# A reader further behind than this finds a gap in the log and drops everything.
_CHANGES_KEPT: Final = 1000
_LAST_CHANGE: Final = "SELECT coalesce(max(seq), 0) FROM aliak_changes"
# One more row than an announcement names at most: more means "drop everything".
_CHANGES_SINCE: Final = (
    "SELECT seq, access_key_id FROM aliak_changes WHERE seq > ? ORDER BY seq LIMIT "  # noqa: S608
    f"{MAX_IDS_PER_CHANGE + 1}"
)
_AUDIT_COLUMNS: Final = "at, actor, action, access_key_id, account_id, user_name, detail"
_INSERT_AUDIT: Final = f"INSERT INTO aliak_audit ({_AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"  # noqa: S608


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _fail_closed(
    method: Callable[Concatenate[SQLiteStore, _P], _R],
) -> Callable[Concatenate[SQLiteStore, _P], _R]:
    """Run a store method serialised as the store requires, mapping ``sqlite3`` errors to
    :class:`InternalError`: a store that cannot answer must refuse, never allow."""

    @functools.wraps(method)
    def guarded(self: SQLiteStore, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            with self._serial:
                return method(self, *args, **kwargs)
        except sqlite3.Error as error:
            raise InternalError(detail=f"SQLite store: {error}") from error

    return guarded


class _ThreadSlot:
    """A thread's connection. It lives in a ``threading.local``, so it dies with its thread,
    and a finaliser then closes the connection."""

    __slots__ = ("__weakref__", "connection", "data_version", "pid")

    def __init__(self, connection: sqlite3.Connection, pid: int) -> None:
        self.connection = connection
        self.pid = pid
        self.data_version: int | None = None  # as the change check last saw it


def _release(
    registry: dict[sqlite3.Connection, int], connection: sqlite3.Connection, pid: int
) -> None:
    # A forked child must never close (or use) a connection its parent opened: SQLite
    # forbids carrying a connection across fork. It stays referenced in the registry.
    if os.getpid() != pid:
        return
    # Whoever takes the connection out of the registry closes it, exactly once: a thread
    # that ends while close() runs must not close the same connection too (closing one
    # twice at once corrupts the heap in some sqlite3 builds).
    if registry.pop(connection, None) is not None:
        with contextlib.suppress(sqlite3.Error):
            connection.close()


class SQLiteStore:
    """Implements :class:`~aliak.storage.protocols.Store` in one SQLite database file.

    ``path``: the database file, created if absent (its directory must exist), or
    ``":memory:"`` for a private in-process database (one connection, shared by the
    threads under a lock). ``master_key``: a :class:`MasterKeyring` or its text form;
    else ``ALIAK_MASTER_KEY``; else a key file beside the database (``<path>.key``,
    created with mode 0600). ``busy_timeout``: seconds to wait for another writer before
    failing closed. ``prune_every``: ``None`` (the default) prunes expired nonces on the
    store's background housekeeping thread, about once a second and in small batches,
    never inside a request; a number keeps the older way, every that many claims the
    claiming request prunes (0 turns pruning off; then call :meth:`prune_nonces`
    yourself). ``wal_size_limit``: bytes the write-ahead log may hold before the
    housekeeper makes it start over (a ``RESTART`` checkpoint, however busy the store;
    the file is trimmed back to this size).
    ``max_source_ips_per_key``: how many source addresses a key's history keeps (the most
    recently seen; the write that overfills it trims it in the same transaction).

    The keyring must be the store's: the store records a check value per master-key
    version (on first open, for a database that has none yet, after the keyring opened a
    sample of its sealed secrets), and a keyring that does not match, or a
    ``master_key=`` / ``ALIAK_MASTER_KEY`` that disagrees with an existing key file, is
    refused at construction with :class:`InvalidParameter` naming where it came from.
    ``check_keyring=False`` skips this, for a store opened under a throwaway keyring
    only to read key metadata (it must seal nothing).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        master_key: MasterKeyring | str | bytes | None = None,
        busy_timeout: float = 5.0,
        prune_every: int | None = None,
        wal_size_limit: int = DEFAULT_WAL_SIZE_LIMIT,
        max_source_ips_per_key: int = lifecycle.DEFAULT_MAX_SOURCE_IPS_PER_KEY,
        check_keyring: bool = True,
    ) -> None:
        if sqlite3.sqlite_version_info < _MINIMUM_SQLITE:
            raise InternalError(
                detail=f"SQLite {sqlite3.sqlite_version} is too old; aliak needs 3.24 or later"
            )
        _check_options(busy_timeout, prune_every, wal_size_limit)
        self._database = _database_name(path)
        self._in_memory = self._database == MEMORY
        self._busy_timeout = float(busy_timeout)
        self._prune_every = prune_every
        self._wal_size_limit = wal_size_limit
        # The latest claim's clock: the housekeeper prunes what expired by it (the
        # verifier's clock, never this host's, so an injected clock means the same here).
        self._prune_before: float | None = None
        self._housekeeper: _Housekeeper | None = None
        # One lock per process that starts the housekeeper: a lock another thread held
        # at fork time stays held in the child, so the child makes its own.
        self._housekeeper_locks: dict[int, threading.Lock] = {}
        self._ready = False
        self._max_source_ips = lifecycle.check_source_ip_limit(max_source_ips_per_key)
        self._check_keyring = bool(check_keyring)
        self._claims = itertools.count(1)
        self._closed = False
        # Every connection this store opened, with the pid that opened it. Plain dict
        # operations are atomic, so threads register without a lock (a lock held at
        # fork time would deadlock the child).
        self._open: dict[sqlite3.Connection, int] = {}
        self._local = threading.local()
        self._serial: contextlib.AbstractContextManager[Any]
        self._shared: sqlite3.Connection | None = None
        self._memory_lock: threading.RLock | None = None
        if self._in_memory:
            self._serial = self._memory_lock = threading.RLock()
        else:
            _check_directory(Path(self._database))
            _make_private(self._database)
            self._serial = contextlib.nullcontext()
        # The change check (see _look_for_changes): the last change-log row delivered,
        # read and moved under a lock that is never waited for.
        self._look_lock = threading.Lock()
        self._seen_change = 0
        try:
            self._prepare_database()
            (self._page_size,) = self._connection().execute("PRAGMA page_size").fetchone()
            self._keyring, self._key_file = self._load_keyring(master_key)
            if not self._in_memory:
                self._seen_change = self._last_change()
        except sqlite3.Error as error:  # a read above that met an engine error
            self.close()
            raise _opening_failure(self._database, error) from error
        except BaseException:
            self.close()
            raise
        self._ready = True
        self._ensure_housekeeper()
        self._changes = LocalInvalidation(
            announce=None if self._in_memory else self._announce,
            look=None if self._in_memory else self._look_for_changes,
        )
        self.invalidations: InvalidationChannel | None = self._changes
        """Every change this store object commits is delivered to this process's
        verifiers before the method returns; a change another process (or another store
        object) committed to the file is found by :meth:`refresh
        <aliak.storage.invalidation.LocalInvalidation.refresh>`, which a verifier runs
        before each request."""

    def __repr__(self) -> str:
        return f"SQLiteStore({self._database!r})"

    # -- connections ------------------------------------------------------------------

    def _connect(
        self, *, register: bool = True, busy_timeout: float | None = None
    ) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._database,
            timeout=self._busy_timeout if busy_timeout is None else busy_timeout,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=False,  # close() may run on another thread
        )
        try:
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            # A purge destroys the sealed secret: zero its bytes in the file, not just unlink.
            connection.execute("PRAGMA secure_delete = ON")
            if not self._in_memory:
                # Checkpoints are the housekeeper's (see _Housekeeper), not a request's,
                # except as a backstop: should the housekeeper fall behind (a starved
                # thread, a RESTART that keeps finding the lock taken), a committing
                # request runs SQLite's own PASSIVE checkpoint once the log holds
                # _BACKSTOP_LIMITS size limits. Housekeeping has by then copied nearly all
                # of it, so the request copies little, and its next write starts over.
                (page_size,) = connection.execute("PRAGMA page_size").fetchone()
                frame = page_size + _WAL_FRAME_HEADER
                backstop = _BACKSTOP_LIMITS * self._wal_size_limit // frame
                connection.execute(f"PRAGMA wal_autocheckpoint = {max(1, backstop):d}")
                connection.execute(f"PRAGMA journal_size_limit = {self._wal_size_limit:d}")
        except BaseException:
            connection.close()
            raise
        if register:
            self._open[connection] = os.getpid()
        return connection

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (in this process)."""
        if self._closed:
            raise InternalError(detail="the SQLite store is closed")
        if self._shared is not None:
            return self._shared
        slot: _ThreadSlot | None = getattr(self._local, "slot", None)
        pid = os.getpid()
        if slot is not None and slot.pid == pid:
            return slot.connection
        connection = self._connect()
        if self._in_memory:
            self._shared = connection
            return connection
        slot = _ThreadSlot(connection, pid)
        weakref.finalize(slot, _release, self._open, connection, pid)
        self._local.slot = slot
        self._ensure_housekeeper()  # a forked child's first connection starts its own
        return connection

    def _eager_connection(self) -> sqlite3.Connection:
        """This thread's second connection, one that never waits for the write lock (busy
        timeout 0): :meth:`claim_nonce_without_waiting` runs on an event loop's thread."""
        if self._closed:
            raise InternalError(detail="the SQLite store is closed")
        slot: _ThreadSlot | None = getattr(self._local, "eager", None)
        pid = os.getpid()
        if slot is not None and slot.pid == pid:
            return slot.connection
        connection = self._connect(busy_timeout=0.0)
        slot = _ThreadSlot(connection, pid)
        weakref.finalize(slot, _release, self._open, connection, pid)
        self._local.eager = slot
        self._ensure_housekeeper()
        return connection

    # -- housekeeping -----------------------------------------------------------------

    def _ensure_housekeeper(self) -> None:
        """Start this process's housekeeping thread unless it runs (or nothing needs it)."""
        pid = os.getpid()
        running = self._housekeeper
        if running is not None and running.pid == pid:
            return
        if not self._ready or self._closed:
            return
        if self._in_memory and self._prune_every is not None:
            return  # no log to checkpoint, no background pruning asked for
        with self._housekeeper_locks.setdefault(pid, threading.Lock()):
            running = self._housekeeper
            if running is None or running.pid != pid:
                self._housekeeper = _Housekeeper(self)

    def _housekeeping_connection(self) -> sqlite3.Connection:
        """A private connection for the housekeeper, outside the thread slots: it closes
        it itself when it stops, and close() waits for that."""
        return self._connect(register=False)

    def _prune_in_batches(self, connection: sqlite3.Connection, stopping: threading.Event) -> int:
        """Delete the eras that ended by the latest claim's clock, oldest first, a batch
        per statement; an era leaves the list once a statement finds it empty."""
        before = self._prune_before
        if before is None:
            return 0
        ended = _era(before)
        pruned = 0
        while not stopping.is_set():
            (era,) = connection.execute(_OLDEST_ENDED_ERA, (ended,)).fetchone()
            if era is None:
                break
            with self._serial:
                deleted = connection.execute(_PRUNE_ERA_BATCH, (era, _PRUNE_BATCH)).rowcount
                if deleted < _PRUNE_BATCH:
                    connection.execute(_FORGET_ERA_IF_EMPTY, (era,))
            pruned += deleted
            time.sleep(_PRUNE_PAUSE)
        return pruned

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        """A PASSIVE checkpoint: it never takes the write lock and never waits. Under
        constant writing it never catches up with the log's end, so the log never
        rewinds; once it holds more than ``wal_size_limit`` bytes of frames, a RESTART
        checkpoint copies the few frames written since the PASSIVE one (holding the write
        lock, with a short busy timeout for readers) so the next write starts the log
        over, in the file already allocated (``journal_size_limit`` trims it to the limit)."""
        _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames * (self._page_size + _WAL_FRAME_HEADER) <= self._wal_size_limit:
            return
        connection.execute(f"PRAGMA busy_timeout = {_RESET_BUSY_TIMEOUT_MS:d}")
        try:
            busy, frames, _ = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            _log.debug("aliak: WAL of %s restarted (busy %d, %d frames)", self, busy, frames)
        finally:
            connection.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000):d}")

    def _discard_connection(self, connection: sqlite3.Connection) -> None:
        """Drop a connection left in an unknown state; the next call opens a fresh one."""
        if self._in_memory:
            return  # the only copy of the data; keep it
        slot: _ThreadSlot | None = getattr(self._local, "slot", None)
        if slot is not None and slot.connection is connection:
            del self._local.slot
        self._open.pop(connection, None)
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``: the write lock is taken before the first read,
        so what a transaction checks cannot change before it writes; any error rolls back."""
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error:
                    self._discard_connection(connection)
            raise

    # -- announcing changes -----------------------------------------------------------

    def _changed(
        self, connection: sqlite3.Connection, access_key_ids: Sequence[str | None]
    ) -> None:
        """Log a change inside the transaction that makes it, so that other processes
        learn of it if and only if it commits."""
        if self._in_memory or not access_key_ids:
            return
        connection.executemany(
            _INSERT_CHANGE, [(access_key_id,) for access_key_id in subjects(access_key_ids)]
        )
        connection.execute(_PRUNE_CHANGES, (_CHANGES_KEPT,))

    def _announce(self, access_key_ids: Sequence[str | None]) -> None:
        """:meth:`LocalInvalidation.publish`'s way to tell other processes. Best effort."""
        try:
            with self._serial, self._write_transaction() as connection:
                self._changed(connection, access_key_ids)
        except (sqlite3.Error, AliakError) as error:
            _log.warning(
                "aliak: could not log a key change in %s (%s); other processes will see "
                "it within their freshness",
                self._database,
                type(error).__name__,
            )

    def _last_change(self) -> int:
        (seq,) = self._connection().execute(_LAST_CHANGE).fetchone()
        return int(seq)

    def _look_for_changes(self) -> None:
        """The change check behind ``invalidations.refresh()``. ``PRAGMA data_version``
        on this thread's connection -- its second, if it claims there (an event loop's
        thread) -- (a counter SQLite keeps in shared memory; it moves
        when *another* connection commits -- another process's, or another thread's of
        this store, nonce claims included; this thread's own writes leave it still)
        and, only when it moved, a primary-key range read of the change
        log since the last row delivered. Each logged key id is delivered; a gap in the
        log (this process fell more than _CHANGES_KEPT rows behind) or more ids than an
        announcement names delivers ``None``. A thread that finds another one reading
        the log does not wait: that one delivers. Never raises."""
        try:
            connection = self._connection()
            slot: _ThreadSlot = self._local.slot
            eager: _ThreadSlot | None = getattr(self._local, "eager", None)
            if eager is not None and eager.pid == slot.pid:
                # An event loop's thread claims nonces on its second connection: watched
                # from the first, every claim moved the counter and cost a read of the
                # log. Watched from the second, they are its own writes, and another
                # connection's commit (this thread's first one included) still moves it.
                slot, connection = eager, eager.connection
            (version,) = connection.execute("PRAGMA data_version").fetchone()
            if version == slot.data_version or not self._look_lock.acquire(blocking=False):
                return
        except (sqlite3.Error, AliakError, AttributeError):
            return  # closed, or busy: looked at again before the next request
        try:
            seen = self._seen_change
            rows = connection.execute(_CHANGES_SINCE, (seen,)).fetchall()
            changed: list[str | None] = [access_key_id for _, access_key_id in rows]
            last = rows[-1][0] if rows else seen
            if len(rows) > MAX_IDS_PER_CHANGE:
                changed = [None]
                (last,) = connection.execute(_LAST_CHANGE).fetchone()
            elif rows and rows[0][0] != seen + 1:
                changed = [None]  # fell behind the pruned log: what was missed is unknown
            slot.data_version = version  # only once the log was read
            self._seen_change = int(last)
        except sqlite3.Error:
            return
        finally:
            self._look_lock.release()
        if changed:
            self._changes.deliver(changed)

    # -- opening ----------------------------------------------------------------------

    def _prepare_database(self) -> None:
        try:
            connection = self._connection()
            if not self._in_memory:
                _enable_wal(connection, self._database, self._busy_timeout)
            self._migrate(connection)
        except sqlite3.Error as error:
            raise _opening_failure(self._database, error) from error

    def _migrate(self, connection: sqlite3.Connection) -> None:
        current = _schema_version(connection)
        _refuse_newer(current, self._database)
        for version, statements in enumerate(_MIGRATIONS, start=1):
            if version <= current:
                continue
            with self._write_transaction():
                # Another process may have migrated while we waited for the lock.
                current = _schema_version(connection)
                _refuse_newer(current, self._database)
                if current < version:
                    for statement in statements:
                        connection.execute(statement)
                    connection.execute(
                        "INSERT INTO aliak_schema (id, version) VALUES (1, ?) "
                        "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                        (version,),
                    )
                    current = version

    def _load_keyring(
        self, master_key: MasterKeyring | str | bytes | None
    ) -> tuple[MasterKeyring, KeyFile | None]:
        if self._in_memory:
            if master_key is None and not os.environ.get(ENV_MASTER_KEY):
                # Nothing sealed here outlives the process, so a random key will do.
                return MasterKeyring.generate(), None
            keyring, _, source = locate_master_keyring(master_key)
            return self._adopt_keyring(keyring, source), None
        key_file = self._database + KEY_FILE_SUFFIX
        if (
            master_key is None
            and not os.environ.get(ENV_MASTER_KEY)
            and not os.path.exists(key_file)
            and self._holds_sealed_secrets()
        ):
            # A new random key would open none of the secrets already here: refuse rather
            # than silently making every stored key unusable.
            raise InvalidParameter(
                "MasterKeyFile",
                detail=f"{self._database} holds sealed secrets but {key_file} is missing; "
                f"restore it, or give the key with master_key= or {ENV_MASTER_KEY}",
            )
        try:
            keyring, file, source = locate_master_keyring(master_key, key_file=key_file)
        except OSError as error:
            raise InvalidParameter(
                "MasterKeyFile", detail=f"cannot read or create {key_file}: {error.strerror}"
            ) from error
        if file is None and self._check_keyring:
            check_agrees_with_key_file(keyring, source, key_file)
        return self._adopt_keyring(keyring, source), file

    def _adopt_keyring(self, keyring: MasterKeyring, source: str) -> MasterKeyring:
        """``keyring`` if it is this store's (recording the check values of versions the
        store has none for), else a refusal naming ``source``."""
        if not self._check_keyring:
            return keyring
        try:
            with self._write_transaction() as connection:
                _record_keyring_checks(connection, keyring, source=source, where=self._database)
        except sqlite3.Error as error:
            raise _opening_failure(self._database, error) from error
        return keyring

    def _holds_sealed_secrets(self) -> bool:
        row = (
            self._connection()
            .execute("SELECT 1 FROM aliak_keys WHERE sealed_secret IS NOT NULL LIMIT 1")
            .fetchone()
        )
        return row is not None

    # -- KeyStore ---------------------------------------------------------------------

    @property
    def keyring(self) -> MasterKeyring:
        return self._keyring

    @property
    def key_file(self) -> KeyFile | None:
        """The key file the keyring lives in, or ``None`` when it came from elsewhere."""
        return self._key_file

    def reload_keyring(self) -> MasterKeyring:
        """Re-read the key file (another process may have rotated it); without a key file
        the keyring has no external source and is returned as it is."""
        if self._key_file is not None:
            try:
                self._keyring = self._key_file.load()
            except OSError as error:
                raise InternalError(
                    detail=f"cannot read the master key file {self._key_file.path}: "
                    f"{error.strerror}"
                ) from error
        return self._keyring

    @_fail_closed
    def set_keyring(self, keyring: MasterKeyring) -> None:
        """Put ``keyring`` in force. When the keyring lives in a key file it is written
        there first, so what is sealed under it stays openable after a restart and other
        processes pick it up with :meth:`reload_keyring`. A keyring that does not match
        the store's check values is refused; the check values of its new versions are
        recorded in the transaction that holds the write lock while the key file is
        written (a crash between the two leaves the file ahead, and the next open records
        them)."""
        if not isinstance(keyring, MasterKeyring):
            raise InvalidParameter("MasterKey", detail="a MasterKeyring is expected")
        with self._write_transaction() as connection:
            if self._check_keyring:
                _record_keyring_checks(
                    connection, keyring, source="the new keyring", where=self._database
                )
            if self._key_file is not None:
                try:
                    self._key_file.save(keyring)
                except OSError as error:
                    raise InternalError(
                        detail=f"cannot write the master key file {self._key_file.path}: "
                        f"{error.strerror}"
                    ) from error
        self._keyring = keyring

    @_fail_closed
    def get_key(self, access_key_id: str) -> KeyRecord | None:
        row = self._connection().execute(_SELECT_KEY_OR_DECOY, (access_key_id,)).fetchone()
        record = record_from_row(row[:-1], _owner_from_columns)
        return record if row[-1] else None

    @_fail_closed
    def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None:
        with self._write_transaction() as connection:
            exists = connection.execute(
                "SELECT 1 FROM aliak_keys WHERE access_key_id = ?", (record.access_key_id,)
            ).fetchone()
            if exists is not None:
                raise AccessKeyAlreadyExists(detail=record.access_key_id)
            lifecycle.check_owner_limit(
                record.owner,
                _owner_keys_in_recycle_bin(connection, record.owner),
                limit=max_keys_per_owner,
            )
            connection.execute(_INSERT_KEY, row_from_record(record, _owner_columns))
            _append_audit(connection, audit)
            self._changed(connection, [record.access_key_id])  # cached as unknown, maybe
        self._changes.deliver([record.access_key_id])

    @_fail_closed
    def list_keys(self, owner: Owner) -> list[KeyRecord]:
        rows = self._connection().execute(_SELECT_OWNER_KEYS, _owner_columns(owner)).fetchall()
        return [record_from_row(row, _owner_from_columns) for row in rows]

    @_fail_closed
    def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        value = KeyStatus(status).value
        with self._write_transaction() as connection:
            # A key in the recycle bin can only be restored or purged.
            changed = connection.execute(
                "UPDATE aliak_keys SET status = ? WHERE access_key_id = ? AND recycled_at IS NULL",
                (value, access_key_id),
            ).rowcount
            if changed != 1:
                raise AccessKeyNotFound(detail=access_key_id)
            _append_audit(connection, audit)
            self._changed(connection, [access_key_id])
            row = connection.execute(_SELECT_KEY, (access_key_id,)).fetchone()
        self._changes.deliver([access_key_id])
        return record_from_row(row, _owner_from_columns)

    @_fail_closed
    def recycle_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_in_recycle_bin: int,
        audit: AuditEvent | None = None,
    ) -> list[str]:
        with self._write_transaction() as connection:
            deleted = lifecycle.recycled(_key(connection, access_key_id), access_key_id, now=now)
            connection.execute(
                "UPDATE aliak_keys SET recycled_at = ? WHERE access_key_id = ?",
                (seconds(deleted.recycled_at), access_key_id),
            )
            _append_audit(connection, audit)
            # The write lock is held, so the bin cannot fill up behind this read.
            recycle_bin = connection.execute(
                _SELECT_OWNER_RECYCLE_BIN, _owner_columns(deleted.owner)
            ).fetchall()
            evicted = lifecycle.evictions(
                deleted,
                (record_from_row(row, _owner_from_columns) for row in recycle_bin),
                max_in_recycle_bin=max_in_recycle_bin,
            )
            for key_id in evicted:
                _destroy_key(connection, key_id)
                if audit is not None:
                    _append_audit(
                        connection, audit.purge_of(key_id, deleted.owner, lifecycle.EVICTED)
                    )
            self._changed(connection, [access_key_id, *evicted])
        self._changes.deliver([access_key_id, *evicted])
        return evicted

    @_fail_closed
    def restore_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_keys_per_owner: int,
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        with self._write_transaction() as connection:
            record = lifecycle.restorable(_key(connection, access_key_id), access_key_id, now=now)
            restored = lifecycle.restored(
                record,
                _owner_keys_in_recycle_bin(connection, record.owner),
                max_keys_per_owner=max_keys_per_owner,
            )
            connection.execute(
                "UPDATE aliak_keys SET recycled_at = ?, status = ? WHERE access_key_id = ?",
                (seconds(restored.recycled_at), restored.status.value, access_key_id),
            )
            _append_audit(connection, audit)
            self._changed(connection, [access_key_id])
        self._changes.deliver([access_key_id])
        return restored

    @_fail_closed
    def purge_key(
        self,
        access_key_id: str,
        *,
        only_if: Literal["in_recycle_bin", "inactive"],
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        condition = lifecycle.check_purge_condition(only_if)
        with self._write_transaction() as connection:
            record = lifecycle.check_purgeable(
                _key(connection, access_key_id), access_key_id, only_if=condition
            )
            _destroy_key(connection, access_key_id)
            _append_audit(connection, audit)
            self._changed(connection, [access_key_id])
        self._changes.deliver([access_key_id])
        return record

    @_fail_closed
    def purge_expired(self, *, now: datetime, audit: AuditEvent | None = None) -> list[str]:
        # The cut-off in this form lets the index on recycled_at find the candidates;
        # recycled_at is whole seconds and the cut-off may carry a fraction.
        cutoff = lifecycle.retention_cutoff(now).timestamp()
        with self._write_transaction() as connection:
            rows = connection.execute(
                f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
                "WHERE recycled_at IS NOT NULL AND recycled_at <= ? ORDER BY access_key_id",
                (cutoff,),
            ).fetchall()
            expired = lifecycle.expired(
                (record_from_row(row, _owner_from_columns) for row in rows), now
            )
            for record in expired:
                _destroy_key(connection, record.access_key_id)
                if audit is not None:
                    _append_audit(
                        connection,
                        audit.purge_of(record.access_key_id, record.owner, lifecycle.EXPIRED),
                    )
            purged = [record.access_key_id for record in expired]
            self._changed(connection, purged)
        self._changes.deliver(purged)
        return purged

    @_fail_closed
    def list_recycle_bin(self, owner: Owner) -> list[KeyRecord]:
        rows = (
            self._connection().execute(_SELECT_OWNER_RECYCLE_BIN, _owner_columns(owner)).fetchall()
        )
        return [record_from_row(row, _owner_from_columns) for row in rows]

    @_fail_closed
    def mark_leak_restricted(
        self, access_key_id: str, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        with self._write_transaction() as connection:
            changed = connection.execute(
                "UPDATE aliak_keys SET leak_restricted = 1 WHERE access_key_id = ?",
                (access_key_id,),
            ).rowcount
            if changed != 1:
                raise AccessKeyNotFound(detail=access_key_id)
            _append_audit(connection, audit)
            self._changed(connection, [access_key_id])
            row = connection.execute(_SELECT_KEY, (access_key_id,)).fetchone()
        self._changes.deliver([access_key_id])
        return record_from_row(row, _owner_from_columns)

    def iter_keys(self) -> Iterator[KeyRecord]:
        """Pages through the keys by id, so no read transaction stays open between pages
        while the caller works on them."""
        after = ""
        while True:
            page = self._keys_page(after)
            yield from page
            if len(page) < _KEYS_PAGE:
                return
            after = page[-1].access_key_id

    @_fail_closed
    def _keys_page(self, after: str) -> list[KeyRecord]:
        rows = self._connection().execute(_SELECT_KEYS_PAGE, (after, _KEYS_PAGE)).fetchall()
        return [record_from_row(row, _owner_from_columns) for row in rows]

    # -- roles (RoleStore): read when AssumeRole is called, never cached ---------------------

    @_fail_closed
    def get_role(self, account_id: str, name: str) -> RoleRecord | None:
        row = (
            self._connection()
            .execute(
                "SELECT document FROM aliak_roles WHERE account_id = ? AND name_key = ?",
                (account_id, name.lower()),
            )
            .fetchone()
        )
        return None if row is None else RoleRecord.from_json(row[0])

    @_fail_closed
    def list_roles(self, account_id: str) -> list[RoleRecord]:
        rows = (
            self._connection()
            .execute(
                "SELECT document FROM aliak_roles WHERE account_id = ? ORDER BY name_key",
                (account_id,),
            )
            .fetchall()
        )
        return [RoleRecord.from_json(row[0]) for row in rows]

    @_fail_closed
    def put_role(
        self, record: RoleRecord, *, create: bool, audit: AuditEvent | None = None
    ) -> bool:
        with self._write_transaction() as connection:
            if create:
                written = connection.execute(
                    "INSERT INTO aliak_roles (account_id, name_key, document) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING",
                    (record.account_id, record.key, record.to_json()),
                ).rowcount
            else:
                written = connection.execute(
                    "UPDATE aliak_roles SET document = ? WHERE account_id = ? AND name_key = ?",
                    (record.to_json(), record.account_id, record.key),
                ).rowcount
            if written == 1:
                _append_audit(connection, audit)
        return written == 1

    @_fail_closed
    def delete_role(self, account_id: str, name: str, *, audit: AuditEvent | None = None) -> bool:
        with self._write_transaction() as connection:
            deleted = connection.execute(
                "DELETE FROM aliak_roles WHERE account_id = ? AND name_key = ?",
                (account_id, name.lower()),
            ).rowcount
            if deleted == 1:
                _append_audit(connection, audit)
        return deleted == 1

    @_fail_closed
    def get_setting(self, name: str) -> str | None:
        row = (
            self._connection()
            .execute("SELECT value FROM aliak_settings WHERE name = ?", (name,))
            .fetchone()
        )
        return None if row is None else str(row[0])

    @_fail_closed
    def set_setting(self, name: str, value: str, *, audit: AuditEvent | None = None) -> None:
        with self._write_transaction() as connection:
            connection.execute(
                "INSERT INTO aliak_settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
            _append_audit(connection, audit)
            self._changed(connection, [None])
        self._changes.deliver([None])

    @_fail_closed
    def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        # Compare-and-set in one statement: a concurrent change makes it a no-op.
        with self._write_transaction() as connection:
            replaced = (
                connection.execute(
                    "UPDATE aliak_keys SET sealed_secret = ? "
                    "WHERE access_key_id = ? AND sealed_secret = ?",
                    (new, access_key_id, old),
                ).rowcount
                == 1
            )
            if replaced:
                self._changed(connection, [access_key_id])
        if replaced:
            self._changes.deliver([access_key_id])
        return replaced

    def iter_sealed_secrets(self) -> Iterator[tuple[str, bytes]]:
        """Pages through the keys by id, so no read transaction stays open between pages
        while the caller re-seals."""
        after = ""
        while True:
            page = self._sealed_secrets_page(after)
            yield from page
            if len(page) < _SECRETS_PAGE:
                return
            after = page[-1][0]

    @_fail_closed
    def _sealed_secrets_page(self, after: str) -> list[tuple[str, bytes]]:
        rows = (
            self._connection()
            .execute(
                "SELECT access_key_id, sealed_secret FROM aliak_keys "
                "WHERE access_key_id > ? AND sealed_secret IS NOT NULL "
                "ORDER BY access_key_id LIMIT ?",
                (after, _SECRETS_PAGE),
            )
            .fetchall()
        )
        return [(key_id, bytes(sealed)) for key_id, sealed in rows]

    # -- NonceStore -------------------------------------------------------------------

    @_fail_closed
    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        connection = self._connection()
        claim = _claim(access_key_id, nonce, now, expires_at)
        claimed = connection.execute(_CLAIM_NONCE, claim).rowcount == 1
        if self._prune_every is None:
            self._prune_before = now  # the housekeeper prunes by it
        elif self._prune_every and next(self._claims) % self._prune_every == 0:
            # Housekeeping only: the claim above already stands, and a prune that fails
            # (another writer holds the lock) is simply retried after the next batch.
            with contextlib.suppress(sqlite3.Error):
                self._prune(now)
        return claimed

    def claim_nonce_without_waiting(
        self, access_key_id: str, nonce: str, *, now: float, expires_at: float
    ) -> bool | None:
        """:meth:`claim_nonce`, or ``None`` at once where it would have to wait: another
        writer holds the lock (or, in memory, another thread the connection). For an
        event loop: the claim itself is one statement that writes one page into the log
        without an fsync (``synchronous = NORMAL``), so running it on the loop's thread
        costs less than the hop to a worker thread; only a wait would block the loop,
        and a ``None`` sends the caller to the worker thread for that. Errors other than
        busy fail closed as :meth:`claim_nonce`'s do."""
        claim = _claim(access_key_id, nonce, now, expires_at)
        try:
            lock = self._memory_lock
            if lock is None:
                connection = self._eager_connection()
                claimed = connection.execute(_CLAIM_NONCE, claim).rowcount == 1
            elif lock.acquire(blocking=False):
                try:
                    connection = self._connection()
                    claimed = connection.execute(_CLAIM_NONCE, claim).rowcount == 1
                finally:
                    lock.release()
            else:
                return None
        except sqlite3.OperationalError as error:
            if _is_busy(error):
                return None
            raise InternalError(detail=f"SQLite store: {error}") from error
        except sqlite3.Error as error:
            raise InternalError(detail=f"SQLite store: {error}") from error
        if self._prune_every is None:
            self._prune_before = now  # the housekeeper prunes by it
        elif self._prune_every and next(self._claims) % self._prune_every == 0 and lock is None:
            # As in claim_nonce, but never waiting: a busy store skips this prune, and
            # the next one catches up (an in-memory store prunes on its worker claims).
            with contextlib.suppress(sqlite3.Error):
                self._prune_on(connection, now)
        return claimed

    @_fail_closed
    def prune_nonces(self, now: float) -> int:
        return self._prune(now)

    def _prune(self, now: float) -> int:
        return self._prune_on(self._connection(), now)

    def _prune_on(self, connection: sqlite3.Connection, now: float) -> int:
        """Exactly the claims expired by ``now``, and the eras that leaves empty, in one
        transaction on ``connection`` (a thread's own, so in no transaction between
        calls)."""
        window = {"live": _era(now), "now": now}
        connection.execute("BEGIN IMMEDIATE")
        try:
            pruned = connection.execute(_PRUNE_NONCES, window).rowcount
            connection.execute(_FORGET_EMPTY_ERAS, window)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return pruned

    # -- PolicyStore ------------------------------------------------------------------

    @_fail_closed
    def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        row = (
            self._connection()
            .execute(
                "SELECT policy FROM aliak_network_policies WHERE level = ? AND target_id = ?",
                (target.level, target.id),
            )
            .fetchone()
        )
        return None if row is None else _policy_from_json(row[0])

    @_fail_closed
    def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None:
        with self._write_transaction() as connection:
            if policy is None:
                connection.execute(
                    "DELETE FROM aliak_network_policies WHERE level = ? AND target_id = ?",
                    (target.level, target.id),
                )
            else:
                connection.execute(
                    "INSERT INTO aliak_network_policies (level, target_id, policy) "
                    "VALUES (?, ?, ?) "
                    "ON CONFLICT (level, target_id) DO UPDATE SET policy = excluded.policy",
                    (
                        target.level,
                        target.id,
                        json.dumps(policy.to_dict(), separators=(",", ":")),
                    ),
                )
            _append_audit(connection, audit)
            subject = target.id if target.level == "key" else None
            self._changed(connection, [subject])
        self._changes.deliver([subject])

    # -- UsageLog ---------------------------------------------------------------------

    @_fail_closed
    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        latest, source_ips = coalesce_usage(records)
        with self._write_transaction() as connection:
            _merge_last_used(connection, latest)
            _merge_source_ips(connection, source_ips)
            _trim_source_ips(connection, {key_id for key_id, _ in source_ips}, self._max_source_ips)

    @_fail_closed
    def get_last_used(self, access_key_id: str) -> LastUsed | None:
        row = (
            self._connection()
            .execute(
                "SELECT last_used_at, last_used_service FROM aliak_keys "
                "WHERE access_key_id = ? AND last_used_at IS NOT NULL",
                (access_key_id,),
            )
            .fetchone()
        )
        return None if row is None else LastUsed(utc_from_timestamp(row[0]), row[1])

    @_fail_closed
    def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]:
        floor = float("-inf") if since is None else since.timestamp()
        rows = (
            self._connection()
            .execute(
                "SELECT source_ip, first_seen, last_seen FROM aliak_key_source_ips "
                "WHERE access_key_id = ? AND last_seen >= ? "
                "ORDER BY last_seen DESC, source_ip",
                (access_key_id, floor),
            )
            .fetchall()
        )
        return [
            SourceIpUse(ip, utc_from_timestamp(first), utc_from_timestamp(last))
            for ip, first, last in rows
        ]

    # -- AuditLog ---------------------------------------------------------------------

    @_fail_closed
    def append_audit_event(self, event: AuditEvent) -> None:
        self._connection().execute(_INSERT_AUDIT, row_from_event(event))

    @_fail_closed
    def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        # Only constant fragments are joined into the query; every value is bound.
        conditions: list[str] = []
        values: list[object] = []
        if access_key_id is not None:
            conditions.append("access_key_id = ?")
            values.append(access_key_id)
        if owner is not None:
            conditions.append("account_id = ? AND user_name IS ?")
            values.extend(_owner_columns(owner))
        if since is not None:
            conditions.append("at >= ?")  # at is whole seconds; since may carry a fraction
            values.append(since.timestamp())
        where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
        values.append(max(0, limit))
        rows = (
            self._connection()
            .execute(
                f"SELECT {_AUDIT_COLUMNS} FROM aliak_audit {where}"  # noqa: S608
                "ORDER BY at, seq LIMIT ?",
                values,
            )
            .fetchall()
        )
        return [event_from_row(row) for row in rows]

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close this process's connections. Idempotent; the store is unusable after."""
        self._closed = True
        pid = os.getpid()
        housekeeper, self._housekeeper = self._housekeeper, None
        if housekeeper is not None and housekeeper.pid == pid:
            housekeeper.stop()
        self._shared = None
        for connection, opened_by in list(self._open.items()):
            # The pop decides who closes (see _release): a finaliser may race us here.
            if opened_by == pid and self._open.pop(connection, None) is not None:
                with contextlib.suppress(sqlite3.Error):
                    connection.close()

    def as_async(self) -> AsyncStoreAdapter:
        """The async face; each call runs in a worker thread, so disk waits never block
        the event loop."""
        return AsyncStoreAdapter(self, offload=True)


class _Housekeeper:
    """The store's background work in one process: pruning expired nonces (when
    ``prune_every`` is ``None``) and checkpointing the write-ahead log, so that neither
    runs inside a request. A daemon thread that holds the store only weakly (a store
    dropped without close() lets it end) and its own connection; every process sharing
    the file may run one, since both jobs are safe to repeat and to race: a prune deletes
    only expired rows, and SQLite serialises checkpoints. A failure (a busy lock, a full
    disk) is skipped and tried again on the next tick: the requests' own writes stand."""

    __slots__ = ("_stopping", "_thread", "pid")

    def __init__(self, store: SQLiteStore) -> None:
        self.pid = os.getpid()
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=_housekeeping,
            args=(weakref.ref(store), self._stopping),
            name=f"aliak-sqlite-housekeeper-{id(store):x}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)


def _housekeeping(store_ref: weakref.ReferenceType[SQLiteStore], stopping: threading.Event) -> None:
    connection: sqlite3.Connection | None = None
    last_prune = time.monotonic()
    try:
        while not stopping.wait(_CHECKPOINT_INTERVAL):
            store = store_ref()
            if store is None or store._closed:
                return
            try:
                if connection is None and not store._in_memory:
                    connection = store._housekeeping_connection()
                working = connection if connection is not None else store._shared
                if working is None:
                    return
                if store._prune_every is None and time.monotonic() - last_prune >= _PRUNE_INTERVAL:
                    last_prune = time.monotonic()
                    store._prune_in_batches(working, stopping)
                if connection is not None:
                    store._checkpoint(connection)
            except (sqlite3.Error, OSError) as error:
                _log.debug("aliak: SQLite housekeeping skipped a tick: %s", error)
            finally:
                del store
    finally:
        if connection is not None:
            with contextlib.suppress(sqlite3.Error):
                connection.close()


# -- opening helpers ------------------------------------------------------------------


def _era(seconds: float) -> int:
    """The era of a UNIX time: the Python twin of ``_ERA_OF_EXPIRES_AT``."""
    quotient = seconds / float(_ERA_SECONDS)
    if quotient >= _ERA_LIMIT:
        return _ERA_LIMIT
    if quotient > -_ERA_LIMIT:
        return math.floor(quotient)
    return -_ERA_LIMIT


def _check_options(busy_timeout: object, prune_every: object, wal_size_limit: object) -> None:
    if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
        raise InvalidParameter("busy_timeout", detail="seconds, a number >= 0")
    if not busy_timeout >= 0:
        raise InvalidParameter("busy_timeout", detail="seconds, a number >= 0")
    if prune_every is not None and (
        isinstance(prune_every, bool) or not isinstance(prune_every, int) or prune_every < 0
    ):
        raise InvalidParameter(
            "prune_every", detail="None (in the background) or a whole number of claims >= 0"
        )
    if isinstance(wal_size_limit, bool) or not isinstance(wal_size_limit, int):
        raise InvalidParameter("wal_size_limit", detail="bytes, a whole number > 0")
    if wal_size_limit <= 0:
        raise InvalidParameter("wal_size_limit", detail="bytes, a whole number > 0")


def _opening_failure(database: str, error: sqlite3.Error) -> AliakError:
    """What opening (or adopting a keyring) says of an engine error: a lock held past
    the busy timeout, or a file that is not a usable database."""
    if isinstance(error, sqlite3.OperationalError) and _is_busy(error):
        return InternalError(detail=f"{database} stayed locked beyond busy_timeout: {error}")
    return _unusable_database(database, error)


def _database_name(path: str | os.PathLike[str]) -> str:
    try:
        name = os.fspath(path)
    except TypeError:
        raise InvalidParameter("db", detail="a file path or ':memory:' is expected") from None
    if not isinstance(name, str) or not name:
        raise InvalidParameter("db", detail="a file path or ':memory:' is expected")
    return name


def _check_directory(path: Path) -> None:
    directory = path.absolute().parent
    if not directory.is_dir():
        raise InvalidParameter("db", detail=f"the directory {directory} does not exist")
    # WAL mode creates -wal and -shm files beside the database.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InvalidParameter("db", detail=f"the directory {directory} is not writable")
    if path.is_dir():
        raise InvalidParameter("db", detail=f"{path} is a directory")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise InvalidParameter("db", detail=f"{path} is not readable and writable")


_PRIVATE_MODE: Final = 0o600
# The files SQLite keeps beside a database: WAL mode's log and shared-memory index, and
# the rollback journal it uses while switching a new file to WAL.
_SIDE_FILE_SUFFIXES: Final = ("-wal", "-shm", "-journal")


def _make_private(database: str) -> None:
    """Create the database file 0600 if absent (SQLite then gives its side files the same
    bits), and tighten an existing one and its side files that others may access."""
    try:
        descriptor = os.open(database, os.O_RDWR | os.O_CREAT | os.O_EXCL, _PRIVATE_MODE)
    except FileExistsError:
        pass  # there already (or another process just made it): checked below
    except OSError as error:
        raise InvalidParameter(
            "db", detail=f"cannot create {database}: {error.strerror}"
        ) from error
    else:
        try:
            os.fchmod(descriptor, _PRIVATE_MODE)  # the umask may have taken owner bits too
        finally:
            os.close(descriptor)
    for name in (database, *(database + suffix for suffix in _SIDE_FILE_SUFFIXES)):
        _tighten(name)


def _tighten(name: str) -> None:
    try:
        mode = stat.S_IMODE(os.stat(name).st_mode)
    except FileNotFoundError:
        return
    except OSError as error:
        raise InvalidParameter("db", detail=f"cannot inspect {name}: {error.strerror}") from error
    if not mode & 0o077:
        return
    private = mode & 0o700
    try:
        os.chmod(name, private)
    except OSError as error:
        raise InvalidParameter(
            "db",
            detail=f"{name} is accessible to group or others (mode {mode:04o}) and cannot be "
            f"made private ({error.strerror}); chmod 600 it",
        ) from error
    _log.warning(
        "%s was accessible to group or others (mode %04o); made private (mode %04o)",
        name,
        mode,
        private,
    )


def _enable_wal(connection: sqlite3.Connection, database: str, busy_timeout: float) -> None:
    # Switching a new file to WAL takes an exclusive lock, and SQLite answers "locked" at
    # once instead of calling the busy handler; so when several processes open a new file
    # together, wait here as busy_timeout promises.
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.OperationalError as error:
            if not _is_busy(error) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    if str(mode).lower() != "wal":
        raise InvalidParameter(
            "db", detail=f"{database} cannot use WAL journal mode (it stays {mode!r})"
        )


def _claim(access_key_id: str, nonce: str, now: float, expires_at: float) -> dict[str, object]:
    """The parameters of :data:`_CLAIM_NONCE`."""
    return {
        "era": _era(expires_at),
        "key": access_key_id,
        "nonce": nonce,
        "expires_at": expires_at,
        "live": _era(now),
        "now": now,
    }


def _schema_version(connection: sqlite3.Connection) -> int:
    table = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'aliak_schema'"
    ).fetchone()
    if table is None:
        return 0
    row = connection.execute("SELECT version FROM aliak_schema WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def _refuse_newer(version: int, database: str) -> None:
    if version > SCHEMA_VERSION:
        raise InvalidParameter(
            "db",
            detail=f"{database} has schema version {version}, newer than the {SCHEMA_VERSION} "
            "this aliak knows; upgrade aliak to use it",
        )


def _is_busy(error: sqlite3.OperationalError) -> bool:
    text = str(error).lower()
    return "locked" in text or "busy" in text


def _unusable_database(database: str, error: sqlite3.Error) -> InvalidParameter:
    return InvalidParameter("db", detail=f"cannot use {database} as an aliak database: {error}")


def _record_keyring_checks(
    connection: sqlite3.Connection, keyring: MasterKeyring, *, source: str, where: str
) -> None:
    """Inside a write transaction: refuse ``keyring`` unless it matches the store's check
    values, and record those of its versions the store has none for."""
    rows = connection.execute(
        "SELECT name, value FROM aliak_settings WHERE name >= ? AND name < ?",
        check_setting_range(),
    ).fetchall()
    recorded = recorded_checks(rows)
    samples: list[tuple[str, bytes]] = []
    if not recorded:
        sealed = connection.execute(
            "SELECT access_key_id, sealed_secret FROM aliak_keys "
            "WHERE sealed_secret IS NOT NULL ORDER BY access_key_id LIMIT ?",
            (CHECK_SAMPLE_SIZE,),
        ).fetchall()
        samples = [(key_id, bytes(value)) for key_id, value in sealed]
    new = keyring_checks_to_record(
        keyring, recorded, source=source, where=where, sealed_samples=samples
    )
    connection.executemany(
        "INSERT INTO aliak_settings (name, value) VALUES (?, ?)", sorted(new.items())
    )


# -- row mapping ----------------------------------------------------------------------


def _owner_columns(owner: Owner) -> tuple[str, str | None]:
    if isinstance(owner, RamUser):
        return owner.account_id, owner.name
    return owner.account_id, None


def _owner_from_columns(account_id: str, user_name: str | None) -> Owner:
    return Account(account_id) if user_name is None else RamUser(account_id, user_name)


def _policy_from_json(text: str) -> NetworkPolicy:
    try:
        return NetworkPolicy.from_dict(json.loads(text))
    except (AliakError, ValueError, TypeError) as error:
        raise InternalError(detail="a stored network policy is corrupt") from error


# -- the key lifecycle ------------------------------------------------------------------


def _key(connection: sqlite3.Connection, access_key_id: str) -> KeyRecord | None:
    row = connection.execute(_SELECT_KEY, (access_key_id,)).fetchone()
    return None if row is None else record_from_row(row, _owner_from_columns)


def _owner_keys_in_recycle_bin(connection: sqlite3.Connection, owner: Owner) -> list[bool]:
    rows = connection.execute(_OWNER_KEYS_IN_RECYCLE_BIN, _owner_columns(owner)).fetchall()
    return [bool(binned) for (binned,) in rows]


def _destroy_key(connection: sqlite3.Connection, access_key_id: str) -> None:
    """Purged means gone: the row (sealed secret and last use with it), the source-IP
    history and the key-level policy. The history also cascades; deleting it here as well
    keeps that true on a connection that left foreign keys off."""
    connection.execute("DELETE FROM aliak_key_source_ips WHERE access_key_id = ?", (access_key_id,))
    connection.execute(
        "DELETE FROM aliak_network_policies WHERE level = 'key' AND target_id = ?",
        (access_key_id,),
    )
    connection.execute("DELETE FROM aliak_keys WHERE access_key_id = ?", (access_key_id,))


def _append_audit(connection: sqlite3.Connection, event: AuditEvent | None) -> None:
    if event is not None:
        connection.execute(_INSERT_AUDIT, row_from_event(event))


# -- usage merging --------------------------------------------------------------------


def _merge_last_used(connection: sqlite3.Connection, latest: LatestUse) -> None:
    connection.executemany(
        _MERGE_LAST_USED,
        [(used_at, service, key_id) for key_id, (used_at, service) in latest.items()],
    )


def _merge_source_ips(connection: sqlite3.Connection, spans: SourceIpSpans) -> None:
    connection.executemany(
        _MERGE_SOURCE_IP,
        [(key_id, ip, first, last) for (key_id, ip), (first, last) in spans.items()],
    )


def _trim_source_ips(connection: sqlite3.Connection, key_ids: set[str], limit: int) -> None:
    connection.executemany(_TRIM_SOURCE_IPS, [(key_id, limit) for key_id in sorted(key_ids)])
