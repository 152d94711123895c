"""What only the SQLite backend promises: durability, WAL, the key file, several
processes on one file, bounded nonces, schema versions, clear errors, atomic batches."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

import aliak.storage.sqlite as sqlite_backend
from aliak import AccessKey, KeyManager, Request, Signer
from aliak.acl import NetworkPolicy
from aliak.credentials import Secret
from aliak.errors import (
    AccessKeyNotFound,
    AliakError,
    InternalError,
    InvalidAccessKeyIdInactive,
    InvalidParameter,
)
from aliak.model import AuditEvent, KeyStatus, LastUsed, RamUser, UsageRecord
from aliak.sealing import ENV_MASTER_KEY, MasterKeyring
from aliak.storage.protocols import PolicyTarget
from aliak.storage.rows import row_from_record
from aliak.storage.sqlite import SCHEMA_VERSION, SQLiteStore
from conftest import MakeVerifier

from .conftest import ALICE, KEYRING, at, hmac_record, new_key_id, ts

NOW = 1_700_000_000.0


@pytest.fixture(autouse=True)
def no_master_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MASTER_KEY, raising=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "aliak.db"


@pytest.fixture
def store(db: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(db)
    yield opened
    opened.close()


def raw(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(db, isolation_level=None)


# -- durability and the journal ---------------------------------------------------------


def test_everything_persists_across_close_and_reopen(db: Path) -> None:
    record = hmac_record()
    policy = NetworkPolicy(public=["203.0.113.0/24"])
    first = SQLiteStore(db)
    first.add_key(record, max_keys_per_owner=2)
    first.claim_nonce("LTAIkey", "n-1", now=NOW, expires_at=NOW + 900)
    first.set_network_policy(PolicyTarget.key(record.access_key_id), policy)
    first.record_usage([UsageRecord(record.access_key_id, ts(30), "Ecs", "192.0.2.1", ts(30))])
    first.close()

    again = SQLiteStore(db)
    try:
        assert again.get_key(record.access_key_id) is not None
        assert again.claim_nonce("LTAIkey", "n-1", now=NOW + 1, expires_at=NOW + 900) is False
        assert again.get_network_policy(PolicyTarget.key(record.access_key_id)) == policy
        assert again.get_last_used(record.access_key_id) == LastUsed(at(30), "Ecs")
        assert [use.source_ip for use in again.source_ip_history(record.access_key_id)] == [
            "192.0.2.1"
        ]
    finally:
        again.close()


def test_database_is_in_wal_journal_mode(db: Path, store: SQLiteStore) -> None:
    with raw(db) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_schema_version_is_recorded_at_open(db: Path, store: SQLiteStore) -> None:
    with raw(db) as connection:
        assert connection.execute("SELECT version FROM aliak_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]


def test_each_thread_uses_its_own_connection(store: SQLiteStore) -> None:
    seen: list[sqlite3.Connection] = []
    thread = threading.Thread(target=lambda: seen.append(store._connection()))
    thread.start()
    thread.join()
    assert seen[0] is not store._connection()


def test_connection_of_a_finished_thread_is_closed(store: SQLiteStore) -> None:
    before = len(store._open)
    thread = threading.Thread(target=lambda: store.get_key("LTAIanything"))
    thread.start()
    thread.join()
    del thread
    assert len(store._open) == before


# -- the master key ------------------------------------------------------------------


def test_key_file_is_created_beside_the_database_with_mode_0600(
    db: Path, store: SQLiteStore
) -> None:
    key_file = db.with_name("aliak.db.key")
    assert key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_second_store_on_the_file_opens_secrets_sealed_by_the_first(db: Path) -> None:
    first = SQLiteStore(db)
    key_id = new_key_id()
    sealed = first.keyring.seal_secret(key_id, Secret("s3cr3t"))
    first.add_key(hmac_record(access_key_id=key_id, sealed_secret=sealed), max_keys_per_owner=2)
    first.close()
    second = SQLiteStore(db)
    try:
        stored = second.get_key(key_id)
        assert stored is not None
        assert stored.sealed_secret is not None
        assert second.keyring.open_secret(key_id, stored.sealed_secret) == Secret("s3cr3t")
    finally:
        second.close()


def test_master_key_argument_means_no_key_file(db: Path) -> None:
    keyring = MasterKeyring.generate()
    with_argument = SQLiteStore(db, master_key=keyring)
    try:
        assert with_argument.keyring is keyring
        assert not db.with_name("aliak.db.key").exists()
    finally:
        with_argument.close()


def test_environment_master_key_means_no_key_file(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keyring = MasterKeyring.generate()
    monkeypatch.setenv(ENV_MASTER_KEY, keyring.to_text())
    from_env = SQLiteStore(db)
    try:
        sealed = keyring.seal_secret("LTAIenv", Secret("s3cr3t"))
        assert from_env.keyring.open_secret("LTAIenv", sealed) == Secret("s3cr3t")
        assert not db.with_name("aliak.db.key").exists()
    finally:
        from_env.close()


def test_rotation_written_by_one_store_is_picked_up_by_reload_in_another(db: Path) -> None:
    first, second = SQLiteStore(db), SQLiteStore(db)
    try:
        rotated = first.keyring.with_new_key()
        first.set_keyring(rotated)
        before = second.keyring
        after = second.reload_keyring()
        assert (before.versions, after.versions) == ((1,), (1, 2))
        assert second.keyring is after
    finally:
        first.close()
        second.close()


def test_rotation_keeps_the_key_file_private(db: Path, store: SQLiteStore) -> None:
    store.set_keyring(store.keyring.with_new_key())
    key_file = db.with_name("aliak.db.key")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert MasterKeyring.from_text(key_file.read_text()).versions == (1, 2)


def test_in_memory_database_needs_no_key_file_and_is_shared_by_threads(tmp_path: Path) -> None:
    store = SQLiteStore(":memory:")
    try:
        record = hmac_record()
        thread = threading.Thread(
            target=store.add_key, args=(record,), kwargs={"max_keys_per_owner": 2}
        )
        thread.start()
        thread.join()
        assert store.get_key(record.access_key_id) == record
        assert list(tmp_path.iterdir()) == []
    finally:
        store.close()


def test_repr_shows_no_secret(store: SQLiteStore) -> None:
    text = repr(store)
    for version_line in store.keyring.to_text().splitlines():
        assert version_line.split(":", 1)[1] not in text
    assert "aliak.db" in text


# -- private files ------------------------------------------------------------------------


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def side_files(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


@pytest.fixture(params=[0o000, 0o022], ids=["umask-000", "umask-022"])
def permissive_umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def test_database_wal_shm_and_key_file_are_created_private(db: Path, permissive_umask: int) -> None:
    store = SQLiteStore(db)
    try:
        store.add_key(hmac_record(), max_keys_per_owner=2)  # the WAL holds data now
        for path in [*side_files(db), db.with_name("aliak.db.key")]:
            assert path.exists(), path
            assert mode_of(path) == 0o600, path
    finally:
        store.close()


def test_a_second_process_opening_the_file_keeps_it_private(
    db: Path, permissive_umask: int
) -> None:
    first = SQLiteStore(db)
    try:
        _in_child(_open_add_and_close, str(db))
        for path in side_files(db):
            assert mode_of(path) == 0o600, path
    finally:
        first.close()


def _open_add_and_close(path: str) -> None:
    store = SQLiteStore(path)
    store.add_key(hmac_record(), max_keys_per_owner=5)
    store.close()


def _in_child(target: Any, *args: object) -> None:
    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join(60)
    assert child.exitcode == 0


def test_an_existing_readable_database_is_tightened_with_a_warning(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = SQLiteStore(db)  # keeps -wal and -shm in place
    try:
        holder.add_key(hmac_record(), max_keys_per_owner=2)
        for path in side_files(db):
            path.chmod(0o644)
        with caplog.at_level("WARNING", logger="aliak"):
            SQLiteStore(db).close()
        for path in side_files(db):
            assert mode_of(path) == 0o600, path
        warned = " ".join(record.getMessage() for record in caplog.records)
        assert str(db) in warned
        assert "made private" in warned
        assert holder.get_key("LTAIneverStored") is None  # the open store carries on
    finally:
        holder.close()


def test_a_private_database_is_opened_without_a_warning(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    SQLiteStore(db).close()
    with caplog.at_level("WARNING", logger="aliak"):
        SQLiteStore(db).close()
    assert not caplog.records


def test_a_readable_database_that_cannot_be_tightened_is_refused(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    SQLiteStore(db).close()
    db.chmod(0o644)

    def not_the_owner(path: object, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", not_the_owner)
    with pytest.raises(InvalidParameter) as caught:
        SQLiteStore(db)
    assert "chmod 600" in str(caught.value)
    assert mode_of(db) == 0o644


def test_a_readable_key_file_is_refused_not_tightened(db: Path) -> None:
    SQLiteStore(db).close()
    key_file = db.with_name("aliak.db.key")
    key_file.chmod(0o644)
    with pytest.raises(InvalidParameter) as caught:
        SQLiteStore(db)
    assert "chmod 600" in str(caught.value)
    assert mode_of(key_file) == 0o644


# -- several processes on one file ---------------------------------------------------------


def claim_in_another_process(
    db: str, start: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    try:
        start.wait(timeout=60)
        store = SQLiteStore(db)  # a fresh file: all create the schema and key file at once
        start.wait(timeout=60)
        claimed = store.claim_nonce("LTAIkey", "once", now=NOW, expires_at=NOW + 900)
        results.put((claimed, fingerprint(store.keyring)))
        store.close()
    except BaseException as error:
        results.put(f"{type(error).__name__}: {error}")


def fingerprint(keyring: MasterKeyring) -> str:
    return hashlib.sha256(keyring.to_text().encode()).hexdigest()


def test_same_nonce_claimed_from_four_processes_lets_exactly_one_through(db: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(4)
    results = context.Queue()
    processes = [
        context.Process(target=claim_in_another_process, args=(str(db), start, results))
        for _ in range(4)
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert errors == []
    claims = [claimed for claimed, _ in outcomes]
    assert sorted(claims) == [False, False, False, True]
    key_file_text = db.with_name("aliak.db.key").read_text()
    assert {key for _, key in outcomes} == {fingerprint(MasterKeyring.from_text(key_file_text))}
    with raw(db) as connection:
        assert connection.execute("SELECT version FROM aliak_schema").fetchall() == [
            (SCHEMA_VERSION,)
        ]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_opens_its_own_connection(store: SQLiteStore) -> None:
    assert store.claim_nonce("LTAIkey", "before-fork", now=NOW, expires_at=NOW + 900)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            replay = store.claim_nonce("LTAIkey", "before-fork", now=NOW, expires_at=NOW + 900)
            fresh = store.claim_nonce("LTAIkey", "in-child", now=NOW, expires_at=NOW + 900)
            code = 0 if (replay, fresh) == (False, True) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.claim_nonce("LTAIkey", "in-child", now=NOW, expires_at=NOW + 900) is False


# -- bounded nonces -----------------------------------------------------------------------


def test_claims_prune_expired_nonces_so_the_table_stays_bounded(db: Path) -> None:
    store = SQLiteStore(db, prune_every=10)
    try:
        for second in range(100):
            now = NOW + second
            assert store.claim_nonce("LTAIkey", f"n-{second}", now=now, expires_at=now + 5)
        with raw(db) as connection:
            (rows,) = connection.execute("SELECT count(*) FROM aliak_nonces").fetchone()
        assert rows <= 10 + 5
    finally:
        store.close()


def test_prune_every_zero_leaves_pruning_to_the_caller(db: Path) -> None:
    store = SQLiteStore(db, prune_every=0)
    try:
        for second in range(30):
            store.claim_nonce("LTAIkey", f"n-{second}", now=NOW + second, expires_at=NOW + second)
        assert store.prune_nonces(NOW + 100) == 30
    finally:
        store.close()


# -- refusing what it cannot use ------------------------------------------------------------


def test_database_of_a_newer_schema_is_refused_at_open(db: Path) -> None:
    SQLiteStore(db).close()
    with raw(db) as connection:
        connection.execute("UPDATE aliak_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(InvalidParameter) as refused:
        SQLiteStore(db)
    assert "newer" in str(refused.value.detail)


def test_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_bytes(b"this is plainly not an SQLite database, just some text\n" * 40)
    with pytest.raises(InvalidParameter) as refused:
        SQLiteStore(bogus)
    assert refused.value.parameter == "db"
    assert not (tmp_path / "notes.txt.key").exists()


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AliakError) as refused:
        SQLiteStore(tmp_path / "no" / "such" / "aliak.db")
    assert isinstance(refused.value, InvalidParameter)
    assert "does not exist" in str(refused.value.detail)


def test_directory_as_database_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameter):
        SQLiteStore(tmp_path)


@pytest.mark.parametrize(
    ("option", "value"),
    [("busy_timeout", -1), ("busy_timeout", "5"), ("prune_every", -1), ("prune_every", 1.5)],
)
def test_bad_options_are_refused(db: Path, option: str, value: object) -> None:
    with pytest.raises(InvalidParameter) as refused:
        SQLiteStore(db, **{option: value})  # type: ignore[arg-type]
    assert refused.value.parameter == option


# -- failing closed, and atomically ----------------------------------------------------------


def test_lock_held_beyond_busy_timeout_fails_closed(db: Path) -> None:
    store = SQLiteStore(db, busy_timeout=0.05)
    blocker = raw(db)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(InternalError) as failed:
            store.add_key(hmac_record(), max_keys_per_owner=2)
        assert isinstance(failed.value.__cause__, sqlite3.OperationalError)
        with pytest.raises(InternalError):
            store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 900)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.claim_nonce("LTAIkey", "n", now=NOW, expires_at=NOW + 900) is True
    store.close()


def test_usage_batch_that_fails_half_way_writes_nothing(db: Path, store: SQLiteStore) -> None:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=2)
    with raw(db) as connection:  # the second half of the batch hits a failing write
        connection.execute(
            "CREATE TRIGGER fail_ip_write BEFORE INSERT ON aliak_key_source_ips "
            "BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END"
        )
    batch = [UsageRecord(record.access_key_id, ts(30), "Ecs", "192.0.2.1", ts(30))]
    with pytest.raises(InternalError) as failed:
        store.record_usage(batch)
    assert isinstance(failed.value.__cause__, sqlite3.Error)
    assert store.get_last_used(record.access_key_id) is None
    assert store.source_ip_history(record.access_key_id) == []


def test_usage_batch_interrupted_half_way_writes_nothing(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = hmac_record()
    store.add_key(record, max_keys_per_owner=2)

    def crash(*_args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(sqlite_backend, "_merge_source_ips", crash)
    with pytest.raises(KeyboardInterrupt):
        store.record_usage([UsageRecord(record.access_key_id, ts(30), "Ecs", "192.0.2.1", ts(30))])
    monkeypatch.undo()
    assert store.get_last_used(record.access_key_id) is None
    store.record_usage([UsageRecord(record.access_key_id, ts(40), "Ram", None, ts(40))])
    assert store.get_last_used(record.access_key_id) == LastUsed(at(40), "Ram")


def test_refused_add_leaves_no_open_transaction(store: SQLiteStore) -> None:
    store.add_key(hmac_record(ALICE), max_keys_per_owner=1)
    with pytest.raises(AliakError):
        store.add_key(hmac_record(ALICE), max_keys_per_owner=1)
    assert not store._connection().in_transaction


def test_iter_sealed_secrets_pages_through_every_key(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "_SECRETS_PAGE", 3)
    records = [hmac_record(ALICE) for _ in range(7)]
    for record in records:
        store.add_key(record, max_keys_per_owner=10)
    assert sorted(store.iter_sealed_secrets()) == sorted(
        (record.access_key_id, record.sealed_secret) for record in records
    )


def test_closed_store_refuses_to_answer(db: Path) -> None:
    store = SQLiteStore(db)
    store.close()
    with pytest.raises(InternalError):
        store.get_key("LTAIanything")


def test_as_async_runs_calls_off_the_event_loop(store: SQLiteStore) -> None:
    assert "offload=True" in repr(store.as_async())


# -- schema migrations ----------------------------------------------------------------------

# sha256 of the statements of schema version 1 as released. Databases in the field ran
# them; a change here means a released migration was edited instead of a new one added.
RELEASED_MIGRATIONS = {1: "bc40691a95cf731a2242440c7c16b21b5c40a8b8c01e3a70c163a1636e940e56"}


def test_released_migrations_are_never_edited() -> None:
    for version, digest in RELEASED_MIGRATIONS.items():
        statements = sqlite_backend._MIGRATIONS[version - 1]
        assert hashlib.sha256("\n".join(statements).encode()).hexdigest() == digest


def create_version_1_database(db: Path) -> None:
    """A database as the aliak that knew only schema version 1 left it."""
    with raw(db) as connection:
        for statement in sqlite_backend._MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute("INSERT INTO aliak_schema (id, version) VALUES (1, 1)")
    connection.close()


def test_version_1_database_migrates_forward_keeping_its_data(db: Path) -> None:
    create_version_1_database(db)
    live = hmac_record(ALICE)
    binned = hmac_record(ALICE, status=KeyStatus.INACTIVE, recycled_at=at(100))
    policy = NetworkPolicy(public=["203.0.113.0/24"])
    with raw(db) as connection:
        for record in (live, binned):
            connection.execute(
                sqlite_backend._INSERT_KEY, row_from_record(record, sqlite_backend._owner_columns)
            )
        connection.execute(
            "INSERT INTO aliak_key_source_ips VALUES (?, '192.0.2.1', ?, ?)",
            (binned.access_key_id, int(ts(5)), int(ts(6))),
        )
        connection.execute(
            "INSERT INTO aliak_network_policies VALUES ('key', ?, ?)",
            (binned.access_key_id, '{"public":["203.0.113.0/24"]}'),
        )
    connection.close()

    store = SQLiteStore(db, master_key=KEYRING)  # the keyring that sealed the rows above
    try:
        assert SCHEMA_VERSION == 5
        with raw(db) as connection:
            assert connection.execute("SELECT version FROM aliak_schema").fetchall() == [(5,)]
        connection.close()
        assert store.list_roles("1234567890123456") == []  # 5: the roles table
        assert store.list_keys(ALICE) == [live]
        assert store.list_recycle_bin(ALICE) == [binned]
        assert store.get_network_policy(PolicyTarget.key(binned.access_key_id)) == policy
        event = AuditEvent(at=at(200), actor="admin", action="DeleteAccessKeyInRecycleBin")
        store.purge_key(binned.access_key_id, only_if="in_recycle_bin", audit=event)
        assert store.source_ip_history(binned.access_key_id) == []
        assert store.get_network_policy(PolicyTarget.key(binned.access_key_id)) is None
        store.set_setting("allow_root_keys", "false")
        assert store.get_setting("allow_root_keys") == "false"
        assert store.audit_events() == [event]
    finally:
        store.close()


def test_migrated_database_reopens_without_migrating_again(db: Path) -> None:
    create_version_1_database(db)
    SQLiteStore(db).close()
    store = SQLiteStore(db)
    try:
        store.append_audit_event(AuditEvent(at=at(1), actor="admin", action="Test"))
        assert len(store.audit_events()) == 1
    finally:
        store.close()


# -- the audit trail and settings on disk ---------------------------------------------------


EVENT = AuditEvent(at=at(1), actor="admin", action="Test", access_key_id="LTAIsubject")


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE aliak_audit SET detail = 'rewritten'",
        "UPDATE aliak_audit SET at = 0 WHERE action = 'Test'",
        "DELETE FROM aliak_audit",
        "DELETE FROM aliak_audit WHERE access_key_id = 'LTAIsubject'",
    ],
)
def test_engine_refuses_to_change_or_delete_audit_events(
    db: Path, store: SQLiteStore, statement: str
) -> None:
    store.append_audit_event(EVENT)
    connection = raw(db)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            connection.execute(statement)
    finally:
        connection.close()
    assert store.audit_events() == [EVENT]


def test_audit_trail_and_settings_persist_across_reopen(db: Path) -> None:
    first = SQLiteStore(db)
    events = [EVENT, attrs.evolve(EVENT, action="Second"), attrs.evolve(EVENT, action="Third")]
    for event in events:
        first.append_audit_event(event)
    first.set_setting("allow_root_keys", "false")
    first.close()
    again = SQLiteStore(db)
    try:
        assert again.audit_events() == events
        assert again.get_setting("allow_root_keys") == "false"
    finally:
        again.close()


def test_setting_is_seen_at_once_by_another_store_on_the_file(db: Path) -> None:
    first, second = SQLiteStore(db), SQLiteStore(db)
    try:
        assert second.get_setting("allow_root_keys") is None
        first.set_setting("allow_root_keys", "false")
        assert second.get_setting("allow_root_keys") == "false"
    finally:
        first.close()
        second.close()


def test_iter_keys_pages_through_every_key(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_backend, "_KEYS_PAGE", 3)
    records = [hmac_record(ALICE) for _ in range(7)]
    for record in records:
        store.add_key(record, max_keys_per_owner=10)
    assert sorted(store.iter_keys(), key=lambda record: record.access_key_id) == records


# -- a change and its audit events: one transaction -------------------------------------------


def fail_audit_writes(db: Path, when: str = "1") -> None:
    with raw(db) as connection:
        connection.execute(
            "CREATE TRIGGER fail_audit_write BEFORE INSERT ON aliak_audit "
            f"WHEN {when} BEGIN SELECT RAISE(ABORT, 'simulated disk failure'); END"
        )
    connection.close()


def test_change_whose_audit_event_cannot_be_written_is_rolled_back(
    db: Path, store: SQLiteStore
) -> None:
    record = hmac_record(ALICE)
    store.add_key(record, max_keys_per_owner=2)
    fail_audit_writes(db)
    with pytest.raises(InternalError):
        store.set_key_status(record.access_key_id, KeyStatus.INACTIVE, audit=EVENT)
    with pytest.raises(InternalError):
        store.set_setting("allow_root_keys", "false", audit=EVENT)
    with pytest.raises(InternalError):
        store.set_network_policy(
            PolicyTarget.key("k"), NetworkPolicy(public=["192.0.2.1"]), audit=EVENT
        )
    assert store.get_key(record.access_key_id) == record
    assert store.get_setting("allow_root_keys") is None
    assert store.get_network_policy(PolicyTarget.key("k")) is None
    assert not store._connection().in_transaction


def test_recycle_whose_eviction_cannot_be_audited_changes_nothing(
    db: Path, store: SQLiteStore
) -> None:
    keys = [hmac_record(ALICE, status=KeyStatus.INACTIVE) for _ in range(4)]
    for record in keys:
        store.add_key(record, max_keys_per_owner=10)
    for when, record in enumerate(keys[:3]):
        store.recycle_key(record.access_key_id, now=at(when), max_in_recycle_bin=3)
    fail_audit_writes(db, when="NEW.action = 'PurgeAccessKey'")
    with pytest.raises(InternalError):
        store.recycle_key(keys[3].access_key_id, now=at(9), max_in_recycle_bin=3, audit=EVENT)
    assert [r.access_key_id for r in store.list_recycle_bin(ALICE)] == [
        record.access_key_id for record in keys[:3]
    ]
    assert store.list_keys(ALICE) == [keys[3]]
    assert store.audit_events() == []


def test_purge_expired_that_fails_half_way_purges_nothing(db: Path, store: SQLiteStore) -> None:
    keys = [hmac_record(ALICE, status=KeyStatus.INACTIVE) for _ in range(3)]
    for record in keys:
        store.add_key(record, max_keys_per_owner=10)
        store.recycle_key(record.access_key_id, now=at(0), max_in_recycle_bin=3)
    last = max(record.access_key_id for record in keys)
    fail_audit_writes(db, when=f"NEW.access_key_id = '{last}'")
    with pytest.raises(InternalError):
        store.purge_expired(now=at(0) + timedelta(days=30), audit=EVENT)
    assert len(store.list_recycle_bin(ALICE)) == 3
    assert store.audit_events() == []


# -- the lifecycle across processes ------------------------------------------------------------


def lifecycle_in_another_process(
    db: str, steps: list[tuple[str, str]], start: Any, results: Any
) -> None:  # pragma: no cover - runs in a child process
    """Run each (operation, key id) step after the other processes reach it too."""
    try:
        store = SQLiteStore(db)
        outcomes: list[str] = []
        for step, (operation, key_id) in enumerate(steps):
            start.wait(timeout=60)
            try:
                if operation == "restore":
                    store.restore_key(key_id, now=at(1), max_keys_per_owner=2)
                    outcomes.append("ok")
                elif operation == "purge":
                    store.purge_key(key_id, only_if="in_recycle_bin")
                    outcomes.append("ok")
                else:
                    event = AuditEvent(at=at(2), actor="admin", action="Delete").about(ALICE)
                    evicted = store.recycle_key(
                        key_id, now=at(step), max_in_recycle_bin=3, audit=event
                    )
                    outcomes.append("ok:" + ",".join(evicted))
            except AliakError as refused:
                outcomes.append(type(refused).__name__)
        results.put(outcomes)
        store.close()
    except BaseException as error:
        results.put(f"{type(error).__name__}: {error}")


def run_in_processes(db: Path, plans: list[list[tuple[str, str]]]) -> list[list[str]]:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(plans))
    results = context.Queue()
    processes = [
        context.Process(target=lifecycle_in_another_process, args=(str(db), plan, start, results))
        for plan in plans
    ]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert [outcome for outcome in outcomes if isinstance(outcome, str)] == []
    return outcomes


def test_restore_and_purge_racing_across_processes_have_one_winner_each_time(
    db: Path, store: SQLiteStore
) -> None:
    rounds = []
    for number in range(8):
        owner = RamUser(ALICE.account_id, f"owner-{number}")
        record = hmac_record(owner, status=KeyStatus.INACTIVE, recycled_at=at(0))
        store.add_key(record, max_keys_per_owner=2)
        rounds.append(record.access_key_id)
    outcomes = run_in_processes(
        db, [[("restore", key_id) for key_id in rounds], [("purge", key_id) for key_id in rounds]]
    )
    for number, key_id in enumerate(rounds):
        results = sorted(outcome[number] for outcome in outcomes)
        assert results == ["AccessKeyNotInRecycleBin", "ok"]
        stored = store.get_key(key_id)
        assert stored is None or not stored.in_recycle_bin
    assert all(not record.in_recycle_bin for record in store.iter_keys())


def test_restores_racing_across_processes_never_pass_the_owner_limit(
    db: Path, store: SQLiteStore
) -> None:
    pairs = []
    for number in range(6):
        owner = RamUser(ALICE.account_id, f"owner-{number}")
        store.add_key(hmac_record(owner), max_keys_per_owner=2)
        pair = [hmac_record(owner, status=KeyStatus.INACTIVE, recycled_at=at(0)) for _ in range(2)]
        for record in pair:
            store.add_key(record, max_keys_per_owner=2)
        pairs.append((owner, pair))
    outcomes = run_in_processes(
        db, [[("restore", pair[side].access_key_id) for _, pair in pairs] for side in (0, 1)]
    )
    for number, (owner, _) in enumerate(pairs):
        assert sorted(outcome[number] for outcome in outcomes) == ["AccessKeyLimitExceeded", "ok"]
        assert len(store.list_keys(owner)) == 2


def test_recycles_racing_across_processes_never_overfill_the_bin(
    db: Path, store: SQLiteStore
) -> None:
    keys = [hmac_record(ALICE, status=KeyStatus.INACTIVE) for _ in range(8)]
    for record in keys:
        store.add_key(record, max_keys_per_owner=10)
    plans = [[("recycle", record.access_key_id) for record in keys[i::4]] for i in range(4)]
    outcomes = run_in_processes(db, plans)
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
    assert store.get_key(evicted[0]) is None
    with pytest.raises(AccessKeyNotFound):
        store.mark_leak_restricted(evicted[0])


def test_a_database_with_secrets_and_no_key_file_is_refused_not_rekeyed(db: Path) -> None:
    from aliak import KeyManager, RamUser

    store = SQLiteStore(db)
    KeyManager(store).create_access_key(RamUser("1234567890123456", "alice"))
    store.close()
    Path(str(db) + ".key").unlink()
    with pytest.raises(AliakError) as caught:
        SQLiteStore(db)
    assert "is missing" in str(caught.value)
    assert not Path(str(db) + ".key").exists()


# -- the change check: other processes' changes seen at the next request -----------------

INVALIDATION_OWNER = RamUser("1234567890123456", "invalidation-app")


def signed_request(access_key: AccessKey) -> Request:
    return Signer(access_key).sign(
        Request("POST", host="api.example.com", path="/v1/orders", body=b'{"n":1}'),
        action="CreateOrder",
        version="2024-01-01",
    )


def change_in_another_process(db: str, access_key_id: str, change: str) -> None:
    store = SQLiteStore(db)  # pragma: no cover - runs in a child process
    manager = KeyManager(store)
    if change == "disable":
        manager.disable_access_key(access_key_id)
    elif change == "enable":
        manager.enable_access_key(access_key_id)
    store.close()


def run_in_another_process(db: Path, access_key_id: str, change: str) -> None:
    context = multiprocessing.get_context("spawn")
    worker = context.Process(
        target=change_in_another_process, args=(str(db), access_key_id, change)
    )
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == 0


def test_a_change_committed_by_another_process_is_seen_by_the_very_next_request(
    db: Path, make_verifier: MakeVerifier
) -> None:
    store = SQLiteStore(db)
    new = KeyManager(store).create_access_key(INVALIDATION_OWNER)
    verifier = make_verifier(store, freshness=60)  # only the change check can make it prompt
    try:
        verifier.verify(signed_request(new.access_key))  # cached as Active for 60 s
        run_in_another_process(db, new.access_key_id, "disable")  # committed when it exits
        with pytest.raises(InvalidAccessKeyIdInactive):
            verifier.verify(signed_request(new.access_key))  # no waiting: the next request
        run_in_another_process(db, new.access_key_id, "enable")
        assert verifier.verify(signed_request(new.access_key)).access_key_id == new.access_key_id
    finally:
        verifier.close()
        store.close()


def heard_by(store: SQLiteStore) -> list[str | None]:
    heard: list[str | None] = []
    assert store.invalidations is not None
    store.invalidations.subscribe(heard.append)
    return heard


def test_the_change_check_names_the_keys_another_store_object_changed(db: Path) -> None:
    changing = SQLiteStore(db)
    first, second = hmac_record(ALICE), hmac_record(ALICE)
    changing.add_key(first, max_keys_per_owner=5)
    watching = SQLiteStore(db)
    heard = heard_by(watching)
    assert watching.invalidations is not None
    watching.invalidations.refresh()
    assert heard == []  # the add happened before this store object existed
    changing.add_key(second, max_keys_per_owner=5)
    changing.set_key_status(first.access_key_id, KeyStatus.INACTIVE)
    changing.claim_nonce("LTAIkey", "n", now=ts(0), expires_at=ts(900))  # not a key change
    assert heard == []  # nothing is delivered until a verifier looks
    watching.invalidations.refresh()
    assert heard == [second.access_key_id, first.access_key_id]
    watching.invalidations.refresh()
    assert heard == [second.access_key_id, first.access_key_id]  # each change once
    changing.set_network_policy(PolicyTarget.account(ALICE.account_id), NetworkPolicy())
    watching.invalidations.refresh()
    assert heard[-1] is None  # an account-level policy concerns every key
    watching.close()
    changing.close()


def test_a_refused_change_is_never_logged(db: Path) -> None:
    watching, changing = SQLiteStore(db), SQLiteStore(db)
    heard = heard_by(watching)
    with pytest.raises(AccessKeyNotFound):
        changing.set_key_status("LTAIneverStored00000000", KeyStatus.INACTIVE)
    assert not changing.reseal_secret("LTAIneverStored00000000", b"old", b"new")
    assert watching.invalidations is not None
    watching.invalidations.refresh()
    assert heard == []
    with raw(db) as connection:
        assert connection.execute("SELECT count(*) FROM aliak_changes").fetchone() == (0,)
    connection.close()
    watching.close()
    changing.close()


def test_a_burst_of_changes_or_a_reader_left_behind_drops_everything(db: Path) -> None:
    watching, changing = SQLiteStore(db), SQLiteStore(db)
    heard = heard_by(watching)
    assert watching.invalidations is not None
    records = [hmac_record(ALICE) for _ in range(17)]
    for record in records:
        changing.add_key(record, max_keys_per_owner=100)
    watching.invalidations.refresh()
    assert heard == [None]  # more keys than one look names
    heard.clear()
    # More changes than the log keeps: the rows this reader missed are gone.
    for _ in range(sqlite_backend._CHANGES_KEPT // 2 + 1):
        for record in records[:2]:
            changing.mark_leak_restricted(record.access_key_id)
    with raw(db) as connection:
        (kept,) = connection.execute("SELECT count(*) FROM aliak_changes").fetchone()
    connection.close()
    assert kept <= sqlite_backend._CHANGES_KEPT + 1  # the log stays bounded
    watching.invalidations.refresh()
    assert heard == [None]
    heard.clear()
    changing.set_key_status(records[0].access_key_id, KeyStatus.INACTIVE)
    watching.invalidations.refresh()
    assert heard == [records[0].access_key_id]  # and it follows the log again
    watching.close()
    changing.close()


def test_the_change_check_never_raises(db: Path) -> None:
    store = SQLiteStore(db)
    channel = store.invalidations
    assert channel is not None
    with raw(db) as connection:  # another process holds the write lock
        connection.execute("BEGIN EXCLUSIVE")
        channel.refresh()
        connection.execute("ROLLBACK")
    connection.close()
    store.close()
    channel.refresh()  # closed: nothing to look at, and no error


def test_in_memory_database_delivers_in_process_and_has_nothing_to_look_at() -> None:
    store = SQLiteStore(":memory:")
    heard = heard_by(store)
    record = hmac_record(ALICE)
    store.add_key(record, max_keys_per_owner=5)
    assert heard == [record.access_key_id]
    assert store.invalidations is not None
    store.invalidations.refresh()
    assert heard == [record.access_key_id]
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_looks_for_changes_on_its_own_connection(db: Path) -> None:
    store, changing = SQLiteStore(db), SQLiteStore(db)
    heard = heard_by(store)
    assert store.invalidations is not None
    store.invalidations.refresh()
    record = hmac_record(ALICE)
    changing.add_key(record, max_keys_per_owner=5)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            assert store.invalidations is not None
            store.invalidations.refresh()
            code = 0 if heard == [record.access_key_id] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store.invalidations.refresh()
    assert heard == [record.access_key_id]  # the parent's own connection still works
    store.close()
    changing.close()
