"""A fleet's store: every port in one PostgreSQL schema, shared by many servers.

Install with ``pip install aliak[postgres]`` (psycopg 3 and psycopg-pool).

Concurrency comes from the database, never from this process: every multi-statement
change runs in one transaction together with its audit event(s); where two servers could
race, the rows (or the owner) are locked inside that transaction before anything is
checked. An owner's key count is guarded by a transaction-scoped advisory lock per owner
(so even an owner with no row yet serialises), taken *before* any row lock; rows are
then locked ``FOR UPDATE`` (several at once always in id order), so the lifecycle verbs,
usage batches and ``purge_expired`` cannot deadlock each other. Ids are a primary key. The
replay guard is one ``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE`` statement. The
audit trail is append-only: this code never updates or deletes an event, and a trigger
makes the server refuse it from anyone else.

Failures fail closed. A server that cannot be reached, is restarting, or leaves the
pool without a connection for ``connect_timeout`` seconds raises
:class:`~aliak.errors.ServiceUnavailable` (503); any other database error raises
:class:`~aliak.errors.InternalError`; both are chained from the psycopg error, which never
escapes. Recovery needs nothing from the caller: a connection is checked when it leaves
the pool (a free, non-blocking look at its socket; a round trip only when the server has
said something, such as goodbye) and a dead one is replaced at once; the pool retries a
lost connection in the background for ``connect_timeout`` seconds only, after which each
call that finds the pool empty makes it connect right away, so the first call after the
server is back succeeds instead of waiting out a growing backoff; and a *read* that still
meets a dropped connection is retried once on a fresh one. A write is never retried
after a lost connection, since whether it committed is unknown; a transaction the server
itself rolled back (deadlock, serialisation failure) is retried, as nothing of it was
written.

Times are whole UNIX seconds (``bigint``), as in the SQLite store; nonce expiry is
``double precision``, so a claim is never forgotten early. Identifiers are compared
byte-wise (``COLLATE "C"``), so orderings match the other backends whatever the
database's locale.

Opening (``PostgresStore(...)``) connects once to check the server and bring the schema
to this version (or refuse), then opens the pool and waits for ``min_size`` connections;
a wrong DSN therefore fails at startup, naming host and port, never the password.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import itertools
import logging
import math
import os
import re
import select
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from datetime import datetime
from typing import Any, Final, Literal, TypeAlias, TypeGuard, TypeVar

import attrs
import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.json import Jsonb
from psycopg_pool import (
    AsyncConnectionPool,
    ConnectionPool,
    PoolClosed,
    PoolTimeout,
    TooManyRequests,
)

from aliak.acl import NetworkPolicy
from aliak.errors import (
    AccessKeyAlreadyExists,
    AccessKeyNotFound,
    AliakError,
    InternalError,
    InvalidParameter,
    ServiceUnavailable,
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
    MasterKeyring,
    check_setting_range,
    keyring_checks_to_record,
    locate_master_keyring,
    recorded_checks,
)
from aliak.storage import lifecycle
from aliak.storage.invalidation import LocalInvalidation, subjects
from aliak.storage.protocols import InvalidationChannel, PolicyTarget
from aliak.storage.rows import (
    coalesce_usage,
    event_from_row,
    record_from_row,
    record_or_decoy,
    row_from_event,
    row_from_record,
    seconds,
)

__all__ = ["SCHEMA_VERSION", "AsyncPostgresStore", "PostgresStore"]

_MINIMUM_SERVER: Final = 110000  # PostgreSQL 11: EXECUTE FUNCTION in triggers

# Each step moves the schema up one version and runs in its own transaction, under an
# advisory lock, so fleet members starting together migrate once. Append new steps;
# never edit a released one (databases in the field already ran it). Objects are created
# in the store's schema (the first and only entry of search_path).
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        # user_name is '' for the account's own (root) key: RAM user names are never
        # empty, and a plain column keeps the owner index and equality simple.
        # Times are UNIX seconds.
        """CREATE TABLE aliak_keys (
            access_key_id text COLLATE "C" PRIMARY KEY,
            account_id text COLLATE "C" NOT NULL,
            user_name text COLLATE "C" NOT NULL,
            status text NOT NULL CHECK (status IN ('Active', 'Inactive')),
            created_at bigint NOT NULL,
            algorithm text NOT NULL CHECK (algorithm IN ('HMAC', 'RSA')),
            sealed_secret bytea,
            public_key text,
            recycled_at bigint,
            leak_restricted boolean NOT NULL DEFAULT false,
            last_used_at bigint,
            last_used_service text COLLATE "C"
        )""",
        """CREATE INDEX aliak_keys_by_owner
            ON aliak_keys (account_id, user_name, created_at, access_key_id)""",
        # expires_at is double precision: truncating it would forget a claim early.
        """CREATE TABLE aliak_nonces (
            access_key_id text COLLATE "C" NOT NULL,
            nonce text COLLATE "C" NOT NULL,
            expires_at double precision NOT NULL,
            PRIMARY KEY (access_key_id, nonce)
        )""",
        "CREATE INDEX aliak_nonces_by_expiry ON aliak_nonces (expires_at)",
        """CREATE TABLE aliak_network_policies (
            level text NOT NULL CHECK (level IN ('account', 'key')),
            target_id text COLLATE "C" NOT NULL,
            policy jsonb NOT NULL,
            PRIMARY KEY (level, target_id)
        )""",
        """CREATE TABLE aliak_key_source_ips (
            access_key_id text COLLATE "C" NOT NULL
                REFERENCES aliak_keys (access_key_id) ON DELETE CASCADE,
            source_ip text COLLATE "C" NOT NULL,
            first_seen bigint NOT NULL,
            last_seen bigint NOT NULL,
            PRIMARY KEY (access_key_id, source_ip)
        )""",
    ),
    # 2: the key lifecycle (recycle bin lookups), store-wide settings, the audit trail.
    (
        """CREATE INDEX aliak_keys_in_recycle_bin
            ON aliak_keys (account_id, user_name, recycled_at, access_key_id)
            WHERE recycled_at IS NOT NULL""",
        """CREATE INDEX aliak_keys_by_recycled_at
            ON aliak_keys (recycled_at) WHERE recycled_at IS NOT NULL""",
        """CREATE TABLE aliak_settings (
            name text COLLATE "C" PRIMARY KEY,
            value text NOT NULL
        )""",
        # seq keeps append order among events of the same second.
        """CREATE TABLE aliak_audit (
            seq bigserial PRIMARY KEY,
            at bigint NOT NULL,
            actor text NOT NULL,
            action text NOT NULL,
            access_key_id text COLLATE "C",
            account_id text COLLATE "C",
            user_name text COLLATE "C",
            detail text NOT NULL
        )""",
        "CREATE INDEX aliak_audit_by_time ON aliak_audit (at, seq)",
        "CREATE INDEX aliak_audit_by_key ON aliak_audit (access_key_id, at)",
        "CREATE INDEX aliak_audit_by_owner ON aliak_audit (account_id, user_name, at)",
        # Append-only, enforced by the server too: this code never updates or deletes an
        # event, and neither can anything else that writes through SQL.
        """CREATE FUNCTION aliak_audit_is_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'the aliak audit trail is append-only'
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$""",
        """CREATE TRIGGER aliak_audit_no_change BEFORE UPDATE OR DELETE ON aliak_audit
            FOR EACH ROW EXECUTE FUNCTION aliak_audit_is_append_only()""",
        """CREATE TRIGGER aliak_audit_no_truncate BEFORE TRUNCATE ON aliak_audit
            FOR EACH STATEMENT EXECUTE FUNCTION aliak_audit_is_append_only()""",
    ),
    # 3: RAM roles and their trust (aliak.roles), one JSON document per role, keyed by
    # account and the name in lower case (RAM role names are unique regardless of case).
    (
        """CREATE TABLE aliak_roles (
            account_id text COLLATE "C" NOT NULL,
            name_key text COLLATE "C" NOT NULL,
            document text NOT NULL,
            PRIMARY KEY (account_id, name_key)
        )""",
    ),
)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
_VERSION_TABLE: Final = "aliak_schema_migrations"

_KEY_COLUMNS: Final = (
    "access_key_id, account_id, user_name, status, created_at, algorithm, sealed_secret, "
    "public_key, recycled_at, leak_restricted, last_used_at, last_used_service"
)
# The f-strings below only splice in constant column lists; values are always bound.
_SELECT_KEY: Final = f"SELECT {_KEY_COLUMNS} FROM aliak_keys WHERE access_key_id = %s"  # noqa: S608
_SELECT_KEY_FOR_UPDATE: Final = f"{_SELECT_KEY} FOR UPDATE"
_SELECT_OWNER_KEYS: Final = (
    f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
    "WHERE account_id = %s AND user_name = %s AND recycled_at IS NULL "
    "ORDER BY created_at, access_key_id"
)
_SELECT_OWNER_RECYCLE_BIN: Final = (
    f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
    "WHERE account_id = %s AND user_name = %s AND recycled_at IS NOT NULL "
    "ORDER BY recycled_at, access_key_id"
)
_SELECT_KEYS_PAGE: Final = (
    f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
    "WHERE access_key_id > %s ORDER BY access_key_id LIMIT %s"
)
_SELECT_OWNER_OF: Final = "SELECT account_id, user_name FROM aliak_keys WHERE access_key_id = %s"
_OWNER_KEYS_IN_RECYCLE_BIN: Final = (
    "SELECT recycled_at IS NOT NULL FROM aliak_keys WHERE account_id = %s AND user_name = %s"
)
_INSERT_KEY: Final = (
    f"INSERT INTO aliak_keys ({_KEY_COLUMNS}) "  # noqa: S608
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
_LOCK_OWNER: Final = "SELECT pg_advisory_xact_lock(%s)"
# The key to recycle and its owner's recycle bin, locked together in id order.
_LOCK_KEY_AND_BIN: Final = (
    f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
    "WHERE access_key_id = %(id)s OR (account_id = %(account)s AND user_name = %(user)s "
    "AND recycled_at IS NOT NULL) ORDER BY access_key_id FOR UPDATE"
)
_LOCK_EXPIRED: Final = (
    f"SELECT {_KEY_COLUMNS} FROM aliak_keys "  # noqa: S608
    "WHERE recycled_at IS NOT NULL AND recycled_at <= %s ORDER BY access_key_id FOR UPDATE"
)
# Replay guard (spec §5): add-if-absent in one statement; an expired claim is taken over.
_CLAIM_NONCE: Final = (
    "INSERT INTO aliak_nonces (access_key_id, nonce, expires_at) "
    "VALUES (%(key)s, %(nonce)s, %(expires)s) "
    "ON CONFLICT (access_key_id, nonce) DO UPDATE SET expires_at = EXCLUDED.expires_at "
    "WHERE aliak_nonces.expires_at <= %(now)s"
)
_PRUNE_NONCES: Final = "DELETE FROM aliak_nonces WHERE expires_at <= %s"
# A usage batch locks the keys it touches, in id order, so none is purged half-way and
# the locks never cross those of the lifecycle verbs.
_LOCK_USED_KEYS: Final = (
    "SELECT access_key_id FROM aliak_keys WHERE access_key_id = ANY(%s) "
    "ORDER BY access_key_id FOR NO KEY UPDATE"
)
# Latest use wins; an exact tie in time goes to the greater service name, so the result
# does not depend on the order in which batches arrive.
_MERGE_LAST_USED: Final = (
    "UPDATE aliak_keys SET last_used_at = %(at)s, last_used_service = %(service)s "
    "WHERE access_key_id = %(id)s AND (last_used_at IS NULL OR last_used_at < %(at)s "
    "OR (last_used_at = %(at)s AND last_used_service < %(service)s))"
)
_MERGE_SOURCE_IP: Final = (
    "INSERT INTO aliak_key_source_ips (access_key_id, source_ip, first_seen, last_seen) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (access_key_id, source_ip) DO UPDATE SET "
    "first_seen = LEAST(aliak_key_source_ips.first_seen, EXCLUDED.first_seen), "
    "last_seen = GREATEST(aliak_key_source_ips.last_seen, EXCLUDED.last_seen)"
)
# The bound on a key's history (lifecycle.source_ips_to_forget, said in SQL): all but the
# most recently seen addresses go. The batch holds the key's row lock, so two batches of
# one key trim one after the other.
_TRIM_SOURCE_IPS: Final = (
    "DELETE FROM aliak_key_source_ips WHERE access_key_id = %(id)s AND source_ip IN "
    "(SELECT source_ip FROM aliak_key_source_ips WHERE access_key_id = %(id)s "
    "ORDER BY last_seen DESC, source_ip OFFSET %(keep)s)"
)
_AUDIT_COLUMNS: Final = "at, actor, action, access_key_id, account_id, user_name, detail"
_INSERT_AUDIT: Final = (
    f"INSERT INTO aliak_audit ({_AUDIT_COLUMNS}) "  # noqa: S608
    "VALUES (%s, %s, %s, %s, %s, %s, %s)"
)
# Announcing a change (LISTEN/NOTIFY): one notification per changed key id, "*" for
# anything, sent inside the changing transaction, so it is delivered iff that commits.
_NOTIFY: Final = "SELECT pg_notify(%s, %s)"
_EVERYTHING: Final = "*"
_LISTEN_WAIT: Final = 0.2  # seconds the listener waits for a notification between checks
_LISTEN_PING: Final = 10.0  # seconds between the listener's checks of a quiet connection
_SECRETS_PAGE: Final = 500
_KEYS_PAGE: Final = 500
_EARLIEST: Final = -(2**63)
# Deadlock and serialisation failures: the server rolled the transaction back, so
# nothing of it was written and running it again is safe.
_ROLLED_BACK: Final = frozenset({"40001", "40P01"})
_TRANSACTION_TRIES: Final = 3
# Shutting down, crashed, still starting up; class 08 is the connection itself and
# class 53 the server's resources (too many connections, disk full, out of memory).
_UNAVAILABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03"})
_is_schema_name = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}").fullmatch

_T = TypeVar("_T")
_log = logging.getLogger("aliak")


# -- statements and their answers (the sans-I/O operations) ---------------------------


# What a cursor executes (psycopg 3.3 adds template strings, which this module never uses).
_Statement: TypeAlias = "str | bytes | sql.SQL | sql.Composed"


@attrs.frozen
class _Query:
    """One statement an operation wants run: with ``params``, or once per ``many``."""

    sql: _Statement
    params: Params | None = None
    many: Sequence[Params] | None = None


@attrs.frozen
class _Answer:
    rows: list[tuple[Any, ...]]
    rowcount: int

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None


# An operation is a generator: it yields the statements it needs and receives their
# answers (or, thrown in, the psycopg error of one). The sync and the async store drive
# the same operations, so both run the same SQL with the same checks.
_Op: TypeAlias = Generator[_Query, _Answer, _T]


def _op_get_key(access_key_id: str) -> _Op[KeyRecord | None]:
    answer = yield _Query(_SELECT_KEY, (access_key_id,))
    return record_or_decoy(answer.first(), _owner_from_columns)


def _op_add_key(
    locks: str, record: KeyRecord, max_keys_per_owner: int, audit: AuditEvent | None
) -> _Op[None]:
    owner = _owner_columns(record.owner)
    yield _lock_owner(locks, owner)
    exists = yield _Query(
        "SELECT 1 FROM aliak_keys WHERE access_key_id = %s", (record.access_key_id,)
    )
    if exists.rows:
        raise AccessKeyAlreadyExists(detail=record.access_key_id)
    in_recycle_bin = yield from _owner_keys_in_recycle_bin(owner)
    lifecycle.check_owner_limit(record.owner, in_recycle_bin, limit=max_keys_per_owner)
    try:
        yield _Query(_INSERT_KEY, row_from_record(record, _owner_columns))
    except psycopg.errors.UniqueViolation:
        # Another owner's add of the same id committed first.
        raise AccessKeyAlreadyExists(detail=record.access_key_id) from None
    yield from _append_audit(audit)


def _op_list(query: str, owner: Owner) -> _Op[list[KeyRecord]]:
    answer = yield _Query(query, _owner_columns(owner))
    return [record_from_row(row, _owner_from_columns) for row in answer.rows]


def _op_set_key_status(
    access_key_id: str, status: KeyStatus, audit: AuditEvent | None
) -> _Op[KeyRecord]:
    # A key in the recycle bin can only be restored or purged.
    answer = yield _Query(
        f"UPDATE aliak_keys SET status = %s "  # noqa: S608
        f"WHERE access_key_id = %s AND recycled_at IS NULL RETURNING {_KEY_COLUMNS}",
        (KeyStatus(status).value, access_key_id),
    )
    row = answer.first()
    if row is None:
        raise AccessKeyNotFound(detail=access_key_id)
    yield from _append_audit(audit)
    return record_from_row(row, _owner_from_columns)


def _op_mark_leak_restricted(access_key_id: str, audit: AuditEvent | None) -> _Op[KeyRecord]:
    answer = yield _Query(
        "UPDATE aliak_keys SET leak_restricted = true WHERE access_key_id = %s "  # noqa: S608
        f"RETURNING {_KEY_COLUMNS}",
        (access_key_id,),
    )
    row = answer.first()
    if row is None:
        raise AccessKeyNotFound(detail=access_key_id)
    yield from _append_audit(audit)
    return record_from_row(row, _owner_from_columns)


def _op_recycle_key(
    locks: str,
    access_key_id: str,
    now: datetime,
    max_in_recycle_bin: int,
    audit: AuditEvent | None,
) -> _Op[list[str]]:
    locked: set[tuple[str, str]] = set()
    while True:
        answer = yield _Query(_SELECT_OWNER_OF, (access_key_id,))
        row = answer.first()
        if row is None:
            raise AccessKeyNotFound(detail=access_key_id)
        owner = (row[0], row[1])
        if owner not in locked:
            yield _lock_owner(locks, owner)
            locked.add(owner)
        answer = yield _Query(
            _LOCK_KEY_AND_BIN, {"id": access_key_id, "account": owner[0], "user": owner[1]}
        )
        target = next((row for row in answer.rows if row[0] == access_key_id), None)
        if target is None:
            raise AccessKeyNotFound(detail=access_key_id)
        if (target[1], target[2]) == owner:
            break
        # Purged and stored again under another owner since the first read: lock that
        # owner too and look again.
    deleted = lifecycle.recycled(
        record_from_row(target, _owner_from_columns), access_key_id, now=now
    )
    yield _Query(
        "UPDATE aliak_keys SET recycled_at = %s WHERE access_key_id = %s",
        (seconds(deleted.recycled_at), access_key_id),
    )
    yield from _append_audit(audit)
    # The owner and the whole bin are locked, so it cannot fill up behind this read.
    evicted = lifecycle.evictions(
        deleted,
        (record_from_row(row, _owner_from_columns) for row in answer.rows),
        max_in_recycle_bin=max_in_recycle_bin,
    )
    if evicted:
        yield from _destroy_keys(evicted)
        if audit is not None:
            yield from _append_audits(
                [audit.purge_of(key_id, deleted.owner, lifecycle.EVICTED) for key_id in evicted]
            )
    return evicted


def _op_restore_key(
    locks: str,
    access_key_id: str,
    now: datetime,
    max_keys_per_owner: int,
    audit: AuditEvent | None,
) -> _Op[KeyRecord]:
    found = yield from _lock_key(locks, access_key_id)
    record = lifecycle.restorable(found, access_key_id, now=now)
    owner_keys = yield from _owner_keys_in_recycle_bin(_owner_columns(record.owner))
    restored = lifecycle.restored(record, owner_keys, max_keys_per_owner=max_keys_per_owner)
    yield _Query(
        "UPDATE aliak_keys SET recycled_at = %s, status = %s WHERE access_key_id = %s",
        (seconds(restored.recycled_at), restored.status.value, access_key_id),
    )
    yield from _append_audit(audit)
    return restored


def _op_purge_key(
    locks: str,
    access_key_id: str,
    only_if: lifecycle.PurgeCondition,
    audit: AuditEvent | None,
) -> _Op[KeyRecord]:
    found = yield from _lock_key(locks, access_key_id)
    record = lifecycle.check_purgeable(found, access_key_id, only_if=only_if)
    yield from _destroy_keys([access_key_id])
    yield from _append_audit(audit)
    return record


def _op_purge_expired(now: datetime, audit: AuditEvent | None) -> _Op[list[str]]:
    # recycled_at is whole seconds and the cut-off may carry a fraction: the whole
    # second at or before it finds the same candidates, as a bigint the index serves.
    cutoff = math.floor(lifecycle.retention_cutoff(now).timestamp())
    # Locked in id order: a restore holding one of these rows either wins (the row no
    # longer matches once it commits) or loses (it finds the key gone).
    answer = yield _Query(_LOCK_EXPIRED, (cutoff,))
    expired = lifecycle.expired(
        (record_from_row(row, _owner_from_columns) for row in answer.rows), now
    )
    if expired:
        yield from _destroy_keys([record.access_key_id for record in expired])
        if audit is not None:
            yield from _append_audits(
                [
                    audit.purge_of(record.access_key_id, record.owner, lifecycle.EXPIRED)
                    for record in expired
                ]
            )
    return [record.access_key_id for record in expired]


def _op_keys_page(after: str) -> _Op[list[KeyRecord]]:
    answer = yield _Query(_SELECT_KEYS_PAGE, (after, _KEYS_PAGE))
    return [record_from_row(row, _owner_from_columns) for row in answer.rows]


def _op_get_setting(name: str) -> _Op[str | None]:
    answer = yield _Query("SELECT value FROM aliak_settings WHERE name = %s", (name,))
    row = answer.first()
    return None if row is None else str(row[0])


def _op_set_setting(name: str, value: str, audit: AuditEvent | None) -> _Op[None]:
    yield _Query(
        "INSERT INTO aliak_settings (name, value) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        (name, value),
    )
    yield from _append_audit(audit)


def _op_get_role(account_id: str, name: str) -> _Op[RoleRecord | None]:
    answer = yield _Query(
        "SELECT document FROM aliak_roles WHERE account_id = %s AND name_key = %s",
        (account_id, name.lower()),
    )
    row = answer.first()
    return None if row is None else RoleRecord.from_json(row[0])


def _op_list_roles(account_id: str) -> _Op[list[RoleRecord]]:
    answer = yield _Query(
        "SELECT document FROM aliak_roles WHERE account_id = %s ORDER BY name_key",
        (account_id,),
    )
    return [RoleRecord.from_json(row[0]) for row in answer.rows]


def _op_put_role(record: RoleRecord, create: bool, audit: AuditEvent | None) -> _Op[bool]:
    if create:
        answer = yield _Query(
            "INSERT INTO aliak_roles (account_id, name_key, document) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (record.account_id, record.key, record.to_json()),
        )
    else:
        answer = yield _Query(
            "UPDATE aliak_roles SET document = %s WHERE account_id = %s AND name_key = %s",
            (record.to_json(), record.account_id, record.key),
        )
    if answer.rowcount == 1:
        yield from _append_audit(audit)
    return answer.rowcount == 1


def _op_delete_role(account_id: str, name: str, audit: AuditEvent | None) -> _Op[bool]:
    answer = yield _Query(
        "DELETE FROM aliak_roles WHERE account_id = %s AND name_key = %s",
        (account_id, name.lower()),
    )
    if answer.rowcount == 1:
        yield from _append_audit(audit)
    return answer.rowcount == 1


def _op_adopt_keyring(locks: str, keyring: MasterKeyring, source: str, where: str) -> _Op[None]:
    """Refuse ``keyring`` unless it matches the store's check values; record those of its
    versions the store has none for. One fleet member at a time (an advisory lock), so
    members starting together record one value per version."""
    yield _Query(_LOCK_OWNER, (_advisory_key(locks, "keyring"),))
    answer = yield _Query(
        "SELECT name, value FROM aliak_settings WHERE name >= %s AND name < %s",
        check_setting_range(),
    )
    recorded = recorded_checks(answer.rows)
    samples: list[tuple[str, bytes]] = []
    if not recorded:
        answer = yield _Query(
            "SELECT access_key_id, sealed_secret FROM aliak_keys "
            "WHERE sealed_secret IS NOT NULL ORDER BY access_key_id LIMIT %s",
            (CHECK_SAMPLE_SIZE,),
        )
        samples = [(key_id, bytes(value)) for key_id, value in answer.rows]
    new = keyring_checks_to_record(
        keyring, recorded, source=source, where=where, sealed_samples=samples
    )
    if new:
        yield _Query(
            "INSERT INTO aliak_settings (name, value) VALUES (%s, %s)", many=sorted(new.items())
        )


def _op_reseal_secret(access_key_id: str, old: bytes, new: bytes) -> _Op[bool]:
    # Compare-and-set in one statement: a concurrent change makes it a no-op.
    answer = yield _Query(
        "UPDATE aliak_keys SET sealed_secret = %s WHERE access_key_id = %s AND sealed_secret = %s",
        (new, access_key_id, old),
    )
    return answer.rowcount == 1


def _op_secrets_page(after: str) -> _Op[list[tuple[str, bytes]]]:
    answer = yield _Query(
        "SELECT access_key_id, sealed_secret FROM aliak_keys "
        "WHERE access_key_id > %s AND sealed_secret IS NOT NULL "
        "ORDER BY access_key_id LIMIT %s",
        (after, _SECRETS_PAGE),
    )
    return [(key_id, bytes(sealed)) for key_id, sealed in answer.rows]


def _op_claim_nonce(
    access_key_id: str, nonce: str, now: float, expires_at: float, prune: bool
) -> _Op[bool]:
    answer = yield _Query(
        _CLAIM_NONCE,
        {"key": access_key_id, "nonce": nonce, "expires": float(expires_at), "now": float(now)},
    )
    claimed = answer.rowcount == 1
    if prune:
        # Housekeeping only: the claim above already stands, and a prune that fails is
        # simply tried again after the next batch of claims.
        with contextlib.suppress(psycopg.Error):
            yield _Query(_PRUNE_NONCES, (float(now),))
    return claimed


def _op_prune_nonces(now: float) -> _Op[int]:
    answer = yield _Query(_PRUNE_NONCES, (float(now),))
    return answer.rowcount


def _op_get_network_policy(target: PolicyTarget) -> _Op[NetworkPolicy | None]:
    answer = yield _Query(
        "SELECT policy FROM aliak_network_policies WHERE level = %s AND target_id = %s",
        (target.level, target.id),
    )
    row = answer.first()
    return None if row is None else _policy_from_json(row[0])


def _op_set_network_policy(
    target: PolicyTarget, policy: NetworkPolicy | None, audit: AuditEvent | None
) -> _Op[None]:
    if policy is None:
        yield _Query(
            "DELETE FROM aliak_network_policies WHERE level = %s AND target_id = %s",
            (target.level, target.id),
        )
    else:
        yield _Query(
            "INSERT INTO aliak_network_policies (level, target_id, policy) VALUES (%s, %s, %s) "
            "ON CONFLICT (level, target_id) DO UPDATE SET policy = EXCLUDED.policy",
            (target.level, target.id, Jsonb(policy.to_dict())),
        )
    yield from _append_audit(audit)


def _op_record_usage(records: Sequence[UsageRecord], max_source_ips: int) -> _Op[None]:
    latest, spans = coalesce_usage(records)
    wanted = sorted(set(latest) | {key_id for key_id, _ in spans})
    answer = yield _Query(_LOCK_USED_KEYS, (wanted,))
    held = {row[0] for row in answer.rows}  # ids the store does not hold are ignored
    last_used = [
        {"id": key_id, "at": used_at, "service": service}
        for key_id, (used_at, service) in sorted(latest.items())
        if key_id in held
    ]
    if last_used:
        yield _Query(_MERGE_LAST_USED, many=last_used)
    source_ips = [
        (key_id, ip, first, last)
        for (key_id, ip), (first, last) in sorted(spans.items())
        if key_id in held
    ]
    if source_ips:
        yield _Query(_MERGE_SOURCE_IP, many=source_ips)
        grown = sorted({key_id for key_id, _, _, _ in source_ips})
        yield _Query(_TRIM_SOURCE_IPS, many=[{"id": k, "keep": max_source_ips} for k in grown])


def _op_get_last_used(access_key_id: str) -> _Op[LastUsed | None]:
    answer = yield _Query(
        "SELECT last_used_at, last_used_service FROM aliak_keys "
        "WHERE access_key_id = %s AND last_used_at IS NOT NULL",
        (access_key_id,),
    )
    row = answer.first()
    return None if row is None else LastUsed(utc_from_timestamp(row[0]), row[1])


def _op_source_ip_history(access_key_id: str, since: datetime | None) -> _Op[list[SourceIpUse]]:
    # last_seen is whole seconds; since may carry a fraction.
    floor = _EARLIEST if since is None else math.ceil(since.timestamp())
    answer = yield _Query(
        "SELECT source_ip, first_seen, last_seen FROM aliak_key_source_ips "
        "WHERE access_key_id = %s AND last_seen >= %s ORDER BY last_seen DESC, source_ip",
        (access_key_id, floor),
    )
    return [
        SourceIpUse(ip, utc_from_timestamp(first), utc_from_timestamp(last))
        for ip, first, last in answer.rows
    ]


def _op_append_audit_event(event: AuditEvent) -> _Op[None]:
    yield _Query(_INSERT_AUDIT, row_from_event(event))


def _op_audit_events(
    access_key_id: str | None, owner: Owner | None, since: datetime | None, limit: int
) -> _Op[list[AuditEvent]]:
    # Only constant fragments are joined into the query; every value is bound.
    conditions: list[str] = []
    values: list[object] = []
    if access_key_id is not None:
        conditions.append("access_key_id = %s")
        values.append(access_key_id)
    if isinstance(owner, RamUser):
        conditions.append("account_id = %s AND user_name = %s")
        values.extend((owner.account_id, owner.name))
    elif owner is not None:
        conditions.append("account_id = %s AND user_name IS NULL")
        values.append(owner.account_id)
    if since is not None:
        conditions.append("at >= %s")  # at is whole seconds; since may carry a fraction
        values.append(math.ceil(since.timestamp()))
    where = f"WHERE {' AND '.join(conditions)} " if conditions else ""
    values.append(max(0, limit))
    answer = yield _Query(
        f"SELECT {_AUDIT_COLUMNS} FROM aliak_audit {where}ORDER BY at, seq LIMIT %s",  # noqa: S608
        values,
    )
    return [event_from_row(row) for row in answer.rows]


# -- pieces of operations ----------------------------------------------------------------


def _lock_owner(locks: str, owner: tuple[str, str]) -> _Query:
    """The owner's advisory lock, held until the transaction ends. It serialises every
    change to the owner's key count, even while the owner has no row to lock."""
    return _Query(_LOCK_OWNER, (_advisory_key(locks, "owner", *owner),))


def _lock_key(locks: str, access_key_id: str) -> _Op[KeyRecord | None]:
    """Lock the key's owner, then the key's row; ``None`` when the key is not stored."""
    locked: set[tuple[str, str]] = set()
    while True:
        answer = yield _Query(_SELECT_OWNER_OF, (access_key_id,))
        row = answer.first()
        if row is None:
            return None
        owner = (row[0], row[1])
        if owner not in locked:
            yield _lock_owner(locks, owner)
            locked.add(owner)
        answer = yield _Query(_SELECT_KEY_FOR_UPDATE, (access_key_id,))
        row = answer.first()
        if row is None:
            return None
        if (row[1], row[2]) in locked:
            return record_from_row(row, _owner_from_columns)


def _owner_keys_in_recycle_bin(columns: tuple[str, str]) -> _Op[list[bool]]:
    """For each of the owner's keys, whether it is in the bin; what the owner limit
    counts, so the owner's lock must be held."""
    answer = yield _Query(_OWNER_KEYS_IN_RECYCLE_BIN, columns)
    return [bool(binned) for (binned,) in answer.rows]


def _destroy_keys(access_key_ids: list[str]) -> _Op[None]:
    """Purged means gone: the rows (sealed secrets and last use with them), the source-IP
    history and the key-level policies. The history also cascades; deleting it here
    says so plainly."""
    yield _Query(
        "DELETE FROM aliak_key_source_ips WHERE access_key_id = ANY(%s)", (access_key_ids,)
    )
    yield _Query(
        "DELETE FROM aliak_network_policies WHERE level = 'key' AND target_id = ANY(%s)",
        (access_key_ids,),
    )
    yield _Query("DELETE FROM aliak_keys WHERE access_key_id = ANY(%s)", (access_key_ids,))


def _op_notify(channel: str, access_key_ids: Sequence[str | None]) -> _Op[None]:
    payloads = [_EVERYTHING if key_id is None else key_id for key_id in access_key_ids]
    if payloads:
        yield _Query(_NOTIFY, many=[(channel, payload) for payload in payloads])


def _append_audit(event: AuditEvent | None) -> _Op[None]:
    if event is not None:
        yield _Query(_INSERT_AUDIT, row_from_event(event))


def _append_audits(events: list[AuditEvent]) -> _Op[None]:
    if events:
        yield _Query(_INSERT_AUDIT, many=[row_from_event(event) for event in events])


# -- driving operations --------------------------------------------------------------------


def _drive(connection: psycopg.Connection[TupleRow], operation: _Op[_T]) -> _T:
    with connection.cursor() as cursor:
        try:
            query = next(operation)
            while True:
                try:
                    if query.many is not None:
                        cursor.executemany(query.sql, query.many)
                        answer = _Answer([], cursor.rowcount)
                    else:
                        cursor.execute(query.sql, query.params)
                        rows = cursor.fetchall() if cursor.description is not None else []
                        answer = _Answer(rows, cursor.rowcount)
                except psycopg.Error as error:
                    query = operation.throw(error)
                else:
                    query = operation.send(answer)
        except StopIteration as done:
            result: _T = done.value
            return result


async def _drive_async(connection: psycopg.AsyncConnection[TupleRow], operation: _Op[_T]) -> _T:
    async with connection.cursor() as cursor:
        try:
            query = next(operation)
            while True:
                try:
                    if query.many is not None:
                        await cursor.executemany(query.sql, query.many)
                        answer = _Answer([], cursor.rowcount)
                    else:
                        await cursor.execute(query.sql, query.params)
                        rows = await cursor.fetchall() if cursor.description is not None else []
                        answer = _Answer(rows, cursor.rowcount)
                except psycopg.Error as error:
                    query = operation.throw(error)
                else:
                    query = operation.send(answer)
        except StopIteration as done:
            result: _T = done.value
            return result


def _retry(error: psycopg.Error, *, read: bool, attempt: int) -> bool:
    if attempt >= _TRANSACTION_TRIES:
        return False
    if error.sqlstate in _ROLLED_BACK:
        return True
    # A read met a connection that died: once more, on a fresh connection. A write
    # might have committed before the connection died, so it is never retried.
    return read and attempt == 1 and _connection_lost(error)


def _connection_lost(error: psycopg.Error) -> bool:
    if isinstance(error, (PoolClosed, PoolTimeout)):
        return False
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = error.sqlstate
    return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES


def _translate(error: psycopg.Error, settings: _Settings) -> AliakError:
    """The aliak error for a psycopg one: fail closed, and never show the password."""
    text = settings.scrub(" ".join(str(error).split()))
    if isinstance(error, PoolClosed):
        return InternalError(detail="the PostgreSQL store is closed")
    if isinstance(error, PoolTimeout):
        return ServiceUnavailable(
            detail=f"{settings.where}: no connection within {settings.connect_timeout:g} s ({text})"
        )
    state = error.sqlstate or ""
    if _connection_lost(error) or isinstance(error, TooManyRequests) or state.startswith("53"):
        return ServiceUnavailable(detail=f"{settings.where}: {text}")
    return InternalError(detail=f"{settings.where}: {state + ' ' if state else ''}{text}")


def _has_input(socket: int) -> bool:
    """Whether an idle connection's socket has something to read: an idle server says
    nothing unless it is going away (or has gone: end of file)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    readable, _, _ = select.select([socket], [], [], 0)
    return bool(readable)


def _alive(connection: psycopg.Connection[TupleRow]) -> bool:
    """Whether a connection just out of the pool still works: free unless the server
    spoke (then one empty round trip decides)."""
    if connection.closed:
        return False
    if not _has_input(connection.pgconn.socket):
        return True
    try:
        connection.execute("")
    except psycopg.Error:
        return False
    return True


async def _alive_async(connection: psycopg.AsyncConnection[TupleRow]) -> bool:
    if connection.closed:
        return False
    if not _has_input(connection.pgconn.socket):
        return True
    try:
        await connection.execute("")
    except psycopg.Error:
        return False
    return True


# -- settings shared by the sync and the async store -----------------------------------------


@attrs.frozen
class _Settings:
    dsn: str
    where: str  # host, port and database, for messages: never the password
    password: str | None
    schema: str
    locks: str  # advisory lock namespace: one per schema
    min_size: int
    max_size: int
    connect_timeout: float
    prune_every: int
    connect_kwargs: dict[str, Any]

    def scrub(self, text: str) -> str:
        return text.replace(self.password, "***") if self.password else text

    def search_path(self) -> sql.Composed:
        return sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema))


def _parse_settings(
    dsn: object,
    *,
    schema: object,
    min_size: object,
    max_size: object,
    connect_timeout: object,
    prune_every: object,
) -> _Settings:
    if not isinstance(dsn, str):
        raise InvalidParameter("dsn", detail="a PostgreSQL connection string or URI")
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        # psycopg's message may quote the string, password and all.
        raise InvalidParameter(
            "dsn", detail="not a valid PostgreSQL connection string or URI"
        ) from None
    if not isinstance(schema, str) or _is_schema_name(schema) is None:
        raise InvalidParameter(
            "schema", detail="1-63 characters of [A-Za-z0-9_], not a digit first"
        )
    if not _whole(min_size) or min_size < 0:
        raise InvalidParameter("min_size", detail="a whole number of connections >= 0")
    if not _whole(max_size) or max_size < max(1, min_size):
        raise InvalidParameter("max_size", detail="a whole number >= 1 and >= min_size")
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)):
        raise InvalidParameter("connect_timeout", detail="seconds, a number > 0")
    if not (0 < connect_timeout < math.inf):
        raise InvalidParameter("connect_timeout", detail="seconds, a number > 0")
    if not _whole(prune_every) or prune_every < 0:
        raise InvalidParameter("prune_every", detail="a whole number of claims >= 0")
    host = str(params.get("host") or params.get("hostaddr") or os.environ.get("PGHOST") or "")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    database = str(params.get("dbname") or os.environ.get("PGDATABASE") or "")
    where = f"PostgreSQL at {host or 'the local socket'}:{port}"
    if database:
        where += f" (database {database})"
    kwargs: dict[str, Any] = {
        "autocommit": True,  # transactions are explicit
        # libpq counts whole seconds, at least 2, per connection attempt.
        "connect_timeout": max(2, math.ceil(connect_timeout)),
    }
    if "application_name" not in params:
        kwargs["application_name"] = "aliak"
    password = params.get("password")
    return _Settings(
        dsn=dsn,
        where=where,
        password=str(password) if password else None,
        schema=schema,
        locks=f"aliak:{schema}",
        min_size=min_size,
        max_size=max_size,
        connect_timeout=float(connect_timeout),
        prune_every=prune_every,
        connect_kwargs=kwargs,
    )


def _whole(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _fleet_keyring(master_key: MasterKeyring | str | bytes | None) -> tuple[MasterKeyring, str]:
    """A fleet shares one master key, so it comes from the caller or the environment,
    never from a key file beside one server; and where it came from, for messages."""
    if master_key is None and not os.environ.get(ENV_MASTER_KEY):
        raise InvalidParameter(
            "MasterKey",
            detail=f"PostgresStore needs the fleet's master key: pass master_key=... or set "
            f"{ENV_MASTER_KEY}; every server sharing the database must use the same one",
        )
    keyring, _, source = locate_master_keyring(master_key)
    return keyring, source


def _advisory_key(namespace: str, *parts: str) -> int:
    """A stable signed 64-bit advisory lock key, the same in every process."""
    text = "\x1f".join((namespace, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


# -- the schema ------------------------------------------------------------------------------


def _schema_version(connection: psycopg.Connection[TupleRow], schema: str) -> int:
    table = connection.execute(
        "SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = %s AND tablename = %s",
        (schema, _VERSION_TABLE),
    ).fetchone()
    if table is None:
        return 0
    row = connection.execute(
        sql.SQL("SELECT coalesce(max(version), 0) FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(_VERSION_TABLE)
        )
    ).fetchone()
    return 0 if row is None else int(row[0])


def _refuse_newer(version: int, settings: _Settings) -> None:
    if version > SCHEMA_VERSION:
        raise InvalidParameter(
            "schema",
            detail=f"schema {settings.schema!r} on {settings.where} has version {version}, "
            f"newer than the {SCHEMA_VERSION} this aliak knows; upgrade aliak to use it",
        )


def _migrate(
    connection: psycopg.Connection[TupleRow], settings: _Settings, migrate: bool
) -> tuple[int, ...]:
    """Bring the schema to :data:`SCHEMA_VERSION`; return the versions this call applied."""
    schema = sql.Identifier(settings.schema)
    current = _schema_version(connection, settings.schema)
    _refuse_newer(current, settings)
    if current == SCHEMA_VERSION:
        return ()
    if not migrate:
        state = "has no aliak tables" if current == 0 else f"is at version {current}"
        raise InvalidParameter(
            "schema",
            detail=f"schema {settings.schema!r} on {settings.where} {state}; this aliak needs "
            f"version {SCHEMA_VERSION}: run migrations (open a PostgresStore with migrate=True "
            "once, e.g. from a deploy step)",
        )
    applied: list[int] = []
    for version, statements in enumerate(_MIGRATIONS, start=1):
        if version <= current:
            continue
        with connection.transaction():
            # One migrator at a time per schema, across the fleet; the others wait here
            # and then find the work done.
            connection.execute(_LOCK_OWNER, (_advisory_key(settings.locks, "migrate"),))
            exists = connection.execute(
                "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (settings.schema,)
            ).fetchone()
            if exists is None:
                connection.execute(sql.SQL("CREATE SCHEMA {}").format(schema))
            connection.execute(sql.SQL("SET LOCAL search_path TO {}").format(schema))
            connection.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, "
                    "applied_at timestamptz NOT NULL DEFAULT now())"
                ).format(sql.Identifier(_VERSION_TABLE))
            )
            current = _schema_version(connection, settings.schema)
            _refuse_newer(current, settings)
            if current < version:
                for statement in statements:
                    connection.execute(statement)
                connection.execute(
                    sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(
                        sql.Identifier(_VERSION_TABLE)
                    ),
                    (version,),
                )
                applied.append(version)
                current = version
    return tuple(applied)


def _prepare(settings: _Settings, migrate: bool) -> tuple[int, ...]:
    """Connect once: the server answers, is recent enough, and the schema is current."""
    try:
        connection = psycopg.Connection.connect(settings.dsn, **settings.connect_kwargs)
    except psycopg.Error as error:
        reason = settings.scrub(" ".join(str(error).split()))
        raise ServiceUnavailable(detail=f"cannot connect to {settings.where}: {reason}") from error
    try:
        with connection:
            if connection.info.server_version < _MINIMUM_SERVER:
                raise InvalidParameter(
                    "dsn",
                    detail=f"{settings.where} runs PostgreSQL {connection.info.server_version}; "
                    "aliak needs 11 or later",
                )
            return _migrate(connection, settings, migrate)
    except psycopg.Error as error:
        raise _translate(error, settings) from error


# -- row mapping -------------------------------------------------------------------------------


def _owner_columns(owner: Owner) -> tuple[str, str]:
    if isinstance(owner, RamUser):
        return owner.account_id, owner.name
    return owner.account_id, ""


def _owner_from_columns(account_id: str, user_name: str) -> Owner:
    return RamUser(account_id, user_name) if user_name else Account(account_id)


def _policy_subject(target: PolicyTarget) -> str | None:
    # An account-level policy concerns every key of the account: announce "anything".
    return target.id if target.level == "key" else None


def _policy_from_json(value: Any) -> NetworkPolicy:
    try:
        return NetworkPolicy.from_dict(value)
    except (AliakError, ValueError, TypeError, AttributeError) as error:
        raise InternalError(detail="a stored network policy is corrupt") from error


# -- announcing changes: LISTEN/NOTIFY ---------------------------------------------------------


def _notify_channel(schema: str) -> str:
    """The NOTIFY channel of a schema's store: an identifier of at most 63 bytes."""
    name = f"aliak.{schema}"
    if len(name) <= 63:
        return name
    return "aliak." + hashlib.blake2b(schema.encode(), digest_size=16).hexdigest()


class _Listener:
    """One daemon thread per process that LISTENs on the store's channel, on a
    connection of its own, and delivers every notification to ``deliver``.

    Whenever it (re)starts listening it delivers ``None``: what was announced while it
    was not listening is lost, so verifiers drop everything once. While the server is
    away it retries with backoff (``min_backoff`` doubling to ``max_backoff``), and
    verifiers fall back to their freshness.
    """

    def __init__(
        self,
        settings: _Settings,
        channel: str,
        deliver: Callable[[Sequence[str | None]], None],
        *,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self._settings = settings
        self._channel = channel
        self._deliver = deliver
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._stop = threading.Event()
        self.listens = 0  # times LISTEN was (re)established; for tests and metrics
        self.pid = os.getpid()
        self._thread = threading.Thread(
            target=self._loop, name=f"aliak-postgres-listen-{settings.schema}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self.pid == os.getpid() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        delay = self._min_backoff
        lost = False
        while not self._stop.is_set():
            try:
                self._listen()
                delay = self._min_backoff  # it listened, then lost the connection
            except psycopg.Error as error:
                if not lost:
                    _log.warning(
                        "aliak: not listening for key changes on %s (%s); verifiers rely on "
                        "their freshness until it is back",
                        self._settings.where,
                        self._settings.scrub(f"{type(error).__name__}: {error}"),
                    )
                lost = True
            except Exception:  # never let the thread die: keep trying
                _log.exception("aliak: the key change listener failed")
                lost = True
            else:
                return
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self._max_backoff)

    def _listen(self) -> None:
        """Listen until stopped (returns) or the connection fails (raises)."""
        settings = self._settings
        with psycopg.Connection.connect(settings.dsn, **settings.connect_kwargs) as connection:
            connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            self.listens += 1
            if self.listens > 1:
                _log.info("aliak: listening for key changes on %s again", settings.where)
            self._deliver([None])  # anything may have changed while nobody listened
            quiet_since = time.monotonic()
            while not self._stop.is_set():
                heard = False
                for notify in connection.notifies(timeout=_LISTEN_WAIT):
                    heard = True
                    payload = notify.payload
                    self._deliver([None if payload == _EVERYTHING else payload])
                if heard:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since > _LISTEN_PING:
                    connection.execute("")  # a silent network failure shows up here
                    quiet_since = time.monotonic()


# -- the stores --------------------------------------------------------------------------------


class PostgresStore:
    """Implements :class:`~aliak.storage.protocols.Store` in one PostgreSQL schema.

    ``dsn``: a libpq connection string or URI. ``master_key``: the fleet's
    :class:`MasterKeyring` or its text form, else ``ALIAK_MASTER_KEY``; there is no key
    file (every server must share one key), so without either the store is refused at
    construction. ``schema``: where the tables live (created by the first migration if
    absent); each connection's ``search_path`` is set to it. ``min_size`` / ``max_size``:
    the connection pool, opened at construction (it waits for ``min_size``
    connections). ``connect_timeout``: seconds allowed to connect at startup, and to wait
    for a pooled connection before failing closed with ``ServiceUnavailable``.
    ``migrate``: bring the schema to this version at startup (serialised across
    servers); with ``False`` a missing or older schema is refused ("run migrations").
    ``prune_every``: every that many claims, expired nonces are deleted (0 turns this
    off; then call :meth:`prune_nonces` yourself). The keyring must be the fleet's: the
    schema records a check value per master-key version (the first member to open a
    schema without them records them, after its keyring opened a sample of the sealed
    secrets), and a keyring that does not match is refused at construction with
    :class:`InvalidParameter` naming where it came from. ``max_source_ips_per_key``: how many
    source addresses a key's history keeps (the most recently seen; the usage batch that
    overfills it trims it in the same transaction).

    :meth:`as_async` gives the same store over an ``AsyncConnectionPool`` (see
    :class:`AsyncPostgresStore`).
    """

    def __init__(
        self,
        dsn: str,
        *,
        master_key: MasterKeyring | str | bytes | None = None,
        schema: str = "public",
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        migrate: bool = True,
        prune_every: int = 1000,
        max_source_ips_per_key: int = lifecycle.DEFAULT_MAX_SOURCE_IPS_PER_KEY,
    ) -> None:
        self._settings = _parse_settings(
            dsn,
            schema=schema,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            prune_every=prune_every,
        )
        self._max_source_ips = lifecycle.check_source_ip_limit(max_source_ips_per_key)
        self._keyring, source = _fleet_keyring(master_key)
        self._claims = itertools.count(1)
        self._closed = False
        self._twin: AsyncPostgresStore | None = None
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._inherited: list[ConnectionPool[psycopg.Connection[TupleRow]]] = []
        self.applied_migrations: tuple[int, ...] = _prepare(self._settings, bool(migrate))
        """The schema versions this construction applied; empty when already current."""
        self._pool = self._open_pool()
        self._notify_channel = _notify_channel(self._settings.schema)
        self._listener: _Listener | None = None
        self._changes = LocalInvalidation(
            announce=self._announce, on_subscribe=self._start_listening
        )
        self.invalidations: InvalidationChannel | None = self._changes
        """Every change this store object commits is delivered to this process's
        verifiers before the method returns; every change committed by any server of the
        fleet arrives by ``LISTEN/NOTIFY`` (a thread started by the first subscriber)."""
        try:
            self._adopt_keyring(self._keyring, source)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresStore({self._settings.where}, schema={self._settings.schema!r})"

    # -- connections --------------------------------------------------------------------

    def _configure(self, connection: psycopg.Connection[TupleRow]) -> None:
        connection.execute(self._settings.search_path())

    def _open_pool(self) -> ConnectionPool[psycopg.Connection[TupleRow]]:
        settings = self._settings
        pool: ConnectionPool[psycopg.Connection[TupleRow]] = ConnectionPool(
            settings.dsn,
            kwargs=settings.connect_kwargs,
            min_size=settings.min_size,
            max_size=settings.max_size,
            open=False,
            configure=self._configure,
            timeout=settings.connect_timeout,
            reconnect_timeout=settings.connect_timeout,
            name=f"aliak-{settings.schema}",
        )
        try:
            pool.open(wait=True, timeout=settings.connect_timeout)
        except psycopg.Error as error:
            pool.close()
            raise _translate(error, settings) from error
        return pool

    def _current_pool(self) -> ConnectionPool[psycopg.Connection[TupleRow]]:
        if self._pid != os.getpid():
            # A forked child must not share its parent's connections: it opens its own
            # pool and leaves the inherited one alone (kept referenced, never closed).
            with self._lock:
                if self._pid != os.getpid():
                    self._inherited.append(self._pool)
                    self._pool = self._open_pool()
                    self._pid = os.getpid()
        return self._pool

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[TupleRow]]:
        """A working connection from the pool. Dead ones (the server restarted, a
        failover, an idle timeout) are closed, so the pool replaces them, and the next one
        is taken at once: the pool's own check would pause between attempts."""
        pool = self._current_pool()
        connection = pool.getconn()
        returned = False
        try:
            for _ in range(self._settings.max_size):
                if _alive(connection):
                    break
                connection.close()
                returned = True
                pool.putconn(connection)
                connection = pool.getconn()
                returned = False
            yield connection
        finally:
            if not returned:
                pool.putconn(connection)

    def _run(
        self,
        operation: Callable[[], _Op[_T]],
        *,
        read: bool = False,
        transaction: bool = False,
        changes: Callable[[_T], Sequence[str | None]] | None = None,
    ) -> _T:
        """Run ``operation`` on a pooled connection (inside one transaction if asked),
        mapping every database failure to an aliak error: fail closed.

        ``changes``: the key ids (``None``: anything) the operation's result changed.
        They are notified inside the same transaction, so the fleet hears of the change
        if and only if it commits, and delivered to this process's subscribers after."""
        attempt = 0
        while True:
            attempt += 1
            try:
                if self._closed:
                    raise PoolClosed("the store is closed")
                with self._connection() as connection:
                    if changes is None:
                        if transaction:
                            with connection.transaction():
                                return _drive(connection, operation())
                        return _drive(connection, operation())
                    with connection.transaction():
                        result = _drive(connection, operation())
                        changed = subjects(changes(result))
                        _drive(connection, _op_notify(self._notify_channel, changed))
            except psycopg.Error as error:
                if _retry(error, read=read, attempt=attempt):
                    continue
                raise _translate(error, self._settings) from error
            else:
                # With the connection back in the pool: a subscriber may read the store.
                self._changes.deliver(changed)
                return result

    def _announce(self, access_key_ids: Sequence[str | None]) -> None:
        """:meth:`LocalInvalidation.publish`'s way to tell the fleet. Best effort."""
        try:
            self._run(lambda: _op_notify(self._notify_channel, subjects(access_key_ids)))
        except AliakError as error:
            _log.warning(
                "aliak: could not notify the fleet of a key change (%s); other servers "
                "will see it within their freshness",
                self._settings.scrub(str(error)),
            )

    def _start_listening(self) -> None:
        with self._lock:
            listener = self._listener
            if self._closed or (listener is not None and listener.pid == os.getpid()):
                return
            # First subscriber (in this process: a forked child starts its own).
            self._listener = _Listener(self._settings, self._notify_channel, self._changes.deliver)

    # -- KeyStore -------------------------------------------------------------------------

    @property
    def keyring(self) -> MasterKeyring:
        return self._keyring

    def reload_keyring(self) -> MasterKeyring:
        """The keyring has no external source here (it came from the caller or the
        environment), so this returns the one in force."""
        return self._keyring

    def set_keyring(self, keyring: MasterKeyring) -> None:
        """Put ``keyring`` in force in this process. A fleet's keyring lives in each
        server's configuration (``ALIAK_MASTER_KEY``), not in the database: give every
        server the new keyring too, before secrets sealed under it are relied on."""
        if not isinstance(keyring, MasterKeyring):
            raise InvalidParameter("MasterKey", detail="a MasterKeyring is expected")
        self._adopt_keyring(keyring, "the new keyring")
        self._keyring = keyring

    def _adopt_keyring(self, keyring: MasterKeyring, source: str) -> None:
        settings = self._settings
        where = f"schema {settings.schema!r} on {settings.where}"
        self._run(
            lambda: _op_adopt_keyring(settings.locks, keyring, source, where), transaction=True
        )

    def get_key(self, access_key_id: str) -> KeyRecord | None:
        return self._run(lambda: _op_get_key(access_key_id), read=True)

    def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None:
        locks = self._settings.locks
        self._run(
            lambda: _op_add_key(locks, record, max_keys_per_owner, audit),
            changes=lambda _: [record.access_key_id],  # a verifier may have cached "unknown"
        )

    def list_keys(self, owner: Owner) -> list[KeyRecord]:
        return self._run(lambda: _op_list(_SELECT_OWNER_KEYS, owner), read=True)

    def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        return self._run(
            lambda: _op_set_key_status(access_key_id, status, audit),
            changes=lambda _: [access_key_id],
        )

    def recycle_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_in_recycle_bin: int,
        audit: AuditEvent | None = None,
    ) -> list[str]:
        locks = self._settings.locks
        return self._run(
            lambda: _op_recycle_key(locks, access_key_id, now, max_in_recycle_bin, audit),
            changes=lambda evicted: [access_key_id, *evicted],
        )

    def restore_key(
        self,
        access_key_id: str,
        *,
        now: datetime,
        max_keys_per_owner: int,
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        locks = self._settings.locks
        return self._run(
            lambda: _op_restore_key(locks, access_key_id, now, max_keys_per_owner, audit),
            changes=lambda _: [access_key_id],
        )

    def purge_key(
        self,
        access_key_id: str,
        *,
        only_if: Literal["in_recycle_bin", "inactive"],
        audit: AuditEvent | None = None,
    ) -> KeyRecord:
        condition = lifecycle.check_purge_condition(only_if)
        locks = self._settings.locks
        return self._run(
            lambda: _op_purge_key(locks, access_key_id, condition, audit),
            changes=lambda _: [access_key_id],
        )

    def purge_expired(self, *, now: datetime, audit: AuditEvent | None = None) -> list[str]:
        return self._run(lambda: _op_purge_expired(now, audit), changes=lambda purged: purged)

    def list_recycle_bin(self, owner: Owner) -> list[KeyRecord]:
        return self._run(lambda: _op_list(_SELECT_OWNER_RECYCLE_BIN, owner), read=True)

    def mark_leak_restricted(
        self, access_key_id: str, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        return self._run(
            lambda: _op_mark_leak_restricted(access_key_id, audit),
            changes=lambda _: [access_key_id],
        )

    def iter_keys(self) -> Iterator[KeyRecord]:
        """Pages through the keys by id; no transaction stays open between pages."""
        after = ""
        while True:
            page = self._run(functools.partial(_op_keys_page, after), read=True)
            yield from page
            if len(page) < _KEYS_PAGE:
                return
            after = page[-1].access_key_id

    def get_setting(self, name: str) -> str | None:
        return self._run(lambda: _op_get_setting(name), read=True)

    def set_setting(self, name: str, value: str, *, audit: AuditEvent | None = None) -> None:
        self._run(lambda: _op_set_setting(name, value, audit), changes=lambda _: [None])

    # -- RoleStore: read when AssumeRole is called, never cached --------------------------

    def get_role(self, account_id: str, name: str) -> RoleRecord | None:
        return self._run(lambda: _op_get_role(account_id, name), read=True)

    def list_roles(self, account_id: str) -> list[RoleRecord]:
        return self._run(lambda: _op_list_roles(account_id), read=True)

    def put_role(
        self, record: RoleRecord, *, create: bool, audit: AuditEvent | None = None
    ) -> bool:
        return self._run(lambda: _op_put_role(record, create, audit), transaction=True)

    def delete_role(self, account_id: str, name: str, *, audit: AuditEvent | None = None) -> bool:
        return self._run(lambda: _op_delete_role(account_id, name, audit), transaction=True)

    def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        return self._run(
            lambda: _op_reseal_secret(access_key_id, old, new),
            changes=lambda replaced: [access_key_id] if replaced else [],
        )

    def iter_sealed_secrets(self) -> Iterator[tuple[str, bytes]]:
        """Pages through the keys by id; no transaction stays open between pages."""
        after = ""
        while True:
            page = self._run(functools.partial(_op_secrets_page, after), read=True)
            yield from page
            if len(page) < _SECRETS_PAGE:
                return
            after = page[-1][0]

    # -- NonceStore -------------------------------------------------------------------------

    def claim_nonce(self, access_key_id: str, nonce: str, *, now: float, expires_at: float) -> bool:
        every = self._settings.prune_every
        prune = bool(every) and next(self._claims) % every == 0
        return self._run(lambda: _op_claim_nonce(access_key_id, nonce, now, expires_at, prune))

    def prune_nonces(self, now: float) -> int:
        return self._run(lambda: _op_prune_nonces(now))

    # -- PolicyStore ------------------------------------------------------------------------

    def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        return self._run(lambda: _op_get_network_policy(target), read=True)

    def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None:
        self._run(
            lambda: _op_set_network_policy(target, policy, audit),
            changes=lambda _: [_policy_subject(target)],
        )

    # -- UsageLog ---------------------------------------------------------------------------

    def record_usage(self, records: Sequence[UsageRecord]) -> None:
        if records:
            self._run(lambda: _op_record_usage(records, self._max_source_ips), transaction=True)

    def get_last_used(self, access_key_id: str) -> LastUsed | None:
        return self._run(lambda: _op_get_last_used(access_key_id), read=True)

    def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]:
        return self._run(lambda: _op_source_ip_history(access_key_id, since), read=True)

    # -- AuditLog ---------------------------------------------------------------------------

    def append_audit_event(self, event: AuditEvent) -> None:
        self._run(lambda: _op_append_audit_event(event))

    def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        return self._run(lambda: _op_audit_events(access_key_id, owner, since, limit), read=True)

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pool (and the async face's, unless its event loop is running, in
        which case it is closed there). Idempotent; the store is unusable after."""
        self._closed = True
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
        twin = self._twin
        if twin is not None:
            twin._close_from_sync()
        if self._pid == os.getpid():
            self._pool.close()

    def as_async(self) -> AsyncPostgresStore:
        """The async face, over its own ``AsyncConnectionPool`` (opened lazily inside the
        running event loop). Always the same object for this store."""
        with self._lock:
            if self._twin is None:
                self._twin = AsyncPostgresStore(self)
            return self._twin


@attrs.define
class _LoopPool:
    """An async pool and the event loop it belongs to."""

    loop: asyncio.AbstractEventLoop
    pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]
    opening: asyncio.Lock
    connections: weakref.WeakSet[psycopg.AsyncConnection[TupleRow]]
    ready: bool = False
    failed: bool = False
    guard: asyncio.Task[None] | None = None


class AsyncPostgresStore:
    """Implements :class:`~aliak.storage.protocols.AsyncStore` for a
    :class:`PostgresStore` (get it with :meth:`PostgresStore.as_async`): real async I/O
    over a ``psycopg_pool.AsyncConnectionPool``, running the same operations (the same
    SQL) as the sync store. The schema and keyring are the sync store's.

    **Opening**: the pool is opened lazily, by the first call made inside a running
    event loop (it waits for ``min_size`` connections, failing closed with
    ``ServiceUnavailable`` after ``connect_timeout``), or ahead of traffic with
    ``await store.open()``. It belongs to that event loop: used later from another loop
    (a second ``asyncio.run``), the store opens a fresh pool there and closes the old
    loop's connections. Close it with :meth:`aclose` (or ``async with``), which closes
    the sync store too, as the other async faces do.
    """

    def __init__(self, sync: PostgresStore) -> None:
        self.sync = sync
        self._settings = sync._settings
        self._claims = itertools.count(1)
        self._closed = False
        self._current: _LoopPool | None = None

    def __repr__(self) -> str:
        return f"AsyncPostgresStore({self._settings.where}, schema={self._settings.schema!r})"

    async def __aenter__(self) -> AsyncPostgresStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- connections --------------------------------------------------------------------

    async def open(self) -> None:
        """Open the pool now, in the running event loop (otherwise the first call does),
        waiting for ``min_size`` connections; ``ServiceUnavailable`` if the server does
        not answer within ``connect_timeout``."""
        try:
            await self._pool()
        except psycopg.Error as error:
            raise _translate(error, self._settings) from error

    def _new_pool(self, loop: asyncio.AbstractEventLoop) -> _LoopPool:
        settings = self._settings
        connections: weakref.WeakSet[psycopg.AsyncConnection[TupleRow]] = weakref.WeakSet()
        search_path = settings.search_path()

        async def configure(connection: psycopg.AsyncConnection[TupleRow]) -> None:
            connections.add(connection)
            await connection.execute(search_path)

        pool: AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]] = AsyncConnectionPool(
            settings.dsn,
            kwargs=settings.connect_kwargs,
            min_size=settings.min_size,
            max_size=settings.max_size,
            open=False,
            configure=configure,
            timeout=settings.connect_timeout,
            reconnect_timeout=settings.connect_timeout,
            name=f"aliak-async-{settings.schema}",
        )
        return _LoopPool(loop, pool, asyncio.Lock(), connections)

    async def _pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[TupleRow]]:
        loop = asyncio.get_running_loop()
        current = self._current
        if current is not None and current.loop is loop and current.ready:
            return current.pool
        if self._closed or self.sync._closed:
            raise PoolClosed("the store is closed")
        if current is None or current.loop is not loop:
            if current is not None:
                if current.loop.is_running():
                    raise InternalError(
                        detail="this AsyncPostgresStore is in use by another running event loop"
                    )
                _finish(current)
            current = self._current = self._new_pool(loop)
        async with current.opening:
            if current.failed:
                # Opening failed while this call waited for it: fail alike, at once.
                raise PoolTimeout("the connection pool could not be opened")
            if not current.ready:
                try:
                    await current.pool.open(wait=True, timeout=self._settings.connect_timeout)
                except BaseException:
                    # wait() closed the pool; the next call starts afresh.
                    current.failed = True
                    if self._current is current:
                        self._current = None
                    await current.pool.close()
                    raise
                current.ready = True
                current.guard = loop.create_task(
                    self._guard(current), name=f"aliak-async-{self._settings.schema}-guard"
                )
        return current.pool

    async def _guard(self, current: _LoopPool) -> None:
        """Close the pool when the event loop shuts down. ``asyncio.run`` cancels every
        task as it ends, and a pool worker busy with maintenance (connecting) swallows
        that cancellation, which would keep the loop from ever finishing; closing the
        pool stops its workers."""
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if self._current is current:
                self._current = None
            await current.pool.close()
            raise

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[TupleRow]]:
        """As :meth:`PostgresStore._connection`: dead connections are replaced at once."""
        pool = await self._pool()
        connection = await pool.getconn()
        returned = False
        try:
            for _ in range(self._settings.max_size):
                if await _alive_async(connection):
                    break
                await connection.close()
                returned = True
                await pool.putconn(connection)
                connection = await pool.getconn()
                returned = False
            yield connection
        finally:
            if not returned:
                await pool.putconn(connection)

    async def _run(
        self,
        operation: Callable[[], _Op[_T]],
        *,
        read: bool = False,
        transaction: bool = False,
        changes: Callable[[_T], Sequence[str | None]] | None = None,
    ) -> _T:
        """As :meth:`PostgresStore._run`, ``changes`` included."""
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._connection() as connection:
                    if changes is None:
                        if transaction:
                            async with connection.transaction():
                                return await _drive_async(connection, operation())
                        return await _drive_async(connection, operation())
                    async with connection.transaction():
                        result = await _drive_async(connection, operation())
                        changed = subjects(changes(result))
                        await _drive_async(
                            connection, _op_notify(self.sync._notify_channel, changed)
                        )
            except psycopg.Error as error:
                if _retry(error, read=read, attempt=attempt):
                    continue
                raise _translate(error, self._settings) from error
            else:
                # With the connection back in the pool: a subscriber may read the store.
                self.sync._changes.deliver(changed)
                return result

    def _close_from_sync(self) -> None:
        self._closed = True
        current, self._current = self._current, None
        if current is None:
            return
        if current.loop.is_running():
            # Closed by its own loop, which may be another thread's.
            asyncio.run_coroutine_threadsafe(current.pool.close(), current.loop)
        else:
            _finish(current)

    async def aclose(self) -> None:
        """Close the async pool, then the sync store. Idempotent."""
        self._closed = True
        current, self._current = self._current, None
        if current is not None:
            if current.loop is asyncio.get_running_loop():
                await current.pool.close()
                if current.guard is not None:
                    current.guard.cancel()
            else:
                _finish(current)
        await asyncio.to_thread(self.sync.close)

    # -- the ports ------------------------------------------------------------------------

    @property
    def keyring(self) -> MasterKeyring:
        return self.sync.keyring

    @property
    def invalidations(self) -> InvalidationChannel | None:
        return self.sync.invalidations

    async def reload_keyring(self) -> MasterKeyring:
        return self.sync.reload_keyring()

    async def get_key(self, access_key_id: str) -> KeyRecord | None:
        return await self._run(lambda: _op_get_key(access_key_id), read=True)

    async def add_key(
        self, record: KeyRecord, *, max_keys_per_owner: int, audit: AuditEvent | None = None
    ) -> None:
        locks = self._settings.locks
        await self._run(
            lambda: _op_add_key(locks, record, max_keys_per_owner, audit),
            changes=lambda _: [record.access_key_id],
        )

    async def list_keys(self, owner: Owner) -> list[KeyRecord]:
        return await self._run(lambda: _op_list(_SELECT_OWNER_KEYS, owner), read=True)

    async def set_key_status(
        self, access_key_id: str, status: KeyStatus, *, audit: AuditEvent | None = None
    ) -> KeyRecord:
        return await self._run(
            lambda: _op_set_key_status(access_key_id, status, audit),
            changes=lambda _: [access_key_id],
        )

    async def reseal_secret(self, access_key_id: str, old: bytes, new: bytes) -> bool:
        return await self._run(
            lambda: _op_reseal_secret(access_key_id, old, new),
            changes=lambda replaced: [access_key_id] if replaced else [],
        )

    async def claim_nonce(
        self, access_key_id: str, nonce: str, *, now: float, expires_at: float
    ) -> bool:
        every = self._settings.prune_every
        prune = bool(every) and next(self._claims) % every == 0
        return await self._run(
            lambda: _op_claim_nonce(access_key_id, nonce, now, expires_at, prune)
        )

    async def prune_nonces(self, now: float) -> int:
        return await self._run(lambda: _op_prune_nonces(now))

    async def get_network_policy(self, target: PolicyTarget) -> NetworkPolicy | None:
        return await self._run(lambda: _op_get_network_policy(target), read=True)

    async def set_network_policy(
        self,
        target: PolicyTarget,
        policy: NetworkPolicy | None,
        *,
        audit: AuditEvent | None = None,
    ) -> None:
        await self._run(
            lambda: _op_set_network_policy(target, policy, audit),
            changes=lambda _: [_policy_subject(target)],
        )

    async def record_usage(self, records: Sequence[UsageRecord]) -> None:
        if records:
            await self._run(
                lambda: _op_record_usage(records, self.sync._max_source_ips), transaction=True
            )

    async def get_last_used(self, access_key_id: str) -> LastUsed | None:
        return await self._run(lambda: _op_get_last_used(access_key_id), read=True)

    async def source_ip_history(
        self, access_key_id: str, since: datetime | None = None
    ) -> list[SourceIpUse]:
        return await self._run(lambda: _op_source_ip_history(access_key_id, since), read=True)

    async def append_audit_event(self, event: AuditEvent) -> None:
        await self._run(lambda: _op_append_audit_event(event))

    async def audit_events(
        self,
        *,
        access_key_id: str | None = None,
        owner: Owner | None = None,
        since: datetime | None = None,
        limit: int = 1000,
    ) -> list[AuditEvent]:
        return await self._run(
            lambda: _op_audit_events(access_key_id, owner, since, limit), read=True
        )


def _finish(current: _LoopPool) -> None:
    """Close the connections of a pool whose event loop is gone (or not running): the
    loop cannot run the pool's own close, and libpq closes a connection synchronously."""
    for connection in list(current.connections):
        if not connection.closed:
            connection.pgconn.finish()
