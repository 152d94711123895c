"""The storage backends under test, and record builders shared by their suites.

Every backend runs the whole conformance suite. Adding one is one entry in
``BACKENDS``; a backend that needs a server names the environment variable that points
at it, and is skipped (only) when that variable is absent.
"""

from __future__ import annotations

import functools
import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

import pytest

from aliak.credentials import Secret
from aliak.model import Account, KeyAlgorithm, KeyRecord, KeyStatus, Owner, RamUser
from aliak.sealing import ENV_MASTER_KEY, MasterKeyring
from aliak.storage.memory import MemoryStore
from aliak.storage.protocols import AsyncStore, Store
from aliak.storage.sqlite import SQLiteStore


class BackendStore(Store, Protocol):
    def as_async(self) -> AsyncStore: ...


class OpenStore(Protocol):
    def __call__(self, directory: Path, **options: object) -> BackendStore: ...


@dataclass(frozen=True)
class Backend:
    """How to open a fresh, empty store; ``directory`` is private to the test, and
    ``options`` are keyword arguments every backend's store takes (e.g.
    ``max_source_ips_per_key``)."""

    open: OpenStore
    needs_env: str | None = None  # e.g. "ALIAK_TEST_POSTGRES_URL" for a server backend
    # A second store object on the same data, as another process would open it; None
    # when nothing outside the store object can reach its data (memory, ":memory:").
    # Called with the directory the first was opened in, and the first store.
    reopen: Callable[[Path, BackendStore], BackendStore] | None = None


def _memory_with_redis_nonces(directory: Path, **options: object) -> BackendStore:
    """Keys in memory, nonces in Redis (a fresh key prefix, so tests never share claims)."""
    import uuid

    from aliak.storage.composite import CompositeStore
    from aliak.storage.redis import RedisNonceStore

    nonces = RedisNonceStore(
        os.environ["ALIAK_TEST_REDIS_URL"], prefix=f"aliak-test:{uuid.uuid4().hex}:"
    )
    return CompositeStore(MemoryStore(**options), nonces=nonces)


POSTGRES_DSN = "ALIAK_TEST_POSTGRES_DSN"


def new_schema_name() -> str:
    """A PostgreSQL schema no other test uses: each test's store lives in its own."""
    return f"aliak_test_{secrets.token_hex(6)}"


def drop_schema(dsn: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


@functools.cache
def _throwaway_postgres_store() -> type[BackendStore]:
    """PostgresStore in a fresh schema, dropped when the store is closed. Imported late,
    so the other backends run where psycopg is not installed."""
    from aliak.storage.postgres import PostgresStore

    class ThrowawaySchemaStore(PostgresStore):
        def __init__(self, **options: object) -> None:
            self.dsn = os.environ[POSTGRES_DSN]
            self.throwaway_schema = new_schema_name()
            self.dropped = False
            super().__init__(
                self.dsn,
                schema=self.throwaway_schema,
                master_key=MasterKeyring.generate(),
                **options,
            )

        def close(self) -> None:
            super().close()
            if not self.dropped:
                self.dropped = True
                drop_schema(self.dsn, self.throwaway_schema)

    return ThrowawaySchemaStore


def _same_schema(directory: Path, store: BackendStore) -> BackendStore:
    from aliak.storage.postgres import PostgresStore

    dsn, schema = store.dsn, store.throwaway_schema  # type: ignore[attr-defined]
    return PostgresStore(dsn, schema=schema, master_key=store.keyring)


def _same_file(directory: Path, store: BackendStore) -> BackendStore:
    return SQLiteStore(directory / "aliak.db")


BACKENDS: dict[str, Backend] = {
    "memory": Backend(lambda directory, **options: MemoryStore(**options)),
    "sqlite": Backend(
        lambda directory, **options: SQLiteStore(directory / "aliak.db", **options),
        reopen=_same_file,
    ),
    "sqlite-memory": Backend(lambda directory, **options: SQLiteStore(":memory:", **options)),
    "postgres": Backend(
        lambda directory, **options: _throwaway_postgres_store()(**options),
        needs_env=POSTGRES_DSN,
        reopen=_same_schema,
    ),
    "memory+redis": Backend(_memory_with_redis_nonces, needs_env="ALIAK_TEST_REDIS_URL"),
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    chosen = BACKENDS[request.param]
    if chosen.needs_env is not None and not os.environ.get(chosen.needs_env):
        pytest.skip(f"{request.param}: set {chosen.needs_env} to test against a server")
    # The file backends would take the master key from here instead of their key file.
    monkeypatch.delenv(ENV_MASTER_KEY, raising=False)
    return chosen


@pytest.fixture
def open_store(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., BackendStore]]:
    """Opens as many fresh stores of the backend as a test wants (with the store options
    given); closes them after."""
    opened: list[BackendStore] = []

    def open_fresh(**options: object) -> BackendStore:
        directory = tmp_path_factory.mktemp("store")
        store = backend.open(directory, **options)
        directories[id(store)] = directory
        opened.append(store)
        return store

    directories: dict[int, Path] = {}
    open_fresh.directories = directories  # type: ignore[attr-defined]
    yield open_fresh
    for store in reversed(opened):
        store.close()


@pytest.fixture
def reopen_store(
    backend: Backend, open_store: Callable[[], BackendStore]
) -> Iterator[Callable[[BackendStore], BackendStore]]:
    """``reopen(store)``: a second store object on the same data, as another process
    would open it (closed after the test); the test is skipped for a backend whose data
    nothing outside the store object can reach."""
    if backend.reopen is None:
        pytest.skip("nothing outside this store object can reach its data")
    reopen = backend.reopen
    opened: list[BackendStore] = []
    directories: dict[int, Path] = open_store.directories  # type: ignore[attr-defined]

    def second(store: BackendStore) -> BackendStore:
        other = reopen(directories[id(store)], store)
        opened.append(other)
        return other

    yield second
    for other in opened:
        other.close()


@pytest.fixture
def store(open_store: Callable[[], BackendStore]) -> BackendStore:
    return open_store()


@pytest.fixture
def async_store(store: BackendStore) -> AsyncStore:
    return store.as_async()


# -- records --------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 8, 0, 0, tzinfo=timezone.utc)
ACCOUNT = Account("1234567890123456")
ALICE = RamUser("1234567890123456", "alice")
BOB = RamUser("1234567890123456", "bob")
KEYRING = MasterKeyring.generate()
RSA_PUBLIC_KEY = (
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo\n"
    "-----END PUBLIC KEY-----\n"
)
_serial = itertools.count(1)


def new_key_id() -> str:
    return f"LTAI{next(_serial):020d}"


def hmac_record(
    owner: Owner = ALICE,
    *,
    access_key_id: str | None = None,
    created_at: datetime = T0,
    **changes: object,
) -> KeyRecord:
    key_id = access_key_id or new_key_id()
    fields: dict[str, object] = {
        "access_key_id": key_id,
        "owner": owner,
        "status": KeyStatus.ACTIVE,
        "created_at": created_at,
        "algorithm": KeyAlgorithm.HMAC,
        "sealed_secret": KEYRING.seal_secret(key_id, Secret(f"secret-of-{key_id}")),
    }
    fields.update(changes)
    return KeyRecord(**fields)


def rsa_record(owner: Owner = ACCOUNT, *, created_at: datetime = T0) -> KeyRecord:
    return KeyRecord(
        access_key_id=new_key_id(),
        owner=owner,
        status=KeyStatus.ACTIVE,
        created_at=created_at,
        algorithm=KeyAlgorithm.RSA,
        public_key=RSA_PUBLIC_KEY,
    )


def at(seconds_after_t0: int) -> datetime:
    return T0 + timedelta(seconds=seconds_after_t0)


def ts(seconds_after_t0: int) -> float:
    return at(seconds_after_t0).timestamp()
