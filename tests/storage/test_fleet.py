"""A fleet: four verifier processes sharing PostgreSQL (keys) and Redis (nonces and the
invalidation channel). Runs only where both servers are given (``.ci/services``)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from aliak import AccessKey, AliakError, KeyManager, RamUser, Request, Signer, Verifier
from aliak.sealing import MasterKeyring

from .conftest import drop_schema, new_schema_name

POSTGRES = os.environ.get("ALIAK_TEST_POSTGRES_DSN")
REDIS = os.environ.get("ALIAK_TEST_REDIS_URL")
pytestmark = pytest.mark.skipif(
    not (POSTGRES and REDIS),
    reason="set ALIAK_TEST_POSTGRES_DSN and ALIAK_TEST_REDIS_URL (run under .ci/services)",
)

SPAWN = multiprocessing.get_context("spawn")
OWNER = RamUser("1234567890123456", "fleet")
FRESHNESS = 2.0


def fleet_store(config: dict[str, str]) -> Any:
    """What every member opens: keys in PostgreSQL, nonces and invalidations in Redis."""
    from aliak.storage.composite import CompositeStore
    from aliak.storage.postgres import PostgresStore
    from aliak.storage.redis import RedisInvalidation, RedisNonceStore

    return CompositeStore(
        PostgresStore(config["dsn"], schema=config["schema"], master_key=config["key"]),
        nonces=RedisNonceStore(config["redis"], prefix=config["prefix"]),
        invalidations=RedisInvalidation(config["redis"], channel=config["channel"]),
    )


def rebuild(parts: tuple[Any, ...]) -> Request:
    method, path, query, headers, body = parts
    return Request(method, path=path, query=query, headers=headers, body=body)


def parts_of(request: Request) -> tuple[Any, ...]:
    return (request.method, request.path, request.query, request.headers.items(), request.body)


def member(config: dict[str, str], inbox: Any, outbox: Any) -> None:
    """One fleet member: verifies what it is sent, or runs an admin command."""
    store = fleet_store(config)
    verifier = Verifier(store, freshness=FRESHNESS)
    outbox.put("ready")
    while True:
        command, argument = inbox.get()
        if command == "stop":
            break
        if command == "verify":
            try:
                verifier.verify(rebuild(argument))
                outbox.put("accepted")
            except AliakError as error:
                outbox.put(error.code)
        elif command == "disable":
            KeyManager(store).disable_access_key(argument)
            outbox.put("disabled")
    verifier.close()
    store.close()


@pytest.fixture
def config() -> Iterator[dict[str, str]]:
    assert POSTGRES
    assert REDIS
    values = {
        "dsn": POSTGRES,
        "schema": new_schema_name(),
        "key": MasterKeyring.generate().to_text(),
        "redis": REDIS,
        "prefix": f"aliak-fleet:{uuid.uuid4().hex}:",
        "channel": f"aliak-fleet:{uuid.uuid4().hex}",
    }
    yield values
    drop_schema(POSTGRES, values["schema"])


@pytest.fixture
def fleet(config: dict[str, str]) -> Iterator[list[tuple[Any, Any, Any]]]:
    members = []
    for _ in range(4):
        inbox, outbox = SPAWN.Queue(), SPAWN.Queue()
        process = SPAWN.Process(target=member, args=(config, inbox, outbox), daemon=True)
        process.start()
        members.append((process, inbox, outbox))
    for _, _, outbox in members:
        assert outbox.get(timeout=60) == "ready"
    yield members
    for _, inbox, _ in members:
        inbox.put(("stop", None))
    for process, _, _ in members:
        process.join(timeout=20)
        if process.is_alive():
            process.kill()


def new_key(config: dict[str, str]) -> Any:
    store = fleet_store(config)
    try:
        return KeyManager(store).create_access_key(OWNER)
    finally:
        store.close()


def signed(access_key: AccessKey) -> Request:
    return Signer(access_key).sign(
        Request("POST", host="api.example.com", path="/orders", body=b'{"n":1}'),
        action="CreateOrder",
        version="2024-01-01",
    )


def test_the_same_request_sent_to_four_members_at_once_is_accepted_exactly_once(
    config: dict[str, str], fleet: list[tuple[Any, Any, Any]]
) -> None:
    new = new_key(config)
    request = parts_of(signed(new.access_key))
    for _, inbox, _ in fleet:
        inbox.put(("verify", request))
    answers = sorted(outbox.get(timeout=60) for _, _, outbox in fleet)
    assert answers == ["SignatureNonceUsed"] * 3 + ["accepted"]


def test_a_key_disabled_through_one_member_is_refused_by_the_others_at_once(
    config: dict[str, str], fleet: list[tuple[Any, Any, Any]]
) -> None:
    new = new_key(config)
    for _, inbox, outbox in fleet:  # every member has the key cached as Active
        inbox.put(("verify", parts_of(signed(new.access_key))))
        assert outbox.get(timeout=60) == "accepted"
    _, first_inbox, first_outbox = fleet[0]
    first_inbox.put(("disable", new.access_key_id))
    assert first_outbox.get(timeout=60) == "disabled"
    disabled_at = time.monotonic()
    answers = []
    for _, inbox, outbox in fleet[1:]:
        deadline = disabled_at + FRESHNESS
        answer = "accepted"
        while answer == "accepted" and time.monotonic() < deadline:
            inbox.put(("verify", parts_of(signed(new.access_key))))
            answer = outbox.get(timeout=60)
        answers.append(answer)
    elapsed = time.monotonic() - disabled_at
    assert answers == ["InvalidAccessKeyId.Inactive"] * 3
    assert elapsed < FRESHNESS  # the invalidation channel, not the cache expiry, did it


def churn(config: dict[str, str], ready: Any) -> None:
    """Create, disable and delete keys for several users, as fast as it can, until killed."""
    store = fleet_store(config)
    keys = KeyManager(store, max_keys_per_owner=2)
    ready.set()
    number = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while True:
            number += 1
            owner = RamUser("1234567890123456", f"churn-{number % 5}")
            try:
                new = keys.create_access_key(owner)
                keys.disable_access_key(new.access_key_id)
                keys.delete_access_key(new.access_key_id)
            except AliakError:
                pass


def test_killing_a_member_mid_change_loses_nothing_and_half_writes_nothing(
    config: dict[str, str],
) -> None:
    ready = SPAWN.Event()
    worker = SPAWN.Process(target=churn, args=(config, ready), daemon=True)
    worker.start()
    assert ready.wait(timeout=60)
    time.sleep(1.5)
    os.kill(worker.pid or 0, signal.SIGKILL)  # mid-transaction, most likely
    worker.join(timeout=20)

    store = fleet_store(config)
    try:
        records = list(store.iter_keys())  # every row still parses into a record
        assert records
        events = store.audit_events(limit=1_000_000)
        created = {e.access_key_id for e in events if e.action == "CreateAccessKey"}
        deleted = {e.access_key_id for e in events if e.action == "DeleteAccessKey"}
        purged = {e.access_key_id for e in events if e.action == "PurgeAccessKey"}
        stored = {record.access_key_id for record in records}
        # No change without its audit event, and no audit event without its change.
        assert stored <= created
        assert created - purged == stored
        for record in records:
            assert record.in_recycle_bin == (record.access_key_id in deleted)
        for number in range(5):
            owner = RamUser("1234567890123456", f"churn-{number}")
            assert len(store.list_keys(owner)) <= 2
            assert len(store.list_recycle_bin(owner)) <= 3
    finally:
        store.close()
