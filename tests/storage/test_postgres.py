"""What only the PostgreSQL backend promises: a schema per deployment, migrations run once
by a fleet starting together, clear errors at startup, races between servers decided by
the database, failing closed while the server is down and recovering by itself after.

Runs only against a real server: set ALIAK_TEST_POSTGRES_DSN (``.ci/services run ...``
does). The fault test also needs ALIAK_TEST_POSTGRES_CTL to stop and restart it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import socket
import subprocess
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import attrs
import pytest

from .conftest import (
    ACCOUNT,
    ALICE,
    BOB,
    POSTGRES_DSN,
    at,
    drop_schema,
    hmac_record,
    new_schema_name,
    ts,
)

pytestmark = pytest.mark.skipif(
    not os.environ.get(POSTGRES_DSN), reason=f"set {POSTGRES_DSN} to test against a server"
)
psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402

import aliak.storage.postgres as postgres_backend  # noqa: E402
from aliak.acl import NetworkPolicy  # noqa: E402
from aliak.credentials import Secret  # noqa: E402
from aliak.errors import (  # noqa: E402
    AccessKeyLimitExceeded,
    AccessKeyNotFound,
    AliakError,
    InternalError,
    InvalidParameter,
    ServiceUnavailable,
)
from aliak.model import AuditEvent, KeyRecord, KeyStatus, LastUsed, UsageRecord  # noqa: E402
from aliak.sealing import ENV_MASTER_KEY, MasterKeyring  # noqa: E402
from aliak.storage.postgres import (  # noqa: E402
    SCHEMA_VERSION,
    AsyncPostgresStore,
    PostgresStore,
)
from aliak.storage.protocols import PolicyTarget  # noqa: E402

CTL = "ALIAK_TEST_POSTGRES_CTL"
KEYRING = MasterKeyring.generate()
NOW = 1_700_000_000.0
EVENT = AuditEvent(at=at(0), actor="admin@1234567890123456", action="Test")
T = TypeVar("T")


@pytest.fixture(autouse=True)
def no_master_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MASTER_KEY, raising=False)


@pytest.fixture
def dsn() -> str:
    return os.environ[POSTGRES_DSN]


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    """A schema name of this test's own, dropped after it."""
    name = new_schema_name()
    yield name
    drop_schema(dsn, name)


@pytest.fixture
def store(dsn: str, schema: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(dsn, schema=schema, master_key=KEYRING)
    yield opened
    opened.close()


def raw(dsn: str, schema: str) -> Any:
    """A plain connection looking at the schema, for what the store does not show."""
    connection = psycopg.connect(dsn, autocommit=True)
    connection.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    return connection


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def unreachable_dsn(password: str = "s3cret-Pa55word") -> str:
    return f"postgresql://aliak:{password}@127.0.0.1:{unused_port()}/aliak"


def full_text(error: BaseException) -> str:
    """Everything a log would show of an error and the errors chained to it (their
    messages, reprs, details; not the source lines of the traceback)."""
    texts: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        texts += [str(seen), repr(seen), str(getattr(seen, "detail", ""))]
        texts += traceback.format_exception_only(seen)
        seen = seen.__cause__ or seen.__context__
    return "\n".join(texts)


# -- opening: the schema and its migrations ------------------------------------------------


def test_first_open_creates_the_schema_at_the_current_version(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    assert store.applied_migrations == tuple(range(1, SCHEMA_VERSION + 1))
    with raw(dsn, schema) as connection:
        versions = connection.execute(
            "SELECT version FROM aliak_schema_migrations ORDER BY version"
        ).fetchall()
    assert versions == [(version,) for version in range(1, SCHEMA_VERSION + 1)]
    again = PostgresStore(dsn, schema=schema, master_key=KEYRING, migrate=False)
    assert again.applied_migrations == ()
    again.close()


def migrate_in_another_process(
    dsn: str, schema: str, key: str, start: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    try:
        start.wait(timeout=60)  # all four construct the store at the same instant
        store = PostgresStore(dsn, schema=schema, master_key=key)
        claimed = store.claim_nonce("LTAIkey", "once", now=NOW, expires_at=NOW + 900)
        results.put((store.applied_migrations, claimed))
        store.close()
    except BaseException as error:
        results.put(f"{type(error).__name__}: {error}")


def test_four_processes_starting_together_migrate_exactly_once(dsn: str, schema: str) -> None:
    outcomes = run_processes(migrate_in_another_process, [(dsn, schema, KEYRING.to_text())] * 4)
    applied = [version for versions, _ in outcomes for version in versions]
    assert sorted(applied) == list(range(1, SCHEMA_VERSION + 1))  # each step once, in all
    assert sorted(claimed for _, claimed in outcomes) == [False, False, False, True]
    with raw(dsn, schema) as connection:
        (count,) = connection.execute("SELECT count(*) FROM aliak_schema_migrations").fetchone()
    assert count == SCHEMA_VERSION


@pytest.mark.parametrize("exists", [True, False], ids=["empty-schema", "no-schema"])
def test_migrate_false_without_the_tables_is_refused_at_construction(
    dsn: str, schema: str, exists: bool
) -> None:
    if exists:
        with raw(dsn, "public") as connection:
            connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with pytest.raises(InvalidParameter) as refused:
        PostgresStore(dsn, schema=schema, master_key=KEYRING, migrate=False)
    assert "run migrations" in str(refused.value)
    assert schema in str(refused.value)


def test_outdated_schema_is_refused_without_migrate_and_brought_forward_with_it(
    dsn: str, schema: str
) -> None:
    # A schema left at version 1, holding a key written then (sealed under the keyring
    # the store is opened with: a store refuses a keyring that opens none of its secrets).
    record = hmac_record(ALICE)
    record = attrs.evolve(
        record, sealed_secret=KEYRING.seal_secret(record.access_key_id, Secret("s3cr3t"))
    )
    with raw(dsn, "public") as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    with raw(dsn, schema) as connection:
        for statement in postgres_backend._MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute(
            "CREATE TABLE aliak_schema_migrations (version integer PRIMARY KEY, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        connection.execute("INSERT INTO aliak_schema_migrations (version) VALUES (1)")
        connection.execute(
            "INSERT INTO aliak_keys (access_key_id, account_id, user_name, status, created_at, "
            "algorithm, sealed_secret) VALUES (%s, %s, %s, 'Active', %s, 'HMAC', %s)",
            (
                record.access_key_id,
                ALICE.account_id,
                ALICE.name,
                int(record.created_at.timestamp()),
                record.sealed_secret,
            ),
        )
    with pytest.raises(InvalidParameter) as refused:
        PostgresStore(dsn, schema=schema, master_key=KEYRING, migrate=False)
    assert "version 1" in str(refused.value)
    assert "run migrations" in str(refused.value)
    store = PostgresStore(dsn, schema=schema, master_key=KEYRING)
    try:
        assert store.applied_migrations == tuple(range(2, SCHEMA_VERSION + 1))
        assert store.get_key(record.access_key_id) == record
        store.append_audit_event(EVENT)  # version 2 brought the audit trail
        assert store.audit_events() == [EVENT]
    finally:
        store.close()


def test_schema_of_a_newer_aliak_is_refused_at_construction(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    with raw(dsn, schema) as connection:
        connection.execute(
            "INSERT INTO aliak_schema_migrations (version) VALUES (%s)", (SCHEMA_VERSION + 1,)
        )
    for migrate in (True, False):
        with pytest.raises(InvalidParameter) as refused:
            PostgresStore(dsn, schema=schema, master_key=KEYRING, migrate=migrate)
        assert "newer" in str(refused.value)
        assert "upgrade aliak" in str(refused.value)


# -- opening: the master key and the DSN -----------------------------------------------------


def test_store_without_a_master_key_is_refused_before_connecting() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidParameter) as refused:
        PostgresStore(unreachable_dsn())  # no key given, none in the environment
    assert time.monotonic() - started < 1
    assert refused.value.parameter == "MasterKey"
    assert ENV_MASTER_KEY in str(refused.value)
    assert "same one" in str(refused.value)


def test_master_key_from_the_environment_is_used(
    dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_MASTER_KEY, KEYRING.to_text())
    store = PostgresStore(dsn, schema=schema)
    try:
        sealed = KEYRING.seal_secret("LTAIfromEnv", Secret("s3cr3t"))
        assert store.keyring.open_secret("LTAIfromEnv", sealed) == Secret("s3cr3t")
        assert store.reload_keyring() is store.keyring
    finally:
        store.close()


def test_unreachable_server_fails_at_construction_within_the_timeout_without_the_password() -> None:
    password = "s3cret-Pa55word"
    target = unreachable_dsn(password)
    port = target.rsplit(":", 1)[1].split("/")[0]
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as refused:
        PostgresStore(target, master_key=KEYRING, connect_timeout=2)
    assert time.monotonic() - started < 3
    error = refused.value
    assert (error.code, error.http_status) == ("ServiceUnavailable", 503)
    assert f"127.0.0.1:{port}" in str(error)
    assert isinstance(error.__cause__, psycopg.Error)
    assert password not in full_text(error)


def test_unparseable_dsn_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidParameter) as refused:
        PostgresStore("host=localhost password='s3cret-Pa55word", master_key=KEYRING)
    assert refused.value.parameter == "dsn"
    assert "s3cret" not in full_text(refused.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("schema", "1starts_with_a_digit"),
        ("schema", "has-dash"),
        ("schema", ""),
        ("min_size", -1),
        ("max_size", 0),
        ("connect_timeout", 0),
        ("connect_timeout", "5"),
        ("prune_every", -1),
        ("prune_every", True),
    ],
)
def test_bad_options_are_refused_before_connecting(option: str, value: object) -> None:
    with pytest.raises(InvalidParameter) as refused:
        PostgresStore(unreachable_dsn(), master_key=KEYRING, **{option: value})
    assert refused.value.parameter == option


def test_repr_names_the_server_and_schema_never_the_password(schema: str) -> None:
    target = os.environ[POSTGRES_DSN].replace("postgresql://aliak@", "postgresql://aliak:pw-x9@")
    store = PostgresStore(target, schema=schema, master_key=KEYRING)
    try:
        for text in (repr(store), repr(store.as_async())):
            assert schema in text
            assert "127.0.0.1" in text
            assert "pw-x9" not in text
    finally:
        store.close()


# -- one schema per deployment; one schema shared by a fleet ------------------------------------


def test_stores_in_different_schemas_never_see_each_others_rows(
    dsn: str, store: PostgresStore
) -> None:
    other_schema = new_schema_name()
    other = PostgresStore(dsn, schema=other_schema, master_key=KEYRING)
    try:
        record = hmac_record()
        store.add_key(record, max_keys_per_owner=5)
        store.set_setting("allow_root_keys", "true")
        assert store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 60)
        assert other.get_key(record.access_key_id) is None
        assert other.get_setting("allow_root_keys") is None
        assert other.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 60)
    finally:
        other.close()
        drop_schema(dsn, other_schema)


def test_fleet_members_on_one_schema_share_keys_nonces_and_settings(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    member = PostgresStore(dsn, schema=schema, master_key=KEYRING)
    try:
        assert member.applied_migrations == ()
        record = hmac_record()
        store.add_key(record, max_keys_per_owner=5)
        assert member.get_key(record.access_key_id) == record
        assert store.claim_nonce("LTAIkey", "once", now=NOW, expires_at=NOW + 60)
        assert not member.claim_nonce("LTAIkey", "once", now=NOW, expires_at=NOW + 60)
        member.set_setting("allow_root_keys", "false")
        assert store.get_setting("allow_root_keys") == "false"
    finally:
        member.close()


# -- what the engine enforces ----------------------------------------------------------------


def test_engine_refuses_to_change_or_delete_audit_events(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    store.append_audit_event(EVENT)
    with raw(dsn, schema) as connection:
        for statement in (
            "UPDATE aliak_audit SET actor = 'someone else'",
            "DELETE FROM aliak_audit",
            "TRUNCATE aliak_audit",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                connection.execute(statement)
    assert store.audit_events() == [EVENT]


def fail_audit_writes(dsn: str, schema: str, when: str) -> None:
    """Make the server refuse audit events matching ``when``, as a full disk or a bug
    would refuse them."""
    with raw(dsn, schema) as connection:
        connection.execute(
            "CREATE FUNCTION test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit write refused'; END $$"
        )
        connection.execute(
            "CREATE TRIGGER test_refuse_audit BEFORE INSERT ON aliak_audit FOR EACH ROW "
            f"WHEN ({when}) EXECUTE FUNCTION test_refuse_audit()"
        )


def test_change_whose_audit_event_cannot_be_written_is_rolled_back(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    fail_audit_writes(dsn, schema, "NEW.action = 'CreateAccessKey'")
    record = hmac_record()
    with pytest.raises(InternalError) as failed:
        store.add_key(
            record, max_keys_per_owner=5, audit=attrs.evolve(EVENT, action="CreateAccessKey")
        )
    assert not isinstance(failed.value, ServiceUnavailable)
    assert isinstance(failed.value.__cause__, psycopg.Error)
    assert store.get_key(record.access_key_id) is None
    assert store.audit_events() == []


def test_recycle_whose_eviction_cannot_be_audited_changes_nothing(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    binned = [hmac_record(ALICE, status=KeyStatus.INACTIVE) for _ in range(4)]
    for when, record in enumerate(binned):
        store.add_key(record, max_keys_per_owner=10)
        if when < 3:
            store.recycle_key(record.access_key_id, now=at(when), max_in_recycle_bin=3)
    fail_audit_writes(dsn, schema, "NEW.action = 'PurgeAccessKey'")
    with pytest.raises(InternalError):
        store.recycle_key(
            binned[3].access_key_id, now=at(9), max_in_recycle_bin=3, audit=EVENT.about(ALICE)
        )
    assert [key.access_key_id for key in store.list_recycle_bin(ALICE)] == [
        record.access_key_id for record in binned[:3]
    ]
    assert store.get_key(binned[3].access_key_id) == binned[3]
    assert store.audit_events() == []


def test_purge_expired_that_fails_half_way_purges_nothing(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    keys = [hmac_record(ALICE, status=KeyStatus.INACTIVE) for _ in range(3)]
    for record in keys:
        store.add_key(record, max_keys_per_owner=10)
        store.recycle_key(record.access_key_id, now=at(0), max_in_recycle_bin=3)
    last = max(record.access_key_id for record in keys)
    fail_audit_writes(dsn, schema, f"NEW.access_key_id = '{last}'")
    with pytest.raises(InternalError):
        store.purge_expired(now=at(0) + timedelta(days=30), audit=EVENT)
    assert len(store.list_recycle_bin(ALICE)) == 3
    assert store.audit_events() == []


def test_database_error_is_an_internal_error_never_a_psycopg_error(
    store: PostgresStore,
) -> None:
    with pytest.raises(InternalError) as failed:  # text columns cannot hold NUL
        store.claim_nonce("LTAIkey", "nul\x00byte", now=NOW, expires_at=NOW + 60)
    assert not isinstance(failed.value, ServiceUnavailable)
    assert isinstance(failed.value.__cause__, psycopg.Error)
    assert store.claim_nonce("LTAIkey", "fine", now=NOW, expires_at=NOW + 60)


def test_closed_store_refuses_to_answer(dsn: str, schema: str) -> None:
    store = PostgresStore(dsn, schema=schema, master_key=KEYRING)
    store.close()
    with pytest.raises(InternalError, match="closed"):
        store.get_key("LTAIanything")
    with pytest.raises(InternalError, match="closed"):
        asyncio.run(store.as_async().get_key("LTAIanything"))


def test_claims_prune_expired_nonces_so_the_table_stays_bounded(dsn: str, schema: str) -> None:
    store = PostgresStore(dsn, schema=schema, master_key=KEYRING, prune_every=3)
    try:
        for number in range(3):
            store.claim_nonce("LTAIkey", f"old-{number}", now=NOW, expires_at=NOW + 1)
        for number in range(3):  # the third of these prunes what expired by NOW + 10
            store.claim_nonce("LTAIkey", f"new-{number}", now=NOW + 10, expires_at=NOW + 99)
        with raw(dsn, schema) as connection:
            rows = connection.execute("SELECT nonce FROM aliak_nonces ORDER BY nonce").fetchall()
        assert rows == [("new-0",), ("new-1",), ("new-2",)]
    finally:
        store.close()


def test_set_keyring_takes_only_a_keyring(store: PostgresStore) -> None:
    with pytest.raises(InvalidParameter):
        store.set_keyring("not a keyring")  # type: ignore[arg-type]
    rotated = KEYRING.with_new_key()
    store.set_keyring(rotated)
    assert store.keyring is rotated
    assert store.as_async().keyring is rotated


# -- races between servers --------------------------------------------------------------------


def run_processes(target: Callable[..., None], arguments: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``target(*arguments[i], start, results)`` in one spawned process each."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(arguments))
    results = context.Queue()
    processes = [context.Process(target=target, args=(*args, start, results)) for args in arguments]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=90) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert [outcome for outcome in outcomes if isinstance(outcome, str)] == []
    return outcomes


def lifecycle_in_another_process(
    where: tuple[str, str, str], steps: list[tuple[str, Any]], start: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    """Run each (operation, argument) step once every process has reached it."""
    try:
        dsn, schema, key = where
        store = PostgresStore(dsn, schema=schema, master_key=key)
        outcomes: list[str] = []
        for step, (operation, argument) in enumerate(steps):
            start.wait(timeout=60)
            try:
                if operation == "add":
                    store.add_key(argument, max_keys_per_owner=2)
                    outcomes.append("ok")
                elif operation == "restore":
                    store.restore_key(argument, now=at(1), max_keys_per_owner=2)
                    outcomes.append("ok")
                elif operation == "purge":
                    store.purge_key(argument, only_if="in_recycle_bin")
                    outcomes.append("ok")
                else:
                    event = AuditEvent(at=at(2), actor="admin", action="Delete").about(ALICE)
                    evicted = store.recycle_key(
                        argument, now=at(step), max_in_recycle_bin=3, audit=event
                    )
                    outcomes.append("ok:" + ",".join(evicted))
            except AliakError as refused:
                outcomes.append(type(refused).__name__)
        results.put(outcomes)
        store.close()
    except BaseException as error:
        results.put(f"{type(error).__name__}: {error}")


def in_processes(dsn: str, schema: str, plans: list[list[tuple[str, Any]]]) -> list[list[str]]:
    return run_processes(
        lifecycle_in_another_process,
        [((dsn, schema, KEYRING.to_text()), plan) for plan in plans],
    )


def test_adds_for_one_owner_from_four_processes_never_pass_the_limit(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    owners = [attrs.evolve(ALICE, name=f"owner-{number}") for number in range(5)]
    plans = [[("add", hmac_record(owner)) for owner in owners] for _ in range(4)]
    outcomes = in_processes(dsn, schema, plans)
    for number, owner in enumerate(owners):
        results = sorted(outcome[number] for outcome in outcomes)
        assert results == ["AccessKeyLimitExceeded"] * 2 + ["ok"] * 2
        assert len(store.list_keys(owner)) == 2


def on_threads(count: int, action: Callable[[int], object]) -> list[object]:
    """``action(i)`` on ``count`` threads released together: each result or error."""
    start = threading.Barrier(count)
    outcomes: list[object] = [None] * count

    def worker(index: int) -> None:
        start.wait()
        try:
            outcomes[index] = action(index)
        except Exception as error:
            outcomes[index] = error

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return outcomes


def test_adds_for_one_owner_from_eight_threads_on_two_servers_never_pass_the_limit(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    member = PostgresStore(dsn, schema=schema, master_key=KEYRING)
    try:
        for round_number in range(3):
            owner = attrs.evolve(BOB, name=f"bob-{round_number}")
            records = [hmac_record(owner) for _ in range(8)]
            outcomes = on_threads(
                8,
                lambda index, records=records: (store if index % 2 else member).add_key(
                    records[index], max_keys_per_owner=3
                ),
            )
            assert outcomes.count(None) == 3
            refusals = [outcome for outcome in outcomes if outcome is not None]
            assert all(isinstance(refused, AccessKeyLimitExceeded) for refused in refusals)
            assert len(store.list_keys(owner)) == 3
    finally:
        member.close()


def test_restore_and_purge_racing_from_two_processes_have_one_winner_each_time(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    rounds = []
    for number in range(8):
        owner = attrs.evolve(ALICE, name=f"owner-{number}")
        record = hmac_record(owner, status=KeyStatus.INACTIVE, recycled_at=at(0))
        store.add_key(record, max_keys_per_owner=2)
        rounds.append(record.access_key_id)
    outcomes = in_processes(
        dsn,
        schema,
        [[("restore", key_id) for key_id in rounds], [("purge", key_id) for key_id in rounds]],
    )
    for number, key_id in enumerate(rounds):
        assert sorted(outcome[number] for outcome in outcomes) == ["AccessKeyNotInRecycleBin", "ok"]
        stored = store.get_key(key_id)
        assert stored is None or not stored.in_recycle_bin
    assert all(not record.in_recycle_bin for record in store.iter_keys())


def test_recycles_racing_from_four_processes_never_overfill_the_bin(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    keys = [hmac_record(ALICE, status=KeyStatus.INACTIVE) for _ in range(8)]
    for record in keys:
        store.add_key(record, max_keys_per_owner=10)
    plans = [[("recycle", record.access_key_id) for record in keys[i::4]] for i in range(4)]
    outcomes = in_processes(dsn, schema, plans)
    evicted = [
        key_id
        for outcome in outcomes
        for result in outcome
        for key_id in result.removeprefix("ok:").split(",")
        if key_id
    ]
    in_bin = [record.access_key_id for record in store.list_recycle_bin(ALICE)]
    assert len(in_bin) == 3
    assert len(evicted) == len(set(evicted)) == 5
    assert sorted(evicted + in_bin) == sorted(record.access_key_id for record in keys)
    purges = [event for event in store.audit_events() if event.action == "PurgeAccessKey"]
    assert sorted(event.access_key_id or "" for event in purges) == sorted(evicted)


# -- failing closed, and recovering --------------------------------------------------------------


def server(action: str) -> None:
    subprocess.run([os.environ[CTL], action], check=action == "stop", timeout=60)


def eventually(call: Callable[[], T], *, within: float = 15.0) -> tuple[T, float]:
    """``call()``'s first answer that is not ServiceUnavailable, and how long it took."""
    started = time.monotonic()
    while True:
        try:
            return call(), time.monotonic() - started
        except ServiceUnavailable:
            if time.monotonic() - started > within:
                raise
            time.sleep(0.1)


async def eventually_async(
    call: Callable[[], Awaitable[T]], *, within: float = 15.0
) -> tuple[T, float]:
    started = time.monotonic()
    while True:
        try:
            return await call(), time.monotonic() - started
        except ServiceUnavailable:
            if time.monotonic() - started > within:
                raise
            await asyncio.sleep(0.1)


def assert_fails_closed(error: ServiceUnavailable) -> None:
    assert (error.code, error.http_status) == ("ServiceUnavailable", 503)
    assert isinstance(error.__cause__, psycopg.Error)


@pytest.mark.skipif(not os.environ.get(CTL), reason=f"set {CTL} to stop and restart the server")
def test_server_down_fails_closed_and_both_faces_recover_by_themselves(
    dsn: str, schema: str
) -> None:
    store = PostgresStore(dsn, schema=schema, master_key=KEYRING, connect_timeout=1)
    async_store = store.as_async()
    unopened = PostgresStore(dsn, schema=schema, master_key=KEYRING, connect_timeout=1)
    kept = hmac_record()
    store.add_key(kept, max_keys_per_owner=9)
    lost_sync, lost_async = hmac_record(), hmac_record()
    create = attrs.evolve(EVENT, action="CreateAccessKey")

    async def scenario() -> tuple[float, float]:
        assert await async_store.get_key(kept.access_key_id) == kept  # opens its pool
        server("stop")
        try:
            with pytest.raises(ServiceUnavailable) as read:
                store.get_key(kept.access_key_id)
            assert_fails_closed(read.value)
            with pytest.raises(ServiceUnavailable) as write:
                store.add_key(lost_sync, max_keys_per_owner=9, audit=create)
            assert_fails_closed(write.value)
            with pytest.raises(ServiceUnavailable) as claim:
                await async_store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 60)
            assert_fails_closed(claim.value)
            with pytest.raises(ServiceUnavailable):
                await async_store.add_key(lost_async, max_keys_per_owner=9, audit=create)
            # An async face first used while the server is down: every waiting call
            # fails closed, and so does an explicit open().
            calls = [unopened.as_async().get_key(kept.access_key_id) for _ in range(4)]
            for outcome in await asyncio.gather(*calls, return_exceptions=True):
                assert isinstance(outcome, ServiceUnavailable)
            with pytest.raises(ServiceUnavailable):
                await unopened.as_async().open()
        finally:
            server("start")
        found, sync_took = eventually(lambda: store.get_key(kept.access_key_id))
        assert found == kept
        found, async_took = await eventually_async(lambda: async_store.get_key(kept.access_key_id))
        assert found == kept
        assert await unopened.as_async().get_key(kept.access_key_id) == kept
        # Nothing issued while the server was down was half-written.
        for record in (lost_sync, lost_async):
            assert await async_store.get_key(record.access_key_id) is None
            assert store.get_key(record.access_key_id) is None
        assert store.audit_events() == []
        # Writes work again on both faces.
        assert await async_store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 60)
        store.add_key(lost_sync, max_keys_per_owner=9)
        return sync_took, async_took

    try:
        sync_took, async_took = asyncio.run(scenario())
    finally:
        store.close()
        unopened.close()
    print(f"recovered {sync_took:.2f} s (sync) and {async_took:.2f} s (async) after restart")
    assert sync_took < 5
    assert async_took < 5


def terminate_other_sessions(dsn: str) -> None:
    """Kill every other session of the database, as a failover or a DBA would."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    time.sleep(0.2)


def test_connections_killed_while_idle_are_replaced_unseen(dsn: str, store: PostgresStore) -> None:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=5)
    terminate_other_sessions(dsn)
    # The pool's check sees the dead connection before handing it out.
    assert store.get_key(record.access_key_id) == record
    terminate_other_sessions(dsn)
    store.set_key_status(record.access_key_id, KeyStatus.INACTIVE)
    assert store.get_key(record.access_key_id) == attrs.evolve(record, status=KeyStatus.INACTIVE)


def test_a_read_that_meets_a_dead_connection_is_retried_once_a_write_never(
    dsn: str, store: PostgresStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=5)
    # Hide the death from the pool's check, as when the connection dies between the
    # check and the query.
    monkeypatch.setattr(postgres_backend, "_has_input", lambda socket: False)
    terminate_other_sessions(dsn)
    assert store.get_key(record.access_key_id) == record  # retried on a fresh connection
    terminate_other_sessions(dsn)
    other = hmac_record()
    with pytest.raises(ServiceUnavailable):
        store.add_key(other, max_keys_per_owner=5)  # whether it committed is unknown: no retry
    assert store.get_key(other.access_key_id) is None


# -- the async face ---------------------------------------------------------------------------------


def test_async_face_is_one_object_opened_lazily_or_explicitly(store: PostgresStore) -> None:
    async_store = store.as_async()
    assert isinstance(async_store, AsyncPostgresStore)
    assert store.as_async() is async_store
    record = hmac_record()

    async def first_loop() -> None:
        await async_store.open()  # explicitly, ahead of traffic
        await async_store.add_key(record, max_keys_per_owner=5)

    async def second_loop() -> KeyRecord | None:
        return await async_store.get_key(record.access_key_id)  # lazily, in a new loop

    asyncio.run(first_loop())
    assert asyncio.run(second_loop()) == record
    assert store.get_key(record.access_key_id) == record


def test_async_aclose_closes_the_store(dsn: str, schema: str) -> None:
    store = PostgresStore(dsn, schema=schema, master_key=KEYRING)

    async def scenario() -> None:
        async with store.as_async() as async_store:
            await async_store.append_audit_event(EVENT)

    asyncio.run(scenario())
    with pytest.raises(InternalError, match="closed"):
        store.get_key("LTAIanything")


def test_async_face_does_the_work_of_the_sync_one(store: PostgresStore) -> None:
    async_store = store.as_async()
    record = hmac_record(ALICE)
    root = hmac_record(ACCOUNT)
    create = attrs.evolve(EVENT, action="CreateAccessKey", access_key_id=record.access_key_id)
    policy = NetworkPolicy(public=["203.0.113.0/24"])

    async def scenario() -> None:
        await async_store.add_key(record, max_keys_per_owner=1, audit=create.about(ALICE))
        await async_store.add_key(root, max_keys_per_owner=1)
        with pytest.raises(AccessKeyLimitExceeded):
            await async_store.add_key(hmac_record(ALICE), max_keys_per_owner=1)
        assert await async_store.get_key(record.access_key_id) == record
        assert await async_store.list_keys(ACCOUNT) == [root]
        disabled = await async_store.set_key_status(record.access_key_id, KeyStatus.INACTIVE)
        assert disabled == attrs.evolve(record, status=KeyStatus.INACTIVE)
        assert record.sealed_secret is not None
        assert await async_store.reseal_secret(record.access_key_id, record.sealed_secret, b"x")
        await async_store.set_network_policy(PolicyTarget.key(record.access_key_id), policy)
        assert (
            await async_store.get_network_policy(PolicyTarget.key(record.access_key_id)) == policy
        )
        await async_store.record_usage(
            [UsageRecord(record.access_key_id, ts(30), "Ecs", "192.0.2.1", ts(10))]
        )
        assert await async_store.get_last_used(record.access_key_id) == LastUsed(at(30), "Ecs")
        history = await async_store.source_ip_history(record.access_key_id)
        assert [(use.source_ip, use.first_seen, use.last_seen) for use in history] == [
            ("192.0.2.1", at(10), at(30))
        ]
        assert await async_store.audit_events(owner=ALICE) == [create.about(ALICE)]

    asyncio.run(scenario())
    # The sync face sees what the async one wrote, and the other way round.
    stored = store.get_key(record.access_key_id)
    assert stored is not None
    assert (stored.sealed_secret, stored.status) == (b"x", KeyStatus.INACTIVE)


def test_async_claims_racing_with_gather_on_two_servers_let_exactly_one_through(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    member = PostgresStore(dsn, schema=schema, master_key=KEYRING, max_size=4)
    faces = [store.as_async(), member.as_async()]

    async def scenario() -> list[bool]:
        claims = [
            faces[number % 2].claim_nonce(
                "LTAIkey", f"race-{round_number}", now=NOW, expires_at=NOW + 900
            )
            for round_number in range(5)
            for number in range(16)
        ]
        return list(await asyncio.gather(*claims))

    try:
        outcomes = asyncio.run(scenario())
    finally:
        member.close()
    for round_number in range(5):
        assert sorted(outcomes[round_number * 16 : (round_number + 1) * 16]) == [False] * 15 + [
            True
        ]


def test_async_face_keeps_the_event_loop_free(store: PostgresStore) -> None:
    """The async face waits on sockets, not threads: a slow statement leaves the loop
    running other work."""
    async_store = store.as_async()

    async def scenario() -> int:
        await async_store.open()
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        slow = postgres_backend._Query("SELECT pg_sleep(0.5)")

        def operation() -> Any:
            yield slow

        await async_store._run(operation)
        done = True
        await ticking
        return ticks

    assert asyncio.run(scenario()) >= 20


# -- LISTEN/NOTIFY: a change is announced to the fleet iff it commits -------------------


def notifications(connection: Any, timeout: float) -> list[str]:
    return [notify.payload for notify in connection.notifies(timeout=timeout)]


def listening_to(dsn: str, schema: str) -> Any:
    connection = psycopg.connect(dsn, autocommit=True)
    channel = postgres_backend._notify_channel(schema)
    connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return connection


def test_a_change_is_notified_inside_its_transaction_so_only_if_it_commits(
    dsn: str, schema: str, store: PostgresStore
) -> None:
    listener = listening_to(dsn, schema)
    try:
        record = hmac_record()
        store.add_key(record, max_keys_per_owner=5)
        assert notifications(listener, 1.0) == [record.access_key_id]
        with pytest.raises(AccessKeyNotFound):  # refused: nothing changed, nothing said
            store.set_key_status("LTAIneverStored00000000", KeyStatus.INACTIVE)
        assert not store.reseal_secret(record.access_key_id, b"old", b"new")
        fail_audit_writes(dsn, schema, "NEW.action = 'DisableAccessKey'")
        with pytest.raises(InternalError):  # rolled back, notification and all
            store.set_key_status(
                record.access_key_id,
                KeyStatus.INACTIVE,
                audit=attrs.evolve(EVENT, action="DisableAccessKey"),
            )
        assert notifications(listener, 0.5) == []
        assert store.get_key(record.access_key_id) == record
        store.set_network_policy(PolicyTarget.account(ALICE.account_id), NetworkPolicy())
        store.set_network_policy(PolicyTarget.key(record.access_key_id), NetworkPolicy())
        assert notifications(listener, 1.0) == ["*", record.access_key_id]
    finally:
        listener.close()


def test_stores_in_other_schemas_hear_nothing(dsn: str, schema: str, store: PostgresStore) -> None:
    elsewhere = new_schema_name()
    listener = listening_to(dsn, elsewhere)
    try:
        store.add_key(hmac_record(), max_keys_per_owner=5)
        assert notifications(listener, 0.5) == []
    finally:
        listener.close()


def test_the_notify_channel_name_fits_an_identifier() -> None:
    assert postgres_backend._notify_channel("public") == "aliak.public"
    long_names = ["a" * 63, "a" * 62 + "b"]
    channels = {postgres_backend._notify_channel(name) for name in long_names}
    assert len(channels) == 2
    assert all(len(channel) <= 63 for channel in channels)


def wait_until(condition: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def listener_threads(schema: str) -> list[threading.Thread]:
    name = f"aliak-postgres-listen-{schema}"
    return [thread for thread in threading.enumerate() if thread.name == name]


def test_one_listener_thread_per_store_started_by_the_first_subscriber_and_stopped_by_close(
    dsn: str, schema: str
) -> None:
    store = PostgresStore(dsn, schema=schema, master_key=KEYRING)
    assert listener_threads(schema) == []  # an administering process needs none
    heard: list[str | None] = []
    channel = store.invalidations
    assert channel is not None
    channel.subscribe(heard.append)
    channel.subscribe(heard.append)
    assert len(listener_threads(schema)) == 1
    wait_until(lambda: None in heard)  # listening: whatever happened before is unknown
    store.close()
    assert listener_threads(schema) == []


@pytest.mark.skipif(not os.environ.get(CTL), reason=f"set {CTL} to stop and restart the server")
def test_the_listener_reconnects_after_a_server_restart_and_drops_everything(
    dsn: str, schema: str, caplog: Any
) -> None:
    from aliak import KeyManager, RamUser, Request, Signer, Verifier

    owner = RamUser(ALICE.account_id, "listener-app")
    store = PostgresStore(dsn, schema=schema, master_key=KEYRING, connect_timeout=1)
    other = PostgresStore(dsn, schema=schema, master_key=KEYRING, connect_timeout=1)
    new = KeyManager(store).create_access_key(owner)

    def request() -> Request:
        return Signer(new.access_key).sign(
            Request("POST", host="api.example.com", path="/v1/orders", body=b"{}"),
            action="CreateOrder",
            version="2024-01-01",
        )

    heard: list[str | None] = []
    assert store.invalidations is not None
    store.invalidations.subscribe(heard.append)
    verifier = Verifier(store, freshness=60)
    try:
        wait_until(lambda: None in heard)
        verifier.verify(request())  # cached as Active for 60 s
        heard.clear()
        server("stop")
        try:
            time.sleep(0.5)
        finally:
            server("start")
        wait_until(lambda: None in heard)  # listening again; what was missed is unknown
        eventually(lambda: KeyManager(other).disable_access_key(new.access_key_id))
        wait_until(lambda: new.access_key_id in heard)
        with pytest.raises(AliakError) as refused:
            verifier.verify(request())
        assert refused.value.code == "InvalidAccessKeyId.Inactive"
        assert KEYRING.to_text() not in caplog.text
    finally:
        verifier.close()
        other.close()
        store.close()
