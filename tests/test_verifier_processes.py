"""The embedded default across processes: one SQLite file shared by several verifiers, of
either shell (sync Verifier or AsyncVerifier; a worker process is told which to build)."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

from aliak import (
    AccessKey,
    AliakError,
    KeyManager,
    RamUser,
    Request,
    Signer,
    SQLiteStore,
)
from aliak.sealing import sealed_version
from conftest import MakeVerifier, verifier_factory

OWNER = RamUser("1234567890123456", "fleet-app")
SPAWN = multiprocessing.get_context("spawn")
VERIFY_SECONDS = 2.0  # how long verify_continuously keeps verifying


def request_parts(request: Request) -> tuple[Any, ...]:
    return (request.method, request.path, request.query, request.headers.items(), request.body)


def rebuild(parts: tuple[Any, ...]) -> Request:
    method, path, query, headers, body = parts
    return Request(method, path=path, query=query, headers=headers, body=body)


def verify_once(shell: str, db: str, parts: tuple[Any, ...], barrier: Any, results: Any) -> None:
    store = SQLiteStore(db)
    with verifier_factory(shell) as make:
        verifier = make(store)
        request = rebuild(parts)
        barrier.wait(timeout=30)
        try:
            verifier.verify(request)
            results.put("accepted")
        except AliakError as error:
            results.put(error.code)
        finally:
            verifier.close()
            store.close()


def signed_request(access_key: AccessKey) -> Request:
    return Signer(access_key).sign(
        Request("POST", host="api.example.com", path="/v1/orders", body=b'{"n":1}'),
        action="CreateOrder",
        version="2024-01-01",
    )


def test_the_same_request_from_4_processes_is_accepted_exactly_once(
    tmp_path: Path, shell: str
) -> None:
    db = str(tmp_path / "aliak.db")
    store = SQLiteStore(db)
    new = KeyManager(store).create_access_key(OWNER)
    store.close()
    parts = request_parts(signed_request(new.access_key))
    barrier = SPAWN.Barrier(4)
    results = SPAWN.Queue()
    workers = [
        SPAWN.Process(target=verify_once, args=(shell, db, parts, barrier, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=30)
    assert outcomes == ["SignatureNonceUsed"] * 3 + ["accepted"]


def disable_in_another_process(db: str, access_key_id: str) -> None:
    store = SQLiteStore(db)
    KeyManager(store).disable_access_key(access_key_id)
    store.close()


def test_a_key_disabled_in_another_process_is_refused_within_the_freshness(
    tmp_path: Path, make_verifier: MakeVerifier
) -> None:
    db = str(tmp_path / "aliak.db")
    store = SQLiteStore(db)
    new = KeyManager(store).create_access_key(OWNER)
    verifier = make_verifier(store)
    assert verifier.settings.freshness <= 1.0
    verifier.verify(signed_request(new.access_key))  # the record is now cached as Active

    worker = SPAWN.Process(target=disable_in_another_process, args=(db, new.access_key_id))
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == 0
    disabled_at = time.monotonic()

    deadline = disabled_at + verifier.settings.freshness + 0.5
    code = "accepted"
    while time.monotonic() < deadline:
        try:
            verifier.verify(signed_request(new.access_key))
        except AliakError as error:
            code = error.code
            break
        time.sleep(0.05)
    assert code == "InvalidAccessKeyId.Inactive"
    assert time.monotonic() - disabled_at <= verifier.settings.freshness + 0.5
    verifier.close()
    store.close()


def verify_continuously(
    shell: str, db: str, keys: list[tuple[str, str]], results: Any, started: Any
) -> None:
    store = SQLiteStore(db)
    with verifier_factory(shell) as make:
        verifier = make(store, freshness=0.05)
        signers = [Signer(AccessKey(key_id, secret)) for key_id, secret in keys]
        accepted = refused = 0
        failures: list[str] = []
        started.set()
        end = time.monotonic() + VERIFY_SECONDS
        while time.monotonic() < end:
            for signer in signers:
                try:
                    verifier.verify(
                        signer.sign(Request("GET", host="api.example.com"), action="A", version="V")
                    )
                    accepted += 1
                except AliakError as error:
                    refused += 1
                    failures.append(f"{error.code}: {error.detail}")
        verifier.close()
    store.close()
    results.put((accepted, refused, failures[:5]))


def test_master_key_rotation_reseals_every_secret_while_other_processes_verify(
    tmp_path: Path, shell: str
) -> None:
    db = str(tmp_path / "aliak.db")
    store = SQLiteStore(db)
    manager = KeyManager(store, max_keys_per_owner=100)
    created = [manager.create_access_key(OWNER) for _ in range(20)]
    keys = [(new.access_key_id, new.secret.reveal()) for new in created]
    old_version = store.keyring.current_version

    results = SPAWN.Queue()
    started = SPAWN.Event()
    worker = SPAWN.Process(target=verify_continuously, args=(shell, db, keys, results, started))
    worker.start()
    assert started.wait(timeout=60)
    time.sleep(0.3)
    assert manager.rotate_master_key() == 20
    accepted, refused, failures = results.get(timeout=60)
    worker.join(timeout=30)

    assert refused == 0, failures
    assert accepted > 20
    new_version = store.keyring.current_version
    assert new_version == old_version + 1
    assert {sealed_version(sealed) for _, sealed in store.iter_sealed_secrets()} == {new_version}
    store.close()

    # A store opened afresh (the key file now holds both versions) opens every secret, and
    # so does a keyring with the old version removed.
    reopened = SQLiteStore(db)
    trimmed = reopened.keyring.without_versions_below(new_version)
    for key_id, secret in keys:
        record = reopened.get_key(key_id)
        assert record is not None
        assert record.sealed_secret is not None
        assert trimmed.open_secret(key_id, record.sealed_secret).reveal() == secret
    reopened.close()


def test_verifying_against_sqlite_records_last_use_durably(
    tmp_path: Path, make_verifier: MakeVerifier
) -> None:
    db = str(tmp_path / "aliak.db")
    store = SQLiteStore(db)
    new = KeyManager(store).create_access_key(OWNER)
    with make_verifier(store) as verifier:
        verifier.verify(signed_request(new.access_key), source_ip="203.0.113.9")
    store.close()
    reopened = SQLiteStore(db)
    last = reopened.get_last_used(new.access_key_id)
    assert last is not None
    assert last.service_name == "api"
    assert [use.source_ip for use in reopened.source_ip_history(new.access_key_id)] == [
        "203.0.113.9"
    ]
    reopened.close()
