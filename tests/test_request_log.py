"""The request log: one ActionTrail-shaped event per verify, to a pluggable sink.

Every test drives a real verifier over a real store; the sinks are the shipped ones (a
logger, SQLite, PostgreSQL) or a list that keeps what it is given. What is checked: the
event's shape, what a refusal says and does not say (an unknown id reads as a bad
signature but for its code), that no secret, security token or signature is ever written
anywhere, that nothing is built without a sink, and ``aliak serve --request-log`` with
``aliak audit --requests`` and ``aliak audit --follow`` run as a user runs them.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import pytest

from aliak import (
    AccessKey,
    Account,
    AliakError,
    AsyncVerifier,
    KeyManager,
    LoggingRequestLog,
    MemoryStore,
    PostgresRequestLog,
    RamRole,
    RamUser,
    Request,
    RequestLog,
    Signer,
    SQLiteRequestLog,
    SQLiteStore,
    Verifier,
    request_event,
)
from aliak import verifier as verifier_module
from aliak.requestlog import TABLE

NOW = 1_700_000_000
EVENT_TIME = "2023-11-14T22:13:20Z"
ACCOUNT = "1234567890123456"
OWNER = RamUser(ACCOUNT, "alice")
HOST = "ecs.cn-hangzhou.aliyuncs.com"
IP = "203.0.113.7"
UNKNOWN = "LTAI" + "7" * 20


class ListLog:
    """A sink that keeps every event it is given (and says whether it was closed)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.closed = False

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


@attrs.define
class World:
    store: MemoryStore
    keys: KeyManager
    access_key: AccessKey
    log: ListLog
    verifier: Verifier

    def signer(self, access_key: AccessKey | None = None, **options: Any) -> Signer:
        return Signer(access_key or self.access_key, clock=lambda: NOW, **options)

    def signed(self, signer: Signer | None = None, **options: Any) -> Request:
        request = Request(
            "POST",
            host=HOST,
            path="/",
            query={"RegionId": "cn-hangzhou"},
            headers={"content-type": "application/json", "user-agent": "aliak-test/1.0"},
            body=b'{"a":1}',
        )
        return (signer or self.signer()).sign(
            request, action="DescribeRegions", version="2014-05-26", **options
        )

    def refused(self, request: Request, verifier: Verifier | None = None) -> AliakError:
        with pytest.raises(AliakError) as caught:
            (verifier or self.verifier).verify(request, source_ip=IP)
        return caught.value


@pytest.fixture
def world() -> World:
    store = MemoryStore()
    keys = KeyManager(store, clock=lambda: NOW)
    access_key = keys.create_access_key(OWNER).access_key
    log = ListLog()
    verifier = Verifier(store, clock=lambda: NOW, request_log=log)
    return World(store, keys, access_key, log, verifier)


def _signature(request: Request) -> str:
    authorization = request.headers.get("authorization")
    if authorization is None:  # RPC: the query parameter
        return dict(request.query)["Signature"]
    if authorization.startswith("acs "):
        return authorization.rpartition(":")[2]
    return authorization.rpartition("Signature=")[2]


# -- the event's shape -----------------------------------------------------------------


def test_an_accepted_request_is_one_event_in_actiontrail_shape(world: World) -> None:
    verified = world.verifier.verify(world.signed(), source_ip=IP, request_id="REQ-1")
    assert verified.action == "DescribeRegions"
    [event] = world.log.events
    assert set(event) == {
        "eventId", "eventVersion", "eventTime", "eventType", "eventSource", "serviceName",
        "eventName", "apiVersion", "acsRegion", "requestId", "sourceIpAddress", "userAgent",
        "userIdentity", "additionalEventData",
    }  # fmt: skip
    assert event["eventVersion"] == 1
    assert event["eventType"] == "ApiCall"
    assert event["eventTime"] == EVENT_TIME
    assert event["eventSource"] == HOST
    assert (event["serviceName"], event["acsRegion"]) == ("ecs", "cn-hangzhou")
    assert (event["eventName"], event["apiVersion"]) == ("DescribeRegions", "2014-05-26")
    assert event["requestId"] == "REQ-1"
    assert event["sourceIpAddress"] == IP
    assert event["userAgent"] == "aliak-test/1.0"
    assert event["userIdentity"] == {
        "type": "ram-user",
        "accountId": ACCOUNT,
        "principalId": "alice",
        "userName": "alice",
        "arn": f"acs:ram::{ACCOUNT}:user/alice",
        "accessKeyId": world.access_key.access_key_id,
    }
    assert event["additionalEventData"] == {
        "signatureScheme": "ACS3",
        "signatureMethod": "ACS3-HMAC-SHA256",
        "keyType": "permanent",
    }
    assert len(event["eventId"]) == 36
    # Without a request id, each event gets a new one.
    world.verifier.verify(world.signed(), source_ip=IP)
    other = world.log.events[1]
    assert other["requestId"] not in ("REQ-1", "")
    assert other["eventId"] != event["eventId"]


def test_root_and_assumed_role_principals_are_named_as_actiontrail_names_them() -> None:
    root = request_event(event_time=NOW, access_key_id="LTAIroot", principal=Account(ACCOUNT))
    assert root["userIdentity"] == {
        "type": "root-account",
        "accountId": ACCOUNT,
        "principalId": ACCOUNT,
        "userName": "root",
        "arn": f"acs:ram::{ACCOUNT}:root",
        "accessKeyId": "LTAIroot",
    }
    store = MemoryStore()
    keys = KeyManager(store, clock=lambda: NOW)
    log = ListLog()
    verifier = Verifier(store, clock=lambda: NOW, request_log=log)
    credential = keys.assume_role(RamRole(ACCOUNT, "Deployer"), session_name="ci-run")
    request = Signer(credential, clock=lambda: NOW).sign(
        Request("GET", host="api.example.com", path="/"), action="ListThings", version="v1"
    )
    verifier.verify(request)
    identity = log.events[-1]["userIdentity"]
    assert identity == {
        "type": "assumed-role",
        "accountId": ACCOUNT,
        "principalId": "Deployer:ci-run",
        "userName": "Deployer:ci-run",
        "arn": f"acs:sts::{ACCOUNT}:assumed-role/Deployer/ci-run",
        "accessKeyId": credential.access_key_id,
    }
    assert log.events[-1]["additionalEventData"]["keyType"] == "sts"
    assert "acsRegion" not in log.events[-1]  # a host that names no region


def test_a_refusal_before_the_signature_names_only_the_key_id_as_presented(world: World) -> None:
    error = world.refused(world.signed(world.signer(AccessKey(UNKNOWN, "x" * 30))))
    assert error.code == "InvalidAccessKeyId.NotFound"
    wrong = world.refused(
        world.signed(world.signer(AccessKey(world.access_key.access_key_id, "w" * 30)))
    )
    assert wrong.code == "SignatureDoesNotMatch"
    unknown_event, wrong_event = world.log.events
    assert unknown_event["userIdentity"] == {"accessKeyId": UNKNOWN}
    assert wrong_event["userIdentity"] == {"accessKeyId": world.access_key.access_key_id}
    assert (unknown_event["errorCode"], unknown_event["errorMessage"]) == (
        error.code,
        error.message,
    )
    assert wrong_event["errorCode"] == "SignatureDoesNotMatch"
    # The same fields either way: only the code (and its message) tell the two apart.
    assert set(unknown_event) == set(wrong_event)
    assert unknown_event["additionalEventData"] == wrong_event["additionalEventData"]


def test_a_refusal_after_a_valid_signature_names_the_principal(world: World) -> None:
    world.keys.disable_access_key(world.access_key.access_key_id)
    world.verifier.invalidate()
    error = world.refused(world.signed())
    assert error.code == "InvalidAccessKeyId.Inactive"
    [event] = world.log.events
    assert event["errorCode"] == "InvalidAccessKeyId.Inactive"
    assert event["userIdentity"]["type"] == "ram-user"
    assert event["userIdentity"]["accountId"] == ACCOUNT


def test_a_replay_is_refused_and_logged_with_its_principal(world: World) -> None:
    request = world.signed()
    world.verifier.verify(request, source_ip=IP)
    assert world.refused(request).code == "SignatureNonceUsed"
    accepted, replay = world.log.events
    assert "errorCode" not in accepted
    assert replay["errorCode"] == "SignatureNonceUsed"
    assert replay["userIdentity"]["userName"] == "alice"


def test_the_opaque_profile_logs_what_the_client_was_told_and_the_reason(world: World) -> None:
    opaque = Verifier(world.store, clock=lambda: NOW, error_profile="opaque", request_log=world.log)
    error = world.refused(world.signed(world.signer(AccessKey(UNKNOWN, "x" * 30))), opaque)
    assert error.code == "AccessDenied"
    [event] = world.log.events
    assert event["errorCode"] == "AccessDenied"
    assert event["additionalEventData"]["reasonCode"] == "InvalidAccessKeyId.NotFound"


def test_a_precheck_refusal_is_one_event_and_a_garbage_head_is_cleaned(world: World) -> None:
    stale = Signer(world.access_key, clock=lambda: NOW - 3600).sign(
        Request("GET", host=HOST, headers={"user-agent": "bad agent\udcff"}),
        action="Run Instances",
        version="v1",
    )
    with pytest.raises(AliakError) as caught:
        world.verifier.precheck(stale, source_ip="::ffff:203.0.113.7", request_id="R-2")
    assert caught.value.code == "InvalidTimeStamp.Expired"
    [event] = world.log.events
    assert event["errorCode"] == "InvalidTimeStamp.Expired"
    assert event["sourceIpAddress"] == IP  # the canonical form
    assert event["requestId"] == "R-2"
    assert event["userAgent"] == "bad agent?"  # a lone surrogate is not UTF-8
    assert event["eventName"] is None  # not an identifier: not written down as one
    assert event["userIdentity"] == {"accessKeyId": world.access_key.access_key_id}
    json.dumps(event)  # JSON-ready, whatever the client sent
    # A request with no Authorization at all: no key id, no scheme.
    with pytest.raises(AliakError):
        world.verifier.precheck(Request("GET", host=HOST))
    bare = world.log.events[-1]
    assert bare["errorCode"] == "IncompleteSignature"
    assert bare["userIdentity"] == {"accessKeyId": None}
    assert "additionalEventData" not in bare


def test_nothing_is_built_without_a_sink_or_a_hook(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("built without a sink")

    monkeypatch.setattr(verifier_module, "request_event", forbidden)
    monkeypatch.setattr(verifier_module, "_Trace", forbidden)
    monkeypatch.setattr(verifier_module, "perf_counter", forbidden)
    plain = Verifier(world.store, clock=lambda: NOW)
    plain.verify(world.signed(), source_ip=IP)
    with pytest.raises(AliakError):
        plain.verify(world.signed(world.signer(AccessKey(UNKNOWN, "x" * 30))))
    with pytest.raises(AliakError):
        plain.precheck(Request("GET", host=HOST))
    assert plain.request_log is None
    assert plain._observer is None
    assert Verifier(world.store, request_log=False)._observer is None


def test_a_failing_sink_never_changes_the_outcome(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(ListLog):
        def emit(self, event: dict[str, Any]) -> None:
            raise OSError("disk full")

    verifier = Verifier(world.store, clock=lambda: NOW, request_log=Broken())
    assert verifier.verify(world.signed(), source_ip=IP).action == "DescribeRegions"
    assert world.refused(world.signed(world.signer(AccessKey(UNKNOWN, "x" * 30))), verifier).code
    assert "request log failed: OSError" in caplog.text
    with pytest.raises(TypeError):
        Verifier(world.store, request_log=object())  # type: ignore[arg-type]


def test_the_async_verifier_logs_the_same_events(world: World) -> None:
    log = ListLog()

    async def run() -> None:
        async with AsyncVerifier(world.store.as_async(), clock=lambda: NOW, request_log=log) as av:
            await av.verify(world.signed(), source_ip=IP)
            with pytest.raises(AliakError):
                await av.verify(world.signed(world.signer(AccessKey(UNKNOWN, "x" * 30))))

    asyncio.run(run())
    accepted, refused = log.events
    assert accepted["userIdentity"]["userName"] == "alice"
    assert refused["errorCode"] == "InvalidAccessKeyId.NotFound"
    assert not log.closed  # the sink is the caller's


def test_the_default_sink_is_a_logger_with_one_json_line_per_event(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aliak.requests")
    verifier = Verifier(world.store, clock=lambda: NOW, request_log=True)
    assert isinstance(verifier.request_log, LoggingRequestLog)
    assert isinstance(verifier.request_log, RequestLog)
    verifier.verify(world.signed(), source_ip=IP)
    world.refused(world.signed(world.signer(AccessKey(UNKNOWN, "x" * 30))), verifier)
    lines = [record.getMessage() for record in caplog.records if record.name == "aliak.requests"]
    assert len(lines) == 2
    assert all("\n" not in line for line in lines)
    assert [json.loads(line).get("errorCode") for line in lines] == [
        None,
        "InvalidAccessKeyId.NotFound",
    ]


# -- never a secret, a token or a signature ------------------------------------------------


def _requests_to_judge(world: World) -> Iterator[tuple[Request, str, str | None]]:
    """(request, its signature, its security token) for every kind of outcome: accepted,
    replayed, tampered, forged, in each scheme, with a permanent key and an STS one."""
    credential = world.keys.assume_role(RamRole(ACCOUNT, "Deployer"), session_name="ci")
    for key in (world.access_key, credential):
        token = getattr(key, "security_token", None)
        token_text = None if token is None else token.reveal()
        for scheme in ("ACS3", "RPC", "ROA"):
            signer = world.signer(key, scheme=scheme)
            accepted = world.signed(signer)
            yield accepted, _signature(accepted), token_text
            yield accepted, _signature(accepted), token_text  # the replay
            tampered = attrs.evolve(world.signed(signer), body=b'{"a":2}')
            yield tampered, _signature(tampered), token_text
            query = dict(world.signed(signer).query)
            query["RegionId"] = "us-west-1"
            moved = attrs.evolve(world.signed(signer), query=query)
            yield moved, _signature(moved), token_text


def _forbidden_texts(world: World, requests: list[tuple[Request, str, str | None]]) -> list[str]:
    texts = [world.access_key.secret.reveal()]
    for _request, signature, token in requests:
        texts.append(signature)
        if token is not None:
            texts += [token, quote(token, safe=""), quote(quote(token, safe=""), safe="")]
    return texts


def test_no_event_holds_a_secret_a_token_or_a_signature(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aliak.requests")
    sqlite_log = SQLiteRequestLog(tmp_path / "requests.db", flush_interval=0.05)
    sinks: list[RequestLog] = [world.log, LoggingRequestLog(), sqlite_log]
    verifiers = [
        Verifier(world.store, clock=lambda: NOW, request_log=sink, error_profile=profile)
        for sink in sinks
        for profile in ("alibaba", "opaque")
    ]
    requests = list(_requests_to_judge(world))
    codes = set()
    for request, _, _ in requests:
        for verifier in verifiers:
            try:
                verifier.verify(request, source_ip=IP)
                codes.add("OK")
            except AliakError as error:
                codes.add(error.code)
    assert {"OK", "SignatureNonceUsed", "SignatureDoesNotMatch", "AccessDenied"} <= codes
    # The echoed string to sign (RPC and ROA strings hold the token itself) was there:
    messages = [event.get("errorMessage", "") for event in world.log.events]
    assert any("server string to sign" in message for message in messages)
    assert any("<security token>" in message for message in messages)  # masked, and there
    sqlite_log.flush()
    sqlite_log.close()
    stored = b"".join(
        path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("requests.db")
    )
    assert len(sqlite_log.events(limit=10_000)) == len(requests) * 2
    written = {
        "list": json.dumps(world.log.events),
        "logger": caplog.text,
        "sqlite": stored.decode("latin-1"),
    }
    for secret in _forbidden_texts(world, requests):
        for where, text in written.items():
            assert secret not in text, f"{where} holds a secret, a token or a signature"


# -- the SQLite and PostgreSQL sinks ----------------------------------------------------


def _fill(world: World, log: RequestLog) -> None:
    verifier = Verifier(world.store, clock=lambda: NOW, request_log=log)
    bob = world.keys.create_access_key(RamUser(ACCOUNT, "bob")).access_key
    verifier.verify(world.signed(), source_ip=IP)
    verifier.verify(world.signed(world.signer(bob)), source_ip="198.51.100.1")
    replay = world.signed()
    verifier.verify(replay, source_ip=IP)
    with pytest.raises(AliakError):
        verifier.verify(replay, source_ip=IP)
    with pytest.raises(AliakError):
        verifier.verify(world.signed(world.signer(AccessKey(UNKNOWN, "x" * 30))), source_ip=IP)


def _check_queries(world: World, log: SQLiteRequestLog | PostgresRequestLog) -> None:
    alice = world.access_key.access_key_id
    every = log.events()
    assert len(every) == 5
    assert [entry.seq for entry in every] == sorted((entry.seq for entry in every), reverse=True)
    assert every[0].event["userIdentity"]["accessKeyId"] == UNKNOWN  # newest first
    assert len(log.events(access_key_id=alice)) == 3
    assert len(log.events(account_id=ACCOUNT)) == 4  # the unknown id names no account
    assert len(log.events(account_id=ACCOUNT, user_name="bob")) == 1
    assert len(log.events(action="DescribeRegions")) == 5
    assert len(log.events(action="Other")) == 0
    assert [e.event["errorCode"] for e in log.events(error_code="SignatureNonceUsed")] == [
        "SignatureNonceUsed"
    ]
    assert len(log.events(accepted=True)) == 3
    assert len(log.events(accepted=False)) == 2
    assert len(log.events(limit=2)) == 2
    at = datetime.fromtimestamp(NOW, timezone.utc)
    assert len(log.events(since=at, until=at)) == 5
    assert log.events(until=datetime(2020, 1, 1, tzinfo=timezone.utc)) == []
    oldest = every[-1].seq
    assert [entry.seq for entry in log.events(after=oldest)] == sorted(
        entry.seq for entry in every[:-1]
    )
    with pytest.raises(AliakError):
        log.events(limit=-1)


def test_the_sqlite_sink_shares_the_store_file_in_wal_mode_and_is_queried_newest_first(
    tmp_path: Path,
) -> None:
    path = tmp_path / "aliak.db"
    store = SQLiteStore(path)
    keys = KeyManager(store, clock=lambda: NOW)
    access_key = keys.create_access_key(OWNER).access_key
    log = SQLiteRequestLog(path, batch_size=2, flush_interval=5.0)
    world = World(store, keys, access_key, ListLog(), Verifier(store, clock=lambda: NOW))  # type: ignore[arg-type]
    _fill(world, log)
    log.flush()
    assert log.written == 5
    _check_queries(world, log)
    log.close()
    log.close()  # idempotent
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        columns = [row[1] for row in connection.execute(f"PRAGMA table_info({TABLE})")]
    assert columns[:2] == ["seq", "at"]
    # The store still opens and verifies beside its neighbour table.
    reopened = SQLiteStore(path)
    Verifier(reopened, clock=lambda: NOW).verify(world.signed(), source_ip=IP)
    reopened.close()
    store.close()
    # A file of its own is created private; an emit after close is dropped, not raised.
    own = SQLiteRequestLog(tmp_path / "own.db")
    assert (tmp_path / "own.db").stat().st_mode & 0o777 == 0o600
    own.close()
    own.emit({"eventTime": EVENT_TIME, "eventId": "x"})
    assert own.dropped == 1
    assert not SQLiteRequestLog(tmp_path / "none.db", create=False).exists


def test_the_sqlite_sink_keeps_a_failed_batch_for_the_next_attempt(
    world: World, tmp_path: Path
) -> None:
    path = tmp_path / "busy.db"
    log = SQLiteRequestLog(path, flush_interval=0.05, busy_timeout=0.05)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    verifier = Verifier(world.store, clock=lambda: NOW, request_log=log)
    verifier.verify(world.signed(), source_ip=IP)
    log.flush()
    assert log.written == 0
    blocker.execute("COMMIT")
    blocker.close()
    deadline = time.monotonic() + 10
    while log.written == 0 and time.monotonic() < deadline:
        log.flush()
        time.sleep(0.05)
    assert log.written == 1
    assert log.dropped == 0
    assert len(log.events()) == 1
    log.close()


POSTGRES_DSN = os.environ.get("ALIAK_TEST_POSTGRES_DSN")


@pytest.mark.skipif(POSTGRES_DSN is None, reason="ALIAK_TEST_POSTGRES_DSN is not set")
def test_the_postgres_sink_writes_its_own_table_and_is_queried_the_same_way(world: World) -> None:
    import secrets

    import psycopg
    from psycopg import sql

    assert POSTGRES_DSN is not None
    schema = f"aliak_test_{secrets.token_hex(6)}"
    log = PostgresRequestLog(POSTGRES_DSN, schema=schema, batch_size=3, flush_interval=5.0)
    try:
        _fill(world, log)
        log.flush()
        assert log.written == 5
        _check_queries(world, log)
        with psycopg.connect(POSTGRES_DSN) as connection:
            texts = connection.execute(
                sql.SQL("SELECT event::text FROM {}").format(sql.Identifier(schema, TABLE))
            ).fetchall()
        stored = "".join(text for (text,) in texts)
        assert world.access_key.secret.reveal() not in stored
        assert "InvalidAccessKeyId.NotFound" in stored
        assert "PostgresRequestLog(schema=" in repr(log)
        assert POSTGRES_DSN not in repr(log)
    finally:
        log.close()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


@pytest.fixture(params=["sqlite", "postgres"])
def table_log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A :class:`SQLiteRequestLog` or a :class:`PostgresRequestLog` (in a schema of its
    own, dropped afterwards), empty."""
    if request.param == "sqlite":
        log: Any = SQLiteRequestLog(tmp_path / "log.db")
        yield log
        log.close()
        return
    if POSTGRES_DSN is None:
        pytest.skip("ALIAK_TEST_POSTGRES_DSN is not set")
    import secrets

    import psycopg
    from psycopg import sql

    schema = f"aliak_test_{secrets.token_hex(6)}"
    log = PostgresRequestLog(POSTGRES_DSN, schema=schema)
    try:
        yield log
    finally:
        log.close()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )


def test_a_fractional_since_or_until_never_lets_in_an_event_outside_the_bounds(
    table_log: SQLiteRequestLog | PostgresRequestLog,
) -> None:
    """Events carry whole seconds; the bounds may not: ``since`` is the first whole
    second at or after it, ``until`` the last at or before it (both inclusive), before
    1970 as after."""
    seconds = (-2, -1, 0, 1, NOW - 1, NOW, NOW + 1)
    for second in seconds:
        moment = datetime.fromtimestamp(second, timezone.utc)
        table_log.emit({"eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventId": str(second)})
    table_log.flush()

    def found(**bounds: float) -> list[int]:
        moments = {name: datetime.fromtimestamp(at, timezone.utc) for name, at in bounds.items()}
        return sorted(int(entry.event["eventId"]) for entry in table_log.events(**moments))

    assert found(since=NOW - 0.5) == [NOW, NOW + 1]
    assert found(until=NOW + 0.5) == [-2, -1, 0, 1, NOW - 1, NOW]
    assert found(since=NOW - 1.5, until=NOW + 0.5) == [NOW - 1, NOW]
    assert found(since=NOW + 0.25, until=NOW + 0.75) == []
    assert found(since=NOW, until=NOW) == [NOW]
    assert found(since=-1.5, until=0.5) == [-1, 0]
    assert found(until=-0.5) == [-2, -1]
    assert found(since=-0.5, until=1) == [0, 1]
    # A time without an offset is UTC, as it always was.
    naive = datetime.fromtimestamp(NOW - 0.5, timezone.utc).replace(tzinfo=None)
    assert [int(e.event["eventId"]) for e in table_log.events(since=naive)] == [NOW + 1, NOW]


# -- the command: serve --request-log, audit --requests, audit --follow --------------------


def _environment() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("ALIAK_", "ALIBABA_CLOUD_"))
    }


def _aliak(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "aliak", "--db", str(db), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=60,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _json(tmp_path: Path, db: Path, *args: str) -> Any:
    result = _aliak(tmp_path, db, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


class Lines:
    """A subprocess's output, line by line, with a timeout on each."""

    def __init__(self, stream: Any) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line)

    def next(self, timeout: float = 20.0) -> str:
        line = self.queue.get(timeout=timeout)
        self.seen.append(line)
        return line

    def until(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next(max(0.1, deadline - time.monotonic()))
            if text in line:
                return line


def _send(port: int, request: Request) -> tuple[int, dict[str, Any]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        assert not request.query
        assert isinstance(request.body, bytes)
        connection.request(
            request.method, request.path, body=request.body, headers=dict(request.headers.items())
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], int, subprocess.Popen[str]]]:
    """``aliak serve --request-log`` (into the store's own file), and a key of alice's."""
    db = tmp_path / "aliak.db"
    key = _json(tmp_path, db, "keys", "create", "--account", ACCOUNT, "--user", "alice")
    process = subprocess.Popen(
        [sys.executable, "-m", "aliak", "--db", str(db), "serve", "--port", "0",
         "--request-log", str(db), "--metrics"],
        cwd=tmp_path, env=_environment(), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines = Lines(process.stderr)
        port = int(lines.until("listening on").strip().rpartition(":")[2])
        yield db, key, port, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=15)


def test_serve_logs_every_request_and_audit_requests_reads_them_newest_first(
    tmp_path: Path, served: tuple[Path, dict[str, str], int, subprocess.Popen[str]]
) -> None:
    db, key, port, process = served
    secret = key["AccessKeySecret"]
    signer = Signer(AccessKey(key["AccessKeyId"], secret))
    host = f"127.0.0.1:{port}"

    def signed(path: str) -> Request:
        return signer.sign(
            Request("GET", host=host, path=path, headers={"user-agent": "cli-test"}),
            action="ListThings",
            version="2024-01-01",
        )

    first = signed("/things")
    assert _send(port, first)[0] == 200
    for _ in range(2):  # replays
        status, answer = _send(port, first)
        assert (status, answer["Code"]) == (400, "SignatureNonceUsed")
    forged = Signer(AccessKey(key["AccessKeyId"], "w" * 30)).sign(
        Request("GET", host=host, path="/x"), action="ListThings", version="2024-01-01"
    )
    assert _send(port, forged)[1]["Code"] == "SignatureDoesNotMatch"
    assert _send(port, Request("GET", host=host, path="/anon"))[1]["Code"] == "IncompleteSignature"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0

    events = _json(tmp_path, db, "audit", "--requests")
    assert [event.get("errorCode") for event in events] == [
        "IncompleteSignature", "SignatureDoesNotMatch", "SignatureNonceUsed",
        "SignatureNonceUsed", None,
    ]  # fmt: skip
    assert events[-1]["userIdentity"]["userName"] == "alice"
    assert events[-1]["sourceIpAddress"] == "127.0.0.1"
    assert events[-1]["userAgent"] == "cli-test"
    assert len(_json(tmp_path, db, "audit", "--requests", "--result", "accepted")) == 1
    assert len(_json(tmp_path, db, "audit", "--requests", "--code", "SignatureNonceUsed")) == 2
    assert len(_json(tmp_path, db, "audit", "--requests", "--account", ACCOUNT)) == 3
    assert len(_json(tmp_path, db, "audit", "--requests", "--key", key["AccessKeyId"])) == 4
    assert len(_json(tmp_path, db, "audit", "--requests", "--limit", "2")) == 2
    assert _json(tmp_path, db, "audit", "--requests", "--action", "Nope") == []
    assert _json(tmp_path, db, "audit", "--requests", "--until", "2001-01-01T00:00:00Z") == []
    oldest = _json(tmp_path, db, "audit", "--requests", "--order", "oldest")
    assert oldest == events[::-1]
    newest_two = _json(tmp_path, db, "audit", "--requests", "--order", "oldest", "--limit", "2")
    assert [event["errorCode"] for event in newest_two] == [
        "SignatureDoesNotMatch",
        "IncompleteSignature",
    ]
    table = _aliak(tmp_path, db, "audit", "--requests").stdout.splitlines()
    assert table[0].split() == [
        "Time", "Action", "Result", "AccessKeyId", "AccountId", "UserName", "SourceIp",
        "RequestId",
    ]  # fmt: skip
    assert len(table) == 6
    # Nothing that signs was written down, in the file or in its WAL.
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("aliak.db"))
    for text in (secret, _signature(first), _signature(forged)):
        assert text.encode() not in stored
    # The audit trail is untouched by the request log beside it.
    assert [event["Action"] for event in _json(tmp_path, db, "audit")] == ["CreateAccessKey"]


def test_audit_requests_refuses_a_file_without_a_request_log(tmp_path: Path) -> None:
    db = tmp_path / "aliak.db"
    _json(tmp_path, db, "keys", "create", "--account", ACCOUNT, "--user", "alice")
    missing = _aliak(tmp_path, db, "audit", "--requests")
    assert missing.returncode == 1
    assert "holds no request log" in missing.stderr
    elsewhere = _aliak(tmp_path, db, "audit", "--requests", "--request-log", "nope.db")
    assert (elsewhere.returncode, "no request log at" in elsewhere.stderr) == (1, True)
    assert _aliak(tmp_path, db, "audit", "--code", "X").returncode == 2  # needs --requests
    assert _aliak(tmp_path, db, "audit", "--follow", "--until", "2030-01-01").returncode == 2


def test_audit_limit_keeps_the_newest_events_and_until_bounds_them(tmp_path: Path) -> None:
    db = tmp_path / "aliak.db"
    ids = [
        _json(tmp_path, db, "keys", "create", "--account", ACCOUNT, "--user", user)["AccessKeyId"]
        for user in ("u1", "u2", "u3")
    ]
    newest = _json(tmp_path, db, "audit", "--limit", "2")
    assert [event["AccessKeyId"] for event in newest] == ids[:0:-1]  # shown newest first
    reversed_ = _json(tmp_path, db, "audit", "--limit", "2", "--order", "oldest")
    assert [event["AccessKeyId"] for event in reversed_] == ids[1:]
    assert _json(tmp_path, db, "audit", "--until", "2001-01-01T00:00:00Z") == []
    assert len(_json(tmp_path, db, "audit", "--until", "2999-01-01T00:00:00Z")) == 3
    assert len(_json(tmp_path, db, "audit", "--action", "CreateAccessKey", "--limit", "0")) == 0


# `python -m aliak` with Ctrl-C's default (KeyboardInterrupt) restored: a suite started in
# the background by a non-interactive shell hands SIGINT down as ignored, and a Python
# started that way never turns SIGINT into KeyboardInterrupt.
_AS_FROM_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'aliak'; runpy.run_module('aliak', run_name='__main__', alter_sys=True)"
)


def _follow(tmp_path: Path, db: Path, *args: str) -> tuple[subprocess.Popen[str], Lines]:
    process = subprocess.Popen(
        [sys.executable, "-c", _AS_FROM_A_TERMINAL, "--db", str(db), "audit", "--follow",
         "--json", "--interval", "0.1", *args],
        cwd=tmp_path, env=_environment(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return process, Lines(process.stdout)


def _stop(process: subprocess.Popen[str]) -> int:
    try:
        process.send_signal(signal.SIGINT)
        return process.wait(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_audit_follow_prints_new_events_as_they_arrive_and_stops_on_sigint(
    tmp_path: Path,
) -> None:
    db = tmp_path / "aliak.db"
    first = _json(tmp_path, db, "keys", "create", "--account", ACCOUNT, "--user", "u1")
    process, lines = _follow(tmp_path, db)
    try:
        assert json.loads(lines.next())["AccessKeyId"] == first["AccessKeyId"]
        second = _json(tmp_path, db, "keys", "create", "--account", ACCOUNT, "--user", "u2")
        _aliak(tmp_path, db, "keys", "disable", second["AccessKeyId"])
        arrived = [json.loads(lines.next()), json.loads(lines.next())]
        assert [(e["Action"], e["AccessKeyId"]) for e in arrived] == [
            ("CreateAccessKey", second["AccessKeyId"]),
            ("UpdateAccessKey", second["AccessKeyId"]),
        ]
    finally:
        status = _stop(process)
    assert status == 0
    assert lines.queue.empty()  # each event once


def test_audit_requests_follow_prints_new_events_as_they_are_written(
    tmp_path: Path, world: World
) -> None:
    db = tmp_path / "requests.db"
    log = SQLiteRequestLog(db, flush_interval=0.05)
    verifier = Verifier(world.store, clock=lambda: NOW, request_log=log)
    verifier.verify(world.signed(), source_ip=IP)
    log.flush()
    process, lines = _follow(tmp_path, db, "--requests", "--result", "refused")
    try:
        time.sleep(0.5)  # it printed nothing yet: no refusal so far
        verifier.verify(world.signed(), source_ip=IP)  # accepted: not shown
        with pytest.raises(AliakError):
            verifier.verify(world.signed(world.signer(AccessKey(UNKNOWN, "x" * 30))))
        log.flush()
        event = json.loads(lines.next())
        assert event["errorCode"] == "InvalidAccessKeyId.NotFound"
    finally:
        status = _stop(process)
        log.close()
    assert status == 0
    assert lines.queue.empty()
