"""A keyring belongs to its store: the store records a check value per master-key
version, and a keyring that does not match is refused at once, naming where it came
from (the argument, ``ALIAK_MASTER_KEY``, the key file) and never showing key material.
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from aliak import AliakError, KeyManager, RamUser, SQLiteStore
from aliak.errors import InvalidParameter
from aliak.sealing import ENV_MASTER_KEY, MasterKeyring

OWNER = RamUser("1234567890123456", "keyring-app")
SPAWN = multiprocessing.get_context("spawn")
POSTGRES_DSN = "ALIAK_TEST_POSTGRES_DSN"
CHECK_SETTING_PREFIX = "master_key_check:"  # where the store keeps them, in its settings


@pytest.fixture(autouse=True)
def no_master_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_MASTER_KEY, raising=False)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "aliak.db"


def key_file_of(db: Path) -> Path:
    return db.with_name(db.name + ".key")


def checks_in(db: Path) -> dict[str, str]:
    connection = sqlite3.connect(db)
    try:
        rows = connection.execute(
            "SELECT name, value FROM aliak_settings WHERE name LIKE 'master_key_check:%'"
        ).fetchall()
    finally:
        connection.close()
    return dict(rows)


def store_with_a_key(db: Path, master_key: MasterKeyring | None = None) -> str:
    store = SQLiteStore(db, master_key=master_key)
    try:
        return KeyManager(store).create_access_key(OWNER).access_key_id
    finally:
        store.close()


def refusal(db: Path, **options: object) -> InvalidParameter:
    with pytest.raises(InvalidParameter) as caught:
        SQLiteStore(db, **options)  # type: ignore[arg-type]
    return caught.value


def assert_no_key_material(error: Exception, *keyrings: MasterKeyring) -> None:
    shown = f"{error} {error!r} {getattr(error, 'detail', '')}"
    for keyring in keyrings:
        for line in keyring.to_text().splitlines():
            assert line.split(":", 1)[1] not in shown


# -- what the store records ------------------------------------------------------------------


def test_a_new_store_records_one_check_value_per_version_and_not_the_key(db: Path) -> None:
    store = SQLiteStore(db)
    keyring = store.keyring
    store.close()
    checks = checks_in(db)
    assert set(checks) == {f"{CHECK_SETTING_PREFIX}1"}
    value = checks[f"{CHECK_SETTING_PREFIX}1"]
    assert value.startswith("hmac-sha256:")
    assert keyring.to_text().split(":", 1)[1].strip() not in value
    assert keyring.matches_check_value(1, value)
    assert not MasterKeyring.generate().matches_check_value(1, value)


def test_two_stores_sharing_a_key_record_different_values(tmp_path: Path) -> None:
    keyring = MasterKeyring.generate()
    SQLiteStore(tmp_path / "a.db", master_key=keyring).close()
    SQLiteStore(tmp_path / "b.db", master_key=keyring).close()
    assert checks_in(tmp_path / "a.db") != checks_in(tmp_path / "b.db")


# -- each refusal names the source -------------------------------------------------------------


def test_a_wrong_argument_key_is_refused_naming_the_argument(db: Path) -> None:
    right = MasterKeyring.generate()
    store_with_a_key(db, right)
    wrong = MasterKeyring.generate()
    error = refusal(db, master_key=wrong)
    assert "the master_key argument" in str(error)
    assert str(db) in str(error)
    assert_no_key_material(error, right, wrong)


def test_a_wrong_environment_key_is_refused_naming_the_variable(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    right = MasterKeyring.generate()
    store_with_a_key(db, right)
    wrong = MasterKeyring.generate()
    monkeypatch.setenv(ENV_MASTER_KEY, wrong.to_text())
    error = refusal(db)
    assert ENV_MASTER_KEY in str(error)
    assert_no_key_material(error, right, wrong)


def test_a_replaced_key_file_is_refused_naming_the_file(db: Path) -> None:
    store_with_a_key(db)
    original = key_file_of(db).read_text()
    key_file_of(db).write_text(MasterKeyring.generate().to_text())
    error = refusal(db)
    assert f"the key file {key_file_of(db)}" in str(error)
    assert_no_key_material(error, MasterKeyring.from_text(original))


def test_an_environment_key_that_disagrees_with_the_key_file_is_refused_not_preferred(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id = store_with_a_key(db)
    on_disk = key_file_of(db).read_text()
    before = checks_in(db)
    other = MasterKeyring.generate()
    monkeypatch.setenv(ENV_MASTER_KEY, other.to_text())
    error = refusal(db)
    assert ENV_MASTER_KEY in str(error)
    assert str(key_file_of(db)) in str(error)
    assert_no_key_material(error, other, MasterKeyring.from_text(on_disk))
    # Nothing changed: the key file, the check values, the key.
    assert key_file_of(db).read_text() == on_disk
    assert checks_in(db) == before
    monkeypatch.delenv(ENV_MASTER_KEY)
    store = SQLiteStore(db)
    try:
        assert KeyManager(store).get_access_key(key_id).access_key_id == key_id
    finally:
        store.close()


def test_an_environment_key_that_disagrees_with_the_key_file_of_a_fresh_database_is_refused(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before any check value exists (a database written by an older aliak), only the
    # key file can tell: the environment must not be recorded in its place.
    store_with_a_key(db)
    connection = sqlite3.connect(db)
    connection.execute("DELETE FROM aliak_settings WHERE name LIKE 'master_key_check:%'")
    connection.commit()
    connection.close()
    monkeypatch.setenv(ENV_MASTER_KEY, MasterKeyring.generate().to_text())
    refusal(db)
    assert checks_in(db) == {}


def test_an_environment_key_equal_to_the_key_file_is_accepted(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_id = store_with_a_key(db)
    monkeypatch.setenv(ENV_MASTER_KEY, key_file_of(db).read_text())
    store = SQLiteStore(db)
    try:
        assert store.key_file is None  # the environment is the source, and agrees
        record = store.get_key(key_id)
        assert record is not None
        assert record.sealed_secret is not None
        store.keyring.open_secret(key_id, record.sealed_secret)
    finally:
        store.close()


def test_a_keyring_lacking_the_newest_recorded_version_is_refused(db: Path) -> None:
    old = MasterKeyring.generate()
    store = SQLiteStore(db, master_key=old)
    KeyManager(store).create_access_key(OWNER)
    assert KeyManager(store).rotate_master_key(old.with_new_key()) == 1
    store.close()
    error = refusal(db, master_key=old)
    assert "lacks version 2" in str(error)
    assert "the master_key argument" in str(error)


def test_the_throwaway_keyring_of_a_metadata_only_open_is_not_checked(db: Path) -> None:
    store_with_a_key(db)
    before = checks_in(db)
    SQLiteStore(db, master_key=MasterKeyring.generate(), check_keyring=False).close()
    assert checks_in(db) == before


# -- databases without check values (written before they existed) ------------------------------


def forget_checks(db: Path) -> None:
    connection = sqlite3.connect(db)
    connection.execute("DELETE FROM aliak_settings WHERE name LIKE 'master_key_check:%'")
    connection.commit()
    connection.close()


def test_a_database_without_check_values_records_them_on_first_open(db: Path) -> None:
    key_id = store_with_a_key(db)
    forget_checks(db)
    store = SQLiteStore(db)
    try:
        assert set(checks_in(db)) == {f"{CHECK_SETTING_PREFIX}1"}
        record = store.get_key(key_id)
        assert record is not None
        assert record.sealed_secret is not None
        store.keyring.open_secret(key_id, record.sealed_secret)
    finally:
        store.close()


def test_a_database_without_check_values_refuses_a_keyring_that_opens_none_of_its_secrets(
    db: Path,
) -> None:
    store_with_a_key(db, MasterKeyring.generate())
    forget_checks(db)
    error = refusal(db, master_key=MasterKeyring.generate())
    assert "does not open the secrets" in str(error)
    assert checks_in(db) == {}  # nothing recorded for the wrong keyring


# -- rotation ------------------------------------------------------------------------------------


def test_rotation_records_the_new_versions_check_value(db: Path) -> None:
    store_with_a_key(db)
    store = SQLiteStore(db)
    try:
        KeyManager(store).rotate_master_key()
        checks = checks_in(db)
        assert set(checks) == {f"{CHECK_SETTING_PREFIX}1", f"{CHECK_SETTING_PREFIX}2"}
        assert store.keyring.matches_check_value(2, checks[f"{CHECK_SETTING_PREFIX}2"])
    finally:
        store.close()
    SQLiteStore(db).close()  # the rotated key file opens the store


def test_rotation_to_an_unrelated_keyring_is_refused_and_changes_nothing(db: Path) -> None:
    key_id = store_with_a_key(db)
    store = SQLiteStore(db)
    try:
        before = (store.keyring.to_text(), key_file_of(db).read_text(), checks_in(db))
        with pytest.raises(InvalidParameter) as caught:
            KeyManager(store).rotate_master_key(MasterKeyring.generate().with_new_key())
        assert "the new keyring" in str(caught.value)
        assert (store.keyring.to_text(), key_file_of(db).read_text(), checks_in(db)) == before
        record = store.get_key(key_id)
        assert record is not None
        assert record.sealed_secret is not None
        store.keyring.open_secret(key_id, record.sealed_secret)
    finally:
        store.close()


def _rotate_in_child(db: str) -> None:
    store = SQLiteStore(db)
    KeyManager(store).rotate_master_key()
    store.close()


def _open_in_child(db: str, master_key: str | None, results: object) -> None:
    if master_key is not None:
        os.environ[ENV_MASTER_KEY] = master_key
    try:
        SQLiteStore(db).close()
        results.put("opened")  # type: ignore[attr-defined]
    except InvalidParameter as error:
        results.put(f"refused: {error.detail}")  # type: ignore[attr-defined]


def test_rotation_in_another_process_is_accepted_here_and_by_new_processes(db: Path) -> None:
    key_id = store_with_a_key(db)
    store = SQLiteStore(db)  # opened before the rotation
    old_text = store.keyring.to_text()
    try:
        child = SPAWN.Process(target=_rotate_in_child, args=(str(db),))
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert store.reload_keyring().versions == (1, 2)
        assert KeyManager(store).rotate_master_key() == 1  # this process rotates on to 3
        record = store.get_key(key_id)
        assert record is not None
        assert record.sealed_secret is not None
        store.keyring.open_secret(key_id, record.sealed_secret)
    finally:
        store.close()
    assert set(checks_in(db)) == {f"{CHECK_SETTING_PREFIX}{v}" for v in (1, 2, 3)}

    results = SPAWN.Queue()
    for master_key in (None, old_text):
        opener = SPAWN.Process(target=_open_in_child, args=(str(db), master_key, results))
        opener.start()
        opener.join(60)
    assert results.get(timeout=10) == "opened"
    stale = results.get(timeout=10)
    assert stale.startswith("refused")
    assert ENV_MASTER_KEY in stale
    assert "lacks version 3" in stale


# -- PostgreSQL: the fleet's keyring comes from the argument or the environment ------------------


@pytest.fixture
def dsn() -> str:
    value = os.environ.get(POSTGRES_DSN)
    if not value:
        pytest.skip(f"set {POSTGRES_DSN} to test against a server")
    return value


@pytest.fixture
def schema(dsn: str) -> Iterator[str]:
    import secrets

    import psycopg
    from psycopg import sql

    name = f"aliak_test_{secrets.token_hex(6)}"
    yield name
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def test_postgres_refuses_a_keyring_that_is_not_the_fleets(
    dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aliak.storage.postgres import PostgresStore

    fleet = MasterKeyring.generate()
    store = PostgresStore(dsn, schema=schema, master_key=fleet)
    KeyManager(store).create_access_key(OWNER)
    store.close()

    stranger = MasterKeyring.generate()
    with pytest.raises(InvalidParameter) as by_argument:
        PostgresStore(dsn, schema=schema, master_key=stranger)
    assert "the master_key argument" in str(by_argument.value)
    assert schema in str(by_argument.value)
    monkeypatch.setenv(ENV_MASTER_KEY, stranger.to_text())
    with pytest.raises(InvalidParameter) as by_environment:
        PostgresStore(dsn, schema=schema)
    assert ENV_MASTER_KEY in str(by_environment.value)
    for error in (by_argument.value, by_environment.value):
        assert_no_key_material(error, fleet, stranger)

    monkeypatch.setenv(ENV_MASTER_KEY, fleet.to_text())
    PostgresStore(dsn, schema=schema).close()


def test_postgres_rotation_records_the_new_version_and_refuses_a_stale_member(
    dsn: str, schema: str
) -> None:
    from aliak.storage.postgres import PostgresStore

    old = MasterKeyring.generate()
    both = old.with_new_key()
    store = PostgresStore(dsn, schema=schema, master_key=old)
    try:
        KeyManager(store).create_access_key(OWNER)
        with pytest.raises(InvalidParameter):
            KeyManager(store).rotate_master_key(MasterKeyring.generate().with_new_key())
        assert KeyManager(store).rotate_master_key(both) == 1
        for version in (1, 2):
            assert store.get_setting(f"{CHECK_SETTING_PREFIX}{version}") is not None
    finally:
        store.close()
    with pytest.raises(InvalidParameter) as stale:
        PostgresStore(dsn, schema=schema, master_key=old)
    assert "lacks version 2" in str(stale.value)
    PostgresStore(dsn, schema=schema, master_key=both).close()


def test_postgres_schema_without_check_values_records_them_on_first_open(
    dsn: str, schema: str
) -> None:
    import psycopg
    from psycopg import sql

    from aliak.storage.postgres import PostgresStore

    fleet = MasterKeyring.generate()
    PostgresStore(dsn, schema=schema, master_key=fleet).close()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DELETE FROM {}.aliak_settings WHERE name LIKE 'master_key_check:%%'").format(
                sql.Identifier(schema)
            )
        )
    store = PostgresStore(dsn, schema=schema, master_key=fleet)
    try:
        assert store.get_setting(f"{CHECK_SETTING_PREFIX}1") is not None
    finally:
        store.close()
    with pytest.raises(InvalidParameter):
        PostgresStore(dsn, schema=schema, master_key=MasterKeyring.generate())


# -- what an attacker with write access to the settings (or the key file) could try -----


@pytest.mark.parametrize(
    "tamper",
    [
        lambda value: value + "!!!",  # junk a lenient decoder would drop
        lambda value: value.rsplit(":", 1)[0] + ":" + "A" * 8,  # a short tag
        lambda value: value.replace(value.split(":")[1], "AAAA", 1),  # a short salt
        lambda value: "v9:" + value.split(":", 1)[1],  # an unknown format
        lambda value: "",
    ],
    ids=["junk-appended", "short-tag", "short-salt", "unknown-format", "empty"],
)
def test_a_tampered_check_value_never_matches(tamper: object) -> None:
    keyring = MasterKeyring.generate()
    value = keyring.check_value(1)
    with pytest.raises(AliakError) as caught:
        keyring.matches_check_value(1, tamper(value))  # type: ignore[operator]
    assert caught.value.code == "InternalError"


def test_a_key_file_that_is_not_ascii_is_a_clear_refusal(db: Path) -> None:
    SQLiteStore(db).close()
    key_file_of(db).write_bytes("1:é\n".encode())
    with pytest.raises(InvalidParameter) as caught:
        SQLiteStore(db)
    assert "not a master key file" in str(caught.value)


def test_a_check_setting_whose_version_is_not_a_decimal_number_is_refused(db: Path) -> None:
    SQLiteStore(db).close()
    with sqlite3.connect(db) as connection:
        connection.execute(
            "INSERT INTO aliak_settings (name, value) VALUES (?, ?)",
            (CHECK_SETTING_PREFIX + "²", "x"),
        )
    with pytest.raises(AliakError) as caught:
        SQLiteStore(db)
    assert caught.value.code == "InternalError"
